//! The extension (`Ext`): what a span holds beyond its record, pooled and
//! recycled forever (see the module docs of `record`).

use super::packed::{floor_char_boundary, Field, RStr, Stored};
use super::value::{Reference, Truncations, Value};
use crate::config::SpanLimits;
use crate::shared::Shared;
use crate::sync::Arc;
use bumpalo::Bump;
use std::borrow::Cow;

/// A point in time: raw clock ticks from the hot path, converted to UTC on
/// the flusher (or when read), or a time the caller gave explicitly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Time {
    Ticks(u64),
    UnixNanos(u64),
}

pub(super) struct LogEntry {
    pub(super) time: Time,
    pub(super) event: RStr,
    /// This entry's fields are `log_fields[fields.0..fields.1]`.
    pub(super) fields: (u32, u32),
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
    pub(super) tags: Vec<Field>,
    pub(super) logs: Vec<LogEntry>,
    pub(super) log_fields: Vec<Field>,
    /// References after the record's first one.
    pub(super) references: Vec<Reference>,
    pub(super) baggage: Vec<(RStr, RStr)>,
    /// Sum of the lengths of the keys and values in `baggage`.
    pub(super) baggage_bytes: usize,
    /// The W3C `tracestate` inherited from the first reference.
    pub(super) trace_state: RStr,
    pub(crate) truncations: Truncations,
    /// Strings callers gave away, freed when the buffer is reset: on the
    /// flusher if any (see `owns_heap`), so the hot path frees nothing.
    pub(super) owned: Vec<String>,
    /// Holds the bytes of every arena `RStr` of the record.
    ///
    /// Invariant: reset only by `reset`, after the record is gone.
    pub(super) arena: Bump,
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

    pub(super) fn limits(&self) -> &SpanLimits {
        &self.shared.config.limits
    }

    pub(super) fn copy_str(&self, s: &str) -> RStr {
        if s.is_empty() {
            return RStr::EMPTY;
        }
        RStr::from_str(self.arena.alloc_str(s))
    }

    pub(super) fn own_string(&mut self, s: String) -> RStr {
        let r = RStr::from_str(&s);
        // Moving the `String` does not move its bytes.
        self.owned.push(s);
        r
    }

    /// Stores a key, name or event, cutting keys to `max` bytes.
    pub(super) fn store_str(&mut self, s: Cow<'static, str>, max: usize) -> RStr {
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
    pub(super) fn store_value(&mut self, value: Value<'_>, max: usize) -> Stored {
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
