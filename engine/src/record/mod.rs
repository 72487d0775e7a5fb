//! The span record: one span's data, from `start` through the ring to the
//! recorder.
//!
//! A span is held in two parts:
//! - the **record** (`SpanRecord`, 128 bytes: two cache lines): ids, times,
//!   the name, the first reference and up to [`INLINE_TAGS`] tags whose keys
//!   and values need no copying (literals and numbers). While the span is
//!   open the record lives inside its [`Span`](crate::Span) handle; `finish`
//!   copies it by value into the finishing thread's ring. A span that fits
//!   the record touches no pool, no arena and no memory the flusher wrote.
//! - the **extension** (`Ext`), taken from the thread's pool only when a
//!   span needs more: borrowed strings (copied into its bump arena), owned
//!   `String`s, tags beyond the inline ones, logs, baggage, further
//!   references and truncation counts. An `Ext` is allocated once and then
//!   recycled forever (`reset` keeps every capacity): it travels with its
//!   record to the flusher and back to the thread that allocated it, so a
//!   steady-state span never touches the global allocator either way.
//!
//! Strings are `RStr`s: a pointer and a length into static memory or into
//! the record's own `Ext`. The `Ext` is boxed, so moving the record (into
//! the ring, out of it, into a batch) never moves the bytes it points at.
//!
//! The files: `value.rs` (public value types), `packed.rs` (the compact,
//! unsafe storage of strings and fields), `ext.rs` (the extension),
//! `inherited.rs` (a remote context's baggage and `tracestate`, shared),
//! this file (the record and how spans write it), `tags.rs` (how spans set
//! tags), `log.rs` (how spans write log entries), `read.rs` (how recorders
//! read it).

mod ext;
mod inherited;
mod log;
mod packed;
mod read;
mod tags;
mod value;

pub(crate) use ext::{Ext, Time};
pub(crate) use inherited::Inherited;
pub(crate) use packed::floor_char_boundary;
pub use read::LogRef;
pub use value::{AsTag, Reference, ReferenceKind, Truncations, Value, ValueRef};

use crate::shared::Shared;
use crate::sync::Arc;
use ext::{push_noted, LogEntry};
use packed::{Field, RStr, MAX_NAME_BYTES};
use std::borrow::Cow;
use std::mem::MaybeUninit;
use std::ptr::NonNull;

/// Lists a span's baggage that was read from its shared block, so that it
/// can change: the items point into the block, which the `Ext` keeps.
fn materialize(ext: &mut Ext) {
    if !std::mem::take(&mut ext.baggage_from_block) {
        return;
    }
    if let Some(block) = ext.inherited.clone() {
        for (k, v) in block.items() {
            // `ext.inherited` holds the block until the record is gone:
            // the `RStr` invariant holds.
            push_noted(
                &mut ext.baggage,
                (RStr::from_str(k), RStr::from_str(v)),
                &mut ext.flusher_work,
            );
        }
    }
}

/// Tags a record holds without an extension. Two keep the record at two
/// cache lines, which is also the most the compiler copies without a call
/// to `memcpy` (the record is moved into the ring by value).
pub(crate) const INLINE_TAGS: usize = 2;

/// One finished span, as the flusher hands it to a [`Recorder`](crate::Recorder).
///
/// All accessors are cheap; the flusher has converted clock ticks to UTC
/// before a recorder sees the record. The process identity is the batch's:
/// [`Batch::process`](crate::Batch::process).
#[repr(align(64))]
pub struct SpanRecord {
    pub(crate) trace_id: u128,
    pub(crate) span_id: u64,
    /// The first reference's span (its trace is `trace_id`); valid when
    /// `FIRST_REF` is set.
    pub(super) first_ref_span: u64,
    /// Clock ticks, or Unix nanoseconds when `START_UNIX` is set.
    pub(super) start: u64,
    /// Clock ticks, or Unix nanoseconds when `FINISH_UNIX` is set.
    pub(super) finish: u64,
    /// The tracer: finishing looks up the thread's slot by it.
    pub(crate) tracer_id: u64,
    /// The name's bytes; see `name_len`.
    pub(super) name: NonNull<u8>,
    /// `Some` once the span needed more than the record holds.
    pub(super) ext: Option<Box<Ext>>,
    /// Invariant: `tags[..tag_count]` are initialized.
    pub(super) tags: [MaybeUninit<Field>; INLINE_TAGS],
    /// The name is `(name, name_len)` under the `RStr` invariant; names are
    /// cut at `u32::MAX` bytes.
    pub(super) name_len: u32,
    /// `SpanLimits::max_value_bytes` capped at `u16::MAX`: longer literal
    /// values take the slow path, which reads the real limit.
    pub(super) max_value_bytes: u16,
    /// `SAMPLED` and the other bits below, and `min(max_tags, INLINE_TAGS)`
    /// in the bits of `TAG_LIMIT`.
    pub(super) flags: u8,
    pub(super) tag_count: u8,
}

// Bits of `SpanRecord::flags`.
const SAMPLED: u8 = 1;
const FIRST_REF: u8 = 2;
const FIRST_REF_FOLLOWS: u8 = 4;
const START_UNIX: u8 = 8;
const FINISH_UNIX: u8 = 16;
const TAG_LIMIT_SHIFT: u32 = 5;
const TAG_LIMIT: u8 = 0b11 << TAG_LIMIT_SHIFT;

const _: () = assert!(INLINE_TAGS < 4, "the inline tag limit has two bits");
const _: () = assert!(std::mem::size_of::<SpanRecord>() == 128);

// SAFETY: the non-`Send` parts are the name and `Field` pointers, to
// static data or into the boxed `Ext` that moves with the record (see the
// `RStr` invariant). A record is used by one thread at a time (it is
// `!Sync`).
unsafe impl Send for SpanRecord {}

/// The extension of a record, taken from the thread's pool if it has none.
/// `None` only when the tracer is gone (nothing can be recorded then).
///
/// A free function over the one field, so callers can keep borrowing the
/// record's other fields.
#[inline]
fn ext_of(ext: &mut Option<Box<Ext>>, tracer_id: u64) -> Option<&mut Ext> {
    if ext.is_none() {
        *ext = crate::thread_slots::acquire_ext(tracer_id);
    }
    ext.as_deref_mut()
}

impl SpanRecord {
    /// An empty, unstarted record for a span of `shared`'s tracer.
    #[inline]
    pub(crate) fn new(shared: &Shared) -> SpanRecord {
        SpanRecord::new_root(shared, "", 0, 0, false, 0)
    }

    #[inline]
    fn inline_tag_limit(&self) -> usize {
        usize::from((self.flags & TAG_LIMIT) >> TAG_LIMIT_SHIFT)
    }

    #[inline]
    fn name(&self) -> RStr {
        RStr {
            ptr: self.name,
            len: self.name_len as usize,
        }
    }

    fn set_name_str(&mut self, name: RStr) {
        self.name = name.ptr;
        self.name_len = name.len as u32;
    }

    /// A started root span: a new trace, `start` in clock ticks.
    #[inline(always)]
    pub(crate) fn new_root(
        shared: &Shared,
        name: &'static str,
        trace_id: u128,
        span_id: u64,
        sampled: bool,
        start: u64,
    ) -> SpanRecord {
        let limits = &shared.config.limits;
        let name = RStr::from_static(&name[..floor_char_boundary(name, MAX_NAME_BYTES)]);
        SpanRecord {
            trace_id,
            span_id,
            first_ref_span: 0,
            start,
            finish: 0,
            tracer_id: shared.id,
            name: name.ptr,
            ext: None,
            tags: [MaybeUninit::uninit(); INLINE_TAGS],
            name_len: name.len as u32,
            max_value_bytes: u16::try_from(limits.max_value_bytes).unwrap_or(u16::MAX),
            flags: ((limits.max_tags.min(INLINE_TAGS) as u8) << TAG_LIMIT_SHIFT)
                | if sampled { SAMPLED } else { 0 },
            tag_count: 0,
        }
    }

    /// Hands back the extension for recycling, discarding the record (whose
    /// strings may point into it).
    #[inline]
    pub(crate) fn into_ext(self) -> Option<Box<Ext>> {
        self.ext
    }

    /// Whether the record holds an extension.
    #[inline]
    pub(crate) fn has_ext(&self) -> bool {
        self.ext.is_some()
    }

    /// Takes the extension out of a record that is about to be discarded
    /// (the flusher's batch, cleared right after). The record keeps no
    /// string that could point into it: its name and tags are cleared.
    #[inline]
    pub(crate) fn take_ext(&mut self) -> Option<Box<Ext>> {
        self.tag_count = 0;
        self.name = RStr::EMPTY.ptr;
        self.name_len = 0;
        self.ext.take()
    }

    #[inline]
    fn inline_tags(&self) -> &[Field] {
        let tags = &self.tags[..usize::from(self.tag_count)];
        // SAFETY: `tags[..tag_count]` are initialized (field invariant), and
        // `MaybeUninit<Field>` has `Field`'s layout.
        unsafe { &*(tags as *const [MaybeUninit<Field>] as *const [Field]) }
    }

    #[inline]
    fn ext_ref(&self) -> Option<&Ext> {
        self.ext.as_deref()
    }

    #[inline]
    fn str(&self, s: RStr) -> &str {
        // SAFETY: `s` is one of this record's strings, borrowed with it.
        unsafe { s.get() }
    }

    /// Hints the CPU to fetch what a recorder reads of this record beyond
    /// the record itself: its extension's arrays (see [`crate::prefetch`]).
    #[inline]
    pub(crate) fn prefetch_contents(&self) {
        if let Some(ext) = self.ext_ref() {
            // The first two lines (see `Ext`'s layout), all when the cold
            // part holds anything.
            let hot = std::mem::size_of::<Ext>().min(128);
            let ext_bytes = if ext.cold_used() {
                std::mem::size_of::<Ext>()
            } else {
                hot
            };
            crate::prefetch::lines((ext as *const Ext).cast(), ext_bytes);
            crate::prefetch::slice(&ext.tags);
            if ext.cold_used() {
                crate::prefetch::slice(&ext.logs);
                crate::prefetch::slice(&ext.log_fields);
                crate::prefetch::slice(&ext.baggage);
            }
        }
    }

    #[inline]
    pub(crate) fn set_sampled(&mut self, sampled: bool) {
        if sampled {
            self.flags |= SAMPLED;
        } else {
            self.flags &= !SAMPLED;
        }
    }

    /// Sets the start time (`Time::UnixNanos` for an explicit one).
    #[inline]
    pub(crate) fn set_start(&mut self, t: Time) {
        match t {
            Time::Ticks(t) => self.start = t,
            Time::UnixNanos(t) => {
                self.start = t;
                self.flags |= START_UNIX;
            }
        }
    }

    /// Sets the finish time (`Time::UnixNanos` for an explicit one).
    #[inline]
    pub(crate) fn set_finish(&mut self, t: Time) {
        match t {
            Time::Ticks(t) => self.finish = t,
            Time::UnixNanos(t) => {
                self.finish = t;
                self.flags |= FINISH_UNIX;
            }
        }
    }

    /// The flusher's step before a recorder sees the record: converts clock
    /// ticks to UTC.
    pub(crate) fn prepare_for_recorder(&mut self, shared: &Shared) {
        if self.flags & START_UNIX == 0 {
            self.start = shared.clock.ticks_to_unix_nanos(self.start);
            self.flags |= START_UNIX;
        }
        if self.flags & FINISH_UNIX == 0 {
            self.finish = shared.clock.ticks_to_unix_nanos(self.finish);
            self.flags |= FINISH_UNIX;
        }
    }

    /// Sets the operation name.
    #[inline]
    pub(crate) fn set_name(&mut self, name: Cow<'static, str>) {
        let name = match name {
            Cow::Borrowed(s) if s.len() <= MAX_NAME_BYTES => RStr::from_static(s),
            name => match ext_of(&mut self.ext, self.tracer_id) {
                Some(ext) => ext.store_str(name, MAX_NAME_BYTES),
                None => return,
            },
        };
        self.set_name_str(name);
    }

    /// Whether the span has any reference yet.
    #[inline]
    pub(crate) fn has_references(&self) -> bool {
        self.flags & FIRST_REF != 0
            || self
                .ext_ref()
                .is_some_and(|e| e.cold_used() && !e.references.is_empty())
    }

    /// Adds a reference. The first one, made before the span starts, gives
    /// the span its trace id and is held inline.
    #[inline]
    pub(crate) fn add_reference(&mut self, kind: ReferenceKind, trace_id: u128, span_id: u64) {
        if !self.has_references() && self.span_id == 0 {
            self.flags |= FIRST_REF;
            if kind == ReferenceKind::FollowsFrom {
                self.flags |= FIRST_REF_FOLLOWS;
            }
            self.trace_id = trace_id;
            self.first_ref_span = span_id;
        } else if let Some(ext) = ext_of(&mut self.ext, self.tracer_id) {
            let ext = ext.cold();
            let reference = Reference {
                kind,
                trace_id,
                span_id,
            };
            push_noted(&mut ext.references, reference, &mut ext.flusher_work);
        }
    }

    /// Sets a baggage item, replacing an item with the same key. Refused and
    /// counted when the item would break the baggage limits, or when the
    /// span has already replaced `max_baggage_bytes` of values (each
    /// replacement copies; this bounds what one span can make its arena
    /// hold).
    pub(crate) fn set_baggage(&mut self, key: &str, value: &str) {
        let Some(ext) = ext_of(&mut self.ext, self.tracer_id) else {
            return;
        };
        let ext = ext.cold();
        materialize(ext);
        let limits = *ext.limits();
        let old = ext.baggage.iter().position(|(k, _)| {
            // SAFETY: the key is one of this record's strings, and the
            // record is borrowed throughout.
            unsafe { k.get() == key }
        });
        let freed = old.map_or(0, |i| ext.baggage[i].0.len + ext.baggage[i].1.len);
        let items = ext.baggage.len() + usize::from(old.is_none());
        let bytes = ext.baggage_bytes - freed + key.len() + value.len();
        let replaced = ext.replaced_baggage_bytes + old.map_or(0, |_| value.len());
        if items > limits.max_baggage_items
            || bytes > limits.max_baggage_bytes
            || replaced > limits.max_baggage_bytes
        {
            ext.truncations.baggage += 1;
            return;
        }
        ext.replaced_baggage_bytes = replaced;
        let value = ext.copy_str(value);
        match old {
            Some(i) => ext.baggage[i].1 = value,
            None => {
                let key = ext.copy_str(key);
                push_noted(&mut ext.baggage, (key, value), &mut ext.flusher_work);
            }
        }
        ext.baggage_bytes = bytes;
    }

    /// Inherits a parent's baggage (items whose key this span has are
    /// skipped) and, when `trace_state` is given, its `tracestate`.
    ///
    /// `block` is the parent's shared remote context; `exactly` says the
    /// parent's baggage is exactly the block's items (under this tracer's
    /// limits). A span that inherits nothing else then just holds the block
    /// and reads its baggage from it. Otherwise the items are listed:
    /// strings that lie in the block this span holds are pointed at, others
    /// are copied into its arena.
    pub(crate) fn inherit_context<'b>(
        &mut self,
        block: Option<&Arc<Inherited>>,
        exactly: bool,
        baggage: impl Iterator<Item = (&'b str, &'b str)>,
        trace_state: Option<&'b str>,
    ) {
        let mut baggage = baggage.peekable();
        let nothing =
            block.is_none_or(|b| b.items().len() == 0 || !exactly) && baggage.peek().is_none();
        if nothing && trace_state.is_none_or(str::is_empty) {
            return;
        }
        let Some(ext) = ext_of(&mut self.ext, self.tracer_id) else {
            return;
        };
        let ext = ext.cold();
        let fresh = ext.inherited.is_none() && ext.baggage.is_empty();
        if ext.inherited.is_none() {
            ext.set_inherited(block.cloned());
        }
        let shared = match (&ext.inherited, block) {
            (Some(mine), Some(theirs)) => Arc::ptr_eq(mine, theirs),
            _ => false,
        };
        // A string of the shared block is pointed at, others are copied.
        let store = |ext: &mut Ext, s: &str| {
            if shared && block.is_some_and(|b| b.offset_of(s).is_some()) {
                // The block is held by `ext.inherited` until the record is
                // gone (its invariant): the `RStr` invariant holds.
                RStr::from_str(s)
            } else {
                ext.copy_str(s)
            }
        };
        if let Some(ts) = trace_state.filter(|ts| !ts.is_empty()) {
            ext.trace_state = store(ext, ts);
        }
        if let (true, true, Some(b)) = (fresh && shared, exactly, block) {
            ext.baggage_from_block = b.items().len() > 0;
            ext.baggage_bytes = b.bytes();
            return;
        }
        materialize(ext);
        let limits = *ext.limits();
        for (k, v) in baggage {
            let known = ext.baggage.iter().any(|(have, _)| {
                // SAFETY: the keys are this record's strings, borrowed with
                // it (the `RStr` invariant).
                unsafe { have.get() == k }
            });
            if known {
                continue;
            }
            let bytes = ext.baggage_bytes + k.len() + v.len();
            if ext.baggage.len() >= limits.max_baggage_items || bytes > limits.max_baggage_bytes {
                ext.truncations.baggage += 1;
                continue;
            }
            let item = (store(ext, k), store(ext, v));
            push_noted(&mut ext.baggage, item, &mut ext.flusher_work);
            ext.baggage_bytes = bytes;
        }
    }

    /// Inherits a remote context's baggage and (when `first`, the span's
    /// first reference) its `tracestate`: copied once into a shared block
    /// of the items this tracer's limits admit (the rest counted), which
    /// the span's descendants then share.
    pub(crate) fn inherit_remote<'b>(
        &mut self,
        baggage: impl Iterator<Item = (&'b str, &'b str)>,
        trace_state: &str,
        first: bool,
    ) {
        let mut baggage = baggage.peekable();
        let trace_state = if first { trace_state } else { "" };
        if baggage.peek().is_none() && trace_state.is_empty() {
            return;
        }
        let Some(ext) = ext_of(&mut self.ext, self.tracer_id) else {
            return;
        };
        let (block, refused) = Inherited::build(baggage, trace_state, ext.limits());
        ext.truncations.baggage += refused;
        if let Some(b) = &block {
            self.inherit_context(Some(b), true, b.items(), first.then(|| b.trace_state()));
        }
    }

    /// Whether a child would inherit anything besides ids from this span
    /// (baggage or a `tracestate`): the common answer, no, skips the rest.
    #[inline]
    pub(crate) fn has_context(&self) -> bool {
        self.ext_ref().is_some_and(|e| {
            e.cold_used()
                && (!e.baggage.is_empty() || e.baggage_from_block || e.trace_state.len > 0)
        })
    }

    /// Whether this span's baggage is exactly its shared block's items.
    pub(crate) fn baggage_is_block(&self) -> bool {
        self.ext_ref().is_some_and(|e| e.baggage_from_block)
    }

    /// The shared remote context this span's inherited strings point into.
    pub(crate) fn inherited_block(&self) -> Option<&Arc<Inherited>> {
        self.ext_ref()
            .filter(|e| e.cold_used())
            .and_then(|e| e.inherited.as_ref())
    }

    /// The W3C `tracestate` inherited from the first reference.
    pub(crate) fn trace_state(&self) -> &str {
        self.ext_ref()
            .filter(|e| e.cold_used())
            .map_or("", |e| self.str(e.trace_state))
    }

    pub(crate) fn baggage_item(&self, key: &str) -> Option<&str> {
        self.baggage().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// What the limits cut off, if anything was.
    pub(crate) fn truncations_if_any(&self) -> Option<&Truncations> {
        self.ext_ref().map(|e| &e.truncations).filter(|t| t.any())
    }

    /// Forgets the truncation counts (once they are counted).
    pub(crate) fn clear_truncations(&mut self) {
        if let Some(ext) = self.ext.as_deref_mut() {
            ext.truncations = Truncations::default();
        }
    }
}
