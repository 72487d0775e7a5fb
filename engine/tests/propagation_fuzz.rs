//! Random and mutated headers for every format, each checked against an
//! oracle written here from the format's specification (not from
//! spanrec's parsers): an extract succeeds exactly when the oracle says
//! the input is valid, with the ids the oracle reads, and never panics.
//!
//! Cases per format: `SPANREC_FUZZ_CASES`, else 1,000,000 in an optimized
//! build (CI runs this file with `--release`) and 20,000 in a debug one.
//! The count run is printed.

use spanrec::{Format, NullRecorder, SpanContext, Tracer};
use std::collections::HashMap;

fn cases() -> u64 {
    let default = if cfg!(debug_assertions) {
        20_000
    } else {
        1_000_000
    };
    std::env::var("SPANREC_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// xorshift64*: fast, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len())]
    }
}

/// Characters that matter to the formats, plus some that never should.
const ALPHABET: &[&str] = &[
    "0", "1", "9", "a", "f", "A", "F", "g", "-", ":", "%", "+", " ", "\t", "=", ",", ";", "@",
    "\u{a0}", "\x0c", "\n", "é", "00", "ff", "d", "true", "false",
];

/// A mutation of `valid`: characters replaced, inserted, deleted, or the
/// value built from the alphabet outright.
fn mutate(rng: &mut Rng, valid: &str) -> String {
    let mut s: Vec<String> = valid.chars().map(String::from).collect();
    match rng.below(8) {
        0 => {
            let n = rng.below(80);
            return (0..n).map(|_| rng.pick(ALPHABET)).collect();
        }
        1 => return valid.to_string(),
        _ => {}
    }
    for _ in 0..=rng.below(3) {
        let at = rng.below(s.len() + 1);
        match rng.below(3) {
            0 if at < s.len() => s[at] = rng.pick(ALPHABET).to_string(),
            1 if at < s.len() => {
                s.remove(at);
            }
            _ => s.insert(at, rng.pick(ALPHABET).to_string()),
        }
    }
    s.concat()
}

// --- oracles, from the specifications ---

/// RFC 7230 OWS: spaces and horizontal tabs.
fn ows_trim(s: &str) -> &str {
    s.trim_start_matches([' ', '\t'])
        .trim_end_matches([' ', '\t'])
}

fn all(s: &str, f: impl Fn(char) -> bool) -> bool {
    s.chars().all(f)
}

fn hexdiglc(c: char) -> bool {
    c.is_ascii_digit() || ('a'..='f').contains(&c)
}

fn hexdig(c: char) -> bool {
    c.is_ascii_hexdigit()
}

fn nonzero(s: &str) -> bool {
    s.chars().any(|c| c != '0')
}

/// W3C Trace Context § traceparent, with § Versioning: `(trace, parent,
/// sampled)` when valid.
fn oracle_traceparent(value: &str) -> Option<(u128, u64, bool)> {
    let v = ows_trim(value);
    if !v.is_ascii() || v.len() < 55 {
        return None;
    }
    let version = &v[0..2];
    if !all(version, hexdiglc) || version == "ff" {
        return None;
    }
    if version == "00" && v.len() != 55 {
        return None;
    }
    if v.len() > 55 && &v[55..56] != "-" {
        return None;
    }
    let (trace, parent, flags) = (&v[3..35], &v[36..52], &v[53..55]);
    if &v[2..3] != "-" || &v[35..36] != "-" || &v[52..53] != "-" {
        return None;
    }
    if !all(trace, hexdiglc) || !all(parent, hexdiglc) || !all(flags, hexdiglc) {
        return None;
    }
    if !nonzero(trace) || !nonzero(parent) {
        return None;
    }
    let f = u8::from_str_radix(flags, 16).ok()?;
    Some((
        u128::from_str_radix(trace, 16).ok()?,
        u64::from_str_radix(parent, 16).ok()?,
        f & 1 == 1,
    ))
}

/// B3 single header (openzipkin/b3-propagation): `b3: {TraceId}-{SpanId}
/// [-{SamplingState}[-{ParentSpanId}]]` or the sampling state alone;
/// 16 or 32 lower-hex trace ids, 16 lower-hex span ids, none all zeros.
fn oracle_b3(value: &str) -> Option<(u128, u64, bool)> {
    let v = ows_trim(value);
    let state = |s: &str| match s {
        "1" | "d" => Some(true),
        "0" => Some(false),
        _ => None,
    };
    let parts: Vec<&str> = v.split('-').collect();
    if parts.len() == 1 {
        return state(parts[0]).map(|s| (0, 0, s));
    }
    if parts.len() > 4 {
        return None;
    }
    fn id<'a>(s: &'a str, lens: &[usize]) -> Option<&'a str> {
        (lens.contains(&s.len()) && all(s, hexdiglc) && nonzero(s)).then_some(s)
    }
    let trace = id(parts[0], &[16, 32])?;
    let span = id(parts[1], &[16])?;
    let sampled = match parts.get(2) {
        Some(s) => state(s)?,
        None => true,
    };
    if let Some(p) = parts.get(3) {
        id(p, &[16])?;
    }
    Some((
        u128::from_str_radix(trace, 16).ok()?,
        u64::from_str_radix(span, 16).ok()?,
        sampled,
    ))
}

/// Jaeger `uber-trace-id: {trace-id}:{span-id}:{parent-span-id}:{flags}`,
/// hex of up to 32/16/16/2 digits (any case), trace and span not zero; the
/// value may be URL-encoded.
fn oracle_jaeger(value: &str) -> Option<(u128, u64, bool)> {
    let raw = ows_trim(value);
    // URL-decoding, written out: %XX with two hex digits, else literal.
    let bytes = raw.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 3 <= bytes.len()
            && bytes[i + 1].is_ascii_hexdigit()
            && bytes[i + 2].is_ascii_hexdigit()
        {
            out.push(u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let v = String::from_utf8(out).ok()?;
    let parts: Vec<&str> = v.split(':').collect();
    let [trace, span, parent, flags] = parts[..] else {
        return None;
    };
    fn hex(s: &str, max: usize) -> Option<&str> {
        (!s.is_empty() && s.len() <= max && all(s, hexdig)).then_some(s)
    }
    let trace = hex(trace, 32)?;
    let span = hex(span, 16)?;
    hex(parent, 16)?;
    let flags = hex(flags, 2)?;
    if !nonzero(trace) || !nonzero(span) {
        return None;
    }
    let f = u8::from_str_radix(flags, 16).ok()?;
    Some((
        u128::from_str_radix(trace, 16).ok()?,
        u64::from_str_radix(span, 16).ok()?,
        f & 0b11 != 0,
    ))
}

/// W3C Trace Context § tracestate (version 00): the list kept, or `None`
/// when it is dropped whole (an invalid member, more than 32 members);
/// duplicate keys keep their first entry.
fn oracle_tracestate(lines: &[&str]) -> Option<Vec<(String, String)>> {
    let lcalpha = |c: char| c.is_ascii_lowercase();
    let keychar = |c: char| lcalpha(c) || c.is_ascii_digit() || "_-*/".contains(c);
    let key_ok = |k: &str| match k.split_once('@') {
        None => {
            (1..=256).contains(&k.len()) && k.chars().next().is_some_and(lcalpha) && all(k, keychar)
        }
        Some((t, s)) => {
            (1..=241).contains(&t.len())
                && t.chars()
                    .next()
                    .is_some_and(|c| lcalpha(c) || c.is_ascii_digit())
                && all(t, keychar)
                && (1..=14).contains(&s.len())
                && s.chars().next().is_some_and(lcalpha)
                && all(s, keychar)
        }
    };
    let value_ok = |v: &str| {
        (1..=256).contains(&v.len())
            && all(v, |c| (' '..='~').contains(&c) && c != ',' && c != '=')
            && !v.ends_with(' ')
    };
    let mut kept: Vec<(String, String)> = Vec::new();
    let mut seen = 0;
    for member in lines.iter().flat_map(|l| l.split(',')) {
        let m = ows_trim(member);
        if m.is_empty() {
            continue;
        }
        seen += 1;
        if seen > 32 {
            return None;
        }
        let (k, v) = m.split_once('=')?;
        if !key_ok(k) || !value_ok(v) {
            return None;
        }
        if !kept.iter().any(|(have, _)| have == k) {
            kept.push((k.to_string(), v.to_string()));
        }
    }
    Some(kept)
}

fn tracer() -> Tracer {
    Tracer::builder()
        .recorder(NullRecorder::new())
        .honor_remote_sampling(true)
        .build()
        .unwrap()
}

fn ids(ctx: &SpanContext) -> (u128, u64, bool) {
    (ctx.trace_id, ctx.span_id, ctx.sampled)
}

#[test]
fn w3c_traceparent_and_tracestate_match_the_spec() {
    let (t, n) = (tracer(), cases());
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let valid_tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let states = [
        "rojo=00f067aa0ba902b7",
        "congo=t61rcWkgMzE",
        "t@sys=v a",
        "k=1,k=2",
    ];
    let (mut joined, mut lists) = (0u64, 0u64);
    for _ in 0..n {
        let tp = mutate(&mut rng, valid_tp);
        let lines: Vec<String> = (0..rng.below(3))
            .map(|_| {
                let s = rng.pick(&states);
                mutate(&mut rng, s)
            })
            .collect();
        let mut h: HashMap<String, String> = HashMap::new();
        h.insert("traceparent".into(), tp.clone());
        // A map carrier holds repeated lines under names in other cases.
        for (i, line) in lines.iter().enumerate() {
            let name = ["tracestate", "Tracestate", "TRACESTATE"][i];
            h.insert(name.into(), line.clone());
        }
        let got = t.extract(Format::W3c, &h);
        let want = oracle_traceparent(&tp);
        match (&got, want) {
            (Ok(Some(ctx)), Some(w)) => {
                assert_eq!(ids(ctx), w, "{tp:?}");
                joined += 1;
                // Only a single line has a defined order in a HashMap.
                if lines.len() <= 1 && tp.starts_with("00") {
                    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
                    let want: String = oracle_tracestate(&refs)
                        .unwrap_or_default()
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(",");
                    assert_eq!(ctx.trace_state, want, "{lines:?}");
                    lists += u64::from(!want.is_empty());
                }
            }
            (Err(_), None) => {}
            _ => panic!("traceparent {tp:?}: got {got:?}, the spec says {want:?}"),
        }
    }
    println!("w3c: {n} cases, {joined} joined, {lists} tracestate lists kept");
    assert!(
        joined > n / 20 && lists > n / 100,
        "the generator must reach valid input"
    );
}

#[test]
fn b3_single_matches_the_spec() {
    let (t, n) = (tracer(), cases());
    let mut rng = Rng(0x2345_6789_abcd_ef12);
    let seeds = [
        "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
        "a3ce929d0e0e4736-00f067aa0ba902b7-d-00f067aa0ba902b8",
        "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        "0",
    ];
    let mut ok = 0u64;
    for _ in 0..n {
        let seed = rng.pick(&seeds);
        let v = mutate(&mut rng, seed);
        let h = HashMap::from([("b3".to_string(), v.clone())]);
        let got = t.extract(Format::B3Single, &h);
        match (&got, oracle_b3(&v)) {
            (Ok(Some(ctx)), Some(w)) => {
                assert_eq!(ids(ctx), w, "{v:?}");
                ok += 1;
            }
            (Err(_), None) => {}
            (got, want) => panic!("b3 {v:?}: got {got:?}, the spec says {want:?}"),
        }
    }
    println!("b3: {n} cases, {ok} valid");
    assert!(ok > n / 20);
}

#[test]
fn b3_multi_matches_the_spec() {
    let (t, n) = (tracer(), cases());
    let mut rng = Rng(0x6789_abcd_ef12_3456);
    let mut ok = 0u64;
    for _ in 0..n {
        // One header mutated per case, the others valid.
        let mut fields = [
            "4bf92f3577b34da6a3ce929d0e0e4736".to_string(),
            "00f067aa0ba902b7".to_string(),
            "1".to_string(),
        ];
        let which = rng.below(3);
        fields[which] = mutate(&mut rng, &fields[which]);
        let [trace, span, sampled] = fields;
        let h = HashMap::from([
            ("x-b3-traceid".to_string(), trace.clone()),
            ("x-b3-spanid".to_string(), span.clone()),
            ("x-b3-sampled".to_string(), sampled.clone()),
        ]);
        // Ids as in the single header; `x-b3-sampled` is `1` or `0` (and
        // the legacy `true`/`false`).
        let want = (|| {
            let (t, s) = (ows_trim(&trace), ows_trim(&span));
            let trace_ok = [16, 32].contains(&t.len()) && all(t, hexdiglc) && nonzero(t);
            let span_ok = s.len() == 16 && all(s, hexdiglc) && nonzero(s);
            let sampled = match ows_trim(&sampled).to_ascii_lowercase().as_str() {
                "1" | "true" => true,
                "0" | "false" => false,
                _ => return None,
            };
            (trace_ok && span_ok).then(|| {
                (
                    u128::from_str_radix(t, 16).unwrap(),
                    u64::from_str_radix(s, 16).unwrap(),
                    sampled,
                )
            })
        })();
        let got = t.extract(Format::B3Multi, &h);
        match (&got, want) {
            (Ok(Some(ctx)), Some(w)) => {
                assert_eq!(ids(ctx), w);
                ok += 1;
            }
            (Err(_), None) => {}
            (got, want) => panic!("b3 multi {h:?}: got {got:?}, the spec says {want:?}"),
        }
    }
    println!("b3 multi: {n} cases, {ok} valid");
    assert!(ok > n / 20);
}

#[test]
fn jaeger_matches_the_spec() {
    let (t, n) = (tracer(), cases());
    let mut rng = Rng(0x3456_789a_bcde_f123);
    let seeds = [
        "4bf92f3577b34da6:00f067aa0ba902b7:0:1",
        "4bf92f3577b34da6a3ce929d0e0e4736%3A00f067aa0ba902b7%3A0%3A03",
        "abc:def:0:0",
    ];
    let mut ok = 0u64;
    for _ in 0..n {
        let seed = rng.pick(&seeds);
        let v = mutate(&mut rng, seed);
        let h = HashMap::from([("uber-trace-id".to_string(), v.clone())]);
        let got = t.extract(Format::Jaeger, &h);
        match (&got, oracle_jaeger(&v)) {
            (Ok(Some(ctx)), Some(w)) => {
                assert_eq!(ids(ctx), w, "{v:?}");
                ok += 1;
            }
            (Err(_), None) => {}
            (got, want) => panic!("jaeger {v:?}: got {got:?}, the spec says {want:?}"),
        }
    }
    println!("jaeger: {n} cases, {ok} valid");
    assert!(ok > n / 20);
}

/// Baggage has no single right answer under limits, so its oracle checks
/// what the spec fixes: every kept member was a valid list-member of the
/// input with its value decoded, keys are unique, the W3C minimums are
/// never exceeded, and kept + refused covers every member.
#[test]
fn w3c_baggage_keeps_only_valid_members() {
    let (t, n) = (tracer(), cases());
    let mut rng = Rng(0x4567_89ab_cdef_1234);
    let seeds = [
        "userId=alice,serverNode=DF%2028,isProduction=false",
        "key1=value1;property1;property2, key2 = value2",
        "k=%ff%41,e=,x=a=b",
    ];
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut kept_total = 0u64;
    for _ in 0..n {
        let seed = rng.pick(&seeds);
        let v = mutate(&mut rng, seed);
        let h = HashMap::from([
            ("traceparent".to_string(), tp.to_string()),
            ("baggage".to_string(), v.clone()),
        ]);
        let before = t.stats().baggage_not_propagated;
        let ctx = t.extract(Format::W3c, &h).unwrap().unwrap();
        let refused = t.stats().baggage_not_propagated - before;
        let members: Vec<&str> = v
            .split(',')
            .map(ows_trim)
            .filter(|m| !m.is_empty())
            .collect();
        assert_eq!(
            ctx.baggage.len() as u64 + refused,
            members.len() as u64,
            "{v:?}"
        );
        assert!(ctx.baggage.len() <= 64);
        for (k, _) in &ctx.baggage {
            let tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
            assert!(!k.is_empty() && all(k, tchar), "{k:?} from {v:?}");
            assert_eq!(ctx.baggage.iter().filter(|(o, _)| o == k).count(), 1);
            // The member it came from is in the input, valid per the ABNF.
            let octet = |c: char| matches!(c, '\x21' | '\x23'..='\x2b' | '\x2d'..='\x3a' | '\x3c'..='\x5b' | '\x5d'..='\x7e');
            assert!(
                members.iter().any(|m| {
                    let pair = m.split(';').next().unwrap_or("");
                    pair.split_once('=')
                        .is_some_and(|(mk, mv)| ows_trim(mk) == k && all(ows_trim(mv), octet))
                }),
                "{k:?} kept from {v:?}"
            );
        }
        kept_total += ctx.baggage.len() as u64;
        // Sent on, it fits the limits and comes back whole.
        let mut out = HashMap::new();
        t.inject(&ctx, Format::W3c, &mut out);
        if let Some(b) = out.get("baggage") {
            assert!(b.len() <= 8192);
        }
        let back = t.extract(Format::W3c, &out).unwrap().unwrap();
        assert_eq!(back.baggage, ctx.baggage, "{v:?}");
    }
    println!("baggage: {n} cases, {kept_total} members kept");
    assert!(kept_total > n);
}

#[test]
fn opentracing_and_binary_never_panic_and_round_trip() {
    let (t, n) = (tracer(), cases());
    let mut rng = Rng(0x5678_9abc_def1_2345);
    let mut ok = 0u64;
    for i in 0..n {
        let trace = mutate(&mut rng, "4bf92f3577b34da6");
        let span = mutate(&mut rng, "00f067aa0ba902b7");
        let sampled = mutate(&mut rng, "true");
        let h = HashMap::from([
            ("ot-tracer-traceid".to_string(), trace.clone()),
            ("ot-tracer-spanid".to_string(), span.clone()),
            ("ot-tracer-sampled".to_string(), sampled.clone()),
            ("ot-baggage-k".to_string(), mutate(&mut rng, "v%20w")),
        ]);
        // basictracer: hex ids (up to 32 / 16 digits, not zero), sampled
        // `true`/`false`/`1`/`0` in any case.
        let hex = |s: &str, max: usize| {
            let s = ows_trim(s);
            !s.is_empty() && s.len() <= max && all(s, hexdig) && nonzero(s)
        };
        let flag = ows_trim(&sampled).to_ascii_lowercase();
        let want = hex(&trace, 32)
            && hex(&span, 16)
            && ["true", "false", "1", "0"].contains(&flag.as_str());
        let got = t.extract(Format::OpenTracing, &h);
        assert_eq!(got.is_ok(), want, "{trace:?} {span:?} {sampled:?}: {got:?}");
        ok += u64::from(want);
        // The binary envelope: flipped bytes of a valid one, decoded.
        let mut ctx = SpanContext::new(u128::from(i as u32) + 1, i + 1, i % 2 == 0);
        ctx.baggage.push(("k".into(), mutate(&mut rng, "v")));
        let mut bytes = t.inject_binary(&ctx);
        let back = t.extract_binary(&bytes).unwrap().unwrap();
        assert_eq!(back, ctx);
        let at = rng.below(bytes.len());
        bytes[at] ^= 1 << rng.below(8);
        if let Ok(Some(c)) = t.extract_binary(&bytes) {
            assert!(c.trace_id != 0 && c.span_id != 0);
        }
        // Over text: hex digits in pairs (any case, no sign), OWS trimmed.
        let mut text = HashMap::new();
        t.inject(&ctx, Format::Binary, &mut text);
        let hex = mutate(&mut rng, &text["spanrec-context"]);
        let h = HashMap::from([("spanrec-context".to_string(), hex.clone())]);
        let got = t.extract(Format::Binary, &h);
        let digits = ows_trim(&hex);
        let hex_ok = !digits.is_empty() && digits.len().is_multiple_of(2) && all(digits, hexdig);
        if !hex_ok {
            assert!(got.is_err(), "{hex:?}: {got:?}");
        }
    }
    println!("opentracing + binary: {n} cases, {ok} valid");
    assert!(ok > n / 100);
}
