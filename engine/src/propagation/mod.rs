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
mod jaeger;
mod ot;
mod w3c;

use crate::span::SpanContext;
use std::collections::{BTreeMap, HashMap};
use std::fmt;

pub(crate) use w3c::validate_tracestate_key;

/// A text map of request headers (or any string map): what formats read
/// and write. Header names are matched case-insensitively.
pub trait Carrier {
    /// The value of header `name` (any case). Multiple values of one header
    /// may be returned joined by `,`.
    fn get(&self, name: &str) -> Option<&str>;
    /// Sets header `name` (lowercase) to `value`, replacing it. The value is
    /// borrowed so a carrier can reuse its storage (the map carriers copy it
    /// into the existing `String` when the header is already there).
    fn set(&mut self, name: &str, value: &str);
    /// Calls `f` with every header name (for prefixed headers such as
    /// `ot-baggage-*`).
    fn for_each_name<'a>(&'a self, f: &mut dyn FnMut(&'a str));
    /// Calls `f` with every header's name and value. Formats that read
    /// prefixed headers use it to read everything in one pass; carriers
    /// that can iterate their entries override it.
    fn for_each_entry<'a>(&'a self, f: &mut dyn FnMut(&'a str, &'a str)) {
        self.for_each_name(&mut |name| {
            if let Some(value) = self.get(name) {
                f(name, value);
            }
        });
    }
    /// Looks several headers up at once: `out[i] = self.get(names[i])`.
    /// Formats read two or three headers per extract; a carrier that finds
    /// headers by scanning overrides this to scan once.
    fn get_all<'a>(&'a self, names: &[&str], out: &mut [Option<&'a str>]) {
        for (name, slot) in names.iter().zip(out.iter_mut()) {
            *slot = self.get(name);
        }
    }
}

/// Up to this many entries, a map carrier is searched by scanning its keys
/// (length first, then bytes) rather than by hashing the name: hashing a
/// header name with `HashMap`'s SipHash costs more than comparing a dozen
/// keys, and request header maps are that small.
const SCAN_ENTRIES: usize = 16;

fn find_ignore_case<'a>(
    mut entries: impl Iterator<Item = (&'a String, &'a String)>,
    name: &str,
) -> Option<&'a str> {
    entries
        .find(|(k, _)| k.as_str() == name || k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// `Carrier` for a string map type; both maps behave the same.
macro_rules! map_carrier {
    ($map:ident) => {
        impl Carrier for $map<String, String> {
            fn get(&self, name: &str) -> Option<&str> {
                if self.len() > SCAN_ENTRIES {
                    if let Some(v) = $map::get(self, name) {
                        return Some(v);
                    }
                }
                find_ignore_case(self.iter(), name)
            }
            fn set(&mut self, name: &str, value: &str) {
                let existing = if self.len() > SCAN_ENTRIES {
                    self.get_mut(name)
                } else {
                    self.iter_mut()
                        .find(|(k, _)| k.as_str() == name)
                        .map(|(_, v)| v)
                };
                match existing {
                    Some(v) => {
                        v.clear();
                        v.push_str(value);
                    }
                    None => {
                        self.insert(name.to_string(), value.to_string());
                    }
                }
            }
            fn for_each_name<'a>(&'a self, f: &mut dyn FnMut(&'a str)) {
                self.keys().for_each(|k| f(k));
            }
            fn for_each_entry<'a>(&'a self, f: &mut dyn FnMut(&'a str, &'a str)) {
                self.iter().for_each(|(k, v)| f(k, v));
            }
            fn get_all<'a>(&'a self, names: &[&str], out: &mut [Option<&'a str>]) {
                if self.len() > SCAN_ENTRIES {
                    for (name, slot) in names.iter().zip(out.iter_mut()) {
                        *slot = Carrier::get(self, name);
                    }
                    return;
                }
                out.iter_mut().for_each(|slot| *slot = None);
                for (k, v) in self.iter() {
                    for (name, slot) in names.iter().zip(out.iter_mut()) {
                        if slot.is_none()
                            && k.len() == name.len()
                            && (k == name || k.eq_ignore_ascii_case(name))
                        {
                            *slot = Some(v.as_str());
                        }
                    }
                }
            }
        }
    };
}

map_carrier!(HashMap);
map_carrier!(BTreeMap);

#[cfg(feature = "http")]
impl Carrier for http::HeaderMap {
    fn get(&self, name: &str) -> Option<&str> {
        // Header names are case-insensitive in `HeaderMap` already.
        http::HeaderMap::get(self, name).and_then(|v| v.to_str().ok())
    }
    fn set(&mut self, name: &str, value: &str) {
        // Values we produce are always visible ASCII; a name or value the
        // `http` crate refuses is left out rather than panicking.
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_str(value),
        ) {
            self.insert(n, v);
        }
    }
    fn for_each_name<'a>(&'a self, f: &mut dyn FnMut(&'a str)) {
        self.keys().for_each(|k| f(k.as_str()));
    }
}

/// A propagation format for text carriers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// W3C Trace Context (`traceparent`, `tracestate`) and W3C Baggage
    /// (`baggage`).
    W3c,
    /// OpenTracing basictracer: `ot-tracer-traceid`, `ot-tracer-spanid`,
    /// `ot-tracer-sampled`, `ot-baggage-<key>`.
    OpenTracing,
    /// B3 single header: `b3: {trace}-{span}[-{sampled|d}[-{parent}]]`.
    B3Single,
    /// B3 multiple headers: `x-b3-traceid`, `x-b3-spanid`, `x-b3-sampled`, ...
    B3Multi,
    /// Jaeger: `uber-trace-id` and `uberctx-<key>` baggage.
    Jaeger,
    /// spanrec's [`binary`] envelope. Non-HTTP transports use
    /// [`Tracer::inject_binary`](crate::Tracer::inject_binary) directly; with a
    /// text carrier it travels hex-encoded in the `spanrec-context` header.
    Binary,
}

impl Format {
    /// Every text format, in the default extraction order.
    pub const ALL: [Format; 5] = [
        Format::W3c,
        Format::B3Single,
        Format::B3Multi,
        Format::Jaeger,
        Format::OpenTracing,
    ];
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::W3c => "w3c",
            Format::OpenTracing => "opentracing",
            Format::B3Single => "b3",
            Format::B3Multi => "b3multi",
            Format::Jaeger => "jaeger",
            Format::Binary => "binary",
        })
    }
}

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
    /// Adds an item if it fits; returns whether it did.
    pub(crate) fn admit(
        &self,
        baggage: &mut Vec<(String, String)>,
        bytes: &mut usize,
        k: String,
        v: String,
    ) -> bool {
        let size = k.len() + v.len();
        if baggage.len() >= self.max_items || *bytes + size > self.max_bytes {
            return false;
        }
        *bytes += size;
        baggage.push((k, v));
        true
    }
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
pub(crate) fn extract(
    format: Format,
    carrier: &dyn Carrier,
    limits: BaggageLimits,
) -> Result<Option<(SpanContext, usize)>, ExtractError> {
    match format {
        Format::W3c => w3c::extract(carrier, limits),
        Format::OpenTracing => ot::extract(carrier, limits),
        Format::B3Single => b3::extract_single(carrier),
        Format::B3Multi => b3::extract_multi(carrier),
        Format::Jaeger => jaeger::extract(carrier, limits),
        Format::Binary => {
            let Some(hex) = carrier.get(BINARY_HEADER) else {
                return Ok(None);
            };
            let hex = hex.trim();
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
            let bytes: Option<Vec<u8>> = (hex.len() % 2 == 0)
                .then(|| {
                    (0..hex.len())
                        .step_by(2)
                        .map(|i| {
                            hex.get(i..i + 2)
                                .and_then(|h| u8::from_str_radix(h, 16).ok())
                        })
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
/// the number of items refused (undecodable, CR/LF, over the limits).
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
    /// How many were offered.
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

    /// A header `name` that has the prefix, and its value.
    pub(crate) fn offer(&mut self, name: &'a str, value: &'a str) {
        self.offered += 1;
        if self.kept.len() < self.cap {
            self.kept.push((name, value));
        } else if self.kept.peek().is_some_and(|top| (name, value) < *top) {
            self.kept.pop();
            self.kept.push((name, value));
        }
    }

    /// Decodes the kept items in name order into `out`, within `limits`;
    /// returns how many of all those offered were refused.
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
            match percent_decode(value, plus_is_space) {
                Some(v) if !v.contains(['\r', '\n']) => {
                    if !limits.admit(out, &mut bytes, key, v) {
                        refused += 1;
                    }
                }
                _ => refused += 1,
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

/// Decodes `%XX` escapes (and, if `plus_is_space`, `+`); `None` if the
/// result is not UTF-8. Malformed escapes are kept literally.
pub(crate) fn percent_decode(s: &str, plus_is_space: bool) -> Option<String> {
    if !(s.contains('%') || (plus_is_space && s.contains('+'))) {
        return Some(s.to_string());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
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
    String::from_utf8(out).ok()
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
            assert_eq!(percent_decode(&e, false).as_deref(), Some(s));
        }
        assert_eq!(percent_decode("a%2", false).as_deref(), Some("a%2"));
        assert_eq!(percent_decode("%", false).as_deref(), Some("%"));
        assert_eq!(percent_decode("a+b", true).as_deref(), Some("a b"));
        assert_eq!(percent_decode("%ff", false), None);
    }
}
