//! Per-thread state: each thread that touches a tracer gets a *slot* (the
//! protocol in `slot.rs`: a ring of finished span buffers to the flusher, a
//! ring of recycled buffers back) and a few counters.
//!
//! A thread registers its slot on its first span (one parking_lot lock, the
//! only lock the span path ever takes, and only once per thread and tracer).
//! After that, starting a span pops a recycled buffer and finishing it pushes
//! the buffer: no lock, no syscall, no allocation.
//!
//! Nothing is stranded: the flusher polls every slot at least once per
//! flush interval, whether or not its thread is busy, so an idle thread's
//! spans move on; when a thread exits, its `SlotSender` drops, which marks
//! the slot exited, and the flusher drains and retires it.

use crate::record::SpanRecord;
use crate::slot::{slot, Refused, SlotReceiver, SlotSender};
use crate::stats::ThreadCounters;
use crate::sync::{thread_local, Arc, AtomicBool, Ordering};
use crate::tracer::Shared;
use crate::OverflowPolicy;
use std::cell::RefCell;

/// A slot's counters and identity, seen by the thread, the flusher and
/// `Tracer::stats`.
#[derive(Debug)]
pub(crate) struct SlotState {
    /// Set when the tracer is gone, so the thread can free its half early.
    pub(crate) tracer_gone: AtomicBool,
    /// Counters written only by the owning thread.
    pub(crate) counters: ThreadCounters,
    /// Unique within the tracer; buffers this thread allocates carry it as
    /// their `home`, and the flusher returns them here.
    pub(crate) id: u64,
}

/// The flusher's half of a slot.
pub(crate) struct FlusherSlot {
    pub(crate) receiver: SlotReceiver<Box<SpanRecord>>,
    pub(crate) state: Arc<SlotState>,
}

/// Recycled buffers kept aside by a thread when its return ring is empty of
/// them (dropped and unsampled spans); beyond this many they are freed.
const SPARE_CAPACITY: usize = 32;

/// The thread's half of a slot.
pub(crate) struct LocalSlot {
    tracer_id: u64,
    /// Dropped with the thread-local at thread exit, which tells the flusher.
    sender: SlotSender<Box<SpanRecord>>,
    spare: Vec<Box<SpanRecord>>,
    state: Arc<SlotState>,
}

thread_local! {
    /// Invariant: at most one slot per tracer id.
    static SLOTS: RefCell<Vec<LocalSlot>> = RefCell::new(Vec::new());
}

fn register(shared: &Arc<Shared>) -> LocalSlot {
    let capacity = shared.config.ring_capacity;
    // The return ring has room for every buffer this thread can have in
    // flight (its ring, the flusher's batch, its spare list), so returns do
    // not overflow in steady state.
    let (sender, receiver) = slot(
        capacity,
        capacity + shared.config.max_batch_size + SPARE_CAPACITY,
        shared.closed.clone(),
    );
    let state = Arc::new(SlotState {
        tracer_gone: AtomicBool::new(false),
        counters: ThreadCounters::default(),
        id: shared.next_slot_id(),
    });
    shared.register(FlusherSlot {
        receiver,
        state: state.clone(),
    });
    LocalSlot {
        tracer_id: shared.id,
        sender,
        spare: Vec::with_capacity(SPARE_CAPACITY),
        state,
    }
}

/// Runs `f` on this thread's slot for `shared`, registering it on first use.
/// `None` when the thread-local is gone (thread teardown) or busy.
#[inline]
fn with_slot<R>(shared: &Arc<Shared>, f: impl FnOnce(&mut LocalSlot) -> R) -> Option<R> {
    SLOTS
        .try_with(|slots| {
            let mut slots = slots.try_borrow_mut().ok()?;
            let i = match slots.iter().position(|s| s.tracer_id == shared.id) {
                Some(i) => i,
                None => {
                    // ORDERING: Relaxed, see `Shared::release`.
                    slots.retain(|s| !s.state.tracer_gone.load(Ordering::Relaxed));
                    slots.push(register(shared));
                    slots.len() - 1
                }
            };
            Some(f(&mut slots[i]))
        })
        .ok()
        .flatten()
}

/// A cleared buffer for a new span of `shared`: recycled if one is at hand,
/// else allocated (warm-up, or more spans in flight than ever before).
#[inline]
pub(crate) fn acquire(shared: &Arc<Shared>) -> Box<SpanRecord> {
    let recycled = with_slot(shared, |slot| {
        slot.state.counters.started.incr();
        slot.spare.pop().or_else(|| slot.sender.recycled())
    });
    match recycled {
        Some(Some(mut record)) => {
            // Reset here rather than on the flusher: see `owns_heap`.
            record.reset();
            record
        }
        Some(None) => allocate(shared),
        None => {
            shared.count_late(|c| c.started.incr());
            allocate(shared)
        }
    }
}

#[cold]
fn allocate(shared: &Arc<Shared>) -> Box<SpanRecord> {
    let home = with_slot(shared, |slot| {
        slot.state.counters.buffers_allocated.incr();
        slot.state.id
    });
    if home.is_none() {
        shared.count_late(|c| c.buffers_allocated.incr());
    }
    // Home 0 is no slot's: the flusher frees such a buffer after use.
    SpanRecord::new(shared.clone(), home.unwrap_or(0))
}

/// Puts a buffer that never reached the flusher (a builder dropped before
/// `start`) back where `acquire` finds it.
pub(crate) fn release(record: Box<SpanRecord>) {
    let shared = record.shared.clone();
    let _ = with_slot(&shared, |slot| {
        // `acquire` counted it as started; it never was. If this is not the
        // thread that acquired it, this thread's count dips below zero
        // (wrapping) and the sum over threads is still right.
        slot.state.counters.started.sub(1);
        slot.keep_spare(record);
    });
}

/// Hands a finished span to the flusher, or counts why not.
#[inline]
pub(crate) fn finish(record: Box<SpanRecord>) {
    let tracer_id = record.shared.id;
    let mut record = Some(record);
    let done = SLOTS.try_with(|slots| {
        let Ok(mut slots) = slots.try_borrow_mut() else {
            return false;
        };
        let i = match slots.iter().position(|s| s.tracer_id == tracer_id) {
            Some(i) => i,
            None => {
                // The span moved here from another thread: first span of
                // this tracer on this thread.
                let shared = record.as_ref().map(|r| r.shared.clone());
                slots.push(register(&shared.expect("record present")));
                slots.len() - 1
            }
        };
        slots[i].finish(record.take().expect("record present"));
        true
    });
    if !matches!(done, Ok(true)) {
        if let Some(record) = record {
            finish_late(record);
        }
    }
}

/// `finish` without a thread-local (thread teardown): the span goes to the
/// tracer's locked late list, which the flusher also drains.
#[cold]
fn finish_late(mut record: Box<SpanRecord>) {
    let shared = record.shared.clone();
    shared.count_late(|c| {
        c.finished.incr();
        c.add_truncations(&record.truncations);
    });
    if !record.sampled {
        shared.count_late(|c| c.unsampled.incr());
        return;
    }
    // ORDERING: Relaxed, see `SlotSender::send`; `Tracer::stats` counts late
    // spans that arrive after the flusher exited.
    if shared.closed.load(Ordering::Relaxed) {
        shared.count_late(|c| c.shutdown.incr());
        return;
    }
    record.truncations = Default::default();
    shared.push_late(record);
}

impl LocalSlot {
    #[inline]
    fn finish(&mut self, record: Box<SpanRecord>) {
        let counters = &self.state.counters;
        counters.finished.incr();
        if record.truncations.any() {
            counters.add_truncations(&record.truncations);
        }
        if !record.sampled {
            counters.unsampled.incr();
            self.keep_spare(record);
            return;
        }
        match self.sender.send(record) {
            Ok(()) => {}
            Err(Refused::Closed(record)) => {
                counters.shutdown.incr();
                self.keep_spare(record);
            }
            Err(Refused::Full(record)) => match record.shared.config.overflow {
                OverflowPolicy::DropNewest => self.drop_full(record),
                OverflowPolicy::Block { timeout } => self.push_blocking(record, timeout),
            },
        }
    }

    #[cold]
    fn drop_full(&mut self, record: Box<SpanRecord>) {
        self.state.counters.ring_full.incr();
        self.keep_spare(record);
    }

    /// The `Block` policy: wait for room, spinning first, then yielding,
    /// then sleeping in short steps, at most `timeout` in all.
    #[cold]
    fn push_blocking(&mut self, record: Box<SpanRecord>, timeout: std::time::Duration) {
        let deadline = std::time::Instant::now() + timeout;
        let mut record = record;
        let mut attempt = 0u32;
        loop {
            match self.sender.send(record) {
                Ok(()) => return,
                Err(Refused::Full(back)) => record = back,
                Err(Refused::Closed(back)) => {
                    self.state.counters.shutdown.incr();
                    self.keep_spare(back);
                    return;
                }
            }
            if std::time::Instant::now() >= deadline {
                self.state.counters.block_timeout.incr();
                self.keep_spare(record);
                return;
            }
            attempt += 1;
            if attempt < 64 {
                std::hint::spin_loop();
            } else if attempt < 128 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(std::time::Duration::from_micros(50));
            }
        }
    }

    #[inline]
    fn keep_spare(&mut self, record: Box<SpanRecord>) {
        if self.spare.len() < SPARE_CAPACITY {
            self.spare.push(record);
        }
    }
}
