//! `propagation/*`: injecting a context into, and extracting it from, a
//! `HashMap<String, String>` of headers — spanrec's W3C and OpenTracing
//! formats beside opentelemetry_sdk's `TraceContextPropagator`, same carrier
//! type, same context (sampled, no baggage), in one run.

use criterion::{black_box, criterion_main, Criterion};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{
    SpanContext as OtelContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use spanrec::{Format, SpanContext};
use spanrec_benches::null_tracer;
use std::collections::HashMap;

const TRACE: u128 = 0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736;
const SPAN: u64 = 0x00f0_67aa_0ba9_02b7;

fn propagation(c: &mut Criterion) {
    let mut group = c.benchmark_group("propagation");
    let (tracer, _) = null_tracer();
    let ctx = SpanContext::new(TRACE, SPAN, true);
    for (id, format) in [("w3c", Format::W3c), ("ot", Format::OpenTracing)] {
        let mut carrier: HashMap<String, String> = HashMap::with_capacity(8);
        group.bench_function(format!("{id}_inject"), |b| {
            b.iter(|| {
                tracer.inject(black_box(&ctx), format, &mut carrier);
            })
        });
        group.bench_function(format!("{id}_extract"), |b| {
            b.iter(|| black_box(tracer.extract(format, black_box(&carrier)).ok().flatten()))
        });
    }

    let propagator = TraceContextPropagator::new();
    let otel_ctx = opentelemetry::Context::new().with_remote_span_context(OtelContext::new(
        TraceId::from(TRACE),
        SpanId::from(SPAN),
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    ));
    let mut carrier: HashMap<String, String> = HashMap::with_capacity(8);
    group.bench_function("otel_w3c_inject", |b| {
        b.iter(|| propagator.inject_context(black_box(&otel_ctx), &mut carrier))
    });
    group.bench_function("otel_w3c_extract", |b| {
        b.iter(|| black_box(propagator.extract(black_box(&carrier))))
    });
    group.finish();
}

mod group {
    #![allow(missing_docs)]
    criterion::criterion_group!(benches, super::propagation);
}
criterion_main!(group::benches);
