//! A thread's slots (`engine/src/thread_slots.rs`) and the cached last-used slot:
//! spans of several tracers interleaved on one thread, tracers dropped and
//! replaced, spans moving between threads. Every span lands in its own
//! tracer, and every tracer's counts add up.

use spanrec::{InMemoryRecorder, Tracer};
use std::time::{Duration, Instant};

fn tracer(recorder: &InMemoryRecorder) -> Tracer {
    Tracer::builder()
        .recorder(recorder.clone())
        .build()
        .unwrap()
}

fn settle(t: &Tracer) {
    t.flush(Instant::now() + Duration::from_secs(10)).unwrap();
}

#[test]
fn interleaved_tracers_on_one_thread_keep_their_spans_apart() {
    let (ra, rb) = (InMemoryRecorder::new(), InMemoryRecorder::new());
    let (a, b) = (tracer(&ra), tracer(&rb));
    for i in 0..1_000 {
        let sa = a.start_span("a");
        let mut sb = b.start_span("b");
        sb.set_tag("i", i);
        // Finish in the other order than started, so the cached slot
        // alternates between the tracers.
        sb.finish();
        sa.finish();
    }
    settle(&a);
    settle(&b);
    assert_eq!(ra.len(), 1_000);
    assert_eq!(rb.len(), 1_000);
    assert!(ra.spans().iter().all(|s| s.operation_name == "a"));
    assert!(rb.spans().iter().all(|s| s.operation_name == "b"));
    for t in [&a, &b] {
        let st = t.stats();
        assert_eq!(
            (st.started, st.finished, st.recorded),
            (1_000, 1_000, 1_000)
        );
    }
}

#[test]
fn a_replaced_tracer_gets_a_fresh_slot() {
    for round in 0..5 {
        let rec = InMemoryRecorder::new();
        let t = tracer(&rec);
        for _ in 0..100 {
            t.start_span("op").finish();
        }
        settle(&t);
        assert_eq!(rec.len(), 100, "round {round}");
        let st = t.stats();
        assert_eq!((st.started, st.finished), (100, 100), "round {round}");
        drop(t);
    }
}

#[test]
fn spans_crossing_threads_count_where_they_start_and_finish() {
    let (ra, rb) = (InMemoryRecorder::new(), InMemoryRecorder::new());
    let (a, b) = (tracer(&ra), tracer(&rb));
    // Started here, finished on a thread whose cached slot is tracer b's.
    let spans: Vec<_> = (0..100).map(|_| a.start_span("moved")).collect();
    let b2 = b.clone();
    std::thread::spawn(move || {
        b2.start_span("local").finish();
        for s in spans {
            s.finish();
        }
        b2.start_span("local").finish();
    })
    .join()
    .unwrap();
    settle(&a);
    settle(&b);
    assert_eq!(ra.len(), 100);
    assert_eq!(rb.len(), 2);
    let st = a.stats();
    assert_eq!((st.started, st.finished, st.recorded), (100, 100, 100));
}
