//! The `tower` middleware: the server gate on `http` services, and the
//! client-side `inject_current`.
#![cfg(feature = "tower")]

use spanrec::middleware::{inject_current, TraceLayer};
use spanrec::{FinishedSpan, InMemoryRecorder, OwnedValue, Tracer};
use std::convert::Infallible;
use std::future::Future;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use tower::{Layer, Service, ServiceExt};

/// Polls a future that completes without waiting (the handlers here do).
fn now<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("the test's futures complete at once"),
    }
}

fn setup() -> (Tracer, InMemoryRecorder) {
    let recorder = InMemoryRecorder::new();
    let tracer = Tracer::builder()
        .recorder(recorder.clone())
        .build()
        .expect("tracer");
    (tracer, recorder)
}

fn spans(tracer: &Tracer, recorder: &InMemoryRecorder) -> Vec<FinishedSpan> {
    tracer
        .flush(Instant::now() + Duration::from_secs(10))
        .expect("flush");
    recorder.spans()
}

fn serve(tracer: &Tracer, request: http::Request<()>, status: u16) -> http::Response<()> {
    let inner_tracer = tracer.clone();
    let handler = tower::service_fn(move |_req: http::Request<()>| {
        // Started while the request span is entered: its child.
        let mut child = inner_tracer.start_span("db.lookup");
        let ctx = inner_tracer
            .active_context()
            .expect("the request's span is entered");
        child.set_tag("request.span", format!("{:016x}", ctx.span_id));
        child.finish();
        let mut response = http::Response::new(());
        *response.status_mut() = http::StatusCode::from_u16(status).expect("status");
        std::future::ready(Ok::<_, Infallible>(response))
    });
    let mut service = TraceLayer::new(tracer.clone()).layer(handler);
    now(now(service.ready()).expect("ready").call(request)).expect("response")
}

#[test]
fn joins_the_callers_trace_and_tags_the_exchange() {
    let (tracer, recorder) = setup();
    let mut request = http::Request::get("/machines?all=1")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .body(())
        .expect("request");
    request
        .extensions_mut()
        .insert::<std::net::SocketAddr>("10.0.0.7:5000".parse().expect("addr"));
    let response = serve(&tracer, request, 200);
    assert_eq!(response.status(), 200);
    let spans = spans(&tracer, &recorder);
    assert_eq!(spans.len(), 2);
    let server = spans
        .iter()
        .find(|s| s.operation_name == "GET")
        .expect("server span");
    let child = spans
        .iter()
        .find(|s| s.operation_name == "db.lookup")
        .expect("child");
    assert_eq!(server.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
    assert_eq!(server.parent_span_id, Some(0x00f067aa0ba902b7));
    assert_eq!(
        server.tag("http.method"),
        Some(&OwnedValue::Str("GET".into()))
    );
    assert_eq!(
        server.tag("http.target"),
        Some(&OwnedValue::Str("/machines".into()))
    );
    assert_eq!(
        server.tag("net.peer.addr"),
        Some(&OwnedValue::Str("10.0.0.7:5000".into()))
    );
    assert_eq!(server.tag("http.status_code"), Some(&OwnedValue::I64(200)));
    assert_eq!(server.tag("error"), None);
    assert_eq!(child.parent_span_id, Some(server.span_id));
    assert_eq!(
        child.tag("request.span"),
        Some(&OwnedValue::Str(format!("{:016x}", server.span_id)))
    );
}

/// The peer's address is recorded as `SocketAddr`'s `Display` writes it,
/// up to the longest one (IPv6 with an IPv4 tail, a scope id and a port).
#[test]
fn peer_addresses_of_every_shape_are_tagged_whole() {
    for peer in [
        "10.0.0.7:5000",
        "255.255.255.255:65535",
        "[::1]:1",
        "[2001:db8::1%7]:5000",
        "[ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255%4294967295]:65535",
    ] {
        let (tracer, recorder) = setup();
        let addr: std::net::SocketAddr = peer.parse().expect("addr");
        let mut request = http::Request::get("/").body(()).expect("request");
        request.extensions_mut().insert(addr);
        serve(&tracer, request, 200);
        let spans = spans(&tracer, &recorder);
        let server = spans
            .iter()
            .find(|s| s.operation_name == "GET")
            .expect("server span");
        assert_eq!(
            server.tag("net.peer.addr"),
            Some(&OwnedValue::Str(addr.to_string())),
            "{peer}"
        );
    }
}

#[test]
fn server_errors_and_corrupted_headers_are_tagged() {
    let (tracer, recorder) = setup();
    let request = http::Request::post("/jobs")
        .header("traceparent", "00-not-a-context")
        .body(())
        .expect("request");
    assert_eq!(serve(&tracer, request, 503).status(), 503);
    let spans = spans(&tracer, &recorder);
    let server = spans
        .iter()
        .find(|s| s.operation_name == "POST")
        .expect("server span");
    assert_eq!(
        server.parent_span_id, None,
        "a corrupted context starts a root"
    );
    assert!(server.tag("propagation.error").is_some());
    assert_eq!(server.tag("error"), Some(&OwnedValue::Bool(true)));
    assert_eq!(tracer.stats().propagation_errors, 1);
}

#[test]
fn clients_inject_the_entered_span() {
    let (tracer, _recorder) = setup();
    let mut outgoing = http::Request::get("http://backend/")
        .body(())
        .expect("request");
    assert!(
        !inject_current(&tracer, &mut outgoing),
        "nothing entered yet"
    );
    let span = tracer.start_span("call.backend");
    {
        let _entered = span.enter();
        assert!(inject_current(&tracer, &mut outgoing));
    }
    let traceparent = outgoing.headers()["traceparent"].to_str().expect("ascii");
    assert_eq!(
        traceparent,
        format!("00-{:032x}-{:016x}-01", span.trace_id(), span.span_id())
    );
}

#[test]
fn every_method_names_its_span_standard_or_not() {
    for method in ["GET", "POST", "DELETE", "PATCH", "PURGE", "MKCOL"] {
        let (tracer, recorder) = setup();
        let request = http::Request::builder()
            .method(method)
            .uri("/x")
            .body(())
            .expect("request");
        serve(&tracer, request, 204);
        let spans = spans(&tracer, &recorder);
        let server = spans
            .iter()
            .find(|s| s.operation_name == method)
            .unwrap_or_else(|| panic!("no span named {method}"));
        assert_eq!(
            server.tag("http.method"),
            Some(&OwnedValue::Str(method.into()))
        );
    }
}
