//! The server process: hyper on a current-thread tokio runtime, one
//! handler per tracer. Prints `port N`, serves until stdin closes, then
//! flushes its tracer and prints `spans created C received R`.

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::hint::black_box;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

type Reply = Response<Full<Bytes>>;

/// What a traced server leaves for the end: flush its tracer, then count
/// what its backend received.
type Backend = (Box<dyn FnOnce()>, Arc<dyn Fn() -> u64>);

/// Spans created by the handlers (server + two children per request).
static CREATED: AtomicU64 = AtomicU64::new(0);
/// Spans a traced request finishes: the server span and two children.
pub const SPANS_PER_REQUEST: u64 = 3;

const BODY: &str = "[\"machine-0\"]\n";

/// Handler work: iterations of a dependent multiply chain taking ~7 µs,
/// calibrated once at start-up (work, not a clock, so preemption does not
/// count as work).
pub fn calibrate() -> u64 {
    let mut best = f64::MAX;
    for _ in 0..50 {
        let t = Instant::now();
        work(10_000);
        best = best.min(t.elapsed().as_secs_f64());
    }
    (7e-6 / (best / 10_000.0)) as u64
}

fn work(iterations: u64) -> u64 {
    let mut x = black_box(0x9e37_79b9_7f4a_7c15u64);
    for _ in 0..iterations {
        x = x.wrapping_mul(0x2545_f491_4f6c_dd1d).rotate_left(7);
    }
    black_box(x)
}

fn reply() -> Reply {
    Response::new(Full::new(Bytes::from_static(BODY.as_bytes())))
}

pub fn run(variant: &str, iterations: u64) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind");
        println!("port {}", listener.local_addr().expect("addr").port());
        let _ = std::io::stdout().flush();
        let (finish, received): Backend = match variant {
            "untraced" | "untraced_again" => {
                // The request lives until the reply is built, as in the
                // traced handlers (and any handler that reads its request):
                // dropped first, its buffers would be the reply's, and the
                // allocator's fast path would favour the untraced server.
                serve(listener, move |request| async move {
                    work(iterations);
                    let out = reply();
                    drop(request);
                    Ok::<_, Infallible>(out)
                });
                (Box::new(|| {}), Arc::new(|| 0))
            }
            "untraced_tower" => {
                // As `untraced`, through the tower adapter `spanrec_layer`
                // is served with: what tower costs hyper without any
                // layer, so the layer's own cost is its loss against this.
                untraced_tower(listener, iterations);
                (Box::new(|| {}), Arc::new(|| 0))
            }
            "spanrec_layer" | "spanrec_api" => {
                let recorder = spanrec::NullRecorder::new();
                // `SPANREC_*` variables apply (`ci/server-cachegrind.sh`
                // sets the flush interval); none are set in the timed runs.
                let tracer = spanrec::Tracer::builder()
                    .service_name("server")
                    .recorder(recorder.clone())
                    .env()
                    .expect("SPANREC_* variables")
                    .build()
                    .expect("tracer");
                if variant == "spanrec_layer" {
                    spanrec_layer(listener, tracer.clone(), iterations);
                } else {
                    spanrec_api(listener, tracer.clone(), iterations);
                }
                let t = tracer.clone();
                (
                    Box::new(move || {
                        let _ = t.flush(Instant::now() + Duration::from_secs(10));
                        let s = t.stats();
                        eprintln!(
                            "spanrec stats: finished {} recorded {} dropped {} batches {} \
                             flusher wakeups {} doorbells {} ring high water {}",
                            s.finished,
                            s.recorded,
                            s.dropped.total(),
                            s.batches,
                            s.flusher_wakeups,
                            s.doorbells,
                            s.ring_high_water
                        );
                    }),
                    Arc::new(move || recorder.received()),
                )
            }
            "otel" => otel::serve(listener, iterations),
            "fastrace" => fastrace_peer::serve(listener, iterations),
            other => panic!("unknown variant {other}"),
        };
        // Serve until the parent closes our stdin.
        tokio::task::spawn_blocking(|| {
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
        })
        .await
        .expect("stdin watcher");
        finish();
        println!(
            "spans created {} received {}",
            CREATED.load(Ordering::Relaxed),
            received()
        );
    });
}

/// Accepts connections forever, serving each with `handler`.
fn serve<F, Fut>(listener: tokio::net::TcpListener, handler: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<Reply, Infallible>> + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let service = hyper::service::service_fn(handler.clone());
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
}

/// spanrec's server gate as a tower layer; the handler's child spans find
/// the request span entered.
fn spanrec_layer(listener: tokio::net::TcpListener, tracer: spanrec::Tracer, iterations: u64) {
    use hyper_util::service::TowerToHyperService;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let t = tracer.clone();
            let service = tower::ServiceBuilder::new()
                .layer(spanrec::middleware::TraceLayer::new(tracer.clone()))
                .service_fn(move |_r: Request<Incoming>| {
                    let t = t.clone();
                    async move {
                        children(&t, iterations);
                        Ok::<_, Infallible>(reply())
                    }
                });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service)),
            );
        }
    });
}

/// The untraced handler as a tower service, served as `spanrec_layer` is
/// (`TowerToHyperService`), without the layer.
fn untraced_tower(listener: tokio::net::TcpListener, iterations: u64) {
    use hyper_util::service::TowerToHyperService;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let service = tower::ServiceBuilder::new().service_fn(
                move |request: Request<Incoming>| async move {
                    work(iterations);
                    let out = reply();
                    drop(request);
                    Ok::<_, Infallible>(out)
                },
            );
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service)),
            );
        }
    });
}

/// Two child spans with two tags each around the handler's work.
fn children(tracer: &spanrec::Tracer, iterations: u64) {
    CREATED.fetch_add(SPANS_PER_REQUEST, Ordering::Relaxed);
    let mut lookup = tracer.start_span("db.lookup");
    lookup.set_tag("db.op", spanrec::Value::StaticStr("find"));
    lookup.set_tag("db.rows", 1);
    work(iterations / 2);
    lookup.finish();
    let mut render = tracer.start_span("render");
    render.set_tag("format", spanrec::Value::StaticStr("json"));
    render.set_tag("bytes", BODY.len() as i64);
    work(iterations - iterations / 2);
    render.finish();
}

/// spanrec's plain API: join the caller's trace, enter, finish.
fn spanrec_api(listener: tokio::net::TcpListener, tracer: spanrec::Tracer, iterations: u64) {
    let handler = move |r: Request<Incoming>| {
        let tracer = tracer.clone();
        async move {
            let mut server = tracer.join_or_start("GET /machines", r.headers());
            server.set_tag("http.method", spanrec::Value::StaticStr("GET"));
            {
                let _entered = server.enter();
                children(&tracer, iterations);
            }
            server.finish();
            Ok::<_, Infallible>(reply())
        }
    };
    serve(listener, handler);
}

mod otel {
    use super::*;
    use opentelemetry::propagation::{Extractor, TextMapPropagator};
    use opentelemetry::trace::{Span as _, TraceContextExt, Tracer as _, TracerProvider as _};
    use opentelemetry::KeyValue;
    use opentelemetry_sdk::error::OTelSdkResult;
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};

    #[derive(Debug)]
    struct Counting(Arc<AtomicU64>);

    impl SpanExporter for Counting {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            self.0.fetch_add(batch.len() as u64, Ordering::Relaxed);
            Ok(())
        }
    }

    struct Headers<'a>(&'a hyper::HeaderMap);

    impl Extractor for Headers<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key).and_then(|v| v.to_str().ok())
        }
        fn keys(&self) -> Vec<&str> {
            self.0.keys().map(|k| k.as_str()).collect()
        }
    }

    pub fn serve(listener: tokio::net::TcpListener, iterations: u64) -> Backend {
        let received = Arc::new(AtomicU64::new(0));
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(Counting(received.clone()))
            .build();
        let tracer = Arc::new(provider.tracer("server"));
        let propagator = Arc::new(TraceContextPropagator::new());
        let handler = move |r: Request<Incoming>| {
            let (tracer, propagator) = (tracer.clone(), propagator.clone());
            async move {
                CREATED.fetch_add(SPANS_PER_REQUEST, Ordering::Relaxed);
                let parent = propagator.extract(&Headers(r.headers()));
                let mut server = tracer.start_with_context("GET /machines", &parent);
                server.set_attribute(KeyValue::new("http.method", "GET"));
                let cx = parent.with_span(server);
                let mut lookup = tracer.start_with_context("db.lookup", &cx);
                lookup.set_attribute(KeyValue::new("db.op", "find"));
                lookup.set_attribute(KeyValue::new("db.rows", 1));
                work(iterations / 2);
                lookup.end();
                let mut render = tracer.start_with_context("render", &cx);
                render.set_attribute(KeyValue::new("format", "json"));
                render.set_attribute(KeyValue::new("bytes", BODY.len() as i64));
                work(iterations - iterations / 2);
                render.end();
                cx.span().end();
                Ok::<_, Infallible>(reply())
            }
        };
        super::serve(listener, handler);
        let r = received.clone();
        (
            Box::new(move || {
                let _ = provider.force_flush();
                let _ = provider.shutdown_with_timeout(Duration::from_secs(10));
            }),
            Arc::new(move || r.load(Ordering::Relaxed)),
        )
    }
}

mod fastrace_peer {
    use super::*;
    use fastrace::prelude::*;

    struct Counting(Arc<AtomicU64>);

    impl fastrace::collector::Reporter for Counting {
        fn report(&mut self, spans: Vec<fastrace::prelude::SpanRecord>) {
            self.0.fetch_add(spans.len() as u64, Ordering::Relaxed);
        }
    }

    pub fn serve(listener: tokio::net::TcpListener, iterations: u64) -> Backend {
        let received = Arc::new(AtomicU64::new(0));
        fastrace::set_reporter(
            Counting(received.clone()),
            fastrace::collector::Config::default(),
        );
        let handler = move |r: Request<Incoming>| async move {
            CREATED.fetch_add(SPANS_PER_REQUEST, Ordering::Relaxed);
            let parent = r
                .headers()
                .get("traceparent")
                .and_then(|v| v.to_str().ok())
                .and_then(SpanContext::decode_w3c_traceparent)
                .unwrap_or_else(SpanContext::random);
            let root = Span::root("GET /machines", parent).with_property(|| ("http.method", "GET"));
            {
                let _guard = root.set_local_parent();
                {
                    let _lookup = LocalSpan::enter_with_local_parent("db.lookup")
                        .with_property(|| ("db.op", "find"))
                        .with_property(|| ("db.rows", "1"));
                    work(iterations / 2);
                }
                let _render = LocalSpan::enter_with_local_parent("render")
                    .with_property(|| ("format", "json"))
                    .with_property(|| ("bytes", "14"));
                work(iterations - iterations / 2);
            }
            drop(root);
            Ok::<_, Infallible>(reply())
        };
        super::serve(listener, handler);
        let r = received.clone();
        (
            Box::new(|| {
                fastrace::flush();
                std::thread::sleep(Duration::from_millis(500));
            }),
            Arc::new(move || r.load(Ordering::Relaxed)),
        )
    }
}
