//! Misuse of the safe API (issue 13): leaked guards and spans, guards
//! entered twice or dropped out of order, spans finished on another thread
//! while entered here. Each must stay memory-safe (CI runs this file under
//! valgrind memcheck, `ci/memcheck.sh`) and keep the ledger exact.
//!
//! The oracle is the documented behaviour of `Span::enter`: while a span is
//! entered on a thread, spans started there without a reference are its
//! children; a leaked guard leaves it entered (a leak, never a dangling
//! read); a forgotten span is never finished, so it is neither recorded nor
//! dropped.

use spanrec::{InMemoryRecorder, SpanContext, Tracer};
use std::time::{Duration, Instant};

fn tracer(recorder: &InMemoryRecorder) -> Tracer {
    Tracer::builder()
        .service_name("misuse")
        .recorder(recorder.clone())
        .build()
        .unwrap()
}

fn flush(t: &Tracer) {
    t.flush(Instant::now() + Duration::from_secs(30)).unwrap();
}

/// After a flush every finished span is recorded or dropped.
fn assert_ledger(t: &Tracer, finished: u64) {
    flush(t);
    let s = t.stats();
    assert_eq!(s.finished, finished, "{s:?}");
    assert_eq!(s.recorded + s.dropped.total(), s.finished, "{s:?}");
}

#[test]
fn forgotten_guard_then_span_finished_and_moved_leaves_children_valid() {
    let rec = InMemoryRecorder::new();
    let t = tracer(&rec);
    std::thread::spawn({
        let t = t.clone();
        move || {
            let mut parent = t.start_span("parent");
            parent.set_baggage_item("user", "alice");
            let trace = parent.context().trace_id;
            std::mem::forget(parent.enter());
            // The guard's borrow is over: the span can move and finish.
            let moved = Box::new(parent);
            moved.finish();
            // Overwrite the memory the record lived in.
            let noise: Vec<Box<[u8; 256]>> = (0..64).map(|_| Box::new([0xA5; 256])).collect();
            drop(noise);
            let child = t.start_span("child");
            let ctx = child.context();
            assert_eq!(ctx.trace_id, trace);
            assert_eq!(ctx.baggage_item("user"), Some("alice"));
            child.finish();
        }
    })
    .join()
    .unwrap();
    assert_ledger(&t, 2);
    let parent = rec.find("parent").unwrap();
    let child = rec.find("child").unwrap();
    assert_eq!(child.trace_id, parent.trace_id);
    assert_eq!(child.parent_span_id, Some(parent.span_id));
}

#[test]
fn forgotten_span_is_neither_recorded_nor_dropped() {
    let rec = InMemoryRecorder::new();
    let t = tracer(&rec);
    let mut s = t.start_span("forgotten");
    s.set_tag("k", "v");
    let _e = s.enter();
    drop(_e);
    std::mem::forget(s);
    t.start_span("after").finish();
    assert_ledger(&t, 1);
    let stats = t.stats();
    assert_eq!(stats.started, 2);
    assert!(rec.find("forgotten").is_none());
    assert_eq!(rec.find("after").unwrap().parent_span_id, None);
}

#[test]
fn entered_twice_and_guards_dropped_in_any_order() {
    let rec = InMemoryRecorder::new();
    let t = tracer(&rec);
    let a = t.start_span("a");
    let b = t.start_span("b");
    let ga1 = a.enter();
    let gb = b.enter();
    let ga2 = a.enter();
    // Innermost is `a` (entered last).
    t.start_span("under_a2").finish();
    drop(ga2);
    t.start_span("under_b").finish();
    // Out of order: `a`'s first guard leaves while `b` is still inside.
    drop(ga1);
    t.start_span("still_under_b").finish();
    drop(gb);
    t.start_span("root").finish();
    a.finish();
    b.finish();
    assert_ledger(&t, 6);
    let (a, b) = (rec.find("a").unwrap(), rec.find("b").unwrap());
    assert_eq!(
        rec.find("under_a2").unwrap().parent_span_id,
        Some(a.span_id)
    );
    assert_eq!(rec.find("under_b").unwrap().parent_span_id, Some(b.span_id));
    assert_eq!(
        rec.find("still_under_b").unwrap().parent_span_id,
        Some(b.span_id)
    );
    assert_eq!(rec.find("root").unwrap().parent_span_id, None);
}

#[test]
fn span_finished_on_another_thread_while_entered_here() {
    let rec = InMemoryRecorder::new();
    let t = tracer(&rec);
    let mut s = t.start_span("travels");
    s.set_baggage_item("k", "v");
    let ctx: SpanContext = s.context();
    std::mem::forget(s.enter());
    std::thread::spawn(move || s.finish()).join().unwrap();
    // The other thread's finish may have freed and reused the record.
    let noise: Vec<String> = (0..256).map(|i| format!("{i:0>300}")).collect();
    drop(noise);
    let child = t.start_span("child");
    assert_eq!(child.context().trace_id, ctx.trace_id);
    assert_eq!(child.baggage_item("k"), Some("v"));
    child.finish();
    assert_ledger(&t, 2);
    assert_eq!(rec.find("child").unwrap().parent_span_id, Some(ctx.span_id));
}

#[test]
fn many_forgotten_guards_only_leak() {
    let rec = InMemoryRecorder::new();
    let t = tracer(&rec);
    std::thread::spawn({
        let t = t.clone();
        move || {
            for i in 0..1_000 {
                let mut s = t.start_span("leaky");
                s.set_baggage_item("i", &i.to_string());
                std::mem::forget(s.enter());
                // Dropped: finished here, after its guard was leaked.
            }
            let c = t.start_span("child");
            assert_eq!(c.baggage_item("i"), Some("999"));
            c.finish();
        }
    })
    .join()
    .unwrap();
    assert_ledger(&t, 1_001);
}

#[test]
fn entered_span_of_a_dropped_tracer_is_harmless() {
    let rec = InMemoryRecorder::new();
    let t = tracer(&rec);
    let s = t.start_span("outer");
    std::mem::forget(s.enter());
    drop(s);
    t.shutdown(Instant::now() + Duration::from_secs(30))
        .unwrap();
    drop(t);
    // A new tracer on this thread does not inherit the other tracer's span.
    let rec2 = InMemoryRecorder::new();
    let t2 = tracer(&rec2);
    t2.start_span("fresh").finish();
    assert_ledger(&t2, 1);
    assert_eq!(rec2.find("fresh").unwrap().parent_span_id, None);
}
