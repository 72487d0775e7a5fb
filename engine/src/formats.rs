//! The propagation formats a tracer can be configured with ([`Format`])
//! and the W3C `tracestate` key rule that configuration checks
//! (`validate_tracestate_key`). They sit below both `config` and
//! `propagation`: settings name formats without importing the codecs
//! (see `docs/architecture.md`, "Layers").

use std::fmt;

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
    /// spanrec's [`binary`](crate::propagation::binary) envelope. Non-HTTP transports use
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

fn is_key_char(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'*' | b'/')
}

/// A `tracestate` list-member key: `lcalpha 0*255(keychar)`, or
/// `tenant@system` with `(lcalpha / DIGIT) 0*240(keychar)` and
/// `lcalpha 0*13(keychar)`.
pub(crate) fn validate_tracestate_key(key: &str) -> bool {
    let b = key.as_bytes();
    match key.split_once('@') {
        None => {
            !b.is_empty()
                && b.len() <= 256
                && b[0].is_ascii_lowercase()
                && b.iter().all(|&c| is_key_char(c))
        }
        Some((tenant, system)) => {
            let (t, s) = (tenant.as_bytes(), system.as_bytes());
            !t.is_empty()
                && t.len() <= 241
                && (t[0].is_ascii_lowercase() || t[0].is_ascii_digit())
                && t.iter().all(|&c| is_key_char(c))
                && !s.is_empty()
                && s.len() <= 14
                && s[0].is_ascii_lowercase()
                && s.iter().all(|&c| is_key_char(c))
        }
    }
}
