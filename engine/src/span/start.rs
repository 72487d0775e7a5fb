//! How a span starts: the builder, and the in-place starts the tracer's
//! shortcuts use (a new root, a join of a remote context); what a new span
//! inherits from its references or from the thread's active span.

use super::{ParentRef, Span, SpanContext};
use crate::active;
use crate::clock::unix_nanos;
use crate::ids;
use crate::record::{Inherited, ReferenceKind, SpanRecord, Time, Value};
use crate::shared::Shared;
use crate::sync::Arc;
use crate::thread_slots;
use crate::tracer::Tracer;
use std::borrow::Cow;
use std::time::SystemTime;

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

/// Adds a `kind` reference to (`trace_id`, `span_id`) and inherits the
/// referenced span's baggage (items already present win) and (from the
/// first reference) its `tracestate`, sharing the parent's remote-context
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
