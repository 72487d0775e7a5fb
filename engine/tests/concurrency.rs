//! Many threads, overload, idle and exiting threads, flush and shutdown.

use spanrec::{InMemoryRecorder, OverflowPolicy, OwnedValue, Recorder, Tracer};
use std::collections::HashSet;
use std::time::{Duration, Instant};

fn secs(n: u64) -> Instant {
    Instant::now() + Duration::from_secs(n)
}

/// A tracer under `Block { timeout }` with small rings and batches.
fn block_tracer(rec: impl Recorder, ring: usize, batch: usize, timeout: Duration) -> Tracer {
    Tracer::builder()
        .recorder(rec)
        .ring_capacity(ring)
        .max_batch_size(batch)
        .overflow(OverflowPolicy::Block { timeout })
        .build()
        .unwrap()
}

/// Runs `span(tracer, thread, i)` for `i` in `0..spans` on each of
/// `threads` threads, and joins them.
fn on_threads(t: &Tracer, threads: u64, spans: u64, span: fn(&Tracer, u64, u64)) {
    let handles: Vec<_> = (0..threads)
        .map(|thread| {
            let t = t.clone();
            std::thread::spawn(move || {
                for i in 0..spans {
                    span(&t, thread, i);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

#[test]
fn eight_threads_every_span_recorded_exactly_once() {
    const THREADS: u64 = 8;
    const SPANS: u64 = 100_000;
    let rec = InMemoryRecorder::new();
    let t = Tracer::builder()
        .recorder(rec.clone())
        // The in-memory recorder copies every span; let producers wait for it
        // rather than drop, so that "exactly once" is checkable.
        .overflow(OverflowPolicy::Block {
            timeout: Duration::from_secs(60),
        })
        .build()
        .unwrap();
    on_threads(&t, THREADS, SPANS, |t, thread, i| {
        let mut s = t.start_span("work");
        s.set_tag("thread", thread);
        s.set_tag("i", i);
        s.finish();
    });
    t.flush(secs(60)).unwrap();
    let spans = rec.spans();
    assert_eq!(spans.len() as u64, THREADS * SPANS);
    let mut seen = HashSet::new();
    for s in &spans {
        let (Some(OwnedValue::U64(th)), Some(OwnedValue::U64(i))) = (s.tag("thread"), s.tag("i"))
        else {
            panic!("tags missing on {s:?}");
        };
        assert!(seen.insert((*th, *i)), "span ({th}, {i}) recorded twice");
        assert!(seen.len() <= (THREADS * SPANS) as usize);
    }
    let ids: HashSet<u64> = spans.iter().map(|s| s.span_id).collect();
    assert_eq!(ids.len(), spans.len(), "span ids are unique");
    let st = t.stats();
    assert_eq!(st.finished, THREADS * SPANS);
    assert_eq!(st.recorded, THREADS * SPANS);
    assert_eq!(st.dropped.total(), 0);
}

/// Counts spans; sleeps per batch to make the flusher the bottleneck.
struct SlowCounter {
    received: std::sync::Arc<std::sync::atomic::AtomicU64>,
    delay: Duration,
}

impl Recorder for SlowCounter {
    fn record(&mut self, batch: &spanrec::Batch<'_>) -> Result<(), spanrec::RecorderError> {
        std::thread::sleep(self.delay);
        self.received
            .fetch_add(batch.len() as u64, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
}

#[test]
fn overload_with_tiny_ring_accounts_for_every_span_and_bounds_memory() {
    const THREADS: u64 = 3;
    const SPANS: u64 = 200_000;
    const RING: u64 = 16;
    const BATCH: u64 = 8;
    let received = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let t = Tracer::builder()
        .recorder(SlowCounter {
            received: received.clone(),
            delay: Duration::from_micros(200),
        })
        .ring_capacity(RING as usize)
        .max_batch_size(BATCH as usize)
        .build()
        .unwrap();
    on_threads(&t, THREADS, SPANS, |t, _, _| {
        let mut s = t.start_span("overload");
        s.set_tag("payload", "some borrowed text");
        s.finish();
    });
    t.flush(secs(60)).unwrap();
    let st = t.stats();
    assert_eq!(st.finished, THREADS * SPANS);
    assert_eq!(st.recorded + st.dropped.total(), st.finished, "{st:?}");
    assert_eq!(
        st.recorded,
        received.load(std::sync::atomic::Ordering::SeqCst)
    );
    assert!(
        st.dropped.ring_full > 0,
        "the ring was meant to overflow: {st:?}"
    );
    // Memory is bounded: buffers per thread never exceed what the two rings,
    // the spare list, the flusher's batch and the live span can hold, however
    // many spans were finished.
    let per_thread = 2 * RING + 32 + BATCH + 1;
    assert!(st.buffers_allocated <= THREADS * per_thread, "{st:?}");
}

#[test]
fn idle_thread_spans_arrive_within_a_flush_interval() {
    let interval = Duration::from_millis(100);
    let rec = InMemoryRecorder::new();
    let t = Tracer::builder()
        .recorder(rec.clone())
        .flush_interval(interval)
        .build()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let worker = {
        let t = t.clone();
        std::thread::spawn(move || {
            t.start_span("before-idle").finish();
            // Stay alive and idle until the test is done.
            let _ = rx.recv();
        })
    };
    let started = Instant::now();
    while rec.is_empty() && started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let waited = started.elapsed();
    tx.send(()).unwrap();
    worker.join().unwrap();
    assert_eq!(rec.len(), 1, "the idle thread's span never arrived");
    // About one interval; the bound has slack for a machine whose cores
    // are busy (CI runs this beside a CPU hog). A flusher that never passed
    // over idle threads would not deliver it at all.
    assert!(waited < interval * 20, "took {waited:?}");
}

#[test]
fn exited_thread_spans_arrive_and_its_slot_is_retired() {
    let interval = Duration::from_millis(50);
    let rec = InMemoryRecorder::new();
    let t = Tracer::builder()
        .recorder(rec.clone())
        .flush_interval(interval)
        .build()
        .unwrap();
    {
        let t = t.clone();
        std::thread::spawn(move || {
            for _ in 0..1000 {
                t.start_span("exiting").finish();
            }
        })
        .join()
        .unwrap();
    }
    // The spans arrive without a `flush` call (the flusher's own schedule)...
    let started = Instant::now();
    while rec.len() < 1000 && started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(rec.len(), 1000);
    // ...but the recorder holds them a moment before the flusher counts
    // them `recorded` (it counts when `record` returns): `Stats` promises
    // its identity after a flush, so read it after one. The thread exited
    // before the flush, so the flush's pass has retired its slot too.
    t.flush(secs(30)).unwrap();
    let st = t.stats();
    assert_eq!(st.threads, 0, "the exited thread's slot was not retired");
    assert_eq!(
        (st.finished, st.recorded),
        (1000, 1000),
        "retired counts are kept"
    );
}

#[test]
fn flush_and_shutdown_honour_deadlines_with_a_slow_recorder() {
    let rec = InMemoryRecorder::new();
    // A flush that ignored its deadline would wait out the recorder's
    // delay; the bounds below sit between the deadline and that delay, with
    // slack for busy cores (CI runs this beside a CPU hog).
    rec.set_delay(Duration::from_millis(1200));
    let t = Tracer::builder().recorder(rec.clone()).build().unwrap();
    t.start_span("slow").finish();
    let begun = Instant::now();
    let r = t.flush(Instant::now() + Duration::from_millis(50));
    assert_eq!(r, Err(spanrec::FlushError::Timeout));
    assert!(
        begun.elapsed() < Duration::from_millis(1000),
        "flush overstayed its deadline"
    );
    t.flush(secs(30)).unwrap();
    assert_eq!(rec.len(), 1);

    t.start_span("slow2").finish();
    let begun = Instant::now();
    assert_eq!(
        t.shutdown(Instant::now() + Duration::from_millis(50)),
        Err(spanrec::FlushError::Timeout)
    );
    assert!(
        begun.elapsed() < Duration::from_millis(1000),
        "shutdown overstayed its deadline"
    );
    t.shutdown(secs(30)).unwrap();
    assert_eq!(rec.len(), 2);

    // After shutdown: finishing is counted, flush says why it cannot help.
    t.start_span("late").finish();
    assert_eq!(t.flush(secs(1)), Err(spanrec::FlushError::Closed));
    let st = t.stats();
    assert_eq!(st.dropped.shutdown, 1);
    assert_eq!(st.recorded + st.dropped.total(), st.finished);
}

#[test]
fn recorder_errors_and_panics_are_counted_and_survived() {
    struct Flaky(u32);
    impl Recorder for Flaky {
        fn record(&mut self, batch: &spanrec::Batch<'_>) -> Result<(), spanrec::RecorderError> {
            self.0 += 1;
            match self.0 {
                1 => Err(spanrec::RecorderError::with_source(
                    "insert failed",
                    std::io::Error::other("EOF"),
                )),
                2 => panic!("recorder bug"),
                _ => {
                    assert!(!batch.is_empty());
                    Ok(())
                }
            }
        }
    }
    let t = Tracer::builder().recorder(Flaky(0)).build().unwrap();
    for _ in 0..3 {
        t.start_span("x").finish();
        t.flush(secs(10)).unwrap();
    }
    let st = t.stats();
    assert_eq!(st.recorder_errors, 1);
    assert_eq!(st.recorder_panics, 1);
    assert_eq!(st.dropped.recorder_error, 2);
    assert_eq!(st.recorded, 1);
    assert_eq!(st.recorded + st.dropped.total(), st.finished);
    let last = t.last_recorder_error().unwrap();
    assert!(last.contains("panicked") || last.contains("EOF"), "{last}");
}

#[test]
fn flush_from_inside_the_recorder_is_refused_not_deadlocked() {
    struct Reentrant(
        std::sync::Arc<std::sync::Mutex<Option<Tracer>>>,
        std::sync::mpsc::Sender<String>,
    );
    impl Recorder for Reentrant {
        fn record(&mut self, _: &spanrec::Batch<'_>) -> Result<(), spanrec::RecorderError> {
            if let Some(t) = self.0.lock().unwrap().as_ref() {
                let r = t.flush(Instant::now() + Duration::from_secs(5));
                let _ = self.1.send(format!("{r:?}"));
            }
            Ok(())
        }
    }
    let slot = std::sync::Arc::new(std::sync::Mutex::new(None));
    let (tx, rx) = std::sync::mpsc::channel();
    let t = Tracer::builder()
        .recorder(Reentrant(slot.clone(), tx))
        .build()
        .unwrap();
    *slot.lock().unwrap() = Some(t.clone());
    t.start_span("x").finish();
    t.flush(secs(10)).unwrap();
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(5)).unwrap(),
        "Err(OnFlusherThread)"
    );
    slot.lock().unwrap().take();
}

#[test]
fn block_policy_waits_then_counts_a_timeout() {
    let rec = InMemoryRecorder::new();
    rec.set_delay(Duration::from_millis(300));
    let t = block_tracer(rec.clone(), 1, 1, Duration::from_millis(20));
    let begun = Instant::now();
    for _ in 0..6 {
        t.start_span("b").finish();
    }
    let elapsed = begun.elapsed();
    t.flush(secs(30)).unwrap();
    let st = t.stats();
    assert!(st.dropped.block_timeout >= 1, "{st:?}");
    assert_eq!(st.recorded + st.dropped.total(), 6);
    // Each blocked finish waited at most its timeout, plus scheduling slack
    // for busy cores (CI runs this beside a CPU hog); a finish that ignored
    // its timeout would wait for the 300 ms recorder each time.
    assert!(
        elapsed < Duration::from_millis(6 * 20 + 1000),
        "{elapsed:?}"
    );
}

/// Threads waiting for room under `Block` park until the flusher drains
/// (`room_wait.rs`): with many of them on rings of 2, every span still
/// arrives and none waits into its timeout.
#[test]
fn many_threads_blocked_for_room_lose_nothing() {
    const THREADS: u64 = 64;
    const SPANS: u64 = 2_000;
    let rec = InMemoryRecorder::new();
    let t = block_tracer(rec.clone(), 2, 16, Duration::from_secs(60));
    on_threads(&t, THREADS, SPANS, |t, _, _| {
        t.start_span("blocked").finish()
    });
    t.flush(secs(60)).unwrap();
    let st = t.stats();
    assert_eq!(st.finished, THREADS * SPANS);
    assert_eq!(
        (st.recorded, st.dropped.total()),
        (THREADS * SPANS, 0),
        "{st:?}"
    );
    assert_eq!(rec.len() as u64, THREADS * SPANS);
}

/// `shutdown` releases threads waiting for room at once (their spans
/// counted as `shutdown`), even while the flusher is stuck in a slow
/// recorder that would otherwise make room only seconds later.
#[test]
fn shutdown_releases_threads_blocked_for_room() {
    let rec = InMemoryRecorder::new();
    // Longer than the 4 s the waiter is given after `shutdown`: its release
    // cannot come from the recorder returning.
    rec.set_delay(Duration::from_secs(6));
    let t = block_tracer(rec.clone(), 1, 1, Duration::from_secs(60));
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let waiter = {
        let t = t.clone();
        std::thread::spawn(move || {
            // The first span goes to the stuck recorder, the second fills
            // the ring, the third waits for room.
            for _ in 0..3 {
                t.start_span("waits").finish();
            }
            done_tx.send(()).unwrap();
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    // The flusher is inside `record` for seconds: the deadline passes.
    let _ = t.shutdown(Instant::now() + Duration::from_millis(50));
    done_rx
        .recv_timeout(Duration::from_secs(4))
        .expect("a thread blocked for room still waits after shutdown");
    waiter.join().unwrap();
    // Released: the spans still to deliver need not wait 6 s each.
    rec.set_delay(Duration::ZERO);
    // Once the flusher is out of the recorder, the books balance.
    let until = secs(60);
    let st = loop {
        let st = t.stats();
        if st.recorded + st.dropped.total() == st.finished || Instant::now() > until {
            break st;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(st.recorded + st.dropped.total(), st.finished, "{st:?}");
    assert_eq!(st.finished, 3, "{st:?}");
    assert!(st.dropped.shutdown >= 1, "{st:?}");
}

#[test]
fn dropping_the_last_handle_shuts_down_and_delivers() {
    let rec = InMemoryRecorder::new();
    {
        let t = Tracer::builder().recorder(rec.clone()).build().unwrap();
        for _ in 0..10 {
            t.start_span("final").finish();
        }
    }
    assert_eq!(rec.len(), 10);
}

/// Checks every batch's views agree: `iter` yields `len` records, its
/// `len` counts down, and the `i`-th is `get(i)`.
struct ViewChecker {
    received: std::sync::Arc<std::sync::atomic::AtomicU64>,
    multi_run: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Recorder for ViewChecker {
    fn record(&mut self, batch: &spanrec::Batch<'_>) -> Result<(), spanrec::RecorderError> {
        let mut iter = batch.iter();
        assert_eq!(iter.len(), batch.len());
        let mut i = 0;
        while let Some(record) = iter.next() {
            let at = batch.get(i).expect("get(i) below len");
            assert!(std::ptr::eq(record, at), "iter and get disagree at {i}");
            if i > 0 {
                let before = batch.get(i - 1).expect("below len");
                // A record not right after the one before: another run.
                if !std::ptr::eq(std::ptr::from_ref(before).wrapping_add(1), record) {
                    self.multi_run
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                }
            }
            i += 1;
            assert_eq!(iter.len(), batch.len() - i);
        }
        assert_eq!(i, batch.len());
        assert!(batch.get(i).is_none());
        self.received
            .fetch_add(i as u64, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
}

#[test]
fn a_batch_of_many_runs_reads_the_same_through_iter_and_get() {
    const THREADS: u64 = 3;
    const SPANS: u64 = 20_000;
    let received = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let multi_run = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let checker = ViewChecker {
        received: received.clone(),
        multi_run: multi_run.clone(),
    };
    let t = block_tracer(checker, 512, 300, Duration::from_secs(60));
    on_threads(&t, THREADS, SPANS, |t, _, i| {
        let mut s = t.start_span("view");
        s.set_tag("i", i);
        s.finish();
    });
    t.flush(secs(60)).unwrap();
    assert_eq!(
        received.load(std::sync::atomic::Ordering::SeqCst),
        THREADS * SPANS
    );
    assert_eq!(t.stats().recorder_panics, 0, "a view check failed");
    assert!(
        multi_run.load(std::sync::atomic::Ordering::Relaxed),
        "no batch of more than one run: the test checked nothing"
    );
}
