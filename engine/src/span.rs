//! Spans, their builder, their context, and the thread's active span.

use crate::active;
use crate::clock::unix_nanos;
use crate::ids;
use crate::record::{Inherited, ReferenceKind, SpanRecord, Time, Value};
use crate::shared::Shared;
use crate::sync::Arc;
use crate::thread_slots;
use crate::tracer::Tracer;
use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;
use std::time::SystemTime;

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

/// A span under construction. Made by [`Tracer::span`]; [`start`] it.
///
/// [`start`]: SpanBuilder::start
#[must_use = "a span builder does nothing until `start` is called"]
pub struct SpanBuilder<'t> {
    tracer: &'t Tracer,
    /// Invariant: `Some` until `start` takes it.
    record: Option<SpanRecord>,
    start: Option<SystemTime>,
    /// The sampling decision of the first reference, if any.
    parent_sampled: Option<bool>,
    ignore_active: bool,
}

impl<'t> SpanBuilder<'t> {
    #[inline(always)]
    pub(crate) fn new(tracer: &'t Tracer, name: Cow<'static, str>) -> Self {
        let mut record = SpanRecord::new(tracer.shared());
        record.set_name(name);
        SpanBuilder {
            tracer,
            record: Some(record),
            start: None,
            parent_sampled: None,
            ignore_active: false,
        }
    }

    fn record(&mut self) -> &mut SpanRecord {
        self.record
            .as_mut()
            .expect("SpanBuilder invariant: record present until start")
    }

    #[inline(always)]
    fn reference(mut self, kind: ReferenceKind, parent: ParentRef<'_>) -> Self {
        let record = self.record();
        match parent {
            ParentRef::Span(span) => {
                let Some(p) = span.record.as_ref() else {
                    return self;
                };
                if !p.has_context() {
                    record.add_reference(kind, p.trace_id, p.span_id);
                    return self.parent_decision(parent);
                }
                // The block holds items admitted under the parent's
                // tracer's limits: shared whole only within one tracer.
                let exactly = p.baggage_is_block() && p.tracer_id == record.tracer_id;
                inherit(
                    record,
                    kind,
                    p.trace_id,
                    p.span_id,
                    p.inherited_block(),
                    exactly,
                    p.baggage(),
                    p.trace_state(),
                );
            }
            ParentRef::Context(c) => {
                if !reference_context(record, kind, c) {
                    // A sampling decision without ids (B3 `b3: 0`): no
                    // reference, but the decision stands for the new root.
                    if self.parent_sampled.is_none() {
                        self.parent_sampled = Some(c.sampled);
                    }
                    return self;
                }
            }
        }
        self.parent_decision(parent)
    }

    /// Keeps the first reference's sampling decision.
    #[inline(always)]
    fn parent_decision(mut self, parent: ParentRef<'_>) -> Self {
        if self.parent_sampled.is_none() {
            self.parent_sampled = Some(match parent {
                ParentRef::Span(s) => s.is_sampled(),
                ParentRef::Context(c) => c.sampled,
            });
        }
        self
    }

    /// Adds a `ChildOf` reference. All references are recorded; the first one
    /// gives the trace id and the parent's sampling decision. A context with
    /// zero ids adds no reference, but its sampling decision is used (B3 can
    /// send a decision alone).
    #[inline(always)]
    pub fn child_of<'p>(self, parent: impl Into<ParentRef<'p>>) -> Self {
        self.reference(ReferenceKind::ChildOf, parent.into())
    }

    /// Adds a `FollowsFrom` reference; see [`child_of`](Self::child_of).
    pub fn follows_from<'p>(self, cause: impl Into<ParentRef<'p>>) -> Self {
        self.reference(ReferenceKind::FollowsFrom, cause.into())
    }

    /// Starts a new trace even when a span is active on this thread
    /// (see [`Span::enter`]); explicit references still apply.
    pub fn root(mut self) -> Self {
        self.ignore_active = true;
        self
    }

    /// Uses `time` as the start time instead of now.
    pub fn start_time(mut self, time: SystemTime) -> Self {
        self.start = Some(time);
        self
    }

    /// Sets an initial tag.
    pub fn with_tag<'v>(
        mut self,
        key: impl Into<Cow<'static, str>>,
        value: impl Into<Value<'v>>,
    ) -> Self {
        self.record().set_tag(key.into(), value.into());
        self
    }

    /// Starts the span.
    #[inline(always)]
    pub fn start(mut self) -> Span {
        let mut span = Span {
            record: self.record.take(),
        };
        if let Some(record) = span.record.as_mut() {
            start_record(
                self.tracer.shared(),
                record,
                self.start,
                self.parent_sampled,
                self.ignore_active,
            );
        }
        span
    }
}

/// Adds a reference to a remote context to `record`; `false` (and nothing
/// added) for a context without ids. The context is copied once, into a
/// block that every descendant of the span shares.
#[inline(always)]
fn reference_context(record: &mut SpanRecord, kind: ReferenceKind, c: &SpanContext) -> bool {
    if !c.is_valid() {
        return false;
    }
    let first = !record.has_references();
    record.add_reference(kind, c.trace_id, c.span_id);
    // Most callers send ids only: no call then.
    if !c.baggage.is_empty() || (first && !c.trace_state.is_empty()) {
        let baggage = c.baggage.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        record.inherit_remote(baggage, &c.trace_state, first);
    }
    true
}

/// Starts `record` in place: the parent from the thread's active span
/// (unless it has references or `ignore_active`), ids, the sampling
/// decision, the start time.
#[inline(always)]
fn start_record(
    shared: &Arc<Shared>,
    record: &mut SpanRecord,
    start: Option<SystemTime>,
    mut parent_sampled: Option<bool>,
    ignore_active: bool,
) {
    thread_slots::count_started(shared);
    if !record.has_references() && !ignore_active {
        active::with_active(shared.id, |active| {
            if active.has_context() {
                inherit(
                    record,
                    ReferenceKind::ChildOf,
                    active.trace_id,
                    active.span_id,
                    active.inherited_block(),
                    active.baggage_is_block(),
                    active.baggage(),
                    active.trace_state(),
                );
            } else {
                record.add_reference(ReferenceKind::ChildOf, active.trace_id, active.span_id);
            }
            parent_sampled = Some(active.sampled);
        });
    }
    // Zero unless the first reference gave the trace.
    if record.trace_id == 0 {
        (record.trace_id, record.span_id) = ids::trace_and_span_id();
    } else {
        record.span_id = ids::span_id();
    }
    let sampled = shared.sample(record.trace_id, parent_sampled);
    record.set_sampled(sampled);
    if !sampled {
        record.clear_tags();
    }
    // An unsampled span's times are never read: skip the clock.
    match start {
        Some(t) => record.set_start(Time::UnixNanos(unix_nanos(t))),
        None if sampled => record.set_start(Time::Ticks(shared.clock.now())),
        None => {}
    }
}

impl Span {
    /// [`Tracer::start_span`]: a span built and started in place, without
    /// a builder.
    #[inline(always)]
    pub(crate) fn start_now(tracer: &Tracer, name: Cow<'static, str>) -> Span {
        let shared = tracer.shared();
        // The common case, a literal name on a thread with nothing entered
        // (so a new trace), builds the record in one expression, straight
        // into the caller's `Span`.
        if let Cow::Borrowed(name) = name {
            if active::nothing_entered() {
                thread_slots::count_started(shared);
                let (trace_id, span_id) = ids::trace_and_span_id();
                let sampled = shared.sample(trace_id, None);
                // An unsampled span's times are never read: skip the clock.
                let start = if sampled { shared.clock.now() } else { 0 };
                return Span {
                    record: Some(SpanRecord::new_root(
                        shared, name, trace_id, span_id, sampled, start,
                    )),
                };
            }
        }
        let mut span = Span {
            record: Some(SpanRecord::new(shared)),
        };
        if let Some(record) = span.record.as_mut() {
            record.set_name(name);
            start_record(shared, record, None, None, false);
        }
        span
    }

    /// `tracer.span(name).child_of(ctx).start()` built in place, without
    /// moving a builder (the server gate's join: [`Tracer::join_or_start`]).
    #[inline(always)]
    pub(crate) fn start_child_of_context(
        tracer: &Tracer,
        name: Cow<'static, str>,
        ctx: &SpanContext,
    ) -> Span {
        let shared = tracer.shared();
        let mut span = Span {
            record: Some(SpanRecord::new(shared)),
        };
        if let Some(record) = span.record.as_mut() {
            record.set_name(name);
            // With ids or without, the context's decision is the parent's.
            reference_context(record, ReferenceKind::ChildOf, ctx);
            start_record(shared, record, None, Some(ctx.sampled), false);
        }
        span
    }
}

impl Drop for SpanBuilder<'_> {
    fn drop(&mut self) {
        if let Some(record) = self.record.take() {
            thread_slots::recycle(record.into_ext());
        }
    }
}

/// Records `kind` reference to (`trace_id`, `span_id`) and merges the
/// referenced span's baggage (items already present win).
/// Adds a reference and inherits the parent's baggage and (from the first
/// reference) its `tracestate`, sharing the parent's remote-context
/// `block` where its strings lie in it (`exactly`: the parent's baggage is
/// the block's items).
#[allow(clippy::too_many_arguments)]
fn inherit<'b>(
    record: &mut SpanRecord,
    kind: ReferenceKind,
    trace_id: u128,
    span_id: u64,
    block: Option<&Arc<Inherited>>,
    exactly: bool,
    baggage: impl Iterator<Item = (&'b str, &'b str)>,
    trace_state: &'b str,
) {
    let first = !record.has_references();
    record.add_reference(kind, trace_id, span_id);
    record.inherit_context(block, exactly, baggage, first.then_some(trace_state));
}

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
