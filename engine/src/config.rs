//! Tracer configuration: buffer sizes, overflow policy, span limits, sampler
//! and process identity, validated once by [`TracerBuilder::build`].

use std::borrow::Cow;
use std::time::Duration;

/// What a thread does when its ring to the flusher is full at `finish`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OverflowPolicy {
    /// Never wait: the finished span is dropped and counted under
    /// [`DropReason::RingFull`](crate::DropReason::RingFull). The default.
    #[default]
    DropNewest,
    /// Wait for the flusher to make room, at most `timeout`; after that the
    /// span is dropped and counted under
    /// [`DropReason::BlockTimeout`](crate::DropReason::BlockTimeout).
    ///
    /// This is the one exception to "the hot path never blocks": the waiting
    /// thread spins, then yields, then sleeps until the flusher has drained
    /// its ring (a condition variable the flusher notifies), and reads the
    /// monotonic clock while it waits. Choose it for audit callers
    /// who prefer a slower request to a missing record.
    Block {
        /// The longest a single `finish` waits. At most one minute. A
        /// tracer inherited through `fork()` does not wait (no flusher
        /// runs in the child): a full ring drops at once, counted as
        /// [`DropReason::BlockTimeout`](crate::DropReason::BlockTimeout).
        timeout: Duration,
    },
}

/// Which spans are recorded. Unsampled spans still carry and propagate their
/// context (ids, baggage), but record nothing and cost close to nothing.
#[derive(Debug, Clone, PartialEq)]
pub enum Sampler {
    /// Record every span.
    Always,
    /// Record no span.
    Never,
    /// Record a trace when its id falls in the first `ratio` of the id space,
    /// so every service using the same ratio makes the same decision for a
    /// trace. `ratio` must be within `0.0..=1.0`.
    Ratio(f64),
    /// Follow the parent's decision; use `root` for spans without a parent.
    ParentBased {
        /// The sampler for root spans: `Always`, `Never` or `Ratio` (a
        /// parent-based `root` would only ever see spans without a parent:
        /// [`ConfigError::NestedSampler`]).
        root: Box<Sampler>,
    },
}

/// [`Sampler::shortcut`]: a decision without following the sampler's box.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SamplerShortcut {
    /// Always this decision.
    Fixed(bool),
    /// The parent's decision, else this one.
    ParentElse(bool),
    /// Ask the sampler.
    General,
}

impl Default for Sampler {
    /// `ParentBased { root: Always }`: record everything unless a caller
    /// upstream decided not to.
    fn default() -> Self {
        Sampler::ParentBased {
            root: Box::new(Sampler::Always),
        }
    }
}

/// Bounds on what one span may carry. Anything beyond them is truncated and
/// counted in [`Stats::limits`](crate::Stats::limits), never an error and
/// never a panic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanLimits {
    /// Tags kept per span; later tags are dropped.
    pub max_tags: usize,
    /// Log entries kept per span; later logs are dropped.
    pub max_logs: usize,
    /// Fields kept per log entry; later fields are dropped.
    pub max_log_fields: usize,
    /// Bytes kept of a string tag or log value; longer values are cut at the
    /// last UTF-8 character boundary that fits.
    pub max_value_bytes: usize,
    /// Baggage items per span (inherited ones included).
    pub max_baggage_items: usize,
    /// Bytes of baggage per span, keys and values added up.
    pub max_baggage_bytes: usize,
}

impl Default for SpanLimits {
    fn default() -> Self {
        SpanLimits {
            max_tags: 64,
            max_logs: 64,
            max_log_fields: 16,
            max_value_bytes: 4096,
            max_baggage_items: 64,
            max_baggage_bytes: 8192,
        }
    }
}

impl SpanLimits {
    /// The largest accepted value of each field. A span's memory grows
    /// with its limits (tags × value bytes); beyond these, a limit stops
    /// being a bound.
    pub const MAX: SpanLimits = SpanLimits {
        max_tags: 1024,
        max_logs: 1024,
        max_log_fields: 256,
        max_value_bytes: 1 << 20,
        max_baggage_items: 1024,
        max_baggage_bytes: 1 << 20,
    };

    /// Every field within `1..=`[`SpanLimits::MAX`]: a zero limit would
    /// silently record nothing, an absurd one would bound nothing.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let max = SpanLimits::MAX;
        for (field, got, max) in [
            ("max_tags", self.max_tags, max.max_tags),
            ("max_logs", self.max_logs, max.max_logs),
            ("max_log_fields", self.max_log_fields, max.max_log_fields),
            ("max_value_bytes", self.max_value_bytes, max.max_value_bytes),
            (
                "max_baggage_items",
                self.max_baggage_items,
                max.max_baggage_items,
            ),
            (
                "max_baggage_bytes",
                self.max_baggage_bytes,
                max.max_baggage_bytes,
            ),
        ] {
            if got == 0 || got > max {
                return Err(ConfigError::SpanLimit { field, got, max });
            }
        }
        Ok(())
    }
}

/// The identity stamped on every record of a tracer.
#[derive(Debug, Clone, PartialEq)]
pub struct Process {
    /// The service name, e.g. `"apiserver"`.
    pub service: Cow<'static, str>,
    /// Free-form identity tags, e.g. host name, version, instance id.
    pub tags: Vec<(Cow<'static, str>, Cow<'static, str>)>,
}

impl Default for Process {
    /// Service `"unknown_service"` (OpenTelemetry's convention), no tags.
    fn default() -> Self {
        Process {
            service: Cow::Borrowed("unknown_service"),
            tags: Vec::new(),
        }
    }
}

/// Validated configuration of a [`Tracer`](crate::Tracer).
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Finished spans each thread can hand to the flusher before its ring is
    /// full (rounded up to a power of two): the most one thread has in
    /// flight. A ring's memory follows what it holds, in blocks of 64 spans
    /// (8 KiB): one block while idle, up to `ring_capacity` spans' worth in a
    /// burst, within [`Config::ring_memory_budget`].
    pub ring_capacity: usize,
    /// Bytes of ring blocks all threads of the tracer may hold together
    /// beyond their first block each. A thread that needs a block beyond
    /// it finds its ring full (the overflow policy applies: `Block` waits
    /// for the flusher to free blocks, `DropNewest` drops and counts under
    /// `ring_full`).
    pub ring_memory_budget: usize,
    /// Bytes of the first chunk of each span extension's bump arena, which
    /// holds the span's copied strings; allocated at the first copy (a span
    /// that copies nothing holds none). Every pooled extension keeps its
    /// first chunk when recycled, whatever its size (so a span that copies
    /// strings allocates nothing in steady state: pooled extensions hold
    /// about `arena_chunk_bytes` each); an arena that outgrows its first
    /// chunk keeps its largest chunk up to 16 KiB (larger ones are freed by
    /// the flusher).
    pub arena_chunk_bytes: usize,
    /// Most spans per call to [`Recorder::record`](crate::Recorder::record).
    pub max_batch_size: usize,
    /// Longest a finished span waits in the flusher before it is handed to
    /// the recorder in a partial batch.
    pub flush_interval: Duration,
    /// What `finish` does when the ring is full.
    pub overflow: OverflowPolicy,
    /// Per-span bounds.
    pub limits: SpanLimits,
    /// Which spans are recorded.
    pub sampler: Sampler,
    /// The identity stamped on every record.
    pub process: Process,
    /// The formats [`Tracer::extract_any`](crate::Tracer::extract_any) and
    /// [`Tracer::join_or_start`](crate::Tracer::join_or_start) try, in order.
    pub propagation: Vec<crate::formats::Format>,
    /// This service's key in W3C `tracestate` (e.g. `"spanrec"`): when set,
    /// injection puts `key=<span id>` first in the list. When unset, the
    /// incoming list is forwarded unchanged.
    pub tracestate_key: Option<Cow<'static, str>>,
    /// Whether a remote caller's sampling decision (W3C `trace-flags`,
    /// `b3: 0`, `x-b3-sampled`, Jaeger and OpenTracing flags, the binary
    /// envelope's flag) decides whether this service records the request.
    ///
    /// `false` (the default), for an audit log: a caller cannot switch off
    /// the record of its own request. An extracted context's `sampled` is
    /// then this service's decision for the caller's trace — the sampler's
    /// (its `root` for [`Sampler::ParentBased`]) — and that decision is
    /// what its spans propagate downstream (W3C lets a participant that
    /// updates `parent-id` set the `sampled` flag to what it records).
    /// A B3 decision without ids is then ignored: the request starts a
    /// root span like one that sent no context.
    ///
    /// `true`, for plain tracing deployments: the caller's flag is kept
    /// and [`Sampler::ParentBased`] follows it, so a caller that sends
    /// "not sampled" makes this service record nothing for the request.
    pub honor_remote_sampling: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            ring_capacity: 8192,
            ring_memory_budget: 16 << 20,
            arena_chunk_bytes: 256,
            max_batch_size: 1024,
            flush_interval: Duration::from_millis(100),
            overflow: OverflowPolicy::DropNewest,
            limits: SpanLimits::default(),
            sampler: Sampler::default(),
            process: Process::default(),
            propagation: crate::formats::Format::ALL.to_vec(),
            tracestate_key: None,
            honor_remote_sampling: false,
        }
    }
}

impl Config {
    /// Spans in one thread's ring from which the flusher is woken: a
    /// quarter of the ring (2,048 spans of the default 8,192), or one
    /// batch (`max_batch_size`) if that is more, but at most half the
    /// ring. A wake costs the flusher a fixed ~10–20 µs (the futex, a cold
    /// cache and branch predictors) besides its work per span: the more
    /// spans per wake, the less CPU per span. In the hyper server bench
    /// (server and flusher on one core) waking at 2,048 rather than 1,024
    /// spans cut the flusher's CPU from ~50 to ~42 ns per span with the
    /// capacity loss unchanged within the run's error (two runs); a
    /// quarter of the ring leaves three quarters for the wake-up latency.
    pub fn wake_at(&self) -> usize {
        let ring = self.ring_capacity.max(1).next_power_of_two();
        let half = (ring / 2).max(1);
        self.max_batch_size.max(ring / 4).clamp(1, half)
    }
}

/// Largest accepted `ring_capacity` (2^22 spans per thread).
pub const MAX_RING_CAPACITY: usize = 1 << 22;
/// Accepted range of `ring_memory_budget`: 64 KiB (8 blocks) to 1 TiB.
pub const RING_MEMORY_BUDGET_RANGE: (usize, usize) = (64 << 10, 1 << 40);
/// Largest accepted `arena_chunk_bytes` (1 MiB).
pub const MAX_ARENA_CHUNK_BYTES: usize = 1 << 20;
/// Largest accepted `max_batch_size`.
pub const MAX_BATCH_SIZE: usize = 1 << 20;
/// Accepted range of `flush_interval`.
pub const FLUSH_INTERVAL_RANGE: (Duration, Duration) =
    (Duration::from_millis(1), Duration::from_secs(3600));
/// Longest accepted `Block` timeout.
pub const MAX_BLOCK_TIMEOUT: Duration = Duration::from_secs(60);

/// A configuration value that [`TracerBuilder::build`](crate::TracerBuilder::build) rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `ring_capacity` was 0 or above [`MAX_RING_CAPACITY`].
    #[error("ring_capacity must be within 1..={max}, got {got}")]
    RingCapacity {
        /// The rejected value.
        got: usize,
        /// The largest accepted value.
        max: usize,
    },
    /// `ring_memory_budget` was outside [`RING_MEMORY_BUDGET_RANGE`].
    #[error("ring_memory_budget must be within 64 KiB..=1 TiB, got {got} bytes")]
    RingMemoryBudget {
        /// The rejected value.
        got: usize,
    },
    /// `arena_chunk_bytes` was 0 or above [`MAX_ARENA_CHUNK_BYTES`].
    #[error("arena_chunk_bytes must be within 1..={max}, got {got}")]
    ArenaChunk {
        /// The rejected value.
        got: usize,
        /// The largest accepted value.
        max: usize,
    },
    /// `max_batch_size` was 0 or above [`MAX_BATCH_SIZE`].
    #[error("max_batch_size must be within 1..={max}, got {got}")]
    BatchSize {
        /// The rejected value.
        got: usize,
        /// The largest accepted value.
        max: usize,
    },
    /// `flush_interval` was outside [`FLUSH_INTERVAL_RANGE`].
    #[error("flush_interval must be within 1 ms..=1 h, got {got:?}")]
    FlushInterval {
        /// The rejected value.
        got: Duration,
    },
    /// A `Block` timeout was zero or above [`MAX_BLOCK_TIMEOUT`].
    #[error("Block timeout must be within (0, 60 s], got {got:?}")]
    BlockTimeout {
        /// The rejected value.
        got: Duration,
    },
    /// A sampling ratio was not a number within `0.0..=1.0`.
    #[error("sampling ratio must be within 0.0..=1.0, got {got}")]
    SamplerRatio {
        /// The rejected value.
        got: f64,
    },
    /// A [`Sampler::ParentBased`] whose `root` is parent-based too.
    #[error("a parent-based sampler's root must be always, never or a ratio")]
    NestedSampler,
    /// The service name was empty.
    #[error("process service name must not be empty")]
    EmptyServiceName,
    /// A [`SpanLimits`] field was 0 or above its maximum
    /// ([`SpanLimits::MAX`]).
    #[error("span limit {field} must be within 1..={max}, got {got}")]
    SpanLimit {
        /// The field, e.g. `"max_tags"`.
        field: &'static str,
        /// The rejected value.
        got: usize,
        /// The largest accepted value.
        max: usize,
    },
    /// `tracestate_key` breaks the W3C key grammar.
    #[error("tracestate_key {got:?} is not a valid W3C tracestate key")]
    TraceStateKey {
        /// The rejected key.
        got: String,
    },
}

impl Config {
    /// Checks every field; the first bad one is reported.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.ring_capacity == 0 || self.ring_capacity > MAX_RING_CAPACITY {
            return Err(ConfigError::RingCapacity {
                got: self.ring_capacity,
                max: MAX_RING_CAPACITY,
            });
        }
        let (lo, hi) = RING_MEMORY_BUDGET_RANGE;
        if !(lo..=hi).contains(&self.ring_memory_budget) {
            return Err(ConfigError::RingMemoryBudget {
                got: self.ring_memory_budget,
            });
        }
        if self.arena_chunk_bytes == 0 || self.arena_chunk_bytes > MAX_ARENA_CHUNK_BYTES {
            return Err(ConfigError::ArenaChunk {
                got: self.arena_chunk_bytes,
                max: MAX_ARENA_CHUNK_BYTES,
            });
        }
        if self.max_batch_size == 0 || self.max_batch_size > MAX_BATCH_SIZE {
            return Err(ConfigError::BatchSize {
                got: self.max_batch_size,
                max: MAX_BATCH_SIZE,
            });
        }
        let (lo, hi) = FLUSH_INTERVAL_RANGE;
        if self.flush_interval < lo || self.flush_interval > hi {
            return Err(ConfigError::FlushInterval {
                got: self.flush_interval,
            });
        }
        if let OverflowPolicy::Block { timeout } = self.overflow {
            if timeout.is_zero() || timeout > MAX_BLOCK_TIMEOUT {
                return Err(ConfigError::BlockTimeout { got: timeout });
            }
        }
        validate_sampler(&self.sampler)?;
        self.limits.validate()?;
        if self.process.service.is_empty() {
            return Err(ConfigError::EmptyServiceName);
        }
        if let Some(key) = &self.tracestate_key {
            if !crate::formats::validate_tracestate_key(key) {
                return Err(ConfigError::TraceStateKey {
                    got: key.to_string(),
                });
            }
        }
        Ok(())
    }
}

/// One level, never recursing: however deep a caller nests `ParentBased`,
/// checking it takes constant time and stack.
fn validate_sampler(sampler: &Sampler) -> Result<(), ConfigError> {
    let root = match sampler {
        Sampler::ParentBased { root } => match **root {
            Sampler::ParentBased { .. } => return Err(ConfigError::NestedSampler),
            ref root => root,
        },
        other => other,
    };
    match *root {
        Sampler::Ratio(r) if !(0.0..=1.0).contains(&r) => Err(ConfigError::SamplerRatio { got: r }),
        _ => Ok(()),
    }
}

impl Sampler {
    /// The decision reduced to what the hot path needs, for the common
    /// samplers that ignore the trace id.
    #[inline]
    pub(crate) fn shortcut(&self) -> SamplerShortcut {
        match self {
            Sampler::Always => SamplerShortcut::Fixed(true),
            Sampler::Never => SamplerShortcut::Fixed(false),
            Sampler::ParentBased { root } => match **root {
                Sampler::Always => SamplerShortcut::ParentElse(true),
                Sampler::Never => SamplerShortcut::ParentElse(false),
                _ => SamplerShortcut::General,
            },
            Sampler::Ratio(_) => SamplerShortcut::General,
        }
    }

    /// Whether a span of trace `trace_id` is recorded; `parent` is the
    /// parent's decision, if the span has a parent.
    pub(crate) fn decide(&self, trace_id: u128, parent: Option<bool>) -> bool {
        match self {
            Sampler::Always => true,
            Sampler::Never => false,
            Sampler::Ratio(ratio) => {
                // The low 64 bits of a trace id are uniformly random (ours, W3C
                // and 64-bit peers alike); compare them with the ratio's share
                // of the 64-bit space. The float-to-int cast saturates at 1.0.
                *ratio >= 1.0 || ((trace_id as u64) as f64) < ratio * (u64::MAX as f64)
            }
            Sampler::ParentBased { root } => match parent {
                Some(sampled) => sampled,
                None => root.decide(trace_id, None),
            },
        }
    }
}
