//! The writer thread of a `MongoRecorder`: inserts batches with retries,
//! spools what the database cannot take, replays the spool, finishes
//! flushes, and reports what became durable.

use crate::redact::RedactedUri;
use crate::spool::Spool;
use bson::doc;
use bson::raw::RawDocumentBuf;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use mongodb::error::Error as DriverError;
use mongodb::options::IndexOptions;
use mongodb::sync::Collection;
use mongodb::IndexModel;
use parking_lot::Mutex;
use spanrec::FlushWaker;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::chain::{is_record, ChainShared};
use crate::classify::{classify, is_duplicate_key, jitter, Classified, Failure};
use crate::duplicates::collisions;
use crate::mongo_stats::Counters;
use crate::options::MongoOptions;

/// What the recorder asks of its writer thread, in order.
pub(crate) enum Job {
    Batch(Vec<RawDocumentBuf>),
    /// Acknowledge once every earlier batch is delivered or spooled; wake
    /// the flusher if it is not waiting.
    Flush(Sender<()>, Option<FlushWaker>),
    /// Write-ahead: a batch is in the spool; replay it.
    Spooled,
    Stop,
}

/// Appends a batch to the spool and counts it as spooled; when the spool
/// refuses it, counts the documents as failed for good, records the error
/// and returns its message.
///
/// `newly_durable`: false for documents the ledger counted as durable
/// before (spooled once, replayed, and spooled again).
pub(crate) fn spool_and_count(
    spool: &Mutex<Spool>,
    counters: &Counters,
    uri: &RedactedUri,
    docs: &[RawDocumentBuf],
    newly_durable: bool,
    chain: Option<&ChainShared>,
) -> Result<(), String> {
    let n = span_count(docs);
    let mut spool = spool.lock();
    match spool.append(docs) {
        Ok(()) => {
            Counters::add(&counters.spooled, n);
            if newly_durable {
                counters.durable(n);
            }
            // ORDERING: Relaxed, see `Counters::add`.
            counters.spool_bytes.store(spool.bytes(), Ordering::Relaxed);
            Ok(())
        }
        Err(e) => {
            drop(spool);
            let message = format!("{n} spans lost: {e}");
            if newly_durable {
                counters.lost(n);
            } else {
                counters.lost_after_spool(n);
            }
            if let Some(chain) = chain {
                chain.gap_for(docs, "rejected");
            }
            *counters.last_error.lock() = Some(uri.scrub(&message));
            Err(message)
        }
    }
}

/// Spans in a batch (its chain record, if any, is not one).
pub(crate) fn span_count(docs: &[RawDocumentBuf]) -> u64 {
    docs.iter().filter(|d| !is_record(d)).count() as u64
}

/// How many documents of a batch are spans: its chain record, if any, is
/// last (`docs[spans_end(docs)..]` are records).
fn spans_end(docs: &[RawDocumentBuf]) -> usize {
    docs.len() - docs.iter().rev().take_while(|d| is_record(d)).count()
}

pub(crate) struct Writer {
    pub(crate) collection: Collection<RawDocumentBuf>,
    /// `<collection>.chain`: chain records.
    pub(crate) chain_collection: Collection<RawDocumentBuf>,
    pub(crate) chain: Option<Arc<ChainShared>>,
    /// Where the buffers of inserted (or spooled) documents go back to the
    /// recorder for reuse.
    pub(crate) spent: Sender<Vec<Vec<u8>>>,
    pub(crate) options: MongoOptions,
    pub(crate) jobs: Receiver<Job>,
    pub(crate) spool: Arc<Mutex<Spool>>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) uri: RedactedUri,
    /// The last insert or probe succeeded.
    pub(crate) healthy: bool,
    pub(crate) indexes_ready: bool,
    /// When index creation was last tried (it is retried, never awaited).
    pub(crate) last_index_attempt: Option<Instant>,
    pub(crate) last_probe: Instant,
    /// Set by a shutdown past its timeout: spool instead of retrying.
    pub(crate) stop_now: Arc<AtomicBool>,
}

impl Writer {
    pub(crate) fn run(mut self) {
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
            self.deliver_pending_records();
            match self.jobs.recv_timeout(wait) {
                Ok(Job::Batch(docs)) => self.write_or_spool(docs),
                Ok(Job::Spooled) => {}
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
        self.deliver_pending_records();
        // Records the database did not take go to the spool, for the next
        // start.
        if let Some(chain) = self.chain.clone() {
            let left = std::mem::take(&mut *chain.pending.lock());
            if !left.is_empty() {
                self.spool_records(&left);
            }
        }
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
        if known_down {
            self.spool_batch(docs);
            return;
        }
        // The batch's chain record (last) goes in after its documents.
        let spans = spans_end(docs);
        let size = self.options.insert_batch_size;
        let attempts = self.options.max_attempts;
        let mut done = 0;
        while done < spans {
            let end = (done + size).min(spans);
            if !self.deliver(&docs[done..end], false, attempts) {
                // Spool what is left (with the record); delivered chunks
                // need not be written twice.
                self.spool_batch(&docs[done..]);
                return;
            }
            done = end;
        }
        self.deliver_or_spool_records(&docs[spans..]);
    }

    fn spool_batch(&mut self, docs: &[RawDocumentBuf]) {
        if docs.is_empty() {
            return;
        }
        // A failure is already counted and recorded as the last error.
        let _ = spool_and_count(
            &self.spool,
            &self.counters,
            &self.uri,
            docs,
            true,
            self.chain.as_deref(),
        );
    }

    /// Chain records alone (no spans: nothing to count) into the spool.
    fn spool_records(&mut self, records: &[RawDocumentBuf]) {
        if let Err(e) = self.spool.lock().append(records) {
            self.note_error(&format!(
                "{} chain records lost (the chain shows a break): {e}",
                records.len()
            ));
        }
    }

    /// Inserts chain records into `<collection>.chain`; spools those the
    /// database does not take.
    fn deliver_or_spool_records(&mut self, records: &[RawDocumentBuf]) {
        for (i, record) in records.iter().enumerate() {
            if !self.deliver_record(record, self.options.max_attempts) {
                self.spool_records(&records[i..]);
                return;
            }
        }
    }

    /// The start record and gap records the recorder and this writer
    /// queued: inserted now, or kept for the next pass while the database
    /// is down.
    fn deliver_pending_records(&mut self) {
        let Some(chain) = self.chain.clone() else {
            return;
        };
        let pending = std::mem::take(&mut *chain.pending.lock());
        for (i, record) in pending.iter().enumerate() {
            // One attempt: they stay queued and are tried again on the
            // next pass (a writer started while the database is down does
            // not sit in retries before its first batch).
            if !self.healthy || !self.deliver_record(record, 1) {
                let mut queue = chain.pending.lock();
                let later = std::mem::take(&mut *queue);
                queue.extend(pending[i..].iter().cloned());
                queue.extend(later);
                return;
            }
        }
    }

    /// Before insert attempt `attempt` (0-based): after the first, counts
    /// a retry and sleeps the jittered `backoff`, then doubles it (up to
    /// `max_backoff`). False when a late shutdown says to stop retrying.
    fn before_attempt(&self, attempt: u32, backoff: &mut Duration) -> bool {
        if attempt == 0 {
            return true;
        }
        // ORDERING: Relaxed, see `shutdown`.
        if self.stop_now.load(Ordering::Relaxed) {
            return false;
        }
        Counters::add(&self.counters.retries, 1);
        std::thread::sleep(jitter(*backoff));
        *backoff = backoff.saturating_mul(2).min(self.options.max_backoff);
        true
    }

    /// One chain record, retried like a batch. A duplicate key is the same
    /// record (records are deterministic bytes, written once).
    fn deliver_record(&mut self, record: &RawDocumentBuf, attempts: u32) -> bool {
        let mut backoff = self.options.initial_backoff;
        for attempt in 0..attempts {
            if !self.before_attempt(attempt, &mut backoff) {
                return false;
            }
            let result = self.chain_collection.insert_one(record).run();
            match result {
                Ok(_) => {
                    self.healthy = true;
                    return true;
                }
                Err(e) => match classify(&e) {
                    Classified::Partial { .. } => return true,
                    _ if is_duplicate_key(&e) => return true,
                    Classified::Failure(Failure::Permanent(m)) => {
                        self.note_error(&format!(
                            "chain record refused (the chain shows a break): {m}"
                        ));
                        return true;
                    }
                    Classified::Failure(Failure::Transient(m)) => {
                        self.note_error(&m);
                        self.healthy = false;
                    }
                },
            }
        }
        false
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
            let spans = spans_end(docs);
            if spans > 0 && !self.deliver(&docs[..spans], true, attempts) {
                // Still down: keep the segment, try again later from here.
                return;
            }
            self.deliver_or_spool_records(&docs[spans..]);
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
        // `trace_id` for one trace; `start_ns` for the time ranges and
        // newest-first pages of `spanrec find`, `stats` and `export`,
        // `finish_ns` for `spanrec tail`'s polls (without them each is a
        // scan of the whole collection).
        let by = |key: &str| {
            IndexModel::builder()
                .keys(doc! { key: 1 })
                .options(IndexOptions::builder().name(key.to_string()).build())
                .build()
        };
        let mut indexes = vec![by("trace_id"), by("start_ns"), by("finish_ns")];
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
        self.deliver_checked(docs, replay, attempts, true)
    }

    /// [`deliver`](Self::deliver); `resolve`: a collision is re-keyed
    /// (false for documents re-keyed already).
    fn deliver_checked(
        &mut self,
        docs: &[RawDocumentBuf],
        replay: bool,
        attempts: u32,
        resolve: bool,
    ) -> bool {
        let n = docs.len() as u64;
        let mut backoff = self.options.initial_backoff;
        for attempt in 0..attempts {
            if !self.before_attempt(attempt, &mut backoff) {
                // A late shutdown: the caller spools the batch.
                return false;
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
                        // The same span delivered before, or a different
                        // one under its `_id`? (See `duplicates.rs`.)
                        let collided = if duplicates.is_empty() {
                            Vec::new()
                        } else {
                            match collisions(&self.collection, docs, &duplicates) {
                                Ok(c) => c,
                                Err(e) => {
                                    // Unchecked: insert again (what landed
                                    // now comes back as duplicates).
                                    self.note_error(&e.to_string());
                                    self.healthy = false;
                                    continue;
                                }
                            }
                        };
                        let failed_docs: Vec<RawDocumentBuf> = failed
                            .iter()
                            .filter_map(|&i| docs.get(i).cloned())
                            .collect();
                        let failed = failed.len() as u64;
                        if failed > 0 {
                            self.lose(failed, replay);
                            self.note_error(&e.to_string());
                            if let Some(chain) = &self.chain {
                                chain.gap_for(&failed_docs, "rejected");
                            }
                        }
                        let collided_n = collided.len() as u64;
                        self.delivered(
                            n - failed - collided_n,
                            duplicates.len() as u64 - collided_n,
                            replay,
                        );
                        if !collided.is_empty() {
                            self.store_collisions(collided, replay, resolve);
                        }
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
                    self.lose(n, replay);
                    self.note_error(&message);
                    if let Some(chain) = &self.chain {
                        chain.gap_for(docs, "rejected");
                    }
                    return true;
                }
            }
        }
        false
    }

    /// `n` documents refused for good (durable already when replayed).
    fn lose(&self, n: u64, replay: bool) {
        if replay {
            self.counters.lost_after_spool(n);
        } else {
            self.counters.lost(n);
        }
    }

    /// Stores spans that collided with a different stored span under their
    /// disambiguated `_id`s; spools them if the database stays down.
    fn store_collisions(
        &mut self,
        collided: Vec<Result<RawDocumentBuf, ()>>,
        replay: bool,
        resolve: bool,
    ) {
        let (docs, unkeyed): (Vec<_>, Vec<_>) = collided.into_iter().partition(Result::is_ok);
        let docs: Vec<RawDocumentBuf> = docs.into_iter().flatten().collect();
        Counters::add(
            &self.counters.collisions,
            (docs.len() + unkeyed.len()) as u64,
        );
        if !resolve || !unkeyed.is_empty() {
            // A collision of a disambiguated `_id` (a stored document that
            // is not what its own `_id` says), or a document not from this
            // encoder: nothing left to key it by.
            let n = if resolve {
                unkeyed.len()
            } else {
                unkeyed.len() + docs.len()
            };
            self.lose(n as u64, replay);
            self.note_error(&format!(
                "{n} spans collided with different stored spans and could not be re-keyed"
            ));
            if !resolve {
                return;
            }
        }
        if docs.is_empty() {
            return;
        }
        let attempts = self.options.max_attempts;
        if !self.deliver_checked(&docs, replay, attempts, false) {
            if replay {
                // Durable already (counted when first spooled).
                let _ = spool_and_count(
                    &self.spool,
                    &self.counters,
                    &self.uri,
                    &docs,
                    false,
                    self.chain.as_deref(),
                );
            } else {
                self.spool_batch(&docs);
            }
        }
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
