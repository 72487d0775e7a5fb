//! A remote context (baggage, `tracestate`) is shared by every descendant
//! of the span that joined it: the semantics must be those of a copy.

use spanrec::{Format, InMemoryRecorder, SpanContext, SpanLimits, Tracer};
use std::collections::HashMap;
use std::time::{Duration, Instant};

fn tracer(limits: SpanLimits) -> (Tracer, InMemoryRecorder) {
    let rec = InMemoryRecorder::new();
    let t = Tracer::builder()
        .recorder(rec.clone())
        .limits(limits)
        .build()
        .unwrap();
    (t, rec)
}

fn request() -> HashMap<String, String> {
    HashMap::from([
        (
            "traceparent".to_string(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_string(),
        ),
        ("tracestate".to_string(), "rojo=1,congo=2".to_string()),
        (
            "baggage".to_string(),
            "user=alice,tenant=acme,region=eu".to_string(),
        ),
    ])
}

fn flush(t: &Tracer) {
    t.flush(Instant::now() + Duration::from_secs(10)).unwrap();
}

#[test]
fn descendants_see_the_remote_context_and_changes_stay_local() {
    let (t, rec) = tracer(SpanLimits::default());
    let server = t.join_or_start("server", &request());
    let mut a = t.span("a").child_of(&server).start();
    let b = t.span("b").child_of(&server).start();
    a.set_baggage_item("user", "bob");
    a.set_baggage_item("extra", "1");
    let grandchild = t.span("a.1").child_of(&a).start();
    let entered = {
        let _in = b.enter();
        t.start_span("b.1")
    };
    for (span, user, extra) in [
        (&server, "alice", None),
        (&a, "bob", Some("1")),
        (&b, "alice", None),
        (&grandchild, "bob", Some("1")),
        (&entered, "alice", None),
    ] {
        assert_eq!(span.baggage_item("user"), Some(user));
        assert_eq!(span.baggage_item("tenant"), Some("acme"));
        assert_eq!(span.baggage_item("extra"), extra);
        assert_eq!(span.context().trace_state, "rojo=1,congo=2");
    }
    // Sent on as any context would be.
    let mut out = HashMap::new();
    t.inject(&grandchild.context(), Format::W3c, &mut out);
    assert_eq!(out["tracestate"], "rojo=1,congo=2");
    let back = t.extract(Format::W3c, &out).unwrap().unwrap();
    assert_eq!(back.baggage_item("user"), Some("bob"));
    assert_eq!(back.baggage.len(), 4);
    for s in [entered, grandchild, b, a, server] {
        s.finish();
    }
    flush(&t);
    // Recorders read every span's own view.
    assert_eq!(rec.find("b.1").unwrap().baggage_item("user"), Some("alice"));
    assert_eq!(rec.find("a.1").unwrap().baggage_item("user"), Some("bob"));
    assert_eq!(rec.find("server").unwrap().baggage.len(), 3);
    assert_eq!(rec.find("a").unwrap().baggage.len(), 4);
}

#[test]
fn the_first_reference_wins_and_limits_hold() {
    let (t, _) = tracer(SpanLimits {
        max_baggage_items: 2,
        ..SpanLimits::default()
    });
    let server = t.join_or_start("server", &request());
    // The tracer's limits apply to what the remote context holds.
    assert_eq!(server.context().baggage.len(), 2);
    let other = SpanContext::new(9, 9, true).with_baggage_item("user", "mallory");
    let child = t
        .span("two parents")
        .child_of(&server)
        .follows_from(&other)
        .start();
    assert_eq!(child.baggage_item("user"), Some("alice"));
    assert_eq!(child.context().baggage.len(), 2);
    // A child of a span of another tracer copies under its own limits.
    let (small, _) = tracer(SpanLimits {
        max_baggage_items: 1,
        ..SpanLimits::default()
    });
    let foreign = small.span("foreign").child_of(&server).start();
    assert_eq!(foreign.context().baggage.len(), 1);
    assert_eq!(foreign.context().trace_state, "rojo=1,congo=2");
}

#[test]
fn replacing_a_baggage_value_forever_stays_bounded() {
    let (t, _) = tracer(SpanLimits::default());
    let before = t.stats().limits.baggage;
    let mut span = t.join_or_start("loop", &request());
    let value = "v".repeat(100);
    for _ in 0..10_000 {
        span.set_baggage_item("user", &value);
    }
    assert_eq!(span.baggage_item("user"), Some(value.as_str()));
    span.finish();
    flush(&t);
    // 8192 bytes of replaced values are copied; the rest are refused and
    // counted.
    let refused = t.stats().limits.baggage - before;
    assert!(refused >= 10_000 - 8192 / 100, "{refused}");
}

#[test]
fn children_outlive_the_span_that_joined_and_leaked_spans_stay_valid() {
    let (t, rec) = tracer(SpanLimits::default());
    let server = t.join_or_start("server", &request());
    let children: Vec<_> = (0..10)
        .map(|i| t.span(format!("c{i}")).child_of(&server).start())
        .collect();
    let guard = server.enter();
    let entered_child = t.start_span("entered");
    std::mem::forget(guard);
    server.finish();
    flush(&t);
    std::mem::forget(t.span("leaked").child_of(&children[0]).start());
    for c in &children {
        assert_eq!(c.baggage_item("region"), Some("eu"));
        assert_eq!(c.context().trace_state, "rojo=1,congo=2");
    }
    // A span started while the forgotten guard's entry stays on the stack.
    let late = t.start_span("late");
    assert_eq!(late.baggage_item("tenant"), Some("acme"));
    for c in children.into_iter().chain([entered_child, late]) {
        c.finish();
    }
    flush(&t);
    assert_eq!(rec.find("c9").unwrap().baggage_item("user"), Some("alice"));
    assert_eq!(rec.find("late").unwrap().baggage.len(), 3);
}

#[test]
fn replacing_a_tag_forever_stays_bounded() {
    let (t, rec) = tracer(SpanLimits {
        max_tags: 4,
        max_value_bytes: 100,
        ..SpanLimits::default()
    });
    let mut span = t.start_span("tags");
    let value = "t".repeat(100);
    for i in 0..10_000 {
        span.set_tag(format!("key{}", i % 2), value.as_str());
    }
    span.finish();
    flush(&t);
    // 4 × 100 bytes of replacements are copied, the rest refused, counted.
    let got = rec.find("tags").unwrap();
    assert_eq!(got.tags.len(), 2);
    assert!(
        t.stats().limits.tags >= 10_000 - 2 - 4,
        "{:?}",
        t.stats().limits
    );
}
