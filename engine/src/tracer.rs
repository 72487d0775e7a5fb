//! [`Tracer`]: every method of the public handle lives here (spans,
//! propagation, lifecycle, statistics); the state behind it is in
//! `shared.rs`, its builder in `builder.rs`.

use crate::builder::TracerBuilder;
use crate::config::Config;
use crate::propagation::{self, binary, BaggageLimits, Carrier, ExtractError, Format, Refused};
use crate::shared::{FlushError, Shared, DROP_SHUTDOWN_TIMEOUT};
use crate::span::{Span, SpanBuilder, SpanContext};
use crate::stats::Stats;
use crate::sync::{Arc, AtomicU64, Ordering};
use std::borrow::Cow;
use std::fmt;
use std::time::Instant;

/// Creates spans and owns the flusher that hands them to a recorder.
///
/// Cheap to clone (all clones share one tracer) and `Send + Sync`. When the
/// last clone is dropped the tracer shuts down, waiting at most
/// [`DROP_SHUTDOWN_TIMEOUT`] for the final batch.
#[derive(Clone)]
pub struct Tracer {
    handle: Arc<Handle>,
}

/// The last handle's drop shuts the tracer down.
struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        let clean = self
            .shared
            .shutdown(Instant::now() + DROP_SHUTDOWN_TIMEOUT)
            .is_ok();
        if clean {
            self.shared.release();
        }
    }
}

impl fmt::Debug for Tracer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tracer")
            .field("id", &self.shared().id)
            .field("config", &self.shared().config)
            .finish()
    }
}

impl Tracer {
    /// A builder with the default configuration.
    pub fn builder() -> TracerBuilder {
        TracerBuilder::new()
    }

    /// The handle of a freshly started tracer.
    pub(crate) fn from_shared(shared: Arc<Shared>) -> Tracer {
        Tracer {
            handle: Arc::new(Handle { shared }),
        }
    }

    #[inline(always)]
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.handle.shared
    }

    /// A builder for a span named `name`, for references, explicit start
    /// time or initial tags.
    #[inline]
    pub fn span(&self, name: impl Into<Cow<'static, str>>) -> SpanBuilder<'_> {
        SpanBuilder::new(self, name.into())
    }

    /// Starts a span named `name`: a child of the thread's active span of
    /// this tracer (see [`Span::enter`]) if there is one, else a new trace.
    #[inline(always)]
    pub fn start_span(&self, name: impl Into<Cow<'static, str>>) -> Span {
        Span::start_now(self, name.into())
    }

    /// Returns once every span finished before the call has been handed to
    /// the recorder and the recorder's `flush` has returned, or with
    /// [`FlushError::Timeout`] when `deadline` passes first.
    ///
    /// "Finished before the call" means finished on this thread before the
    /// call, or on a thread whose finish is otherwise ordered before it
    /// (joined, or synchronized through a lock or channel).
    pub fn flush(&self, deadline: Instant) -> Result<(), FlushError> {
        self.shared().flush(deadline)
    }

    /// Stops the tracer: spans finished before the call are drained and
    /// handed to the recorder, then the recorder's `shutdown` runs and the
    /// flusher exits. Spans finished later are dropped and counted. Waits
    /// at most until `deadline`; calling it again is harmless.
    pub fn shutdown(&self, deadline: Instant) -> Result<(), FlushError> {
        self.shared().shutdown(deadline)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.shared().stats()
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.shared().config
    }

    /// The message of the last error a recorder returned, if any.
    pub fn last_recorder_error(&self) -> Option<String> {
        self.shared().last_recorder_error.lock().clone()
    }
}

fn count(counter: &AtomicU64, n: usize) {
    if n > 0 {
        // ORDERING: Relaxed: a statistic, read by `stats` only; propagation
        // is off the span hot path, so a shared RMW is fine here.
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// Propagation: contexts in and out of carriers, and the server gate.
impl Tracer {
    fn baggage_limits(&self) -> BaggageLimits {
        let l = &self.config().limits;
        BaggageLimits {
            max_items: l.max_baggage_items,
            max_bytes: l.max_baggage_bytes,
        }
    }

    /// Writes `ctx` into `carrier` in `format`. Baggage the format cannot
    /// carry is left out and counted in `Stats::baggage_not_propagated`.
    pub fn inject(&self, ctx: &SpanContext, format: Format, carrier: &mut dyn Carrier) {
        let key = self.config().tracestate_key.as_deref();
        count(
            &self.shared().baggage_not_propagated,
            propagation::inject(ctx, format, carrier, key),
        );
    }

    /// Reads a context in `format`: `Ok(None)` when the carrier has none,
    /// `Err` when one is present but corrupted. Baggage beyond the tracer's
    /// limits is left out and counted.
    #[inline]
    pub fn extract(
        &self,
        format: Format,
        carrier: &dyn Carrier,
    ) -> Result<Option<SpanContext>, ExtractError> {
        let found = propagation::extract(format, carrier, self.baggage_limits())?;
        Ok(found.and_then(|(ctx, refused)| self.count_refused(ctx, refused)))
    }

    /// Counts what an extract left out (baggage items; headers present but
    /// unreadable, such as a dropped `tracestate`), then adopts the context.
    #[inline]
    fn count_refused(&self, ctx: SpanContext, refused: Refused) -> Option<SpanContext> {
        count(&self.shared().baggage_not_propagated, refused.baggage);
        count(&self.shared().propagation_errors, refused.headers);
        self.adopt(ctx)
    }

    /// What this service makes of a caller's context: with
    /// [`Config::honor_remote_sampling`](crate::Config) off (the default),
    /// its own sampling decision replaces the caller's, and a decision
    /// without ids is no context at all.
    #[inline]
    fn adopt(&self, mut ctx: SpanContext) -> Option<SpanContext> {
        if self.config().honor_remote_sampling {
            return Some(ctx);
        }
        if !ctx.is_valid() {
            return None;
        }
        ctx.sampled = self.config().sampler.decide(ctx.trace_id, None);
        Some(ctx)
    }

    /// Tries the configured formats ([`Config::propagation`](crate::Config))
    /// in order; the first present and valid context wins. If none is
    /// valid but one was present and corrupted, that error is returned.
    #[inline]
    pub fn extract_any(&self, carrier: &dyn Carrier) -> Result<Option<SpanContext>, ExtractError> {
        let mut first_error = None;
        for &format in &self.config().propagation {
            match self.extract(format, carrier) {
                Ok(Some(ctx)) => return Ok(Some(ctx)),
                Ok(None) => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(None), Err)
    }

    /// Encodes `ctx` in the [`binary`] envelope.
    pub fn inject_binary(&self, ctx: &SpanContext) -> Vec<u8> {
        let (bytes, skipped) = binary::encode(ctx);
        count(&self.shared().baggage_not_propagated, skipped);
        bytes
    }

    /// Decodes a [`binary`] envelope: `Ok(None)` for empty input.
    pub fn extract_binary(&self, data: &[u8]) -> Result<Option<SpanContext>, ExtractError> {
        let found = binary::decode(data, self.baggage_limits())?;
        Ok(found.and_then(|(ctx, refused)| self.count_refused(ctx, refused)))
    }

    /// The context of the innermost span of this tracer entered on this
    /// thread (see [`Span::enter`]), if any: what a handler behind
    /// [`middleware::TraceLayer`](crate::middleware) passes to work it
    /// hands to another task or thread.
    pub fn active_context(&self) -> Option<SpanContext> {
        crate::span::active_context(self.shared().id)
    }

    /// Injects the context of the span entered on this thread (see
    /// [`Span::enter`]) — what a client calls before an outgoing request.
    /// Returns `false` (and writes nothing) when no span of this tracer is
    /// entered.
    pub fn inject_active(&self, format: Format, carrier: &mut dyn Carrier) -> bool {
        match crate::span::active_context(self.shared().id) {
            Some(ctx) => {
                self.inject(&ctx, format, carrier);
                true
            }
            None => false,
        }
    }

    /// The server gate: a span that is a child of the caller's context in
    /// `carrier`, or a new root when the caller sent none. A corrupted
    /// context also starts a root, tagged `propagation.error` with what was
    /// wrong and counted in `Stats::propagation_errors`; it is never an
    /// error for the request.
    pub fn join_or_start(&self, name: impl Into<Cow<'static, str>>, carrier: &dyn Carrier) -> Span {
        match self.extract_any(carrier) {
            Ok(Some(ctx)) => Span::start_child_of_context(self, name.into(), &ctx),
            Ok(None) => self.span(name).root().start(),
            Err(e) => {
                count(&self.shared().propagation_errors, 1);
                let mut span = self.span(name).root().start();
                span.set_tag("propagation.error", e.to_string());
                span
            }
        }
    }
}
