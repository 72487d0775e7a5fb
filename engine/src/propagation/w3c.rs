//! W3C Trace Context (Recommendation, 2021): `traceparent` and `tracestate`;
//! the `baggage` header is W3C Baggage (see `baggage.rs`).

use super::{
    baggage, trim_ows, BaggageLimits, Carrier, ExtractError, ExtractErrorKind, Extracted, Format,
    Refused,
};
use crate::formats::validate_tracestate_key;
use crate::hex;
use crate::span_context::SpanContext;

const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";
/// At most this many list members are kept or sent.
const MAX_MEMBERS: usize = 32;

fn err(kind: ExtractErrorKind, input: &str) -> ExtractError {
    ExtractError::new(Format::W3c, TRACEPARENT, kind, input)
}

/// A `traceparent` value parsed: trace id, parent id, sampled, version.
pub(crate) type Traceparent = (u128, u64, bool, u8);

/// Parses a `traceparent` value.
pub(crate) fn parse_traceparent(value: &str) -> Result<Traceparent, ExtractError> {
    let v = trim_ows(value);
    let b = v.as_bytes();
    // Every valid value is ASCII; checking first makes the slicing below
    // safe on any input.
    if b.len() < 55 || !v.is_ascii() {
        return Err(err(ExtractErrorKind::Malformed, value));
    }
    let version = hex::decode_2_lowercase([b[0], b[1]])
        .ok_or_else(|| err(ExtractErrorKind::UnsupportedVersion, value))?;
    if version == 0xff {
        return Err(err(ExtractErrorKind::UnsupportedVersion, value));
    }
    // Version 00 is exactly 55 characters; a later version may append
    // fields after a dash, and is parsed by its version-00 prefix.
    if (version == 0 && b.len() != 55) || (b.len() > 55 && b[55] != b'-') {
        return Err(err(ExtractErrorKind::Malformed, value));
    }
    if b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
        return Err(err(ExtractErrorKind::Malformed, value));
    }
    // Three `Option<u64>`s in registers, one error path (a closure
    // returning `Result<u64, ExtractError>` wrote each through memory).
    let (Some(high), Some(low), Some(span_id)) = (id16(b, 3), id16(b, 19), id16(b, 36)) else {
        return Err(err(ExtractErrorKind::InvalidHex, value));
    };
    let trace_id = (u128::from(high) << 64) | u128::from(low);
    let flags = hex::decode_2_lowercase([b[53], b[54]])
        .ok_or_else(|| err(ExtractErrorKind::InvalidFlags, value))?;
    if trace_id == 0 || span_id == 0 {
        return Err(err(ExtractErrorKind::ZeroId, value));
    }
    Ok((trace_id, span_id, flags & 1 == 1, version))
}

/// The 16 lowercase hex digits at `b[at..]`.
#[inline(always)]
fn id16(b: &[u8], at: usize) -> Option<u64> {
    let digits = b.get(at..at + 16)?;
    hex::decode_16_lowercase(digits.try_into().ok()?)
}

/// A list-member value: up to 256 printable ASCII characters except `,`
/// and `=`, not ending in a space.
fn valid_value(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 256
        && v.bytes()
            .all(|b| (0x20..=0x7e).contains(&b) && b != b',' && b != b'=')
        && !v.ends_with(' ')
}

/// The members of a `tracestate` list, read from every line of the
/// header in order (repeated lines are one list, RFC 7230 § 3.2.2).
///
/// - An invalid member (key grammar, value characters) drops the whole
///   list for `traceparent` version 00, as the W3C conformance suite
///   requires; for a higher version, which W3C lets a vendor parse "to
///   the best of its ability", the invalid member alone is left out.
/// - More than 32 members (every non-empty member counts, duplicates
///   too) drops the whole list.
/// - A key seen before is left out: the first (left-most, most recent)
///   entry wins (W3C lets a receiver remove duplicates).
///
/// Linear and bounded whatever the input: it stops at the 33rd member
/// (so duplicate checks compare at most 32 × 32 keys) and allocates only
/// the list of at most 32 members.
pub(crate) struct TraceStateList<'a> {
    members: Vec<(&'a str, &'a str)>,
    /// Non-empty members seen, kept or not.
    seen: usize,
    /// Leave invalid members out instead of dropping the list.
    lenient: bool,
    /// The list is dropped.
    dropped: bool,
}

impl<'a> TraceStateList<'a> {
    pub(crate) fn new(version: u8) -> Self {
        TraceStateList {
            members: Vec::new(),
            seen: 0,
            lenient: version > 0,
            dropped: false,
        }
    }

    /// One line of the header (`None`: not text, which drops the list).
    pub(crate) fn add_line(&mut self, line: Option<&'a str>) {
        let Some(line) = line else {
            self.dropped = true;
            return;
        };
        if self.dropped {
            return;
        }
        for m in line.split(',') {
            let m = trim_ows(m);
            if m.is_empty() {
                continue;
            }
            self.seen += 1;
            if self.seen > MAX_MEMBERS {
                self.dropped = true;
                return;
            }
            match m.split_once('=') {
                Some((k, v)) if validate_tracestate_key(k) && valid_value(v) => {
                    if !self.members.iter().any(|(mk, _)| *mk == k) {
                        self.members.push((k, v));
                    }
                }
                _ if self.lenient => {}
                _ => {
                    self.dropped = true;
                    return;
                }
            }
        }
    }

    /// The members kept, or `None` when the list was dropped.
    pub(crate) fn finish(self) -> Option<Vec<(&'a str, &'a str)>> {
        (!self.dropped).then_some(self.members)
    }
}

/// Parses one `tracestate` value as version 00 does.
pub(crate) fn parse_tracestate(value: &str) -> Option<Vec<(&str, &str)>> {
    let mut list = TraceStateList::new(0);
    list.add_line(Some(value));
    list.finish()
}

/// The first lines of a list header seen in the carrier pass, and how
/// many there were. Two are kept in place; a request that repeats the
/// header more often is read again, line by line, from the carrier (no
/// allocation in proportion to hostile input).
#[derive(Default)]
struct Lines<'a> {
    first: [Option<&'a str>; 2],
    count: usize,
}

impl<'a> Lines<'a> {
    fn push(&mut self, line: Option<&'a str>) {
        if let Some(slot) = self.first.get_mut(self.count) {
            *slot = line;
        }
        self.count += 1;
    }

    /// Calls `f` with every line, in order.
    fn for_each(&self, carrier: &'a dyn Carrier, name: &str, mut f: impl FnMut(Option<&'a str>)) {
        match self.first.get(..self.count) {
            Some(kept) => kept.iter().for_each(|&line| f(line)),
            None => carrier.for_each_value(name, &mut f),
        }
    }
}

pub(crate) fn extract(carrier: &dyn Carrier, limits: BaggageLimits) -> Extracted {
    // One pass over the carrier for the three headers, then each in turn.
    let (mut traceparent, mut count) = (None, 0usize);
    let (mut tracestate, mut baggage_lines) = (Lines::default(), Lines::default());
    carrier.for_each_value_of(
        &[TRACEPARENT, TRACESTATE, baggage::HEADER],
        &mut |i, v| match i {
            0 => {
                count += 1;
                traceparent.get_or_insert(v);
            }
            1 => tracestate.push(v),
            _ => baggage_lines.push(v),
        },
    );
    let tp = match (traceparent, count) {
        (None, _) => return Ok(None),
        // More than one `traceparent` is invalid: which is the caller's?
        (_, 2..) => {
            return Err(ExtractError::new(
                Format::W3c,
                TRACEPARENT,
                ExtractErrorKind::Malformed,
                "<the header is repeated>",
            ))
        }
        (Some(None), _) => {
            return Err(ExtractError::new(
                Format::W3c,
                TRACEPARENT,
                ExtractErrorKind::InvalidUtf8,
                "<a value that is not text>",
            ))
        }
        (Some(Some(tp)), _) => tp,
    };
    let (trace_id, span_id, sampled, version) = parse_traceparent(tp)?;
    let mut ctx = SpanContext::new(trace_id, span_id, sampled);
    let mut refused = Refused::default();
    if tracestate.count > 0 {
        let mut list = TraceStateList::new(version);
        tracestate.for_each(carrier, TRACESTATE, |line| list.add_line(line));
        match list.finish() {
            Some(members) => ctx.trace_state = join(members.iter().copied()),
            None => refused.headers += 1,
        }
    }
    if baggage_lines.count > 0 {
        let mut reader = baggage::Reader::new(limits);
        baggage_lines.for_each(carrier, baggage::HEADER, |line| match line {
            Some(line) => reader.add_line(line, &mut ctx.baggage),
            None => refused.headers += 1,
        });
        refused.baggage = reader.refused();
    }
    Ok(Some((ctx, refused)))
}

fn join<'a>(members: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = String::new();
    for (k, v) in members {
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out
}

/// Writes `traceparent`, `tracestate` (with this service's member, if it has
/// a key, moved to the front and set to its span id) and `baggage`.
pub(crate) fn inject(ctx: &SpanContext, carrier: &mut dyn Carrier, own_key: Option<&str>) -> usize {
    let mut traceparent = [0u8; 55];
    traceparent[..3].copy_from_slice(b"00-");
    traceparent[3..35].copy_from_slice(&hex::encode_u128(ctx.trace_id));
    traceparent[35] = b'-';
    traceparent[36..52].copy_from_slice(&hex::encode_u64(ctx.span_id));
    traceparent[52..].copy_from_slice(if ctx.sampled { b"-01" } else { b"-00" });
    carrier.set(TRACEPARENT, super::ascii_str(&traceparent));
    if own_key.is_none() && ctx.trace_state.is_empty() {
        return baggage::inject(&ctx.baggage, carrier);
    }
    let incoming = parse_tracestate(&ctx.trace_state).unwrap_or_default();
    let own_digits = hex::encode_u64(ctx.span_id);
    let own_value = super::ascii_str(&own_digits);
    let members: Vec<(&str, &str)> = match own_key {
        Some(key) => std::iter::once((key, own_value))
            .chain(incoming.into_iter().filter(|(k, _)| *k != key))
            .take(MAX_MEMBERS)
            .collect(),
        None => incoming,
    };
    if !members.is_empty() {
        carrier.set(TRACESTATE, &join(members.into_iter()));
    }
    baggage::inject(&ctx.baggage, carrier)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const LIMITS: BaggageLimits = BaggageLimits {
        max_items: 64,
        max_bytes: 8192,
    };

    #[test]
    fn spec_examples() {
        let (t, s, sampled, _) =
            parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(t, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(s, 0x00f067aa0ba902b7);
        assert!(sampled);
        let (_, _, sampled, _) =
            parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap();
        assert!(!sampled);
        // A future version with extra fields parses by its prefix.
        assert!(parse_traceparent(
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds"
        )
        .is_ok());
        let bad = [
            (
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                ExtractErrorKind::UnsupportedVersion,
            ),
            (
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                ExtractErrorKind::ZeroId,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                ExtractErrorKind::ZeroId,
            ),
            (
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                ExtractErrorKind::InvalidHex,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
                ExtractErrorKind::Malformed,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
                ExtractErrorKind::Malformed,
            ),
            (
                "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01.what",
                ExtractErrorKind::Malformed,
            ),
            (
                "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                ExtractErrorKind::UnsupportedVersion,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
                ExtractErrorKind::InvalidFlags,
            ),
            (
                "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                ExtractErrorKind::Malformed,
            ),
        ];
        for (input, kind) in bad {
            assert_eq!(parse_traceparent(input).unwrap_err().kind, kind, "{input}");
        }
    }

    #[test]
    fn tracestate_rules() {
        assert_eq!(
            parse_tracestate("rojo=00f067aa0ba902b7, congo=t61rcWkgMzE").unwrap(),
            vec![("rojo", "00f067aa0ba902b7"), ("congo", "t61rcWkgMzE")]
        );
        assert!(parse_tracestate("tenant@vendor=v,0tenant@sys=w").is_some());
        // Duplicates: the first entry wins, the list is kept.
        assert_eq!(parse_tracestate("k=v,k=w").unwrap(), vec![("k", "v")]);
        for bad in [
            "Upper=1",
            "k=a=b",
            "k=",
            "1key=v",
            "t@Vendor=v",
            "k=v\u{7f}",
            "k",
        ] {
            assert!(parse_tracestate(bad).is_none(), "{bad}");
        }
        let many: Vec<String> = (0..33).map(|i| format!("k{i}=v")).collect();
        assert!(parse_tracestate(&many.join(",")).is_none());
        assert!(parse_tracestate(&many[..32].join(",")).is_some());
    }

    #[test]
    fn forwarding_moves_own_member_to_front() {
        let mut ctx = SpanContext::new(1, 0xabc, true);
        ctx.trace_state = "rojo=1,spanrec=old,congo=2".into();
        let mut h = HashMap::new();
        inject(&ctx, &mut h, Some("spanrec"));
        assert_eq!(h["tracestate"], "spanrec=0000000000000abc,rojo=1,congo=2");
        assert_eq!(
            h["traceparent"],
            "00-00000000000000000000000000000001-0000000000000abc-01"
        );
        let (back, _) = extract(&h, LIMITS).unwrap().unwrap();
        assert_eq!(
            (back.trace_id, back.span_id, back.sampled),
            (1, 0xabc, true)
        );
        // Without an own key the list is forwarded as received.
        let mut h = HashMap::new();
        inject(&ctx, &mut h, None);
        assert_eq!(h["tracestate"], "rojo=1,spanrec=old,congo=2");
    }
}
