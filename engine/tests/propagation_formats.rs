//! B3, OpenTracing, Jaeger and the binary envelope held to the same rules
//! as W3C: one value per single-valued header, only SP/HTAB trimmed, hex
//! without a sign, one baggage admission rule.
#![cfg(feature = "http")]

use http::{HeaderMap, HeaderName, HeaderValue};
use spanrec::{ExtractErrorKind, Format, NullRecorder, SpanContext, Tracer};
use std::collections::HashMap;

fn tracer() -> Tracer {
    Tracer::builder()
        .recorder(NullRecorder::new())
        .honor_remote_sampling(true)
        .build()
        .unwrap()
}

fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A valid context in each format, as (format, headers).
fn valid() -> Vec<(Format, Vec<(&'static str, &'static str)>)> {
    vec![
        (
            Format::B3Single,
            vec![("b3", "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1")],
        ),
        (
            Format::B3Multi,
            vec![
                ("x-b3-traceid", "4bf92f3577b34da6a3ce929d0e0e4736"),
                ("x-b3-spanid", "00f067aa0ba902b7"),
                ("x-b3-sampled", "1"),
            ],
        ),
        (
            Format::Jaeger,
            vec![("uber-trace-id", "4bf92f3577b34da6:00f067aa0ba902b7:0:1")],
        ),
        (
            Format::OpenTracing,
            vec![
                ("ot-tracer-traceid", "4bf92f3577b34da6"),
                ("ot-tracer-spanid", "00f067aa0ba902b7"),
                ("ot-tracer-sampled", "true"),
            ],
        ),
    ]
}

#[test]
fn every_single_valued_header_repeated_is_an_error() {
    let t = tracer();
    for (format, pairs) in valid() {
        let mut h = HeaderMap::new();
        for (k, v) in &pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        assert!(t.extract(format, &h).unwrap().is_some(), "{format}");
        for (k, v) in &pairs {
            let mut twice = h.clone();
            twice.append(*k, HeaderValue::from_static(v));
            let e = t.extract(format, &twice).unwrap_err();
            assert_eq!(e.kind, ExtractErrorKind::Malformed, "{format} {k}");
        }
        // A map carrier holds a repeated header as two spellings.
        let (k, v) = pairs[0];
        let mut m = map(&pairs);
        m.insert(k.to_ascii_uppercase(), v.to_string());
        assert!(t.extract(format, &m).is_err(), "{format} {k} in two cases");
    }
}

#[test]
fn a_value_that_is_not_text_is_an_error_not_absent() {
    let t = tracer();
    for (format, pairs) in valid() {
        let mut h = HeaderMap::new();
        for (k, v) in &pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        let (k, _) = pairs[0];
        h.insert(
            HeaderName::from_static(k),
            HeaderValue::from_bytes(b"\xff\xfe").unwrap(),
        );
        let e = t.extract(format, &h).unwrap_err();
        assert_eq!(e.kind, ExtractErrorKind::InvalidUtf8, "{format}");
    }
}

#[test]
fn only_sp_and_htab_are_trimmed() {
    let t = tracer();
    for (format, pairs) in valid() {
        let padded: Vec<(&str, String)> = pairs
            .iter()
            .map(|(k, v)| (*k, format!(" \t{v}\t ")))
            .collect();
        let m: HashMap<String, String> = padded
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        assert!(t.extract(format, &m).unwrap().is_some(), "{format}");
        for junk in ["\x0c", "\n", "\r", "\u{a0}", "\x0b"] {
            for (i, (k, _)) in pairs.iter().enumerate() {
                let mut m = map(&pairs);
                m.insert(k.to_string(), format!("{}{junk}", pairs[i].1));
                assert!(
                    t.extract(format, &m).is_err(),
                    "{format}: {k} with {junk:?} accepted"
                );
            }
        }
    }
    // The binary envelope over text, too.
    let ctx = SpanContext::new(7, 9, true);
    let mut m = HashMap::new();
    t.inject(&ctx, Format::Binary, &mut m);
    let hex = m["spanrec-context"].clone();
    m.insert("spanrec-context".into(), format!("\t{hex} "));
    assert!(t.extract(Format::Binary, &m).unwrap().is_some());
    m.insert("spanrec-context".into(), format!("{hex}\x0c"));
    assert!(t.extract(Format::Binary, &m).is_err());
}

#[test]
fn hex_never_takes_a_sign() {
    let t = tracer();
    // `u8::from_str_radix("+1", 16)` is `Ok(1)`: not for us.
    let ctx = SpanContext::new(7, 9, true);
    let mut m = HashMap::new();
    t.inject(&ctx, Format::Binary, &mut m);
    let hex = m["spanrec-context"].clone();
    let signed = format!("+{}", &hex[1..]);
    m.insert("spanrec-context".into(), signed);
    assert_eq!(
        t.extract(Format::Binary, &m).unwrap_err().kind,
        ExtractErrorKind::InvalidHex
    );
    // A percent escape with a sign is not an escape: `%+1` in Jaeger.
    let m = map(&[("uber-trace-id", "4bf92f3577b34da6:00f067aa0ba902b7:0:%+1")]);
    assert!(t.extract(Format::Jaeger, &m).is_err());
    for id in ["+4bf92f3577b34da", "-4bf92f3577b34da"] {
        let m = map(&[
            ("ot-tracer-traceid", id),
            ("ot-tracer-spanid", "00f067aa0ba902b7"),
        ]);
        assert!(t.extract(Format::OpenTracing, &m).is_err(), "{id}");
    }
}

#[test]
fn jaeger_flags_are_one_byte() {
    let t = tracer();
    for (flags, ok) in [
        ("1", true),
        ("03", true),
        ("ff", true),
        ("001", false),
        ("100", false),
    ] {
        let v = format!("4bf92f3577b34da6:00f067aa0ba902b7:0:{flags}");
        let m = map(&[("uber-trace-id", &v)]);
        assert_eq!(t.extract(Format::Jaeger, &m).is_ok(), ok, "{flags}");
    }
}

#[test]
fn b3_decisions_without_ids_go_on_as_decisions() {
    let t = tracer();
    for (format, header, want) in [
        (Format::B3Single, "b3", "0"),
        (Format::B3Multi, "x-b3-sampled", "0"),
    ] {
        let m = map(&[(header, "0")]);
        let ctx = t.extract(format, &m).unwrap().unwrap();
        assert!(!ctx.is_valid() && !ctx.sampled);
        let mut out = HashMap::new();
        t.inject(&ctx, format, &mut out);
        assert_eq!(out, map(&[(header, want)]), "{format}");
        // Formats that cannot say "a decision without ids" write nothing
        // rather than zero ids.
        for other in [
            Format::W3c,
            Format::Jaeger,
            Format::OpenTracing,
            Format::Binary,
        ] {
            let mut out = HashMap::new();
            t.inject(&ctx, other, &mut out);
            assert!(out.is_empty(), "{other}: {out:?}");
        }
    }
}

#[test]
fn prefixed_baggage_keys_are_tokens_and_unique_in_any_case() {
    let t = tracer();
    for (format, prefix, pairs) in [
        (Format::OpenTracing, "ot-baggage-", valid()[3].1.clone()),
        (Format::Jaeger, "uberctx-", valid()[2].1.clone()),
    ] {
        let mut h = HeaderMap::new();
        for (k, v) in &pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        let name = |k: &str| HeaderName::from_bytes(format!("{prefix}{k}").as_bytes()).unwrap();
        h.append(name("user"), HeaderValue::from_static("alice"));
        h.append(name("user"), HeaderValue::from_static("mallory"));
        h.append(name("tenant"), HeaderValue::from_static("acme"));
        h.append(name("bin"), HeaderValue::from_bytes(b"\xff").unwrap());
        let before = t.stats().baggage_not_propagated;
        let ctx = t.extract(format, &h).unwrap().unwrap();
        let mut got = ctx.baggage.clone();
        got.sort();
        assert_eq!(got.len(), 2, "{format}: {got:?}");
        assert_eq!(ctx.baggage_item("tenant"), Some("acme"));
        assert!(ctx.baggage_item("user").is_some());
        // The duplicate and the value that is not text are counted.
        assert_eq!(t.stats().baggage_not_propagated - before, 2, "{format}");
        // Map carriers: one key in two cases is a duplicate too.
        let mut m = map(&pairs);
        m.insert(format!("{prefix}User"), "a".into());
        m.insert(format!("{prefix}user"), "b".into());
        m.insert(format!("{prefix}bad key"), "c".into());
        let ctx = t.extract(format, &m).unwrap().unwrap();
        assert_eq!(ctx.baggage.len(), 1, "{format}: {:?}", ctx.baggage);
    }
}

#[test]
fn the_binary_envelope_admits_keys_like_every_format() {
    let t = tracer();
    let mut ctx = SpanContext::new(7, 9, true);
    ctx.baggage = vec![
        ("user".into(), "alice".into()),
        ("bad key".into(), "x".into()),
        ("user".into(), "mallory".into()),
        ("".into(), "empty key".into()),
    ];
    let bytes = t.inject_binary(&ctx);
    let back = t.extract_binary(&bytes).unwrap().unwrap();
    assert_eq!(
        back.baggage,
        vec![("user".to_string(), "alice".to_string())]
    );
}
