//! [`TracerBuilder`]: configuration in, a running [`Tracer`] out.

use crate::config::{Config, ConfigError, OverflowPolicy, Process, Sampler, SpanLimits};
use crate::recorder::Recorder;
use crate::shared::Shared;
use crate::tracer::Tracer;
use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

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
    /// The default configuration, no recorder.
    pub(crate) fn new() -> Self {
        TracerBuilder {
            config: Config::default(),
            recorder: None,
        }
    }

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

    /// See [`Config::honor_remote_sampling`] (default `false`: callers
    /// cannot switch off this service's record of their request).
    pub fn honor_remote_sampling(mut self, honor: bool) -> Self {
        self.config.honor_remote_sampling = honor;
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
        let shared = Shared::start(self.config, recorder).map_err(BuildError::Spawn)?;
        Ok(Tracer::from_shared(shared))
    }
}
