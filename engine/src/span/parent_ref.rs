//! [`ParentRef`]: what a new span can reference.

use super::Span;
use crate::span_context::SpanContext;

/// Something a new span can reference: a live [`Span`] (cheapest: nothing
/// is allocated) or a [`SpanContext`] (e.g. extracted from a request).
#[derive(Clone, Copy)]
pub enum ParentRef<'a> {
    /// A live span.
    Span(&'a Span),
    /// A context.
    Context(&'a SpanContext),
}

impl<'a> From<&'a Span> for ParentRef<'a> {
    fn from(s: &'a Span) -> Self {
        ParentRef::Span(s)
    }
}

impl<'a> From<&'a SpanContext> for ParentRef<'a> {
    fn from(c: &'a SpanContext) -> Self {
        ParentRef::Context(c)
    }
}
