//! An optional process-wide tracer, for code that has no `Tracer` at hand
//! (the `#[spanrec::trace]` attribute): set once, read without a lock.
//! Until one is set, [`start_span`] returns `None` — a free no-op,
//! counted in [`spans_without_tracer`], never a panic.

use crate::{Span, Tracer};
use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

static GLOBAL: OnceLock<Tracer> = OnceLock::new();
/// Spans asked of [`start_span`] while no tracer was set. A `std` atomic,
/// not the `sync` facade's: a `static` needs a `const` constructor, which
/// loom's atomics lack (as `fork::FORKS`); no model involves it.
static WITHOUT: AtomicU64 = AtomicU64::new(0);

/// Makes `tracer` the process-wide tracer. It can be set once: a second
/// call hands its tracer back.
pub fn set_tracer(tracer: Tracer) -> Result<(), Tracer> {
    GLOBAL.set(tracer)
}

/// The process-wide tracer, if one was set.
pub fn tracer() -> Option<&'static Tracer> {
    GLOBAL.get()
}

/// Starts a span with the process-wide tracer (a child of the span entered
/// on this thread, if any); `None`, counted, when none is set.
pub fn start_span(name: impl Into<Cow<'static, str>>) -> Option<Span> {
    match GLOBAL.get() {
        Some(t) => Some(t.start_span(name)),
        None => {
            // ORDERING: Relaxed: a statistic.
            WITHOUT.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// How many spans [`start_span`] was asked for while no tracer was set.
pub fn spans_without_tracer() -> u64 {
    // ORDERING: Relaxed: a statistic.
    WITHOUT.load(Ordering::Relaxed)
}
