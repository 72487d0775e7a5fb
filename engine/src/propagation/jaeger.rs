//! Jaeger propagation: `uber-trace-id: {trace}:{span}:{parent}:{flags}` (hex
//! ids of up to 32/16 digits, possibly URL-encoded) and `uberctx-<key>`
//! baggage headers.

use super::{
    parse_hex_u128, parse_hex_u64, percent_decode, single_value, trim_ows, BaggageLimits, Carrier,
    ExtractError, ExtractErrorKind, Extracted, Format, Refused,
};
use crate::span_context::SpanContext;

const HEADER: &str = "uber-trace-id";
/// The longest `uber-trace-id` that can be valid: 69 characters, each
/// possibly percent-encoded (3 bytes).
const MAX_ENCODED_LEN: usize = 3 * (32 + 16 + 16 + 2 + 3);
const BAGGAGE_PREFIX: &str = "uberctx-";

pub(crate) fn inject(ctx: &SpanContext, carrier: &mut dyn Carrier) -> usize {
    let flags = u8::from(ctx.sampled);
    carrier.set(
        HEADER,
        &format!(
            "{}:{:016x}:0:{flags}",
            super::ot::format_trace_id(ctx.trace_id),
            ctx.span_id
        ),
    );
    super::inject_prefixed(&ctx.baggage, BAGGAGE_PREFIX, carrier)
}

pub(crate) fn extract(carrier: &dyn Carrier, limits: BaggageLimits) -> Extracted {
    let Some(raw) = single_value(carrier, HEADER, Format::Jaeger, HEADER)? else {
        return Ok(None);
    };
    let err = |kind| ExtractError::new(Format::Jaeger, HEADER, kind, raw);
    let raw_value = trim_ows(raw);
    // A valid value is at most 32 + 16 + 16 + 2 hex digits and 3 colons,
    // each possibly percent-encoded: anything longer is refused before it
    // is decoded (no allocation in proportion to hostile input).
    if raw_value.len() > MAX_ENCODED_LEN {
        return Err(err(ExtractErrorKind::Malformed));
    }
    // Bytes that are not UTF-8 decode to U+FFFD, which no id accepts.
    let value = percent_decode(raw_value, false);
    let mut parts = value.splitn(5, ':');
    let (Some(trace), Some(span), Some(parent), Some(flags), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(err(ExtractErrorKind::Malformed));
    };
    let trace_id = parse_hex_u128(trace, false).ok_or_else(|| err(ExtractErrorKind::InvalidHex))?;
    let span_id = parse_hex_u64(span, false).ok_or_else(|| err(ExtractErrorKind::InvalidHex))?;
    parse_hex_u64(parent, false).ok_or_else(|| err(ExtractErrorKind::InvalidHex))?;
    // Flags are one byte: at most two hex digits.
    let flags = (flags.len() <= 2)
        .then(|| parse_hex_u64(flags, false))
        .flatten()
        .ok_or_else(|| err(ExtractErrorKind::InvalidFlags))?;
    if trace_id == 0 || span_id == 0 {
        return Err(err(ExtractErrorKind::ZeroId));
    }
    // Bit 0: sampled; bit 1: debug (implies sampled).
    let mut ctx = SpanContext::new(trace_id, span_id, flags & 0b11 != 0);
    let refused = super::extract_prefixed(carrier, BAGGAGE_PREFIX, false, limits, &mut ctx.baggage);
    Ok(Some((ctx, Refused::baggage(refused))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn jaeger_client_examples() {
        let limits = BaggageLimits {
            max_items: 64,
            max_bytes: 8192,
        };
        let h: HashMap<String, String> = [
            (
                "uber-trace-id",
                "3e25e6d1e3e3b9b0%3A3e25e6d1e3e3b9b0%3A0%3A1",
            ),
            ("uberctx-user", "admin%20x"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let (c, _) = extract(&h, limits).unwrap().unwrap();
        assert_eq!(c.trace_id, 0x3e25e6d1e3e3b9b0);
        assert!(c.sampled);
        assert_eq!(c.baggage_item("user"), Some("admin x"));
        let h: HashMap<String, String> = [("uber-trace-id", "abc:def:0:2")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert!(
            extract(&h, limits).unwrap().unwrap().0.sampled,
            "debug implies sampled"
        );
        for bad in ["abc:def:0", "0:def:0:1", "xyz:def:0:1", "abc:def:0:fff"] {
            let h: HashMap<String, String> = [("uber-trace-id".to_string(), bad.to_string())]
                .into_iter()
                .collect();
            assert!(extract(&h, limits).is_err(), "{bad}");
        }
    }
}
