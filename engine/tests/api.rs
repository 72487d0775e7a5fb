//! API semantics: references, baggage, limits, sampling, explicit times.

use spanrec::{
    ConfigError, InMemoryRecorder, OverflowPolicy, OwnedValue, ReferenceKind, Sampler, SpanContext,
    SpanLimits, Tracer, Value,
};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn tracer(recorder: &InMemoryRecorder) -> Tracer {
    Tracer::builder()
        .service_name("test")
        .recorder(recorder.clone())
        .build()
        .unwrap()
}

fn flush(t: &Tracer) {
    t.flush(Instant::now() + Duration::from_secs(10)).unwrap();
}

#[test]
fn root_span_records_tags_types_and_times() {
    let rec = InMemoryRecorder::new();
    let t = tracer(&rec);
    let before = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut s = t.start_span("op");
    s.set_tag("i", -3i64);
    s.set_tag("u", u64::MAX);
    s.set_tag("f", 1.5);
    s.set_tag("b", true);
    let borrowed = String::from("borrowed");
    s.set_tag("s", borrowed.as_str());
    s.set_tag("static", Value::StaticStr("lit"));
    s.set_tag("owned", String::from("owned"));
    s.set_tag("i", 7); // replaces
    s.finish();
    flush(&t);
    let after = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let span = rec.find("op").unwrap();
    assert_eq!(span.tag("i"), Some(&OwnedValue::I64(7)));
    assert_eq!(span.tag("u"), Some(&OwnedValue::U64(u64::MAX)));
    assert_eq!(span.tag("f"), Some(&OwnedValue::F64(1.5)));
    assert_eq!(span.tag("b"), Some(&OwnedValue::Bool(true)));
    assert_eq!(span.tag("s"), Some(&OwnedValue::Str("borrowed".into())));
    assert_eq!(span.tag("static"), Some(&OwnedValue::Str("lit".into())));
    assert_eq!(span.tag("owned"), Some(&OwnedValue::Str("owned".into())));
    assert_eq!(span.tags.len(), 7);
    assert_eq!(span.parent_span_id, None);
    assert_eq!(span.service, "test");
    assert_ne!(span.trace_id, 0);
    assert_ne!(span.span_id, 0);
    // TSC-derived UTC times land within the wall-clock window (with slack
    // for the anchor's conversion error).
    let slack = 5_000_000;
    assert!(
        span.start_unix_nanos + slack >= before,
        "{} < {}",
        span.start_unix_nanos,
        before
    );
    assert!(span.finish_unix_nanos <= after + slack);
    assert!(span.finish_unix_nanos >= span.start_unix_nanos);
    assert_eq!(
        span.duration_nanos,
        span.finish_unix_nanos - span.start_unix_nanos
    );
}

#[test]
fn children_references_and_baggage_inheritance() {
    let rec = InMemoryRecorder::new();
    let t = tracer(&rec);
    let mut parent = t.start_span("parent");
    parent.set_baggage_item("user", "admin");
    let other = t.start_span("other");
    let mut child = t
        .span("child")
        .child_of(&parent)
        .follows_from(&other)
        .start();
    assert_eq!(child.trace_id(), parent.trace_id());
    assert_eq!(child.baggage_item("user"), Some("admin"));
    child.set_baggage_item("req", "42");
    let grandchild = t.span("grandchild").child_of(&child.context()).start();
    assert_eq!(grandchild.baggage_item("user"), Some("admin"));
    assert_eq!(grandchild.baggage_item("req"), Some("42"));
    assert_eq!(
        parent.baggage_item("req"),
        None,
        "baggage flows down, not up"
    );
    let (p, o, c) = (parent.span_id(), other.span_id(), child.span_id());
    drop(grandchild);
    drop(child);
    drop(other);
    drop(parent);
    flush(&t);
    let child = rec.find("child").unwrap();
    assert_eq!(child.parent_span_id, Some(p));
    assert_eq!(child.references.len(), 2);
    assert_eq!(child.references[0].kind, ReferenceKind::ChildOf);
    assert_eq!(child.references[1].kind, ReferenceKind::FollowsFrom);
    assert_eq!(child.references[1].span_id, o);
    assert_eq!(child.baggage_item("user"), Some("admin"));
    let gc = rec.find("grandchild").unwrap();
    assert_eq!(gc.parent_span_id, Some(c));
    assert_eq!(gc.baggage.len(), 2);
}

#[test]
fn entered_span_is_the_implicit_parent() {
    let rec = InMemoryRecorder::new();
    let t = tracer(&rec);
    let outer = t.start_span("outer");
    let (outer_trace, outer_id) = (outer.trace_id(), outer.span_id());
    {
        let _g = outer.enter();
        let inner = t.start_span("inner");
        assert_eq!(inner.trace_id(), outer_trace);
        {
            let _g2 = inner.enter();
            let deepest = t.start_span("deepest");
            drop(deepest);
        }
        let root = t.span("fresh").root().start();
        assert_ne!(root.trace_id(), outer_trace);
    }
    let after = t.start_span("after");
    assert_ne!(
        after.trace_id(),
        outer_trace,
        "guard dropped: no implicit parent"
    );
    drop(after);
    drop(outer);
    flush(&t);
    assert_eq!(rec.find("inner").unwrap().parent_span_id, Some(outer_id));
    let inner_id = rec.find("inner").unwrap().span_id;
    assert_eq!(rec.find("deepest").unwrap().parent_span_id, Some(inner_id));
}

#[test]
fn logs_and_explicit_times() {
    let rec = InMemoryRecorder::new();
    let t = tracer(&rec);
    let start = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let mut s = t.span("timed").start_time(start).with_tag("k", "v").start();
    s.log(
        "cache.miss",
        [("key", Value::from("machines")), ("rows", Value::from(3))],
    );
    s.log_at(start + Duration::from_millis(1), "explicit", [("x", 1)]);
    s.finish_at(start + Duration::from_millis(5));
    flush(&t);
    let span = rec.find("timed").unwrap();
    assert_eq!(span.start_unix_nanos, 1_700_000_000_000_000_000);
    assert_eq!(span.duration_nanos, 5_000_000);
    assert_eq!(span.tag("k"), Some(&OwnedValue::Str("v".into())));
    assert_eq!(span.logs.len(), 2);
    assert_eq!(span.logs[0].event, "cache.miss");
    assert_eq!(
        span.logs[0].fields[1],
        ("rows".to_string(), OwnedValue::I64(3))
    );
    assert_eq!(span.logs[1].unix_nanos, 1_700_000_000_001_000_000);
}

#[test]
fn limits_truncate_and_count() {
    let rec = InMemoryRecorder::new();
    let t = Tracer::builder()
        .recorder(rec.clone())
        .limits(SpanLimits {
            max_tags: 2,
            max_logs: 1,
            max_log_fields: 1,
            max_value_bytes: 5,
            max_baggage_items: 1,
            max_baggage_bytes: 10,
        })
        .build()
        .unwrap();
    let mut s = t.start_span("limited");
    s.set_tag("a", 1);
    s.set_tag("b", "héllo wörld"); // cut at a char boundary: "héll" (5 bytes)
    s.set_tag("c", 3);
    s.set_tag("d", String::from("0123456789"));
    s.log("one", [("x", 1), ("y", 2)]);
    s.log("two", [("x", 1)]);
    s.set_baggage_item("k", "v");
    s.set_baggage_item("k2", "v2");
    s.set_baggage_item("k", "way too long value");
    s.finish();
    flush(&t);
    let span = rec.find("limited").unwrap();
    assert_eq!(span.tags.len(), 2);
    assert_eq!(span.tag("b"), Some(&OwnedValue::Str("héll".into())));
    assert_eq!(span.logs.len(), 1);
    assert_eq!(span.logs[0].fields.len(), 1);
    assert_eq!(span.baggage, vec![("k".to_string(), "v".to_string())]);
    let tr = span.truncations;
    assert_eq!(
        (tr.tags, tr.logs, tr.log_fields, tr.values, tr.baggage),
        (2, 1, 1, 1, 2)
    );
    let stats = t.stats();
    assert_eq!(stats.limits.tags, 2);
    assert_eq!(stats.limits.values, 1);
    assert_eq!(stats.limits.baggage, 2);
}

#[test]
fn samplers_decide_and_unsampled_spans_still_propagate() {
    let rec = InMemoryRecorder::new();
    let t = Tracer::builder()
        .recorder(rec.clone())
        .sampler(Sampler::Never)
        .build()
        .unwrap();
    let mut s = t.start_span("dropped");
    s.set_tag("ignored", 1);
    s.set_baggage_item("user", "u");
    assert!(!s.is_sampled());
    let ctx = s.context();
    assert_eq!(ctx.baggage_item("user"), Some("u"));
    assert!(!ctx.sampled);
    s.finish();
    flush(&t);
    assert!(rec.is_empty());
    let stats = t.stats();
    assert_eq!(stats.dropped.unsampled, 1);
    assert_eq!(stats.finished, 1);

    // Parent-based (the default) follows the incoming decision.
    let rec = InMemoryRecorder::new();
    let t = tracer(&rec);
    let remote_unsampled = SpanContext::new(7, 9, false);
    let child = t.span("c").child_of(&remote_unsampled).start();
    assert!(!child.is_sampled());
    assert_eq!(child.trace_id(), 7);
    let remote_sampled = SpanContext::new(7, 9, true);
    assert!(t.span("c2").child_of(&remote_sampled).start().is_sampled());
    // An invalid context is ignored: a new root.
    let bad = SpanContext::new(0, 0, true);
    let root = t.span("r").child_of(&bad).start();
    assert_ne!(root.trace_id(), 0);

    // Ratio: decided by trace id, so the same trace gets the same answer.
    let t = Tracer::builder()
        .recorder(InMemoryRecorder::new())
        .sampler(Sampler::Ratio(0.5))
        .build()
        .unwrap();
    let mut sampled = 0;
    for _ in 0..2000 {
        if t.start_span("x").is_sampled() {
            sampled += 1;
        }
    }
    assert!((800..1200).contains(&sampled), "{sampled}");
    let low = SpanContext::new(1, 1, true); // low bits tiny: inside the ratio
    let high = SpanContext::new(u128::from(u64::MAX), 1, true);
    let t = Tracer::builder()
        .recorder(InMemoryRecorder::new())
        .sampler(Sampler::Ratio(0.5))
        .build()
        .unwrap();
    assert!(t.span("a").child_of(&low).start().is_sampled());
    assert!(!t.span("b").child_of(&high).start().is_sampled());
}

#[test]
fn config_is_validated_with_typed_errors() {
    let r = || InMemoryRecorder::new();
    let err = |b: spanrec::TracerBuilder| match b.build() {
        Err(spanrec::BuildError::Config(e)) => e,
        other => panic!("expected a config error, got {other:?}"),
    };
    assert!(matches!(
        err(Tracer::builder().recorder(r()).ring_capacity(0)),
        ConfigError::RingCapacity { .. }
    ));
    assert!(matches!(
        err(Tracer::builder().recorder(r()).max_batch_size(0)),
        ConfigError::BatchSize { .. }
    ));
    assert!(matches!(
        err(Tracer::builder().recorder(r()).arena_chunk_bytes(0)),
        ConfigError::ArenaChunk { .. }
    ));
    assert!(matches!(
        err(Tracer::builder()
            .recorder(r())
            .flush_interval(Duration::ZERO)),
        ConfigError::FlushInterval { .. }
    ));
    assert!(matches!(
        err(Tracer::builder()
            .recorder(r())
            .overflow(OverflowPolicy::Block {
                timeout: Duration::ZERO
            })),
        ConfigError::BlockTimeout { .. }
    ));
    assert!(matches!(
        err(Tracer::builder()
            .recorder(r())
            .sampler(Sampler::ParentBased {
                root: Box::new(Sampler::Ratio(f64::NAN))
            })),
        ConfigError::SamplerRatio { .. }
    ));
    // A parent-based root is refused in one step, however deep the nest
    // (checking it once recursed per level).
    let mut deep = Sampler::Always;
    for _ in 0..3 {
        deep = Sampler::ParentBased {
            root: Box::new(deep),
        };
    }
    assert!(matches!(
        err(Tracer::builder().recorder(r()).sampler(deep)),
        ConfigError::NestedSampler
    ));
    assert!(matches!(
        err(Tracer::builder().recorder(r()).service_name("")),
        ConfigError::EmptyServiceName
    ));
    assert!(matches!(
        Tracer::builder().build(),
        Err(spanrec::BuildError::NoRecorder)
    ));
    let msg = err(Tracer::builder().recorder(r()).ring_capacity(usize::MAX)).to_string();
    assert!(msg.contains("ring_capacity"), "{msg}");
}

#[test]
fn unstarted_builder_is_not_counted() {
    let rec = InMemoryRecorder::new();
    let t = tracer(&rec);
    drop(t.span("never"));
    t.start_span("once").finish();
    flush(&t);
    let s = t.stats();
    assert_eq!((s.started, s.finished, s.recorded), (1, 1, 1));
}

#[test]
fn spans_are_send_and_finish_on_other_threads() {
    let rec = InMemoryRecorder::new();
    let t = tracer(&rec);
    let mut s = t.start_span("moved");
    s.set_tag("where", "here");
    std::thread::spawn(move || {
        s.set_tag("then", "there");
        s.finish();
    })
    .join()
    .unwrap();
    flush(&t);
    assert_eq!(rec.find("moved").unwrap().tags.len(), 2);
    let st = t.stats();
    assert_eq!(st.recorded, 1);
    assert_eq!(st.finished, 1);
}

#[test]
fn environment_is_layered_under_the_builder() {
    // The only test that touches SPANREC_* variables, so no other test sees them.
    std::env::set_var("SPANREC_RING_CAPACITY", "64");
    std::env::set_var("SPANREC_OVERFLOW", "block:250");
    std::env::set_var("SPANREC_SAMPLER", "parent:ratio:0.5");
    std::env::set_var("SPANREC_SERVICE_NAME", "from-env");
    let t = Tracer::builder()
        .recorder(InMemoryRecorder::new())
        .env()
        .unwrap()
        .service_name("from-code")
        .build()
        .unwrap();
    let c = t.config();
    assert_eq!(c.ring_capacity, 64);
    assert_eq!(
        c.overflow,
        OverflowPolicy::Block {
            timeout: Duration::from_millis(250)
        }
    );
    assert_eq!(
        c.sampler,
        Sampler::ParentBased {
            root: Box::new(Sampler::Ratio(0.5))
        }
    );
    assert_eq!(
        c.process.service, "from-code",
        "builder calls after env() win"
    );
    std::env::set_var("SPANREC_BATCH_SIZE", "lots");
    let e = Tracer::builder().env().unwrap_err();
    assert_eq!(e.variable, "SPANREC_BATCH_SIZE");
    assert!(e.to_string().contains("SPANREC_BATCH_SIZE=\"lots\""), "{e}");
    std::env::remove_var("SPANREC_BATCH_SIZE");
    // Set but not UTF-8: an error naming it, not "unset".
    std::env::set_var(
        "SPANREC_BATCH_SIZE",
        <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(b"1\xff"),
    );
    let e = Tracer::builder().env().unwrap_err();
    assert_eq!(
        (e.variable, e.expected),
        ("SPANREC_BATCH_SIZE", "UTF-8 text")
    );
    std::env::remove_var("SPANREC_BATCH_SIZE");
    // A sampler nested past the one documented `parent:` level is refused,
    // however long: it once recursed per level and overflowed the stack
    // (a 700 KB value aborted the process).
    for bad in [
        "parent:parent:always".to_string(),
        "parent:".repeat(100_000) + "never",
    ] {
        std::env::set_var("SPANREC_SAMPLER", &bad);
        let e = std::thread::spawn(|| Tracer::builder().env().unwrap_err())
            .join()
            .expect("no stack overflow");
        assert_eq!(e.variable, "SPANREC_SAMPLER");
    }
    for v in [
        "SPANREC_RING_CAPACITY",
        "SPANREC_OVERFLOW",
        "SPANREC_SAMPLER",
        "SPANREC_SERVICE_NAME",
        "SPANREC_BATCH_SIZE",
    ] {
        std::env::remove_var(v);
    }
}

#[test]
fn span_limits_are_validated_at_build() {
    use spanrec::ConfigError;
    let build = |limits: SpanLimits| {
        Tracer::builder()
            .recorder(InMemoryRecorder::new())
            .limits(limits)
            .build()
            .err()
            .map(|e| e.to_string())
    };
    assert_eq!(build(SpanLimits::default()), None);
    assert_eq!(build(SpanLimits::MAX), None);
    let d = SpanLimits::default();
    let max = SpanLimits::MAX;
    for (limits, field) in [
        (SpanLimits { max_tags: 0, ..d }, "max_tags"),
        (SpanLimits { max_logs: 0, ..d }, "max_logs"),
        (
            SpanLimits {
                max_log_fields: 0,
                ..d
            },
            "max_log_fields",
        ),
        (
            SpanLimits {
                max_value_bytes: 0,
                ..d
            },
            "max_value_bytes",
        ),
        (
            SpanLimits {
                max_baggage_items: 0,
                ..d
            },
            "max_baggage_items",
        ),
        (
            SpanLimits {
                max_baggage_bytes: 0,
                ..d
            },
            "max_baggage_bytes",
        ),
        (
            SpanLimits {
                max_tags: max.max_tags + 1,
                ..d
            },
            "max_tags",
        ),
        (
            SpanLimits {
                max_value_bytes: usize::MAX,
                ..d
            },
            "max_value_bytes",
        ),
        (
            SpanLimits {
                max_baggage_bytes: max.max_baggage_bytes + 1,
                ..d
            },
            "max_baggage_bytes",
        ),
    ] {
        let err = build(limits).unwrap_or_else(|| panic!("{field}: accepted"));
        assert!(err.contains(field), "{err}");
        assert!(matches!(
            limits.validate(),
            Err(ConfigError::SpanLimit { field: f, .. }) if f == field
        ));
    }
}
