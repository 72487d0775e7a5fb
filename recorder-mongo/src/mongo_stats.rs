//! What happened to the documents: `MongoStats`, the counters the recorder
//! and its writer share, and what they report to the tracer's ledger.

use parking_lot::Mutex;
use spanrec::Ledger;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// What happened to the documents a [`MongoRecorder`] was given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MongoStats {
    /// Documents confirmed in the collection (inserted, or already there:
    /// see `duplicates`), directly or from the spool.
    pub delivered: u64,
    /// Of `delivered`: documents whose insert hit a duplicate key and whose
    /// stored copy has the same content hash, i.e. an earlier attempt had
    /// already written them.
    pub duplicates: u64,
    /// Documents whose `_id` was taken by a *different* stored span (a
    /// forked process repeating ids, or chance): stored under a
    /// disambiguated `_id` (the 24 id bytes + the 8-byte content hash), and
    /// counted in `delivered` once stored.
    pub collisions: u64,
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
    /// With `write_ahead`: documents the spool refused (a full disk), sent
    /// the usual way instead (durable once inserted).
    pub write_ahead_bypassed: u64,
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
pub(crate) struct Counters {
    pub(crate) delivered: AtomicU64,
    pub(crate) duplicates: AtomicU64,
    pub(crate) collisions: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) spooled: AtomicU64,
    pub(crate) replayed: AtomicU64,
    pub(crate) failed_permanently: AtomicU64,
    pub(crate) write_ahead_bypassed: AtomicU64,
    pub(crate) spool_bytes: AtomicU64,
    pub(crate) spool_corrupt_bytes: AtomicU64,
    pub(crate) index_failures: AtomicU64,
    pub(crate) last_error: Mutex<Option<String>>,
    /// The tracer's ledger, once attached: what becomes durable (inserted
    /// with the write concern, or synced into the spool) and what is lost.
    pub(crate) ledger: std::sync::OnceLock<Ledger>,
}

impl Counters {
    /// `n` documents are durable: in the collection, or in the spool.
    pub(crate) fn durable(&self, n: u64) {
        if let Some(l) = self.ledger.get() {
            l.durable(n);
        }
    }

    /// `n` documents, not durable yet, are lost for good (counted in
    /// `failed_permanently` too).
    pub(crate) fn lost(&self, n: u64) {
        Counters::add(&self.failed_permanently, n);
        if let Some(l) = self.ledger.get() {
            l.rejected(n);
        }
    }

    /// `n` spooled (durable) documents were then refused by the server.
    pub(crate) fn lost_after_spool(&self, n: u64) {
        Counters::add(&self.failed_permanently, n);
        if let Some(l) = self.ledger.get() {
            l.rejected_after_durable(n);
        }
    }

    pub(crate) fn add(c: &AtomicU64, n: u64) {
        // ORDERING: Relaxed: statistics only; readers that need exact totals
        // read them after `Recorder::flush`/`shutdown`, whose channel
        // hand-off orders these writes before the read.
        c.fetch_add(n, Ordering::Relaxed);
    }
}

/// A cheap handle for reading a [`MongoRecorder`]'s counters after the
/// recorder has been handed to a tracer.
#[derive(Clone)]
pub struct MongoStatsHandle(pub(crate) Arc<Counters>);

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
            collisions: l(&c.collisions),
            retries: l(&c.retries),
            spooled: l(&c.spooled),
            replayed: l(&c.replayed),
            failed_permanently: l(&c.failed_permanently),
            write_ahead_bypassed: l(&c.write_ahead_bypassed),
            spool_bytes: l(&c.spool_bytes),
            spool_corrupt_bytes: l(&c.spool_corrupt_bytes),
            index_failures: l(&c.index_failures),
            last_error: c.last_error.lock().clone(),
        }
    }
}
