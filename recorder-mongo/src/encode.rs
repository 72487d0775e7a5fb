//! A finished span as a MongoDB document, encoded straight to raw BSON on the
//! flusher thread (no serde, no JSON). The schema is `docs/mongo-schema.md`.

use crate::chain::ChainPos;
use bson::raw::RawDocumentBuf;
use bson::Decimal128;
use spanrec::{hex, Process, ReferenceKind, SpanRecord, ValueRef};
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
    key.starts_with('$') || key.bytes().any(|b| ESCAPED[usize::from(b)])
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

/// Which bytes [`escape_key`] rewrites anywhere in a key (`$` only leads).
static ESCAPED: [bool; 256] = {
    let mut table = [false; 256];
    table[b'%' as usize] = true;
    table[b'.' as usize] = true;
    table[0] = true;
    table
};

fn i64_of(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn millis(ns: u64) -> i64 {
    i64_of(ns / 1_000_000)
}

/// A BSON writer: a cursor over a pre-sized byte slice.
///
/// The format is simple enough that writing it directly avoids the `bson`
/// builders' per-document allocations (which made up most of the encoding
/// cost), and writing through a cursor held in registers, rather than
/// pushing onto a `Vec` (a capacity check and a length store per push),
/// halves the instructions again. A write that does not fit is skipped but
/// still advances the cursor, so after one pass `at` is the exact size the
/// document needs: [`encode_span_into`] then grows the buffer and writes
/// again (only spans larger than the buffer take two passes).
struct Writer<'a> {
    buf: &'a mut [u8],
    /// Bytes written (or, past `buf.len()`, that would have been).
    at: usize,
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

impl Writer<'_> {
    #[inline(always)]
    fn put(&mut self, bytes: &[u8]) {
        let end = self.at + bytes.len();
        if let Some(dst) = self.buf.get_mut(self.at..end) {
            dst.copy_from_slice(bytes);
        }
        self.at = end;
    }

    #[inline(always)]
    fn byte(&mut self, b: u8) {
        if let Some(dst) = self.buf.get_mut(self.at) {
            *dst = b;
        }
        self.at += 1;
    }

    /// Starts a document (its length is patched in by `end`).
    #[inline(always)]
    fn begin(&mut self) -> usize {
        let at = self.at;
        self.put(&[0; 4]);
        at
    }

    #[inline(always)]
    fn end(&mut self, at: usize) {
        self.byte(0);
        let len = i32::try_from(self.at - at).unwrap_or(i32::MAX);
        if let Some(slot) = self.buf.get_mut(at..at + 4) {
            slot.copy_from_slice(&len.to_le_bytes());
        }
    }

    /// An element header with one of the schema's own keys (which need no
    /// escaping). Inlined so that the key's length is a constant and the
    /// copy is a few moves rather than a `memcpy` call.
    #[inline(always)]
    fn key(&mut self, kind: u8, key: &'static str) {
        self.element(kind, key, &[]);
    }

    /// A whole element with a fixed-size value: one bounds check for the
    /// header and the value together (the writer's cost is mostly per
    /// write, not per byte).
    #[inline(always)]
    fn element(&mut self, kind: u8, key: &'static str, value: &[u8]) {
        let k = key.len();
        let end = self.at + 2 + k + value.len();
        if let Some(dst) = self.buf.get_mut(self.at..end) {
            let (header, rest) = dst.split_at_mut(2 + k);
            header[0] = kind;
            header[1..=k].copy_from_slice(key.as_bytes());
            header[k + 1] = 0;
            rest.copy_from_slice(value);
        }
        self.at = end;
    }

    /// An element header with a caller's key, escaped (see [`escape_key`]).
    /// Dotted keys (`db.rows`, `http.method`) are the common case, so the
    /// runs between escaped bytes are copied whole.
    fn user_key(&mut self, kind: u8, key: &str) {
        self.byte(kind);
        let mut rest = key.as_bytes();
        if let [b'$', tail @ ..] = rest {
            self.put(b"%24");
            rest = tail;
        }
        while let Some(i) = rest.iter().position(|&b| ESCAPED[usize::from(b)]) {
            let (run, tail) = rest.split_at(i);
            self.put(run);
            let (escaped, tail) = tail.split_first().unwrap_or((&0, &[]));
            self.put(match escaped {
                b'%' => b"%25",
                b'.' => b"%2E",
                _ => b"%00",
            });
            rest = tail;
        }
        self.put(rest);
        self.byte(0);
    }

    /// An array index as a key.
    fn index_key(&mut self, kind: u8, i: usize) {
        self.byte(kind);
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
        self.put(&digits[at..]);
        self.byte(0);
    }

    #[inline(always)]
    fn string_value(&mut self, v: &str) {
        let len = i32::try_from(v.len() + 1).unwrap_or(i32::MAX);
        self.put(&len.to_le_bytes());
        self.put(v.as_bytes());
        self.byte(0);
    }

    #[inline(always)]
    fn string(&mut self, key: &'static str, v: &str) {
        self.key(STRING, key);
        self.string_value(v);
    }

    /// A string of hex digits (from [`spanrec::hex`]).
    #[inline(always)]
    fn hex<const N: usize>(&mut self, key: &'static str, digits: [u8; N]) {
        // Length (N digits plus the NUL; N ≤ 32), digits, NUL.
        let mut value = [0u8; 40];
        value[..4].copy_from_slice(&(N as i32 + 1).to_le_bytes());
        value[4..4 + N].copy_from_slice(&digits);
        self.element(STRING, key, &value[..N + 5]);
    }

    #[inline(always)]
    fn i64(&mut self, key: &'static str, v: i64) {
        self.element(INT64, key, &v.to_le_bytes());
    }

    #[inline(always)]
    fn datetime(&mut self, key: &'static str, ms: i64) {
        self.element(DATETIME, key, &ms.to_le_bytes());
    }

    fn value(&mut self, key: &str, value: ValueRef<'_>) {
        match value {
            ValueRef::I64(v) => {
                self.user_key(INT64, key);
                self.put(&v.to_le_bytes());
            }
            ValueRef::U64(v) => {
                self.user_key(DECIMAL128, key);
                self.put(&u64_to_decimal128(v).bytes());
            }
            ValueRef::F64(v) => {
                self.user_key(DOUBLE, key);
                self.put(&v.to_le_bytes());
            }
            ValueRef::Bool(v) => {
                self.user_key(BOOLEAN, key);
                self.byte(u8::from(v));
            }
            ValueRef::Str(v) => {
                self.user_key(STRING, key);
                self.string_value(v);
            }
        }
    }
}

/// Encodes one span (the schema in `docs/mongo-schema.md`) into a new
/// buffer. See [`encode_span_into`] to reuse one.
pub fn encode_span(span: &SpanRecord, process: &Process) -> RawDocumentBuf {
    encode_span_into(span, process, Vec::new())
}

/// What a typical span encodes to, with room to spare: a buffer starts at
/// this size and grows (doubling) only for large spans.
const TYPICAL_DOCUMENT_BYTES: usize = 512;

/// Encodes one span into `buf`, reusing its allocation: the recorder hands
/// inserted documents' buffers back here, so steady-state encoding
/// allocates nothing (fresh buffers cost more than the encoding itself: page
/// faults as the heap grows and shrinks by a batch at a time).
pub fn encode_span_into(span: &SpanRecord, process: &Process, buf: Vec<u8>) -> RawDocumentBuf {
    encode_span_at(span, process, None, buf)
}

/// [`encode_span_into`], with the span's place in the audit chain (fields
/// `chain`, `seq`, `pos`, before `hash`; see `docs/audit-integrity.md`).
pub fn encode_span_at(
    span: &SpanRecord,
    process: &Process,
    at: Option<ChainPos<'_>>,
    mut buf: Vec<u8>,
) -> RawDocumentBuf {
    let mut size = buf.capacity().max(TYPICAL_DOCUMENT_BYTES);
    loop {
        // Only bytes past the previous document's length are zeroed.
        buf.resize(size, 0);
        let mut w = Writer {
            buf: &mut buf,
            at: 0,
        };
        write_span(&mut w, span, process, at);
        let needed = w.at;
        if needed <= size {
            buf.truncate(needed);
            // Only the outer length and the trailing NUL are checked here;
            // the writer produces well-formed elements.
            return RawDocumentBuf::from_bytes(buf).unwrap_or_default();
        }
        size = needed;
    }
}

fn write_span(w: &mut Writer<'_>, span: &SpanRecord, process: &Process, at: Option<ChainPos<'_>>) {
    let doc = w.begin();
    // Binary: length 24, subtype 0 (generic), the bytes.
    let mut id = [0u8; 29];
    id[..4].copy_from_slice(&24i32.to_le_bytes());
    id[5..].copy_from_slice(&document_id(span.trace_id(), span.span_id()));
    w.element(BINARY, "_id", &id);
    w.hex("trace_id", hex::encode_u128(span.trace_id()));
    w.hex("span_id", hex::encode_u64(span.span_id()));
    if let Some(parent) = span.parent_span_id() {
        w.hex("parent_span_id", hex::encode_u64(parent));
    }
    if span.references().len() > 0 {
        w.key(ARRAY, "references");
        let refs = w.begin();
        for (i, r) in span.references().enumerate() {
            w.index_key(DOCUMENT, i);
            let d = w.begin();
            let kind = match r.kind {
                ReferenceKind::ChildOf => "child_of",
                ReferenceKind::FollowsFrom => "follows_from",
            };
            w.string("kind", kind);
            w.hex("trace_id", hex::encode_u128(r.trace_id));
            w.hex("span_id", hex::encode_u64(r.span_id));
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
    w.element(BOOLEAN, "sampled", &[u8::from(span.sampled())]);
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
                w.put(&i32::try_from(n).unwrap_or(i32::MAX).to_le_bytes());
            }
        }
        w.end(d);
    }
    if let Some(at) = at {
        w.string("chain", at.chain);
        w.i64("seq", i64_of(at.seq));
        w.element(
            INT32,
            "pos",
            &i32::try_from(at.pos).unwrap_or(i32::MAX).to_le_bytes(),
        );
    }
    // Last: the content hash of every element before it (see
    // `content_hash`). A pass that outgrew the buffer is redone, so its
    // hash does not matter.
    let hash = w.buf.get(doc + 4..w.at).map_or(0, content_hash_of);
    w.i64("hash", hash);
    w.end(doc);
}

/// The `hash` field's value for a document whose elements before it are
/// `elements`: CRC-32 (IEEE) of those bytes in the high 32 bits, their
/// length in the low 32. Equal for the same span encoded by the same
/// version (a retry, a replay); different, with probability 1 − 2⁻³², for
/// a different span under the same `_id` (a collision).
pub(crate) fn content_hash_of(elements: &[u8]) -> i64 {
    let crc = u64::from(crc32fast::hash(elements));
    ((crc << 32) | (elements.len() as u64 & 0xffff_ffff)) as i64
}

/// A document's `hash` field (`None` for a document written before the
/// field existed, or not by this encoder).
pub fn content_hash(doc: &bson::RawDocument) -> Option<i64> {
    doc.get_i64("hash").ok()
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
    fn written_keys_match_escape_key() {
        for k in [
            "plain", "$set", "a.b", "100%", "%2E", "nul\0key", "$", "..", "ü.$", "", "a$.b",
        ] {
            let mut buf = [0u8; 64];
            let mut w = Writer {
                buf: &mut buf,
                at: 0,
            };
            w.user_key(STRING, k);
            let at = w.at;
            assert_eq!(buf[0], STRING);
            assert_eq!(&buf[1..at - 1], escape_key(k).as_bytes(), "{k:?}");
            assert_eq!(buf[at - 1], 0);
        }
    }

    #[test]
    fn large_spans_take_a_second_pass() {
        let mut w = Writer {
            buf: &mut [0u8; 4],
            at: 0,
        };
        w.string("name", "longer than four bytes");
        assert_eq!(w.at, 1 + 5 + 4 + 23);
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
