//! Context propagation: inject a [`SpanContext`] into a request's headers
//! (or a binary envelope) and extract it on the other side.
//!
//! Formats ([`Format`]), each in its own file: W3C Trace Context with W3C
//! Baggage (the default), OpenTracing basictracer headers, B3 single and
//! multi headers, Jaeger. [`Tracer::extract_any`](crate::Tracer::extract_any)
//! tries the tracer's configured formats in order;
//! [`Tracer::join_or_start`](crate::Tracer::join_or_start) is the server gate.
//! The binary format for non-HTTP RPC is in [`binary`].
//!
//! Extraction distinguishes "not present" (`Ok(None)`) from "corrupted"
//! (`Err`, saying what was wrong) and never panics on any input. Baggage that
//! arrives is bounded by the tracer's [`SpanLimits`](crate::SpanLimits), and
//! every value is percent-encoded on its way out, so no input can smuggle a
//! CR or LF into an outgoing header.

mod b3;
mod baggage;
pub mod binary;
mod carrier;
mod jaeger;
mod ot;
mod w3c;

use crate::span_context::SpanContext;

pub use crate::formats::Format;
pub use carrier::Carrier;

/// What was wrong with an incoming context.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ExtractErrorKind {
    /// A value has the wrong length or shape.
    Malformed,
    /// An id is not (lowercase) hexadecimal.
    InvalidHex,
    /// An id is all zeros.
    ZeroId,
    /// The version is not supported (`ff`, or unparsable).
    UnsupportedVersion,
    /// The sampling flag or flags field is invalid.
    InvalidFlags,
    /// An id header is present without its partner.
    Incomplete,
    /// The data ended early or declares more than is there.
    Truncated,
    /// Text is not UTF-8.
    InvalidUtf8,
}

/// An incoming context that is present but corrupted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{format} context in {header} is invalid ({kind:?}): {detail}")]
pub struct ExtractError {
    /// The format that failed.
    pub format: Format,
    /// The header (or field) at fault.
    pub header: &'static str,
    /// What kind of problem.
    pub kind: ExtractErrorKind,
    /// Human-readable detail (never echoes more than 64 bytes of input).
    pub detail: String,
}

impl ExtractError {
    pub(crate) fn new(
        format: Format,
        header: &'static str,
        kind: ExtractErrorKind,
        input: &str,
    ) -> Self {
        let shown: String = input.chars().take(64).collect();
        ExtractError {
            format,
            header,
            kind,
            detail: format!("{shown:?}"),
        }
    }
}

/// Limits applied to baggage extracted from outside.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BaggageLimits {
    pub(crate) max_items: usize,
    pub(crate) max_bytes: usize,
}

impl BaggageLimits {
    /// The one admission rule of every format's incoming baggage: the key
    /// is an HTTP token (so any format can send it on), not a key already
    /// admitted (the first of duplicates wins), and the item fits the
    /// limits. Returns whether it was admitted.
    pub(crate) fn admit(
        &self,
        baggage: &mut Vec<(String, String)>,
        bytes: &mut usize,
        k: &str,
        v: String,
    ) -> bool {
        let size = k.len() + v.len();
        if !is_token(k)
            || baggage.len() >= self.max_items
            || *bytes + size > self.max_bytes
            || baggage.iter().any(|(have, _)| have == k)
        {
            return false;
        }
        *bytes += size;
        baggage.push((k.to_string(), v));
        true
    }
}

/// What an extract left out, besides the context it returns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Refused {
    /// Baggage items refused (malformed, duplicated, over the limits):
    /// `Stats::baggage_not_propagated`.
    pub(crate) baggage: usize,
    /// Headers that were present but unreadable and left out without
    /// failing the extract (a `tracestate` dropped, a value that is not
    /// text): `Stats::propagation_errors`.
    pub(crate) headers: usize,
}

impl Refused {
    pub(crate) fn baggage(n: usize) -> Self {
        Refused {
            baggage: n,
            headers: 0,
        }
    }
}

/// A format's result: `Ok(None)` when its headers are absent.
pub(crate) type Extracted = Result<Option<(SpanContext, Refused)>, ExtractError>;

/// HTTP optional whitespace (space, horizontal tab) trimmed from both
/// ends; nothing else (`\f`, `\n`, `\r`, NBSP stay and make a value
/// invalid).
pub(crate) fn trim_ows(s: &str) -> &str {
    let b = s.as_bytes();
    let ows = |c: &u8| *c == b' ' || *c == b'\t';
    let start = b.iter().position(|c| !ows(c)).unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !ows(c))
        .map_or(start, |last| last + 1);
    // SP and HTAB are ASCII, so both ends are char boundaries.
    s.get(start..end).unwrap_or_default()
}

/// The value of single-valued header `name`: `Ok(None)` when absent, an
/// error when it is repeated (which value would be the caller's?) or not
/// text.
pub(crate) fn single_value<'a>(
    carrier: &'a dyn Carrier,
    name: &str,
    format: Format,
    header: &'static str,
) -> Result<Option<&'a str>, ExtractError> {
    let (mut first, mut count, mut not_text) = (None, 0usize, false);
    carrier.for_each_value(name, &mut |v| {
        count += 1;
        match v {
            Some(v) if first.is_none() => first = Some(v),
            Some(_) => {}
            None => not_text = true,
        }
    });
    if not_text {
        return Err(ExtractError::new(
            format,
            header,
            ExtractErrorKind::InvalidUtf8,
            "<a value that is not text>",
        ));
    }
    if count > 1 {
        return Err(ExtractError::new(
            format,
            header,
            ExtractErrorKind::Malformed,
            "<the header is repeated>",
        ));
    }
    Ok(first)
}

/// Injects `ctx` in `format`. Returns the number of baggage items that
/// could not be represented (keys that are not header tokens) or did not
/// fit the format's limits; they are left out.
pub(crate) fn inject(
    ctx: &SpanContext,
    format: Format,
    carrier: &mut dyn Carrier,
    tracestate_key: Option<&str>,
) -> usize {
    if !ctx.is_valid() && !matches!(format, Format::B3Single | Format::B3Multi) {
        // A context without ids (a B3 decision alone) has nothing these
        // formats can say: zero ids are invalid in all of them.
        return ctx.baggage.len();
    }
    match format {
        Format::W3c => w3c::inject(ctx, carrier, tracestate_key),
        Format::OpenTracing => ot::inject(ctx, carrier),
        Format::B3Single => b3::inject_single(ctx, carrier),
        Format::B3Multi => b3::inject_multi(ctx, carrier),
        Format::Jaeger => jaeger::inject(ctx, carrier),
        Format::Binary => {
            let (bytes, skipped) = binary::encode(ctx);
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            carrier.set(BINARY_HEADER, &hex);
            skipped
        }
    }
}

/// The header that carries a hex-encoded [`Format::Binary`] envelope.
pub const BINARY_HEADER: &str = "spanrec-context";

/// Extracts a context in `format`. Baggage beyond `limits` is left out and
/// counted in the returned number.
#[inline]
pub(crate) fn extract(format: Format, carrier: &dyn Carrier, limits: BaggageLimits) -> Extracted {
    match format {
        Format::W3c => w3c::extract(carrier, limits),
        Format::OpenTracing => ot::extract(carrier, limits),
        Format::B3Single => b3::extract_single(carrier),
        Format::B3Multi => b3::extract_multi(carrier),
        Format::Jaeger => jaeger::extract(carrier, limits),
        Format::Binary => {
            let Some(raw) = single_value(carrier, BINARY_HEADER, Format::Binary, BINARY_HEADER)?
            else {
                return Ok(None);
            };
            let hex = trim_ows(raw);
            // The longest envelope that can be valid (ids, flags, the
            // baggage limits) is far below this: a longer header is refused
            // before it is decoded.
            if hex.len() > 2 * binary::MAX_ENVELOPE_BYTES {
                return Err(ExtractError::new(
                    Format::Binary,
                    BINARY_HEADER,
                    ExtractErrorKind::Malformed,
                    hex,
                ));
            }
            let bytes: Option<Vec<u8>> = hex
                .len()
                .is_multiple_of(2)
                .then(|| {
                    hex.as_bytes()
                        .chunks_exact(2)
                        .map(|pair| crate::hex::decode_u64(pair, crate::hex::Digits::AnyCase))
                        .map(|b| b.and_then(|b| u8::try_from(b).ok()))
                        .collect()
                })
                .flatten();
            match bytes {
                Some(b) if !b.is_empty() => binary::decode(&b, limits),
                _ => Err(ExtractError::new(
                    Format::Binary,
                    BINARY_HEADER,
                    ExtractErrorKind::InvalidHex,
                    hex,
                )),
            }
        }
    }
}

// --- shared helpers ---

/// Writes one `<prefix><key>` header per baggage item (OpenTracing,
/// Jaeger), values percent-encoded; returns how many keys were not tokens.
pub(crate) fn inject_prefixed(
    baggage: &[(String, String)],
    prefix: &str,
    carrier: &mut dyn Carrier,
) -> usize {
    let mut skipped = 0;
    for (k, v) in baggage {
        if is_token(k) {
            carrier.set(
                &format!("{prefix}{}", k.to_ascii_lowercase()),
                &percent_encode(v),
            );
        } else {
            skipped += 1;
        }
    }
    skipped
}

/// Whether header `name` starts with `prefix` (ASCII, any case) and has
/// more after it.
pub(crate) fn is_prefixed(name: &str, prefix: &str) -> bool {
    let (n, p) = (name.as_bytes(), prefix.as_bytes());
    n.len() > p.len() && n[..p.len()].eq_ignore_ascii_case(p)
}

/// Reads baggage from headers `<prefix><key>` (values percent-decoded,
/// `+` as space when `plus_is_space`), into `out` within `limits`. Returns
/// the number of items refused (keys that are not tokens or repeat one in
/// any case, values that are not text, over the limits).
pub(crate) fn extract_prefixed(
    carrier: &dyn Carrier,
    prefix: &str,
    plus_is_space: bool,
    limits: BaggageLimits,
    out: &mut Vec<(String, String)>,
) -> usize {
    let mut selected = PrefixedBaggage::new(limits);
    carrier.for_each_entry(&mut |name, value| {
        if is_prefixed(name, prefix) {
            selected.offer(name, value);
        }
    });
    selected.admit(prefix, plus_is_space, limits, out)
}

/// The prefixed baggage headers of a carrier, selected while they are
/// read: the `max_items` first in name order (header order is not
/// meaningful, and a map's is random, so name order makes which items fit
/// deterministic). A bounded max-heap: hostile input (10,000 headers) costs
/// O(n log max_items) time and O(max_items) memory, and nothing is decoded
/// or allocated for a header that is going to be refused.
pub(crate) struct PrefixedBaggage<'a> {
    /// The smallest `(name, value)` pairs offered so far; the largest on top.
    kept: std::collections::BinaryHeap<(&'a str, &'a str)>,
    /// How many to keep: `limits.max_items`.
    cap: usize,
    /// How many were offered, values that are not text included.
    offered: usize,
}

impl<'a> PrefixedBaggage<'a> {
    pub(crate) fn new(limits: BaggageLimits) -> Self {
        PrefixedBaggage {
            kept: std::collections::BinaryHeap::new(),
            cap: limits.max_items,
            offered: 0,
        }
    }

    /// A header `name` that has the prefix, and its value (`None`: not
    /// text, refused).
    pub(crate) fn offer(&mut self, name: &'a str, value: Option<&'a str>) {
        self.offered += 1;
        let Some(value) = value else {
            return;
        };
        if self.kept.len() < self.cap {
            self.kept.push((name, value));
        } else if self.kept.peek().is_some_and(|top| (name, value) < *top) {
            self.kept.pop();
            self.kept.push((name, value));
        }
    }

    /// Decodes the kept items in name order into `out`, within `limits`;
    /// returns how many of all those offered were refused. Keys are
    /// lowercased, so two headers naming one key in different cases are
    /// duplicates: the first in name order wins.
    pub(crate) fn admit(
        self,
        prefix: &str,
        plus_is_space: bool,
        limits: BaggageLimits,
        out: &mut Vec<(String, String)>,
    ) -> usize {
        let kept = self.kept.into_sorted_vec();
        let (mut bytes, mut refused) = (0, self.offered - kept.len());
        for (name, value) in kept {
            // The prefix is ASCII and matched, so this is a char boundary.
            let key = name
                .get(prefix.len()..)
                .unwrap_or_default()
                .to_ascii_lowercase();
            let value = percent_decode(trim_ows(value), plus_is_space);
            if !limits.admit(out, &mut bytes, &key, value) {
                refused += 1;
            }
        }
        refused
    }
}

/// ASCII bytes we formatted (hex digits and separators) as a `str`.
pub(crate) fn ascii_str(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap_or_default()
}

/// Parses 1..=32 hex digits (`lower_only`: reject uppercase) as a u128.
pub(crate) fn parse_hex_u128(s: &str, lower_only: bool) -> Option<u128> {
    crate::hex::decode_u128(s.as_bytes(), digits(lower_only))
}

/// Parses 1..=16 hex digits as a u64.
pub(crate) fn parse_hex_u64(s: &str, lower_only: bool) -> Option<u64> {
    crate::hex::decode_u64(s.as_bytes(), digits(lower_only))
}

fn digits(lower_only: bool) -> crate::hex::Digits {
    if lower_only {
        crate::hex::Digits::Lowercase
    } else {
        crate::hex::Digits::AnyCase
    }
}

/// Whether `s` is a non-empty HTTP token (RFC 7230 tchar), so it can be a
/// header name or a W3C baggage key.
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Percent-encodes everything but unreserved URL characters, so the result
/// is safe in any header value (no CR, LF, comma, semicolon, space...).
pub(crate) fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(char::from(b"0123456789ABCDEF"[usize::from(b >> 4)]));
            out.push(char::from(b"0123456789ABCDEF"[usize::from(b & 15)]));
        }
    }
    out
}

/// The length of `percent_encode(s)`, without encoding it.
pub(crate) fn encoded_len(s: &str) -> usize {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                1
            } else {
                3
            }
        })
        .sum()
}

/// Decodes `%XX` escapes (two hex digits, no sign) and, if
/// `plus_is_space`, `+`. Escapes that are not two hex digits are kept
/// literally; byte sequences that are not UTF-8 become U+FFFD, as W3C
/// Baggage requires of percent-encoded octets that do not form UTF-8.
pub(crate) fn percent_decode(s: &str, plus_is_space: bool) -> String {
    if !(s.contains('%') || (plus_is_space && s.contains('+'))) {
        return s.to_string();
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let escaped = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| crate::hex::decode_u64(h, crate::hex::Digits::AnyCase));
                match escaped.and_then(|b| u8::try_from(b).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    match String::from_utf8(out) {
        Ok(text) => text,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_round_trip() {
        for s in [
            "plain",
            "with space",
            "a,b;c=d",
            "line\r\nbreak",
            "ünï",
            "100%",
            "%zz",
            "+",
        ] {
            let e = percent_encode(s);
            assert!(!e.contains(['\r', '\n', ',', ';', ' ']), "{e}");
            assert_eq!(percent_decode(&e, false), s);
            assert_eq!(encoded_len(s), e.len());
        }
        assert_eq!(percent_decode("a%2", false), "a%2");
        assert_eq!(percent_decode("%", false), "%");
        assert_eq!(percent_decode("a+b", true), "a b");
        // Not UTF-8: each bad sequence is one U+FFFD, the rest is kept.
        assert_eq!(percent_decode("a%ffb", false), "a\u{fffd}b");
        assert_eq!(percent_decode("%C3%28", false), "\u{fffd}(");
        // No sign in an escape (`from_str_radix` would take `+1`).
        assert_eq!(percent_decode("%+1", false), "%+1");
        assert_eq!(percent_decode("%-1", false), "%-1");
    }
}
