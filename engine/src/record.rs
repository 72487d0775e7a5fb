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

use crate::config::SpanLimits;
use crate::shared::Shared;
use crate::sync::Arc;
use bumpalo::Bump;
use std::borrow::Cow;
use std::fmt;
use std::mem::MaybeUninit;
use std::ptr::NonNull;

/// Tags a record holds without an extension. Two keep the record at two
/// cache lines, which is also the most the compiler copies without a call
/// to `memcpy` (the record is moved into the ring by value).
pub(crate) const INLINE_TAGS: usize = 2;

/// A string a record holds: a literal, or bytes owned by the record's `Ext`.
///
/// Invariant: `ptr..ptr+len` is valid UTF-8 that is either `'static` or
/// owned by the `Ext` of the one record holding this `RStr` (in its arena
/// or one of its `owned` strings). That `Ext` is reset or freed only after
/// it has been detached from the record by [`SpanRecord::into_ext`], which
/// consumes the record, so the bytes outlive every read through the record.
/// An `RStr` is never copied into another record (copy the bytes).
#[derive(Clone, Copy)]
pub(crate) struct RStr {
    ptr: NonNull<u8>,
    len: usize,
}

impl RStr {
    pub(crate) const EMPTY: RStr = RStr::from_static("");

    #[inline]
    pub(crate) const fn from_static(s: &'static str) -> RStr {
        match NonNull::new(s.as_ptr().cast_mut()) {
            Some(ptr) => RStr { ptr, len: s.len() },
            None => RStr {
                ptr: NonNull::dangling(),
                len: 0,
            },
        }
    }

    fn from_str(s: &str) -> RStr {
        RStr {
            ptr: NonNull::from(s).cast(),
            len: s.len(),
        }
    }

    /// The string.
    ///
    /// # Safety
    /// The bytes must stay alive for `'a`: `self` must be held by a record
    /// (or its `Ext`) that is borrowed for `'a` (the `RStr` invariant).
    #[inline]
    unsafe fn get<'a>(self) -> &'a str {
        // SAFETY: valid UTF-8 by the `RStr` invariant, alive for 'a by the
        // caller's obligation.
        unsafe {
            std::str::from_utf8_unchecked(std::slice::from_raw_parts(self.ptr.as_ptr(), self.len))
        }
    }
}

/// The largest `n <= max` that is a char boundary of `s`.
#[inline]
pub(crate) fn floor_char_boundary(s: &str, max: usize) -> usize {
    if s.len() <= max {
        return s.len();
    }
    let mut n = max;
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    n
}

/// A tag or log field value, as a caller passes it.
///
/// Integers, floats and booleans keep their type. Borrowed strings
/// (`&str`) are copied into the span's arena (no global allocation);
/// `&'static str` literals can be kept without a copy through
/// [`Value::StaticStr`]; an owned `String` is moved in and freed on the
/// flusher thread.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    /// A signed integer.
    I64(i64),
    /// An unsigned integer; recorders must keep values above `i64::MAX`.
    U64(u64),
    /// A float.
    F64(f64),
    /// A boolean.
    Bool(bool),
    /// A borrowed string, copied into the span's arena.
    Str(&'a str),
    /// A string literal, kept by reference.
    StaticStr(&'static str),
    /// An owned string, moved into the span.
    String(String),
}

macro_rules! value_from {
    ($($t:ty => $variant:ident as $as:ty),* $(,)?) => {$(
        impl From<$t> for Value<'_> {
            #[inline]
            fn from(v: $t) -> Self {
                Value::$variant(v as $as)
            }
        }
    )*};
}

value_from! {
    i64 => I64 as i64, i32 => I64 as i64, i16 => I64 as i64, i8 => I64 as i64,
    u64 => U64 as u64, u32 => U64 as u64, u16 => U64 as u64, u8 => U64 as u64,
    usize => U64 as u64, f64 => F64 as f64, f32 => F64 as f64,
}

impl From<bool> for Value<'_> {
    #[inline]
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}

impl<'a> From<&'a str> for Value<'a> {
    #[inline]
    fn from(v: &'a str) -> Self {
        Value::Str(v)
    }
}

impl<'a> From<&'a String> for Value<'a> {
    #[inline]
    fn from(v: &'a String) -> Self {
        Value::Str(v)
    }
}

impl From<String> for Value<'_> {
    #[inline]
    fn from(v: String) -> Self {
        Value::String(v)
    }
}

impl From<Cow<'static, str>> for Value<'_> {
    #[inline]
    fn from(v: Cow<'static, str>) -> Self {
        match v {
            Cow::Borrowed(s) => Value::StaticStr(s),
            Cow::Owned(s) => Value::String(s),
        }
    }
}

/// A tag or log field value as a recorder reads it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ValueRef<'a> {
    /// A signed integer.
    I64(i64),
    /// An unsigned integer.
    U64(u64),
    /// A float.
    F64(f64),
    /// A boolean.
    Bool(bool),
    /// A string.
    Str(&'a str),
}

impl fmt::Display for ValueRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ValueRef::I64(v) => v.fmt(f),
            ValueRef::U64(v) => v.fmt(f),
            ValueRef::F64(v) => v.fmt(f),
            ValueRef::Bool(v) => v.fmt(f),
            ValueRef::Str(v) => v.fmt(f),
        }
    }
}

/// How a span relates to one it references (OpenTracing semantics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReferenceKind {
    /// The referenced span depends on this one's result (parent/child).
    ChildOf,
    /// The referenced span caused this one but does not wait for it.
    FollowsFrom,
}

/// A reference from a span to another span.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Reference {
    /// How the spans relate.
    pub kind: ReferenceKind,
    /// The referenced span's trace.
    pub trace_id: u128,
    /// The referenced span.
    pub span_id: u64,
}

/// How much of a span its [`SpanLimits`] cut off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Truncations {
    /// Tags dropped beyond `max_tags`.
    pub tags: u32,
    /// Log entries dropped beyond `max_logs`.
    pub logs: u32,
    /// Log fields dropped beyond `max_log_fields`.
    pub log_fields: u32,
    /// String values cut to `max_value_bytes`.
    pub values: u32,
    /// Baggage items refused by `max_baggage_items` or `max_baggage_bytes`.
    pub baggage: u32,
}

impl Truncations {
    pub(crate) fn any(&self) -> bool {
        *self != Truncations::default()
    }
}

/// A value as stored, before packing.
#[derive(Clone, Copy)]
enum Stored {
    I64(i64),
    U64(u64),
    F64(f64),
    Bool(bool),
    Str(RStr),
}

#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Kind {
    I64,
    U64,
    F64,
    Bool,
    Str,
}

/// A field's value; `Field::kind` says which member is live.
#[derive(Clone, Copy)]
union Bits {
    i: i64,
    u: u64,
    f: f64,
    b: bool,
    s: NonNull<u8>,
}

/// Keys longer than this are cut (and counted under `Truncations::values`).
const MAX_KEY_BYTES: usize = u16::MAX as usize;
/// Names longer than this are cut (and counted under `Truncations::values`).
const MAX_NAME_BYTES: usize = u32::MAX as usize;

/// A tag or log field in 24 bytes.
///
/// Invariant: the key (`key`, `key_len`) and, for `Kind::Str`, the value
/// (`value.s`, `value_len`) are strings under the `RStr` invariant of the
/// record that holds this field.
#[derive(Clone, Copy)]
pub(crate) struct Field {
    key: NonNull<u8>,
    value: Bits,
    value_len: u32,
    key_len: u16,
    kind: Kind,
}

impl Field {
    /// Packs a key (at most `MAX_KEY_BYTES`) and a value (strings at most
    /// `u32::MAX` bytes: callers cut them to `max_value_bytes`, capped
    /// there).
    #[inline]
    fn new(key: RStr, value: Stored) -> Field {
        debug_assert!(key.len <= MAX_KEY_BYTES);
        let (value, value_len, kind) = match value {
            Stored::I64(i) => (Bits { i }, 0, Kind::I64),
            Stored::U64(u) => (Bits { u }, 0, Kind::U64),
            Stored::F64(f) => (Bits { f }, 0, Kind::F64),
            Stored::Bool(b) => (Bits { b }, 0, Kind::Bool),
            Stored::Str(s) => (Bits { s: s.ptr }, s.len as u32, Kind::Str),
        };
        Field {
            key: key.ptr,
            value,
            value_len,
            key_len: key.len as u16,
            kind,
        }
    }

    #[inline]
    fn key(&self) -> RStr {
        RStr {
            ptr: self.key,
            len: usize::from(self.key_len),
        }
    }

    #[inline]
    fn key_is(&self, key: &str) -> bool {
        // A literal set twice is the same pointer: skip the byte compare.
        usize::from(self.key_len) == key.len()
            && (self.key.as_ptr().cast_const() == key.as_ptr()
                // SAFETY: the field is held by a record borrowed for this
                // call (the `Field` invariant).
                || unsafe { self.key().get() } == key)
    }

    /// The key and value.
    ///
    /// # Safety
    /// As for [`RStr::get`]: the field is held by a record borrowed for `'a`.
    #[inline]
    unsafe fn get<'a>(&self) -> (&'a str, ValueRef<'a>) {
        // SAFETY: each union read matches `kind`, which `new` wrote with the
        // member; the strings live for 'a by the caller's obligation.
        unsafe {
            let value = match self.kind {
                Kind::I64 => ValueRef::I64(self.value.i),
                Kind::U64 => ValueRef::U64(self.value.u),
                Kind::F64 => ValueRef::F64(self.value.f),
                Kind::Bool => ValueRef::Bool(self.value.b),
                Kind::Str => ValueRef::Str(
                    RStr {
                        ptr: self.value.s,
                        len: self.value_len as usize,
                    }
                    .get(),
                ),
            };
            (self.key().get(), value)
        }
    }
}

/// Iterates a record's fields: the inline ones, then the extension's.
pub(crate) struct Fields<'a> {
    first: std::slice::Iter<'a, Field>,
    rest: std::slice::Iter<'a, Field>,
}

impl<'a> Iterator for Fields<'a> {
    type Item = (&'a str, ValueRef<'a>);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        let f = self.first.next().or_else(|| self.rest.next())?;
        // SAFETY: the slices are borrowed from a record for 'a.
        Some(unsafe { f.get() })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.first.len() + self.rest.len();
        (n, Some(n))
    }
}

impl ExactSizeIterator for Fields<'_> {}

/// Iterates a record's references: the inline first one, then the rest.
pub(crate) struct References<'a> {
    first: Option<Reference>,
    rest: std::slice::Iter<'a, Reference>,
}

impl Iterator for References<'_> {
    type Item = Reference;

    #[inline]
    fn next(&mut self) -> Option<Reference> {
        self.first.take().or_else(|| self.rest.next().copied())
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = usize::from(self.first.is_some()) + self.rest.len();
        (n, Some(n))
    }
}

impl ExactSizeIterator for References<'_> {}

/// A point in time: raw clock ticks from the hot path, converted to UTC on
/// the flusher (or when read), or a time the caller gave explicitly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Time {
    Ticks(u64),
    UnixNanos(u64),
}

struct LogEntry {
    time: Time,
    event: RStr,
    /// This entry's fields are `log_fields[fields.0..fields.1]`.
    fields: (u32, u32),
}

/// What a span holds beyond its record; see the module docs.
pub(crate) struct Ext {
    /// The tracer this buffer belongs to; fixed for the buffer's whole life.
    pub(crate) shared: Arc<Shared>,
    /// The id of the thread slot that allocated this buffer; fixed.
    pub(crate) home: u64,
    /// Tags beyond the record's inline ones.
    ///
    /// Invariant: non-empty only when the record's inline tags are full.
    tags: Vec<Field>,
    logs: Vec<LogEntry>,
    log_fields: Vec<Field>,
    /// References after the record's first one.
    references: Vec<Reference>,
    baggage: Vec<(RStr, RStr)>,
    /// Sum of the lengths of the keys and values in `baggage`.
    baggage_bytes: usize,
    /// The W3C `tracestate` inherited from the first reference.
    trace_state: RStr,
    pub(crate) truncations: Truncations,
    /// Strings callers gave away, freed when the buffer is reset: on the
    /// flusher if any (see `owns_heap`), so the hot path frees nothing.
    owned: Vec<String>,
    /// Holds the bytes of every arena `RStr` of the record.
    ///
    /// Invariant: reset only by `reset`, after the record is gone.
    arena: Bump,
}

// SAFETY: the only non-`Send` parts are `RStr` pointers into `arena` and
// `owned` (heap memory this `Ext` owns and that moves with it) or to
// static data; `Bump` itself is `Send`. An `Ext` is used by one thread at a
// time (it is `!Sync` because `Bump` is).
unsafe impl Send for Ext {}

impl Ext {
    pub(crate) fn new(shared: Arc<Shared>, home: u64) -> Box<Ext> {
        let arena = Bump::with_capacity(shared.config.arena_chunk_bytes);
        Box::new(Ext {
            shared,
            home,
            tags: Vec::new(),
            logs: Vec::new(),
            log_fields: Vec::new(),
            references: Vec::new(),
            baggage: Vec::new(),
            baggage_bytes: 0,
            trace_state: RStr::EMPTY,
            truncations: Truncations::default(),
            owned: Vec::new(),
            arena,
        })
    }

    /// Whether `reset` would free memory; the flusher then resets the buffer
    /// itself, so that frees happen off the hot path. Otherwise the owning
    /// thread resets it when it reuses it, which keeps the flusher from
    /// writing (and so stealing) the buffer's cache lines.
    pub(crate) fn owns_heap(&self) -> bool {
        !self.owned.is_empty()
    }

    /// Makes the buffer ready for its next span, keeping every capacity.
    pub(crate) fn reset(&mut self) {
        self.tags.clear();
        self.logs.clear();
        self.log_fields.clear();
        self.references.clear();
        self.baggage.clear();
        self.baggage_bytes = 0;
        self.trace_state = RStr::EMPTY;
        self.truncations = Truncations::default();
        self.owned.clear();
        // The record holding `RStr`s into the arena is gone (`into_ext`).
        self.arena.reset();
    }

    fn limits(&self) -> &SpanLimits {
        &self.shared.config.limits
    }

    fn copy_str(&self, s: &str) -> RStr {
        if s.is_empty() {
            return RStr::EMPTY;
        }
        RStr::from_str(self.arena.alloc_str(s))
    }

    fn own_string(&mut self, s: String) -> RStr {
        let r = RStr::from_str(&s);
        // Moving the `String` does not move its bytes.
        self.owned.push(s);
        r
    }

    /// Stores a key, name or event, cutting keys to `max` bytes.
    fn store_str(&mut self, s: Cow<'static, str>, max: usize) -> RStr {
        let n = floor_char_boundary(&s, max);
        if n < s.len() {
            self.truncations.values += 1;
        }
        match s {
            Cow::Borrowed(s) => RStr::from_static(&s[..n]),
            Cow::Owned(mut s) => {
                s.truncate(n);
                self.own_string(s)
            }
        }
    }

    /// Turns a caller's value into a stored one, copying and cutting strings.
    fn store_value(&mut self, value: Value<'_>, max: usize) -> Stored {
        match value {
            Value::I64(v) => Stored::I64(v),
            Value::U64(v) => Stored::U64(v),
            Value::F64(v) => Stored::F64(v),
            Value::Bool(v) => Stored::Bool(v),
            Value::Str(s) => {
                let n = floor_char_boundary(s, max);
                if n < s.len() {
                    self.truncations.values += 1;
                }
                Stored::Str(self.copy_str(&s[..n]))
            }
            Value::StaticStr(s) => Stored::Str(self.store_str(Cow::Borrowed(s), max)),
            Value::String(s) => Stored::Str(self.store_str(Cow::Owned(s), max)),
        }
    }
}

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
    first_ref_span: u64,
    /// Clock ticks, or Unix nanoseconds when `START_UNIX` is set.
    start: u64,
    /// Clock ticks, or Unix nanoseconds when `FINISH_UNIX` is set.
    finish: u64,
    /// The tracer: finishing looks up the thread's slot by it.
    pub(crate) tracer_id: u64,
    /// The name's bytes; see `name_len`.
    name: NonNull<u8>,
    /// `Some` once the span needed more than the record holds.
    ext: Option<Box<Ext>>,
    /// Invariant: `tags[..tag_count]` are initialized.
    tags: [MaybeUninit<Field>; INLINE_TAGS],
    /// The name is `(name, name_len)` under the `RStr` invariant; names are
    /// cut at `u32::MAX` bytes.
    name_len: u32,
    /// `SpanLimits::max_value_bytes` capped at `u16::MAX`: longer literal
    /// values take the slow path, which reads the real limit.
    max_value_bytes: u16,
    /// `SAMPLED` and the other bits below, and `min(max_tags, INLINE_TAGS)`
    /// in the bits of `TAG_LIMIT`.
    flags: u8,
    tag_count: u8,
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
            crate::prefetch::value(ext);
            crate::prefetch::slice(&ext.tags);
            crate::prefetch::slice(&ext.logs);
            crate::prefetch::slice(&ext.log_fields);
            crate::prefetch::slice(&ext.baggage);
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
        self.flags & FIRST_REF != 0 || self.ext_ref().is_some_and(|e| !e.references.is_empty())
    }

    /// Adds a reference. The first one, made before the span starts, gives
    /// the span its trace id and is held inline.
    pub(crate) fn add_reference(&mut self, kind: ReferenceKind, trace_id: u128, span_id: u64) {
        if !self.has_references() && self.span_id == 0 {
            self.flags |= FIRST_REF;
            if kind == ReferenceKind::FollowsFrom {
                self.flags |= FIRST_REF_FOLLOWS;
            }
            self.trace_id = trace_id;
            self.first_ref_span = span_id;
        } else if let Some(ext) = ext_of(&mut self.ext, self.tracer_id) {
            ext.references.push(Reference {
                kind,
                trace_id,
                span_id,
            });
        }
    }

    /// Drops the tags set before the sampling decision said "unsampled".
    pub(crate) fn clear_tags(&mut self) {
        self.tag_count = 0;
        if let Some(ext) = self.ext.as_deref_mut() {
            ext.tags.clear();
        }
    }

    /// Sets a tag, replacing the value of an earlier tag with the same key.
    #[inline(always)]
    pub(crate) fn set_tag(&mut self, key: Cow<'static, str>, value: Value<'_>) {
        // The fast path: a literal key and a value that needs no copy, with
        // room inline (so the extension holds no tags: see `Ext::tags`).
        if let Cow::Borrowed(k) = key {
            let n = usize::from(self.tag_count);
            if n < self.inline_tag_limit() && k.len() <= MAX_KEY_BYTES {
                let stored = match value {
                    Value::I64(v) => Some(Stored::I64(v)),
                    Value::U64(v) => Some(Stored::U64(v)),
                    Value::F64(v) => Some(Stored::F64(v)),
                    Value::Bool(v) => Some(Stored::Bool(v)),
                    Value::StaticStr(s) if s.len() <= usize::from(self.max_value_bytes) => {
                        Some(Stored::Str(RStr::from_static(s)))
                    }
                    _ => None,
                };
                if let Some(stored) = stored {
                    if !self.inline_tags().iter().any(|f| f.key_is(k)) {
                        self.tags[n].write(Field::new(RStr::from_static(k), stored));
                        self.tag_count += 1;
                        return;
                    }
                }
            }
        }
        self.set_tag_slow(key, value);
    }

    #[cold]
    #[inline(never)]
    fn set_tag_slow(&mut self, key: Cow<'static, str>, value: Value<'_>) {
        let n = usize::from(self.tag_count);
        let inline_limit = self.inline_tag_limit();
        let existing = self.inline_tags().iter().position(|f| f.key_is(&key));
        let Some(ext) = ext_of(&mut self.ext, self.tracer_id) else {
            return;
        };
        let max_value = ext.limits().max_value_bytes.min(u32::MAX as usize);
        let existing_ext = ext.tags.iter().position(|f| f.key_is(&key));
        let room = n < inline_limit || n + ext.tags.len() < ext.limits().max_tags;
        if existing.is_none() && existing_ext.is_none() && !room {
            ext.truncations.tags += 1;
            return;
        }
        let key = ext.store_str(key, MAX_KEY_BYTES);
        let field = Field::new(key, ext.store_value(value, max_value));
        match (existing, existing_ext) {
            (Some(i), _) => {
                self.tags[i].write(field);
            }
            (None, Some(i)) => ext.tags[i] = field,
            (None, None) if n < inline_limit => {
                self.tags[n].write(field);
                self.tag_count += 1;
            }
            (None, None) => ext.tags.push(field),
        }
    }

    /// Appends a log entry (dropped and counted beyond the limits).
    /// `time` is now when `None`.
    pub(crate) fn log<'a, K, V>(
        &mut self,
        time: Option<Time>,
        event: Cow<'static, str>,
        fields: impl IntoIterator<Item = (K, V)>,
    ) where
        K: Into<Cow<'static, str>>,
        V: Into<Value<'a>>,
    {
        let Some(ext) = ext_of(&mut self.ext, self.tracer_id) else {
            return;
        };
        let max_value = ext.limits().max_value_bytes.min(u32::MAX as usize);
        let time = time.unwrap_or_else(|| Time::Ticks(ext.shared.clock.now()));
        let limits = *ext.limits();
        if ext.logs.len() >= limits.max_logs {
            ext.truncations.logs += 1;
            return;
        }
        let first = ext.log_fields.len() as u32;
        for (i, (key, value)) in fields.into_iter().enumerate() {
            if i >= limits.max_log_fields {
                ext.truncations.log_fields += 1;
                continue;
            }
            let key = ext.store_str(key.into(), MAX_KEY_BYTES);
            let field = Field::new(key, ext.store_value(value.into(), max_value));
            ext.log_fields.push(field);
        }
        let last = ext.log_fields.len() as u32;
        let event = ext.store_str(event, usize::MAX);
        ext.logs.push(LogEntry {
            time,
            event,
            fields: (first, last),
        });
    }

    /// Sets a baggage item, replacing an item with the same key. Refused and
    /// counted when the item would break the baggage limits.
    pub(crate) fn set_baggage(&mut self, key: &str, value: &str) {
        let Some(ext) = ext_of(&mut self.ext, self.tracer_id) else {
            return;
        };
        let limits = *ext.limits();
        let old = ext.baggage.iter().position(|(k, _)| {
            // SAFETY: the key is one of this record's strings, and the
            // record is borrowed throughout.
            unsafe { k.get() == key }
        });
        let freed = old.map_or(0, |i| ext.baggage[i].0.len + ext.baggage[i].1.len);
        let items = ext.baggage.len() + usize::from(old.is_none());
        let bytes = ext.baggage_bytes - freed + key.len() + value.len();
        if items > limits.max_baggage_items || bytes > limits.max_baggage_bytes {
            ext.truncations.baggage += 1;
            return;
        }
        let value = ext.copy_str(value);
        match old {
            Some(i) => ext.baggage[i].1 = value,
            None => {
                let key = ext.copy_str(key);
                ext.baggage.push((key, value));
            }
        }
        ext.baggage_bytes = bytes;
    }

    pub(crate) fn set_trace_state(&mut self, trace_state: &str) {
        if let Some(ext) = ext_of(&mut self.ext, self.tracer_id) {
            ext.trace_state = ext.copy_str(trace_state);
        }
    }

    /// The W3C `tracestate` inherited from the first reference.
    pub(crate) fn trace_state(&self) -> &str {
        self.ext_ref().map_or("", |e| self.str(e.trace_state))
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

    /// The trace this span belongs to; never zero.
    pub fn trace_id(&self) -> u128 {
        self.trace_id
    }

    /// This span's id; never zero.
    pub fn span_id(&self) -> u64 {
        self.span_id
    }

    /// The span this one is a `ChildOf`, else the first span it follows from.
    pub fn parent_span_id(&self) -> Option<u64> {
        self.references()
            .find(|r| r.kind == ReferenceKind::ChildOf)
            .or_else(|| self.references().next())
            .map(|r| r.span_id)
    }

    /// Every reference the span was started with, in the order given, then
    /// those added later.
    pub fn references(&self) -> impl ExactSizeIterator<Item = Reference> + '_ {
        let first = (self.flags & FIRST_REF != 0).then_some(Reference {
            kind: if self.flags & FIRST_REF_FOLLOWS != 0 {
                ReferenceKind::FollowsFrom
            } else {
                ReferenceKind::ChildOf
            },
            trace_id: self.trace_id,
            span_id: self.first_ref_span,
        });
        References {
            first,
            rest: self.ext_ref().map_or(&[][..], |e| &e.references).iter(),
        }
    }

    /// The operation name.
    pub fn operation_name(&self) -> &str {
        self.str(self.name())
    }

    /// Always true for records a recorder receives; unsampled spans are not
    /// recorded.
    pub fn sampled(&self) -> bool {
        self.flags & SAMPLED != 0
    }

    /// Start time in nanoseconds since the Unix epoch (UTC).
    pub fn start_unix_nanos(&self) -> u64 {
        self.start
    }

    /// Finish time in nanoseconds since the Unix epoch (UTC).
    pub fn finish_unix_nanos(&self) -> u64 {
        self.finish
    }

    /// Finish minus start, in nanoseconds (0 if a caller-given finish time
    /// precedes the start).
    pub fn duration_nanos(&self) -> u64 {
        self.finish.saturating_sub(self.start)
    }

    /// Tags in the order first set; setting a key again replaces its value.
    pub fn tags(&self) -> impl ExactSizeIterator<Item = (&str, ValueRef<'_>)> + '_ {
        Fields {
            first: self.inline_tags().iter(),
            rest: self.ext_ref().map_or(&[][..], |e| &e.tags).iter(),
        }
    }

    /// The value of tag `key`, if set.
    pub fn tag(&self, key: &str) -> Option<ValueRef<'_>> {
        self.tags().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// Log entries in the order logged.
    pub fn logs(&self) -> impl ExactSizeIterator<Item = LogRef<'_>> + '_ {
        let ext = self.ext_ref();
        ext.map_or(&[][..], |e| &e.logs)
            .iter()
            .map(move |entry| LogRef {
                ext: ext.expect("logs exist only in an extension"),
                entry,
            })
    }

    /// Baggage items (inherited and own) in the order set.
    pub fn baggage(&self) -> impl ExactSizeIterator<Item = (&str, &str)> + '_ {
        self.ext_ref()
            .map_or(&[][..], |e| &e.baggage)
            .iter()
            .map(|&(k, v)| (self.str(k), self.str(v)))
    }

    /// What the span limits cut off this span.
    pub fn truncations(&self) -> Truncations {
        self.ext_ref().map(|e| e.truncations).unwrap_or_default()
    }
}

impl fmt::Debug for SpanRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpanRecord")
            .field("trace_id", &format_args!("{:032x}", self.trace_id))
            .field("span_id", &format_args!("{:016x}", self.span_id))
            .field("name", &self.operation_name())
            .field("references", &self.references().collect::<Vec<_>>())
            .field("start_unix_nanos", &self.start_unix_nanos())
            .field("duration_nanos", &self.duration_nanos())
            .field("tags", &self.tags().collect::<Vec<_>>())
            .field("logs", &self.logs().collect::<Vec<_>>())
            .field("baggage", &self.baggage().collect::<Vec<_>>())
            .finish()
    }
}

/// One log entry of a [`SpanRecord`].
#[derive(Clone, Copy)]
pub struct LogRef<'a> {
    ext: &'a Ext,
    entry: &'a LogEntry,
}

impl<'a> LogRef<'a> {
    /// When the event happened, in nanoseconds since the Unix epoch (UTC).
    pub fn unix_nanos(&self) -> u64 {
        match self.entry.time {
            Time::UnixNanos(n) => n,
            Time::Ticks(t) => self.ext.shared.clock.ticks_to_unix_nanos(t),
        }
    }

    /// The event name.
    pub fn event(&self) -> &'a str {
        // SAFETY: the entry belongs to a record borrowed for 'a.
        unsafe { self.entry.event.get() }
    }

    /// The event's fields, in the order given.
    pub fn fields(&self) -> impl ExactSizeIterator<Item = (&'a str, ValueRef<'a>)> + 'a {
        let (first, last) = self.entry.fields;
        Fields {
            first: [].iter(),
            rest: self.ext.log_fields[first as usize..last as usize].iter(),
        }
    }
}

impl fmt::Debug for LogRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogRef")
            .field("unix_nanos", &self.unix_nanos())
            .field("event", &self.event())
            .field("fields", &self.fields().collect::<Vec<_>>())
            .finish()
    }
}
