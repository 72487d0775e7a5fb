//! Propagation: round trips of every format (proptest), hostile input on
//! every extractor, and the server gate.

use proptest::prelude::*;
use spanrec::{ExtractErrorKind, Format, InMemoryRecorder, SpanContext, Tracer};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

fn tracer() -> (Tracer, InMemoryRecorder) {
    let rec = InMemoryRecorder::new();
    let t = Tracer::builder()
        .recorder(rec.clone())
        .tracestate_key("spanrec")
        .build()
        .unwrap();
    (t, rec)
}

const TEXT_FORMATS: [Format; 6] = [
    Format::W3c,
    Format::OpenTracing,
    Format::B3Single,
    Format::B3Multi,
    Format::Jaeger,
    Format::Binary,
];

fn carries_baggage(f: Format) -> bool {
    !matches!(f, Format::B3Single | Format::B3Multi)
}

fn baggage_key() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9_-]{0,15}"
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn every_format_round_trips(
        trace_id in 1u128..,
        span_id in 1u64..,
        sampled: bool,
        baggage in proptest::collection::btree_map(baggage_key(), "\\PC{0,20}", 0..5),
    ) {
        // Keeping the caller's flag: a round trip must give it back.
        let t = Tracer::builder()
            .recorder(InMemoryRecorder::new())
            .tracestate_key("spanrec")
            .honor_remote_sampling(true)
            .build()
            .unwrap();
        let mut ctx = SpanContext::new(trace_id, span_id, sampled);
        ctx.baggage = baggage.into_iter().collect();
        for format in TEXT_FORMATS {
            let mut carrier: HashMap<String, String> = HashMap::new();
            t.inject(&ctx, format, &mut carrier);
            for v in carrier.values() {
                prop_assert!(!v.contains(['\r', '\n']), "{format}: {v:?}");
            }
            let back = t.extract(format, &carrier).unwrap().unwrap();
            prop_assert_eq!(back.trace_id, trace_id, "{}", format);
            prop_assert_eq!(back.span_id, span_id);
            prop_assert_eq!(back.sampled, sampled);
            if carries_baggage(format) {
                let mut want = ctx.baggage.clone();
                let mut got = back.baggage.clone();
                want.sort();
                got.sort();
                prop_assert_eq!(got, want, "{}", format);
            }
        }
        let bytes = t.inject_binary(&ctx);
        let back = t.extract_binary(&bytes).unwrap().unwrap();
        prop_assert_eq!(back, ctx);
    }

    #[test]
    fn extractors_never_panic_on_random_text(
        values in proptest::collection::vec("\\PC{0,80}", 8),
        raw in proptest::collection::vec(any::<u8>(), 0..80),
    ) {
        let (t, _) = tracer();
        let names = ["traceparent", "tracestate", "baggage", "ot-tracer-traceid", "ot-tracer-spanid",
            "b3", "uber-trace-id", "x-b3-traceid"];
        let carrier: BTreeMap<String, String> =
            names.iter().zip(values).map(|(k, v)| (k.to_string(), v)).collect();
        for format in TEXT_FORMATS {
            let _ = t.extract(format, &carrier);
        }
        let _ = t.extract_any(&carrier);
        drop(t.join_or_start("gate", &carrier));
        let _ = t.extract_binary(&raw);
        let mut header = HashMap::new();
        header.insert("spanrec-context".to_string(), raw.iter().map(|b| format!("{b:02x}")).collect());
        let _ = t.extract(Format::Binary, &header);
    }

    #[test]
    fn corrupted_traceparent_is_an_error_of_the_right_kind(byte in 0usize..55, with in "[g-zG-Z]") {
        let (t, _) = tracer();
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut bad = good.to_string();
        bad.replace_range(byte..byte + 1, &with);
        let carrier = HashMap::from([("traceparent".to_string(), bad)]);
        let e = t.extract(Format::W3c, &carrier).unwrap_err();
        prop_assert!(matches!(
            e.kind,
            ExtractErrorKind::Malformed | ExtractErrorKind::InvalidHex | ExtractErrorKind::UnsupportedVersion | ExtractErrorKind::InvalidFlags
        ), "{:?}", e);
    }
}

#[test]
fn absent_is_none_not_error() {
    let (t, _) = tracer();
    let empty: HashMap<String, String> = HashMap::new();
    for format in TEXT_FORMATS {
        assert_eq!(t.extract(format, &empty), Ok(None), "{format}");
    }
    assert_eq!(t.extract_binary(&[]), Ok(None));
}

#[test]
fn server_gate_joins_starts_or_falls_back() {
    let (t, rec) = tracer();
    let joined = HashMap::from([
        (
            "traceparent".to_string(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_string(),
        ),
        (
            "tracestate".to_string(),
            "rojo=00f067aa0ba902b7".to_string(),
        ),
        ("baggage".to_string(), "user=alice".to_string()),
    ]);
    let s = t.join_or_start("joined", &joined);
    assert_eq!(s.trace_id(), 0x4bf92f3577b34da6a3ce929d0e0e4736);
    assert_eq!(s.baggage_item("user"), Some("alice"));
    // Forwarding: our tracestate member first, the caller's kept.
    let mut out = HashMap::new();
    t.inject(&s.context(), Format::W3c, &mut out);
    assert_eq!(
        out["tracestate"],
        format!("spanrec={:016x},rojo=00f067aa0ba902b7", s.span_id())
    );
    drop(s);

    let nothing: HashMap<String, String> = HashMap::new();
    let root = t.join_or_start("root", &nothing);
    assert_ne!(root.trace_id(), 0x4bf92f3577b34da6a3ce929d0e0e4736);
    drop(root);

    let corrupted = HashMap::from([("traceparent".to_string(), "00-nothex-01".to_string())]);
    t.join_or_start("fallback", &corrupted).finish();

    // Seed-style OpenTracing headers, in HTTP's canonical case.
    let ot = HashMap::from([
        (
            "Ot-Tracer-Traceid".to_string(),
            "7ab6ba52e1e748c1".to_string(),
        ),
        (
            "Ot-Tracer-Spanid".to_string(),
            "1b4c98c3b3f048aa".to_string(),
        ),
        ("Ot-Tracer-Sampled".to_string(), "true".to_string()),
        (
            "Ot-Baggage-My-Baggage".to_string(),
            "current+user".to_string(),
        ),
    ]);
    let s = t.join_or_start("from-go", &ot);
    assert_eq!(s.trace_id(), 0x7ab6ba52e1e748c1);
    assert_eq!(s.baggage_item("my-baggage"), Some("current user"));
    drop(s);

    // B3 "do not sample" alone: by default (an audit log) the caller
    // cannot switch the record off: a root, sampled.
    let b3 = HashMap::from([("b3".to_string(), "0".to_string())]);
    assert!(t.join_or_start("b3-deny", &b3).is_sampled());

    t.flush(Instant::now() + Duration::from_secs(10)).unwrap();
    let fallback = rec.find("fallback").unwrap();
    assert_eq!(fallback.parent_span_id, None);
    let tag = fallback.tag("propagation.error").expect("tagged");
    assert!(format!("{tag:?}").contains("traceparent"), "{tag:?}");
    assert_eq!(t.stats().propagation_errors, 1);
    assert_eq!(
        rec.find("joined").unwrap().parent_span_id,
        Some(0x00f067aa0ba902b7)
    );
}

#[test]
fn hostile_baggage_is_bounded_and_cannot_split_headers() {
    let rec = InMemoryRecorder::new();
    let t = Tracer::builder()
        .recorder(rec)
        .limits(spanrec::SpanLimits {
            max_baggage_items: 3,
            max_baggage_bytes: 64,
            ..Default::default()
        })
        .build()
        .unwrap();
    let many: Vec<String> = (0..100).map(|i| format!("k{i}=v")).collect();
    let mut carrier = HashMap::from([
        (
            "traceparent".to_string(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_string(),
        ),
        (
            "baggage".to_string(),
            format!("evil=a%0D%0ASet-Cookie:%20x,{}", many.join(",")),
        ),
    ]);
    let ctx = t.extract(Format::W3c, &carrier).unwrap().unwrap();
    assert_eq!(ctx.baggage.len(), 3);
    // A decoded CR/LF is data (W3C values are percent-encoded UTF-8): it
    // is encoded again on the way out, so it can never split a header.
    assert_eq!(ctx.baggage_item("evil"), Some("a\r\nSet-Cookie: x"));
    assert!(t.stats().baggage_not_propagated >= 97);
    carrier.clear();
    for format in [Format::W3c, Format::OpenTracing, Format::Jaeger] {
        t.inject(&ctx, format, &mut carrier);
    }
    assert!(
        carrier.values().all(|v| !v.contains(['\r', '\n'])),
        "{carrier:?}"
    );
    // In-process values with CR/LF are percent-encoded on the way out.
    let mut span = t.span("s").child_of(&ctx).start();
    span.set_baggage_item("note", "line\r\nbreak");
    carrier.clear();
    for format in [Format::W3c, Format::OpenTracing, Format::Jaeger] {
        t.inject(&span.context(), format, &mut carrier);
    }
    assert!(
        carrier.values().all(|v| !v.contains(['\r', '\n'])),
        "{carrier:?}"
    );
}

#[cfg(feature = "http")]
#[test]
fn http_header_map_is_a_carrier() {
    let (t, _) = tracer();
    let mut headers = http::HeaderMap::new();
    let ctx = SpanContext::new(42, 7, true).with_baggage_item("user", "bob");
    t.inject(&ctx, Format::W3c, &mut headers);
    assert!(headers.contains_key("traceparent"));
    let back = t.extract(Format::W3c, &headers).unwrap().unwrap();
    assert_eq!((back.trace_id, back.span_id), (42, 7));
    assert_eq!(back.baggage_item("user"), Some("bob"));
}

/// The `HeaderMap` carrier scans small maps instead of looking names up:
/// whatever the map's size, every read must answer what the `http` crate's
/// own lookup answers (`get_all` of the parsed name: all values, in order),
/// for names in any case, repeated headers, values that are not text, and
/// names the map does not hold or that are not header names at all.
#[cfg(feature = "http")]
#[test]
fn http_header_map_reads_agree_with_http_lookups_at_every_size() {
    use spanrec::propagation::Carrier;
    let names = [
        "traceparent",
        "TraceParent",
        "tracestate",
        "baggage",
        "BAGGAGE",
        "b3",
        "x-b3-traceid",
        "absent",
        "not a name",
        "",
    ];
    for extra in [0usize, 3, 15, 16, 17, 40] {
        let mut map = http::HeaderMap::new();
        for i in 0..extra {
            map.append(
                http::HeaderName::from_bytes(format!("x-filler-{i}").as_bytes()).unwrap(),
                http::HeaderValue::from_static("v"),
            );
        }
        map.append("tracestate", http::HeaderValue::from_static("a=1"));
        map.append("traceparent", http::HeaderValue::from_static("tp"));
        map.append("tracestate", http::HeaderValue::from_static("b=2"));
        map.append("baggage", http::HeaderValue::from_bytes(b"k=\xff").unwrap());
        map.append("b3", http::HeaderValue::from_static("one"));
        map.append("b3", http::HeaderValue::from_static("two"));
        let oracle = |name: &str| -> Vec<Option<String>> {
            match http::HeaderName::from_bytes(name.as_bytes()) {
                Ok(n) => map
                    .get_all(n)
                    .iter()
                    .map(|v| v.to_str().ok().map(str::to_owned))
                    .collect(),
                Err(_) => Vec::new(),
            }
        };
        for name in names {
            let want = oracle(name);
            let mut got = Vec::new();
            map.for_each_value(name, &mut |v| got.push(v.map(str::to_owned)));
            assert_eq!(got, want, "for_each_value({name:?}), {} entries", map.len());
            let first = want.first().cloned().flatten();
            assert_eq!(
                Carrier::get(&map, name).map(str::to_owned),
                first,
                "get({name:?})"
            );
        }
        let mut got: Vec<Vec<Option<String>>> = vec![Vec::new(); names.len()];
        map.for_each_value_of(&names, &mut |i, v| got[i].push(v.map(str::to_owned)));
        for (i, name) in names.iter().enumerate() {
            assert_eq!(
                got[i],
                oracle(name),
                "for_each_value_of: {name:?}, {} entries",
                map.len()
            );
        }
    }
}

/// A caller's "not sampled", in every format that can say it.
fn not_sampled_carriers() -> Vec<(&'static str, HashMap<String, String>)> {
    let h = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    vec![
        (
            "w3c",
            h(&[(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
            )]),
        ),
        ("b3 single, decision only", h(&[("b3", "0")])),
        (
            "b3 single",
            h(&[("b3", "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0")]),
        ),
        ("b3 multi, decision only", h(&[("x-b3-sampled", "0")])),
        (
            "b3 multi",
            h(&[
                ("x-b3-traceid", "4bf92f3577b34da6a3ce929d0e0e4736"),
                ("x-b3-spanid", "00f067aa0ba902b7"),
                ("x-b3-sampled", "0"),
            ]),
        ),
        (
            "jaeger",
            h(&[("uber-trace-id", "4bf92f3577b34da6:00f067aa0ba902b7:0:0")]),
        ),
        (
            "opentracing",
            h(&[
                ("ot-tracer-traceid", "4bf92f3577b34da6"),
                ("ot-tracer-spanid", "00f067aa0ba902b7"),
                ("ot-tracer-sampled", "false"),
            ]),
        ),
    ]
}

#[test]
fn by_default_a_caller_cannot_switch_off_the_audit_record() {
    for (what, carrier) in not_sampled_carriers() {
        let rec = InMemoryRecorder::new();
        let t = Tracer::builder().recorder(rec.clone()).build().unwrap();
        let span = t.join_or_start("audited", &carrier);
        assert!(span.is_sampled(), "{what}");
        // Downstream learns what this service records: sampled.
        let mut out: HashMap<String, String> = HashMap::new();
        t.inject(&span.context(), Format::W3c, &mut out);
        assert!(out["traceparent"].ends_with("-01"), "{what}: {out:?}");
        // A caller's trace id is still joined, when it sent one.
        let joined = !what.contains("decision only");
        span.finish();
        t.flush(Instant::now() + Duration::from_secs(10)).unwrap();
        let got = rec
            .find("audited")
            .unwrap_or_else(|| panic!("{what}: not recorded"));
        assert_eq!(got.parent_span_id.is_some(), joined, "{what}: {got:?}");
        assert_eq!(t.stats().recorded, 1, "{what}");
    }
}

#[test]
fn honoring_remote_sampling_is_an_explicit_choice() {
    for (what, carrier) in not_sampled_carriers() {
        let rec = InMemoryRecorder::new();
        let t = Tracer::builder()
            .recorder(rec.clone())
            .honor_remote_sampling(true)
            .build()
            .unwrap();
        let span = t.join_or_start("traced", &carrier);
        assert!(!span.is_sampled(), "{what}");
        let mut out: HashMap<String, String> = HashMap::new();
        t.inject(&span.context(), Format::W3c, &mut out);
        assert!(out["traceparent"].ends_with("-00"), "{what}: {out:?}");
        span.finish();
        t.flush(Instant::now() + Duration::from_secs(10)).unwrap();
        assert!(rec.find("traced").is_none(), "{what}");
    }
    // A sampler that records nothing still records nothing: the default
    // replaces the caller's decision with this service's own.
    let t = Tracer::builder()
        .recorder(InMemoryRecorder::new())
        .sampler(spanrec::Sampler::Never)
        .build()
        .unwrap();
    let (_, carrier) = &not_sampled_carriers()[0];
    assert!(!t.join_or_start("x", carrier).is_sampled());
}

/// `join_or_start` builds the joined span in place; it must start what
/// the documented equivalent, `span(name).child_of(&extracted).start()`,
/// starts: the same trace, parent, sampling decision, baggage and
/// `tracestate`, with and without the caller's decision honored, with and
/// without a span entered on the thread (a decision without ids makes the
/// entered span the parent either way).
#[test]
fn join_or_start_starts_what_the_builder_starts() {
    let mut carriers = not_sampled_carriers();
    let mut rich = HashMap::new();
    rich.insert(
        "traceparent".to_string(),
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_string(),
    );
    rich.insert("tracestate".to_string(), "vendor=v1,other=o2".to_string());
    rich.insert("baggage".to_string(), "user=alice,tenant=t%201".to_string());
    carriers.push(("w3c with baggage and tracestate", rich));
    carriers.push(("b3 single, sampled decision only", {
        let mut h = HashMap::new();
        h.insert("b3".to_string(), "1".to_string());
        h
    }));
    for honor in [false, true] {
        for entered in [false, true] {
            for (what, carrier) in &carriers {
                let rec = InMemoryRecorder::new();
                let t = Tracer::builder()
                    .recorder(rec.clone())
                    .honor_remote_sampling(honor)
                    .propagation([
                        Format::W3c,
                        Format::B3Single,
                        Format::B3Multi,
                        Format::Jaeger,
                        Format::OpenTracing,
                    ])
                    .build()
                    .unwrap();
                let outer = t.start_span("outer");
                let guard = entered.then(|| outer.enter());
                let Ok(Some(ctx)) = t.extract_any(carrier) else {
                    continue;
                };
                let joined = t.join_or_start("joined", carrier);
                let built = t.span("built").child_of(&ctx).start();
                let case = format!("{what}, honor {honor}, entered {entered}");
                // Without ids, both are roots (new traces) unless a span is
                // entered.
                if ctx.is_valid() || entered {
                    assert_eq!(joined.trace_id(), built.trace_id(), "{case}");
                }
                assert_eq!(joined.is_sampled(), built.is_sampled(), "{case}");
                let (j, b) = (joined.context(), built.context());
                assert_eq!(j.baggage, b.baggage, "{case}");
                assert_eq!(j.trace_state, b.trace_state, "{case}");
                let sampled = joined.is_sampled();
                joined.finish();
                built.finish();
                drop(guard);
                outer.finish();
                t.flush(Instant::now() + Duration::from_secs(10)).unwrap();
                if sampled {
                    let (j, b) = (rec.find("joined").unwrap(), rec.find("built").unwrap());
                    assert_eq!(j.parent_span_id, b.parent_span_id, "{case}");
                    assert_eq!(j.references, b.references, "{case}");
                    assert_eq!(j.baggage, b.baggage, "{case}");
                }
            }
        }
    }
}
