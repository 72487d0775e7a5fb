//! Settings of a `MongoRecorder` and why one could not be created.

use crate::chain::ChainKey;
use crate::spool::SpoolError;
use mongodb::options::{Acknowledgment, WriteConcern};
use std::path::PathBuf;
use std::time::Duration;

/// Settings of a [`MongoRecorder`].
#[derive(Debug, Clone)]
pub struct MongoOptions {
    /// Database name.
    pub database: String,
    /// Collection name.
    pub collection: String,
    /// Write concern of every insert. Default: `w: 1, j: true` (journaled on
    /// the primary); use `Acknowledgment::Majority` on a replica set.
    pub write_concern: WriteConcern,
    /// Most documents per `insert_many` call; a larger batch from the tracer
    /// is inserted in chunks of this size, one at a time.
    pub insert_batch_size: usize,
    /// Encoded batches waiting for the writer; beyond it batches are spooled.
    pub queue_batches: usize,
    /// Insert attempts per batch before it is spooled (transient errors).
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt, with ±50 % jitter. At most
    /// `max_backoff`.
    pub initial_backoff: Duration,
    /// Longest retry delay: at most [`MAX_WAIT`] (1 h).
    pub max_backoff: Duration,
    /// Directory of the on-disk spool: one recorder per directory (it
    /// holds a lock), created owner-only (`0700`, files `0600`). Default
    /// [`default_spool_dir`]: `$XDG_STATE_HOME/spanrec/spool/<db>.<coll>`,
    /// else `$HOME/.local/state/spanrec/spool/<db>.<coll>`, else under the
    /// working directory at construction — always absolute. Put it on
    /// durable storage.
    pub spool_dir: PathBuf,
    /// Most bytes the spool may hold; batches beyond it fail (counted).
    pub spool_max_bytes: u64,
    /// How often to try the database again while it is down: at most
    /// [`MAX_WAIT`] (1 h).
    pub probe_interval: Duration,
    /// The longest [`Recorder::shutdown`](spanrec::Recorder::shutdown) (and so `Drop`) waits for the
    /// writer to deliver what it holds. Past it the writer stops retrying
    /// and spools the rest (durable, replayed at the next start), so a
    /// shutdown ends within this plus one insert attempt.
    pub shutdown_timeout: Duration,
    /// Write-ahead: every batch is appended to the spool and synced
    /// (`fsync`) on the flusher thread *before* it is sent, and the writer
    /// inserts from the spool. A crash or `kill -9` of the application then
    /// loses at most what the tracer's rings held and the one batch being
    /// encoded (`Stats::in_flight` at that instant); without it, also up to
    /// `queue_batches` encoded batches waiting for the writer. Costs one
    /// `fsync` per batch on the flusher (`mongo/write_ahead_e2e`). If the
    /// spool refuses a batch (full disk), it is sent the usual way and
    /// counted in `MongoStats::write_ahead_bypassed`. Default: off.
    pub write_ahead: bool,
    /// The tamper-evident chain (`docs/audit-integrity.md`): every batch
    /// gets a record in `<collection>.chain` with the Merkle root of its
    /// documents and the hash of the record before it; each document
    /// carries `chain`, `seq`, `pos`; lost spans get gap records. Checked
    /// by `spanrec verify`. Default: on.
    pub chain: bool,
    /// Signs every chain record (HMAC-SHA-256) so that only the key's
    /// holder can extend the chain. Never printed. Default: none.
    pub chain_key: Option<ChainKey>,
    /// A file outside the database where the chain's head (`chain seq
    /// hash`) is appended every `checkpoint_every` records and at shutdown:
    /// keep it where whoever controls the database cannot rewrite it, and
    /// give it to `spanrec verify --checkpoint`. Default: none.
    pub checkpoint_file: Option<PathBuf>,
    /// Records between checkpoints. Default: 64.
    pub checkpoint_every: u64,
    /// Delete records this long after their start time (a TTL index on
    /// `start`). `None` keeps them forever.
    pub retention: Option<Duration>,
}

impl MongoOptions {
    /// Defaults for `database` and `collection`.
    pub fn new(database: impl Into<String>, collection: impl Into<String>) -> Self {
        let (database, collection) = (database.into(), collection.into());
        MongoOptions {
            spool_dir: default_spool_dir(&database, &collection),
            database,
            collection,
            write_concern: WriteConcern::builder()
                .w(Acknowledgment::Nodes(1))
                .journal(true)
                .build(),
            insert_batch_size: 1024,
            queue_batches: 8,
            max_attempts: 4,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            spool_max_bytes: 1 << 30,
            probe_interval: Duration::from_secs(1),
            shutdown_timeout: Duration::from_secs(30),
            write_ahead: false,
            chain: true,
            chain_key: None,
            checkpoint_file: None,
            checkpoint_every: 64,
            retention: None,
        }
    }
}

/// The default spool directory of a collection, absolute:
/// `$XDG_STATE_HOME/spanrec/spool/<db>.<coll>`, else
/// `$HOME/.local/state/spanrec/spool/<db>.<coll>` (the XDG default), else
/// `spanrec-spool/<db>.<coll>` under the current directory. `<db>.<coll>`
/// is one file name: bytes other than ASCII letters, digits, `.`, `_` and
/// `-` are written `%XX` (a collection name may hold `/`).
pub fn default_spool_dir(database: &str, collection: &str) -> PathBuf {
    let absolute = |v: std::ffi::OsString| Some(PathBuf::from(v)).filter(|p| p.is_absolute());
    let state = std::env::var_os("XDG_STATE_HOME")
        .and_then(absolute)
        .or_else(|| {
            std::env::var_os("HOME")
                .and_then(absolute)
                .map(|h| h.join(".local/state"))
        });
    // One path component whatever the names hold (a collection name may
    // hold `/`): `names::file_name`.
    let name = crate::names::file_name(&format!("{database}.{collection}"));
    match state {
        Some(state) => state.join("spanrec").join("spool").join(name),
        None => std::env::current_dir()
            .unwrap_or_else(|_| PathBuf::from("/"))
            .join("spanrec-spool")
            .join(name),
    }
}

/// Longest accepted `max_backoff` and `probe_interval`: the writer sleeps
/// them between attempts (a longer one left it asleep past any shutdown,
/// and one near `Duration::MAX` overflowed the retry arithmetic: a panic).
pub const MAX_WAIT: Duration = Duration::from_secs(3600);

/// Why a [`MongoRecorder`] could not be created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MongoRecorderError {
    /// The connection string is malformed (the password is never shown).
    #[error("invalid MongoDB connection string {uri}: {message}")]
    Uri {
        /// The connection string with its password masked.
        uri: String,
        /// What is wrong.
        message: String,
    },
    /// The spool directory could not be opened.
    #[error("cannot open the spool: {0}")]
    Spool(#[from] SpoolError),
    /// A setting is out of range.
    #[error("invalid option: {0}")]
    Option(String),
    /// The database or collection name is one MongoDB refuses.
    #[error(transparent)]
    Name(#[from] crate::NameError),
    /// The writer thread could not be started.
    #[error("cannot start the writer thread: {0}")]
    Spawn(#[source] std::io::Error),
}
