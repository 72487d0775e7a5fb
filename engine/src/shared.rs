//! The state a tracer's handles, its spans' threads and its flusher share:
//! the registry of thread slots, flush and shutdown requests, the doorbell,
//! the ring memory budget, and the lifecycle behind `flush`, `shutdown` and
//! `stats`.

use crate::block_ring::{block_bytes, Budget};
use crate::clock::Clock;
use crate::config::{Config, SamplerShortcut};
use crate::doorbell::Doorbell;
use crate::flush_requests::{FlushControl, WaitError};
use crate::flusher;
use crate::record::SpanRecord;
use crate::recorder::Recorder;
use crate::stats::{FlusherCounters, Ledger, Stats, ThreadCounters};
use crate::sync::Mutex;
use crate::sync::{next_tracer_id, Arc, AtomicBool, AtomicU64, Ordering};
use crate::thread_slots::{FlusherSlot, SlotState};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long dropping the last [`Tracer`](crate::Tracer) handle waits for
/// the final drain (also the budget of the process-exit drain, `exit.rs`).
pub const DROP_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Why [`Tracer::flush`](crate::Tracer::flush) or
/// [`Tracer::shutdown`](crate::Tracer::shutdown) returned before its work
/// was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FlushError {
    /// The deadline passed first; the work goes on in the background.
    #[error("the deadline passed before the flusher finished")]
    Timeout,
    /// Called from the flusher thread (from inside a `Recorder`), which
    /// would wait for itself.
    #[error("called from the flusher thread, which cannot wait for itself")]
    OnFlusherThread,
    /// The tracer has shut down; spans finished since were dropped and
    /// counted under `DropReason::Shutdown`.
    #[error("the tracer has shut down")]
    Closed,
    /// This process is a child made by `fork()` after the tracer was built:
    /// its flusher thread exists only in the parent, so nothing here is
    /// delivered. Build a new tracer in the child.
    #[error("the tracer was inherited through fork(); its flusher runs only in the parent")]
    ForkedChild,
}

/// State shared by a tracer's handles, its spans' buffers and its flusher.
pub(crate) struct Shared {
    /// Unique per tracer, never reused.
    pub(crate) id: u64,
    pub(crate) config: Config,
    /// `config.sampler`, reduced for the hot path.
    sampler: SamplerShortcut,
    pub(crate) clock: Clock,
    /// Set when shutdown begins; spans finished after it are dropped and
    /// counted.
    pub(crate) closed: Arc<AtomicBool>,
    registry: Mutex<Registry>,
    pub(crate) flusher_counters: FlusherCounters,
    /// What the recorder reports after accepting spans (durable, rejected).
    pub(crate) ledger: Ledger,
    pub(crate) control: FlushControl,
    /// How span-finishing threads wake the sleeping flusher.
    pub(crate) doorbell: Doorbell,
    /// The ring blocks every thread's ring may hold together
    /// (`Config::ring_memory_budget`).
    pub(crate) ring_budget: Arc<Budget>,
    flusher: Mutex<Option<JoinHandle<()>>>,
    /// The flusher thread, to wake it and to refuse waits made from it.
    flusher_thread: std::sync::OnceLock<std::thread::Thread>,
    pub(crate) last_recorder_error: Mutex<Option<String>>,
    /// Source of `SlotState::id`s; starts at 1 (0 means "no slot").
    next_slot_id: AtomicU64,
    /// See `Stats::propagation_errors` (any thread; off the span hot path).
    pub(crate) propagation_errors: AtomicU64,
    /// See `Stats::baggage_not_propagated`.
    pub(crate) baggage_not_propagated: AtomicU64,
    /// `fork::generation()` when built: a different value now means this is
    /// a forked child, where the flusher does not exist.
    fork_generation: u64,
}

/// Everything about the set of registered threads. Locked on registration,
/// once per flusher pass, and by `stats`: never on a span's hot path.
#[derive(Default)]
struct Registry {
    /// Counters of every live slot.
    states: Vec<Arc<SlotState>>,
    /// Slots registered since the flusher last looked.
    pending: Vec<FlusherSlot>,
    /// Counts of retired slots, and spans drained from closed rings.
    retired: Stats,
    /// Spans finished during thread teardown, when no slot was reachable.
    late: Vec<SpanRecord>,
    late_counters: ThreadCounters,
    /// The flusher's slots after shutdown: `stats` drains spans that raced
    /// past the `closed` flag into them, counting them as dropped.
    closed_slots: Vec<FlusherSlot>,
}

/// Tracer `id`'s shared state, if the tracer is alive: for spans that reach
/// a thread with no slot for their tracer (cold: takes a lock).
pub(crate) fn find(id: u64) -> Option<Arc<Shared>> {
    crate::sync::directory::find(id)
}

fn flush_error(e: WaitError) -> FlushError {
    match e {
        WaitError::Timeout => FlushError::Timeout,
        WaitError::Closed => FlushError::Closed,
    }
}

impl Shared {
    /// Builds the state of a tracer with a validated `config` and starts
    /// its flusher thread.
    pub(crate) fn start(
        config: Config,
        recorder: Box<dyn Recorder>,
    ) -> Result<Arc<Shared>, std::io::Error> {
        let ring_blocks = config.ring_memory_budget / block_bytes::<SpanRecord>();
        let shared = Arc::new(Shared {
            id: next_tracer_id(),
            sampler: config.sampler.shortcut(),
            config,
            clock: Clock::new(),
            closed: Arc::new(AtomicBool::new(false)),
            registry: Mutex::new(Registry::default()),
            flusher_counters: FlusherCounters::default(),
            ledger: Ledger::new(),
            control: FlushControl::new(),
            doorbell: Doorbell::new(),
            ring_budget: Budget::new(ring_blocks),
            flusher: Mutex::new(None),
            flusher_thread: std::sync::OnceLock::new(),
            last_recorder_error: Mutex::new(None),
            next_slot_id: AtomicU64::new(1),
            propagation_errors: AtomicU64::new(0),
            baggage_not_propagated: AtomicU64::new(0),
            fork_generation: crate::fork::generation(),
        });
        crate::fork::install_hook();
        crate::exit::install_hook();
        let handle = flusher::spawn(shared.clone(), recorder)?;
        let _ = shared.flusher_thread.set(handle.thread().clone());
        crate::sync::directory::insert(shared.id, &shared);
        *shared.flusher.lock() = Some(handle);
        Ok(shared)
    }

    /// The sampling decision for a new span of trace `trace_id` whose first
    /// reference decided `parent` (if it has one).
    #[inline(always)]
    pub(crate) fn sample(&self, trace_id: u128, parent: Option<bool>) -> bool {
        match self.sampler {
            SamplerShortcut::Fixed(decision) => decision,
            SamplerShortcut::ParentElse(root) => parent.unwrap_or(root),
            SamplerShortcut::General => self.config.sampler.decide(trace_id, parent),
        }
    }

    pub(crate) fn next_slot_id(&self) -> u64 {
        // ORDERING: Relaxed: only uniqueness matters, which the RMW gives.
        self.next_slot_id.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn register(&self, slot: FlusherSlot) {
        let mut reg = self.registry.lock();
        reg.states.push(slot.state.clone());
        reg.pending.push(slot);
    }

    pub(crate) fn count_late(&self, f: impl FnOnce(&ThreadCounters)) {
        // The lock makes the one-writer rule of `Counter` hold.
        f(&self.registry.lock().late_counters);
    }

    pub(crate) fn push_late(&self, record: SpanRecord) {
        self.registry.lock().late.push(record);
    }

    /// Moves new slots and late spans to the flusher.
    pub(crate) fn collect_new(&self, slots: &mut Vec<FlusherSlot>, late: &mut Vec<SpanRecord>) {
        let mut reg = self.registry.lock();
        slots.append(&mut reg.pending);
        std::mem::swap(late, &mut reg.late);
    }

    /// Whether threads registered or late spans arrived since the flusher
    /// last collected them (its re-check before sleeping).
    pub(crate) fn has_new_work(&self) -> bool {
        let reg = self.registry.lock();
        !reg.pending.is_empty() || !reg.late.is_empty()
    }

    /// Forgets a drained slot of an exited thread, keeping its counts.
    pub(crate) fn retire(&self, slot: FlusherSlot) {
        let mut reg = self.registry.lock();
        reg.states.retain(|s| !Arc::ptr_eq(s, &slot.state));
        let mut retired = reg.retired;
        slot.state.counters.add_to(&mut retired);
        reg.retired = retired;
    }

    /// The flusher's last act: park its slots where `stats` can drain them.
    pub(crate) fn close_slots(&self, slots: Vec<FlusherSlot>) {
        self.registry.lock().closed_slots.extend(slots);
    }

    pub(crate) fn set_last_recorder_error(&self, message: String) {
        *self.last_recorder_error.lock() = Some(message);
    }

    pub(crate) fn wake_flusher(&self) {
        if let Some(t) = self.flusher_thread.get() {
            t.unpark();
        }
    }

    fn on_flusher_thread(&self) -> bool {
        self.flusher_thread
            .get()
            .is_some_and(|t| t.id() == std::thread::current().id())
    }

    /// Takes this tracer's locks for a `fork()`, in the one order
    /// `lock_for_fork` uses (none of them is ever taken while holding
    /// another of them elsewhere).
    #[cfg(all(unix, not(spanrec_loom)))]
    fn lock_for_fork(&'static self, held: &mut Vec<Box<dyn std::any::Any>>) {
        held.push(Box::new(self.control.lock_for_fork()));
        held.push(Box::new(self.registry.lock()));
        held.push(Box::new(self.last_recorder_error.lock()));
    }

    /// In a child made by `fork()` this tracer has no flusher (`fork.rs`).
    pub(crate) fn in_forked_child(&self) -> bool {
        crate::fork::generation() != self.fork_generation
    }

    pub(crate) fn flush(&self, deadline: Instant) -> Result<(), FlushError> {
        if self.in_forked_child() {
            return Err(FlushError::ForkedChild);
        }
        if self.on_flusher_thread() {
            return Err(FlushError::OnFlusherThread);
        }
        let ticket = self.control.request_flush().map_err(flush_error)?;
        self.wake_flusher();
        self.control
            .wait(ticket, Some(deadline))
            .map_err(flush_error)
    }

    pub(crate) fn shutdown(&self, deadline: Instant) -> Result<(), FlushError> {
        if self.in_forked_child() {
            // No flusher to wait for, and locks another parent thread held
            // at the fork stay held: touch nothing.
            return Err(FlushError::ForkedChild);
        }
        // ORDERING: Release pairs with nothing that needs it (finishing
        // threads read `closed` Relaxed, see `ThreadSlot::finish`); it only
        // makes the flag visible soon. Late readers are accounted for.
        self.closed.store(true, Ordering::Release);
        // Threads blocked for room (`Block`) see `closed` and stop waiting.
        for state in &self.registry.lock().states {
            state.room.notify();
        }
        self.control.request_shutdown();
        self.wake_flusher();
        if self.on_flusher_thread() {
            return Err(FlushError::OnFlusherThread);
        }
        self.control
            .wait_exited(Some(deadline))
            .map_err(flush_error)?;
        if let Some(handle) = self.flusher.lock().take() {
            // It has signalled its exit; this returns at once.
            let _ = handle.join();
        }
        Ok(())
    }

    pub(crate) fn stats(&self) -> Stats {
        let mut stats = Stats::default();
        let flusher_gone = self.control.has_exited();
        {
            let mut reg = self.registry.lock();
            let Registry {
                states,
                retired,
                closed_slots,
                late_counters,
                late,
                ..
            } = &mut *reg;
            if flusher_gone {
                // Late spans (finished during thread teardown) that raced
                // past the `closed` flag: nobody will record them now.
                retired.dropped.shutdown += late.len() as u64;
                late.clear();
            }
            for slot in closed_slots.iter_mut() {
                slot.receiver.drain(usize::MAX, |record| {
                    retired.dropped.shutdown += 1;
                    drop(record);
                });
            }
            for state in states.iter() {
                state.counters.add_to(&mut stats);
            }
            late_counters.add_to(&mut stats);
            stats.threads = states.len() as u64;
            stats.ring_bytes = (self.ring_budget.blocks() * block_bytes::<SpanRecord>()) as u64;
            let r = *retired;
            stats.started = stats.started.wrapping_add(r.started);
            stats.finished += r.finished;
            stats.dropped.ring_full += r.dropped.ring_full;
            stats.dropped.block_timeout += r.dropped.block_timeout;
            stats.dropped.unsampled += r.dropped.unsampled;
            stats.dropped.shutdown += r.dropped.shutdown;
            stats.limits.tags += r.limits.tags;
            stats.limits.logs += r.limits.logs;
            stats.limits.log_fields += r.limits.log_fields;
            stats.limits.values += r.limits.values;
            stats.limits.baggage += r.limits.baggage;
            stats.buffers_allocated += r.buffers_allocated;
            stats.doorbells += r.doorbells;
        }
        self.flusher_counters.add_to(&mut stats);
        self.ledger.add_to(&mut stats);
        // ORDERING: Relaxed: counts only, see `propagation::count`.
        stats.propagation_errors = self.propagation_errors.load(Ordering::Relaxed);
        stats.baggage_not_propagated = self.baggage_not_propagated.load(Ordering::Relaxed);
        stats
    }

    /// Breaks the reference cycles between this state and the buffers its
    /// rings hold, once no handle is left to read stats.
    pub(crate) fn release(&self) {
        let mut reg = self.registry.lock();
        for state in &reg.states {
            // ORDERING: Relaxed: threads read it only to free their slot of
            // this tracer early; a stale read keeps it until the next check
            // or thread exit, which is also correct.
            state.tracer_gone.store(true, Ordering::Relaxed);
        }
        reg.closed_slots.clear();
        reg.pending.clear();
        reg.late.clear();
    }
}

/// Every lock of spanrec's that a thread other than the forking one could
/// hold: the tracer directory's and each live tracer's flush requests,
/// registry and last error. Taken just before `fork()` and dropped just
/// after it, in the parent and in the child (`fork.rs`): a child is a copy
/// of the forking thread alone, and a lock another thread held at that
/// instant would stay held there forever.
///
/// Fields drop in order: the tracers' guards, the directory's guard, then
/// the tracers the guards borrow from.
#[cfg(all(unix, not(spanrec_loom)))]
pub(crate) struct ForkLocks {
    /// Guards borrowing from `tracers` (see `lock_for_fork`).
    _held: Vec<Box<dyn std::any::Any>>,
    _directory: Box<dyn std::any::Any>,
    _tracers: Vec<Arc<Shared>>,
}

/// Takes the locks `ForkLocks` lists: the directory's first (so the set of
/// tracers cannot change), then each tracer's.
#[cfg(all(unix, not(spanrec_loom)))]
pub(crate) fn lock_for_fork() -> ForkLocks {
    let (directory, tracers) = crate::sync::directory::lock_for_fork::<Shared>();
    let mut held = Vec::with_capacity(3 * tracers.len());
    for tracer in &tracers {
        // SAFETY: the `Arc` in `ForkLocks::_tracers` keeps this `Shared`
        // alive, unmoved, until after `held` (declared first) has dropped
        // every guard borrowing from it; nothing else sees the `'static`.
        let shared: &'static Shared = unsafe { &*Arc::as_ptr(tracer) };
        shared.lock_for_fork(&mut held);
    }
    ForkLocks {
        _held: held,
        _directory: Box::new(directory),
        _tracers: tracers,
    }
}
