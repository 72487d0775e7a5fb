//! `memory/*`: peak RSS while 10,000,000 spans (2 tags each) are produced
//! against a backend that keeps up with about a tenth of them — a sick
//! database, say. A bounded recorder drops (and, for spanrec, counts) what it
//! cannot hold; an unbounded one grows. Each library runs in its own child
//! process (this binary re-executed) so the peaks do not mix.
//!
//! `cargo bench -p spanrec-benches --bench memory`. Target (issue 6): spanrec
//! with the default configuration ≤ 64 MiB peak, with the drop count exact.

use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};
use opentelemetry::KeyValue;
use spanrec::{Batch, Recorder, RecorderError, Tracer, Value};
use std::hint::black_box;
use std::process::Command;
use std::time::{Duration, Instant};

const SPANS: u64 = 10_000_000;
/// The slow backend's pause per batch it receives: with batches of ~1,000
/// spans, a little over 1 M spans/s, a tenth of what one producer makes.
const PAUSE_PER_BATCH: Duration = Duration::from_micros(900);

/// Peak resident set (VmHWM) of this process, in KiB.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

struct Slow(u64);

impl Recorder for Slow {
    fn record(&mut self, batch: &Batch<'_>) -> Result<(), RecorderError> {
        self.0 += batch.len() as u64;
        std::thread::sleep(PAUSE_PER_BATCH);
        Ok(())
    }
}

fn spanrec_run() -> String {
    let tracer = Tracer::builder()
        .recorder(Slow(0))
        .build()
        .expect("default configuration");
    for i in 0..SPANS {
        let mut span = tracer.start_span("find");
        span.set_tag("db.rows", black_box(i as i64));
        span.set_tag("db.op", Value::StaticStr("find"));
        span.finish();
    }
    let _ = tracer.flush(Instant::now() + Duration::from_secs(120));
    let s = tracer.stats();
    assert_eq!(
        s.recorded + s.dropped.total(),
        s.finished,
        "exact accounting"
    );
    format!(
        "finished {} recorded {} dropped {} (ring_full {})",
        s.finished,
        s.recorded,
        s.dropped.total(),
        s.dropped.ring_full
    )
}

mod slow_otel {
    use opentelemetry_sdk::error::OTelSdkResult;
    use opentelemetry_sdk::trace::{SpanData, SpanExporter};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    #[derive(Debug, Clone, Default)]
    pub struct Slow(pub Arc<AtomicU64>);

    impl SpanExporter for Slow {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            // ORDERING: Relaxed: a statistic read after shutdown.
            self.0.fetch_add(batch.len() as u64, Ordering::Relaxed);
            std::thread::sleep(super::PAUSE_PER_BATCH / 2);
            Ok(())
        }
    }
}

fn otel_run() -> String {
    let exporter = slow_otel::Slow::default();
    let received = exporter.0.clone();
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .build();
    let tracer = provider.tracer("bench");
    for i in 0..SPANS {
        let mut span = tracer.start("find");
        span.set_attribute(KeyValue::new("db.rows", black_box(i as i64)));
        span.set_attribute(KeyValue::new("db.op", "find"));
        span.end();
    }
    let _ = provider.shutdown_with_timeout(Duration::from_secs(120));
    format!(
        "created {SPANS} received {}",
        received.load(std::sync::atomic::Ordering::Relaxed)
    )
}

fn fastrace_run() -> String {
    struct SlowReporter(std::sync::Arc<std::sync::atomic::AtomicU64>);
    impl fastrace::collector::Reporter for SlowReporter {
        fn report(&mut self, spans: Vec<fastrace::prelude::SpanRecord>) {
            // ORDERING: Relaxed: a statistic read after the flush.
            self.0
                .fetch_add(spans.len() as u64, std::sync::atomic::Ordering::Relaxed);
            std::thread::sleep(PAUSE_PER_BATCH);
        }
    }
    let received = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    fastrace::set_reporter(
        SlowReporter(received.clone()),
        fastrace::collector::Config::default(),
    );
    for _ in 0..SPANS {
        let root = fastrace::Span::root("find", fastrace::prelude::SpanContext::random())
            .with_property(|| ("db.rows", "42"))
            .with_property(|| ("db.op", "find"));
        drop(black_box(root));
    }
    fastrace::flush();
    format!(
        "created {SPANS} received {}",
        received.load(std::sync::atomic::Ordering::Relaxed)
    )
}

fn main() {
    let child = std::env::args()
        .skip(1)
        .find(|a| a.starts_with("memory-child="));
    if let Some(lib) = child {
        let summary = match lib.trim_start_matches("memory-child=") {
            "spanrec" => spanrec_run(),
            "otel" => otel_run(),
            "fastrace" => fastrace_run(),
            other => panic!("unknown library {other}"),
        };
        println!("{} {}", peak_rss_kib(), summary);
        return;
    }
    let exe = std::env::current_exe().expect("own path");
    for lib in ["spanrec", "otel", "fastrace"] {
        let out = Command::new(&exe)
            .arg(format!("memory-child={lib}"))
            .output()
            .expect("child run");
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text.lines().last().unwrap_or_default();
        let (kib, summary) = line.split_once(' ').unwrap_or(("0", line));
        let mib = kib.parse::<f64>().unwrap_or(0.0) / 1024.0;
        println!("memory/{lib}/10M_overload: peak RSS {mib:.1} MiB; {summary}");
        if !out.status.success() {
            eprintln!("{}", String::from_utf8_lossy(&out.stderr));
            std::process::exit(1);
        }
    }
}
