//! A [`tracing_subscriber::Layer`] that records `tracing` spans as spanrec
//! spans (feature `tracing`): an application already instrumented with
//! `tracing` (`#[instrument]`, `info_span!`) records into spanrec by adding
//! one layer.
//!
//! ```
//! use tracing_subscriber::layer::SubscriberExt;
//! let recorder = spanrec::InMemoryRecorder::new();
//! let tracer = spanrec::Tracer::builder().recorder(recorder.clone()).build().unwrap();
//! let subscriber = tracing_subscriber::registry().with(spanrec::SpanrecLayer::new(tracer.clone()));
//! tracing::subscriber::with_default(subscriber, || {
//!     let _request = tracing::info_span!("request", user = "admin").entered();
//!     tracing::info_span!("find", db.rows = 3_i64).in_scope(|| {
//!         tracing::info!(key = "machines", "cache miss");
//!     });
//! });
//! tracer.flush(std::time::Instant::now() + std::time::Duration::from_secs(5)).unwrap();
//! assert_eq!(recorder.len(), 2);
//! ```
//!
//! | `tracing` | spanrec |
//! |---|---|
//! | span (name) | span (operation name), started on `on_new_span`, finished on close |
//! | parent (explicit or current) | `child_of` the parent's spanrec span |
//! | no parent, inside an entered spanrec span (`Span::enter`, `in_span`) | a child of that span |
//! | entered (`enter`, `in_scope`, `Instrument`) | its spanrec span entered on the thread: native spans started meanwhile are its children |
//! | field `traceparent = "00-…"` on a root span | joins that W3C trace (`child_of` the remote context) |
//! | fields, late fields (`Span::record`) | tags, types kept (i64, u64, f64, bool, str; others by `Debug`) |
//! | event inside a span | a log: its message as the event name, its fields as fields |
//! | `follows_from` | a `follows_from` reference |
//!
//! Cost: unlike the native API, this path allocates. `tracing`'s registry
//! locks per span and boxes what a layer keeps in a span's extensions (one
//! allocation and one free per span), and an event's message, string
//! fields and field list are collected before they are logged (about four
//! allocator calls per event with a message and one string field: counted
//! on this machine, 8 per two spans and one event, against 0 for the
//! registry alone). A spanrec span is `Send` but not `Sync` while span
//! extensions must be `Sync`, so the layer keeps each span behind an
//! (uncontended) lock. The bench
//! `span_lifecycle/spanrec_via_tracing/root_2_fields` shows what that costs
//! beside the native API.

use crate::propagation::Format;
use crate::sync::Mutex;
use crate::{Span, Tracer, Value};
use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use tracing_core::field::{Field, Visit};
use tracing_core::span::{Attributes, Id, Record};
use tracing_core::{Event, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// Records `tracing` spans into a [`Tracer`]; see the [module docs](self).
#[derive(Clone)]
pub struct SpanrecLayer {
    tracer: Tracer,
}

impl SpanrecLayer {
    /// A layer recording into `tracer`.
    pub fn new(tracer: Tracer) -> Self {
        SpanrecLayer { tracer }
    }
}

impl fmt::Debug for SpanrecLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpanrecLayer").finish_non_exhaustive()
    }
}

crate::sync::thread_local! {
    /// The `tracing` spans entered on this thread through this layer, with
    /// the tokens of their spanrec entries (`active.rs`), innermost last.
    static ENTERED: std::cell::RefCell<Vec<(Id, u64)>> = std::cell::RefCell::new(Vec::new());
}

/// The field that carries a propagated W3C context into a root span.
const W3C_TRACEPARENT: &str = "traceparent";

/// A `tracing` span's spanrec span, in the span's extensions.
struct Recorded(Mutex<Span>);

/// Copies fields into tags (except `traceparent`, see `remote_parent`).
struct Tags<'a> {
    span: &'a mut Span,
}

/// The context in a root span's `traceparent` field, if it has a valid one.
fn remote_parent(tracer: &Tracer, attrs: &Attributes<'_>) -> Option<crate::SpanContext> {
    struct Find(Option<String>);
    impl Visit for Find {
        fn record_str(&mut self, field: &Field, value: &str) {
            if field.name() == W3C_TRACEPARENT {
                self.0 = Some(value.to_owned());
            }
        }
        fn record_debug(&mut self, _: &Field, _: &dyn fmt::Debug) {}
    }
    if !attrs.fields().iter().any(|f| f.name() == W3C_TRACEPARENT) {
        return None;
    }
    let mut find = Find(None);
    attrs.record(&mut find);
    let carrier = HashMap::from([(W3C_TRACEPARENT.to_owned(), find.0?)]);
    tracer.extract(Format::W3c, &carrier).ok().flatten()
}

impl Visit for Tags<'_> {
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.span.set_tag(field.name(), value);
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.span.set_tag(field.name(), value);
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.span.set_tag(field.name(), value);
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.span.set_tag(field.name(), value);
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() != W3C_TRACEPARENT {
            self.span.set_tag(field.name(), value);
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.span.set_tag(field.name(), format!("{value:?}"));
    }
}

/// Collects an event's message and fields.
#[derive(Default)]
struct EventFields {
    message: Option<String>,
    fields: Vec<(&'static str, Value<'static>)>,
}

impl Visit for EventFields {
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.fields.push((field.name(), Value::I64(value)));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.fields.push((field.name(), Value::U64(value)));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.fields.push((field.name(), Value::F64(value)));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.fields.push((field.name(), Value::Bool(value)));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.fields
            .push((field.name(), Value::String(value.to_owned())));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        if field.name() == "message" {
            self.message = Some(text);
        } else {
            self.fields.push((field.name(), Value::String(text)));
        }
    }
}

impl<S> Layer<S> for SpanrecLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(this) = ctx.span(id) else {
            return;
        };
        let name = attrs.metadata().name();
        let parent = this.parent();
        let parent_ext = parent.as_ref().map(|p| p.extensions());
        let parent_span = parent_ext
            .as_ref()
            .and_then(|ext| ext.get::<Recorded>())
            .map(|r| r.0.lock());
        let mut span = match &parent_span {
            Some(p) => self.tracer.span(name).child_of(&**p).start(),
            // A root that carries a propagated context joins that trace.
            None => match remote_parent(&self.tracer, attrs) {
                Some(remote) => self.tracer.span(name).child_of(&remote).start(),
                None => self.tracer.span(name).start(),
            },
        };
        drop(parent_span);
        drop(parent_ext);
        attrs.record(&mut Tags { span: &mut span });
        this.extensions_mut().insert(Recorded(Mutex::new(span)));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(this) = ctx.span(id) {
            if let Some(r) = this.extensions().get::<Recorded>() {
                values.record(&mut Tags {
                    span: &mut r.0.lock(),
                });
            }
        }
    }

    fn on_follows_from(&self, id: &Id, follows: &Id, ctx: Context<'_, S>) {
        let Some(cause) = ctx.span(follows).and_then(|c| {
            c.extensions()
                .get::<Recorded>()
                .map(|r| r.0.lock().context())
        }) else {
            return;
        };
        if let Some(this) = ctx.span(id) {
            if let Some(r) = this.extensions().get::<Recorded>() {
                r.0.lock().add_follows_from(&cause);
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let Some(this) = ctx.event_span(event) else {
            return;
        };
        let mut fields = EventFields::default();
        event.record(&mut fields);
        let name: Cow<'static, str> = match fields.message {
            Some(m) => Cow::Owned(m),
            None => Cow::Borrowed(event.metadata().name()),
        };
        let ext = this.extensions();
        if let Some(r) = ext.get::<Recorded>() {
            r.0.lock().log(name, fields.fields);
        }
    }

    /// Entering a `tracing` span enters its spanrec span on this thread:
    /// native spans started meanwhile become its children.
    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        let Some(this) = ctx.span(id) else {
            return;
        };
        let ext = this.extensions();
        let Some(r) = ext.get::<Recorded>() else {
            return;
        };
        let token = r.0.lock().enter_token();
        let _ = ENTERED.try_with(|e| e.borrow_mut().push((id.clone(), token)));
    }

    fn on_exit(&self, id: &Id, _ctx: Context<'_, S>) {
        let _ = ENTERED.try_with(|e| {
            let mut entered = e.borrow_mut();
            if let Some(i) = entered.iter().rposition(|(entered_id, _)| entered_id == id) {
                let (_, token) = entered.remove(i);
                crate::active::leave(token);
            }
        });
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        if let Some(this) = ctx.span(&id) {
            if let Some(r) = this.extensions_mut().remove::<Recorded>() {
                r.0.into_inner().finish();
            }
        }
    }
}
