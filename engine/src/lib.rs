//! spanrec: a lock-free span recorder.
//!
//! Spans are started and finished on request threads at a cost of tens of
//! nanoseconds; a background thread, `spanrec-flusher`, hands every finished
//! span in batches to a [`Recorder`] (MongoDB through the `spanrec-mongo`
//! crate, or your own). Every finished span is either recorded or counted as
//! dropped under a named [`DropReason`]; [`Tracer::stats`] shows which.
//!
//! ```
//! use spanrec::{InMemoryRecorder, Tracer};
//! use std::time::{Duration, Instant};
//!
//! let recorder = InMemoryRecorder::new();
//! let tracer = Tracer::builder()
//!     .service_name("apiserver")
//!     .recorder(recorder.clone())
//!     .build()?;
//!
//! let mut request = tracer.start_span("Client.FullStatus");
//! request.set_tag("user", "admin");
//! request.set_baggage_item("caller", "juju-cli");
//! {
//!     let _active = request.enter();
//!     let mut query = tracer.start_span("db.find"); // child of `request`
//!     query.set_tag("db.rows", 3);
//!     query.log("cache.miss", [("key", "machines")]);
//! } // `query` finishes here
//! request.finish();
//!
//! tracer.flush(Instant::now() + Duration::from_secs(5))?;
//! let query = recorder.find("db.find").unwrap();
//! assert_eq!(query.baggage_item("caller"), Some("juju-cli"));
//! let stats = tracer.stats();
//! assert_eq!(stats.recorded + stats.dropped.total(), stats.finished);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # The hot path
//! Starting, tagging, logging and finishing a span take no lock, make no
//! syscall and, once the thread's extension pool is warm, allocate nothing:
//! a span is a 128-byte record (ids, times, name, first reference, two
//! inline tags) that `finish` copies into a per-thread SPSC ring to the
//! flusher; borrowed strings and anything else that does not fit go into a
//! pooled extension with its own bump arena, which travels with the record
//! and comes back through another ring. The exceptions: a thread that finds
//! its ring half full while the flusher sleeps wakes it (one `unpark` per
//! half-filled ring, [`Stats::doorbells`]), and the opt-in
//! [`OverflowPolicy::Block`] waits (bounded by its timeout) when a thread's
//! ring is full. See
//! `docs/architecture.md` for the design and its invariants.

#![allow(
    clippy::missing_const_for_thread_local,
    reason = "thread-locals go through the `sync` facade, and loom's `thread_local!` takes no `const` block"
)]

/// The README's usage example runs as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;

mod active;
#[cfg(spanrec_loom)]
#[doc(hidden)]
pub mod block_ring;
#[cfg(not(spanrec_loom))]
mod block_ring;
mod builder;
mod clock;
mod config;
#[cfg(spanrec_loom)]
#[doc(hidden)]
pub mod doorbell;
#[cfg(not(spanrec_loom))]
mod doorbell;
mod env;
mod exit;
#[cfg(spanrec_loom)]
#[doc(hidden)]
pub mod flush_requests;
#[cfg(not(spanrec_loom))]
mod flush_requests;
mod flusher;
mod fork;
mod formats;
pub mod global;
pub mod hex;
mod ids;
mod instrument;
#[cfg(feature = "tower")]
pub mod middleware;
mod prefetch;
pub mod propagation;
mod record;
mod recorder;
#[cfg(spanrec_loom)]
#[doc(hidden)]
pub mod room_wait;
#[cfg(not(spanrec_loom))]
mod room_wait;
mod shared;
#[cfg(spanrec_loom)]
#[doc(hidden)]
pub mod slot_protocol;
#[cfg(not(spanrec_loom))]
mod slot_protocol;
mod span;
mod span_context;
mod stats;
mod sync;
mod thread_slots;
mod tracer;
#[cfg(feature = "tracing")]
pub mod tracing_layer;

pub use builder::{BuildError, TracerBuilder};
pub use config::{
    Config, ConfigError, OverflowPolicy, Process, Sampler, SpanLimits, FLUSH_INTERVAL_RANGE,
    MAX_ARENA_CHUNK_BYTES, MAX_BATCH_SIZE, MAX_BLOCK_TIMEOUT, MAX_RING_CAPACITY,
    RING_MEMORY_BUDGET_RANGE,
};
pub use env::EnvError;
pub use instrument::{InSpan, Instrument, OnReady};
pub use propagation::{Carrier, ExtractError, ExtractErrorKind, Format};
pub use record::{
    AsTag, LogRef, Reference, ReferenceKind, SpanRecord, Truncations, Value, ValueRef,
};
pub use recorder::{
    Batch, BatchIter, FinishedLog, FinishedSpan, FlushWaker, InMemoryRecorder, NullRecorder,
    OwnedValue, Recorder, RecorderError,
};
pub use shared::{FlushError, DROP_SHUTDOWN_TIMEOUT};
pub use span::{Entered, ParentRef, Span, SpanBuilder, SpanContext};
#[cfg(feature = "macros")]
pub use spanrec_macros::trace;
pub use stats::{DropCounts, DropReason, Ledger, LimitCounts, Stats};
pub use tracer::Tracer;
#[cfg(feature = "tracing")]
pub use tracing_layer::SpanrecLayer;
