//! `memory/*`: peak RSS while 10,000,000 spans (2 tags each) are produced
//! against a backend that keeps up with about a tenth of them — a sick
//! database, say. A bounded recorder drops (and, for spanrec, counts) what it
//! cannot hold; an unbounded one grows. Each library runs in its own child
//! process (this binary re-executed) so the peaks do not mix.
//!
//! `memory/spanrec/threads_TxN` (issue 13): peak RSS while T threads, all
//! alive at once (they start together and exit together), each finish N
//! spans with the `Block` policy against a counting recorder: what memory
//! costs per thread, with nothing lost. `memory/untraced/threads_TxN` is the
//! same run without spans (thread stacks and the harness).
//!
//! `memory/remote_context/{with,without}` (issue 14): one request whose
//! caller sent 8 KB of baggage and a 16 KB `tracestate` (or only a
//! `traceparent`), 2,000 children of its entered server span alive at
//! once: peak RSS, and the RSS left after they are flushed.
//!
//! `cargo bench -p spanrec-benches --bench memory`. Targets: spanrec with
//! the default configuration ≤ 64 MiB peak in the overload (issue 6), and
//! with 512 × 4,000 ≤ 64 MiB, 2,000 × 1,000 ≤ 96 MiB, 0 lost (issue 13);
//! remote context ≤ 8 MiB peak above the run without it, ≤ 1 MiB more
//! left after the flush (issue 14).
//! Each figure is also saved to `target/spanrec-mem/<id>.json` for CI's
//! table.

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

/// A `/proc/self/status` figure of this process, in KiB (`VmHWM:` the
/// peak resident set, `VmRSS:` the current one).
fn status_kib(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Peak resident set (VmHWM) of this process, in KiB.
fn peak_rss_kib() -> u64 {
    status_kib("VmHWM:")
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

/// T threads, all alive at once, each finishing N spans (2 tags) with the
/// `Block` policy; `traced == false` runs the same threads without spans.
fn threads_run(threads: usize, spans: u64, traced: bool) -> String {
    let recorder = spanrec::NullRecorder::new();
    let tracer = Tracer::builder()
        .recorder(recorder.clone())
        .overflow(spanrec::OverflowPolicy::Block {
            timeout: Duration::from_secs(60),
        })
        .build()
        .expect("valid configuration");
    let start = std::sync::Arc::new(std::sync::Barrier::new(threads));
    let end = std::sync::Arc::new(std::sync::Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (tracer, start, end) = (tracer.clone(), start.clone(), end.clone());
            std::thread::Builder::new()
                .stack_size(256 << 10)
                .spawn(move || {
                    start.wait();
                    for i in 0..spans {
                        if traced {
                            let mut span = tracer.start_span("find");
                            span.set_tag("db.rows", black_box(i as i64));
                            span.set_tag("db.op", Value::StaticStr("find"));
                            span.finish();
                        } else {
                            black_box(i);
                        }
                    }
                    end.wait();
                })
                .expect("spawn")
        })
        .collect();
    for h in handles {
        h.join().expect("thread");
    }
    let _ = tracer.flush(Instant::now() + Duration::from_secs(120));
    let s = tracer.stats();
    assert_eq!(
        s.recorded + s.dropped.total(),
        s.finished,
        "exact accounting"
    );
    format!(
        "finished {} recorded {} lost {} {:?}",
        s.finished,
        s.recorded,
        s.dropped.total(),
        s.dropped
    )
}

/// Resident set (VmRSS) of this process now, in KiB.
fn rss_kib() -> u64 {
    status_kib("VmRSS:")
}

/// Children of one request kept alive at once (`memory/remote_context`).
const REMOTE_CHILDREN: usize = 2_000;

/// A request whose caller sent 8 KB of baggage (64 items) and a 16 KB
/// `tracestate` (32 members), or (`remote == false`) only a
/// `traceparent`; the server span is entered and 2,000 children (2 tags
/// each) are alive at once, then finished and flushed. Prints the peak RSS
/// and the RSS left after the flush.
fn remote_context_run(remote: bool) -> String {
    let recorder = spanrec::NullRecorder::new();
    let tracer = Tracer::builder()
        .recorder(recorder.clone())
        .overflow(spanrec::OverflowPolicy::Block {
            timeout: Duration::from_secs(60),
        })
        .build()
        .expect("valid configuration");
    let mut headers = std::collections::HashMap::from([(
        "traceparent".to_string(),
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_string(),
    )]);
    if remote {
        let baggage: Vec<String> = (0..64)
            .map(|i| format!("item{i:02}={}", "b".repeat(118)))
            .collect();
        let tracestate: Vec<String> = (0..32)
            .map(|i| format!("{}{i:02}={}", "k".repeat(248), "v".repeat(250)))
            .collect();
        headers.insert("baggage".into(), baggage.join(","));
        headers.insert("tracestate".into(), tracestate.join(","));
    }
    let server = tracer.join_or_start("GET /machines", &headers);
    if remote {
        assert_eq!(server.context().baggage.len(), 64, "the baggage is kept");
        assert!(
            server.context().trace_state.len() > 15_000,
            "the tracestate is kept"
        );
    }
    let before = rss_kib();
    {
        let _entered = server.enter();
        let children: Vec<_> = (0..REMOTE_CHILDREN)
            .map(|i| {
                let mut c = tracer.start_span("child");
                c.set_tag("i", i as i64);
                c.set_tag("op", Value::StaticStr("find"));
                c
            })
            .collect();
        black_box(&children);
        for c in children {
            c.finish();
        }
    }
    server.finish();
    let _ = tracer.flush(Instant::now() + Duration::from_secs(60));
    let after = rss_kib();
    let s = tracer.stats();
    assert_eq!(
        s.recorded + s.dropped.total(),
        s.finished,
        "exact accounting"
    );
    format!(
        "rss_before_kib {before} rss_after_kib {after} finished {} lost {} {:?}",
        s.finished,
        s.dropped.total(),
        s.dropped
    )
}

fn save(id: &str, mib: f64, summary: &str) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/spanrec-mem")
        .join(id.rsplit_once('/').map_or("", |(d, _)| d));
    let _ = std::fs::create_dir_all(&dir);
    let name = id.rsplit('/').next().unwrap_or(id);
    let _ = std::fs::write(
        dir.join(format!("{name}.json")),
        format!("{{\"id\": \"{id}\", \"peak_mib\": {mib:.2}, \"summary\": \"{summary}\"}}\n"),
    );
}

/// The thread runs: (threads, spans each).
const THREAD_RUNS: [(usize, u64); 4] = [(2, 1_000_000), (64, 31_250), (512, 4_000), (2_000, 1_000)];

fn main() {
    let child = std::env::args()
        .skip(1)
        .find(|a| a.starts_with("memory-child="));
    if let Some(lib) = child {
        let arg = lib.trim_start_matches("memory-child=");
        let summary = match arg.split_once(':') {
            Some(("remote", with)) => remote_context_run(with == "with"),
            Some((kind, shape)) => {
                let (t, n) = shape.split_once('x').expect("TxN");
                let (t, n) = (t.parse().expect("T"), n.parse().expect("N"));
                threads_run(t, n, kind == "threads")
            }
            None => match arg {
                "spanrec" => spanrec_run(),
                "otel" => otel_run(),
                "fastrace" => fastrace_run(),
                other => panic!("unknown library {other}"),
            },
        };
        println!("{} {}", peak_rss_kib(), summary);
        return;
    }
    let exe = std::env::current_exe().expect("own path");
    let mut runs: Vec<(String, String)> = ["spanrec", "otel", "fastrace"]
        .iter()
        .map(|lib| (lib.to_string(), format!("memory/{lib}/10M_overload")))
        .collect();
    for (t, n) in THREAD_RUNS {
        runs.push((
            format!("threads:{t}x{n}"),
            format!("memory/spanrec/threads_{t}x{n}"),
        ));
        runs.push((
            format!("untraced:{t}x{n}"),
            format!("memory/untraced/threads_{t}x{n}"),
        ));
    }
    for with in ["without", "with"] {
        runs.push((
            format!("remote:{with}"),
            format!("memory/remote_context/{with}"),
        ));
    }
    for (arg, id) in runs {
        let out = Command::new(&exe)
            .arg(format!("memory-child={arg}"))
            .output()
            .expect("child run");
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text.lines().last().unwrap_or_default();
        let (kib, summary) = line.split_once(' ').unwrap_or(("0", line));
        let mib = kib.parse::<f64>().unwrap_or(0.0) / 1024.0;
        println!("{id}: peak RSS {mib:.1} MiB; {summary}");
        save(&id, mib, summary);
        if !out.status.success() {
            eprintln!("{}", String::from_utf8_lossy(&out.stderr));
            std::process::exit(1);
        }
    }
}
