//! `span_lifecycle/*`: the cost of one span on the calling thread, with the
//! background thread running and a backend receiving every span; spanrec
//! beside fastrace, the OpenTelemetry SDK and `tracing`, in one run.
//!
//! Every bench prints how many spans were created and how many its backend
//! received (a backend that drops spans makes its library look cheaper),
//! and the CPU its library's background thread spent per delivered span in
//! the bench's window (`cpu span_lifecycle/...` lines, saved for
//! `ci/bench-table.py`, which adds criterion's request-thread median to it:
//! the cost per span counts every thread the library runs).

mod peers;

use criterion::{black_box, criterion_main, Criterion};
use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};
use opentelemetry::KeyValue;
use peers::{fastrace_peer, otel_peer, tracing_peer, PEER_FLUSH_WAIT};
use spanrec::{Sampler, Tracer, Value};
use spanrec_benches::cpu::threads;
use spanrec_benches::{measure_peer, measure_spanrec, null_tracer, report};
use std::cell::Cell;
use std::time::Instant;

/// The criterion group, and the directory of the CPU reports.
const GROUP: &str = "span_lifecycle";

/// Local spans per root (per "request") in `fastrace/local_2_props`.
const FASTRACE_LOCAL_SPANS_PER_ROOT: u64 = 1024;

fn span_lifecycle(c: &mut Criterion) {
    let mut group = c.benchmark_group("span_lifecycle");

    // --- spanrec -------------------------------------------------------
    let (tracer, recorder) = null_tracer();
    measure_spanrec(GROUP, "spanrec/root_2_tags", &tracer, &recorder, || {
        group.bench_function("spanrec/root_2_tags", |b| {
            b.iter(|| {
                let mut span = tracer.start_span("find");
                span.set_tag("db.rows", black_box(42i64));
                span.set_tag("db.op", Value::StaticStr("find"));
                span.finish();
            })
        });
    });

    let parent = tracer.start_span("request");
    measure_spanrec(GROUP, "spanrec/child_2_tags", &tracer, &recorder, || {
        group.bench_function("spanrec/child_2_tags", |b| {
            b.iter(|| {
                let mut span = tracer.span("find").child_of(&parent).start();
                span.set_tag("db.rows", black_box(42i64));
                span.set_tag("db.op", Value::StaticStr("find"));
                span.finish();
            })
        });
    });
    drop(parent);

    measure_spanrec(
        GROUP,
        "spanrec/root_log_baggage",
        &tracer,
        &recorder,
        || {
            group.bench_function("spanrec/root_log_baggage", |b| {
                b.iter(|| {
                    let mut span = tracer.start_span("find");
                    span.log(
                        "cache.miss",
                        [
                            ("key", Value::StaticStr("machines")),
                            ("rows", Value::I64(black_box(3))),
                        ],
                    );
                    span.set_baggage_item("user", "admin");
                    span.finish();
                })
            });
        },
    );
    drop(tracer);

    let unsampled_recorder = spanrec::NullRecorder::new();
    let unsampled = Tracer::builder()
        .sampler(Sampler::Never)
        .recorder(unsampled_recorder.clone())
        .build()
        .expect("tracer");
    group.bench_function("spanrec/unsampled", |b| {
        b.iter(|| {
            let mut span = unsampled.start_span("find");
            span.set_tag("db.rows", black_box(42i64));
            span.set_tag("db.op", Value::StaticStr("find"));
            span.finish();
        })
    });
    report("spanrec/unsampled", &unsampled, &unsampled_recorder);
    drop(unsampled);

    // --- fastrace ------------------------------------------------------
    let received = fastrace_peer::install();
    let created = Cell::new(0u64);
    measure_peer(GROUP, "fastrace/root_2_props", threads::FASTRACE, || {
        group.bench_function("fastrace/root_2_props", |b| {
            b.iter(|| {
                let root = fastrace::Span::root("find", fastrace::prelude::SpanContext::random())
                    .with_property(|| ("db.rows", "42"))
                    .with_property(|| ("db.op", "find"));
                drop(black_box(root));
                created.set(created.get() + 1);
            })
        });
        fastrace::flush();
        (created.get(), received.settled())
    });

    let before = received.get();
    created.set(0);
    // Local spans reach the reporter only through their root, and fastrace
    // bounds what one local parent collects (a bench that kept one root for
    // hundreds of millions of local spans measured spans that were
    // discarded: 6,827 of 329 M arrived). As in a server, each "request"
    // gets a root and a local parent; here 1,024 local spans share one, and
    // the root's cost is spread over them.
    measure_peer(GROUP, "fastrace/local_2_props", threads::FASTRACE, || {
        group.bench_function("fastrace/local_2_props", |b| {
            b.iter_custom(|iters| {
                let began = Instant::now();
                let mut done = 0;
                while done < iters {
                    let root =
                        fastrace::Span::root("request", fastrace::prelude::SpanContext::random());
                    let guard = root.set_local_parent();
                    let n = (iters - done).min(FASTRACE_LOCAL_SPANS_PER_ROOT);
                    for _ in 0..n {
                        let span = fastrace::local::LocalSpan::enter_with_local_parent("find")
                            .with_property(|| ("db.rows", "42"))
                            .with_property(|| ("db.op", "find"));
                        drop(black_box(span));
                    }
                    drop(guard);
                    drop(root);
                    done += n;
                    created.set(created.get() + n + 1);
                }
                began.elapsed()
            })
        });
        fastrace::flush();
        (created.get(), received.settled() - before)
    });

    // --- OpenTelemetry SDK ---------------------------------------------
    let (provider, received) = otel_peer::provider();
    let otel = provider.tracer("bench");
    created.set(0);
    measure_peer(GROUP, "otel/root_2_attrs", threads::OTEL, || {
        group.bench_function("otel/root_2_attrs", |b| {
            b.iter(|| {
                let mut span = otel.start("find");
                span.set_attribute(KeyValue::new("db.rows", black_box(42i64)));
                span.set_attribute(KeyValue::new("db.op", "find"));
                span.end();
                created.set(created.get() + 1);
            })
        });
        let _ = provider.force_flush();
        (created.get(), received.get())
    });
    let _ = provider.shutdown_with_timeout(PEER_FLUSH_WAIT);

    // --- tracing -------------------------------------------------------
    let (subscriber, received) = tracing_peer::subscriber();
    created.set(0);
    measure_peer(GROUP, "tracing/root_2_fields", threads::NONE, || {
        tracing::subscriber::with_default(subscriber, || {
            group.bench_function("tracing/root_2_fields", |b| {
                b.iter(|| {
                    let span =
                        tracing::info_span!("find", db.rows = black_box(42i64), db.op = "find");
                    drop(black_box(span));
                    created.set(created.get() + 1);
                })
            });
        });
        (created.get(), received.get())
    });

    // --- spanrec through the `tracing` bridge ----------------------------
    let (tracer, recorder) = null_tracer();
    let subscriber = tracing_subscriber::layer::SubscriberExt::with(
        tracing_subscriber::registry(),
        spanrec::SpanrecLayer::new(tracer.clone()),
    );
    let id = "spanrec_via_tracing/root_2_fields";
    measure_spanrec(GROUP, id, &tracer, &recorder, || {
        tracing::subscriber::with_default(subscriber, || {
            group.bench_function(id, |b| {
                b.iter(|| {
                    let span =
                        tracing::info_span!("find", db.rows = black_box(42i64), db.op = "find");
                    drop(black_box(span));
                })
            });
        });
    });
    drop(tracer);

    // --- references ----------------------------------------------------
    let clock = quanta::Clock::new();
    group.bench_function("ref/tsc_now", |b| b.iter(|| black_box(clock.raw())));
    group.bench_function("ref/instant_now", |b| {
        b.iter(|| black_box(std::time::Instant::now()))
    });
    group.finish();
}

mod group {
    #![allow(missing_docs)]
    criterion::criterion_group!(benches, super::span_lifecycle);
}
criterion_main!(group::benches);
