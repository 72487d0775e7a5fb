//! Runs one hot-path operation a fixed number of times inside a function
//! that `ci/instructions.sh` tells callgrind to count, for a deterministic
//! instructions-per-operation figure (`benches/instruction-budgets.txt`).
//!
//! `hot_path <root_span|child_span|server_request|layer_request|tower_request|w3c_inject|w3c_extract|ot_inject|ot_extract> [iterations]`

use spanrec::{Format, SpanContext, Value};
use spanrec_benches::null_tracer;
use std::collections::HashMap;
use std::hint::black_box;

#[inline(never)]
fn measured_root_span(t: &spanrec::Tracer, n: u64) {
    for i in 0..n {
        let mut s = t.start_span("find");
        s.set_tag("db.rows", black_box(i as i64));
        s.set_tag("db.op", Value::StaticStr("find"));
        s.finish();
    }
}

#[inline(never)]
fn measured_child_span(t: &spanrec::Tracer, parent: &spanrec::Span, n: u64) {
    for i in 0..n {
        let mut s = t.span("find").child_of(parent).start();
        s.set_tag("db.rows", black_box(i as i64));
        s.set_tag("db.op", Value::StaticStr("find"));
        s.finish();
    }
}

/// What the `server/spanrec_api` bench's handler asks of spanrec per
/// request, on its request thread: join the caller's `traceparent` from
/// the request's headers as hyper hands them over, tag the server span,
/// enter it, two child spans with two tags each, finish.
#[inline(never)]
fn measured_server_request(t: &spanrec::Tracer, headers: &http::HeaderMap, n: u64) {
    for i in 0..n {
        let mut server = t.join_or_start("GET /machines", black_box(headers));
        server.set_tag("http.method", Value::StaticStr("GET"));
        {
            let _entered = server.enter();
            let mut lookup = t.start_span("db.lookup");
            lookup.set_tag("db.op", Value::StaticStr("find"));
            lookup.set_tag("db.rows", black_box(i as i64));
            lookup.finish();
            let mut render = t.start_span("render");
            render.set_tag("format", Value::StaticStr("json"));
            render.set_tag("bytes", 14);
            render.finish();
        }
        server.finish();
    }
}

/// What the `server/spanrec_layer` bench asks of spanrec per request:
/// `TraceLayer`'s service called and its future polled once (as hyper
/// does, through `tower::ServiceExt::oneshot` on a clone), the handler
/// starting the same two tagged children. The count includes what the
/// server pays with any tower service (the clone, `oneshot`, dropping the
/// request and the response): `tower_request` measures that alone.
#[inline(never)]
fn measured_layer_request<S>(service: &S, requests: Vec<http::Request<()>>)
where
    S: tower::Service<http::Request<()>, Response = http::Response<()>> + Clone,
    S::Error: std::fmt::Debug,
{
    call_each(service, requests);
}

/// `layer_request`'s loop without the layer and the spans: what any tower
/// service costs the server (subtract it from `layer_request`).
#[inline(never)]
fn measured_tower_request<S>(service: &S, requests: Vec<http::Request<()>>)
where
    S: tower::Service<http::Request<()>, Response = http::Response<()>> + Clone,
    S::Error: std::fmt::Debug,
{
    call_each(service, requests);
}

#[inline(always)]
fn call_each<S>(service: &S, requests: Vec<http::Request<()>>)
where
    S: tower::Service<http::Request<()>, Response = http::Response<()>> + Clone,
    S::Error: std::fmt::Debug,
{
    use std::future::Future;
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    for req in requests {
        let call = tower::ServiceExt::oneshot(service.clone(), black_box(req));
        let mut call = std::pin::pin!(call);
        match call.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(r) => drop(black_box(r.expect("reply"))),
            std::task::Poll::Pending => unreachable!("the handler is synchronous"),
        }
    }
}

/// Requests as hyper hands them to a service: `GET /machines` with a
/// `host` and the caller's `traceparent`.
fn requests(n: u64) -> Vec<http::Request<()>> {
    (0..n)
        .map(|_| {
            http::Request::get("/machines")
                .header("host", "bench")
                .header(
                    "traceparent",
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                )
                .body(())
                .expect("request")
        })
        .collect()
}

/// Each measured function is a separate symbol for callgrind to toggle on;
/// the loops themselves are shared.
#[inline(always)]
fn inject_loop(
    t: &spanrec::Tracer,
    ctx: &SpanContext,
    format: Format,
    c: &mut HashMap<String, String>,
    n: u64,
) {
    for _ in 0..n {
        t.inject(black_box(ctx), format, c);
    }
}

#[inline(always)]
fn extract_loop(t: &spanrec::Tracer, format: Format, c: &HashMap<String, String>, n: u64) {
    for _ in 0..n {
        black_box(t.extract(format, black_box(c)).ok());
    }
}

#[inline(never)]
fn measured_w3c_inject(
    t: &spanrec::Tracer,
    ctx: &SpanContext,
    c: &mut HashMap<String, String>,
    n: u64,
) {
    inject_loop(t, ctx, Format::W3c, c, n);
}

#[inline(never)]
fn measured_w3c_extract(t: &spanrec::Tracer, c: &HashMap<String, String>, n: u64) {
    extract_loop(t, Format::W3c, c, n);
}

#[inline(never)]
fn measured_ot_inject(
    t: &spanrec::Tracer,
    ctx: &SpanContext,
    c: &mut HashMap<String, String>,
    n: u64,
) {
    inject_loop(t, ctx, Format::OpenTracing, c, n);
}

#[inline(never)]
fn measured_ot_extract(t: &spanrec::Tracer, c: &HashMap<String, String>, n: u64) {
    extract_loop(t, Format::OpenTracing, c, n);
}

fn main() {
    let mut args = std::env::args().skip(1);
    let op = args.next().unwrap_or_default();
    let n: u64 = args.next().and_then(|v| v.parse().ok()).unwrap_or(5_000);
    let (tracer, _) = null_tracer();
    // Warm the thread's buffer pool outside the counted function: hold more
    // spans open at once than the counted loop runs, finish them, and wait
    // until every buffer is back. The counted loop then never allocates and
    // never meets a full ring, so its instruction count does not depend on
    // how the flusher thread happens to be scheduled.
    assert!(n <= 6_000, "at most 6000 iterations (the warmed pool)");
    // The warm spans use every vector the counted ones do (tags,
    // references, the arena), so no recycled buffer grows in the counted
    // loop.
    let warm_parent = tracer.start_span("warm-parent");
    let open: Vec<_> = (0..6_000)
        .map(|i| {
            let mut s = tracer.span("warm").child_of(&warm_parent).start();
            s.set_tag("a", i);
            s.set_tag("b", i);
            // A copied string and a third tag: an extension with an arena
            // chunk and room for tags, as `TraceLayer`'s spans use.
            s.set_tag("c", black_box("warm"));
            s
        })
        .collect();
    drop(open);
    drop(warm_parent);
    tracer
        .flush(std::time::Instant::now() + std::time::Duration::from_secs(60))
        .expect("flush");
    let ctx = SpanContext::new(
        0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736,
        0x00f0_67aa_0ba9_02b7,
        true,
    );
    let mut carrier = HashMap::new();
    tracer.inject(&ctx, Format::W3c, &mut carrier);
    match op.as_str() {
        "root_span" => measured_root_span(&tracer, n),
        "server_request" => {
            // Three spans per request: a third of the iterations keeps
            // within the warmed pool.
            let mut headers = http::HeaderMap::new();
            headers.insert("host", http::HeaderValue::from_static("bench"));
            headers.insert(
                "traceparent",
                http::HeaderValue::from_static(
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                ),
            );
            measured_server_request(&tracer, &headers, n / 3);
        }
        "layer_request" => {
            let t = tracer.clone();
            let service = tower::ServiceBuilder::new()
                .layer(spanrec::middleware::TraceLayer::new(tracer.clone()))
                .service_fn(move |_r: http::Request<()>| {
                    let t = t.clone();
                    async move {
                        let mut lookup = t.start_span("db.lookup");
                        lookup.set_tag("db.op", Value::StaticStr("find"));
                        lookup.set_tag("db.rows", 1);
                        lookup.finish();
                        let mut render = t.start_span("render");
                        render.set_tag("format", Value::StaticStr("json"));
                        render.set_tag("bytes", 14);
                        render.finish();
                        Ok::<_, std::convert::Infallible>(http::Response::new(()))
                    }
                });
            measured_layer_request(&service, requests(n / 3));
        }
        "tower_request" => {
            let service = tower::ServiceBuilder::new().service_fn(|_r: http::Request<()>| async {
                Ok::<_, std::convert::Infallible>(http::Response::new(()))
            });
            measured_tower_request(&service, requests(n / 3));
        }
        "child_span" => {
            let parent = tracer.start_span("parent");
            measured_child_span(&tracer, &parent, n);
        }
        "w3c_inject" => measured_w3c_inject(&tracer, &ctx, &mut carrier, n),
        "w3c_extract" => measured_w3c_extract(&tracer, &carrier, n),
        "ot_inject" | "ot_extract" => {
            let mut ot = HashMap::new();
            tracer.inject(&ctx, Format::OpenTracing, &mut ot);
            if op == "ot_inject" {
                measured_ot_inject(&tracer, &ctx, &mut ot, n);
            } else {
                measured_ot_extract(&tracer, &ot, n);
            }
        }
        other => {
            eprintln!(
                "unknown operation {other:?}: root_span, child_span, server_request, layer_request, tower_request, w3c_inject, w3c_extract, ot_inject, ot_extract"
            );
            std::process::exit(2);
        }
    }
}
