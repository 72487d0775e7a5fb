//! One ledger: `durable + dropped + in_flight == finished`, with a recorder
//! that reports durability after the fact, and with one that does not.

use spanrec::{Batch, InMemoryRecorder, Ledger, Recorder, RecorderError, Stats, Tracer};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Accepts batches into memory; the test decides when they become durable
/// or are rejected, as a database writer would later.
#[derive(Clone, Default)]
struct Deferred {
    ledger: Arc<Mutex<Option<Ledger>>>,
    held: Arc<Mutex<u64>>,
}

impl Recorder for Deferred {
    fn record(&mut self, batch: &Batch<'_>) -> Result<(), RecorderError> {
        *self.held.lock().unwrap() += batch.len() as u64;
        Ok(())
    }

    fn attach_ledger(&mut self, ledger: Ledger) -> bool {
        *self.ledger.lock().unwrap() = Some(ledger);
        true
    }
}

fn balanced(s: &Stats) {
    assert_eq!(
        s.durable + s.dropped.total() + s.in_flight(),
        s.finished,
        "{s:?}"
    );
}

#[test]
fn accepted_is_not_durable_until_the_recorder_says_so() {
    let rec = Deferred::default();
    let t = Tracer::builder().recorder(rec.clone()).build().unwrap();
    for _ in 0..100 {
        t.start_span("s").finish();
    }
    t.flush(Instant::now() + Duration::from_secs(10)).unwrap();
    let s = t.stats();
    assert_eq!((s.finished, s.recorded, s.durable), (100, 100, 0));
    assert_eq!(s.in_flight(), 100, "accepted, not durable: still in flight");
    balanced(&s);
    let ledger = rec
        .ledger
        .lock()
        .unwrap()
        .clone()
        .expect("attached before the first batch");
    // From another thread, as a writer would.
    std::thread::spawn(move || {
        ledger.durable(90);
        ledger.rejected(7);
    })
    .join()
    .unwrap();
    let s = t.stats();
    assert_eq!(s.durable, 90);
    assert_eq!(s.dropped.rejected, 7);
    assert_eq!(s.recorded, 93, "rejected spans are no longer recorded");
    assert_eq!(s.in_flight(), 3);
    balanced(&s);
    let ledger = rec.ledger.lock().unwrap().clone().unwrap();
    ledger.durable(3);
    ledger.rejected_after_durable(1);
    let s = t.stats();
    assert_eq!((s.durable, s.dropped.rejected, s.in_flight()), (92, 8, 0));
    balanced(&s);
}

#[test]
fn a_recorder_that_reports_nothing_is_durable_on_accept() {
    let rec = InMemoryRecorder::new();
    let t = Tracer::builder().recorder(rec).build().unwrap();
    for _ in 0..50 {
        t.start_span("s").finish();
    }
    t.flush(Instant::now() + Duration::from_secs(10)).unwrap();
    let s = t.stats();
    assert_eq!((s.recorded, s.durable, s.in_flight()), (50, 50, 0));
    balanced(&s);
}
