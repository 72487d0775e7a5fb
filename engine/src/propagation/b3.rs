//! B3 propagation (openzipkin/b3-propagation): the single `b3` header and
//! the multi-header `x-b3-*` form.
//!
//! A B3 header may carry only a sampling decision (`b3: 0`, `x-b3-sampled: 1`
//! without ids). That extracts as a context with zero ids, which
//! [`SpanBuilder::child_of`](crate::SpanBuilder::child_of) treats as "no
//! parent, but this sampling decision".

use super::{
    parse_hex_u128, parse_hex_u64, single_value, trim_ows, Carrier, ExtractError, ExtractErrorKind,
    Extracted, Format, Refused,
};
use crate::hex;
use crate::span_context::SpanContext;

const SINGLE: &str = "b3";
const TRACE_ID: &str = "x-b3-traceid";
const SPAN_ID: &str = "x-b3-spanid";
const PARENT_ID: &str = "x-b3-parentspanid";
const SAMPLED: &str = "x-b3-sampled";
const FLAGS: &str = "x-b3-flags";

fn trace_hex(id: u128) -> String {
    super::ot::format_trace_id(id)
}

pub(crate) fn inject_single(ctx: &SpanContext, carrier: &mut dyn Carrier) -> usize {
    let sampled = if ctx.sampled { '1' } else { '0' };
    if !ctx.is_valid() {
        // A decision without ids goes on as a decision (`b3: 0`), not as
        // zero ids the next hop would reject.
        carrier.set(SINGLE, if ctx.sampled { "1" } else { "0" });
        return ctx.baggage.len();
    }
    carrier.set(
        SINGLE,
        &format!("{}-{:016x}-{sampled}", trace_hex(ctx.trace_id), ctx.span_id),
    );
    ctx.baggage.len()
}

pub(crate) fn inject_multi(ctx: &SpanContext, carrier: &mut dyn Carrier) -> usize {
    if !ctx.is_valid() {
        // A decision without ids: `x-b3-sampled` alone.
        carrier.set(SAMPLED, if ctx.sampled { "1" } else { "0" });
        return ctx.baggage.len();
    }
    carrier.set(TRACE_ID, &trace_hex(ctx.trace_id));
    carrier.set(SPAN_ID, super::ascii_str(&hex::encode_u64(ctx.span_id)));
    carrier.set(SAMPLED, if ctx.sampled { "1" } else { "0" });
    ctx.baggage.len()
}

fn parse_trace(s: &str, format: Format, header: &'static str) -> Result<u128, ExtractError> {
    if s.len() != 16 && s.len() != 32 {
        return Err(ExtractError::new(
            format,
            header,
            ExtractErrorKind::Malformed,
            s,
        ));
    }
    match parse_hex_u128(s, true) {
        Some(0) => Err(ExtractError::new(
            format,
            header,
            ExtractErrorKind::ZeroId,
            s,
        )),
        Some(v) => Ok(v),
        None => Err(ExtractError::new(
            format,
            header,
            ExtractErrorKind::InvalidHex,
            s,
        )),
    }
}

fn parse_span(s: &str, format: Format, header: &'static str) -> Result<u64, ExtractError> {
    if s.len() != 16 {
        return Err(ExtractError::new(
            format,
            header,
            ExtractErrorKind::Malformed,
            s,
        ));
    }
    match parse_hex_u64(s, true) {
        Some(0) => Err(ExtractError::new(
            format,
            header,
            ExtractErrorKind::ZeroId,
            s,
        )),
        Some(v) => Ok(v),
        None => Err(ExtractError::new(
            format,
            header,
            ExtractErrorKind::InvalidHex,
            s,
        )),
    }
}

pub(crate) fn extract_single(carrier: &dyn Carrier) -> Extracted {
    let Some(value) = single_value(carrier, SINGLE, Format::B3Single, SINGLE)? else {
        return Ok(None);
    };
    let v = trim_ows(value);
    let err = |kind| ExtractError::new(Format::B3Single, SINGLE, kind, value);
    let decision = |s: &str| match s {
        "1" | "d" => Ok(true),
        "0" => Ok(false),
        _ => Err(err(ExtractErrorKind::InvalidFlags)),
    };
    // A valid value has at most 4 parts: never split (or allocate for)
    // more than 5.
    let mut parts = [""; 5];
    let mut n = 0;
    for part in v.splitn(5, '-') {
        parts[n] = part;
        n += 1;
    }
    let ctx = match &parts[..n] {
        [flag] => SpanContext::new(0, 0, decision(flag)?),
        [t, s] => SpanContext::new(
            parse_trace(t, Format::B3Single, SINGLE)?,
            parse_span(s, Format::B3Single, SINGLE)?,
            true,
        ),
        [t, s, f] => SpanContext::new(
            parse_trace(t, Format::B3Single, SINGLE)?,
            parse_span(s, Format::B3Single, SINGLE)?,
            decision(f)?,
        ),
        [t, s, f, p] => {
            parse_span(p, Format::B3Single, SINGLE)?;
            SpanContext::new(
                parse_trace(t, Format::B3Single, SINGLE)?,
                parse_span(s, Format::B3Single, SINGLE)?,
                decision(f)?,
            )
        }
        _ => return Err(err(ExtractErrorKind::Malformed)),
    };
    Ok(Some((ctx, Refused::default())))
}

pub(crate) fn extract_multi(carrier: &dyn Carrier) -> Extracted {
    let get = |name: &'static str| {
        single_value(carrier, name, Format::B3Multi, name).map(|v| v.map(trim_ows))
    };
    let flags = get(FLAGS)?;
    let sampled_header = get(SAMPLED)?;
    let sampled = match (flags, sampled_header) {
        (Some("1"), _) => Some(true),
        (Some(f), _) if f != "0" => {
            return Err(ExtractError::new(
                Format::B3Multi,
                FLAGS,
                ExtractErrorKind::InvalidFlags,
                f,
            ))
        }
        (_, Some(s)) if s == "1" || s.eq_ignore_ascii_case("true") => Some(true),
        (_, Some(s)) if s == "0" || s.eq_ignore_ascii_case("false") => Some(false),
        (_, Some(s)) => {
            return Err(ExtractError::new(
                Format::B3Multi,
                SAMPLED,
                ExtractErrorKind::InvalidFlags,
                s,
            ))
        }
        _ => None,
    };
    let ctx = match (get(TRACE_ID)?, get(SPAN_ID)?) {
        (None, None) => match sampled {
            Some(s) => SpanContext::new(0, 0, s),
            None => return Ok(None),
        },
        (Some(t), Some(s)) => {
            if let Some(p) = get(PARENT_ID)? {
                parse_span(p, Format::B3Multi, PARENT_ID)?;
            }
            SpanContext::new(
                parse_trace(t, Format::B3Multi, TRACE_ID)?,
                parse_span(s, Format::B3Multi, SPAN_ID)?,
                sampled.unwrap_or(true),
            )
        }
        (Some(t), None) => {
            return Err(ExtractError::new(
                Format::B3Multi,
                SPAN_ID,
                ExtractErrorKind::Incomplete,
                t,
            ))
        }
        (None, Some(s)) => {
            return Err(ExtractError::new(
                Format::B3Multi,
                TRACE_ID,
                ExtractErrorKind::Incomplete,
                s,
            ))
        }
    };
    Ok(Some((ctx, Refused::default())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn h(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn spec_examples() {
        // From the b3-propagation README.
        let (c, _) = extract_single(&h(&[(
            "b3",
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90",
        )]))
        .unwrap()
        .unwrap();
        assert_eq!(c.trace_id, 0x80f198ee56343ba864fe8b2a57d3eff7);
        assert_eq!(c.span_id, 0xe457b5a2e4d86bd1);
        assert!(c.sampled);
        let (c, _) = extract_single(&h(&[("b3", "0")])).unwrap().unwrap();
        assert!(!c.is_valid() && !c.sampled);
        let (c, _) = extract_single(&h(&[("b3", "d")])).unwrap().unwrap();
        assert!(c.sampled);
        let (c, _) = extract_single(&h(&[("b3", "a3ce929d0e0e4736-00f067aa0ba902b7")]))
            .unwrap()
            .unwrap();
        assert_eq!(c.trace_id, 0xa3ce929d0e0e4736);
        for bad in [
            "x",
            "80f198ee56343ba8-e457b5a2e4d86bd1-2",
            "0000000000000000-e457b5a2e4d86bd1",
            "80f1-e457",
            "a-b-c-d-e",
        ] {
            assert!(extract_single(&h(&[("b3", bad)])).is_err(), "{bad}");
        }
        let (c, _) = extract_multi(&h(&[
            ("X-B3-TraceId", "80f198ee56343ba864fe8b2a57d3eff7"),
            ("X-B3-SpanId", "e457b5a2e4d86bd1"),
            ("X-B3-ParentSpanId", "05e3ac9a4f6e3b90"),
            ("X-B3-Sampled", "1"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(c.span_id, 0xe457b5a2e4d86bd1);
        let (c, _) = extract_multi(&h(&[("x-b3-flags", "1")])).unwrap().unwrap();
        assert!(c.sampled && !c.is_valid());
        assert!(extract_multi(&h(&[("x-b3-traceid", "80f198ee56343ba8")])).is_err());
        assert!(extract_multi(&h(&[])).unwrap().is_none());
    }
}
