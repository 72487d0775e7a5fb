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
//!
//! With `MongoOptions::write_ahead` every batch takes the spool path first
//! (synced before it is sent) and the writer inserts it from there.

use crate::chain::{leaf_hash, ChainPos, ChainShared, ChainState, Hash};
use crate::encode::{encode_span_at, MAX_DOCUMENT_BYTES};
use crate::mongo_stats::{Counters, MongoStatsHandle};
use crate::options::{MongoOptions, MongoRecorderError, MAX_WAIT};
use crate::redact::RedactedUri;
use crate::spool::Spool;
use crate::writer::{span_count, spool_and_count, Job, Writer};
use bson::raw::RawDocumentBuf;
use crossbeam_channel::{bounded, Receiver, Sender, TryRecvError, TrySendError};
use mongodb::options::{ClientOptions, CollectionOptions};
use mongodb::sync::Client;
use parking_lot::Mutex;
use spanrec::{Batch, FlushWaker, Ledger, Recorder, RecorderError};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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
    /// `MongoOptions::write_ahead`.
    write_ahead: bool,
    /// Write-ahead: the buffers of the last spooled batch, to encode into.
    spare: Vec<Vec<u8>>,
    /// The chain this recorder extends (`MongoOptions::chain`).
    chain: Option<Arc<ChainShared>>,
    checkpoint_every: u64,
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
        crate::check_names(&options.database, &options.collection)?;
        if options.queue_batches == 0 || options.max_attempts == 0 || options.insert_batch_size == 0
        {
            return Err(MongoRecorderError::Option(
                "queue_batches, max_attempts and insert_batch_size must be at least 1".into(),
            ));
        }
        if options.initial_backoff > options.max_backoff
            || options.max_backoff > MAX_WAIT
            || options.probe_interval > MAX_WAIT
        {
            return Err(MongoRecorderError::Option(format!(
                "initial_backoff ({:?}) must be at most max_backoff ({:?}), and max_backoff \
                 and probe_interval ({:?}) at most 1 h",
                options.initial_backoff, options.max_backoff, options.probe_interval
            )));
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
        // After the spool's lock: one process per spool reads its chain head.
        let chain = options.chain.then(|| {
            let (state, start) = ChainState::start(
                &options.spool_dir,
                options.chain_key.clone(),
                options.checkpoint_file.clone(),
            );
            Arc::new(ChainShared {
                state: parking_lot::Mutex::new(state),
                pending: parking_lot::Mutex::new(vec![start]),
            })
        });
        let checkpoint_every = options.checkpoint_every.max(1);
        let chain_collection = client
            .database(&options.database)
            .collection_with_options::<RawDocumentBuf>(
                &crate::chain::collection_name(&options.collection),
                CollectionOptions::builder()
                    .write_concern(options.write_concern.clone())
                    .build(),
            );
        let (jobs, rx) = bounded(options.queue_batches);
        // Two batches of spare buffers are enough to keep the flusher from
        // allocating; the writer drops buffers beyond that.
        let (spent_tx, spent) = bounded(2);
        let stop_now = Arc::new(AtomicBool::new(false));
        let shutdown_timeout = options.shutdown_timeout;
        let write_ahead = options.write_ahead;
        let writer = Writer {
            collection,
            chain_collection,
            chain: chain.clone(),
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
            write_ahead,
            spare: Vec::new(),
            chain,
            checkpoint_every,
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
        let mut docs = Vec::with_capacity(batch.len() + 1);
        let mut buffers = if self.spare.is_empty() {
            self.spent.try_recv().unwrap_or_default()
        } else {
            std::mem::take(&mut self.spare)
        };
        let chain = self.chain.clone();
        let mut chain = chain.as_ref().map(|c| c.state.lock());
        let seq = chain.as_ref().map_or(0, |c| c.next_seq());
        let mut pos = 0u32;
        let mut oversized = 0u64;
        for span in batch.iter() {
            let at = chain.as_ref().map(|c| ChainPos {
                chain: &c.id,
                seq,
                pos,
            });
            let doc = encode_span_at(span, batch.process(), at, buffers.pop().unwrap_or_default());
            if doc.as_bytes().len() > MAX_DOCUMENT_BYTES {
                oversized += 1;
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
            pos += 1;
            docs.push(doc);
        }
        if let Some(c) = chain.as_mut() {
            // What went missing since the previous record: the tracer's
            // drops by reason (its `rejected` are the recorder's own, named
            // by gap records or, for oversized spans, here).
            let mut drops = [0u64; 6];
            if let Some(d) = batch.dropped() {
                let now = [
                    d.ring_full,
                    d.block_timeout,
                    d.unsampled,
                    d.shutdown,
                    d.recorder_error,
                ];
                for (i, n) in now.into_iter().enumerate() {
                    drops[i] = n.saturating_sub(c.named_drops[i]);
                    c.named_drops[i] = c.named_drops[i].max(n);
                }
            }
            drops[5] = oversized;
            if !docs.is_empty() || drops.iter().any(|&n| n > 0) {
                let leaves: Vec<Hash> = docs.iter().map(|d| leaf_hash(d.as_bytes())).collect();
                docs.push(c.batch(&leaves, drops));
                if c.next_seq() % self.checkpoint_every == 0 {
                    if let Err(e) = c.checkpoint() {
                        *self.counters.last_error.lock() =
                            Some(format!("chain checkpoint not written: {e}"));
                    }
                }
            }
        }
        drop(chain);
        if docs.is_empty() {
            return Ok(());
        }
        if self.write_ahead {
            let appended = self.spool.lock().append(&docs);
            match appended {
                Ok(()) => {
                    let n = span_count(&docs);
                    Counters::add(&self.counters.spooled, n);
                    self.counters.durable(n);
                    self.counters
                        .spool_bytes
                        .store(self.spool.lock().bytes(), Ordering::Relaxed);
                    // Full: the writer has work queued and replays anyway.
                    let _ = self.jobs.try_send(Job::Spooled);
                    self.spare = docs.into_iter().map(RawDocumentBuf::into_bytes).collect();
                    return Ok(());
                }
                Err(e) => {
                    Counters::add(&self.counters.write_ahead_bypassed, span_count(&docs));
                    *self.counters.last_error.lock() = Some(self.uri.scrub(&format!(
                        "write-ahead: {} spans sent without the spool: {e}",
                        docs.len()
                    )));
                }
            }
        }
        match self.jobs.try_send(Job::Batch(docs)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(Job::Batch(docs))) => {
                // The writer is behind (slow or unreachable database): keep
                // the flusher moving by putting the batch on disk.
                // A batch the spool refuses is counted as rejected through
                // the ledger (and named in a gap record): accepted, then
                // lost — not a recorder error, which would count it twice.
                let _ = spool_and_count(
                    &self.spool,
                    &self.counters,
                    &self.uri,
                    &docs,
                    true,
                    self.chain.as_deref(),
                );
                Ok(())
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
        if let Some(c) = &self.chain {
            if let Err(e) = c.state.lock().checkpoint() {
                *self.counters.last_error.lock() =
                    Some(format!("chain checkpoint not written: {e}"));
            }
        }
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
