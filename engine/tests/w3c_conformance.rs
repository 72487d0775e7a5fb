//! W3C Trace Context (Level 2) and W3C Baggage, checked the way a
//! conformance harness checks a service: headers in (as an
//! `http::HeaderMap`, repeated lines and all), the server gate
//! (`join_or_start`), then what the service sends downstream. Expected
//! outcomes are written from the specifications' text, cited per case, not
//! from spanrec's code.
#![cfg(feature = "http")]

use http::{HeaderMap, HeaderName, HeaderValue};
use spanrec::{Format, NullRecorder, Tracer};

const TRACE: &str = "12345678901234567890123456789012";
const VALID: &str = "00-12345678901234567890123456789012-1234567890123456-01";

fn tracer() -> Tracer {
    Tracer::builder()
        .recorder(NullRecorder::new())
        .propagation([Format::W3c])
        .tracestate_key("spanrec")
        .build()
        .unwrap()
}

fn headers(lines: &[(&str, &[u8])]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (name, value) in lines {
        h.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_bytes(value).unwrap(),
        );
    }
    h
}

/// What the service sends downstream for a request with `lines`:
/// (trace id, tracestate members without our own, propagation errors).
fn downstream(lines: &[(&str, &[u8])]) -> (String, Vec<(String, String)>, u64) {
    let t = tracer();
    let span = t.join_or_start("server", &headers(lines));
    let mut out = HeaderMap::new();
    t.inject(&span.context(), Format::W3c, &mut out);
    let tp = out["traceparent"].to_str().unwrap().to_string();
    let fields: Vec<&str> = tp.split('-').collect();
    assert_eq!(fields.len(), 4, "{tp}");
    assert_eq!(fields[0], "00", "we send the version we know");
    let members = out
        .get("tracestate")
        .map(|v| {
            v.to_str()
                .unwrap()
                .split(',')
                .map(|m| {
                    let (k, v) = m.split_once('=').unwrap();
                    (k.to_string(), v.to_string())
                })
                .filter(|(k, _)| k != "spanrec")
                .collect()
        })
        .unwrap_or_default();
    (fields[1].to_string(), members, t.stats().propagation_errors)
}

fn joined(lines: &[(&str, &[u8])]) -> bool {
    downstream(lines).0 == TRACE
}

#[test]
fn traceparent_valid_forms_are_joined() {
    // § traceparent: lowercase hex fields, version 00, any flags.
    assert!(joined(&[("traceparent", VALID.as_bytes())]));
    assert!(joined(&[(
        "traceparent",
        b"00-12345678901234567890123456789012-1234567890123456-00"
    )]));
    // "Vendors MUST expect the header name in any case."
    assert!(joined(&[("TraceParent", VALID.as_bytes())]));
    // OWS around a field value (RFC 7230 § 3.2.4) is not part of it.
    assert!(joined(&[(
        "traceparent",
        format!(" \t{VALID}\t ").as_bytes()
    )]));
    // A higher version: parse the version-00 fields, ignore what follows
    // a dash.
    assert!(joined(&[(
        "traceparent",
        b"cc-12345678901234567890123456789012-1234567890123456-01"
    )]));
    assert!(joined(&[(
        "traceparent",
        b"cc-12345678901234567890123456789012-1234567890123456-01-what-the-future-will-be-like"
    )]));
}

#[test]
fn invalid_traceparent_restarts_the_trace() {
    let bad: &[&str] = &[
        // Version 00 is exactly 55 characters.
        "00-12345678901234567890123456789012-1234567890123456-01.",
        "00-12345678901234567890123456789012-1234567890123456-01-what-the-future-will-be-like",
        // A higher version must continue with a dash.
        "cc-12345678901234567890123456789012-1234567890123456-01.what-the-future-will-be-like",
        // Version ff is invalid; the version is 2 lowercase hex digits.
        "ff-12345678901234567890123456789012-1234567890123456-01",
        ".0-12345678901234567890123456789012-1234567890123456-01",
        "0.-12345678901234567890123456789012-1234567890123456-01",
        "000-12345678901234567890123456789012-1234567890123456-01",
        "0-12345678901234567890123456789012-1234567890123456-01",
        // All-zero ids; characters outside HEXDIGLC; wrong lengths.
        "00-00000000000000000000000000000000-1234567890123456-01",
        "00-12345678901234567890123456789012-0000000000000000-01",
        "00-.2345678901234567890123456789012-1234567890123456-01",
        "00-1234567890123456789012345678901.-1234567890123456-01",
        "00-ABCDEF78901234567890123456789012-1234567890123456-01",
        "00-123456789012345678901234567890123-1234567890123456-01",
        "00-1234567890123456789012345678901-1234567890123456-01",
        "00-12345678901234567890123456789012-.234567890123456-01",
        "00-12345678901234567890123456789012-12345678901234567-01",
        "00-12345678901234567890123456789012-123456789012345-01",
        "00-12345678901234567890123456789012-1234567890123456-.0",
        "00-12345678901234567890123456789012-1234567890123456-0",
        "00-12345678901234567890123456789012-1234567890123456-001",
    ];
    for tp in bad {
        let (trace, _, errors) = downstream(&[("traceparent", tp.as_bytes())]);
        assert_ne!(trace, TRACE, "{tp:?} was joined");
        assert_ne!(trace, "0".repeat(32));
        assert_eq!(errors, 1, "{tp:?}: a present, invalid header is counted");
    }
    // Wrong header names are no traceparent at all.
    for name in ["trace-parent", "trace.parent"] {
        assert!(!joined(&[(name, VALID.as_bytes())]));
    }
}

#[test]
fn only_sp_and_htab_are_optional_whitespace() {
    // `http` refuses other control characters in a header value; a map
    // carrier can hold them, and they make the value invalid.
    use std::collections::HashMap;
    let t = tracer();
    for tp in [
        format!("\x0c{VALID}"),
        format!("{VALID}\x0b"),
        format!("{VALID}\r\n"),
        format!("\u{a0}{VALID}"),
    ] {
        let h = HashMap::from([("traceparent".to_string(), tp.clone())]);
        assert!(t.extract(Format::W3c, &h).is_err(), "{tp:?}");
    }
    let h = HashMap::from([
        ("traceparent".to_string(), VALID.to_string()),
        ("tracestate".to_string(), "bar=2,foo=a\x0cb".to_string()),
    ]);
    assert_eq!(t.extract(Format::W3c, &h).unwrap().unwrap().trace_state, "");
}

#[test]
fn two_traceparent_headers_are_invalid() {
    let (trace, _, errors) = downstream(&[
        (
            "traceparent",
            b"00-12345678901234567890123456789011-1234567890123456-01",
        ),
        ("traceparent", VALID.as_bytes()),
    ]);
    assert_ne!(trace, "12345678901234567890123456789011");
    assert_ne!(trace, TRACE);
    assert_eq!(errors, 1);
    // The same value twice is still two headers.
    assert!(!joined(&[
        ("traceparent", VALID.as_bytes()),
        ("traceparent", VALID.as_bytes())
    ]));
}

#[test]
fn a_traceparent_that_is_not_text_is_an_error_not_absent() {
    let (trace, _, errors) = downstream(&[("traceparent", b"00-\xff")]);
    assert_ne!(trace, TRACE);
    assert_eq!(errors, 1);
}

fn members(lines: &[(&str, &[u8])]) -> Vec<(String, String)> {
    let mut all: Vec<(&str, &[u8])> = vec![("traceparent", VALID.as_bytes())];
    all.extend_from_slice(lines);
    let (trace, members, _) = downstream(&all);
    assert_eq!(trace, TRACE, "tracestate never affects traceparent");
    members
}

fn kv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn tracestate_lines_combine_in_order() {
    // "When receiving multiple tracestate header fields, they MUST be
    // combined into a single header according to RFC7230."
    assert_eq!(
        members(&[
            ("tracestate", b"foo=1,bar=2"),
            ("tracestate", b"rojo=1,congo=2"),
            ("tracestate", b"baz=3"),
        ]),
        kv(&[
            ("foo", "1"),
            ("bar", "2"),
            ("rojo", "1"),
            ("congo", "2"),
            ("baz", "3")
        ])
    );
    // Empty lines and empty members are allowed.
    assert_eq!(
        members(&[("tracestate", b"foo=1"), ("tracestate", b"")]),
        kv(&[("foo", "1")])
    );
    assert_eq!(
        members(&[("tracestate", b""), ("tracestate", b"foo=1")]),
        kv(&[("foo", "1")])
    );
    assert_eq!(
        members(&[("tracestate", b" , foo=1 ,, \t,")]),
        kv(&[("foo", "1")])
    );
}

#[test]
fn tracestate_ows_and_all_allowed_characters() {
    assert_eq!(
        members(&[("tracestate", b"foo=1 \t , \t bar=2, \t baz=3")]),
        kv(&[("foo", "1"), ("bar", "2"), ("baz", "3")])
    );
    for line in ["\t foo=1 \t", " foo=1", "foo=1\t"] {
        assert_eq!(
            members(&[("tracestate", line.as_bytes())]),
            kv(&[("foo", "1")])
        );
    }
    let key = "abcdefghijklmnopqrstuvwxyz0123456789_-*/";
    let tenant_key = format!("{key}@a-z0-9_-*/");
    // value: chr = %x20-2B / %x2D-3C / %x3E-7E, not ending in a space.
    let value: String = (0x20u8..=0x7e)
        .filter(|b| *b != b',' && *b != b'=')
        .map(char::from)
        .collect();
    for k in [key.to_string(), tenant_key] {
        let line = format!("{k}={value}");
        assert_eq!(
            members(&[("tracestate", line.as_bytes())]),
            vec![(k.clone(), value.clone())]
        );
    }
}

#[test]
fn tracestate_key_limits() {
    // simple-key: up to 256; tenant-id up to 241; system-id up to 14.
    let at =
        |tenant: usize, system: usize| format!("{}@{}=1", "t".repeat(tenant), "v".repeat(system));
    for (line, ok) in [
        (format!("{}=1", "z".repeat(256)), true),
        (format!("{}=1", "z".repeat(257)), false),
        (at(241, 14), true),
        (at(242, 1), false),
        (at(1, 15), false),
    ] {
        let got = members(&[("tracestate", b"foo=1"), ("tracestate", line.as_bytes())]);
        assert_eq!(got.iter().any(|(k, _)| k == "foo"), ok, "{}", &line[..20]);
    }
}

#[test]
fn an_invalid_member_drops_a_version_00_list() {
    for line in [
        "foo =1",
        "FOO=1",
        "foo.bar=1",
        "foo@=1,bar=2",
        "@foo=1,bar=2",
        "foo@@bar=1,bar=2",
        "foo@bar@baz=1,bar=2",
        "foo=bar=baz",
        "foo=,bar=3",
    ] {
        let all = [
            ("traceparent", VALID.as_bytes()),
            ("tracestate", line.as_bytes()),
        ];
        let (trace, got, errors) = downstream(&all);
        assert_eq!(trace, TRACE);
        assert!(got.is_empty(), "{line:?} kept {got:?}");
        assert_eq!(errors, 1, "{line:?}: the dropped list is counted");
    }
}

#[test]
fn a_higher_version_keeps_the_valid_members() {
    // "Vendors need to attempt to parse tracestate if a higher version is
    // detected, to the best of its ability."
    let all = [
        (
            "traceparent",
            b"cc-12345678901234567890123456789012-1234567890123456-01".as_slice(),
        ),
        ("tracestate", b"foo@=1,bar=2,FOO=3,baz=4".as_slice()),
    ];
    let (trace, got, _) = downstream(&all);
    assert_eq!(trace, TRACE);
    assert_eq!(got, kv(&[("bar", "2"), ("baz", "4")]));
}

#[test]
fn tracestate_member_count_limit() {
    let lines = [
        "bar01=01,bar02=02,bar03=03,bar04=04,bar05=05,bar06=06,bar07=07,bar08=08,bar09=09,bar10=10",
        "bar11=11,bar12=12,bar13=13,bar14=14,bar15=15,bar16=16,bar17=17,bar18=18,bar19=19,bar20=20",
        "bar21=21,bar22=22,bar23=23,bar24=24,bar25=25,bar26=26,bar27=27,bar28=28,bar29=29,bar30=30",
    ];
    let mut all: Vec<(&str, &[u8])> = lines.iter().map(|l| ("tracestate", l.as_bytes())).collect();
    all.push(("tracestate", b"bar31=31,bar32=32"));
    // 32 members, plus our own: we drop the last to stay within 32.
    let got = members(&all);
    assert_eq!(got.len(), 31);
    assert_eq!(got[0], ("bar01".to_string(), "01".to_string()));
    all.pop();
    all.push(("tracestate", b"bar31=31,bar32=32,bar33=33"));
    assert!(members(&all).is_empty(), "33 members: the list is dropped");
}

#[test]
fn duplicated_tracestate_keys_keep_the_first_entry() {
    // "Only one entry per key is allowed"; a receiver MAY remove
    // duplicates (W3C trace-context #477): the left-most entry is the most
    // recent position, so it is the one kept. The list is not dropped.
    for lines in [
        vec!["foo=1,foo=2"],
        vec!["foo=1", "foo=2"],
        vec!["foo=1,bar=3", "bar=4,foo=2"],
    ] {
        let all: Vec<(&str, &[u8])> = lines.iter().map(|l| ("tracestate", l.as_bytes())).collect();
        let got = members(&all);
        let foo: Vec<_> = got.iter().filter(|(k, _)| k == "foo").collect();
        assert_eq!(foo.len(), 1, "{lines:?}: {got:?}");
        assert_eq!(foo[0].1, "1");
    }
}

#[test]
fn tracestate_without_a_valid_traceparent_is_not_read() {
    // "If the vendor failed to parse traceparent, it MUST NOT attempt to
    // parse tracestate."
    let (trace, got, _) = downstream(&[
        (
            "traceparent",
            b"00-00000000000000000000000000000000-1234567890123456-01",
        ),
        ("tracestate", b"foo=1"),
    ]);
    assert_ne!(trace, TRACE);
    assert!(got.is_empty());
}

fn baggage(lines: &[&[u8]]) -> (Vec<(String, String)>, u64) {
    let t = tracer();
    let mut all: Vec<(&str, &[u8])> = vec![("traceparent", VALID.as_bytes())];
    all.extend(lines.iter().map(|l| ("baggage", *l)));
    let ctx = t.extract(Format::W3c, &headers(&all)).unwrap().unwrap();
    (ctx.baggage, t.stats().baggage_not_propagated)
}

#[test]
fn baggage_lines_combine_and_ows_is_trimmed() {
    // "Context might be split into multiple headers"; "Leading and
    // trailing whitespaces (OWS) ... MUST be trimmed".
    let (got, refused) = baggage(&[
        b"userId =   alice",
        b"serverNode = DF%2028, isProduction = false",
    ]);
    assert_eq!(
        got,
        kv(&[
            ("userId", "alice"),
            ("serverNode", "DF 28"),
            ("isProduction", "false")
        ])
    );
    assert_eq!(refused, 0);
    // Properties are accepted (not kept); `=` may appear in a value.
    let (got, _) = baggage(&[
        b"key1=value1;property1;property2, key2 = value2, key3=value3; propertyKey=propertyValue, eq=a=b",
    ]);
    assert_eq!(
        got,
        kv(&[
            ("key1", "value1"),
            ("key2", "value2"),
            ("key3", "value3"),
            ("eq", "a=b")
        ])
    );
}

#[test]
fn baggage_outside_the_grammar_is_refused_member_by_member() {
    // baggage-octet excludes CTLs, whitespace, DQUOTE, comma, semicolon,
    // backslash; keys are tokens; properties follow the same rules.
    let (got, refused) =
        baggage(&[b"ok=1,sp=a b,dq=\"x\",bs=a\\b,bad key=1,=v,novalue,p=1;bad prop=2,ok2=2"]);
    assert_eq!(got, kv(&[("ok", "1"), ("ok2", "2")]));
    assert_eq!(refused, 7);
}

#[test]
fn baggage_invalid_utf8_decodes_to_replacement_characters() {
    // "percent-encoded octet sequences that do not match the UTF-8
    // encoding scheme MUST be replaced with the replacement code point".
    let (got, refused) = baggage(&[b"a=%ff,b=x%C3%28y,c=%E2%82%AC,d=%zz"]);
    assert_eq!(
        got,
        kv(&[
            ("a", "\u{fffd}"),
            ("b", "x\u{fffd}(y"),
            ("c", "\u{20ac}"),
            ("d", "%zz")
        ])
    );
    assert_eq!(refused, 0);
}

#[test]
fn baggage_limits_hold_both_ways() {
    let t = tracer();
    // 64 members and 8192 bytes are carried; a round trip keeps exactly
    // what extract accepted.
    let long = "x".repeat(120);
    let line: String = (0..80)
        .map(|i| format!("k{i:02}={long}"))
        .collect::<Vec<_>>()
        .join(",");
    let all = [
        ("traceparent", VALID.as_bytes()),
        ("baggage", line.as_bytes()),
    ];
    let ctx = t.extract(Format::W3c, &headers(&all)).unwrap().unwrap();
    assert_eq!(ctx.baggage.len(), 64);
    let mut out = HeaderMap::new();
    t.inject(&ctx, Format::W3c, &mut out);
    let sent = out["baggage"].to_str().unwrap();
    assert!(sent.len() <= 8192);
    let back = t.extract(Format::W3c, &out).unwrap().unwrap();
    assert_eq!(back.baggage, ctx.baggage);
    // Values that grow when encoded again: the header budget is measured
    // as injection writes it, so what is accepted is what is sent.
    let wide = "%3A".repeat(400); // ':' is sent on as %3A
    let line: String = (0..40)
        .map(|i| format!("w{i:02}={wide}"))
        .collect::<Vec<_>>()
        .join(",");
    let all = [
        ("traceparent", VALID.as_bytes()),
        ("baggage", line.as_bytes()),
    ];
    let ctx = t.extract(Format::W3c, &headers(&all)).unwrap().unwrap();
    let mut out = HeaderMap::new();
    t.inject(&ctx, Format::W3c, &mut out);
    assert!(out["baggage"].len() <= 8192);
    let back = t.extract(Format::W3c, &out).unwrap().unwrap();
    assert_eq!(back.baggage, ctx.baggage);
    assert!(!ctx.baggage.is_empty());
}

#[test]
fn baggage_that_is_not_text_is_counted() {
    let t = tracer();
    let all = [
        ("traceparent", VALID.as_bytes()),
        ("baggage", b"a=1".as_slice()),
        ("baggage", b"b=\xff".as_slice()),
    ];
    let ctx = t.extract(Format::W3c, &headers(&all)).unwrap().unwrap();
    assert_eq!(ctx.baggage, kv(&[("a", "1")]));
    assert_eq!(t.stats().propagation_errors, 1);
}
