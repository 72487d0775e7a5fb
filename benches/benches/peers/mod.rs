//! The peers' backends for the side-by-side benches (shared by the bench
//! targets through `mod peers;`), each configured as its README recommends
//! for production and ending in a reporter/exporter/layer that counts every
//! span it receives, so a bench can print created vs received (a peer that
//! drops spans looks cheaper than it is).

// Each bench target compiles this module and uses a subset of it.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A shared count of spans a backend received.
#[derive(Clone, Default, Debug)]
pub struct Received(Arc<AtomicU64>);

impl Received {
    /// Spans received so far.
    pub fn get(&self) -> u64 {
        // ORDERING: Relaxed: a statistic read after the backend was flushed.
        self.0.load(Ordering::Relaxed)
    }

    /// The count once the backend has gone quiet: polls until it has not
    /// moved for 300 ms (at most [`PEER_FLUSH_WAIT`]). Spans a peer delivers
    /// after its own flush returned are then neither counted as lost nor as
    /// the next bench's.
    #[allow(dead_code)] // not every bench file uses it
    pub fn settled(&self) -> u64 {
        let deadline = Instant::now() + PEER_FLUSH_WAIT;
        let mut last = self.get();
        let mut quiet_since = Instant::now();
        loop {
            std::thread::sleep(Duration::from_millis(50));
            let now = self.get();
            if now != last {
                last = now;
                quiet_since = Instant::now();
            } else if quiet_since.elapsed() >= Duration::from_millis(300)
                || Instant::now() >= deadline
            {
                return now;
            }
        }
    }

    fn add(&self, n: u64) {
        // ORDERING: Relaxed: a statistic; see `get`.
        self.0.fetch_add(n, Ordering::Relaxed);
    }
}

/// Prints a peer's created vs received spans.
pub fn report_peer(id: &str, created: u64, received: u64) {
    println!(
        "{id}: spans created {created} received {received} lost {}",
        created.saturating_sub(received)
    );
}

/// fastrace: the global collector (`set_reporter` with the default
/// `Config`) and a reporter counting the spans it is handed.
pub mod fastrace_peer {
    use super::Received;

    struct Counting(Received);

    impl fastrace::collector::Reporter for Counting {
        fn report(&mut self, spans: Vec<fastrace::prelude::SpanRecord>) {
            self.0.add(spans.len() as u64);
        }
    }

    /// Installs the counting reporter (once per process).
    pub fn install() -> Received {
        let received = Received::default();
        fastrace::set_reporter(
            Counting(received.clone()),
            fastrace::collector::Config::default(),
        );
        received
    }
}

/// OpenTelemetry SDK: `SdkTracerProvider` with the default
/// `BatchSpanProcessor` and an exporter counting the spans it is handed.
pub mod otel_peer {
    use super::Received;
    use opentelemetry_sdk::error::OTelSdkResult;
    use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};

    #[derive(Debug)]
    struct Counting(Received);

    impl SpanExporter for Counting {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            self.0.add(batch.len() as u64);
            Ok(())
        }
    }

    /// A provider with the default batch processor (queue 2,048, batches of
    /// 512 every 5 s, its own thread) feeding the counting exporter.
    pub fn provider() -> (SdkTracerProvider, Received) {
        let received = Received::default();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(Counting(received.clone()))
            .build();
        (provider, received)
    }

    /// The same with a batch queue of `queue` spans (the documented knob
    /// for not dropping under bursts).
    pub fn provider_with_queue(queue: usize) -> (SdkTracerProvider, Received) {
        use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor};
        let received = Received::default();
        let processor = BatchSpanProcessor::builder(Counting(received.clone()))
            .with_batch_config(
                BatchConfigBuilder::default()
                    .with_max_queue_size(queue)
                    .build(),
            )
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .build();
        (provider, received)
    }
}

/// `tracing`: a `Registry` with a layer that materializes every span on
/// close (its name and fields as owned values), as an exporting backend
/// must, and counts it.
pub mod tracing_peer {
    use super::Received;
    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id};
    use tracing::Subscriber;
    use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
    use tracing_subscriber::registry::LookupSpan;

    /// What the layer keeps of a span.
    #[derive(Default)]
    struct Materialized {
        name: &'static str,
        fields: Vec<(&'static str, String)>,
    }

    impl Visit for Materialized {
        fn record_i64(&mut self, field: &Field, value: i64) {
            self.fields.push((field.name(), value.to_string()));
        }
        fn record_str(&mut self, field: &Field, value: &str) {
            self.fields.push((field.name(), value.to_owned()));
        }
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            self.fields.push((field.name(), format!("{value:?}")));
        }
    }

    struct Counting(Received);

    impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Counting {
        fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
            let mut m = Materialized {
                name: attrs.metadata().name(),
                ..Materialized::default()
            };
            attrs.record(&mut m);
            if let Some(span) = ctx.span(id) {
                span.extensions_mut().insert(m);
            }
        }

        fn on_close(&self, id: Id, ctx: Context<'_, S>) {
            if let Some(span) = ctx.span(&id) {
                if let Some(m) = span.extensions_mut().remove::<Materialized>() {
                    std::hint::black_box((m.name, m.fields));
                    self.0.add(1);
                }
            }
        }
    }

    /// The subscriber and its count.
    pub fn subscriber() -> (impl Subscriber + Send + Sync, Received) {
        let received = Received::default();
        let subscriber = tracing_subscriber::registry().with(Counting(received.clone()));
        (subscriber, received)
    }
}

/// How long the benches give a peer's background thread to deliver.
pub const PEER_FLUSH_WAIT: Duration = Duration::from_secs(6);
