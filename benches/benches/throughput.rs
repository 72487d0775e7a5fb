//! `throughput/*`: 2 producer threads × 1,000,000 spans with 2 tags each,
//! background thread running, a backend counting what it receives: spans/s
//! (criterion's element throughput) and spans lost, for spanrec (default
//! configuration), fastrace, and the OpenTelemetry SDK with its default
//! batch queue (2,048) and a large one (1,000,000).
//!
//! An iteration ends when every span was either received or is known lost
//! (each library flushed), so a library that drops under load shows both a
//! throughput and a loss count — printed after each bench — and whole-process
//! CPU per delivered span: the producer threads' and the library's
//! background thread's (`cpu throughput/...` lines, saved for
//! `ci/bench-table.py`). Target (issue 12): spanrec's background CPU ≤ 30 ns
//! per delivered span.

mod peers;

use criterion::{black_box, criterion_main, Criterion, Throughput};
use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};
use opentelemetry::KeyValue;
use peers::{fastrace_peer, otel_peer, report_peer, PEER_FLUSH_WAIT};
use spanrec::{NullRecorder, OverflowPolicy, Tracer, Value};
use spanrec_benches::cpu::{self, threads, BackgroundMeter, CpuReport};
use spanrec_benches::report;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

const THREADS: u64 = 2;
const SPANS_PER_THREAD: u64 = 1_000_000;

type Job = Arc<dyn Fn(u64) + Send + Sync>;

/// `THREADS` long-lived producer threads (as a server's request threads
/// are): each library's per-thread state is set up once, not per iteration.
struct Producers {
    jobs: Vec<mpsc::Sender<Job>>,
    done: mpsc::Receiver<()>,
    /// The producer threads' kernel ids, for their CPU.
    tids: Vec<u32>,
}

impl Producers {
    fn start() -> Producers {
        let (done_tx, done) = mpsc::channel();
        let (tid_tx, tids) = mpsc::channel();
        let jobs = (0..THREADS)
            .map(|t| {
                let (tx, rx) = mpsc::channel::<Job>();
                let done = done_tx.clone();
                let tid_tx = tid_tx.clone();
                std::thread::spawn(move || {
                    let _ = tid_tx.send(cpu::current_tid());
                    for job in rx {
                        job(t);
                        let _ = done.send(());
                    }
                });
                tx
            })
            .collect();
        let tids = (0..THREADS).filter_map(|_| tids.recv().ok()).collect();
        Producers { jobs, done, tids }
    }

    /// CPU the producer threads have used so far, ns.
    fn cpu_ns(&self) -> u64 {
        let all = cpu::threads_cpu();
        self.tids
            .iter()
            .filter_map(|t| all.get(t))
            .map(|(_, ns)| ns)
            .sum()
    }

    /// Runs `run` (a bench, flushed; returns spans created and delivered)
    /// and saves the whole-process CPU report of the window: the producer
    /// threads' CPU and the background threads named by `background`.
    fn measure(
        &self,
        id: &str,
        background: &'static [&'static str],
        run: impl FnOnce() -> (u64, u64),
    ) {
        let meter = BackgroundMeter::start(background);
        let request_before = self.cpu_ns();
        let (created, delivered) = run();
        CpuReport {
            created,
            delivered,
            background_ns: meter.stop(),
            request_ns: Some(self.cpu_ns() - request_before),
        }
        .save("throughput", id);
    }

    /// Runs `job(thread)` on every producer at once; the time until all
    /// return.
    fn run(&self, job: &Job) -> Duration {
        let began = Instant::now();
        for tx in &self.jobs {
            tx.send(job.clone()).expect("producer thread alive");
        }
        for _ in &self.jobs {
            self.done.recv().expect("producer thread alive");
        }
        began.elapsed()
    }

    /// `iters` times: a run, then `flush` (the library's own), timing both:
    /// an iteration ends when every span is received or known lost.
    fn run_and_flush(&self, job: &Job, iters: u64, flush: impl Fn()) -> Duration {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            total += self.run(job);
            let began = Instant::now();
            flush();
            total += began.elapsed();
        }
        total
    }
}

fn throughput(c: &mut Criterion) {
    let mut group = c.benchmark_group("throughput");
    group
        .sample_size(10)
        .throughput(Throughput::Elements(THREADS * SPANS_PER_THREAD));

    let producers = Producers::start();
    // spanrec twice: the default configuration (`DropNewest`: a full ring
    // drops and counts), and the opt-in `Block` policy, where a producer
    // that finds its ring full waits (spin, yield, short sleeps; at most
    // the timeout) for the flusher: the lossless setting.
    let block = OverflowPolicy::Block {
        timeout: Duration::from_secs(1),
    };
    for (id, policy) in [
        ("spanrec/2x1M", OverflowPolicy::DropNewest),
        ("spanrec_block/2x1M", block),
    ] {
        let recorder = NullRecorder::new();
        let tracer = Tracer::builder()
            .service_name("bench")
            .overflow(policy)
            .recorder(recorder.clone())
            .build()
            .expect("valid configuration");
        let t = tracer.clone();
        let job: Job = Arc::new(move |_| {
            for i in 0..SPANS_PER_THREAD {
                let mut span = t.start_span("find");
                span.set_tag("db.rows", black_box(i as i64));
                span.set_tag("db.op", Value::StaticStr("find"));
                span.finish();
            }
        });
        producers.measure(id, threads::SPANREC, || {
            let (finished, received) = (tracer.stats().finished, recorder.received());
            group.bench_function(id, |b| {
                b.iter_custom(|iters| {
                    producers.run_and_flush(&job, iters, || {
                        let _ = tracer.flush(Instant::now() + Duration::from_secs(60));
                    })
                })
            });
            report(&format!("throughput/{id}"), &tracer, &recorder);
            (
                tracer.stats().finished - finished,
                recorder.received() - received,
            )
        });
    }

    let received = fastrace_peer::install();
    let mut created = 0;
    let job: Job = Arc::new(|_| {
        for _ in 0..SPANS_PER_THREAD {
            let root = fastrace::Span::root("find", fastrace::prelude::SpanContext::random())
                .with_property(|| ("db.rows", "42"))
                .with_property(|| ("db.op", "find"));
            drop(black_box(root));
        }
    });
    producers.measure("fastrace/2x1M", threads::FASTRACE, || {
        group.bench_function("fastrace/2x1M", |b| {
            b.iter_custom(|iters| {
                created += iters * THREADS * SPANS_PER_THREAD;
                producers.run_and_flush(&job, iters, fastrace::flush)
            })
        });
        let received = received.settled();
        report_peer("throughput/fastrace/2x1M", created, received);
        (created, received)
    });

    for (id, queue) in [
        ("otel_default/2x1M", None),
        ("otel_large_queue/2x1M", Some(1_000_000)),
    ] {
        let (provider, received) = match queue {
            None => otel_peer::provider(),
            Some(q) => otel_peer::provider_with_queue(q),
        };
        let otel = provider.tracer("bench");
        let mut created = 0;
        let job: Job = Arc::new(move |_| {
            for i in 0..SPANS_PER_THREAD {
                let mut span = otel.start("find");
                span.set_attribute(KeyValue::new("db.rows", black_box(i as i64)));
                span.set_attribute(KeyValue::new("db.op", "find"));
                span.end();
            }
        });
        producers.measure(id, threads::OTEL, || {
            group.bench_function(id, |b| {
                b.iter_custom(|iters| {
                    created += iters * THREADS * SPANS_PER_THREAD;
                    producers.run_and_flush(&job, iters, || {
                        let _ = provider.force_flush();
                    })
                })
            });
            report_peer(&format!("throughput/{id}"), created, received.get());
            (created, received.get())
        });
        let _ = provider.shutdown_with_timeout(PEER_FLUSH_WAIT);
    }
    group.finish();
}

mod group {
    #![allow(missing_docs)]
    criterion::criterion_group!(benches, super::throughput);
}
criterion_main!(group::benches);
