//! The `tracing` bridge: spans, parents, fields, late fields, events,
//! follows_from and a propagated `traceparent`, through `SpanrecLayer`.
#![cfg(feature = "tracing")]

use spanrec::{InMemoryRecorder, OwnedValue, ReferenceKind, SpanrecLayer, Tracer};
use std::time::{Duration, Instant};
use tracing_subscriber::layer::SubscriberExt;

fn run(f: impl FnOnce()) -> Vec<spanrec::FinishedSpan> {
    run_with(|_| f())
}

/// `run`, with the tracer for native spans.
fn run_with(f: impl FnOnce(&Tracer)) -> Vec<spanrec::FinishedSpan> {
    let recorder = InMemoryRecorder::new();
    let tracer = Tracer::builder()
        .recorder(recorder.clone())
        .build()
        .expect("tracer");
    let subscriber = tracing_subscriber::registry().with(SpanrecLayer::new(tracer.clone()));
    tracing::subscriber::with_default(subscriber, || f(&tracer));
    tracer
        .flush(Instant::now() + Duration::from_secs(10))
        .expect("flush");
    recorder.spans()
}

fn by_name<'a>(spans: &'a [spanrec::FinishedSpan], name: &str) -> &'a spanrec::FinishedSpan {
    spans
        .iter()
        .find(|s| s.operation_name == name)
        .unwrap_or_else(|| panic!("no span {name} in {spans:?}"))
}

#[test]
fn nested_spans_fields_events_and_late_fields() {
    let spans = run(|| {
        let request = tracing::info_span!("request", user = "admin", attempt = 2_u64).entered();
        let find = tracing::info_span!("find", db.rows = tracing::field::Empty, ok = true);
        find.in_scope(|| {
            tracing::info!(key = "machines", rows = 3_i64, "cache miss");
        });
        find.record("db.rows", 42_i64);
        drop(find);
        drop(request);
    });
    assert_eq!(spans.len(), 2);
    let request = by_name(&spans, "request");
    let find = by_name(&spans, "find");
    assert_eq!(find.trace_id, request.trace_id);
    assert_eq!(find.parent_span_id, Some(request.span_id));
    assert_eq!(request.parent_span_id, None);
    assert_eq!(request.tag("user"), Some(&OwnedValue::Str("admin".into())));
    assert_eq!(request.tag("attempt"), Some(&OwnedValue::U64(2)));
    assert_eq!(find.tag("ok"), Some(&OwnedValue::Bool(true)));
    assert_eq!(find.tag("db.rows"), Some(&OwnedValue::I64(42)));
    assert_eq!(find.logs.len(), 1);
    let log = &find.logs[0];
    assert_eq!(log.event, "cache miss");
    assert_eq!(
        log.fields,
        vec![
            ("key".to_string(), OwnedValue::Str("machines".into())),
            ("rows".to_string(), OwnedValue::I64(3)),
        ]
    );
}

/// Every kind of event field keeps its type; a message names the entry,
/// an event without one is named by its metadata. An event emitted by a
/// field's `Debug` impl while the layer reads another event neither
/// deadlocks nor panics (`tracing` does not dispatch it: the subscriber is
/// not re-entered).
#[test]
fn events_keep_every_field_kind_and_an_event_inside_debug_is_harmless() {
    struct Loud;
    impl std::fmt::Debug for Loud {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            tracing::info!(inner = 1_i64, "from debug");
            write!(f, "Loud!")
        }
    }
    let spans = run(|| {
        let _span = tracing::info_span!("s").entered();
        tracing::info!(i = -1_i64, u = 2_u64, x = 0.5_f64, b = true, s = "text", d = ?vec![1, 2], "first {}", 1);
        tracing::info!(loud = ?Loud, "outer");
        tracing::info!(n = 7_i64);
    });
    let s = by_name(&spans, "s");
    let events: Vec<&str> = s.logs.iter().map(|l| l.event.as_str()).collect();
    assert_eq!(events.len(), 3, "{events:?}");
    assert_eq!(&events[..2], ["first 1", "outer"]);
    assert!(events[2].starts_with("event "), "{events:?}");
    let str = |v: &str| OwnedValue::Str(v.into());
    assert_eq!(
        s.logs[0].fields,
        vec![
            ("i".to_string(), OwnedValue::I64(-1)),
            ("u".to_string(), OwnedValue::U64(2)),
            ("x".to_string(), OwnedValue::F64(0.5)),
            ("b".to_string(), OwnedValue::Bool(true)),
            ("s".to_string(), str("text")),
            ("d".to_string(), str("[1, 2]")),
        ]
    );
    assert_eq!(s.logs[1].fields, vec![("loud".to_string(), str("Loud!"))]);
    assert_eq!(
        s.logs[2].fields,
        vec![("n".to_string(), OwnedValue::I64(7))]
    );
}

#[test]
fn follows_from_becomes_a_reference() {
    let spans = run(|| {
        let cause = tracing::info_span!("enqueue");
        let effect = tracing::info_span!(parent: None, "process");
        effect.follows_from(&cause);
        drop(effect);
        drop(cause);
    });
    let cause = by_name(&spans, "enqueue");
    let effect = by_name(&spans, "process");
    assert!(effect
        .references
        .iter()
        .any(|r| r.kind == ReferenceKind::FollowsFrom
            && r.trace_id == cause.trace_id
            && r.span_id == cause.span_id));
}

#[test]
fn a_traceparent_field_joins_the_callers_trace() {
    let spans = run(|| {
        let _s = tracing::info_span!(
            "handle",
            traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            route = "/machines"
        )
        .entered();
    });
    assert_eq!(spans.len(), 1, "the provisional root is not recorded");
    let s = &spans[0];
    assert_eq!(s.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
    assert_eq!(s.parent_span_id, Some(0x00f067aa0ba902b7));
    assert_eq!(s.tag("route"), Some(&OwnedValue::Str("/machines".into())));
    assert_eq!(s.tag("traceparent"), None);
}

#[test]
fn native_and_tracing_spans_parent_each_other() {
    let spans = run_with(|t| {
        // A native span inside an entered `tracing` span is its child.
        tracing::info_span!("tracing_outer").in_scope(|| {
            t.start_span("native_inside").finish();
        });
        // A `tracing` span inside an entered native span is its child.
        let native = t.start_span("native_outer");
        {
            let _entered = native.enter();
            tracing::info_span!("tracing_inside").in_scope(|| {
                t.start_span("native_deepest").finish();
            });
        }
        native.finish();
        // Nothing stays entered after the scopes.
        t.start_span("native_after").finish();
    });
    let parent_of = |name| by_name(&spans, name).parent_span_id;
    assert_eq!(
        parent_of("native_inside"),
        Some(by_name(&spans, "tracing_outer").span_id)
    );
    assert_eq!(
        parent_of("tracing_inside"),
        Some(by_name(&spans, "native_outer").span_id)
    );
    assert_eq!(
        parent_of("native_deepest"),
        Some(by_name(&spans, "tracing_inside").span_id)
    );
    assert_eq!(parent_of("native_after"), None);
    assert_eq!(
        by_name(&spans, "native_deepest").trace_id,
        by_name(&spans, "native_outer").trace_id
    );
}
