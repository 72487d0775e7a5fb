//! An HTTP server recording every request through `spanrec::middleware`
//! (hyper + the `TraceLayer`): the seed's server gate in practice.
//!
//! `cargo run -p spanrec --features tower --example http_server [port] [requests]`
//! serves `GET /machines` on 127.0.0.1 (port 0 = any free port, printed),
//! stops after `requests` requests (default: never), and prints the spans
//! it recorded. Try it with a caller's context:
//!
//! ```text
//! curl -H 'traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' \
//!      http://127.0.0.1:PORT/machines
//! ```

use bytes_free::full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use spanrec::middleware::TraceLayer;
use spanrec::{InMemoryRecorder, Tracer};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tower::ServiceBuilder;

/// Response bodies without pulling in the `bytes` crate by name.
mod bytes_free {
    use http_body_util::Full;
    use hyper::body::Bytes;

    pub fn full(text: &'static str) -> Full<Bytes> {
        Full::new(Bytes::from_static(text.as_bytes()))
    }
}

async fn handle(
    tracer: Tracer,
    request: Request<Incoming>,
) -> Result<Response<http_body_util::Full<hyper::body::Bytes>>, Infallible> {
    // The request span is entered while this future is polled: a span
    // started here is its child.
    let mut lookup = tracer.start_span("db.lookup");
    lookup.set_tag("db.op", "find");
    let found = request.uri().path() == "/machines";
    lookup.finish();
    Ok(if found {
        Response::new(full("[\"machine-0\"]\n"))
    } else {
        let mut r = Response::new(full("not found\n"));
        *r.status_mut() = StatusCode::NOT_FOUND;
        r
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().and_then(|a| a.parse().ok()).unwrap_or(0);
    let requests: Option<usize> = args.next().and_then(|a| a.parse().ok());
    let recorder = InMemoryRecorder::new();
    let tracer = Tracer::builder()
        .service_name("http_server")
        .recorder(recorder.clone())
        .build()?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("listening on http://{}", listener.local_addr()?);
    let mut served = 0;
    while requests.is_none_or(|n| served < n) {
        let (stream, peer) = listener.accept().await?;
        let handler_tracer = tracer.clone();
        let service = ServiceBuilder::new()
            // The peer address, for the layer's `net.peer.addr` tag.
            .map_request(move |mut r: Request<Incoming>| {
                r.extensions_mut().insert::<SocketAddr>(peer);
                r
            })
            .layer(TraceLayer::new(tracer.clone()))
            .service_fn(move |r| handle(handler_tracer.clone(), r));
        hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
            .await?;
        served += 1;
    }
    tracer.flush(Instant::now() + Duration::from_secs(5))?;
    for span in recorder.spans() {
        println!(
            "{} {:032x}/{:016x} parent {:?} tags {:?}",
            span.operation_name,
            span.trace_id,
            span.span_id,
            span.parent_span_id.map(|p| format!("{p:016x}")),
            span.tags
        );
    }
    Ok(())
}
