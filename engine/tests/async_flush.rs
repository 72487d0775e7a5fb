//! A recorder whose flush goes on elsewhere (`Recorder::start_flush`)
//! does not hold the flusher: rings keep draining while it waits, and the
//! caller's `flush` returns when the recorder says it is done.
//! (Teeth: the same recorder waiting for its gate inside a blocking
//! `flush` holds the flusher, and all but ~1,000 of the 20,000 spans are
//! lost to `ring_full`.)

use spanrec::{Batch, FlushWaker, OverflowPolicy, Recorder, RecorderError, Tracer};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Records by counting; a flush completes only once `gate` opens, on
/// another thread, which then wakes the flusher.
struct GatedFlush {
    received: Arc<AtomicU64>,
    gate: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
    polls: Arc<AtomicU64>,
}

impl Recorder for GatedFlush {
    fn record(&mut self, batch: &Batch<'_>) -> Result<(), RecorderError> {
        self.received
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    fn start_flush(&mut self, waker: FlushWaker) -> Option<Result<(), RecorderError>> {
        let (gate, done) = (self.gate.clone(), self.done.clone());
        done.store(false, Ordering::SeqCst);
        std::thread::spawn(move || {
            while !gate.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(1));
            }
            done.store(true, Ordering::SeqCst);
            waker.wake();
        });
        None
    }

    fn poll_flush(&mut self) -> Option<Result<(), RecorderError>> {
        self.polls.fetch_add(1, Ordering::Relaxed);
        self.done.load(Ordering::SeqCst).then_some(Ok(()))
    }
}

#[test]
fn rings_drain_while_the_recorder_finishes_a_flush() {
    let received = Arc::new(AtomicU64::new(0));
    let gate = Arc::new(AtomicBool::new(false));
    let polls = Arc::new(AtomicU64::new(0));
    let t = Tracer::builder()
        .recorder(GatedFlush {
            received: received.clone(),
            gate: gate.clone(),
            done: Arc::new(AtomicBool::new(false)),
            polls: polls.clone(),
        })
        .ring_capacity(1024)
        .overflow(OverflowPolicy::DropNewest)
        .build()
        .unwrap();
    let flushing = {
        let t = t.clone();
        std::thread::spawn(move || {
            let began = Instant::now();
            let r = t.flush(Instant::now() + Duration::from_secs(60));
            (r, began.elapsed())
        })
    };
    // While the flush waits on the recorder, 20,000 spans go through a
    // 1,024-span ring at ~16,000 spans/s: a flusher held by the flush
    // would lose all but the first ring's worth; one that keeps draining
    // needs to run only every ~30 ms, even on a busy machine.
    let began = Instant::now();
    for i in 0..20_000u64 {
        let mut s = t.start_span("during");
        s.set_tag("i", i as i64);
        s.finish();
        if i % 16 == 15 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let busy = began.elapsed();
    // The flush is still waiting: the recorder has not said it is done.
    std::thread::sleep(Duration::from_millis(50));
    assert!(
        !flushing.is_finished(),
        "flush returned before the recorder finished it"
    );
    gate.store(true, Ordering::SeqCst);
    let (r, waited) = flushing.join().unwrap();
    r.unwrap();
    assert!(
        waited >= busy,
        "the flush waited for the recorder ({waited:?} < {busy:?})"
    );
    t.flush(Instant::now() + Duration::from_secs(30))
        .unwrap_or(());
    let s = t.stats();
    assert_eq!(s.dropped.total(), 0, "{s:?}");
    assert_eq!(s.recorded, s.finished);
    assert_eq!(received.load(Ordering::Relaxed), s.finished);
    assert!(polls.load(Ordering::Relaxed) >= 1);
}
