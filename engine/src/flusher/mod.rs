//! The flusher: one named thread per tracer that hands the finished spans
//! in every thread's ring to the recorder in batches, lent where they lie
//! (`lent_batch.rs`), and sends the emptied buffers back.
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
use crate::recorder::{FlushWaker, Recorder, RecorderError};
use crate::shared::Shared;
use crate::sync::Arc;
use crate::thread_slots::FlusherSlot;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::NonNull;
use std::time::{Duration, Instant};

mod lent_batch;
use lent_batch::LentBatch;

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
                batch: LentBatch::new(max_batch),
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
    /// The spans collected for the next `record` call.
    batch: LentBatch,
    /// Slot id → index in `slots`, to send each extension back to the
    /// thread that allocated it.
    ///
    /// Invariant: rebuilt whenever `slots` changes.
    homes: std::collections::HashMap<u64, usize>,
    /// No later than the oldest span in the batch was finished: the start of
    /// the pass before the one that collected it (a span collected by a
    /// pass was pushed after the previous pass began draining). `None`
    /// while the batch is empty.
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

/// Records read in place from a ring at a time: at most one block of the
/// ring (8 KiB), readied by `took` as they are read.
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
            let spilled = self.batch.spill_if_rings_due(&mut self.slots);
            if spilled > 0 {
                // Usually nothing was spilled: no store to a line `stats`
                // readers share then.
                self.shared.flusher_counters.spilled.add(spilled as u64);
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
            self.add_owned(record);
            moved += 1;
        }
        let max_batch = self.shared.config.max_batch_size;
        for i in 0..self.slots.len() {
            // A live thread keeps pushing; take at most a ring's worth so one
            // busy thread cannot starve the others (an exited one pushes no
            // more: a ring's worth is all). Records stay where the thread
            // wrote them: read in place a block's run at a time, readied
            // by `took` while in cache, lent to the recorder from there.
            let mut left = self.shared.config.ring_capacity;
            let mut n = 0;
            loop {
                let ask = max_batch
                    .saturating_sub(self.batch.len())
                    .clamp(1, left)
                    .min(TOOK_CHUNK);
                let (first, drained) = self.slots[i].inner.receiver.read_in_place(ask);
                if drained.for_good {
                    self.slots[i].drained_for_good = true;
                }
                let Some(first) = NonNull::new(first) else {
                    break;
                };
                self.note_first_record();
                self.batch
                    .add_read_in_place(i, first, drained.moved, &self.shared);
                n += drained.moved;
                if self.batch.len() >= max_batch {
                    self.deliver();
                }
                if drained.for_good || drained.moved >= left {
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

    /// Adds a record that is not in a ring (a late span) to the batch.
    fn add_owned(&mut self, record: SpanRecord) {
        if !self.batch.owned_has_room() {
            self.deliver();
        }
        self.note_first_record();
        self.batch.add_owned(record, &self.shared);
        if self.batch.len() >= self.shared.config.max_batch_size {
            self.deliver();
        }
    }

    /// Before a record joins an empty batch: the batch is due
    /// `flush_interval` after the start of the last pass.
    fn note_first_record(&mut self) {
        if self.batch.len() == 0 {
            self.batch_since = Some(self.last_pass);
        }
    }

    /// Hands the batch to the recorder, counts the outcome, sends the
    /// extensions back to their threads and releases the records.
    fn deliver(&mut self) {
        let len = self.batch.len();
        if len == 0 {
            return;
        }
        debug_assert!(len <= self.shared.config.max_batch_size);
        let dropped = self.reports_durability.then(|| self.shared.stats().dropped);
        let n = len as u64;
        let counters = &self.shared.flusher_counters;
        counters.batches.incr();
        let batch = self.batch.lend(&self.shared.config.process, dropped);
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
        self.batch.finish(&mut self.slots, &self.homes);
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

    /// Forgets slots of exited threads that are drained for good, once
    /// the batch holds no ring's records (it names slots by index).
    fn retire_drained(&mut self) {
        if self.batch.holds_ring_records() {
            return;
        }
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
