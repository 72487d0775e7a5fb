//! OpenTracing basictracer headers, as in the seed's Go example:
//! `ot-tracer-traceid`, `ot-tracer-spanid`, `ot-tracer-sampled`, and one
//! `ot-baggage-<key>` per baggage item (values URL-escaped).
//!
//! basictracer ids are 64-bit: a 16-digit trace id maps to a 128-bit trace id
//! with a zero high half, and such a trace id is sent back as 16 digits.

use super::{
    parse_hex_u128, parse_hex_u64, trim_ows, BaggageLimits, Carrier, ExtractError,
    ExtractErrorKind, Extracted, Format, Refused,
};
use crate::hex;
use crate::span_context::SpanContext;

const TRACE_ID: &str = "ot-tracer-traceid";
const SPAN_ID: &str = "ot-tracer-spanid";
const SAMPLED: &str = "ot-tracer-sampled";
const BAGGAGE_PREFIX: &str = "ot-baggage-";

fn err(header: &'static str, kind: ExtractErrorKind, input: &str) -> ExtractError {
    ExtractError::new(Format::OpenTracing, header, kind, input)
}

/// The trace id's digits: 16 for a 64-bit id, else 32.
pub(crate) fn trace_id_digits(id: u128) -> ([u8; 32], usize) {
    match u64::try_from(id) {
        Ok(short) => {
            let mut out = [0u8; 32];
            out[..16].copy_from_slice(&hex::encode_u64(short));
            (out, 16)
        }
        Err(_) => (hex::encode_u128(id), 32),
    }
}

pub(crate) fn format_trace_id(id: u128) -> String {
    let (digits, len) = trace_id_digits(id);
    super::ascii_str(&digits[..len]).to_string()
}

pub(crate) fn inject(ctx: &SpanContext, carrier: &mut dyn Carrier) -> usize {
    let (trace, len) = trace_id_digits(ctx.trace_id);
    carrier.set(TRACE_ID, super::ascii_str(&trace[..len]));
    carrier.set(SPAN_ID, super::ascii_str(&hex::encode_u64(ctx.span_id)));
    carrier.set(SAMPLED, if ctx.sampled { "true" } else { "false" });
    super::inject_prefixed(&ctx.baggage, BAGGAGE_PREFIX, carrier)
}

/// What one pass over the headers saw of a single-valued header.
#[derive(Default)]
struct Seen<'a> {
    /// The first value (`Some(None)`: not text).
    first: Option<Option<&'a str>>,
    /// How many values, in any case of the name.
    count: usize,
}

impl<'a> Seen<'a> {
    /// Records `value` if header `name` is `wanted` (any case). Whether it
    /// was.
    fn take(&mut self, wanted: &str, name: &str, value: Option<&'a str>) -> bool {
        if name.len() != wanted.len() || !name.eq_ignore_ascii_case(wanted) {
            return false;
        }
        self.count += 1;
        self.first.get_or_insert(value);
        true
    }

    /// The value: an error when repeated (in any case of the name) or not
    /// text; OWS trimmed.
    fn value(self, header: &'static str) -> Result<Option<&'a str>, ExtractError> {
        match self.first {
            _ if self.count > 1 => Err(err(
                header,
                ExtractErrorKind::Malformed,
                "<the header is repeated>",
            )),
            Some(None) => Err(err(
                header,
                ExtractErrorKind::InvalidUtf8,
                "<a value that is not text>",
            )),
            Some(Some(v)) => Ok(Some(trim_ows(v))),
            None => Ok(None),
        }
    }
}

pub(crate) fn extract(carrier: &dyn Carrier, limits: BaggageLimits) -> Extracted {
    // One pass over the headers: the three ids and the baggage.
    let (mut trace, mut span, mut sampled) = (Seen::default(), Seen::default(), Seen::default());
    let mut baggage = super::PrefixedBaggage::new(limits);
    carrier.for_each_entry(&mut |name, value| {
        if !trace.take(TRACE_ID, name, value)
            && !span.take(SPAN_ID, name, value)
            && !sampled.take(SAMPLED, name, value)
            && super::is_prefixed(name, BAGGAGE_PREFIX)
        {
            baggage.offer(name, value);
        }
    });
    let (trace, span) = match (trace.value(TRACE_ID)?, span.value(SPAN_ID)?) {
        (None, None) => return Ok(None),
        (Some(t), Some(s)) => (t, s),
        (Some(t), None) => return Err(err(SPAN_ID, ExtractErrorKind::Incomplete, t)),
        (None, Some(s)) => return Err(err(TRACE_ID, ExtractErrorKind::Incomplete, s)),
    };
    let trace_id = parse_hex_u128(trace, false)
        .ok_or_else(|| err(TRACE_ID, ExtractErrorKind::InvalidHex, trace))?;
    let span_id = parse_hex_u64(span, false)
        .ok_or_else(|| err(SPAN_ID, ExtractErrorKind::InvalidHex, span))?;
    if trace_id == 0 || span_id == 0 {
        return Err(err(TRACE_ID, ExtractErrorKind::ZeroId, trace));
    }
    let sampled = match sampled.value(SAMPLED)? {
        None => true,
        Some(s) if s.eq_ignore_ascii_case("true") || s == "1" => true,
        Some(s) if s.eq_ignore_ascii_case("false") || s == "0" => false,
        Some(s) => return Err(err(SAMPLED, ExtractErrorKind::InvalidFlags, s)),
    };
    let mut ctx = SpanContext::new(trace_id, span_id, sampled);
    let refused = baggage.admit(BAGGAGE_PREFIX, true, limits, &mut ctx.baggage);
    Ok(Some((ctx, Refused::baggage(refused))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// 10,000 baggage headers: the first 64 names in order are admitted
    /// (whatever the map's order), every other one is counted refused.
    #[test]
    fn ten_thousand_baggage_headers_keep_the_first_names_in_order() {
        let mut h: HashMap<String, String> = (0..10_000)
            .map(|i| (format!("ot-baggage-k{i:05}"), format!("v{i}")))
            .collect();
        h.insert(TRACE_ID.into(), "7ab6ba52e1e748c1".into());
        h.insert(SPAN_ID.into(), "1b4c98c3b3f048aa".into());
        let limits = BaggageLimits {
            max_items: 64,
            max_bytes: 8192,
        };
        let (ctx, refused) = extract(&h, limits).unwrap().unwrap();
        let expected: Vec<(String, String)> = (0..64)
            .map(|i| (format!("k{i:05}"), format!("v{i}")))
            .collect();
        assert_eq!(ctx.baggage, expected);
        assert_eq!(refused.baggage, 10_000 - 64);
    }

    #[test]
    fn seed_example_headers() {
        // The seed's Go output, as an HTTP server sees it (canonical case).
        let h: HashMap<String, String> = [
            ("Ot-Tracer-Traceid", "7ab6ba52e1e748c1"),
            ("Ot-Tracer-Spanid", "1b4c98c3b3f048aa"),
            ("Ot-Tracer-Sampled", "false"),
            ("Ot-Baggage-My-Baggage", "current+user"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let (ctx, refused) = extract(
            &h,
            BaggageLimits {
                max_items: 64,
                max_bytes: 8192,
            },
        )
        .unwrap()
        .unwrap();
        assert_eq!(refused.baggage, 0);
        assert_eq!(ctx.trace_id, 0x7ab6ba52e1e748c1);
        assert_eq!(ctx.span_id, 0x1b4c98c3b3f048aa);
        assert!(!ctx.sampled);
        assert_eq!(ctx.baggage_item("my-baggage"), Some("current user"));
        let mut out = HashMap::new();
        inject(&ctx, &mut out);
        assert_eq!(out["ot-tracer-traceid"], "7ab6ba52e1e748c1");
        assert_eq!(out["ot-baggage-my-baggage"], "current%20user");
    }
}
