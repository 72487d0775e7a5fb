//! The extension (`Ext`): what a span holds beyond its record, pooled and
//! recycled forever (see the module docs of `record`).

use super::inherited::Inherited;
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

/// A pooled buffer keeps at most this much of each array and of its arena
/// when it is recycled; beyond, the memory is freed (on the flusher).
pub(crate) const KEEP_BYTES: usize = 16 * 1024;

fn capacity_bytes<T>(v: &Vec<T>) -> usize {
    v.capacity() * std::mem::size_of::<T>()
}

/// Pushes `item` onto one of an `Ext`'s arrays, noting in `flusher_work`
/// (passed apart, a disjoint field) a push that may grow the array.
#[inline(always)]
pub(super) fn push_noted<T>(v: &mut Vec<T>, item: T, flusher_work: &mut bool) {
    if v.len() == v.capacity() {
        *flusher_work = true;
    }
    v.push(item);
}

/// `v` emptied, its buffer freed if it grew past [`KEEP_BYTES`].
fn shrunk<T>(mut v: Vec<T>) -> Vec<T> {
    v.clear();
    if capacity_bytes(&v) > KEEP_BYTES {
        Vec::new()
    } else {
        v
    }
}

/// What a span holds beyond its record; see the module docs.
///
/// `repr(C, align(64))`, fields in order of use, so that a span touches
/// few lines of a buffer that has gone cold in the pool: the first line
/// holds what every span with an extension reads or writes (the tracer,
/// `home`, the flags, the truncation counts, the extra tags); the second
/// the arena; the rest, the *cold* part (logs, references, baggage, the
/// remote context, owned strings), is read or written only when
/// `cold_used` says it holds anything (`reset` included).
#[repr(C, align(64))]
pub(crate) struct Ext {
    /// The tracer this buffer belongs to; fixed for the buffer's whole life.
    pub(crate) shared: Arc<Shared>,
    /// The id of the thread slot that allocated this buffer; fixed.
    pub(crate) home: u64,
    pub(crate) truncations: Truncations,
    /// The flusher must look at this buffer before giving it back
    /// (`free_heap_off_the_hot_path`); otherwise it reads nothing else of
    /// it (the rest lies on lines it would only miss on).
    ///
    /// Invariant: set whenever `owned` is non-empty, `inherited` is
    /// `Some`, or an array or the arena may have grown since the last
    /// `reset` (an array pushed at full capacity: `push_noted`; the arena
    /// past `arena_keep`); cleared only by `reset`.
    pub(super) flusher_work: bool,
    /// Whether the cold fields (from `logs` on) may differ from what
    /// `reset` leaves them as.
    ///
    /// Invariant: set before any cold field is written (`cold`); cleared
    /// only by `reset`, which resets the cold fields when it is set. So
    /// when it is clear, every cold field is empty and need not be read.
    /// The `RStr` invariant rests on it: a cold list `reset` skipped would
    /// keep strings into the arena it resets (checked by a debug assertion
    /// in `reset`, and by `engine/tests/recycled_buffers.rs`).
    cold_used: bool,
    /// The span's baggage is exactly `inherited`'s items, read from there:
    /// no per-span list. Invariant: when set, `baggage` is empty and
    /// `inherited` is `Some`; cleared (the list made) before any change.
    pub(super) baggage_from_block: bool,
    /// Tags beyond the record's inline ones.
    ///
    /// Invariant: non-empty only when the record's inline tags are full.
    pub(super) tags: Vec<Field>,
    /// Holds the bytes of every arena `RStr` of the record.
    ///
    /// Invariant: reset only by `reset`, after the record is gone.
    pub(super) arena: Bump,
    /// What the arena may hold and still be kept when recycled: its first
    /// chunk (`arena_chunk_bytes`, as bumpalo sizes it) or [`KEEP_BYTES`],
    /// whichever is larger. Keeping the first chunk whatever its size is
    /// what lets a span that copies strings allocate nothing in steady
    /// state, at any accepted `arena_chunk_bytes`.
    arena_keep: usize,
    /// The same for tags: bytes copied by replacing tags, bounded by
    /// `max_tags × max_value_bytes`.
    pub(super) replaced_bytes: usize,
    // The cold part (see `cold_used`).
    pub(super) logs: Vec<LogEntry>,
    pub(super) log_fields: Vec<Field>,
    /// References after the record's first one.
    pub(super) references: Vec<Reference>,
    pub(super) baggage: Vec<(RStr, RStr)>,
    /// Sum of the lengths of the keys and values in `baggage`.
    pub(super) baggage_bytes: usize,
    /// Bytes of baggage values replaced so far (each replacement copies
    /// the new value): bounded by `max_baggage_bytes`, so a span that
    /// replaces one item in a loop cannot grow its arena without end.
    pub(super) replaced_baggage_bytes: usize,
    /// The W3C `tracestate` inherited from the first reference.
    pub(super) trace_state: RStr,
    /// The remote context this span shares with its ancestors and
    /// descendants: inherited baggage and `tracestate` strings point into
    /// it instead of being copied.
    ///
    /// Invariant: set at most once between two `reset`s and never
    /// replaced, so the `RStr`s into it live as long as the record.
    pub(super) inherited: Option<Arc<Inherited>>,
    /// Strings callers gave away, freed when the buffer is reset: on the
    /// flusher if any (see `free_heap_off_the_hot_path`), so the hot path
    /// frees nothing.
    pub(super) owned: Vec<String>,
}

// What the layout is for: the fields every span with an extension uses
// lie on the first line, the arena on the second (not under loom, whose
// `Arc` is larger).
#[cfg(not(spanrec_loom))]
const _: () = {
    assert!(std::mem::offset_of!(Ext, tags) + std::mem::size_of::<Vec<Field>>() <= 64);
    assert!(std::mem::offset_of!(Ext, replaced_bytes) + 8 <= 128);
};

// SAFETY: the only non-`Send` parts are `RStr` pointers into `arena` and
// `owned` (heap memory this `Ext` owns and that moves with it), into the
// `inherited` block (immutable, kept alive by the `Arc` this `Ext` holds,
// and `Inherited` is `Send + Sync`: a boxed `str`) or to static data;
// `Bump` itself is `Send`. An `Ext` is used by one thread at a
// time (it is `!Sync` because `Bump` is).
unsafe impl Send for Ext {}

impl Ext {
    pub(crate) fn new(shared: Arc<Shared>, home: u64) -> Box<Ext> {
        // No chunk until the first copy (`copy_str`).
        let arena = Bump::new();
        Box::new(Ext {
            shared,
            home,
            truncations: Truncations::default(),
            flusher_work: false,
            cold_used: false,
            baggage_from_block: false,
            tags: Vec::new(),
            arena,
            arena_keep: KEEP_BYTES,
            replaced_bytes: 0,
            logs: Vec::new(),
            log_fields: Vec::new(),
            references: Vec::new(),
            baggage: Vec::new(),
            baggage_bytes: 0,
            replaced_baggage_bytes: 0,
            trace_state: RStr::EMPTY,
            inherited: None,
            owned: Vec::new(),
        })
    }

    /// On the flusher, for a buffer on its way back to its thread: trims
    /// and resets it here if that frees memory, so that frees happen off
    /// the hot path. Otherwise the owning thread resets it when it reuses
    /// it, which keeps the flusher from writing (and so stealing) the
    /// buffer's cache lines. Either way, a buffer given back is not
    /// oversized.
    pub(crate) fn free_heap_off_the_hot_path(&mut self) {
        if !self.flusher_work {
            // Nothing owned or shared, nothing grown (the invariant).
            return;
        }
        let oversized = self.oversized();
        if oversized {
            self.shrink();
        }
        if oversized || !self.owned.is_empty() || self.inherited.is_some() {
            self.reset();
        }
    }

    /// Whether a buffer grew past [`KEEP_BYTES`]: one span with a huge
    /// payload must not keep its memory in the pool forever.
    fn oversized(&self) -> bool {
        self.arena.allocated_bytes() > self.arena_keep
            || capacity_bytes(&self.tags) > KEEP_BYTES
            || capacity_bytes(&self.logs) > KEEP_BYTES
            || capacity_bytes(&self.log_fields) > KEEP_BYTES
            || capacity_bytes(&self.baggage) > KEEP_BYTES
            || capacity_bytes(&self.references) > KEEP_BYTES
            || capacity_bytes(&self.owned) > KEEP_BYTES
    }

    /// Frees what grew past [`KEEP_BYTES`], before the buffer is reused:
    /// on the owner's thread for a buffer a span that never reached the
    /// flusher left in the thread's spare list. A buffer the flusher gives
    /// back is not oversized (`free_heap_off_the_hot_path`), so the
    /// owner's `reset` needs no check.
    pub(crate) fn trim(&mut self) {
        if self.oversized() {
            self.shrink();
        }
    }

    /// Makes the buffer ready for its next span, keeping every capacity
    /// (call `trim` first on a buffer that may have grown: see there).
    pub(crate) fn reset(&mut self) {
        // The invariant that lets `reset` skip the cold lines, checked in
        // every debug build (all the tests): a cold field written without
        // `cold` would keep `RStr`s into the arena reset below.
        debug_assert!(
            self.cold_used || self.cold_is_reset(),
            "cold field written unmarked"
        );
        self.flusher_work = false;
        self.truncations = Truncations::default();
        self.baggage_from_block = false;
        self.tags.clear();
        self.replaced_bytes = 0;
        // The record holding `RStr`s into the arena is gone (`into_ext`).
        self.arena.reset();
        if std::mem::take(&mut self.cold_used) {
            self.logs.clear();
            self.log_fields.clear();
            self.references.clear();
            self.baggage.clear();
            self.baggage_bytes = 0;
            self.replaced_baggage_bytes = 0;
            self.trace_state = RStr::EMPTY;
            // The record's `RStr`s into the block are gone with the record.
            self.inherited = None;
            self.owned.clear();
        }
    }

    /// Whether every cold field is as `reset` leaves it.
    fn cold_is_reset(&self) -> bool {
        self.logs.is_empty()
            && self.log_fields.is_empty()
            && self.references.is_empty()
            && self.baggage.is_empty()
            && self.baggage_bytes == 0
            && self.replaced_baggage_bytes == 0
            && self.trace_state.len == 0
            && self.inherited.is_none()
            && self.owned.is_empty()
    }

    /// Whether the cold fields may hold anything (see `cold_used`): when
    /// not, they are empty and a reader need not touch their lines.
    #[inline]
    pub(super) fn cold_used(&self) -> bool {
        self.cold_used
    }

    /// Marks the cold fields as written, before writing any of them
    /// (`cold_used`'s invariant).
    #[inline]
    pub(super) fn cold(&mut self) -> &mut Ext {
        self.cold_used = true;
        self
    }

    /// The out-of-line part of `trim`.
    #[cold]
    #[inline(never)]
    fn shrink(&mut self) {
        self.tags = shrunk(std::mem::take(&mut self.tags));
        self.logs = shrunk(std::mem::take(&mut self.logs));
        self.log_fields = shrunk(std::mem::take(&mut self.log_fields));
        self.baggage = shrunk(std::mem::take(&mut self.baggage));
        self.references = shrunk(std::mem::take(&mut self.references));
        // The record is gone (`into_ext`): nothing reads these strings.
        self.owned = shrunk(std::mem::take(&mut self.owned));
        if self.arena.allocated_bytes() > self.arena_keep {
            // The record holding `RStr`s into the arena is gone
            // (`into_ext`); the next copy allocates a first chunk.
            self.arena = Bump::new();
        }
    }

    /// Whether a tag that copies `copied` bytes may replace an earlier one
    /// (and counts them). A replacement keeps the old copy until the span
    /// is recycled: what replacements may copy is bounded by what a span's
    /// tags can hold at all (`bound`), so a tag set in a loop cannot grow
    /// memory without end. Refused and counted beyond.
    pub(super) fn admit_replacement(&mut self, copied: usize, bound: usize) -> bool {
        let replaced = self.replaced_bytes + copied;
        if replaced > bound {
            self.truncations.tags += 1;
            return false;
        }
        self.replaced_bytes = replaced;
        true
    }

    pub(super) fn limits(&self) -> &SpanLimits {
        &self.shared.config.limits
    }

    pub(super) fn copy_str(&mut self, s: &str) -> RStr {
        if s.is_empty() {
            return RStr::EMPTY;
        }
        if self.arena.allocated_bytes() == 0 {
            // The first copy: the arena gets its first chunk only now, so
            // a span that copies nothing (one that shares its remote
            // context, say) holds no arena memory. An empty arena has no
            // string to invalidate.
            self.arena = Bump::with_capacity(self.shared.config.arena_chunk_bytes);
            self.arena_keep = self.arena.allocated_bytes().max(KEEP_BYTES);
        }
        let r = RStr::from_str(self.arena.alloc_str(s));
        if self.arena.allocated_bytes() > self.arena_keep {
            self.flusher_work = true;
        }
        r
    }

    pub(super) fn own_string(&mut self, s: String) -> RStr {
        let r = RStr::from_str(&s);
        // Moving the `String` does not move its bytes.
        self.cold().owned.push(s);
        self.flusher_work = true;
        r
    }

    /// Sets the shared remote context (see `inherited`'s invariant).
    pub(super) fn set_inherited(&mut self, block: Option<Arc<Inherited>>) {
        self.flusher_work |= block.is_some();
        self.cold().inherited = block;
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
