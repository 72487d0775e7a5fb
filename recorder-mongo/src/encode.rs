//! A finished span as a MongoDB document, encoded straight to raw BSON on the
//! flusher thread (no serde, no JSON). The schema is `docs/mongo-schema.md`.

use bson::raw::RawDocumentBuf;
use bson::Decimal128;
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

fn millis(ns: u64) -> i64 {
    i64_of(ns / 1_000_000)
}

/// A BSON writer over one pre-sized buffer: the format is simple enough that
/// writing it directly avoids the `bson` builders' per-document allocations
/// and reallocations (which made up most of the encoding cost).
struct Writer {
    buf: Vec<u8>,
}

const DOUBLE: u8 = 0x01;
const STRING: u8 = 0x02;
const DOCUMENT: u8 = 0x03;
const ARRAY: u8 = 0x04;
const BINARY: u8 = 0x05;
const BOOLEAN: u8 = 0x08;
const DATETIME: u8 = 0x09;
const INT32: u8 = 0x10;
const INT64: u8 = 0x12;
const DECIMAL128: u8 = 0x13;

impl Writer {
    /// Starts a document (its length is patched in by `end`).
    fn begin(&mut self) -> usize {
        let at = self.buf.len();
        self.buf.extend_from_slice(&[0; 4]);
        at
    }

    fn end(&mut self, at: usize) {
        self.buf.push(0);
        let len = i32::try_from(self.buf.len() - at).unwrap_or(i32::MAX);
        self.buf[at..at + 4].copy_from_slice(&len.to_le_bytes());
    }

    /// An element header with a key that needs no escaping.
    fn key(&mut self, kind: u8, key: &str) {
        self.buf.push(kind);
        self.buf.extend_from_slice(key.as_bytes());
        self.buf.push(0);
    }

    /// An element header with a caller's key, escaped (see [`escape_key`]).
    fn user_key(&mut self, kind: u8, key: &str) {
        self.buf.push(kind);
        if needs_escape(key) {
            for (i, b) in key.bytes().enumerate() {
                match b {
                    b'%' => self.buf.extend_from_slice(b"%25"),
                    b'.' => self.buf.extend_from_slice(b"%2E"),
                    0 => self.buf.extend_from_slice(b"%00"),
                    b'$' if i == 0 => self.buf.extend_from_slice(b"%24"),
                    b => self.buf.push(b),
                }
            }
        } else {
            self.buf.extend_from_slice(key.as_bytes());
        }
        self.buf.push(0);
    }

    /// An array index as a key.
    fn index_key(&mut self, kind: u8, i: usize) {
        self.buf.push(kind);
        let mut digits = [0u8; 20];
        let mut n = i;
        let mut at = digits.len();
        loop {
            at -= 1;
            digits[at] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.buf.extend_from_slice(&digits[at..]);
        self.buf.push(0);
    }

    fn string_value(&mut self, v: &str) {
        let len = i32::try_from(v.len() + 1).unwrap_or(i32::MAX);
        self.buf.extend_from_slice(&len.to_le_bytes());
        self.buf.extend_from_slice(v.as_bytes());
        self.buf.push(0);
    }

    fn string(&mut self, key: &str, v: &str) {
        self.key(STRING, key);
        self.string_value(v);
    }

    fn i64(&mut self, key: &str, v: i64) {
        self.key(INT64, key);
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    fn datetime(&mut self, key: &str, ms: i64) {
        self.key(DATETIME, key);
        self.buf.extend_from_slice(&ms.to_le_bytes());
    }

    fn value(&mut self, key: &str, value: ValueRef<'_>) {
        match value {
            ValueRef::I64(v) => {
                self.user_key(INT64, key);
                self.buf.extend_from_slice(&v.to_le_bytes());
            }
            ValueRef::U64(v) => {
                self.user_key(DECIMAL128, key);
                self.buf.extend_from_slice(&u64_to_decimal128(v).bytes());
            }
            ValueRef::F64(v) => {
                self.user_key(DOUBLE, key);
                self.buf.extend_from_slice(&v.to_le_bytes());
            }
            ValueRef::Bool(v) => {
                self.user_key(BOOLEAN, key);
                self.buf.push(u8::from(v));
            }
            ValueRef::Str(v) => {
                self.user_key(STRING, key);
                self.string_value(v);
            }
        }
    }
}

/// A generous estimate of a span's encoded size, to size the buffer once.
fn estimate(span: &SpanRecord) -> usize {
    let tags: usize = span
        .tags()
        .map(|(k, v)| 24 + k.len() + if let ValueRef::Str(s) = v { s.len() } else { 0 })
        .sum();
    let baggage: usize = span.baggage().map(|(k, v)| 8 + k.len() + v.len()).sum();
    400 + span.operation_name().len()
        + tags
        + baggage
        + 160 * span.logs().len()
        + 96 * span.references().len()
}

/// Encodes one span (the schema in `docs/mongo-schema.md`).
pub fn encode_span(span: &SpanRecord) -> RawDocumentBuf {
    let mut w = Writer {
        buf: Vec::with_capacity(estimate(span)),
    };
    let doc = w.begin();
    w.key(BINARY, "_id");
    w.buf.extend_from_slice(&24i32.to_le_bytes());
    w.buf.push(0); // generic subtype
    w.buf
        .extend_from_slice(&document_id(span.trace_id(), span.span_id()));
    w.string("trace_id", hex_u128(span.trace_id()).as_str());
    w.string("span_id", hex_u64(span.span_id()).as_str());
    if let Some(parent) = span.parent_span_id() {
        w.string("parent_span_id", hex_u64(parent).as_str());
    }
    if !span.references().is_empty() {
        w.key(ARRAY, "references");
        let refs = w.begin();
        for (i, r) in span.references().iter().enumerate() {
            w.index_key(DOCUMENT, i);
            let d = w.begin();
            let kind = match r.kind {
                ReferenceKind::ChildOf => "child_of",
                ReferenceKind::FollowsFrom => "follows_from",
            };
            w.string("kind", kind);
            w.string("trace_id", hex_u128(r.trace_id).as_str());
            w.string("span_id", hex_u64(r.span_id).as_str());
            w.end(d);
        }
        w.end(refs);
    }
    w.string("name", span.operation_name());
    let (start, finish) = (span.start_unix_nanos(), span.finish_unix_nanos());
    w.datetime("start", millis(start));
    w.i64("start_ns", i64_of(start));
    w.datetime("finish", millis(finish));
    w.i64("finish_ns", i64_of(finish));
    w.i64("duration_ns", i64_of(finish.saturating_sub(start)));
    w.key(DOCUMENT, "tags");
    let tags = w.begin();
    for (k, v) in span.tags() {
        w.value(k, v);
    }
    w.end(tags);
    if span.logs().len() > 0 {
        w.key(ARRAY, "logs");
        let logs = w.begin();
        for (i, log) in span.logs().enumerate() {
            w.index_key(DOCUMENT, i);
            let d = w.begin();
            let ns = log.unix_nanos();
            w.datetime("time", millis(ns));
            w.i64("time_ns", i64_of(ns));
            w.string("event", log.event());
            w.key(DOCUMENT, "fields");
            let fields = w.begin();
            for (k, v) in log.fields() {
                w.value(k, v);
            }
            w.end(fields);
            w.end(d);
        }
        w.end(logs);
    }
    if span.baggage().len() > 0 {
        w.key(DOCUMENT, "baggage");
        let baggage = w.begin();
        for (k, v) in span.baggage() {
            w.user_key(STRING, k);
            w.string_value(v);
        }
        w.end(baggage);
    }
    let process = span.process();
    w.string("service", &process.service);
    if !process.tags.is_empty() {
        w.key(DOCUMENT, "process");
        let p = w.begin();
        for (k, v) in &process.tags {
            w.user_key(STRING, k);
            w.string_value(v);
        }
        w.end(p);
    }
    w.key(BOOLEAN, "sampled");
    w.buf.push(u8::from(span.sampled()));
    let t = span.truncations();
    if t != spanrec::Truncations::default() {
        w.key(DOCUMENT, "truncated");
        let d = w.begin();
        for (k, n) in [
            ("tags", t.tags),
            ("logs", t.logs),
            ("log_fields", t.log_fields),
            ("values", t.values),
            ("baggage", t.baggage),
        ] {
            if n > 0 {
                w.key(INT32, k);
                w.buf
                    .extend_from_slice(&i32::try_from(n).unwrap_or(i32::MAX).to_le_bytes());
            }
        }
        w.end(d);
    }
    w.end(doc);
    // Only the outer length and the trailing NUL are checked here; the
    // writer above produces well-formed elements.
    RawDocumentBuf::from_bytes(w.buf).unwrap_or_default()
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
