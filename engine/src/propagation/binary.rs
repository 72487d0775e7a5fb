//! A compact, versioned binary envelope for non-HTTP RPC (the seed's RPC runs
//! over websockets).
//!
//! ```text
//! version      u8 = 1
//! trace id     16 bytes, big-endian
//! span id      8 bytes, big-endian
//! flags        u8 (bit 0: sampled; other bits must be 0 in version 1)
//! baggage      u8 item count, then per item: u16 BE key length, key,
//!              u16 BE value length, value (UTF-8)
//! tracestate   u16 BE length, then the W3C tracestate text (may be 0)
//! ```
//!
//! A reader rejects a version it does not know, trailing bytes, and anything
//! that claims more bytes than are there. 26 bytes without baggage.

use super::{is_token, BaggageLimits, ExtractError, ExtractErrorKind, Extracted, Format, Refused};
use crate::span_context::SpanContext;

/// The only version written and read.
pub const VERSION: u8 = 1;

/// The largest envelope a text header may carry (hex-encoded, twice this
/// many characters): 26 bytes of ids and flags, a `tracestate` of 32
/// members (~16.4 KB) and W3C-sized baggage (8,192 bytes in 64 items) fit
/// with room to spare; a longer header is refused before it is decoded.
pub(crate) const MAX_ENVELOPE_BYTES: usize = 64 * 1024;

/// Encodes `ctx`. Baggage beyond 255 items, keys that are not HTTP tokens
/// (which no reader admits) and keys/values over 64 KiB are left out;
/// returns the bytes and how many items were.
pub(crate) fn encode(ctx: &SpanContext) -> (Vec<u8>, usize) {
    let mut out = Vec::with_capacity(28 + ctx.baggage.len() * 16 + ctx.trace_state.len());
    out.push(VERSION);
    out.extend_from_slice(&ctx.trace_id.to_be_bytes());
    out.extend_from_slice(&ctx.span_id.to_be_bytes());
    out.push(u8::from(ctx.sampled));
    let fits = |s: &String| s.len() <= usize::from(u16::MAX);
    let items: Vec<&(String, String)> = ctx
        .baggage
        .iter()
        .filter(|(k, v)| is_token(k) && fits(k) && fits(v))
        .take(255)
        .collect();
    let skipped = ctx.baggage.len() - items.len();
    out.push(items.len() as u8);
    for (k, v) in items {
        out.extend_from_slice(&(k.len() as u16).to_be_bytes());
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(&(v.len() as u16).to_be_bytes());
        out.extend_from_slice(v.as_bytes());
    }
    let ts = if fits(&ctx.trace_state) {
        ctx.trace_state.as_bytes()
    } else {
        &[]
    };
    out.extend_from_slice(&(ts.len() as u16).to_be_bytes());
    out.extend_from_slice(ts);
    (out, skipped)
}

struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ExtractError> {
        if self.data.len() < n {
            return Err(err(ExtractErrorKind::Truncated));
        }
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        Ok(head)
    }

    fn u16(&mut self) -> Result<usize, ExtractError> {
        let b = self.take(2)?;
        Ok(usize::from(u16::from_be_bytes([b[0], b[1]])))
    }

    fn text(&mut self) -> Result<&'a str, ExtractError> {
        let n = self.u16()?;
        std::str::from_utf8(self.take(n)?).map_err(|_| err(ExtractErrorKind::InvalidUtf8))
    }
}

fn err(kind: ExtractErrorKind) -> ExtractError {
    ExtractError {
        format: Format::Binary,
        header: "binary",
        kind,
        detail: "binary context".into(),
    }
}

/// Decodes an envelope; `Ok(None)` for empty input.
pub(crate) fn decode(data: &[u8], limits: BaggageLimits) -> Extracted {
    if data.is_empty() {
        return Ok(None);
    }
    let mut r = Reader { data };
    if r.take(1)?[0] != VERSION {
        return Err(err(ExtractErrorKind::UnsupportedVersion));
    }
    let trace_id = u128::from_be_bytes(
        r.take(16)?
            .try_into()
            .map_err(|_| err(ExtractErrorKind::Truncated))?,
    );
    let span_id = u64::from_be_bytes(
        r.take(8)?
            .try_into()
            .map_err(|_| err(ExtractErrorKind::Truncated))?,
    );
    let flags = r.take(1)?[0];
    if flags & !1 != 0 {
        return Err(err(ExtractErrorKind::InvalidFlags));
    }
    if trace_id == 0 || span_id == 0 {
        return Err(err(ExtractErrorKind::ZeroId));
    }
    let mut ctx = SpanContext::new(trace_id, span_id, flags & 1 == 1);
    let count = r.take(1)?[0];
    let (mut bytes, mut refused) = (0, 0);
    for _ in 0..count {
        let (k, v) = (r.text()?, r.text()?);
        // The same admission as every format: token keys, no duplicates.
        if !limits.admit(&mut ctx.baggage, &mut bytes, k, v.to_string()) {
            refused += 1;
        }
    }
    let ts = r.text()?;
    if !r.data.is_empty() {
        return Err(err(ExtractErrorKind::Malformed));
    }
    if super::w3c::parse_tracestate(ts).is_some() {
        ctx.trace_state = ts.to_string();
    }
    Ok(Some((ctx, Refused::baggage(refused))))
}
