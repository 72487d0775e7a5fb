//! [`SpanContext`]: what a span passes on to its children, in-process or
//! across the wire. Plain data, below the spans and the propagation codecs
//! that both use it (see `docs/architecture.md`, "Layers").

/// What a span passes on to its children, in-process or across the wire.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SpanContext {
    /// The trace; never zero in a valid context.
    pub trace_id: u128,
    /// The span; never zero in a valid context.
    pub span_id: u64,
    /// Whether the trace is recorded.
    pub sampled: bool,
    /// Baggage items, in the order set.
    pub baggage: Vec<(String, String)>,
    /// The W3C `tracestate` received with this context (empty if none),
    /// forwarded to children and, through propagation, downstream.
    pub trace_state: String,
}

impl SpanContext {
    /// A context without baggage.
    pub fn new(trace_id: u128, span_id: u64, sampled: bool) -> Self {
        SpanContext {
            trace_id,
            span_id,
            sampled,
            baggage: Vec::new(),
            trace_state: String::new(),
        }
    }

    /// The same context with one more baggage item (replacing one with the
    /// same key).
    pub fn with_baggage_item(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        let (key, value) = (key.into(), value.into());
        match self.baggage.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => *v = value,
            None => self.baggage.push((key, value)),
        }
        self
    }

    /// The value of baggage item `key`.
    pub fn baggage_item(&self, key: &str) -> Option<&str> {
        self.baggage
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Whether both ids are non-zero.
    pub fn is_valid(&self) -> bool {
        self.trace_id != 0 && self.span_id != 0
    }
}
