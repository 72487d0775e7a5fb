//! `span_lifecycle/*`: the cost of one span on the calling thread, with the
//! flusher running and a recorder receiving every span.

use criterion::{black_box, criterion_main, Criterion};
use spanrec::Value;
use spanrec_benches::{null_tracer, report};

fn span_lifecycle(c: &mut Criterion) {
    let mut group = c.benchmark_group("span_lifecycle");

    let (tracer, recorder) = null_tracer();
    group.bench_function("spanrec/root_2_tags", |b| {
        b.iter(|| {
            let mut span = tracer.start_span("find");
            span.set_tag("db.rows", black_box(42i64));
            span.set_tag("db.op", Value::StaticStr("find"));
            span.finish();
        })
    });
    report("spanrec/root_2_tags", &tracer, &recorder);

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
