//! Where finished spans go: the [`Recorder`] trait and two built-ins.

use crate::config::Process;
use crate::record::{Reference, SpanRecord, Truncations, ValueRef};
use crate::stats::{DropCounts, Ledger};
use crate::sync::{Arc, AtomicU64, Ordering};
use std::fmt;

/// Receives finished spans, in batches, on the flusher thread.
///
/// The contract:
/// - `record` is called with at most `max_batch_size` spans, when a batch is
///   full or the flush interval has passed. Returning `Ok` means the
///   recorder has taken responsibility for every span in the batch (they
///   count as *recorded*); a recorder with its own retry or spool returns `Ok`
///   once the spans are safe with it. Returning `Err` means the batch was not
///   accepted and will not be retried by the recorder: the flusher counts its
///   spans as dropped ([`DropReason::RecorderError`](crate::DropReason)).
/// - The records are lent for the call only; copy what must outlive it.
/// - A panic in any method is caught and counted; the flusher goes on.
/// - Calls never overlap: one flusher thread makes all of them.
pub trait Recorder: Send + 'static {
    /// Persists a batch of finished spans.
    fn record(&mut self, batch: &Batch<'_>) -> Result<(), RecorderError>;

    /// Called by [`Tracer::flush`](crate::Tracer::flush) after the last
    /// batch it covers: finish delivering what `record` accepted. The
    /// flusher waits in it, draining no ring meanwhile: a recorder whose
    /// flush waits on a network implements [`start_flush`](Self::start_flush)
    /// instead.
    fn flush(&mut self) -> Result<(), RecorderError> {
        Ok(())
    }

    /// Starts what [`flush`](Self::flush) does without waiting for it:
    /// `Some` when it is already done, `None` when it goes on elsewhere (a
    /// writer thread). The flusher then keeps draining rings and delivering
    /// batches, and calls [`poll_flush`](Self::poll_flush) on its next
    /// passes; `waker` wakes it when the flush is done, so it need not
    /// poll on a timer. Batches recorded after this call are not covered.
    /// The default calls `flush`.
    fn start_flush(&mut self, waker: FlushWaker) -> Option<Result<(), RecorderError>> {
        drop(waker);
        Some(self.flush())
    }

    /// After [`start_flush`](Self::start_flush) returned `None`: whether
    /// that flush is done (`Some`), or still going (`None`).
    fn poll_flush(&mut self) -> Option<Result<(), RecorderError>> {
        Some(Ok(()))
    }

    /// Called once, before the first batch, with the tracer's [`Ledger`].
    /// Return `true` to report durability yourself: the spans `record`
    /// accepts then count as in flight until you report them
    /// [`durable`](Ledger::durable) (or [`rejected`](Ledger::rejected)).
    /// The default, `false`: a span is durable when `record` accepts it.
    fn attach_ledger(&mut self, ledger: Ledger) -> bool {
        drop(ledger);
        false
    }

    /// Called once, after the final batch, when the tracer shuts down.
    fn shutdown(&mut self) -> Result<(), RecorderError> {
        self.flush()
    }
}

/// Wakes the flusher when a flush started by [`Recorder::start_flush`] is
/// done; callable from any thread, any number of times.
#[derive(Debug, Clone)]
pub struct FlushWaker {
    flusher: std::thread::Thread,
}

impl FlushWaker {
    /// A waker for the calling thread (the flusher's own).
    pub(crate) fn current() -> Self {
        FlushWaker {
            flusher: std::thread::current(),
        }
    }

    /// Wakes the flusher: it calls [`Recorder::poll_flush`] on its next
    /// pass. (An `unpark`: a wake that comes before the flusher sleeps is
    /// kept, never lost.)
    pub fn wake(&self) {
        self.flusher.unpark();
    }
}

/// Records lying one after another: `len` from `first`. The flusher lends
/// a batch as runs: records still in the rings' blocks where the threads
/// wrote them (no copy), and records it had to move (its own buffer).
///
/// Invariant: `first..first + len` are initialized records that nobody
/// writes, moves or frees while a [`Batch`] holding this run lives (the
/// flusher builds the batch, calls the recorder and drops the batch before
/// it releases them).
#[derive(Clone, Copy)]
pub(crate) struct Run {
    pub(crate) first: std::ptr::NonNull<SpanRecord>,
    pub(crate) len: usize,
}

impl Run {
    /// The records.
    ///
    /// # Safety
    /// The run's invariant holds for `'a`.
    #[inline]
    unsafe fn records<'a>(self) -> &'a [SpanRecord] {
        // SAFETY: initialized and unwritten for 'a (the caller's
        // obligation and the run's invariant).
        unsafe { std::slice::from_raw_parts(self.first.as_ptr(), self.len) }
    }
}

/// A batch of finished spans lent to [`Recorder::record`].
pub struct Batch<'a> {
    /// Invariant: each run's invariant holds for `'a`.
    pub(crate) runs: &'a [Run],
    /// The records in all runs.
    pub(crate) len: usize,
    pub(crate) process: &'a Process,
    /// The tracer's drops so far, for recorders that report durability.
    pub(crate) dropped: Option<DropCounts>,
}

impl<'a> Batch<'a> {
    /// The identity of the process that recorded every span of the batch
    /// (the tracer's [`Config::process`](crate::Config::process)).
    pub fn process(&self) -> &'a Process {
        self.process
    }

    /// For a recorder that reports durability (one whose
    /// [`Recorder::attach_ledger`] returned true): the tracer's drops so
    /// far, by reason, read when the flusher handed over this batch — what
    /// an audit log records as gaps between its batches. `None` for other
    /// recorders (reading them costs the flusher a pass over all threads'
    /// counters).
    pub fn dropped(&self) -> Option<DropCounts> {
        self.dropped
    }

    /// Number of spans.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the batch is empty (never, for batches the flusher sends).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The spans, in the order the flusher collected them.
    ///
    /// Iterating prefetches the extension (tags beyond the inline ones,
    /// logs, baggage) of the next record, so a recorder reading records in
    /// order waits on fewer cache misses; the records themselves lie in
    /// runs of up to 64, which the hardware prefetcher handles.
    pub fn iter(&self) -> BatchIter<'a> {
        let iter = BatchIter {
            runs: self.runs.iter(),
            run: [].iter(),
            left: self.len,
        };
        if let Some(first) = iter.upcoming() {
            first.prefetch_contents();
        }
        iter
    }

    /// The `i`-th span.
    pub fn get(&self, i: usize) -> Option<&'a SpanRecord> {
        let mut i = i;
        for run in self.runs {
            if i < run.len {
                // SAFETY: the runs' invariant holds for 'a.
                return unsafe { run.records::<'a>() }.get(i);
            }
            i -= run.len;
        }
        None
    }
}

/// The spans of a [`Batch`], in order: [`Batch::iter`].
pub struct BatchIter<'a> {
    /// The runs not yet started.
    ///
    /// Invariant: each run's invariant holds for `'a` (the batch's).
    runs: std::slice::Iter<'a, Run>,
    /// What is left of the run begun.
    run: std::slice::Iter<'a, SpanRecord>,
    /// Records left in `run` and `runs`.
    left: usize,
}

impl<'a> BatchIter<'a> {
    /// The record `next` returns, without taking it.
    fn upcoming(&self) -> Option<&'a SpanRecord> {
        self.run.as_slice().first().or_else(|| {
            let run = *self.runs.as_slice().first()?;
            // SAFETY: the runs' invariant holds for 'a (field invariant).
            unsafe { run.records::<'a>() }.first()
        })
    }
}

impl<'a> Iterator for BatchIter<'a> {
    type Item = &'a SpanRecord;

    #[inline]
    fn next(&mut self) -> Option<&'a SpanRecord> {
        let record = loop {
            if let Some(r) = self.run.next() {
                break r;
            }
            // SAFETY: the runs' invariant holds for 'a (field invariant).
            self.run = unsafe { self.runs.next()?.records::<'a>() }.iter();
        };
        self.left -= 1;
        if let Some(next) = self.upcoming() {
            next.prefetch_contents();
        }
        Some(record)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for BatchIter<'_> {}

impl std::fmt::Debug for BatchIter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchIter")
            .field("left", &self.left)
            .finish()
    }
}

/// A recorder's failure to accept a batch.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct RecorderError {
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl RecorderError {
    /// An error with a message.
    pub fn new(message: impl Into<String>) -> Self {
        RecorderError {
            message: message.into(),
            source: None,
        }
    }

    /// An error with a message and the error that caused it.
    pub fn with_source(
        message: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        RecorderError {
            message: message.into(),
            source: Some(source.into()),
        }
    }
}

/// Discards every span after counting it; for benchmarks.
#[derive(Debug, Clone, Default)]
pub struct NullRecorder {
    received: Arc<AtomicU64>,
}

impl NullRecorder {
    /// A recorder with its count at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Spans received so far (shared by all clones).
    pub fn received(&self) -> u64 {
        // ORDERING: Acquire pairs with the Release add in `record`, though
        // nothing but the count itself is read.
        self.received.load(Ordering::Acquire)
    }
}

impl Recorder for NullRecorder {
    fn record(&mut self, batch: &Batch<'_>) -> Result<(), RecorderError> {
        // ORDERING: Release pairs with the Acquire load in `received`.
        self.received
            .fetch_add(batch.len() as u64, Ordering::Release);
        Ok(())
    }
}

/// An owned value of a [`FinishedSpan`].
#[derive(Debug, Clone, PartialEq)]
pub enum OwnedValue {
    /// A signed integer.
    I64(i64),
    /// An unsigned integer.
    U64(u64),
    /// A float.
    F64(f64),
    /// A boolean.
    Bool(bool),
    /// A string.
    Str(String),
}

impl From<ValueRef<'_>> for OwnedValue {
    fn from(v: ValueRef<'_>) -> Self {
        match v {
            ValueRef::I64(v) => OwnedValue::I64(v),
            ValueRef::U64(v) => OwnedValue::U64(v),
            ValueRef::F64(v) => OwnedValue::F64(v),
            ValueRef::Bool(v) => OwnedValue::Bool(v),
            ValueRef::Str(v) => OwnedValue::Str(v.to_owned()),
        }
    }
}

/// An owned copy of one log entry.
#[derive(Debug, Clone, PartialEq)]
pub struct FinishedLog {
    /// Event time, ns since the Unix epoch.
    pub unix_nanos: u64,
    /// Event name.
    pub event: String,
    /// Fields in order.
    pub fields: Vec<(String, OwnedValue)>,
}

/// An owned copy of a [`SpanRecord`], as [`InMemoryRecorder`] keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct FinishedSpan {
    /// See [`SpanRecord::trace_id`].
    pub trace_id: u128,
    /// See [`SpanRecord::span_id`].
    pub span_id: u64,
    /// See [`SpanRecord::parent_span_id`].
    pub parent_span_id: Option<u64>,
    /// See [`SpanRecord::references`].
    pub references: Vec<Reference>,
    /// See [`SpanRecord::operation_name`].
    pub operation_name: String,
    /// See [`SpanRecord::start_unix_nanos`].
    pub start_unix_nanos: u64,
    /// See [`SpanRecord::finish_unix_nanos`].
    pub finish_unix_nanos: u64,
    /// See [`SpanRecord::duration_nanos`].
    pub duration_nanos: u64,
    /// See [`SpanRecord::tags`].
    pub tags: Vec<(String, OwnedValue)>,
    /// See [`SpanRecord::logs`].
    pub logs: Vec<FinishedLog>,
    /// See [`SpanRecord::baggage`].
    pub baggage: Vec<(String, String)>,
    /// See [`SpanRecord::truncations`].
    pub truncations: Truncations,
    /// The recording process's service name.
    pub service: String,
}

impl FinishedSpan {
    /// Copies a record of a batch whose process is `process`.
    pub fn from_record(r: &SpanRecord, process: &Process) -> Self {
        FinishedSpan {
            trace_id: r.trace_id(),
            span_id: r.span_id(),
            parent_span_id: r.parent_span_id(),
            references: r.references().collect(),
            operation_name: r.operation_name().to_owned(),
            start_unix_nanos: r.start_unix_nanos(),
            finish_unix_nanos: r.finish_unix_nanos(),
            duration_nanos: r.duration_nanos(),
            tags: r.tags().map(|(k, v)| (k.to_owned(), v.into())).collect(),
            logs: r
                .logs()
                .map(|l| FinishedLog {
                    unix_nanos: l.unix_nanos(),
                    event: l.event().to_owned(),
                    fields: l.fields().map(|(k, v)| (k.to_owned(), v.into())).collect(),
                })
                .collect(),
            baggage: r
                .baggage()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            truncations: r.truncations(),
            service: process.service.to_string(),
        }
    }

    /// The value of tag `key`, if set.
    pub fn tag(&self, key: &str) -> Option<&OwnedValue> {
        self.tags.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The value of baggage item `key`, if set.
    pub fn baggage_item(&self, key: &str) -> Option<&str> {
        self.baggage
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Keeps owned copies of every span it receives, for tests.
///
/// Clones share one store, so keep a clone to query after handing one to
/// the tracer. It can be told to fail or to be slow, to test error paths.
#[derive(Clone, Default)]
pub struct InMemoryRecorder {
    inner: Arc<crate::sync::Mutex<InMemory>>,
}

#[derive(Default)]
struct InMemory {
    spans: Vec<FinishedSpan>,
    batches: u64,
    fail_next: u64,
    delay: std::time::Duration,
}

impl fmt::Debug for InMemoryRecorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.inner.lock();
        f.debug_struct("InMemoryRecorder")
            .field("spans", &inner.spans.len())
            .field("batches", &inner.batches)
            .finish()
    }
}

impl InMemoryRecorder {
    /// An empty recorder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Copies of every span received so far, in arrival order.
    pub fn spans(&self) -> Vec<FinishedSpan> {
        self.inner.lock().spans.clone()
    }

    /// Number of spans received so far.
    pub fn len(&self) -> usize {
        self.inner.lock().spans.len()
    }

    /// Whether nothing was received yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of batches received so far.
    pub fn batches(&self) -> u64 {
        self.inner.lock().batches
    }

    /// The spans of one trace, in arrival order.
    pub fn trace(&self, trace_id: u128) -> Vec<FinishedSpan> {
        self.inner
            .lock()
            .spans
            .iter()
            .filter(|s| s.trace_id == trace_id)
            .cloned()
            .collect()
    }

    /// The first span named `name`.
    pub fn find(&self, name: &str) -> Option<FinishedSpan> {
        self.inner
            .lock()
            .spans
            .iter()
            .find(|s| s.operation_name == name)
            .cloned()
    }

    /// Makes the next `n` calls to `record` fail (for tests of error paths).
    pub fn fail_next(&self, n: u64) {
        self.inner.lock().fail_next = n;
    }

    /// Makes every call to `record` sleep this long first (for tests of
    /// deadlines with a slow backend).
    pub fn set_delay(&self, delay: std::time::Duration) {
        self.inner.lock().delay = delay;
    }
}

impl Recorder for InMemoryRecorder {
    fn record(&mut self, batch: &Batch<'_>) -> Result<(), RecorderError> {
        let delay = self.inner.lock().delay;
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        let copies: Vec<FinishedSpan> = batch
            .iter()
            .map(|r| FinishedSpan::from_record(r, batch.process()))
            .collect();
        let mut inner = self.inner.lock();
        inner.batches += 1;
        if inner.fail_next > 0 {
            inner.fail_next -= 1;
            return Err(RecorderError::new("InMemoryRecorder told to fail"));
        }
        inner.spans.extend(copies);
        Ok(())
    }
}
