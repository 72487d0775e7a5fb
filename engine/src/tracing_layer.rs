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
//! Cost: unlike the native API, this path allocates: `tracing`'s registry
//! locks per span and boxes what a layer keeps in a span's extensions (one
//! allocation and one free per span, through that API unavoidable), and
//! nothing more for a root joined through its `traceparent` field. An
//! event allocates nothing once the thread is warm: its fields are read
//! into per-thread buffers that are reused (a message and `Debug` fields
//! formatted there), then copied into the span's log and arena
//! (`engine/tests/steady_state_allocations.rs` counts both); so are a
//! span's `Debug` fields.
//! A spanrec span is `Send` but not `Sync` while span extensions must be
//! `Sync`, so the layer keeps each span behind an (uncontended) lock. The bench
//! `span_lifecycle/spanrec_via_tracing/root_2_fields` shows what that costs
//! beside the native API.

use crate::propagation::{Carrier, Format};
use crate::sync::Mutex;
use crate::{Span, Tracer, Value};
use std::borrow::Cow;
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
    /// An event's fields as read (`EventFields`), reused from event to
    /// event.
    static EVENT_FIELDS: std::cell::RefCell<EventFields> = std::cell::RefCell::new(EventFields::default());
    /// Where a span field's `Debug` value is formatted before it is copied
    /// into the span's arena, reused.
    static FORMATTED: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
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
/// Extracted where the visitor sees the field's value: no copy of it and no
/// map to carry it (three allocations per joined span before).
fn remote_parent(tracer: &Tracer, attrs: &Attributes<'_>) -> Option<crate::SpanContext> {
    struct Find<'t> {
        tracer: &'t Tracer,
        found: Option<crate::SpanContext>,
    }
    impl Visit for Find<'_> {
        fn record_str(&mut self, field: &Field, value: &str) {
            if field.name() == W3C_TRACEPARENT {
                self.found = self
                    .tracer
                    .extract(Format::W3c, &Traceparent(value))
                    .ok()
                    .flatten();
            }
        }
        fn record_debug(&mut self, _: &Field, _: &dyn fmt::Debug) {}
    }
    if !attrs.fields().iter().any(|f| f.name() == W3C_TRACEPARENT) {
        return None;
    }
    let mut find = Find {
        tracer,
        found: None,
    };
    attrs.record(&mut find);
    find.found
}

/// A carrier of one header, `traceparent`: a span field's value.
struct Traceparent<'a>(&'a str);

impl Carrier for Traceparent<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        name.eq_ignore_ascii_case(W3C_TRACEPARENT).then_some(self.0)
    }
    /// Extraction only: nothing is injected into a span's field.
    fn set(&mut self, _: &str, _: &str) {}
    fn for_each_name<'a>(&'a self, f: &mut dyn FnMut(&'a str)) {
        f(W3C_TRACEPARENT);
    }
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
        use fmt::Write as _;
        let span = &mut *self.span;
        // Formatted into this thread's buffer, then copied into the span's
        // arena (a fresh `String` while the buffer is in use or gone).
        let reused = FORMATTED.try_with(|buffer| {
            let Ok(mut buffer) = buffer.try_borrow_mut() else {
                return false;
            };
            buffer.clear();
            let _ = write!(buffer, "{value:?}");
            span.set_tag(field.name(), buffer.as_str());
            true
        });
        if !matches!(reused, Ok(true)) {
            span.set_tag(field.name(), format!("{value:?}"));
        }
    }
}

/// An event's fields as read, before the span is locked (a field's
/// `Debug` impl may itself emit an event: no lock is held while it runs).
/// Text (string fields, formatted `Debug` values) goes into one buffer;
/// a thread's buffers are reused, so a warm thread reads an event without
/// allocating.
#[derive(Default)]
struct EventFields {
    text: String,
    fields: Vec<(&'static str, Scalar)>,
    /// The formatted `message` field: it names the log entry.
    message: Option<std::ops::Range<usize>>,
}

/// A field's value; text as its range in `EventFields::text`.
enum Scalar {
    I64(i64),
    U64(u64),
    F64(f64),
    Bool(bool),
    Text(std::ops::Range<usize>),
}

impl EventFields {
    fn clear(&mut self) {
        self.text.clear();
        self.fields.clear();
        self.message = None;
    }

    /// Appends `value`'s `Debug` text; its range.
    fn push_debug(&mut self, value: &dyn fmt::Debug) -> std::ops::Range<usize> {
        use fmt::Write as _;
        let start = self.text.len();
        let _ = write!(self.text, "{value:?}");
        start..self.text.len()
    }

    /// Writes the fields into `span`'s log as one entry, named by the
    /// message or else by `event`.
    fn log_into(&self, span: &mut Span, event: &'static str) {
        let Some(record) = span.sampled_record() else {
            return;
        };
        let Some(mut draft) = record.log_begin(None) else {
            return;
        };
        for (key, value) in &self.fields {
            let value = match value {
                Scalar::I64(v) => Value::I64(*v),
                Scalar::U64(v) => Value::U64(*v),
                Scalar::F64(v) => Value::F64(*v),
                Scalar::Bool(v) => Value::Bool(*v),
                Scalar::Text(r) => Value::Str(&self.text[r.clone()]),
            };
            record.log_field(&mut draft, Cow::Borrowed(key), value);
        }
        if let Some(r) = &self.message {
            record.log_event_copied(&mut draft, &self.text[r.clone()]);
        }
        record.log_end(draft, Cow::Borrowed(event));
    }
}

impl Visit for EventFields {
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.fields.push((field.name(), Scalar::I64(value)));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.fields.push((field.name(), Scalar::U64(value)));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.fields.push((field.name(), Scalar::F64(value)));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.fields.push((field.name(), Scalar::Bool(value)));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        let start = self.text.len();
        self.text.push_str(value);
        let range = start..self.text.len();
        self.fields.push((field.name(), Scalar::Text(range)));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let range = self.push_debug(value);
        if field.name() == "message" {
            self.message = Some(range);
        } else {
            self.fields.push((field.name(), Scalar::Text(range)));
        }
    }
}

/// Reads `event`'s fields into this thread's reused buffers (fresh ones
/// while those are in use: an event emitted by a `Debug` impl of another
/// event's field; or during thread teardown) and hands them to `f`.
fn with_event_fields(event: &Event<'_>, f: impl FnOnce(&EventFields)) {
    let mut f = Some(f);
    let _ = EVENT_FIELDS.try_with(|fields| {
        if let Ok(mut fields) = fields.try_borrow_mut() {
            fields.clear();
            event.record(&mut *fields);
            if let Some(f) = f.take() {
                f(&fields);
            }
        }
    });
    // Not read above (the buffers in use, or gone): fresh ones.
    if let Some(f) = f.take() {
        let mut fields = EventFields::default();
        event.record(&mut fields);
        f(&fields);
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
        with_event_fields(event, |fields| {
            let ext = this.extensions();
            if let Some(r) = ext.get::<Recorded>() {
                fields.log_into(&mut r.0.lock(), event.metadata().name());
            }
        });
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
