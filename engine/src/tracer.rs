//! The tracer: configuration, the shared state its spans and flusher use,
//! and the lifecycle (`flush`, `shutdown`, `stats`).

use crate::block_ring::{block_bytes, Budget};
use crate::clock::Clock;
use crate::config::{
    Config, ConfigError, OverflowPolicy, Process, Sampler, SamplerShortcut, SpanLimits,
};
use crate::doorbell::Doorbell;
use crate::flush::{FlushControl, WaitError};
use crate::flusher;
use crate::local::{FlusherSlot, SlotState};
use crate::record::SpanRecord;
use crate::recorder::Recorder;
use crate::span::{Span, SpanBuilder};
use crate::stats::{FlusherCounters, Stats, ThreadCounters};
use crate::sync::Mutex;
use crate::sync::{next_tracer_id, Arc, AtomicBool, AtomicU64, Ordering};
use std::borrow::Cow;
use std::fmt;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long dropping the last [`Tracer`] handle waits for the final drain.
pub const DROP_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

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
    pub(crate) control: FlushControl,
    /// How span-finishing threads wake the sleeping flusher.
    pub(crate) doorbell: Doorbell,
    /// The ring blocks every thread's ring may hold together
    /// (`Config::ring_memory_budget`).
    pub(crate) ring_budget: Arc<Budget>,
    flusher: Mutex<Option<JoinHandle<()>>>,
    /// The flusher thread, to wake it and to refuse waits made from it.
    flusher_thread: std::sync::OnceLock<std::thread::Thread>,
    last_recorder_error: Mutex<Option<String>>,
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

    /// In a child made by `fork()` this tracer has no flusher (`fork.rs`).
    fn in_forked_child(&self) -> bool {
        crate::fork::generation() != self.fork_generation
    }

    fn flush(&self, deadline: Instant) -> Result<(), FlushError> {
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
        // threads read `closed` Relaxed, see `LocalSlot::finish`); it only
        // makes the flag visible soon. Late readers are accounted for.
        self.closed.store(true, Ordering::Release);
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

    fn stats(&self) -> Stats {
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
        // ORDERING: Relaxed: counts only, see `propagation::count`.
        stats.propagation_errors = self.propagation_errors.load(Ordering::Relaxed);
        stats.baggage_not_propagated = self.baggage_not_propagated.load(Ordering::Relaxed);
        stats
    }

    /// Breaks the reference cycles between this state and the buffers its
    /// rings hold, once no handle is left to read stats.
    fn release(&self) {
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

/// Why [`Tracer::flush`] or [`Tracer::shutdown`] returned before its work
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

/// Why [`TracerBuilder::build`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A configuration value is out of range.
    #[error("invalid tracer configuration: {0}")]
    Config(#[from] ConfigError),
    /// No recorder was given: spans would have nowhere to go.
    #[error("no recorder: call TracerBuilder::recorder (NullRecorder discards spans on purpose)")]
    NoRecorder,
    /// The flusher thread could not be started.
    #[error("could not start the spanrec-flusher thread: {0}")]
    Spawn(#[source] std::io::Error),
}

/// Creates spans and owns the flusher that hands them to a recorder.
///
/// Cheap to clone (all clones share one tracer) and `Send + Sync`. When the
/// last clone is dropped the tracer shuts down, waiting at most
/// [`DROP_SHUTDOWN_TIMEOUT`] for the final batch.
#[derive(Clone)]
pub struct Tracer {
    handle: Arc<Handle>,
}

/// The last handle's drop shuts the tracer down.
struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        let clean = self
            .shared
            .shutdown(Instant::now() + DROP_SHUTDOWN_TIMEOUT)
            .is_ok();
        if clean {
            self.shared.release();
        }
    }
}

impl fmt::Debug for Tracer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tracer")
            .field("id", &self.shared().id)
            .field("config", &self.shared().config)
            .finish()
    }
}

impl Tracer {
    /// A builder with the default configuration.
    pub fn builder() -> TracerBuilder {
        TracerBuilder {
            config: Config::default(),
            recorder: None,
        }
    }

    #[inline(always)]
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.handle.shared
    }

    /// A builder for a span named `name`, for references, explicit start
    /// time or initial tags.
    #[inline]
    pub fn span(&self, name: impl Into<Cow<'static, str>>) -> SpanBuilder<'_> {
        SpanBuilder::new(self, name.into())
    }

    /// Starts a span named `name`: a child of the thread's active span of
    /// this tracer (see [`Span::enter`]) if there is one, else a new trace.
    #[inline(always)]
    pub fn start_span(&self, name: impl Into<Cow<'static, str>>) -> Span {
        Span::start_now(self, name.into())
    }

    /// Returns once every span finished before the call has been handed to
    /// the recorder and the recorder's `flush` has returned, or with
    /// [`FlushError::Timeout`] when `deadline` passes first.
    ///
    /// "Finished before the call" means finished on this thread before the
    /// call, or on a thread whose finish is otherwise ordered before it
    /// (joined, or synchronized through a lock or channel).
    pub fn flush(&self, deadline: Instant) -> Result<(), FlushError> {
        self.shared().flush(deadline)
    }

    /// Stops the tracer: spans finished before the call are drained and
    /// handed to the recorder, then the recorder's `shutdown` runs and the
    /// flusher exits. Spans finished later are dropped and counted. Waits
    /// at most until `deadline`; calling it again is harmless.
    pub fn shutdown(&self, deadline: Instant) -> Result<(), FlushError> {
        self.shared().shutdown(deadline)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.shared().stats()
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.shared().config
    }

    /// The message of the last error a recorder returned, if any.
    pub fn last_recorder_error(&self) -> Option<String> {
        self.shared().last_recorder_error.lock().clone()
    }
}

/// Configures and builds a [`Tracer`].
#[must_use]
pub struct TracerBuilder {
    config: Config,
    recorder: Option<Box<dyn Recorder>>,
}

impl fmt::Debug for TracerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TracerBuilder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl TracerBuilder {
    /// Replaces the whole configuration.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// See [`Config::ring_capacity`].
    pub fn ring_capacity(mut self, spans: usize) -> Self {
        self.config.ring_capacity = spans;
        self
    }

    /// See [`Config::ring_memory_budget`].
    pub fn ring_memory_budget(mut self, bytes: usize) -> Self {
        self.config.ring_memory_budget = bytes;
        self
    }

    /// See [`Config::arena_chunk_bytes`].
    pub fn arena_chunk_bytes(mut self, bytes: usize) -> Self {
        self.config.arena_chunk_bytes = bytes;
        self
    }

    /// See [`Config::max_batch_size`].
    pub fn max_batch_size(mut self, spans: usize) -> Self {
        self.config.max_batch_size = spans;
        self
    }

    /// See [`Config::flush_interval`].
    pub fn flush_interval(mut self, interval: Duration) -> Self {
        self.config.flush_interval = interval;
        self
    }

    /// See [`Config::overflow`].
    pub fn overflow(mut self, policy: OverflowPolicy) -> Self {
        self.config.overflow = policy;
        self
    }

    /// See [`Config::limits`].
    pub fn limits(mut self, limits: SpanLimits) -> Self {
        self.config.limits = limits;
        self
    }

    /// See [`Config::sampler`].
    pub fn sampler(mut self, sampler: Sampler) -> Self {
        self.config.sampler = sampler;
        self
    }

    /// Sets the service name stamped on every record.
    pub fn service_name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.config.process.service = name.into();
        self
    }

    /// Adds a process identity tag stamped on every record.
    pub fn process_tag(
        mut self,
        key: impl Into<Cow<'static, str>>,
        value: impl Into<Cow<'static, str>>,
    ) -> Self {
        self.config.process.tags.push((key.into(), value.into()));
        self
    }

    /// The formats `extract_any` and `join_or_start` try, in order.
    pub fn propagation(
        mut self,
        formats: impl IntoIterator<Item = crate::propagation::Format>,
    ) -> Self {
        self.config.propagation = formats.into_iter().collect();
        self
    }

    /// This service's W3C `tracestate` key; see [`Config::tracestate_key`].
    pub fn tracestate_key(mut self, key: impl Into<Cow<'static, str>>) -> Self {
        self.config.tracestate_key = Some(key.into());
        self
    }

    /// Sets the whole process identity.
    pub fn process(mut self, process: Process) -> Self {
        self.config.process = process;
        self
    }

    /// Where finished spans go.
    pub fn recorder(mut self, recorder: impl Recorder) -> Self {
        self.recorder = Some(Box::new(recorder));
        self
    }

    /// Validates the configuration and starts the flusher thread.
    pub fn build(self) -> Result<Tracer, BuildError> {
        self.config.validate()?;
        let recorder = self.recorder.ok_or(BuildError::NoRecorder)?;
        let ring_blocks = self.config.ring_memory_budget / block_bytes::<SpanRecord>();
        let shared = Arc::new(Shared {
            id: next_tracer_id(),
            sampler: self.config.sampler.shortcut(),
            config: self.config,
            clock: Clock::new(),
            closed: Arc::new(AtomicBool::new(false)),
            registry: Mutex::new(Registry::default()),
            flusher_counters: FlusherCounters::default(),
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
        let handle = flusher::spawn(shared.clone(), recorder).map_err(BuildError::Spawn)?;
        let _ = shared.flusher_thread.set(handle.thread().clone());
        crate::sync::directory::insert(shared.id, &shared);
        *shared.flusher.lock() = Some(handle);
        Ok(Tracer {
            handle: Arc::new(Handle { shared }),
        })
    }
}
