//! `Instrument::in_span` on a multi-threaded tokio runtime: tasks migrate
//! between workers across `.await` and still parent their spans; a
//! cancelled future's span is finished and tagged; nothing stays entered on
//! a worker after a task moves on.

use spanrec::{InMemoryRecorder, Instrument, OwnedValue, Tracer};
use std::time::{Duration, Instant};

fn tracer() -> (Tracer, InMemoryRecorder) {
    let recorder = InMemoryRecorder::new();
    let t = Tracer::builder()
        .recorder(recorder.clone())
        .overflow(spanrec::OverflowPolicy::Block {
            timeout: Duration::from_secs(10),
        })
        .build()
        .unwrap();
    (t, recorder)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap()
}

#[test]
fn migrating_tasks_parent_their_spans() {
    let (t, recorder) = tracer();
    let rt = runtime();
    const TASKS: usize = 200;
    rt.block_on(async {
        let mut handles = Vec::new();
        for i in 0..TASKS {
            let t2 = t.clone();
            let root = t.start_span("task");
            let work = async move {
                for step in 0..4 {
                    // Each await may resume on the other worker.
                    tokio::task::yield_now().await;
                    if step % 2 == 1 {
                        tokio::time::sleep(Duration::from_micros(50)).await;
                    }
                    let mut child = t2.start_span("step");
                    child.set_tag("task", i as i64);
                    child.finish();
                }
                i
            };
            handles.push(tokio::spawn(work.in_span(root)));
        }
        for h in handles {
            h.await.unwrap();
        }
        // After all that, a task outside any span starts a root on
        // either worker: nothing was left entered.
        let mut roots = Vec::new();
        for _ in 0..20 {
            let t2 = t.clone();
            roots.push(tokio::spawn(async move {
                tokio::task::yield_now().await;
                t2.start_span("outside").finish();
            }));
        }
        for h in roots {
            h.await.unwrap();
        }
    });
    t.flush(Instant::now() + Duration::from_secs(10)).unwrap();
    let spans = recorder.spans();
    let tasks: Vec<_> = spans
        .iter()
        .filter(|s| s.operation_name == "task")
        .collect();
    assert_eq!(tasks.len(), TASKS);
    for s in spans.iter().filter(|s| s.operation_name == "step") {
        let parent = tasks
            .iter()
            .find(|p| Some(p.span_id) == s.parent_span_id)
            .unwrap_or_else(|| panic!("step without its task: {s:?}"));
        assert_eq!(parent.trace_id, s.trace_id);
    }
    assert_eq!(
        spans.iter().filter(|s| s.operation_name == "step").count(),
        TASKS * 4
    );
    for s in spans.iter().filter(|s| s.operation_name == "outside") {
        assert_eq!(s.parent_span_id, None, "left entered on a worker: {s:?}");
    }
    assert!(tasks.iter().all(|s| s.tag("cancelled").is_none()));
}

#[test]
fn a_cancelled_future_finishes_its_span_tagged() {
    let (t, recorder) = tracer();
    let rt = runtime();
    rt.block_on(async {
        let slow = async {
            tokio::time::sleep(Duration::from_secs(60)).await;
        };
        let r = tokio::time::timeout(
            Duration::from_millis(20),
            slow.in_span(t.start_span("slow")),
        )
        .await;
        assert!(r.is_err(), "timed out");
        // Dropped before its first poll.
        drop(async {}.in_span(t.start_span("never_polled")));
        // Aborted while running on a worker.
        let t2 = t.clone();
        let task = tokio::spawn(
            async move {
                t2.start_span("inner").finish();
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
            .in_span(t.start_span("aborted")),
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        task.abort();
        assert!(task.await.unwrap_err().is_cancelled());
    });
    t.flush(Instant::now() + Duration::from_secs(10)).unwrap();
    for name in ["slow", "never_polled", "aborted"] {
        let s = recorder
            .find(name)
            .unwrap_or_else(|| panic!("{name} not recorded"));
        assert_eq!(s.tag("cancelled"), Some(&OwnedValue::Bool(true)), "{name}");
    }
    let aborted = recorder.find("aborted").unwrap();
    assert_eq!(
        recorder.find("inner").unwrap().parent_span_id,
        Some(aborted.span_id)
    );
    let s = t.stats();
    assert_eq!(s.recorded + s.dropped.total(), s.finished);
}

/// `on_ready` tags the span it finishes in place; a panic in `on_ready`
/// (or in the inner future) still finishes the span exactly once, when the
/// future is dropped; a future without a span never calls `on_ready`.
#[test]
fn on_ready_tags_in_place_and_a_panic_loses_nothing() {
    use spanrec::InSpan;
    use std::future::Future;
    use std::panic::{catch_unwind, AssertUnwindSafe};
    use std::task::{Context, Poll, Waker};

    fn poll_once<F: Future>(f: std::pin::Pin<&mut F>) -> Poll<F::Output> {
        f.poll(&mut Context::from_waker(Waker::noop()))
    }
    let (t, recorder) = tracer();

    let tag: spanrec::OnReady<u32> = |span, out| span.set_tag("out", i64::from(*out));
    let mut ok = Box::pin(InSpan::new(
        async { 7u32 },
        Some(t.start_span("ok")),
        Some(tag),
    ));
    assert_eq!(poll_once(ok.as_mut()), Poll::Ready(7));
    drop(ok);

    let boom: spanrec::OnReady<u32> = |_, _| panic!("on_ready fails");
    let mut failing = Box::pin(InSpan::new(
        async { 1u32 },
        Some(t.start_span("failing")),
        Some(boom),
    ));
    assert!(catch_unwind(AssertUnwindSafe(|| poll_once(failing.as_mut()))).is_err());
    drop(failing);

    let mut inner_panics = Box::pin(
        async {
            panic!("inner fails");
        }
        .in_span(t.start_span("inner_panics")),
    );
    assert!(catch_unwind(AssertUnwindSafe(|| poll_once(inner_panics.as_mut()))).is_err());
    drop(inner_panics);

    let never: spanrec::OnReady<u32> = |_, _| panic!("called without a span");
    let mut spanless = Box::pin(InSpan::new(async { 2u32 }, None, Some(never)));
    assert_eq!(poll_once(spanless.as_mut()), Poll::Ready(2));

    t.flush(Instant::now() + Duration::from_secs(10)).unwrap();
    let spans = recorder.spans();
    let count = |name: &str| spans.iter().filter(|s| s.operation_name == name).count();
    for name in ["ok", "failing", "inner_panics"] {
        assert_eq!(count(name), 1, "{name} recorded once: {spans:?}");
    }
    let ok = recorder.find("ok").unwrap();
    assert_eq!(ok.tag("out"), Some(&OwnedValue::I64(7)));
    assert_eq!(ok.tag("cancelled"), None);
    for name in ["failing", "inner_panics"] {
        let s = recorder.find(name).unwrap();
        assert_eq!(s.tag("cancelled"), Some(&OwnedValue::Bool(true)), "{name}");
    }
    let s = t.stats();
    assert_eq!((s.finished, s.recorded), (3, 3));
}
