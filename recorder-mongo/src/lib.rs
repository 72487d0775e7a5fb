//! spanrec-mongo: audit-grade MongoDB persistence for spanrec.
//!
//! [`MongoRecorder`] is a [`spanrec::Recorder`] that writes every finished
//! span as one document (schema: `docs/mongo-schema.md`) with the official
//! `mongodb` driver, on its own writer thread, so the tracer's flusher and
//! the request threads never wait on the network. Documents have a
//! deterministic `_id`, so retries never duplicate; transient errors are
//! retried with backoff; what the database cannot take goes to an on-disk
//! spool and is replayed when it is back, also after a restart.
//!
//! ```no_run
//! use spanrec::Tracer;
//! use spanrec_mongo::{MongoOptions, MongoRecorder};
//!
//! let recorder = MongoRecorder::connect(
//!     "mongodb://127.0.0.1:27017/?w=majority",
//!     MongoOptions::new("audit", "spans"),
//! )?;
//! let stats = recorder.stats();
//! let tracer = Tracer::builder().service_name("apiserver").recorder(recorder).build()?;
//! tracer.start_span("Client.FullStatus").finish();
//! tracer.shutdown(std::time::Instant::now() + std::time::Duration::from_secs(10))?;
//! println!("{:?}", stats.get());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod chain;
mod classify;
mod duplicates;
pub mod encode;
mod mongo_stats;
mod names;
mod options;
mod recorder;
mod redact;
mod secret_mask;
mod spool;
pub mod verify;
mod writer;

pub use mongo_stats::{MongoStats, MongoStatsHandle};
pub use names::{check_names, NameError};
pub use options::{default_spool_dir, MongoOptions, MongoRecorderError, MAX_WAIT};
pub use recorder::MongoRecorder;
pub use redact::{RedactedUri, SECRET_OPTIONS};
pub use spool::SpoolError;
