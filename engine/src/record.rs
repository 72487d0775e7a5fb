//! The span buffer: one span's data, from `start` through the flusher to the
//! recorder and back into its thread's pool.
//!
//! A `SpanRecord` is allocated once per pool slot (warm-up) and recycled
//! forever after: `reset` clears its vectors without freeing their capacity
//! and resets its bump arena to its largest chunk, so a steady-state span
//! touches no global allocator. Strings a caller lends (`&str`) are copied
//! into the record's own arena; the arena travels with the record, so the
//! flusher can read them without any cross-thread reclamation scheme: the
//! arena's lifetime *is* the record's.

use crate::config::{Process, SpanLimits};
use crate::sync::Arc;
use crate::tracer::Shared;
use bumpalo::Bump;
use std::borrow::Cow;
use std::fmt;
use std::ptr::NonNull;

/// A string held by a record.
pub(crate) enum Str {
    /// A literal: nothing copied.
    Static(&'static str),
    /// A `String` the caller gave away; freed when the record is recycled,
    /// on the flusher thread.
    Owned(String),
    /// Copied into the record's own arena.
    Arena(ArenaStr),
}

/// A string in the owning record's arena.
///
/// Invariant: `ptr..ptr+len` is valid UTF-8 inside the arena of the one
/// `SpanRecord` that holds this value; it lives no longer than that record's
/// next `reset`, which drops every `ArenaStr` before it resets the arena.
/// An `ArenaStr` is never copied into another record (copy the bytes).
pub(crate) struct ArenaStr {
    ptr: NonNull<u8>,
    len: usize,
}

impl Str {
    pub(crate) const EMPTY: Str = Str::Static("");

    #[inline]
    pub(crate) fn as_str(&self) -> &str {
        match self {
            Str::Static(s) => s,
            Str::Owned(s) => s,
            Str::Arena(a) => {
                // SAFETY: by the `ArenaStr` invariant the bytes are valid
                // UTF-8 in our record's arena, which is not reset while the
                // record (and so `self`) is borrowed.
                unsafe {
                    std::str::from_utf8_unchecked(std::slice::from_raw_parts(a.ptr.as_ptr(), a.len))
                }
            }
        }
    }

    fn len(&self) -> usize {
        self.as_str().len()
    }
}

impl From<Cow<'static, str>> for Str {
    #[inline]
    fn from(s: Cow<'static, str>) -> Self {
        match s {
            Cow::Borrowed(s) => Str::Static(s),
            Cow::Owned(s) => Str::Owned(s),
        }
    }
}

/// Copies `s` into `arena`.
#[inline]
pub(crate) fn copy_str(arena: &Bump, s: &str) -> Str {
    if s.is_empty() {
        return Str::EMPTY;
    }
    let copy: &mut str = arena.alloc_str(s);
    Str::Arena(ArenaStr {
        ptr: NonNull::from(copy).cast(),
        len: s.len(),
    })
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

pub(crate) enum StoredValue {
    I64(i64),
    U64(u64),
    F64(f64),
    Bool(bool),
    Str(Str),
}

impl StoredValue {
    #[inline]
    fn as_ref(&self) -> ValueRef<'_> {
        match self {
            StoredValue::I64(v) => ValueRef::I64(*v),
            StoredValue::U64(v) => ValueRef::U64(*v),
            StoredValue::F64(v) => ValueRef::F64(*v),
            StoredValue::Bool(v) => ValueRef::Bool(*v),
            StoredValue::Str(s) => ValueRef::Str(s.as_str()),
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

/// A point in time: raw clock ticks from the hot path, converted to UTC on
/// the flusher (or when read), or a time the caller gave explicitly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Time {
    Ticks(u64),
    UnixNanos(u64),
}

struct Field {
    key: Str,
    value: StoredValue,
}

struct LogEntry {
    time: Time,
    event: Str,
    /// This entry's fields are `log_fields[fields.0..fields.1]`.
    fields: (u32, u32),
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

/// One finished span, as the flusher hands it to a [`Recorder`](crate::Recorder).
///
/// All accessors are cheap; times are converted from clock ticks to UTC
/// when read, so a recorder runs that conversion on the flusher thread.
pub struct SpanRecord {
    /// The tracer this buffer belongs to; fixed for the buffer's whole life.
    pub(crate) shared: Arc<Shared>,
    /// The id of the thread slot that allocated this buffer; fixed.
    pub(crate) home: u64,
    pub(crate) trace_id: u128,
    pub(crate) span_id: u64,
    pub(crate) sampled: bool,
    pub(crate) name: Str,
    pub(crate) references: Vec<Reference>,
    pub(crate) start: Time,
    pub(crate) finish: Time,
    tags: Vec<Field>,
    logs: Vec<LogEntry>,
    log_fields: Vec<Field>,
    pub(crate) baggage: Vec<(Str, Str)>,
    /// The W3C `tracestate` inherited from the first reference.
    pub(crate) trace_state: Str,
    /// Sum of the lengths of the keys and values in `baggage`.
    baggage_bytes: usize,
    pub(crate) truncations: Truncations,
    /// Some `Str::Owned` was stored since the last `reset`: the flusher then
    /// resets the buffer itself, so the `String`s are freed off the hot path.
    /// Otherwise the owning thread resets it when it reuses it, which keeps
    /// the flusher from writing (and so stealing) the buffer's cache lines.
    pub(crate) owns_heap: bool,
    /// Holds the bytes of every `Str::Arena` above.
    ///
    /// Invariant: reset only by `reset`, after every `Str` above is dropped.
    arena: Bump,
}

// SAFETY: the only non-`Send` parts are the `ArenaStr` pointers, which point
// into `arena`, a heap allocation this record owns and that moves with it;
// `Bump` itself is `Send`. A record is used by one thread at a time (it is
// `!Sync` because `Bump` is).
unsafe impl Send for SpanRecord {}

impl SpanRecord {
    /// Hints the CPU to fetch what a recorder reads of this record beyond
    /// the record itself: its tag, log and baggage arrays and the start of
    /// its arena (see [`crate::prefetch`]).
    #[inline]
    pub(crate) fn prefetch_contents(&self) {
        crate::prefetch::slice(&self.tags);
        crate::prefetch::slice(&self.logs);
        crate::prefetch::slice(&self.log_fields);
        crate::prefetch::slice(&self.baggage);
        if let Some((key, _)) = self.baggage.first() {
            crate::prefetch::line(key.as_str().as_ptr());
        }
    }

    pub(crate) fn new(shared: Arc<Shared>, home: u64) -> Box<SpanRecord> {
        let arena = Bump::with_capacity(shared.config.arena_chunk_bytes);
        Box::new(SpanRecord {
            shared,
            home,
            trace_id: 0,
            span_id: 0,
            sampled: false,
            name: Str::EMPTY,
            references: Vec::new(),
            start: Time::UnixNanos(0),
            finish: Time::UnixNanos(0),
            tags: Vec::new(),
            logs: Vec::new(),
            log_fields: Vec::new(),
            baggage: Vec::new(),
            trace_state: Str::EMPTY,
            baggage_bytes: 0,
            truncations: Truncations::default(),
            owns_heap: false,
            arena,
        })
    }

    /// Makes the buffer ready for its next span, keeping every capacity.
    pub(crate) fn reset(&mut self) {
        self.name = Str::EMPTY;
        self.references.clear();
        self.tags.clear();
        self.logs.clear();
        self.log_fields.clear();
        self.baggage.clear();
        self.trace_state = Str::EMPTY;
        self.baggage_bytes = 0;
        self.truncations = Truncations::default();
        self.owns_heap = false;
        // Every `Str` is gone, so nothing points into the arena any more.
        self.arena.reset();
    }

    /// Drops the tags set before the sampling decision said "unsampled".
    pub(crate) fn clear_tags(&mut self) {
        self.tags.clear();
    }

    #[inline]
    fn limits(&self) -> &SpanLimits {
        &self.shared.config.limits
    }

    /// Turns a caller's value into a stored one, copying and cutting strings.
    #[inline]
    fn store_value(&mut self, value: Value<'_>) -> StoredValue {
        let max = self.limits().max_value_bytes;
        match value {
            Value::I64(v) => StoredValue::I64(v),
            Value::U64(v) => StoredValue::U64(v),
            Value::F64(v) => StoredValue::F64(v),
            Value::Bool(v) => StoredValue::Bool(v),
            Value::Str(s) => {
                let n = floor_char_boundary(s, max);
                if n < s.len() {
                    self.truncations.values += 1;
                }
                StoredValue::Str(copy_str(&self.arena, &s[..n]))
            }
            Value::StaticStr(s) => {
                let n = floor_char_boundary(s, max);
                if n < s.len() {
                    self.truncations.values += 1;
                }
                StoredValue::Str(Str::Static(&s[..n]))
            }
            Value::String(mut s) => {
                self.owns_heap = true;
                let n = floor_char_boundary(&s, max);
                if n < s.len() {
                    self.truncations.values += 1;
                    s.truncate(n);
                }
                StoredValue::Str(Str::Owned(s))
            }
        }
    }

    /// Stores a caller's string (name, key, event), noting an owned one.
    #[inline]
    pub(crate) fn own(&mut self, s: Cow<'static, str>) -> Str {
        if let Cow::Owned(_) = s {
            self.owns_heap = true;
        }
        s.into()
    }

    #[inline]
    pub(crate) fn set_tag(&mut self, key: Cow<'static, str>, value: Value<'_>) {
        if let Some(i) = self.tags.iter().position(|f| f.key.as_str() == key) {
            let value = self.store_value(value);
            self.tags[i].value = value;
        } else if self.tags.len() < self.limits().max_tags {
            let value = self.store_value(value);
            self.tags.push(Field {
                key: key.into(),
                value,
            });
        } else {
            self.truncations.tags += 1;
        }
    }

    pub(crate) fn log<'a, K, V>(
        &mut self,
        time: Time,
        event: Cow<'static, str>,
        fields: impl IntoIterator<Item = (K, V)>,
    ) where
        K: Into<Cow<'static, str>>,
        V: Into<Value<'a>>,
    {
        if self.logs.len() >= self.limits().max_logs {
            self.truncations.logs += 1;
            return;
        }
        let first = self.log_fields.len() as u32;
        let max_fields = self.limits().max_log_fields;
        for (i, (key, value)) in fields.into_iter().enumerate() {
            if i >= max_fields {
                self.truncations.log_fields += 1;
                continue;
            }
            let value = self.store_value(value.into());
            self.log_fields.push(Field {
                key: key.into().into(),
                value,
            });
        }
        let last = self.log_fields.len() as u32;
        self.logs.push(LogEntry {
            time,
            event: event.into(),
            fields: (first, last),
        });
    }

    /// Sets a baggage item, replacing an item with the same key. Refused and
    /// counted when the item would break the baggage limits.
    pub(crate) fn set_baggage(&mut self, key: &str, value: &str) {
        let limits = *self.limits();
        let old = self.baggage.iter().position(|(k, _)| k.as_str() == key);
        let freed = old.map_or(0, |i| self.baggage[i].0.len() + self.baggage[i].1.len());
        let items = self.baggage.len() + usize::from(old.is_none());
        let bytes = self.baggage_bytes - freed + key.len() + value.len();
        if items > limits.max_baggage_items || bytes > limits.max_baggage_bytes {
            self.truncations.baggage += 1;
            return;
        }
        let value = copy_str(&self.arena, value);
        match old {
            Some(i) => self.baggage[i].1 = value,
            None => {
                let key = copy_str(&self.arena, key);
                self.baggage.push((key, value));
            }
        }
        self.baggage_bytes = bytes;
    }

    pub(crate) fn set_trace_state(&mut self, trace_state: &str) {
        self.trace_state = copy_str(&self.arena, trace_state);
    }

    pub(crate) fn baggage_item(&self, key: &str) -> Option<&str> {
        self.baggage
            .iter()
            .find(|(k, _)| k.as_str() == key)
            .map(|(_, v)| v.as_str())
    }

    fn unix_nanos(&self, time: Time) -> u64 {
        match time {
            Time::UnixNanos(n) => n,
            Time::Ticks(t) => self.shared.clock.ticks_to_unix_nanos(t),
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
        self.references
            .iter()
            .find(|r| r.kind == ReferenceKind::ChildOf)
            .or_else(|| self.references.first())
            .map(|r| r.span_id)
    }

    /// Every reference the span was started with, in the order given.
    pub fn references(&self) -> &[Reference] {
        &self.references
    }

    /// The operation name.
    pub fn operation_name(&self) -> &str {
        self.name.as_str()
    }

    /// Always true for records a recorder receives; unsampled spans are not
    /// recorded.
    pub fn sampled(&self) -> bool {
        self.sampled
    }

    /// Start time in nanoseconds since the Unix epoch (UTC).
    pub fn start_unix_nanos(&self) -> u64 {
        self.unix_nanos(self.start)
    }

    /// Finish time in nanoseconds since the Unix epoch (UTC).
    pub fn finish_unix_nanos(&self) -> u64 {
        self.unix_nanos(self.finish)
    }

    /// Finish minus start, in nanoseconds (0 if a caller-given finish time
    /// precedes the start).
    pub fn duration_nanos(&self) -> u64 {
        // From the converted times, so that start + duration == finish
        // exactly as a reader sees them.
        self.finish_unix_nanos()
            .saturating_sub(self.start_unix_nanos())
    }

    /// Tags in the order first set; setting a key again replaces its value.
    pub fn tags(&self) -> impl ExactSizeIterator<Item = (&str, ValueRef<'_>)> + '_ {
        self.tags.iter().map(|f| (f.key.as_str(), f.value.as_ref()))
    }

    /// The value of tag `key`, if set.
    pub fn tag(&self, key: &str) -> Option<ValueRef<'_>> {
        self.tags().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// Log entries in the order logged.
    pub fn logs(&self) -> impl ExactSizeIterator<Item = LogRef<'_>> + '_ {
        self.logs.iter().map(move |l| LogRef {
            record: self,
            entry: l,
        })
    }

    /// Baggage items (inherited and own) in the order set.
    pub fn baggage(&self) -> impl ExactSizeIterator<Item = (&str, &str)> + '_ {
        self.baggage.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// What the span limits cut off this span.
    pub fn truncations(&self) -> Truncations {
        self.truncations
    }

    /// The identity of the process that recorded the span.
    pub fn process(&self) -> &Process {
        &self.shared.config.process
    }
}

impl fmt::Debug for SpanRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpanRecord")
            .field("trace_id", &format_args!("{:032x}", self.trace_id))
            .field("span_id", &format_args!("{:016x}", self.span_id))
            .field("name", &self.operation_name())
            .field("references", &self.references)
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
    record: &'a SpanRecord,
    entry: &'a LogEntry,
}

impl<'a> LogRef<'a> {
    /// When the event happened, in nanoseconds since the Unix epoch (UTC).
    pub fn unix_nanos(&self) -> u64 {
        self.record.unix_nanos(self.entry.time)
    }

    /// The event name.
    pub fn event(&self) -> &'a str {
        self.entry.event.as_str()
    }

    /// The event's fields, in the order given.
    pub fn fields(&self) -> impl ExactSizeIterator<Item = (&'a str, ValueRef<'a>)> + 'a {
        let (first, last) = self.entry.fields;
        self.record.log_fields[first as usize..last as usize]
            .iter()
            .map(|f| (f.key.as_str(), f.value.as_ref()))
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
