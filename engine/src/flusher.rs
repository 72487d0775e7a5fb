//! The flusher: one named thread per tracer that moves finished spans from
//! every thread's ring into batches, hands them to the recorder and sends the
//! emptied buffers back.
//!
//! Its CPU grows with the spans it delivers, not with time. After each pass
//! it sleeps by need, until the first of:
//! - **the batch is due**: the oldest span it may hold, collected or still
//!   in a ring, reaches `flush_interval` (spans still in a ring arrived
//!   after this pass began, so an idle flusher wakes once per interval and
//!   delivers at once whatever it then finds);
//! - **a batch should be full**: at the rate the last sleep saw, the rings
//!   would by then hold the rest of `max_batch_size` spans;
//! - **the busiest ring would be half full**, at that ring's rate;
//! - **a doorbell**: a request thread whose push leaves its ring more than
//!   half full while the flusher sleeps wakes it (`doorbell.rs`: at most one
//!   wake per half-fill, counted in `Stats::doorbells`), which covers bursts
//!   faster than the estimate;
//! - a `flush` or `shutdown` call, which wakes it directly.
//!
//! A pass that found a ring at least half full goes round again at once.
//! So at a steady load the flusher wakes about once per `max_batch_size`
//! spans (or once per `flush_interval` if that is sooner), never spins and
//! never sleeps a fixed short time; idle, it wakes once per
//! `flush_interval` and finds nothing (`Stats::flusher_wakeups` counts the
//! wakes). Before the doorbell existed it polled every 50 µs while spans
//! arrived: ~20,000 wakes a second at any load, which a server with no
//! spare core paid for (docs/benchmarks.md, "In a server").

use crate::local::FlusherSlot;
use crate::record::SpanRecord;
use crate::recorder::{Batch, Recorder, RecorderError};
use crate::sync::Arc;
use crate::tracer::Shared;
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
                homes: std::collections::HashMap::new(),
                batch_since: None,
                last_pass: Instant::now(),
                flush_done: 0,
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
    late: Vec<SpanRecord>,
}

/// What one pass over the rings found.
struct Pass {
    /// Spans moved into the batch (rings and late list).
    moved: usize,
    /// Most spans moved from one ring.
    busiest: usize,
    /// Some ring held at least half its capacity.
    pressed: bool,
}

struct Slot {
    inner: FlusherSlot,
    /// The thread exited and a drain after seeing that emptied the ring.
    drained_for_good: bool,
}

impl Flusher {
    fn run(mut self) {
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
            if flush_now {
                self.call("flush", |r| r.flush());
                self.flush_done = flush_wanted;
                self.shared.control.complete(flush_wanted);
            }
            let slept = pass_start.saturating_duration_since(self.last_pass);
            self.last_pass = pass_start;
            if pass.pressed {
                continue;
            }
            let wake_at = self.wake_at(&pass, slept, pass_start);
            self.sleep_until(wake_at);
        }
    }

    /// When to pass again, by need (see the module docs): the batch's due
    /// time, or sooner when the rates of the pass just made (`pass`, which
    /// collected what arrived in `slept`) say a batch will be full or the
    /// busiest ring half full.
    fn wake_at(&self, pass: &Pass, slept: Duration, now: Instant) -> Instant {
        let config = &self.shared.config;
        // Bounded staleness: what is in the batch is due `flush_interval`
        // after `batch_since`; what is still in a ring arrived after `now`.
        let due = self.batch_since.unwrap_or(now) + config.flush_interval;
        let secs = slept.as_secs_f64();
        if pass.moved == 0 || secs <= 0.0 {
            return due;
        }
        let rate = pass.moved as f64 / secs;
        let busiest_rate = pass.busiest.max(1) as f64 / secs;
        let batch_room = config
            .max_batch_size
            .saturating_sub(self.batch.len())
            .max(1);
        let half = config.ring_capacity.div_ceil(2);
        let by_need = (batch_room as f64 / rate).min(half as f64 / busiest_rate);
        // `by_need` is finite and positive (both rates are); a sleep too
        // long for `Duration` is capped by `due` anyway.
        let by_need = Duration::try_from_secs_f64(by_need).unwrap_or(config.flush_interval);
        due.min(now + by_need)
    }

    /// Parks until `wake_at`, a doorbell, or a flush or shutdown request,
    /// unless a ring is more than half full (or a new thread registered)
    /// once the doorbell is armed: `Doorbell::sleep`'s re-check.
    fn sleep_until(&mut self, wake_at: Instant) {
        let shared = &self.shared;
        let slots = &mut self.slots;
        let parked = shared.doorbell.sleep(
            || slots.iter_mut().any(|s| s.inner.receiver.pressed()) || shared.has_new_work(),
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
            });
            self.slots.extend(new_slots);
            self.index_homes();
        }
        let mut moved = 0;
        let mut busiest = 0;
        let mut pressed = false;
        let half = self.shared.config.ring_capacity.div_ceil(2);
        while let Some(record) = self.late.pop() {
            self.add(record);
            moved += 1;
        }
        let max_batch = self.shared.config.max_batch_size;
        for i in 0..self.slots.len() {
            // A live thread keeps pushing; take at most a ring's worth so one
            // busy thread cannot starve the others (an exited one: all).
            // Records go straight from the ring into the batch: one copy.
            let mut left = self.shared.config.ring_capacity;
            let mut n = 0;
            loop {
                let ask = max_batch.saturating_sub(self.batch.len()).clamp(1, left);
                let first_new = self.batch.len();
                let drained = self.slots[i]
                    .inner
                    .receiver
                    .drain_into(ask, &mut self.batch);
                self.took(first_new);
                n += drained.moved;
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
            busiest = busiest.max(n);
            pressed |= n >= half;
        }
        Pass {
            moved,
            busiest,
            pressed,
        }
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
        for record in &mut self.batch[first_new..] {
            record.prepare_for_recorder(&self.shared);
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
        for records in self.batch.chunks(max_batch) {
            let n = records.len() as u64;
            let counters = &self.shared.flusher_counters;
            counters.batches.incr();
            let batch = Batch {
                records,
                process: &self.shared.config.process,
            };
            let recorder = &mut self.recorder;
            match catch_unwind(AssertUnwindSafe(|| recorder.record(&batch))) {
                Ok(Ok(())) => counters.recorded.add(n),
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
        for record in &mut self.batch {
            // The batch is cleared right after: nothing reads the record's
            // strings once its extension is gone.
            let Some(mut ext) = record.take_ext() else {
                continue;
            };
            if ext.owns_heap() {
                ext.reset();
            }
            // Back to the thread that allocated it, so a thread whose spans
            // finish elsewhere (work-stealing runtimes) still never allocates
            // in steady state. An extension whose home is gone, or whose
            // return ring is full (more of its spans in flight than ever
            // before), is freed here, off the hot path.
            if let Some(&i) = self.homes.get(&ext.home) {
                let _ = self.slots[i].inner.receiver.give_back(ext);
            }
        }
        self.batch.clear();
        self.batch_since = None;
    }

    /// Calls a recorder method other than `record`, catching panics.
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
