//! The record's two parts (`engine/src/record.rs`): tags held inline and
//! tags, strings and references held in the extension must read back the
//! same, in order, whichever part holds them and on whichever thread the
//! span finishes.

use spanrec::{
    InMemoryRecorder, OwnedValue, ReferenceKind, SpanContext, SpanLimits, Tracer, Value,
};
use std::time::{Duration, Instant};

fn tracer(recorder: &InMemoryRecorder, limits: SpanLimits) -> Tracer {
    Tracer::builder()
        .service_name("test")
        .limits(limits)
        .recorder(recorder.clone())
        .build()
        .unwrap()
}

fn flush(t: &Tracer) {
    t.flush(Instant::now() + Duration::from_secs(10)).unwrap();
}

fn s(v: &str) -> OwnedValue {
    OwnedValue::Str(v.into())
}

#[test]
fn tags_past_the_inline_ones_keep_their_order_and_replace_in_place() {
    let rec = InMemoryRecorder::new();
    let t = tracer(&rec, SpanLimits::default());
    let mut span = t.start_span(String::from("owned-name"));
    span.set_tag("a", 1);
    span.set_tag("b", Value::StaticStr("lit"));
    span.set_tag(String::from("c"), "borrowed");
    span.set_tag("d", String::from("owned"));
    span.set_tag("e", true);
    // Replace one held inline with a value that needs the extension, and
    // one held in the extension with one that does not.
    span.set_tag("a", "now a string");
    span.set_tag("d", 4.5);
    span.finish();
    flush(&t);
    let got = rec.find("owned-name").expect("recorded");
    let tags: Vec<_> = got
        .tags
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    assert_eq!(
        tags,
        vec![
            ("a", s("now a string")),
            ("b", s("lit")),
            ("c", s("borrowed")),
            ("d", OwnedValue::F64(4.5)),
            ("e", OwnedValue::Bool(true)),
        ]
    );
    assert_eq!(t.stats().limits.tags, 0);
}

#[test]
fn small_tag_limits_hold_below_the_inline_capacity() {
    for max_tags in 1..=3 {
        let rec = InMemoryRecorder::new();
        let limits = SpanLimits {
            max_tags,
            max_value_bytes: 3,
            ..SpanLimits::default()
        };
        let t = tracer(&rec, limits);
        let mut span = t.start_span("limited");
        span.set_tag("x", 1);
        span.set_tag("y", Value::StaticStr("abcdef"));
        span.set_tag("z", 3);
        span.finish();
        flush(&t);
        let got = rec.find("limited").expect("recorded");
        assert_eq!(got.tags.len(), max_tags.min(3), "max_tags {max_tags}");
        if max_tags >= 2 {
            // Cut to `max_value_bytes` and counted.
            assert_eq!(got.tag("y"), Some(&s("abc")));
            assert_eq!(got.truncations.values, 1);
        }
        let stats = t.stats();
        assert_eq!(stats.limits.tags, (3 - max_tags.min(3)) as u64);
        assert_eq!(stats.finished, 1);
        assert_eq!(rec.len(), 1);
    }
}

#[test]
fn a_span_moved_to_another_thread_gets_its_extension_there() {
    let rec = InMemoryRecorder::new();
    let t = tracer(&rec, SpanLimits::default());
    let mut span = t.start_span("moved");
    span.set_tag("from", "main thread");
    let handle = std::thread::spawn(move || {
        // This thread has no slot for the tracer yet: it registers one for
        // the extension and the finish.
        span.set_tag("to", String::from("worker"));
        span.set_tag("n", 3);
        span.log("on.worker", [("k", Value::Str("v"))]);
        span.set_baggage_item("who", "worker");
        span.finish();
    });
    handle.join().unwrap();
    flush(&t);
    let got = rec.find("moved").expect("recorded");
    assert_eq!(got.tag("from"), Some(&s("main thread")));
    assert_eq!(got.tag("to"), Some(&s("worker")));
    assert_eq!(got.tag("n"), Some(&OwnedValue::I64(3)));
    assert_eq!(got.logs.len(), 1);
    assert_eq!(got.logs[0].event, "on.worker");
    assert_eq!(got.baggage_item("who"), Some("worker"));
    let stats = t.stats();
    assert_eq!(stats.started, 1);
    assert_eq!(stats.finished, 1);
    assert_eq!(stats.dropped.total(), 0);
}

#[test]
fn references_added_after_start_follow_the_first_one() {
    let rec = InMemoryRecorder::new();
    let t = tracer(&rec, SpanLimits::default());
    let cause = SpanContext::new(7, 8, true);
    let other = SpanContext::new(9, 10, true);

    // A root: no reference at start, one added later (another trace).
    let mut root = t.span("root").root().start();
    root.add_follows_from(&cause);
    let root_trace = root.trace_id();
    root.finish();

    // A child: its parent inline, a later cause in the extension.
    let parent = t.start_span("parent");
    let mut child = t
        .span("child")
        .child_of(&parent)
        .follows_from(&other)
        .start();
    child.add_follows_from(&cause);
    let (parent_trace, parent_id) = (parent.trace_id(), parent.span_id());
    child.finish();
    drop(parent);
    flush(&t);

    let root = rec.find("root").unwrap();
    assert_ne!(
        root.trace_id, 7,
        "a late reference does not change the trace"
    );
    assert_eq!(root.trace_id, root_trace);
    assert_eq!(root.references.len(), 1);
    assert_eq!(root.references[0].kind, ReferenceKind::FollowsFrom);
    assert_eq!(root.parent_span_id, Some(8));

    let child = rec.find("child").unwrap();
    assert_eq!(child.trace_id, parent_trace);
    assert_eq!(child.parent_span_id, Some(parent_id));
    let refs: Vec<_> = child
        .references
        .iter()
        .map(|r| (r.kind, r.trace_id, r.span_id))
        .collect();
    assert_eq!(
        refs,
        vec![
            (ReferenceKind::ChildOf, parent_trace, parent_id),
            (ReferenceKind::FollowsFrom, 9, 10),
            (ReferenceKind::FollowsFrom, 7, 8),
        ]
    );
}

#[test]
fn steady_state_inline_spans_allocate_no_extension() {
    let rec = InMemoryRecorder::new();
    let t = tracer(&rec, SpanLimits::default());
    let parent = t.start_span("parent");
    for i in 0..10_000i64 {
        let mut span = t.span("child").child_of(&parent).start();
        span.set_tag("i", i);
        span.set_tag("op", Value::StaticStr("find"));
        span.finish();
    }
    drop(parent);
    flush(&t);
    let stats = t.stats();
    assert_eq!(stats.buffers_allocated, 0, "{stats:?}");
    assert_eq!(stats.finished, 10_001);
    assert_eq!(rec.len() as u64 + stats.dropped.total(), 10_001);
}

/// Keys are compared by content: long keys that share a prefix or a
/// suffix stay apart, and the same key from a literal, a `String` or a
/// copied `&str` replaces the earlier tag, inline or in the extension.
#[test]
fn long_keys_match_by_content() {
    let rec = InMemoryRecorder::new();
    let t = tracer(&rec, SpanLimits::default());
    let mut span = t.start_span("keys");
    span.set_tag("http.request.method", 1);
    span.set_tag("http.response.method", 2);
    span.set_tag("a.common_tail_x", 3);
    span.set_tag("b.common_tail_x", 4);
    span.set_tag(String::from("http.response.method"), 5);
    let copied = String::from("b.common_tail_x");
    span.set_tag(copied.clone(), "five");
    span.set_tag(String::from("http.request.method"), 6);
    span.finish();
    flush(&t);
    let expected = [
        ("http.request.method", OwnedValue::I64(6)),
        ("http.response.method", OwnedValue::I64(5)),
        ("a.common_tail_x", OwnedValue::I64(3)),
        ("b.common_tail_x", s("five")),
    ]
    .map(|(k, v)| (k.to_string(), v));
    assert_eq!(rec.find("keys").expect("recorded").tags, expected);
}

/// Random `set_tag` sequences against a model written from the docs of
/// `Span::set_tag` and `SpanLimits`: a key set again replaces its value in
/// place; new keys past `max_tags` are dropped and counted; string values
/// are cut at the last character boundary within `max_value_bytes` and
/// counted; what replacements copy (an owned key, a string value) is
/// bounded by `max_tags × max_value_bytes` per span, beyond which a
/// replacement is refused and counted as a dropped tag. Keys come as
/// literals and as `String`s, long ones sharing prefixes and suffixes;
/// values of every kind, inline and in the extension.
#[test]
fn random_tags_match_the_model() {
    const KEYS: [&str; 7] = [
        "k",
        "http.request.method",
        "http.response.method",
        "a.common_tail_x",
        "b.common_tail_x",
        "é-key",
        "status",
    ];
    const TEXT: [&str; 5] = ["", "ab", "héllo wörld", "0123456789abcdef", "ééééééé"];
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut below = |n: usize| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) % n as u64) as usize
    };
    for case in 0..300 {
        let limits = SpanLimits {
            max_tags: 1 + below(5),
            max_value_bytes: 1 + below(13),
            ..SpanLimits::default()
        };
        let rec = InMemoryRecorder::new();
        let t = tracer(&rec, limits);
        let name = format!("case-{case}");
        let mut span = t.start_span(name.clone());
        let mut model: Vec<(String, OwnedValue)> = Vec::new();
        let (mut dropped, mut cut, mut replaced) = (0u32, 0u32, 0usize);
        let cut_to = |s: &str| {
            let mut n = s.len().min(limits.max_value_bytes);
            while !s.is_char_boundary(n) {
                n -= 1;
            }
            s[..n].to_string()
        };
        for _ in 0..below(12) {
            let key = KEYS[below(KEYS.len())];
            let owned_key = below(2) == 0;
            let text = TEXT[below(TEXT.len())];
            // The value as read back, its length if a string, and the
            // bytes a replacement by it copies (a literal is pointed at).
            let (value, string_len, copies) = match below(6) {
                0 => {
                    let v = below(1000) as i64 - 500;
                    set(&mut span, key, owned_key, Value::I64(v));
                    (OwnedValue::I64(v), None, 0)
                }
                1 => {
                    set(&mut span, key, owned_key, Value::Bool(true));
                    (OwnedValue::Bool(true), None, 0)
                }
                2 => {
                    set(&mut span, key, owned_key, Value::StaticStr(text));
                    (s(&cut_to(text)), Some(text.len()), 0)
                }
                3 => {
                    let copy = text.to_string();
                    set(&mut span, key, owned_key, Value::Str(&copy));
                    (s(&cut_to(text)), Some(text.len()), text.len())
                }
                4 => {
                    set(&mut span, key, owned_key, Value::String(text.to_string()));
                    (s(&cut_to(text)), Some(text.len()), text.len())
                }
                _ => {
                    set(&mut span, key, owned_key, Value::F64(0.5));
                    (OwnedValue::F64(0.5), None, 0)
                }
            };
            // The model.
            match model.iter().position(|(k, _)| k == key) {
                Some(i) => {
                    let copied = if owned_key { key.len() } else { 0 } + copies;
                    if replaced + copied > limits.max_tags * limits.max_value_bytes {
                        dropped += 1;
                        continue;
                    }
                    replaced += copied;
                    if string_len.is_some_and(|n| n > limits.max_value_bytes) {
                        cut += 1;
                    }
                    model[i].1 = value;
                }
                None if model.len() >= limits.max_tags => dropped += 1,
                None => {
                    if string_len.is_some_and(|n| n > limits.max_value_bytes) {
                        cut += 1;
                    }
                    model.push((key.to_string(), value));
                }
            }
        }
        span.finish();
        flush(&t);
        let got = rec.find(&name).expect("recorded");
        assert_eq!(got.tags, model, "case {case}, {limits:?}");
        assert_eq!(got.truncations.tags, dropped, "case {case}, {limits:?}");
        assert_eq!(got.truncations.values, cut, "case {case}, {limits:?}");
    }
}

fn set(span: &mut spanrec::Span, key: &'static str, owned: bool, value: Value<'_>) {
    if owned {
        span.set_tag(key.to_string(), value);
    } else {
        span.set_tag(key, value);
    }
}
