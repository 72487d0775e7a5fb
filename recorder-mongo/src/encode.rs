//! A finished span as a MongoDB document, encoded straight to raw BSON on the
//! flusher thread (no serde, no JSON). The schema is `docs/mongo-schema.md`.

use bson::raw::{RawArrayBuf, RawBinaryRef, RawBsonRef, RawDocumentBuf};
use bson::spec::BinarySubtype;
use bson::{DateTime, Decimal128};
use spanrec::{ReferenceKind, SpanRecord, ValueRef};
use std::fmt::Write as _;

/// MongoDB's limit on one document (16 MiB).
pub const MAX_DOCUMENT_BYTES: usize = 16 * 1024 * 1024;

/// The `_id` of a span's document: 16 bytes of trace id then 8 of span id,
/// big-endian, as BSON binary subtype 0. Deterministic, so a retried insert
/// of the same span is a duplicate-key error, never a second document.
pub fn document_id(trace_id: u128, span_id: u64) -> [u8; 24] {
    let mut id = [0u8; 24];
    id[..16].copy_from_slice(&trace_id.to_be_bytes());
    id[16..].copy_from_slice(&span_id.to_be_bytes());
    id
}

/// Escapes a key so MongoDB accepts it: `%` → `%25`, `.` → `%2E`, NUL →
/// `%00`, and a leading `$` → `%24`. Reversible by [`unescape_key`]; keys
/// without those characters are unchanged.
pub fn escape_key(key: &str) -> std::borrow::Cow<'_, str> {
    if !needs_escape(key) {
        return std::borrow::Cow::Borrowed(key);
    }
    let mut out = String::with_capacity(key.len() + 6);
    escape_into(key, &mut out);
    std::borrow::Cow::Owned(out)
}

fn needs_escape(key: &str) -> bool {
    key.starts_with('$') || key.bytes().any(|b| matches!(b, b'%' | b'.' | 0))
}

fn escape_into(key: &str, out: &mut String) {
    for (i, c) in key.char_indices() {
        match c {
            '%' => out.push_str("%25"),
            '.' => out.push_str("%2E"),
            '\0' => out.push_str("%00"),
            '$' if i == 0 => out.push_str("%24"),
            c => out.push(c),
        }
    }
}

std::thread_local! {
    /// Reused for escaped keys, so encoding allocates no key strings.
    static SCRATCH: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// Calls `f` with `key` escaped, without allocating in steady state.
fn with_escaped<R>(key: &str, f: impl FnOnce(&str) -> R) -> R {
    if !needs_escape(key) {
        return f(key);
    }
    SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
        Ok(mut s) => {
            s.clear();
            escape_into(key, &mut s);
            f(&s)
        }
        Err(_) => f(&escape_key(key)),
    })
}

/// Reverses [`escape_key`].
pub fn unescape_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    let mut rest = key;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let code = rest.get(i + 1..i + 3);
        match code {
            Some("25") => out.push('%'),
            Some("2E") => out.push('.'),
            Some("00") => out.push('\0'),
            Some("24") => out.push('$'),
            _ => {
                out.push('%');
                rest = &rest[i + 1..];
                continue;
            }
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    out
}

/// BSON has no unsigned 64-bit integer. A `u64` is stored as a Decimal128
/// with exponent 0 (an exact integer), so values above `i64::MAX` round-trip
/// and the type stays distinguishable from `i64` (stored as Int64).
pub fn u64_to_decimal128(v: u64) -> Decimal128 {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&v.to_le_bytes());
    // Exponent 0 is biased to 6176 (0x1820), at bits 49..63 of the high word.
    bytes[8..].copy_from_slice(&0x3040_0000_0000_0000u64.to_le_bytes());
    Decimal128::from_bytes(bytes)
}

/// Reverses [`u64_to_decimal128`]; `None` for any other Decimal128.
pub fn decimal128_to_u64(d: Decimal128) -> Option<u64> {
    let bytes = d.bytes();
    let high = u64::from_le_bytes(bytes[8..].try_into().ok()?);
    (high == 0x3040_0000_0000_0000)
        .then(|| u64::from_le_bytes(bytes[..8].try_into().unwrap_or_default()))
}

/// Lowercase hex of the low `N / 2` bytes of `v`, on the stack.
struct Hex<const N: usize>([u8; N]);

impl<const N: usize> Hex<N> {
    fn new(v: u128) -> Self {
        let mut out = [0u8; N];
        for (i, b) in out.iter_mut().enumerate() {
            let shift = (N - 1 - i) * 4;
            *b = b"0123456789abcdef"[((v >> shift) & 0xf) as usize];
        }
        Hex(out)
    }

    fn as_str(&self) -> &str {
        // Every byte is an ASCII hex digit.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

fn hex_u128(v: u128) -> Hex<32> {
    Hex::new(v)
}

fn hex_u64(v: u64) -> Hex<16> {
    Hex::new(u128::from(v))
}

fn i64_of(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn date(ns: u64) -> DateTime {
    DateTime::from_millis(i64_of(ns / 1_000_000))
}

fn append_value(doc: &mut RawDocumentBuf, key: &str, value: ValueRef<'_>) {
    with_escaped(key, |key| append_escaped(doc, key, value));
}

fn append_escaped(doc: &mut RawDocumentBuf, key: &str, value: ValueRef<'_>) {
    match value {
        ValueRef::I64(v) => doc.append_ref(key, RawBsonRef::Int64(v)),
        ValueRef::U64(v) => doc.append_ref(key, RawBsonRef::Decimal128(u64_to_decimal128(v))),
        ValueRef::F64(v) => doc.append_ref(key, RawBsonRef::Double(v)),
        ValueRef::Bool(v) => doc.append_ref(key, RawBsonRef::Boolean(v)),
        ValueRef::Str(v) => doc.append_ref(key, RawBsonRef::String(v)),
    }
}

/// An empty document whose buffer already holds `capacity` bytes, so
/// appending does not reallocate (`RawDocumentBuf::new` starts at 5 bytes and
/// doubles, which made reallocation the largest cost of encoding).
fn doc_with_capacity(capacity: usize) -> RawDocumentBuf {
    let mut bytes = Vec::with_capacity(capacity.max(5));
    bytes.extend_from_slice(&[5, 0, 0, 0, 0]);
    RawDocumentBuf::from_bytes(bytes).unwrap_or_default()
}

/// A generous estimate of a span's encoded size.
fn estimate(span: &SpanRecord) -> usize {
    let strings: usize = span
        .tags()
        .map(|(k, v)| k.len() + if let ValueRef::Str(s) = v { s.len() } else { 0 })
        .sum::<usize>()
        + span
            .baggage()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>()
        + span.operation_name().len();
    384 + strings + 24 * span.tags().len() + 128 * span.logs().len() + 96 * span.references().len()
}

/// Encodes one span.
pub fn encode_span(span: &SpanRecord) -> RawDocumentBuf {
    let mut doc = doc_with_capacity(estimate(span));
    let id = document_id(span.trace_id(), span.span_id());
    doc.append_ref(
        "_id",
        RawBinaryRef {
            subtype: BinarySubtype::Generic,
            bytes: &id,
        },
    );
    doc.append_ref(
        "trace_id",
        RawBsonRef::String(hex_u128(span.trace_id()).as_str()),
    );
    doc.append_ref(
        "span_id",
        RawBsonRef::String(hex_u64(span.span_id()).as_str()),
    );
    if let Some(parent) = span.parent_span_id() {
        doc.append_ref(
            "parent_span_id",
            RawBsonRef::String(hex_u64(parent).as_str()),
        );
    }
    if !span.references().is_empty() {
        let mut refs = RawArrayBuf::new();
        for r in span.references() {
            let mut d = RawDocumentBuf::new();
            let kind = match r.kind {
                ReferenceKind::ChildOf => "child_of",
                ReferenceKind::FollowsFrom => "follows_from",
            };
            d.append_ref("kind", RawBsonRef::String(kind));
            d.append_ref(
                "trace_id",
                RawBsonRef::String(hex_u128(r.trace_id).as_str()),
            );
            d.append_ref("span_id", RawBsonRef::String(hex_u64(r.span_id).as_str()));
            refs.push(d);
        }
        doc.append("references", refs);
    }
    doc.append_ref("name", RawBsonRef::String(span.operation_name()));
    let (start, finish) = (span.start_unix_nanos(), span.finish_unix_nanos());
    doc.append_ref("start", RawBsonRef::DateTime(date(start)));
    doc.append_ref("start_ns", RawBsonRef::Int64(i64_of(start)));
    doc.append_ref("finish", RawBsonRef::DateTime(date(finish)));
    doc.append_ref("finish_ns", RawBsonRef::Int64(i64_of(finish)));
    doc.append_ref(
        "duration_ns",
        RawBsonRef::Int64(i64_of(finish.saturating_sub(start))),
    );
    let mut tags = doc_with_capacity(256);
    for (k, v) in span.tags() {
        append_value(&mut tags, k, v);
    }
    doc.append("tags", tags);
    if span.logs().len() > 0 {
        let mut logs = RawArrayBuf::new();
        for log in span.logs() {
            let mut d = RawDocumentBuf::new();
            let ns = log.unix_nanos();
            d.append_ref("time", RawBsonRef::DateTime(date(ns)));
            d.append_ref("time_ns", RawBsonRef::Int64(i64_of(ns)));
            d.append_ref("event", RawBsonRef::String(log.event()));
            let mut fields = RawDocumentBuf::new();
            for (k, v) in log.fields() {
                append_value(&mut fields, k, v);
            }
            d.append("fields", fields);
            logs.push(d);
        }
        doc.append("logs", logs);
    }
    if span.baggage().len() > 0 {
        let mut baggage = RawDocumentBuf::new();
        for (k, v) in span.baggage() {
            with_escaped(k, |k| baggage.append_ref(k, RawBsonRef::String(v)));
        }
        doc.append("baggage", baggage);
    }
    let process = span.process();
    doc.append_ref("service", RawBsonRef::String(&process.service));
    if !process.tags.is_empty() {
        let mut p = RawDocumentBuf::new();
        for (k, v) in &process.tags {
            with_escaped(k, |k| p.append_ref(k, RawBsonRef::String(v)));
        }
        doc.append("process", p);
    }
    doc.append_ref("sampled", RawBsonRef::Boolean(span.sampled()));
    let t = span.truncations();
    if t != spanrec::Truncations::default() {
        let mut d = RawDocumentBuf::new();
        for (k, n) in [
            ("tags", t.tags),
            ("logs", t.logs),
            ("log_fields", t.log_fields),
            ("values", t.values),
            ("baggage", t.baggage),
        ] {
            if n > 0 {
                d.append_ref(k, RawBsonRef::Int32(i32::try_from(n).unwrap_or(i32::MAX)));
            }
        }
        doc.append("truncated", d);
    }
    doc
}

/// Parses a 32-digit hex trace id as written in documents.
pub fn parse_trace_id(s: &str) -> Option<u128> {
    (s.len() == 32)
        .then(|| u128::from_str_radix(s, 16).ok())
        .flatten()
}

/// Formats a trace id as written in documents.
pub fn format_trace_id(id: u128) -> String {
    let mut s = String::with_capacity(32);
    let _ = write!(s, "{id:032x}");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_escape_reversibly() {
        for k in [
            "plain", "$set", "a.b", "100%", "%2E", "nul\0key", "$", "..", "ü.$",
        ] {
            let e = escape_key(k);
            assert!(
                !e.starts_with('$') && !e.contains('.') && !e.contains('\0'),
                "{e}"
            );
            assert_eq!(unescape_key(&e), k);
        }
        assert!(matches!(escape_key("db.rows"), std::borrow::Cow::Owned(_)));
        assert!(matches!(escape_key("user"), std::borrow::Cow::Borrowed(_)));
    }

    #[test]
    fn u64_round_trips_through_decimal128() {
        for v in [0, 1, i64::MAX as u64, i64::MAX as u64 + 1, u64::MAX] {
            let d = u64_to_decimal128(v);
            assert_eq!(decimal128_to_u64(d), Some(v));
            assert_eq!(d.to_string(), v.to_string());
        }
    }
}
