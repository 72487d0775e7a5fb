//! The thread's stack of entered spans ([`Span::enter`]).
//!
//! An entry *owns* what a child inherits (ids, the sampling decision,
//! baggage, `tracestate`): it is a copy taken at `enter`, not a pointer to
//! the span. So a guard that is leaked (`mem::forget`) can only leak its
//! entry, never dangle: the span may then be finished, moved or dropped,
//! and spans started later on this thread still read a valid copy (they
//! become children of the forgotten span, which is what its caller asked
//! for by never leaving it). While a guard lives the span is shared-borrowed
//! and cannot change, so the copy is exactly what the span holds.
//!
//! Entries are matched to guards by a per-thread token, not by address (a
//! span moved after a leaked guard may reuse the address of another).
//!
//! Every entry holds its ids (48 bytes of plain data). The innermost
//! [`DEPTH`] entries' ids are in `FAST`, a const thread-local of `Cell`s
//! with no destructor: entering, leaving and finding the parent of a span
//! that inherits nothing but ids reads and writes only these, with no
//! set-up check, no `RefCell` and no call (the common case, ~20
//! instructions where a `RefCell<Vec<_>>` took ~65). Everything else is
//! in `SLOW`: ids of entries deeper than `DEPTH`, and the baggage and
//! `tracestate` of entries that have them, at the same index (their
//! buffers kept for reuse, so entering a span allocates only when its
//! baggage or `tracestate` is larger than any entered on this thread
//! before). What the span shares of a remote context (`record::Inherited`)
//! is not copied: the entry holds a reference to the same block.
//!
//! [`Span::enter`]: crate::Span::enter

use crate::record::{Inherited, SpanRecord};
use crate::span::SpanContext;
use crate::sync::const_thread_local;
use crate::sync::Arc;
use std::cell::{Cell, RefCell};

/// Buffers that grew past this are freed when their entry leaves, so one
/// huge remote context does not stay on the thread.
const KEEP_BYTES: usize = 16 * 1024;

/// Where a string of an entry lies: in the shared block the span points
/// into, or in the entry's own `text`.
#[derive(Clone, Copy, Default)]
struct Piece {
    shared: bool,
    start: usize,
    end: usize,
}

/// What every entry holds.
#[derive(Clone, Copy)]
struct Ids {
    tracer_id: u64,
    /// Matches the entry to its `Entered` guard; unique on this thread.
    token: u64,
    trace_id: u128,
    span_id: u64,
    sampled: bool,
    /// A child inherits more than ids (baggage, `tracestate`): the entry's
    /// `Context` is at the same index of `Slow::contexts`.
    has_context: bool,
}

/// What a child inherits beyond ids, for an entry that has more.
#[derive(Default)]
struct Context {
    /// The span's shared remote context: strings in it are referenced, not
    /// copied (a reference held by the entry keeps them valid).
    inherited: Option<Arc<Inherited>>,
    /// The span's baggage is exactly the block's items.
    baggage_is_block: bool,
    /// Copies of the span's other baggage keys and values.
    text: String,
    /// Invariant: each piece is within `text` or the `inherited` block and
    /// on char boundaries (taken from whole `&str`s).
    items: Vec<(Piece, Piece)>,
    trace_state: Piece,
}

impl Context {
    fn fill(&mut self, r: &SpanRecord) {
        self.inherited = r.inherited_block().cloned();
        self.baggage_is_block = r.baggage_is_block();
        self.text.clear();
        self.items.clear();
        for (k, v) in r.baggage() {
            let item = (self.piece(k), self.piece(v));
            self.items.push(item);
        }
        self.trace_state = self.piece(r.trace_state());
    }

    /// Where `s` is kept: the block when it lies there, else a copy.
    fn piece(&mut self, s: &str) -> Piece {
        if let Some(start) = self.inherited.as_ref().and_then(|b| b.offset_of(s)) {
            return Piece {
                shared: true,
                start,
                end: start + s.len(),
            };
        }
        let start = self.text.len();
        self.text.push_str(s);
        Piece {
            shared: false,
            start,
            end: self.text.len(),
        }
    }

    fn get(&self, p: Piece) -> &str {
        let text = match (&self.inherited, p.shared) {
            (Some(block), true) => block.text(),
            _ => &self.text,
        };
        text.get(p.start..p.end).unwrap_or_default()
    }

    /// Releases the reference to the shared block, and frees buffers grown
    /// past `KEEP_BYTES`: the entry has left.
    fn trim(&mut self) {
        self.inherited = None;
        if self.text.capacity() > KEEP_BYTES {
            self.text = String::new();
        }
        if self.items.capacity() * std::mem::size_of::<(Piece, Piece)>() > KEEP_BYTES {
            self.items = Vec::new();
        }
    }
}

/// What a child of an entered span inherits from it, as `with_active`
/// shows it.
pub(crate) struct ActiveEntry<'a> {
    pub(crate) trace_id: u128,
    pub(crate) span_id: u64,
    pub(crate) sampled: bool,
    /// `Some` when a child inherits more than ids.
    context: Option<&'a Context>,
}

impl<'a> ActiveEntry<'a> {
    /// Whether a child inherits more than ids: when not, a child needs
    /// only [`trace_id`](Self::trace_id) and [`span_id`](Self::span_id).
    #[inline]
    pub(crate) fn has_context(&self) -> bool {
        self.context.is_some()
    }

    /// The shared remote context, if the span has one.
    pub(crate) fn inherited_block(&self) -> Option<&'a Arc<Inherited>> {
        self.context.and_then(|c| c.inherited.as_ref())
    }

    /// Whether the span's baggage is exactly its block's items.
    pub(crate) fn baggage_is_block(&self) -> bool {
        self.context.is_some_and(|c| c.baggage_is_block)
    }

    /// Baggage items in the order set.
    pub(crate) fn baggage(&self) -> impl ExactSizeIterator<Item = (&'a str, &'a str)> + 'a {
        let context = self.context;
        let items = context.map_or(&[][..], |c| &c.items[..]);
        let get = move |p| context.map_or("", |c| c.get(p));
        items.iter().map(move |&(k, v)| (get(k), get(v)))
    }

    /// The inherited W3C `tracestate` (empty if none).
    pub(crate) fn trace_state(&self) -> &'a str {
        self.context.map_or("", |c| c.get(c.trace_state))
    }

    pub(crate) fn context(&self) -> SpanContext {
        SpanContext {
            trace_id: self.trace_id,
            span_id: self.span_id,
            sampled: self.sampled,
            baggage: self
                .baggage()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            trace_state: self.trace_state().to_owned(),
        }
    }
}

/// Entries whose ids `FAST` holds: the outermost `DEPTH`.
#[cfg(not(spanrec_loom))]
const DEPTH: usize = 16;
#[cfg(spanrec_loom)]
const DEPTH: usize = 2;

const NO_IDS: Ids = Ids {
    tracer_id: 0,
    token: 0,
    trace_id: 0,
    span_id: 0,
    sampled: false,
    has_context: false,
};

/// The ids of the entered spans, innermost last: entries `0..min(len,
/// DEPTH)` here, the rest in `Slow::deep`.
struct Fast {
    /// The number of entered spans. Invariant: `Slow::deep.len()` is
    /// `len.saturating_sub(DEPTH)`.
    len: Cell<usize>,
    next_token: Cell<u64>,
    ids: [Cell<Ids>; DEPTH],
}

/// What the stack holds beyond `Fast`.
struct Slow {
    /// Ids of the entries from `DEPTH` on.
    deep: Vec<Ids>,
    /// Invariant: `contexts[i]` is entry `i`'s when its `has_context` is
    /// set (and then `i < contexts.len()`); any other `Context` is spare
    /// (its block reference released, its buffers kept for reuse).
    contexts: Vec<Context>,
}

const_thread_local! {
    /// Plain `Copy` data in `Cell`s and no destructor: access is a
    /// thread-pointer offset, with no state check.
    static FAST: Fast = Fast {
        len: Cell::new(0),
        next_token: Cell::new(0),
        ids: [const { Cell::new(NO_IDS) }; DEPTH],
    };
}

const_thread_local! {
    static SLOW: RefCell<Slow> = RefCell::new(Slow {
        deep: Vec::new(),
        contexts: Vec::new(),
    });
}

/// `f(FAST)`. A const thread-local without destructor is never gone;
/// `try_with` (unlike `with`) is inlined, and so is the access.
#[inline(always)]
fn with_fast<R>(f: impl FnOnce(&Fast) -> R, gone: R) -> R {
    FAST.try_with(f).unwrap_or(gone)
}

/// Whether no span is entered on this thread.
#[inline(always)]
pub(crate) fn nothing_entered() -> bool {
    with_fast(|f| f.len.get(), 0) == 0
}

impl Fast {
    /// Entry `i`'s ids (`i < len`).
    fn get(&self, slow: &Slow, i: usize) -> Ids {
        match self.ids.get(i) {
            Some(c) => c.get(),
            None => slow.deep.get(i - DEPTH).copied().unwrap_or(NO_IDS),
        }
    }

    fn set(&self, slow: &mut Slow, i: usize, ids: Ids) {
        match self.ids.get(i) {
            Some(c) => c.set(ids),
            None => {
                if let Some(d) = slow.deep.get_mut(i - DEPTH) {
                    *d = ids;
                }
            }
        }
    }
}

/// Pushes a copy of `r`; returns the token that [`leave`] takes, or 0 when
/// the thread-local is gone or busy (then nothing was entered).
#[inline]
pub(crate) fn enter(r: &SpanRecord) -> u64 {
    with_fast(
        |fast| {
            let token = fast.next_token.get() + 1;
            fast.next_token.set(token);
            let ids = Ids {
                tracer_id: r.tracer_id,
                token,
                trace_id: r.trace_id(),
                span_id: r.span_id(),
                sampled: r.sampled(),
                has_context: r.has_context(),
            };
            let n = fast.len.get();
            match fast.ids.get(n) {
                Some(cell) if !ids.has_context => {
                    cell.set(ids);
                    fast.len.set(n + 1);
                    token
                }
                _ => enter_slow(fast, r, ids),
            }
        },
        0,
    )
}

/// `enter` for an entry that needs `SLOW`: it has a context, or it is
/// deeper than `DEPTH`.
#[cold]
#[inline(never)]
fn enter_slow(fast: &Fast, r: &SpanRecord, ids: Ids) -> u64 {
    SLOW.try_with(|s| {
        let Ok(mut slow) = s.try_borrow_mut() else {
            return 0;
        };
        let slow = &mut *slow;
        // Filling may allocate, and an allocator may enter spans that need
        // only `FAST`: entered and left, `len` is as before; a leaked guard
        // has its entry at `n` replaced by this one (ids are plain data:
        // nothing dangles, and leaving an unknown token does nothing).
        let n = fast.len.get();
        if ids.has_context {
            if slow.contexts.len() <= n {
                slow.contexts.resize_with(n + 1, Context::default);
            }
            slow.contexts[n].fill(r);
        }
        if n >= DEPTH {
            slow.deep.push(ids);
        } else {
            fast.set(slow, n, ids);
        }
        fast.len.set(n + 1);
        ids.token
    })
    .unwrap_or(0)
}

/// Removes the entry `token` (innermost first; a guard dropped out of
/// order removes its own entry, not the innermost).
#[inline]
pub(crate) fn leave(token: u64) {
    if token == 0 {
        return;
    }
    with_fast(
        |fast| {
            let n = fast.len.get();
            if let Some(top) = n.checked_sub(1).and_then(|i| fast.ids.get(i)) {
                let top = top.get();
                if top.token == token && !top.has_context {
                    fast.len.set(n - 1);
                    return;
                }
            }
            leave_slow(fast, token);
        },
        (),
    );
}

#[cold]
#[inline(never)]
fn leave_slow(fast: &Fast, token: u64) {
    let _ = SLOW.try_with(|s| {
        let Ok(mut slow) = s.try_borrow_mut() else {
            return;
        };
        let slow = &mut *slow;
        let len = fast.len.get();
        let Some(i) = (0..len).rev().find(|&i| fast.get(slow, i).token == token) else {
            return;
        };
        // Entries `i+1..` move down one, their contexts with them; the
        // context at `i` (entry `i`'s, or spare) goes after them.
        for j in i..len - 1 {
            let next = fast.get(slow, j + 1);
            fast.set(slow, j, next);
        }
        if len > DEPTH {
            slow.deep.pop();
        }
        let end = len.min(slow.contexts.len());
        if i < end {
            slow.contexts[i..end].rotate_left(1);
            slow.contexts[end - 1].trim();
        }
        fast.len.set(len - 1);
    });
}

/// Calls `f` with the innermost entered span of tracer `tracer_id`, if any.
#[inline(always)]
pub(crate) fn with_active(tracer_id: u64, f: impl FnOnce(&ActiveEntry<'_>)) {
    let n = with_fast(|fast| fast.len.get(), 0);
    if n == 0 {
        return;
    }
    match innermost_fast(n) {
        // The common case: the innermost entry is this tracer's, in
        // `FAST`, and holds ids only.
        Some(ids) if ids.tracer_id == tracer_id && !ids.has_context => f(&ActiveEntry {
            trace_id: ids.trace_id,
            span_id: ids.span_id,
            sampled: ids.sampled,
            context: None,
        }),
        _ => with_entered(tracer_id, f),
    }
}

/// The ids of the innermost of `n` entries, if `FAST` holds them.
#[inline(always)]
fn innermost_fast(n: usize) -> Option<Ids> {
    with_fast(|fast| fast.ids.get(n - 1).map(Cell::get), None)
}

#[inline(never)]
fn with_entered(tracer_id: u64, f: impl FnOnce(&ActiveEntry<'_>)) {
    let _ = SLOW.try_with(|s| {
        // A shared borrow: `f` may start spans (an allocator that records
        // them), which borrow again, shared; `enter` inside `f` enters
        // nothing that needs `SLOW` (it finds it busy).
        let Ok(slow) = s.try_borrow() else {
            return;
        };
        FAST.with(|fast| {
            let len = fast.len.get();
            let Some((i, ids)) = (0..len)
                .rev()
                .map(|i| (i, fast.get(&slow, i)))
                .find(|(_, e)| e.tracer_id == tracer_id)
            else {
                return;
            };
            f(&ActiveEntry {
                trace_id: ids.trace_id,
                span_id: ids.span_id,
                sampled: ids.sampled,
                context: if ids.has_context {
                    slow.contexts.get(i)
                } else {
                    None
                },
            });
        });
    });
}
