//! When the flusher runs (issue 12): its wakes grow with spans delivered,
//! not with time; a ring past half wakes it (at most once per half-fill);
//! nothing waits longer than `flush_interval` without a `flush` call; the
//! lossless `Block` policy stays lossless. Bounds here are counts, with
//! slack for a loaded machine, never speed targets.

use spanrec::{NullRecorder, OverflowPolicy, Tracer};
use std::time::{Duration, Instant};

fn tracer(ring: usize, interval: Duration, overflow: OverflowPolicy) -> (Tracer, NullRecorder) {
    let recorder = NullRecorder::new();
    let tracer = Tracer::builder()
        .ring_capacity(ring)
        .max_batch_size(ring)
        .flush_interval(interval)
        .overflow(overflow)
        .recorder(recorder.clone())
        .build()
        .expect("valid configuration");
    (tracer, recorder)
}

/// Rings of 8,192 that wake the flusher at 4,096, under the least memory
/// budget (8 blocks of 64 spans beyond each ring's first block, shared by
/// all threads): a ring is full at 64 .. 576 spans, far below its wake
/// threshold. The timer is an hour: only a doorbell delivers in a test.
fn capped_tracer(overflow: OverflowPolicy) -> (Tracer, NullRecorder) {
    let recorder = NullRecorder::new();
    let tracer = Tracer::builder()
        .ring_capacity(8192)
        .max_batch_size(4096)
        .ring_memory_budget(64 << 10)
        .flush_interval(Duration::from_secs(3600))
        .overflow(overflow)
        .recorder(recorder.clone())
        .build()
        .expect("valid configuration");
    (tracer, recorder)
}

/// Waits (polling the recorder, never calling `flush`) until it holds
/// `n` spans; how long that took.
fn arrival(recorder: &NullRecorder, n: u64, give_up: Duration) -> Option<Duration> {
    let began = Instant::now();
    while began.elapsed() < give_up {
        if recorder.received() >= n {
            return Some(began.elapsed());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    None
}

#[test]
fn idle_flusher_wakes_about_once_per_interval() {
    let (tracer, _recorder) = tracer(1024, Duration::from_millis(50), OverflowPolicy::DropNewest);
    // Registered threads, then nothing.
    for _ in 0..4 {
        let t = tracer.clone();
        std::thread::spawn(move || t.start_span("warm-up").finish())
            .join()
            .unwrap();
    }
    tracer
        .flush(Instant::now() + Duration::from_secs(10))
        .unwrap();
    let before = tracer.stats().flusher_wakeups;
    std::thread::sleep(Duration::from_millis(500));
    let wakes = tracer.stats().flusher_wakeups - before;
    // 500 ms / 50 ms = 10 timer wakes; a polling flusher made thousands.
    assert!(wakes <= 20, "{wakes} wakeups in 500 ms with nothing to do");
}

#[test]
fn a_trickle_is_delivered_within_the_flush_interval_without_flush() {
    let interval = Duration::from_millis(100);
    let (tracer, recorder) = tracer(1024, interval, OverflowPolicy::DropNewest);
    let wakes_before = tracer.stats().flusher_wakeups;
    for i in 1..=5u64 {
        tracer.start_span("trickle").finish();
        // Far below half a ring: no doorbell; the flusher's own deadline
        // must bring it (one interval, plus scheduling slack).
        let took = arrival(&recorder, i, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("span {i} not delivered without flush"));
        assert!(
            took < interval * 20,
            "span {i} took {took:?} (interval {interval:?})"
        );
    }
    let s = tracer.stats();
    assert_eq!(s.doorbells, 0, "a trickle never rings");
    assert!(s.flusher_wakeups > wakes_before);
}

#[test]
fn a_fast_thread_rings_at_most_once_per_half_ring_and_loses_nothing_with_block() {
    const RING: usize = 256;
    const SPANS: u64 = 200_000;
    let block = OverflowPolicy::Block {
        timeout: Duration::from_secs(30),
    };
    // An interval far longer than the test: only doorbells move spans.
    let (tracer, recorder) = tracer(RING, Duration::from_secs(3600), block);
    let t = tracer.clone();
    std::thread::spawn(move || {
        for _ in 0..SPANS {
            t.start_span("fast").finish();
        }
    })
    .join()
    .unwrap();
    // Without a flush call, all arrives but what is left in the ring (at
    // most half: more would have rung) and in the flusher's unfinished
    // batch (less than `max_batch_size`), both due only in an hour.
    let bulk = SPANS - RING as u64 / 2 - RING as u64;
    assert!(
        arrival(&recorder, bulk, Duration::from_secs(30)).is_some(),
        "the doorbell did not keep the flusher going: {} of {SPANS}",
        recorder.received()
    );
    tracer
        .flush(Instant::now() + Duration::from_secs(30))
        .unwrap();
    let s = tracer.stats();
    assert_eq!(s.finished, SPANS);
    assert_eq!(s.recorded, SPANS, "Block loses nothing: {s:?}");
    assert_eq!(s.dropped.total(), 0);
    let half_rings = SPANS / (RING as u64 / 2);
    assert!(
        s.doorbells <= half_rings,
        "{} doorbells for {half_rings} half rings",
        s.doorbells
    );
    assert!(s.doorbells > 0, "a thread filling its ring must ring");
}

/// The flusher lends records to the recorder where they lie, in the
/// rings; a ring smaller than a batch would fill with records it holds
/// back until the batch is due (an hour here). It must let go of them (a
/// spill) whenever the ring is due, so a `Block` thread never waits for
/// the batch: nothing lost, full batches arrive without a flush call.
#[test]
fn a_batch_larger_than_the_ring_does_not_hold_the_ring_back() {
    const RING: usize = 64;
    const BATCH: usize = 4096;
    const SPANS: u64 = 20_000;
    let recorder = NullRecorder::new();
    let tracer = Tracer::builder()
        .ring_capacity(RING)
        .max_batch_size(BATCH)
        .flush_interval(Duration::from_secs(3600))
        .overflow(OverflowPolicy::Block {
            timeout: Duration::from_secs(5),
        })
        .recorder(recorder.clone())
        .build()
        .expect("valid configuration");
    let t = tracer.clone();
    std::thread::spawn(move || {
        for i in 0..SPANS {
            // Some spans with an extension (a copied string), which the
            // flusher sends back to this thread after each batch.
            let mut span = t.start_span("small ring");
            if i % 3 == 0 {
                span.set_tag("n", i.to_string());
            }
            span.finish();
        }
    })
    .join()
    .unwrap();
    let s = tracer.stats();
    assert_eq!(
        s.dropped.total(),
        0,
        "a thread waited out its timeout: {s:?}"
    );
    let full = SPANS / BATCH as u64 * BATCH as u64;
    assert!(
        arrival(&recorder, full, Duration::from_secs(30)).is_some(),
        "full batches not delivered: {} of {full}",
        recorder.received()
    );
    tracer
        .flush(Instant::now() + Duration::from_secs(30))
        .unwrap();
    let s = tracer.stats();
    assert_eq!(s.recorded, SPANS, "{s:?}");
    assert_eq!(s.dropped.total(), 0);
    // A batch never fits in this ring: the flusher spilled, and counted
    // what it moved.
    assert!(s.spilled > 0 && s.spilled <= SPANS, "{s:?}");
}

#[test]
fn many_threads_past_half_all_get_drained() {
    const RING: usize = 64;
    let block = OverflowPolicy::Block {
        timeout: Duration::from_secs(30),
    };
    let (tracer, recorder) = tracer(RING, Duration::from_secs(3600), block);
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let t = tracer.clone();
            std::thread::spawn(move || {
                for _ in 0..20_000 {
                    t.start_span("burst").finish();
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    tracer
        .flush(Instant::now() + Duration::from_secs(30))
        .unwrap();
    let s = tracer.stats();
    assert_eq!(s.recorded, 160_000, "{s:?}");
    assert_eq!(recorder.received(), 160_000);
    assert_eq!(s.recorded + s.dropped.total(), s.finished);
}

/// A ring held below its wake threshold by the memory budget: the thread
/// drops (`DropNewest`) with its ring "full" at ~512 spans while the
/// doorbell waits for 4,096. The drop must wake the flusher to make room,
/// not leave the thread dropping until `flush_interval` (an hour here).
#[test]
fn a_drop_wakes_the_flusher_when_the_budget_caps_a_ring_below_its_threshold() {
    let (tracer, recorder) = capped_tracer(OverflowPolicy::DropNewest);
    let t = tracer.clone();
    let accepted_again = std::thread::spawn(move || {
        // Registered, flushed, then time for the flusher to park: the ring
        // below must wake a flusher that sleeps (`doorbells` counts the
        // unparks: one going to sleep just as the ring rings sees the
        // refusal in its re-check instead, with no unpark to count).
        t.start_span("register").finish();
        t.flush(Instant::now() + Duration::from_secs(30)).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        // Past what the budget lets the ring hold, until a drop.
        while t.stats().dropped.total() == 0 {
            t.start_span("capped").finish();
        }
        let held = t.stats().finished - 2;
        assert!(held < 4096, "the budget capped the ring at {held}");
        // Then one span now and then: room must come long before the
        // flusher's hour-long timer.
        let began = Instant::now();
        while began.elapsed() < Duration::from_secs(30) {
            let dropped = t.stats().dropped.total();
            t.start_span("after").finish();
            if t.stats().dropped.total() == dropped {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    })
    .join()
    .unwrap();
    let s = tracer.stats();
    assert!(accepted_again, "the drop did not wake the flusher: {s:?}");
    assert!(s.doorbells >= 1, "{s:?}");
    tracer
        .flush(Instant::now() + Duration::from_secs(30))
        .unwrap();
    let s = tracer.stats();
    assert_eq!(s.recorded + s.dropped.total(), s.finished, "{s:?}");
    assert_eq!(recorder.received(), s.recorded);
}

/// Many threads whose rings the memory budget holds far below the wake
/// threshold, under `Block`: every refusal must reach the flusher, also
/// one that rings just as the flusher goes to sleep (its re-check sees
/// the refusal, `refused_at`). A refusal lost there would leave the thread
/// waiting for the flusher's hour-long timer and end in a `Block` timeout.
/// The race is narrow; thousands of refusals in each of three tracers give
/// it many chances (with the re-check blind to refusals, the
/// `doorbell_no_refused_recheck` mutant built without loom, about one
/// tracer in three loses one).
#[test]
fn refusals_below_the_threshold_are_never_lost_to_a_sleeping_flusher() {
    const THREADS: usize = 4;
    const SPANS: usize = 100_000;
    for _ in 0..3 {
        let (tracer, recorder) = capped_tracer(OverflowPolicy::Block {
            timeout: Duration::from_secs(5),
        });
        let workers: Vec<_> = (0..THREADS)
            .map(|_| {
                let t = tracer.clone();
                std::thread::spawn(move || {
                    for _ in 0..SPANS {
                        t.start_span("capped").finish();
                    }
                })
            })
            .collect();
        // A lost refusal strands its thread in 5 s waits span after span:
        // fail at the first timeout rather than wait for them all.
        while !workers.iter().all(|w| w.is_finished()) {
            let s = tracer.stats();
            assert_eq!(
                s.dropped.total(),
                0,
                "a refusal waited for the timer: {s:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        for w in workers {
            w.join().unwrap();
        }
        tracer
            .flush(Instant::now() + Duration::from_secs(30))
            .unwrap();
        let s = tracer.stats();
        assert_eq!(
            s.dropped.total(),
            0,
            "a refusal waited for the timer: {s:?}"
        );
        assert_eq!(s.recorded, (THREADS * SPANS) as u64, "{s:?}");
        assert_eq!(recorder.received(), s.recorded);
    }
}
