//! Counters: what happened to every span, readable at any time.
//!
//! Every counter has exactly one writing thread (a span's finishing thread,
//! or the flusher), so an increment is a plain load and store, not a locked
//! read-modify-write, and costs the hot path about a nanosecond.
//! [`Tracer::stats`](crate::Tracer::stats) adds them up.

use crate::record::Truncations;
use crate::sync::{AtomicU64, Ordering};

/// A counter with a single writing thread.
#[derive(Debug, Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`. Only the counter's one writer may call this.
    #[inline(always)]
    pub(crate) fn add(&self, n: u64) {
        // ORDERING: Relaxed: single writer, so load+store cannot lose an
        // increment; readers want a recent value, and the exact totals they
        // rely on are read after a handshake (thread join, `flush`,
        // `shutdown`) that orders these stores before the read.
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    #[inline(always)]
    pub(crate) fn incr(&self) {
        self.add(1);
    }

    /// Raises the value to `n` if it is lower. Single writer only.
    pub(crate) fn raise_to(&self, n: u64) {
        // ORDERING: Relaxed, as in `add`.
        if self.0.load(Ordering::Relaxed) < n {
            self.0.store(n, Ordering::Relaxed);
        }
    }

    pub(crate) fn get(&self) -> u64 {
        // ORDERING: Relaxed, see `add`.
        self.0.load(Ordering::Relaxed)
    }
}

/// Why a finished span was not handed to the recorder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// The thread's ring was full (at `ring_capacity`, or unable to grow
    /// within `ring_memory_budget`) and the policy was `DropNewest`.
    RingFull,
    /// The ring stayed full for the whole `Block` timeout.
    BlockTimeout,
    /// The sampler decided not to record the span's trace.
    Unsampled,
    /// The span finished after the tracer shut down.
    Shutdown,
    /// The recorder returned an error (or panicked) for the span's batch.
    RecorderError,
    /// The recorder accepted the span, then its store refused it for good
    /// (too large, invalid) or could not keep it (its spool full): reported
    /// through the [`Ledger`].
    Rejected,
}

/// Spans dropped, by reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DropCounts {
    /// See [`DropReason::RingFull`].
    pub ring_full: u64,
    /// See [`DropReason::BlockTimeout`].
    pub block_timeout: u64,
    /// See [`DropReason::Unsampled`].
    pub unsampled: u64,
    /// See [`DropReason::Shutdown`].
    pub shutdown: u64,
    /// See [`DropReason::RecorderError`].
    pub recorder_error: u64,
    /// See [`DropReason::Rejected`].
    pub rejected: u64,
}

impl DropCounts {
    /// All dropped spans.
    pub fn total(&self) -> u64 {
        self.ring_full
            + self.block_timeout
            + self.unsampled
            + self.shutdown
            + self.recorder_error
            + self.rejected
    }

    /// The count for one reason.
    pub fn get(&self, reason: DropReason) -> u64 {
        match reason {
            DropReason::RingFull => self.ring_full,
            DropReason::BlockTimeout => self.block_timeout,
            DropReason::Unsampled => self.unsampled,
            DropReason::Shutdown => self.shutdown,
            DropReason::RecorderError => self.recorder_error,
            DropReason::Rejected => self.rejected,
        }
    }
}

/// What limits cut off, summed over all spans.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LimitCounts {
    /// Tags dropped beyond `max_tags`.
    pub tags: u64,
    /// Log entries dropped beyond `max_logs`.
    pub logs: u64,
    /// Log fields dropped beyond `max_log_fields`.
    pub log_fields: u64,
    /// String values cut to `max_value_bytes`.
    pub values: u64,
    /// Baggage items refused by the baggage limits.
    pub baggage: u64,
}

/// A snapshot of a tracer's counters.
///
/// Invariant: once every thread that finishes spans is quiescent and
/// [`Tracer::flush`](crate::Tracer::flush) or
/// [`Tracer::shutdown`](crate::Tracer::shutdown) has returned `Ok`,
/// `recorded + dropped.total() == finished` exactly. Between those points
/// the difference is the number of spans in flight ([`Stats::in_flight`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Spans started (sampled or not).
    pub started: u64,
    /// Spans finished (sampled or not).
    pub finished: u64,
    /// Spans handed to the recorder, which accepted them (and has not
    /// reported them [`Rejected`](DropReason::Rejected) since).
    /// `recorded + dropped.total() + in_flight() == finished`.
    pub recorded: u64,
    /// Of `recorded`: spans durably stored. A recorder that reports
    /// durability through its [`Ledger`] (the MongoDB recorder: acknowledged
    /// with the configured write concern, or synced into its spool) moves
    /// them here when they are; for any other recorder a span is durable
    /// when `record` accepts it. `durable + dropped.total() + in_flight()
    /// == finished`.
    pub durable: u64,
    /// Finished spans not recorded, by reason.
    pub dropped: DropCounts,
    /// What the span limits cut off.
    pub limits: LimitCounts,
    /// Calls to `Recorder::record`.
    pub batches: u64,
    /// `Recorder::record`, `flush` or `shutdown` calls that returned an error.
    pub recorder_errors: u64,
    /// Recorder calls that panicked (the flusher survives them).
    pub recorder_panics: u64,
    /// Most spans the flusher found waiting in one thread's ring at once.
    pub ring_high_water: u64,
    /// Threads currently registered with the tracer.
    pub threads: u64,
    /// Bytes of span ring blocks all threads hold now (a gauge): one 8 KiB
    /// block per registered thread, more while spans are in flight, at
    /// most `Config::ring_memory_budget` beyond that.
    pub ring_bytes: u64,
    /// Span extensions ever allocated (for spans that need more than their
    /// 128-byte record: copied or owned strings, more than two tags, logs,
    /// baggage). Grows during warm-up and when more such spans are in flight
    /// than ever before; flat in steady state. Each is about 250 bytes plus
    /// its arena chunk.
    pub buffers_allocated: u64,
    /// Times a span-finishing thread woke the sleeping flusher because its
    /// ring had filled past half (one futex wake each: the only syscall a
    /// span's `finish` can make outside `OverflowPolicy::Block`). At most
    /// one per half-filled ring; near zero when the flusher's own schedule
    /// keeps up. See docs/tuning.md.
    pub doorbells: u64,
    /// Times the flusher woke from a sleep (its timer, a doorbell, a
    /// `flush` or `shutdown`). Grows with spans delivered (about one per
    /// `max_batch_size` spans) or with time (about one per
    /// `flush_interval`), whichever is more; see docs/tuning.md.
    pub flusher_wakeups: u64,
    /// Spans the flusher copied out of their thread's ring before the
    /// batch holding them was delivered (a *spill*): the batch lies in the
    /// rings where the threads wrote the records, and a ring it held
    /// records in filled to its wake threshold while the batch waited for
    /// `max_batch_size` spans or `flush_interval`. Zero in steady state
    /// with `ring_capacity` at least twice `max_batch_size` (the default
    /// is 8×); if it grows, raise `ring_capacity` (docs/tuning.md).
    pub spilled: u64,
    /// Incoming contexts that were present but corrupted; `join_or_start`
    /// started a root for each and tagged it `propagation.error`.
    pub propagation_errors: u64,
    /// Baggage items refused on extraction (beyond the limits, malformed,
    /// or carrying CR/LF) or left out on injection (not representable).
    pub baggage_not_propagated: u64,
}

impl Stats {
    /// Finished spans neither durable nor dropped yet: in a ring, in the
    /// flusher's batch, or accepted by the recorder and not yet durable.
    pub fn in_flight(&self) -> u64 {
        self.finished
            .saturating_sub(self.durable + self.dropped.total())
    }
}

/// What a recorder reports after it accepted spans, from any thread.
#[derive(Debug, Default)]
pub(crate) struct LedgerCounts {
    durable: AtomicU64,
    rejected: AtomicU64,
}

/// A recorder's handle on the tracer's ledger (see
/// [`Recorder::attach_ledger`](crate::Recorder::attach_ledger)): it reports
/// what became of the spans it accepted, so that [`Stats`] says how many
/// are durable, in flight, or lost and why. Cheap to clone; usable from
/// any thread (a writer thread, say).
#[derive(Debug, Clone)]
pub struct Ledger(crate::sync::Arc<LedgerCounts>);

impl Ledger {
    pub(crate) fn new() -> Self {
        Ledger(crate::sync::Arc::new(LedgerCounts::default()))
    }

    /// `n` accepted spans are now durably stored.
    pub fn durable(&self, n: u64) {
        // ORDERING: Relaxed: counts read by `stats`, which promises no
        // instant ordering between different counters (`in_flight` is
        // computed as the remainder).
        self.0.durable.fetch_add(n, Ordering::Relaxed);
    }

    /// `n` accepted spans (not reported durable) are lost for good:
    /// refused by the store, or not kept. Counted under
    /// [`DropReason::Rejected`].
    pub fn rejected(&self, n: u64) {
        // ORDERING: Relaxed, as in `durable`.
        self.0.rejected.fetch_add(n, Ordering::Relaxed);
    }

    /// `n` spans reported durable (kept in a spool, say) were then lost
    /// for good (the store refused them on replay).
    pub fn rejected_after_durable(&self, n: u64) {
        // ORDERING: Relaxed, as in `durable`.
        self.0.durable.fetch_sub(n, Ordering::Relaxed);
        self.0.rejected.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn add_to(&self, stats: &mut Stats) {
        // ORDERING: Relaxed, as in `durable`.
        let rejected = self.0.rejected.load(Ordering::Relaxed);
        stats.durable += self.0.durable.load(Ordering::Relaxed);
        stats.dropped.rejected += rejected;
        stats.recorded = stats.recorded.saturating_sub(rejected);
    }
}

/// Counters written by one span-finishing thread.
#[derive(Debug, Default)]
pub(crate) struct ThreadCounters {
    pub(crate) started: Counter,
    pub(crate) finished: Counter,
    pub(crate) ring_full: Counter,
    pub(crate) block_timeout: Counter,
    pub(crate) unsampled: Counter,
    pub(crate) shutdown: Counter,
    pub(crate) limit_tags: Counter,
    pub(crate) limit_logs: Counter,
    pub(crate) limit_log_fields: Counter,
    pub(crate) limit_values: Counter,
    pub(crate) limit_baggage: Counter,
    pub(crate) buffers_allocated: Counter,
    pub(crate) doorbells: Counter,
}

impl ThreadCounters {
    pub(crate) fn add_truncations(&self, t: &Truncations) {
        self.limit_tags.add(t.tags.into());
        self.limit_logs.add(t.logs.into());
        self.limit_log_fields.add(t.log_fields.into());
        self.limit_values.add(t.values.into());
        self.limit_baggage.add(t.baggage.into());
    }

    /// Adds this thread's counts into `stats`.
    pub(crate) fn add_to(&self, stats: &mut Stats) {
        stats.started = stats.started.wrapping_add(self.started.get());
        stats.finished += self.finished.get();
        stats.dropped.ring_full += self.ring_full.get();
        stats.dropped.block_timeout += self.block_timeout.get();
        stats.dropped.unsampled += self.unsampled.get();
        stats.dropped.shutdown += self.shutdown.get();
        stats.limits.tags += self.limit_tags.get();
        stats.limits.logs += self.limit_logs.get();
        stats.limits.log_fields += self.limit_log_fields.get();
        stats.limits.values += self.limit_values.get();
        stats.limits.baggage += self.limit_baggage.get();
        stats.buffers_allocated += self.buffers_allocated.get();
        stats.doorbells += self.doorbells.get();
    }
}

/// Counters written by the flusher thread.
#[derive(Debug, Default)]
pub(crate) struct FlusherCounters {
    pub(crate) recorded: Counter,
    pub(crate) recorder_error_drops: Counter,
    pub(crate) batches: Counter,
    pub(crate) recorder_errors: Counter,
    pub(crate) recorder_panics: Counter,
    pub(crate) ring_high_water: Counter,
    pub(crate) wakeups: Counter,
    pub(crate) spilled: Counter,
}

impl FlusherCounters {
    pub(crate) fn add_to(&self, stats: &mut Stats) {
        stats.recorded += self.recorded.get();
        stats.dropped.recorder_error += self.recorder_error_drops.get();
        stats.batches += self.batches.get();
        stats.recorder_errors += self.recorder_errors.get();
        stats.recorder_panics += self.recorder_panics.get();
        stats.ring_high_water = stats.ring_high_water.max(self.ring_high_water.get());
        stats.flusher_wakeups += self.wakeups.get();
        stats.spilled += self.spilled.get();
    }
}
