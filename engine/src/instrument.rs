//! [`Instrument`]: carries a span across `.await`.
//!
//! `fut.in_span(span)` enters `span` on the polling thread for the length
//! of every poll (so spans started inside become its children, on whichever
//! worker thread runs the task), and finishes it when the future completes
//! or, tagged `cancelled = true`, when it is dropped unfinished. Modelled on
//! `tracing::Instrument`; the entered span is a copy on the thread's stack
//! (`active.rs`), so nothing dangles if a task migrates between polls.

use crate::Span;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// What to do with the span when the future is ready, before it finishes
/// (tag the outcome, say).
pub type OnReady<T> = fn(&mut Span, &T);

pin_project_lite::pin_project! {
    /// A future run inside a span: see [`Instrument::in_span`].
    #[must_use = "futures do nothing unless polled"]
    pub struct InSpan<F: Future> {
        #[pin]
        inner: F,
        // Holds its record until the future completes or is dropped: a
        // `Span`, not an `Option<Span>`, which would take another 64 bytes
        // (the record's alignment) in every future moved.
        span: Span,
        on_ready: Option<OnReady<F::Output>>,
    }

    impl<F: Future> PinnedDrop for InSpan<F> {
        fn drop(this: Pin<&mut Self>) {
            let span = this.project().span;
            if span.is_live() {
                // Dropped before completion: cancelled (a timeout, a
                // `select!` that took another branch, a shutdown).
                span.set_tag("cancelled", true);
                span.finish_in_place();
            }
        }
    }
}

impl<F: Future> InSpan<F> {
    /// `inner` run inside `span`; `on_ready` sees the span and the output
    /// before the span finishes. If `inner` or `on_ready` panics, the span
    /// is finished when the future is dropped, tagged `cancelled = true`,
    /// like any future dropped before it completed.
    pub fn new(inner: F, span: Option<Span>, on_ready: Option<OnReady<F::Output>>) -> Self {
        InSpan {
            inner,
            span: span.unwrap_or_else(Span::finished),
            on_ready,
        }
    }
}

impl<F: Future> Future for InSpan<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let output = {
            let _entered = this.span.is_live().then(|| this.span.enter());
            match this.inner.poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(output) => output,
            }
        };
        // Finished where it lies: moving the span out first would copy
        // its record twice more.
        if this.span.is_live() {
            if let Some(on_ready) = this.on_ready.take() {
                on_ready(this.span, &output);
            }
            this.span.finish_in_place();
        }
        Poll::Ready(output)
    }
}

/// Runs futures inside spans; implemented for every future.
///
/// ```
/// use spanrec::{InMemoryRecorder, Instrument, Tracer};
/// # let recorder = InMemoryRecorder::new();
/// # let tracer = Tracer::builder().recorder(recorder.clone()).build().unwrap();
/// let work = async { 42 };
/// let answer = futures_lite_block_on(work.in_span(tracer.start_span("compute")));
/// # fn futures_lite_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     let waker = std::task::Waker::noop();
/// #     let mut cx = std::task::Context::from_waker(waker);
/// #     let mut f = std::pin::pin!(f);
/// #     loop { if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v } }
/// # }
/// assert_eq!(answer, 42);
/// ```
pub trait Instrument: Future + Sized {
    /// Runs `self` inside `span`: entered during every poll, finished when
    /// `self` completes, or when it is dropped first (then tagged
    /// `cancelled = true`).
    fn in_span(self, span: Span) -> InSpan<Self> {
        InSpan::new(self, Some(span), None)
    }
}

impl<F: Future> Instrument for F {}
