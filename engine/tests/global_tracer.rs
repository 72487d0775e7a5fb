//! `spanrec::global`: without a tracer, spans are free no-ops, counted;
//! set once; a second set hands the tracer back. (Its own test binary: the
//! global is process-wide.)

use spanrec::{global, InMemoryRecorder, Tracer};
use std::time::{Duration, Instant};

#[test]
fn unset_is_a_counted_no_op_then_set_once() {
    assert!(global::tracer().is_none());
    let before = global::spans_without_tracer();
    assert!(global::start_span("nothing").is_none());
    assert_eq!(global::spans_without_tracer(), before + 1);

    let recorder = InMemoryRecorder::new();
    let t = Tracer::builder()
        .recorder(recorder.clone())
        .build()
        .unwrap();
    global::set_tracer(t.clone()).unwrap();
    let second = Tracer::builder()
        .recorder(spanrec::NullRecorder::default())
        .build()
        .unwrap();
    assert!(global::set_tracer(second).is_err(), "set once");
    let parent = global::start_span("parent").unwrap();
    {
        let _e = parent.enter();
        global::start_span("child").unwrap().finish();
    }
    parent.finish();
    t.flush(Instant::now() + Duration::from_secs(5)).unwrap();
    let p = recorder.find("parent").unwrap();
    assert_eq!(
        recorder.find("child").unwrap().parent_span_id,
        Some(p.span_id)
    );
    assert_eq!(global::spans_without_tracer(), before + 1);
}
