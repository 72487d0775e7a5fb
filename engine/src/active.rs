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
//! span moved after a leaked guard may reuse the address of another). Their
//! buffers are kept for reuse, so entering a span allocates only when its
//! baggage or `tracestate` is larger than any entered on this thread before.
//! What the span shares of a remote context (`record::Inherited`) is not
//! copied: the entry holds a reference to the same block.
//!
//! [`Span::enter`]: crate::Span::enter

use crate::record::{Inherited, SpanRecord};
use crate::span::SpanContext;
use crate::sync::Arc;
use crate::sync::{const_thread_local, thread_local};
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

/// What a child of an entered span inherits from it.
#[derive(Default)]
pub(crate) struct ActiveEntry {
    tracer_id: u64,
    /// Matches the entry to its `Entered` guard; unique on this thread.
    token: u64,
    pub(crate) trace_id: u128,
    pub(crate) span_id: u64,
    pub(crate) sampled: bool,
    /// The span's shared remote context: strings in it are referenced, not
    /// copied (a reference held by the entry keeps them valid).
    inherited: Option<Arc<Inherited>>,
    /// The span's baggage is exactly the block's items.
    baggage_is_block: bool,
    /// A child inherits more than ids (baggage, `tracestate`); when not,
    /// `inherited`, `items` and `trace_state` are empty.
    has_context: bool,
    /// Copies of the span's other baggage keys and values.
    text: String,
    /// Invariant: each piece is within `text` or the `inherited` block and
    /// on char boundaries (taken from whole `&str`s).
    items: Vec<(Piece, Piece)>,
    trace_state: Piece,
}

impl ActiveEntry {
    fn fill(&mut self, r: &SpanRecord, token: u64) {
        self.tracer_id = r.tracer_id;
        self.token = token;
        self.trace_id = r.trace_id();
        self.span_id = r.span_id();
        self.sampled = r.sampled();
        self.has_context = r.has_context();
        if !self.has_context {
            // The common case: ids only.
            self.inherited = None;
            self.baggage_is_block = false;
            self.text.clear();
            self.items.clear();
            self.trace_state = Piece::default();
            return;
        }
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

    /// Frees buffers grown past `KEEP_BYTES`, and the reference to the
    /// shared block.
    fn trim(&mut self) {
        self.inherited = None;
        if self.text.capacity() > KEEP_BYTES {
            self.text = String::new();
        }
        if self.items.capacity() * std::mem::size_of::<(Piece, Piece)>() > KEEP_BYTES {
            self.items = Vec::new();
        }
    }

    /// Whether a child inherits more than ids: when not, a child needs
    /// only [`trace_id`](Self::trace_id) and [`span_id`](Self::span_id).
    #[inline]
    pub(crate) fn has_context(&self) -> bool {
        self.has_context
    }

    /// The shared remote context, if the span has one.
    pub(crate) fn inherited_block(&self) -> Option<&Arc<Inherited>> {
        self.inherited.as_ref()
    }

    /// Whether the span's baggage is exactly its block's items.
    pub(crate) fn baggage_is_block(&self) -> bool {
        self.baggage_is_block
    }

    /// Baggage items in the order set.
    pub(crate) fn baggage(&self) -> impl ExactSizeIterator<Item = (&str, &str)> + '_ {
        self.items.iter().map(|&(k, v)| (self.get(k), self.get(v)))
    }

    /// The inherited W3C `tracestate` (empty if none).
    pub(crate) fn trace_state(&self) -> &str {
        self.get(self.trace_state)
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

/// The stack: `entries[..len]` are entered, innermost last; the rest are
/// spare (their buffers reused by the next `enter`).
#[derive(Default)]
struct Stack {
    entries: Vec<ActiveEntry>,
    /// Invariant: `len <= entries.len()`, and equals `ENTERED`.
    len: usize,
    next_token: u64,
}

thread_local! {
    static ACTIVE: RefCell<Stack> = RefCell::new(Stack::default());
}

const_thread_local! {
    /// The number of entered spans, so that starting a span on a thread
    /// with nothing entered skips `ACTIVE` (a const thread-local: no lazy
    /// set-up check).
    static ENTERED: Cell<usize> = Cell::new(0);
}

/// Whether no span is entered on this thread.
#[inline(always)]
pub(crate) fn nothing_entered() -> bool {
    ENTERED.with(Cell::get) == 0
}

/// Pushes a copy of `r`; returns the token that [`leave`] takes, or 0 when
/// the thread-local is gone or busy (then nothing was entered).
pub(crate) fn enter(r: &SpanRecord) -> u64 {
    ACTIVE
        .try_with(|a| {
            let Ok(mut stack) = a.try_borrow_mut() else {
                return 0;
            };
            let stack = &mut *stack;
            stack.next_token += 1;
            let token = stack.next_token;
            if stack.len == stack.entries.len() {
                stack.entries.push(ActiveEntry::default());
            }
            stack.entries[stack.len].fill(r, token);
            stack.len += 1;
            ENTERED.with(|e| e.set(stack.len));
            token
        })
        .unwrap_or(0)
}

/// Removes the entry `token` (innermost first; a guard dropped out of
/// order removes its own entry, not the innermost).
pub(crate) fn leave(token: u64) {
    if token == 0 {
        return;
    }
    let _ = ACTIVE.try_with(|a| {
        let Ok(mut stack) = a.try_borrow_mut() else {
            return;
        };
        let stack = &mut *stack;
        let len = stack.len;
        // Guards are dropped innermost first, nearly always: the entry is
        // then the last one and stays where it is.
        let at = match stack.entries[..len].last() {
            Some(e) if e.token == token => Some(len - 1),
            _ => stack.entries[..len].iter().rposition(|e| e.token == token),
        };
        if let Some(i) = at {
            if i + 1 < len {
                stack.entries[i..len].rotate_left(1);
            }
            stack.len -= 1;
            stack.entries[len - 1].trim();
            ENTERED.with(|e| e.set(stack.len));
        }
    });
}

/// Calls `f` with the innermost entered span of tracer `tracer_id`, if any.
#[inline(always)]
pub(crate) fn with_active(tracer_id: u64, f: impl FnOnce(&ActiveEntry)) {
    // The common case (nothing entered) without touching `ACTIVE`.
    if !nothing_entered() {
        with_entered(tracer_id, f);
    }
}

#[inline(never)]
fn with_entered(tracer_id: u64, f: impl FnOnce(&ActiveEntry)) {
    let _ = ACTIVE.try_with(|a| {
        // A shared borrow: `f` may start spans (an allocator that records
        // them), which borrow again, shared; `enter` inside `f` finds the
        // stack busy and enters nothing.
        let Ok(stack) = a.try_borrow() else {
            return;
        };
        if let Some(e) = stack.entries[..stack.len]
            .iter()
            .rev()
            .find(|e| e.tracer_id == tracer_id)
        {
            f(e);
        }
    });
}
