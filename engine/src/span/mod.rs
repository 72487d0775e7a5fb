//! Spans: the handle a caller holds (tags, logs, baggage, entering,
//! finishing) and the thread's active span. How a span starts lives in
//! `start.rs`, what it can reference in `parent_ref.rs`; its context is
//! `crate::span_context`.

mod parent_ref;
mod start;

pub use crate::span_context::SpanContext;
pub use parent_ref::ParentRef;
pub use start::SpanBuilder;

use crate::active;
use crate::clock::unix_nanos;
use crate::record::{ReferenceKind, SpanRecord, Time, Value};
use crate::thread_slots;
use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;
use std::time::SystemTime;

/// A span: a timed, named operation with tags, logs and baggage.
///
/// Finishes when dropped, if not finished explicitly. All methods are cheap
/// and never block (see the crate docs for the one opt-in exception).
pub struct Span {
    /// Invariant: `Some` until the span is finished.
    record: Option<SpanRecord>,
}

impl Span {
    /// A span already finished: holds no record, finishing or dropping it
    /// does nothing. Never handed to a caller (its accessors would panic);
    /// it stands for "no span" where an `Option<Span>` would cost 64 bytes.
    pub(crate) fn finished() -> Span {
        Span { record: None }
    }

    /// Whether the span still holds its record (see [`Span::finished`]).
    #[inline]
    pub(crate) fn is_live(&self) -> bool {
        self.record.is_some()
    }

    /// Finishes the span where it lies (a `Span` kept in a future); `self`
    /// is left finished.
    #[inline(always)]
    pub(crate) fn finish_in_place(&mut self) {
        self.finish_with(None);
    }

    #[inline]
    fn rec(&self) -> &SpanRecord {
        self.record
            .as_ref()
            .expect("Span invariant: record present until finish")
    }

    #[inline]
    fn rec_mut(&mut self) -> &mut SpanRecord {
        self.record
            .as_mut()
            .expect("Span invariant: record present until finish")
    }

    /// The trace id.
    pub fn trace_id(&self) -> u128 {
        self.rec().trace_id
    }

    /// The span id.
    pub fn span_id(&self) -> u64 {
        self.rec().span_id
    }

    /// Whether this span will be recorded.
    pub fn is_sampled(&self) -> bool {
        self.rec().sampled()
    }

    /// Renames the operation.
    pub fn set_operation_name(&mut self, name: impl Into<Cow<'static, str>>) {
        self.rec_mut().set_name(name.into());
    }

    /// Sets a tag, replacing an earlier value of the same key. A no-op on an
    /// unsampled span.
    #[inline(always)]
    pub fn set_tag<'v>(&mut self, key: impl Into<Cow<'static, str>>, value: impl Into<Value<'v>>) {
        let record = self.rec_mut();
        if record.sampled() {
            record.set_tag(key.into(), value.into());
        }
    }

    /// Adds a `follows_from` reference to `cause` after the span started
    /// (for bridges such as the `tracing` layer, where causes arrive late).
    /// A no-op on an unsampled span.
    pub fn add_follows_from(&mut self, cause: &SpanContext) {
        let record = self.rec_mut();
        if record.sampled() {
            record.add_reference(ReferenceKind::FollowsFrom, cause.trace_id, cause.span_id);
        }
    }

    /// Logs an event with fields, timestamped now. A no-op on an unsampled
    /// span.
    pub fn log<'v, K, V>(
        &mut self,
        event: impl Into<Cow<'static, str>>,
        fields: impl IntoIterator<Item = (K, V)>,
    ) where
        K: Into<Cow<'static, str>>,
        V: Into<Value<'v>>,
    {
        let record = self.rec_mut();
        if record.sampled() {
            record.log(None, event.into(), fields);
        }
    }

    /// The record of a sampled span, to write a log entry field by field
    /// (the `tracing` bridge); `None` when unsampled (logs are no-ops).
    #[cfg(feature = "tracing")]
    pub(crate) fn sampled_record(&mut self) -> Option<&mut crate::record::SpanRecord> {
        let record = self.rec_mut();
        record.sampled().then_some(record)
    }

    /// Logs an event at an explicit time.
    pub fn log_at<'v, K, V>(
        &mut self,
        time: SystemTime,
        event: impl Into<Cow<'static, str>>,
        fields: impl IntoIterator<Item = (K, V)>,
    ) where
        K: Into<Cow<'static, str>>,
        V: Into<Value<'v>>,
    {
        let record = self.rec_mut();
        if record.sampled() {
            record.log(
                Some(Time::UnixNanos(unix_nanos(time))),
                event.into(),
                fields,
            );
        }
    }

    /// Sets a baggage item: it is recorded on this span and inherited by every
    /// descendant, in-process and (through propagation) remote. Refused and
    /// counted beyond the baggage limits. Kept on unsampled spans too.
    pub fn set_baggage_item(&mut self, key: &str, value: &str) {
        self.rec_mut().set_baggage(key, value);
    }

    /// The value of baggage item `key`, own or inherited.
    pub fn baggage_item(&self, key: &str) -> Option<&str> {
        self.rec().baggage_item(key)
    }

    /// This span's context, for propagation. Allocates only for baggage.
    pub fn context(&self) -> SpanContext {
        context_of(self.rec())
    }

    /// Makes this span the thread's active span until the guard drops:
    /// spans started on this thread meanwhile without an explicit reference
    /// become its children.
    ///
    /// The thread keeps a copy of what children inherit (ids, sampling,
    /// baggage, `tracestate`), so a guard that is leaked (`mem::forget`)
    /// only leaves the span entered on this thread; the span itself may
    /// still be finished, moved or dropped.
    pub fn enter(&self) -> Entered<'_> {
        Entered {
            token: active::enter(self.rec()),
            _span: PhantomData,
            _not_send: PhantomData,
        }
    }

    /// Enters the span on this thread without a guard, for a caller that
    /// pairs it with `active::leave(token)` itself (the `tracing` layer's
    /// `on_enter`/`on_exit`). Safe to leak, as `enter`.
    #[cfg(feature = "tracing")]
    pub(crate) fn enter_token(&self) -> u64 {
        active::enter(self.rec())
    }

    /// Finishes the span now.
    #[inline(always)]
    pub fn finish(mut self) {
        self.finish_with(None);
    }

    /// Finishes the span at an explicit time.
    pub fn finish_at(mut self, time: SystemTime) {
        self.finish_with(Some(time));
    }

    #[inline(always)]
    fn finish_with(&mut self, time: Option<SystemTime>) {
        thread_slots::finish(&mut self.record, time.map(unix_nanos));
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        self.finish_with(None);
    }
}

impl fmt::Debug for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.record.as_ref() {
            Some(r) => f
                .debug_struct("Span")
                .field("trace_id", &format_args!("{:032x}", r.trace_id))
                .field("span_id", &format_args!("{:016x}", r.span_id))
                .field("name", &r.operation_name())
                .field("sampled", &r.sampled())
                .finish(),
            None => f.write_str("Span(finished)"),
        }
    }
}

/// The propagable context of a record.
fn context_of(r: &SpanRecord) -> SpanContext {
    SpanContext {
        trace_id: r.trace_id,
        span_id: r.span_id,
        sampled: r.sampled(),
        baggage: r
            .baggage()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        trace_state: r.trace_state().to_owned(),
    }
}

/// The context of the innermost span of tracer `tracer_id` entered on this
/// thread, if any.
pub(crate) fn active_context(tracer_id: u64) -> Option<SpanContext> {
    let mut found = None;
    active::with_active(tracer_id, |e| found = Some(e.context()));
    found
}

/// Guard returned by [`Span::enter`]; leaves the span when dropped.
/// Stays on the thread that entered (it is `!Send`).
#[must_use = "the span is active only while the guard lives"]
pub struct Entered<'a> {
    /// The thread's entry for this guard (`active.rs`); 0 if none.
    token: u64,
    _span: PhantomData<&'a Span>,
    _not_send: PhantomData<*const ()>,
}

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        active::leave(self.token);
    }
}

impl fmt::Debug for Entered<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Entered")
    }
}
