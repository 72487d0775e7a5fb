//! [`MongoRecorder`]: encodes spans on the flusher thread, inserts them from
//! its own writer thread, retries transient failures, and spools to disk what
//! the database cannot take, so that the tracer's flusher never waits on the
//! network.
//!
//! ```text
//! flusher ── encode ──▶ queue (bounded) ──▶ writer ── insert_many ──▶ MongoDB
//!              │ queue full                    │ still failing after retries
//!              └──────────▶ spool (disk) ◀─────┘
//!                              └── replayed, oldest first, when MongoDB answers
//! ```

use crate::encode::{encode_span_into, MAX_DOCUMENT_BYTES};
use crate::redact::RedactedUri;
use crate::spool::{Spool, SpoolError};
use bson::doc;
use bson::raw::RawDocumentBuf;
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TryRecvError, TrySendError};
use mongodb::error::{Error as DriverError, ErrorKind};
use mongodb::options::{
    Acknowledgment, ClientOptions, CollectionOptions, IndexOptions, WriteConcern,
};
use mongodb::sync::{Client, Collection};
use mongodb::IndexModel;
use parking_lot::Mutex;
use spanrec::{Batch, FlushWaker, Ledger, Recorder, RecorderError};
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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
    /// First retry delay; doubles per attempt, with ±50 % jitter.
    pub initial_backoff: Duration,
    /// Longest retry delay.
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
    /// How often to try the database again while it is down.
    pub probe_interval: Duration,
    /// The longest [`Recorder::shutdown`] (and so `Drop`) waits for the
    /// writer to deliver what it holds. Past it the writer stops retrying
    /// and spools the rest (durable, replayed at the next start), so a
    /// shutdown ends within this plus one insert attempt.
    pub shutdown_timeout: Duration,
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
            retention: None,
        }
    }
}

/// The default spool directory of a collection, absolute:
/// `$XDG_STATE_HOME/spanrec/spool/<db>.<coll>`, else
/// `$HOME/.local/state/spanrec/spool/<db>.<coll>` (the XDG default), else
/// `spanrec-spool/<db>.<coll>` under the current directory.
pub fn default_spool_dir(database: &str, collection: &str) -> PathBuf {
    let absolute = |v: std::ffi::OsString| Some(PathBuf::from(v)).filter(|p| p.is_absolute());
    let state = std::env::var_os("XDG_STATE_HOME")
        .and_then(absolute)
        .or_else(|| {
            std::env::var_os("HOME")
                .and_then(absolute)
                .map(|h| h.join(".local/state"))
        });
    let name = format!("{database}.{collection}");
    match state {
        Some(state) => state.join("spanrec").join("spool").join(name),
        None => std::env::current_dir()
            .unwrap_or_else(|_| PathBuf::from("/"))
            .join("spanrec-spool")
            .join(name),
    }
}

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
    /// The writer thread could not be started.
    #[error("cannot start the writer thread: {0}")]
    Spawn(#[source] std::io::Error),
}

/// What happened to the documents a [`MongoRecorder`] was given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MongoStats {
    /// Documents confirmed in the collection (inserted, or already there:
    /// see `duplicates`), directly or from the spool.
    pub delivered: u64,
    /// Of `delivered`: documents whose insert hit a duplicate key, i.e. an
    /// earlier attempt had already written them.
    pub duplicates: u64,
    /// Insert attempts repeated after a transient error.
    pub retries: u64,
    /// Documents written to the spool.
    pub spooled: u64,
    /// Of `delivered`: documents that came from the spool.
    pub replayed: u64,
    /// Documents refused for good (too large, rejected by validation, or
    /// the spool was full); see `last_error`. Authentication and
    /// authorization failures are not among them: those batches are retried
    /// and spooled until the server accepts them.
    pub failed_permanently: u64,
    /// Bytes now in the spool.
    pub spool_bytes: u64,
    /// Spool bytes discarded because a record was torn or corrupt.
    pub spool_corrupt_bytes: u64,
    /// Attempts to create the indexes that failed (a user without
    /// `createIndex`, an index that conflicts with the configured
    /// `retention`): inserts go on without them, and creation is retried
    /// every `probe_interval`.
    pub index_failures: u64,
    /// The last error seen (passwords masked).
    pub last_error: Option<String>,
}

#[derive(Default)]
struct Counters {
    delivered: AtomicU64,
    duplicates: AtomicU64,
    retries: AtomicU64,
    spooled: AtomicU64,
    replayed: AtomicU64,
    failed_permanently: AtomicU64,
    spool_bytes: AtomicU64,
    spool_corrupt_bytes: AtomicU64,
    index_failures: AtomicU64,
    last_error: Mutex<Option<String>>,
    /// The tracer's ledger, once attached: what becomes durable (inserted
    /// with the write concern, or synced into the spool) and what is lost.
    ledger: std::sync::OnceLock<Ledger>,
}

impl Counters {
    /// `n` documents are durable: in the collection, or in the spool.
    fn durable(&self, n: u64) {
        if let Some(l) = self.ledger.get() {
            l.durable(n);
        }
    }

    /// `n` documents, not durable yet, are lost for good (counted in
    /// `failed_permanently` too).
    fn lost(&self, n: u64) {
        Counters::add(&self.failed_permanently, n);
        if let Some(l) = self.ledger.get() {
            l.rejected(n);
        }
    }

    /// `n` spooled (durable) documents were then refused by the server.
    fn lost_after_spool(&self, n: u64) {
        Counters::add(&self.failed_permanently, n);
        if let Some(l) = self.ledger.get() {
            l.rejected_after_durable(n);
        }
    }

    fn add(c: &AtomicU64, n: u64) {
        // ORDERING: Relaxed: statistics only; readers that need exact totals
        // read them after `Recorder::flush`/`shutdown`, whose channel
        // hand-off orders these writes before the read.
        c.fetch_add(n, Ordering::Relaxed);
    }
}

/// A cheap handle for reading a [`MongoRecorder`]'s counters after the
/// recorder has been handed to a tracer.
#[derive(Clone)]
pub struct MongoStatsHandle(Arc<Counters>);

impl fmt::Debug for MongoStatsHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.get().fmt(f)
    }
}

impl MongoStatsHandle {
    /// A snapshot.
    pub fn get(&self) -> MongoStats {
        let c = &self.0;
        // ORDERING: Relaxed, see `Counters::add`.
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        MongoStats {
            delivered: l(&c.delivered),
            duplicates: l(&c.duplicates),
            retries: l(&c.retries),
            spooled: l(&c.spooled),
            replayed: l(&c.replayed),
            failed_permanently: l(&c.failed_permanently),
            spool_bytes: l(&c.spool_bytes),
            spool_corrupt_bytes: l(&c.spool_corrupt_bytes),
            index_failures: l(&c.index_failures),
            last_error: c.last_error.lock().clone(),
        }
    }
}

enum Job {
    Batch(Vec<RawDocumentBuf>),
    /// Acknowledge once every earlier batch is delivered or spooled; wake
    /// the flusher if it is not waiting.
    Flush(Sender<()>, Option<FlushWaker>),
    Stop,
}

/// A flush the flusher started and does not wait for.
enum PendingFlush {
    /// The writer's queue was full: the request is sent on a later poll.
    Unsent(FlushWaker),
    /// Sent: the writer acknowledges on this channel.
    Sent(Receiver<()>),
}

/// The audit-grade MongoDB recorder. See the crate docs.
pub struct MongoRecorder {
    jobs: Sender<Job>,
    /// Buffers of documents the writer is done with, to encode into again.
    spent: Receiver<Vec<Vec<u8>>>,
    spool: Arc<Mutex<Spool>>,
    counters: Arc<Counters>,
    writer: Option<JoinHandle<()>>,
    uri: RedactedUri,
    /// A flush the flusher started and polls (`start_flush`).
    pending_flush: Option<PendingFlush>,
    /// Tells the writer to spool instead of retrying (a late shutdown).
    stop_now: Arc<AtomicBool>,
    shutdown_timeout: Duration,
}

impl fmt::Debug for MongoRecorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MongoRecorder")
            .field("uri", &self.uri)
            .finish_non_exhaustive()
    }
}

impl MongoRecorder {
    /// Connects (lazily: an unreachable server is not an error here; its
    /// batches are retried and spooled) and starts the writer thread.
    ///
    /// Settings the connection string leaves unset get deliberate values:
    /// server monitoring every 500 ms (the driver's default 10 s made one
    /// retryable error stall a retry for 10 s), server selection and connect
    /// timeouts of 5 s, retryable writes on, app name `spanrec`.
    pub fn connect(uri: &str, options: MongoOptions) -> Result<MongoRecorder, MongoRecorderError> {
        let uri = RedactedUri::new(uri);
        if options.queue_batches == 0 || options.max_attempts == 0 || options.insert_batch_size == 0
        {
            return Err(MongoRecorderError::Option(
                "queue_batches, max_attempts and insert_batch_size must be at least 1".into(),
            ));
        }
        let mut client_options =
            ClientOptions::parse(uri.expose())
                .run()
                .map_err(|e| MongoRecorderError::Uri {
                    uri: uri.to_string(),
                    message: uri.scrub(&e.to_string()),
                })?;
        client_options
            .heartbeat_freq
            .get_or_insert(Duration::from_millis(500));
        client_options
            .server_selection_timeout
            .get_or_insert(Duration::from_secs(5));
        client_options
            .connect_timeout
            .get_or_insert(Duration::from_secs(5));
        client_options.retry_writes.get_or_insert(true);
        client_options
            .app_name
            .get_or_insert_with(|| "spanrec".into());
        let client = Client::with_options(client_options).map_err(|e| MongoRecorderError::Uri {
            uri: uri.to_string(),
            message: uri.scrub(&e.to_string()),
        })?;
        let collection = client
            .database(&options.database)
            .collection_with_options::<RawDocumentBuf>(
                &options.collection,
                CollectionOptions::builder()
                    .write_concern(options.write_concern.clone())
                    .build(),
            );
        let spool = Arc::new(Mutex::new(Spool::open(
            &options.spool_dir,
            options.spool_max_bytes,
        )?));
        let counters = Arc::new(Counters::default());
        counters
            .spool_bytes
            .store(spool.lock().bytes(), Ordering::Relaxed);
        let (jobs, rx) = bounded(options.queue_batches);
        // Two batches of spare buffers are enough to keep the flusher from
        // allocating; the writer drops buffers beyond that.
        let (spent_tx, spent) = bounded(2);
        let stop_now = Arc::new(AtomicBool::new(false));
        let shutdown_timeout = options.shutdown_timeout;
        let writer = Writer {
            collection,
            spent: spent_tx,
            options,
            jobs: rx,
            spool: spool.clone(),
            counters: counters.clone(),
            uri: uri.clone(),
            healthy: true,
            indexes_ready: false,
            last_index_attempt: None,
            last_probe: Instant::now(),
            stop_now: stop_now.clone(),
        };
        let writer = std::thread::Builder::new()
            .name("spanrec-mongo-writer".into())
            .spawn(move || writer.run())
            .map_err(MongoRecorderError::Spawn)?;
        Ok(MongoRecorder {
            jobs,
            spent,
            spool,
            counters,
            writer: Some(writer),
            uri,
            pending_flush: None,
            stop_now,
            shutdown_timeout,
        })
    }

    /// A handle on the counters that stays usable after the recorder is
    /// handed to a tracer.
    pub fn stats(&self) -> MongoStatsHandle {
        MongoStatsHandle(self.counters.clone())
    }

    fn fail(&self, n: u64, message: String) {
        self.counters.lost(n);
        *self.counters.last_error.lock() = Some(self.uri.scrub(&message));
    }

    fn wait_for_writer(&self) -> Result<(), RecorderError> {
        let (ack, done) = bounded(1);
        self.jobs
            .send(Job::Flush(ack, None))
            .map_err(|_| RecorderError::new("the MongoDB writer thread has stopped"))?;
        done.recv()
            .map_err(|_| RecorderError::new("the MongoDB writer thread has stopped"))
    }
}

impl Recorder for MongoRecorder {
    fn record(&mut self, batch: &Batch<'_>) -> Result<(), RecorderError> {
        let mut docs = Vec::with_capacity(batch.len());
        let mut buffers = self.spent.try_recv().unwrap_or_default();
        for span in batch.iter() {
            let doc = encode_span_into(span, batch.process(), buffers.pop().unwrap_or_default());
            if doc.as_bytes().len() > MAX_DOCUMENT_BYTES {
                self.fail(
                    1,
                    format!(
                        "span {:032x}/{:016x} encodes to {} bytes, over MongoDB's 16 MiB limit",
                        span.trace_id(),
                        span.span_id(),
                        doc.as_bytes().len()
                    ),
                );
                continue;
            }
            docs.push(doc);
        }
        if docs.is_empty() {
            return Ok(());
        }
        match self.jobs.try_send(Job::Batch(docs)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(Job::Batch(docs))) => {
                // The writer is behind (slow or unreachable database): keep
                // the flusher moving by putting the batch on disk.
                spool_and_count(&self.spool, &self.counters, &self.uri, &docs)
                    .map_err(RecorderError::new)
            }
            Err(_) => Err(RecorderError::new("the MongoDB writer thread has stopped")),
        }
    }

    /// Returns once every batch handed over before has been inserted or
    /// spooled.
    fn flush(&mut self) -> Result<(), RecorderError> {
        self.wait_for_writer()
    }

    /// Reports durability: a span counts as durable in the tracer's
    /// `Stats` once it is inserted with the write concern or synced into
    /// the spool, and as `Rejected` when the server refuses it for good.
    fn attach_ledger(&mut self, ledger: Ledger) -> bool {
        self.counters.ledger.set(ledger).is_ok()
    }

    /// The flusher does not wait for the writer (which may be retrying
    /// an insert for seconds): it sends the flush request and keeps
    /// draining rings; the writer wakes it when every earlier batch is
    /// delivered or spooled.
    fn start_flush(&mut self, waker: FlushWaker) -> Option<Result<(), RecorderError>> {
        self.pending_flush = Some(PendingFlush::Unsent(waker));
        self.poll_flush()
    }

    fn poll_flush(&mut self) -> Option<Result<(), RecorderError>> {
        let stopped = || {
            Some(Err(RecorderError::new(
                "the MongoDB writer thread has stopped",
            )))
        };
        match self.pending_flush.take()? {
            PendingFlush::Unsent(waker) => {
                let (ack, done) = bounded(1);
                match self.jobs.try_send(Job::Flush(ack, Some(waker))) {
                    Ok(()) => {
                        self.pending_flush = Some(PendingFlush::Sent(done));
                        None
                    }
                    Err(TrySendError::Full(Job::Flush(_, Some(waker)))) => {
                        // The writer's queue is full: ask again on the next
                        // pass (which the queue draining does not signal:
                        // the flusher's own timer brings it).
                        self.pending_flush = Some(PendingFlush::Unsent(waker));
                        None
                    }
                    Err(_) => stopped(),
                }
            }
            PendingFlush::Sent(done) => match done.try_recv() {
                Ok(()) => Some(Ok(())),
                Err(TryRecvError::Empty) => {
                    self.pending_flush = Some(PendingFlush::Sent(done));
                    None
                }
                Err(TryRecvError::Disconnected) => stopped(),
            },
        }
    }

    fn shutdown(&mut self) -> Result<(), RecorderError> {
        self.pending_flush = None;
        let (ack, done) = bounded(1);
        let flushed = match self.jobs.send(Job::Flush(ack, None)) {
            Err(_) => Err(RecorderError::new("the MongoDB writer thread has stopped")),
            Ok(()) => match done.recv_timeout(self.shutdown_timeout) {
                Ok(()) => Ok(()),
                Err(_) => {
                    // Still retrying: spool the rest instead (durable,
                    // replayed at the next start), then stop.
                    // ORDERING: Relaxed: a hint the writer polls; the
                    // acknowledgement below is the hand-off.
                    self.stop_now.store(true, Ordering::Relaxed);
                    let _ = done.recv();
                    Err(RecorderError::new(format!(
                        "shutdown: the database did not take every batch within {:?}; \
                         the rest is in the spool, replayed at the next start",
                        self.shutdown_timeout
                    )))
                }
            },
        };
        let _ = self.jobs.send(Job::Stop);
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
        flushed
    }
}

impl Drop for MongoRecorder {
    fn drop(&mut self) {
        if self.writer.is_some() {
            let _ = self.shutdown();
        }
    }
}

/// Appends a batch to the spool and counts it as spooled; when the spool
/// refuses it, counts the documents as failed for good, records the error
/// and returns its message.
fn spool_and_count(
    spool: &Mutex<Spool>,
    counters: &Counters,
    uri: &RedactedUri,
    docs: &[RawDocumentBuf],
) -> Result<(), String> {
    let n = docs.len() as u64;
    let mut spool = spool.lock();
    match spool.append(docs) {
        Ok(()) => {
            Counters::add(&counters.spooled, n);
            counters.durable(n);
            // ORDERING: Relaxed, see `Counters::add`.
            counters.spool_bytes.store(spool.bytes(), Ordering::Relaxed);
            Ok(())
        }
        Err(e) => {
            drop(spool);
            let message = format!("{n} spans lost: {e}");
            counters.lost(n);
            *counters.last_error.lock() = Some(uri.scrub(&message));
            Err(message)
        }
    }
}

/// How an insert failed.
enum Failure {
    /// Worth retrying: network, not-primary, timeouts, write-concern
    /// errors, `RetryableWriteError` labels.
    Transient(String),
    /// Retrying cannot help (auth, validation, bad document).
    Permanent(String),
}

struct Writer {
    collection: Collection<RawDocumentBuf>,
    /// Where the buffers of inserted (or spooled) documents go back to the
    /// recorder for reuse.
    spent: Sender<Vec<Vec<u8>>>,
    options: MongoOptions,
    jobs: Receiver<Job>,
    spool: Arc<Mutex<Spool>>,
    counters: Arc<Counters>,
    uri: RedactedUri,
    /// The last insert or probe succeeded.
    healthy: bool,
    indexes_ready: bool,
    /// When index creation was last tried (it is retried, never awaited).
    last_index_attempt: Option<Instant>,
    last_probe: Instant,
    /// Set by a shutdown past its timeout: spool instead of retrying.
    stop_now: Arc<AtomicBool>,
}

/// Server error codes that mean "try again" (network, elections, shutdown,
/// timeouts), from the MongoDB retryable-writes specification.
const TRANSIENT_CODES: &[i32] = &[
    6, 7, 50, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436, 63, 150, 13388, 234,
];
const DUPLICATE_KEY: i32 = 11000;
/// `Unauthorized`, `AuthenticationFailed`.
const AUTH_CODES: &[i32] = &[13, 18];

impl Writer {
    fn run(mut self) {
        loop {
            let spooled = !self.spool.lock().is_empty();
            if spooled && (self.healthy || self.last_probe.elapsed() >= self.options.probe_interval)
            {
                // Replay one segment (a single insert attempt per batch while
                // the database is down: it doubles as the recovery probe),
                // then serve the queue before the next one.
                self.replay_oldest();
                self.last_probe = Instant::now();
            }
            let wait = if spooled && self.healthy {
                Duration::ZERO
            } else {
                self.options.probe_interval
            };
            match self.jobs.recv_timeout(wait) {
                Ok(Job::Batch(docs)) => self.write_or_spool(docs),
                Ok(Job::Flush(ack, waker)) => {
                    let _ = ack.send(());
                    if let Some(waker) = waker {
                        waker.wake();
                    }
                }
                Ok(Job::Stop) | Err(RecvTimeoutError::Disconnected) => {
                    self.drain_spool_before_exit();
                    return;
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
    }

    /// At shutdown, replays what the spool holds while the database keeps
    /// answering; whatever is left stays on disk for the next start.
    fn drain_spool_before_exit(&mut self) {
        // ORDERING: Relaxed, see `shutdown`.
        while self.healthy
            && !self.stop_now.load(Ordering::Relaxed)
            && !self.spool.lock().is_empty()
        {
            let before = self.spool.lock().bytes();
            self.replay_oldest();
            if self.spool.lock().bytes() >= before {
                return;
            }
        }
    }

    fn note_error(&self, message: &str) {
        *self.counters.last_error.lock() = Some(self.uri.scrub(message));
    }

    fn write_or_spool(&mut self, docs: Vec<RawDocumentBuf>) {
        self.deliver_or_spool(&docs);
        // Documents larger than this are rare; their buffers are freed
        // rather than kept around.
        const REUSED_BYTES: usize = 64 * 1024;
        let buffers = docs
            .into_iter()
            .map(RawDocumentBuf::into_bytes)
            .filter(|b| b.capacity() <= REUSED_BYTES)
            .collect();
        // Full means the recorder has spares already.
        let _ = self.spent.try_send(buffers);
    }

    fn deliver_or_spool(&mut self, docs: &[RawDocumentBuf]) {
        // While the database is known to be down and the spool is not
        // empty, go straight to disk; the replay loop probes for recovery.
        // ORDERING: Relaxed, see `shutdown`.
        let known_down = (!self.healthy && !self.spool.lock().is_empty())
            || self.stop_now.load(Ordering::Relaxed);
        if !known_down {
            let size = self.options.insert_batch_size;
            let attempts = self.options.max_attempts;
            let mut done = 0;
            while done < docs.len() {
                let end = (done + size).min(docs.len());
                if !self.deliver(&docs[done..end], false, attempts) {
                    break;
                }
                done = end;
            }
            // Spool what is left; delivered chunks need not be written twice.
            self.spool_batch(&docs[done..]);
        } else {
            self.spool_batch(docs);
        }
    }

    fn spool_batch(&mut self, docs: &[RawDocumentBuf]) {
        if docs.is_empty() {
            return;
        }
        // A failure is already counted and recorded as the last error.
        let _ = spool_and_count(&self.spool, &self.counters, &self.uri, docs);
    }

    /// Replays the oldest spool segment; deletes it once all its batches
    /// are delivered.
    fn replay_oldest(&mut self) {
        let segment = match self.spool.lock().oldest() {
            Ok(Some(segment)) => segment,
            Ok(None) => return,
            Err(e) => {
                self.note_error(&e.to_string());
                self.healthy = false;
                return;
            }
        };
        if segment.corrupt_bytes > 0 {
            Counters::add(&self.counters.spool_corrupt_bytes, segment.corrupt_bytes);
            self.note_error(&format!(
                "spool segment {} had {} corrupt bytes (skipped; the valid records around them are replayed)",
                segment.path.display(),
                segment.corrupt_bytes
            ));
        }
        // Batches delivered before (this run, or before a restart: the
        // spool's durable progress) are skipped, not delivered and counted
        // again.
        for (i, docs) in segment.batches.iter().enumerate().skip(segment.delivered) {
            let attempts = if self.healthy {
                self.options.max_attempts
            } else {
                1
            };
            if !self.deliver(docs, true, attempts) {
                // Still down: keep the segment, try again later from here.
                return;
            }
            if i + 1 < segment.batches.len() {
                if let Err(e) = self.spool.lock().mark_delivered(&segment, i + 1) {
                    // Without progress on disk a restart would deliver
                    // these batches again (as duplicates); say so.
                    self.note_error(&e.to_string());
                }
            }
        }
        let mut spool = self.spool.lock();
        if let Err(e) = spool.remove(&segment) {
            drop(spool);
            self.note_error(&e.to_string());
            return;
        }
        self.counters
            .spool_bytes
            .store(spool.bytes(), Ordering::Relaxed);
    }

    /// Creates the indexes if they are not there yet — best effort: a
    /// failure is counted and noted, never blocks an insert, and is tried
    /// again after `probe_interval`.
    fn try_indexes(&mut self) {
        let due = self
            .last_index_attempt
            .is_none_or(|at| at.elapsed() >= self.options.probe_interval);
        if self.indexes_ready || !due {
            return;
        }
        self.last_index_attempt = Some(Instant::now());
        if let Err(e) = self.ensure_indexes() {
            Counters::add(&self.counters.index_failures, 1);
            self.note_error(&format!(
                "indexes not created (inserts go on without them; retried): {e}"
            ));
        }
    }

    fn ensure_indexes(&mut self) -> Result<(), DriverError> {
        if self.indexes_ready {
            return Ok(());
        }
        let mut indexes = vec![IndexModel::builder()
            .keys(doc! { "trace_id": 1 })
            .options(IndexOptions::builder().name("trace_id".to_string()).build())
            .build()];
        let mut start = IndexOptions::builder().name("start".to_string()).build();
        if let Some(retention) = self.options.retention {
            start.expire_after = Some(retention);
            start.name = Some("start_ttl".into());
        }
        indexes.push(
            IndexModel::builder()
                .keys(doc! { "start": 1 })
                .options(start)
                .build(),
        );
        self.collection.create_indexes(indexes).run()?;
        self.indexes_ready = true;
        Ok(())
    }

    /// Inserts one batch, retrying transient failures with backoff. Returns
    /// false when the database stayed unreachable (the caller spools).
    fn deliver(&mut self, docs: &[RawDocumentBuf], replay: bool, attempts: u32) -> bool {
        let n = docs.len() as u64;
        let mut backoff = self.options.initial_backoff;
        for attempt in 0..attempts {
            // ORDERING: Relaxed, see `shutdown`.
            if attempt > 0 && self.stop_now.load(Ordering::Relaxed) {
                // A late shutdown: the caller spools the batch.
                return false;
            }
            if attempt > 0 {
                Counters::add(&self.counters.retries, 1);
                std::thread::sleep(jitter(backoff));
                backoff = (backoff * 2).min(self.options.max_backoff);
            }
            self.try_indexes();
            let result = self
                .collection
                .insert_many(docs)
                .ordered(false)
                .run()
                .map(|_| ());
            let failure = match result {
                Ok(()) => {
                    self.delivered(n, 0, replay);
                    return true;
                }
                Err(e) => match classify(&e) {
                    Classified::Partial { duplicates, failed } => {
                        if failed > 0 {
                            if replay {
                                self.counters.lost_after_spool(failed);
                            } else {
                                self.counters.lost(failed);
                            }
                            self.note_error(&e.to_string());
                        }
                        self.delivered(n - failed, duplicates, replay);
                        return true;
                    }
                    Classified::Failure(f) => f,
                },
            };
            match failure {
                Failure::Transient(message) => {
                    self.note_error(&message);
                    self.healthy = false;
                }
                Failure::Permanent(message) => {
                    if replay {
                        self.counters.lost_after_spool(n);
                    } else {
                        self.counters.lost(n);
                    }
                    self.note_error(&message);
                    return true;
                }
            }
        }
        false
    }

    fn delivered(&mut self, n: u64, duplicates: u64, replay: bool) {
        self.healthy = true;
        Counters::add(&self.counters.delivered, n);
        // Replayed documents became durable when they were spooled.
        if !replay {
            self.counters.durable(n);
        }
        Counters::add(&self.counters.duplicates, duplicates);
        if replay {
            Counters::add(&self.counters.replayed, n);
        }
    }
}

enum Classified {
    /// The insert ran; some documents hit errors: duplicates (delivered
    /// earlier) and `failed` others refused for good.
    Partial {
        duplicates: u64,
        failed: u64,
    },
    Failure(Failure),
}

fn classify(e: &DriverError) -> Classified {
    let message = e.to_string();
    if let ErrorKind::InsertMany(im) = &*e.kind {
        if im.write_concern_error.is_some() {
            // Written but not confirmed durable: retry; what was written
            // comes back as duplicates.
            return Classified::Failure(Failure::Transient(message));
        }
        if let Some(errors) = &im.write_errors {
            if errors.iter().any(|w| AUTH_CODES.contains(&w.code)) {
                // Not allowed now, perhaps allowed after an operator's fix:
                // retried and spooled, like an outage.
                return Classified::Failure(Failure::Transient(message));
            }
            let duplicates = errors.iter().filter(|w| w.code == DUPLICATE_KEY).count() as u64;
            let failed = errors.len() as u64 - duplicates;
            return Classified::Partial { duplicates, failed };
        }
    }
    // Authentication and authorization failures are an operator's to fix
    // (credentials rotated, a role changed) and pass: spooled and retried,
    // never dropped.
    let auth = matches!(&*e.kind, ErrorKind::Authentication { .. })
        || matches!(&*e.kind, ErrorKind::Command(c) if AUTH_CODES.contains(&c.code))
        || matches!(
            &*e.kind,
            ErrorKind::Write(mongodb::error::WriteFailure::WriteError(w)) if AUTH_CODES.contains(&w.code)
        );
    let transient = auth
        || e.contains_label("RetryableWriteError")
        || e.contains_label("NetworkError")
        || matches!(
            &*e.kind,
            ErrorKind::Io(_)
                | ErrorKind::ConnectionPoolCleared { .. }
                | ErrorKind::ServerSelection { .. }
                | ErrorKind::InvalidResponse { .. }
                | ErrorKind::Shutdown
        )
        || matches!(&*e.kind, ErrorKind::Command(c) if TRANSIENT_CODES.contains(&c.code))
        || matches!(
            &*e.kind,
            ErrorKind::Write(mongodb::error::WriteFailure::WriteConcernError(_))
        );
    if transient {
        Classified::Failure(Failure::Transient(message))
    } else {
        Classified::Failure(Failure::Permanent(message))
    }
}

/// `d` scaled by a factor in [0.5, 1.5), from a cheap per-call hash.
fn jitter(d: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    let unit = (h.finish() % 1000) as f64 / 1000.0;
    d.mul_f64(0.5 + unit)
}
