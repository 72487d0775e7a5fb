//! The flusher: one named thread per tracer that moves finished spans from
//! every thread's ring into batches, hands them to the recorder and sends the
//! emptied buffers back.
//!
//! Its CPU grows with the spans it delivers, not with time. After a pass
//! it sleeps until the first of:
//! - **a doorbell**: a request thread whose ring holds `wake_at` spans
//!   (`Config::wake_at`: a quarter of the ring, or `max_batch_size` if
//!   more, at most half the ring), or full, while the
//!   flusher sleeps wakes it (`doorbell.rs`: at most one wake per
//!   `wake_at` spans, counted in `Stats::doorbells`);
//! - **the batch is due**: the oldest span it may hold, collected or still
//!   in a ring, reaches `flush_interval` (spans still in a ring arrived
//!   after this pass began, so an idle flusher wakes once per interval, and
//!   delivers at once whatever it then finds);
//! - a `flush` or `shutdown` call, which wakes it directly.
//!
//! A pass that found a ring holding `wake_at` spans goes round again at
//! once. So a busy thread costs the flusher one wake per `wake_at` spans
//! (2,048 by default), however fast it goes, and spans from threads too
//! slow to fill that within `flush_interval` are picked
//! up once per interval: the flusher never spins and never sleeps a fixed
//! short time (`Stats::flusher_wakeups` counts its wakes). Doorbell rather
//! than timer: on this project's 2-core VM a thread woken by its own timer
//! was charged 40–140 µs of CPU per wake, one woken by `unpark` 3.4 µs
//! (docs/benchmarks.md, "What a wake costs"). Before the doorbell the
//! flusher polled every 50 µs while spans arrived: ~20,000 timer wakes a
//! second, which a server with no spare core paid for.

use crate::record::SpanRecord;
use crate::recorder::{Batch, FlushWaker, Recorder, RecorderError};
use crate::shared::Shared;
use crate::sync::Arc;
use crate::thread_slots::FlusherSlot;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

pub(crate) fn spawn(
    shared: Arc<Shared>,
    recorder: Box<dyn Recorder>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("spanrec-flusher".into())
        .spawn(move || {
            let max_batch = shared.config.max_batch_size;
            Flusher {
                shared,
                recorder,
                slots: Vec::new(),
                batch: Vec::with_capacity(max_batch),
                with_ext: Vec::with_capacity(max_batch),
                homes: std::collections::HashMap::new(),
                batch_since: None,
                last_pass: Instant::now(),
                flush_done: 0,
                reports_durability: false,
                flush_pending: None,
                late: Vec::new(),
            }
            .run()
        })
}

struct Flusher {
    shared: Arc<Shared>,
    recorder: Box<dyn Recorder>,
    slots: Vec<Slot>,
    /// Spans collected for the next `record` call.
    batch: Vec<SpanRecord>,
    /// The indices in `batch` of the records that hold an extension, noted
    /// as each record arrives (its lines still in cache), so that handing
    /// the extensions back after the recorder touches only those records,
    /// not every line of a batch the recorder has long evicted.
    ///
    /// Invariant: exactly the records of `batch` with an extension, in
    /// order; cleared with `batch` (records gain no extension once in it:
    /// the recorder sees them shared).
    with_ext: Vec<usize>,
    /// Slot id → index in `slots`, to send each extension back to the
    /// thread that allocated it.
    ///
    /// Invariant: rebuilt whenever `slots` changes.
    homes: std::collections::HashMap<u64, usize>,
    /// No later than the oldest span in `batch` was finished: the start of
    /// the pass before the one that collected it (a span collected by a
    /// pass was pushed after the previous pass began draining). `None`
    /// while `batch` is empty.
    batch_since: Option<Instant>,
    /// When the last pass began. Spans still in a ring after a pass were
    /// pushed after it began.
    last_pass: Instant,
    flush_done: u64,
    /// The recorder reports durability through the ledger itself.
    reports_durability: bool,
    /// The flush ticket a recorder is finishing elsewhere (its
    /// `start_flush` returned `None`); completed when `poll_flush` says so.
    flush_pending: Option<u64>,
    late: Vec<SpanRecord>,
}

/// What one pass over the rings found.
struct Pass {
    /// Spans moved into the batch (rings and late list).
    moved: usize,
    /// Some ring held at least half its capacity.
    pressed: bool,
}

struct Slot {
    inner: FlusherSlot,
    /// The thread exited and a drain after seeing that emptied the ring.
    drained_for_good: bool,
    /// When a pass first found the ring empty, since the last that did
    /// not; `None` once its spare blocks are freed.
    idle_since: Option<Instant>,
}

/// How long a ring stays empty before its spare blocks are freed: a
/// thread that stopped finishing spans keeps one block. Long enough that a
/// thread merely descheduled for a while (many threads on few cores) does
/// not free and reallocate blocks, which would churn the allocator.
const IDLE_BEFORE_RELEASE: Duration = Duration::from_secs(1);

/// Records moved from a ring into the batch at a time: one block of the
/// ring (8 KiB), so the records are still in the first-level cache when
/// `took` reads them back (a whole batch, 128 KiB, is not: one miss per
/// span in `server_cachegrind`).
const TOOK_CHUNK: usize = crate::block_ring::BLOCK;

impl Flusher {
    fn run(mut self) {
        let ledger = self.shared.ledger.clone();
        let recorder = &mut self.recorder;
        self.reports_durability =
            catch_unwind(AssertUnwindSafe(|| recorder.attach_ledger(ledger))).unwrap_or(false);
        let interval = self.shared.config.flush_interval;
        loop {
            let pass_start = Instant::now();
            let (flush_wanted, shutdown) = self.shared.control.requests();
            let pass = self.collect();
            let flush_now = flush_wanted > self.flush_done;
            let batch_due = self
                .batch_since
                .is_some_and(|t| pass_start.saturating_duration_since(t) >= interval);
            if flush_now || shutdown || batch_due {
                self.deliver();
            }
            self.retire_drained();
            if shutdown {
                self.shut_down();
                return;
            }
            // A flush the recorder finishes elsewhere (`start_flush`) does
            // not hold this thread: rings keep draining until it is done.
            if flush_now && self.flush_pending.is_none() {
                let waker = FlushWaker::current();
                if self.call_flush(|r| r.start_flush(waker)) {
                    self.complete_flush(flush_wanted);
                } else {
                    self.flush_pending = Some(flush_wanted);
                }
            }
            if let Some(ticket) = self.flush_pending {
                if self.call_flush(|r| r.poll_flush()) {
                    self.flush_pending = None;
                    self.complete_flush(ticket);
                }
            }
            self.last_pass = pass_start;
            if pass.pressed {
                continue;
            }
            self.sleep_until(self.wake_at(pass_start));
        }
    }

    /// When to pass again unless a doorbell rings first: when the batch
    /// is due. What is in the batch is due `flush_interval` after
    /// `batch_since`; what is still in a ring arrived after `now` (this
    /// pass's start), so it is due by `now + flush_interval`.
    fn wake_at(&self, now: Instant) -> Instant {
        self.batch_since.unwrap_or(now) + self.shared.config.flush_interval
    }

    /// Parks until `wake_at`, a doorbell, or a flush or shutdown request,
    /// unless a ring is at least half full (or a new thread registered)
    /// once the doorbell is armed: `Doorbell::sleep`'s re-check.
    fn sleep_until(&mut self, wake_at: Instant) {
        let shared = &self.shared;
        let slots = &mut self.slots;
        let parked = shared.doorbell.sleep(
            || slots.iter_mut().any(|s| s.inner.receiver.wake_due()) || shared.has_new_work(),
            || {
                let now = Instant::now();
                if wake_at > now {
                    std::thread::park_timeout(wake_at - now);
                }
            },
        );
        if parked {
            shared.flusher_counters.wakeups.incr();
        }
    }

    /// One pass over every ring and the late list.
    fn collect(&mut self) -> Pass {
        let mut new_slots = Vec::new();
        self.shared.collect_new(&mut new_slots, &mut self.late);
        if !new_slots.is_empty() {
            let new_slots = new_slots.into_iter().map(|inner| Slot {
                inner,
                drained_for_good: false,
                idle_since: Some(Instant::now()),
            });
            self.slots.extend(new_slots);
            self.index_homes();
        }
        let mut moved = 0;
        let mut pressed = false;
        let wake_at = self.shared.config.wake_at();
        while let Some(record) = self.late.pop() {
            self.add(record);
            moved += 1;
        }
        let max_batch = self.shared.config.max_batch_size;
        for i in 0..self.slots.len() {
            // A live thread keeps pushing; take at most a ring's worth so one
            // busy thread cannot starve the others (an exited one: all).
            // Records go straight from the ring into the batch: one copy,
            // a block's worth at a time, so that `took` reads them while
            // they are still in cache.
            let mut left = self.shared.config.ring_capacity;
            let mut n = 0;
            loop {
                let ask = max_batch
                    .saturating_sub(self.batch.len())
                    .clamp(1, left)
                    .min(TOOK_CHUNK);
                let first_new = self.batch.len();
                let drained = self.slots[i]
                    .inner
                    .receiver
                    .drain_into(ask, &mut self.batch);
                self.took(first_new);
                n += drained.moved;
                if drained.moved > 0 {
                    // Wakes the thread if it waits for room (`Block`),
                    // before a delivery that may take long.
                    self.slots[i].inner.state.room.notify();
                }
                if drained.for_good {
                    self.slots[i].drained_for_good = true;
                }
                if self.batch.len() >= max_batch {
                    self.deliver();
                }
                if drained.for_good || drained.moved < ask || drained.moved >= left {
                    break;
                }
                left -= drained.moved;
            }
            self.shared
                .flusher_counters
                .ring_high_water
                .raise_to(n as u64);
            moved += n;
            pressed |= n >= wake_at;
            let slot = &mut self.slots[i];
            if n > 0 {
                slot.idle_since = Some(Instant::now());
            } else if slot
                .idle_since
                .is_some_and(|t| t.elapsed() >= IDLE_BEFORE_RELEASE)
            {
                slot.idle_since = None;
                slot.inner.receiver.release_spare();
            }
        }
        Pass { moved, pressed }
    }

    fn index_homes(&mut self) {
        self.homes.clear();
        self.homes.extend(
            self.slots
                .iter()
                .enumerate()
                .map(|(i, s)| (s.inner.state.id, i)),
        );
    }

    fn add(&mut self, record: SpanRecord) {
        let first_new = self.batch.len();
        self.batch.push(record);
        self.took(first_new);
        if self.batch.len() >= self.shared.config.max_batch_size {
            self.deliver();
        }
    }

    /// Readies the records added to the batch from `first_new` on.
    fn took(&mut self, first_new: usize) {
        if first_new == 0 && !self.batch.is_empty() {
            self.batch_since = Some(self.last_pass);
        }
        for (i, record) in self.batch.iter_mut().enumerate().skip(first_new) {
            record.prepare_for_recorder(&self.shared);
            if record.has_ext() {
                self.with_ext.push(i);
            }
        }
    }

    /// Hands the batch to the recorder (in pieces of at most
    /// `max_batch_size`: an exited thread's ring is drained whole), counts
    /// the outcome, and sends the extensions back to their threads.
    fn deliver(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let max_batch = self.shared.config.max_batch_size;
        let dropped = self.reports_durability.then(|| self.shared.stats().dropped);
        for records in self.batch.chunks(max_batch) {
            let n = records.len() as u64;
            let counters = &self.shared.flusher_counters;
            counters.batches.incr();
            let batch = Batch {
                records,
                process: &self.shared.config.process,
                dropped,
            };
            let recorder = &mut self.recorder;
            match catch_unwind(AssertUnwindSafe(|| recorder.record(&batch))) {
                Ok(Ok(())) => {
                    counters.recorded.add(n);
                    if !self.reports_durability {
                        self.shared.ledger.durable(n);
                    }
                }
                Ok(Err(e)) => {
                    counters.recorder_errors.incr();
                    counters.recorder_error_drops.add(n);
                    self.shared.set_last_recorder_error(error_chain(&e));
                }
                Err(_) => {
                    counters.recorder_panics.incr();
                    counters.recorder_error_drops.add(n);
                    self.shared
                        .set_last_recorder_error("recorder panicked in record".into());
                }
            }
        }
        // The last home looked up: a batch holds runs of one thread's
        // spans, and a hit saves hashing the slot id.
        let mut last_home: Option<(u64, usize)> = None;
        for &i in &self.with_ext {
            // The batch is cleared right after: nothing reads the record's
            // strings once its extension is gone.
            let Some(mut ext) = self.batch[i].take_ext() else {
                continue;
            };
            ext.free_heap_off_the_hot_path();
            // Back to the thread that allocated it, so a thread whose spans
            // finish elsewhere (work-stealing runtimes) still never allocates
            // in steady state. An extension whose home is gone, or whose
            // return ring is full (more of its spans in flight than ever
            // before), is freed here, off the hot path.
            let home = match last_home {
                Some((id, i)) if id == ext.home => Some(i),
                _ => self.homes.get(&ext.home).copied(),
            };
            if let Some(i) = home {
                last_home = Some((ext.home, i));
                let _ = self.slots[i].inner.receiver.give_back(ext);
            }
        }
        // Not `clear`: dropping the records would read each one again
        // (its `ext` field), a line per span long evicted by the recorder.
        // Nothing is left to drop: the loop above took every extension
        // (`with_ext`'s invariant), and a record owns nothing else.
        debug_assert!(self.batch.iter().all(|r| !r.has_ext()));
        // SAFETY: a length of 0 is within the capacity and leaves no
        // element to be initialized. The records are forgotten, not
        // dropped: at worst (were `with_ext` wrong) an extension would
        // leak, which is memory, not unsoundness.
        unsafe { self.batch.set_len(0) };
        self.with_ext.clear();
        self.batch_since = None;
    }

    /// Calls a recorder method other than `record`, catching panics.
    fn complete_flush(&mut self, ticket: u64) {
        self.flush_done = ticket;
        self.shared.control.complete(ticket);
    }

    /// Calls `start_flush` or `poll_flush`: whether the flush is done (an
    /// error or a panic counts as done, and is counted).
    fn call_flush(
        &mut self,
        f: impl FnOnce(&mut dyn Recorder) -> Option<Result<(), RecorderError>>,
    ) -> bool {
        let mut done = true;
        self.call("flush", |r| match f(r) {
            Some(result) => result,
            None => {
                done = false;
                Ok(())
            }
        });
        done
    }

    fn call(&mut self, what: &str, f: impl FnOnce(&mut dyn Recorder) -> Result<(), RecorderError>) {
        let recorder = &mut *self.recorder;
        let counters = &self.shared.flusher_counters;
        match catch_unwind(AssertUnwindSafe(|| f(recorder))) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                counters.recorder_errors.incr();
                self.shared.set_last_recorder_error(error_chain(&e));
            }
            Err(_) => {
                counters.recorder_panics.incr();
                self.shared
                    .set_last_recorder_error(format!("recorder panicked in {what}"));
            }
        }
    }

    /// Forgets slots of exited threads that are drained for good.
    fn retire_drained(&mut self) {
        let before = self.slots.len();
        let mut i = 0;
        while i < self.slots.len() {
            if self.slots[i].drained_for_good {
                let slot = self.slots.swap_remove(i);
                self.shared.retire(slot.inner);
            } else {
                i += 1;
            }
        }
        if self.slots.len() != before {
            self.index_homes();
        }
    }

    fn shut_down(&mut self) {
        // `closed` is set: threads stop pushing soon. Drain until a pass
        // finds nothing; anything pushed after that is counted by `stats`.
        for _ in 0..1000 {
            if self.collect().moved == 0 {
                break;
            }
        }
        self.deliver();
        self.call("shutdown", |r| r.shutdown());
        // `shutdown` finishes what a pending flush covered.
        if let Some(ticket) = self.flush_pending.take() {
            self.complete_flush(ticket);
        }
        let slots = std::mem::take(&mut self.slots)
            .into_iter()
            .map(|s| s.inner)
            .collect();
        self.shared.close_slots(slots);
        self.shared.control.exited();
    }
}

fn error_chain(e: &RecorderError) -> String {
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    message
}
