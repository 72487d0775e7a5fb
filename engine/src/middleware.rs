//! HTTP server middleware and a client helper (feature `tower`): the seed's
//! server gate as a [`tower_layer::Layer`].
//!
//! [`TraceLayer`] wraps an `http` service: for each request it joins the
//! caller's trace from the headers, or starts a root
//! ([`Tracer::join_or_start`], so a corrupted header starts a root tagged
//! `propagation.error`); tags `http.method`, `http.target`, `net.peer.addr`
//! (when the server put the peer's `SocketAddr` in the request extensions)
//! and, on the response, `http.status_code` (`error = true` for 5xx or a
//! service error); and finishes the span when the response is ready.
//! While the inner service's future is polled the span is entered, so spans
//! the handler starts synchronously in that poll are its children. A
//! handler that starts spans elsewhere (a spawned task) takes the
//! request's context with [`Tracer::active_context`] while it is polled.
//! (Nothing is put in the request's extensions: their first insert
//! allocates a map, on every request.)
//!
//! On the client side, [`inject_current`] writes the entered span's context
//! into an outgoing request's headers.
//!
//! The example `http_server` (`cargo run -p spanrec --features tower
//! --example http_server`) serves with hyper through this layer.

use crate::{Format, InSpan, Span, Tracer};
use std::net::SocketAddr;
use std::task::{Context, Poll};

/// The server gate as a `tower` layer; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct TraceLayer {
    tracer: Tracer,
}

impl TraceLayer {
    /// A layer recording into `tracer`.
    pub fn new(tracer: Tracer) -> Self {
        TraceLayer { tracer }
    }
}

impl<S> tower_layer::Layer<S> for TraceLayer {
    type Service = TraceService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TraceService {
            inner,
            tracer: self.tracer.clone(),
        }
    }
}

/// The service [`TraceLayer`] produces.
#[derive(Clone, Debug)]
pub struct TraceService<S> {
    inner: S,
    tracer: Tracer,
}

impl<S, B, R> tower_service::Service<http::Request<B>> for TraceService<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<R>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = static_method(request.method());
        let mut span = match method {
            Some(m) => self.tracer.join_or_start(m, request.headers()),
            None => self
                .tracer
                .join_or_start(request.method().as_str().to_owned(), request.headers()),
        };
        match method {
            Some(m) => span.set_tag("http.method", crate::Value::StaticStr(m)),
            None => span.set_tag("http.method", request.method().as_str()),
        }
        span.set_tag("http.target", request.uri().path());
        if let Some(peer) = request.extensions().get::<SocketAddr>() {
            // Formatted on the stack and copied into the span's arena: no
            // allocation per request (`to_string` made one).
            let mut text = AddrText::default();
            match std::fmt::Write::write_fmt(&mut text, format_args!("{peer}")) {
                Ok(()) => span.set_tag("net.peer.addr", text.as_str()),
                Err(_) => span.set_tag("net.peer.addr", peer.to_string()),
            }
        }
        let inner = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        InSpan::new(inner, Some(span), Some(tag_response::<R, S::Error>))
    }
}

/// A socket address's text, formatted without allocating. 64 bytes hold
/// the longest text an IPv6 socket address can have (45 for the address
/// with an IPv4 tail, a scope id, a port, brackets); `Display` writes at
/// most 58 (it prints IPv4 tails only for mapped addresses).
struct AddrText {
    buf: [u8; 64],
    len: usize,
}

impl Default for AddrText {
    fn default() -> Self {
        AddrText {
            buf: [0; 64],
            len: 0,
        }
    }
}

impl AddrText {
    fn as_str(&self) -> &str {
        // Only whole `&str`s are written (`write_str`).
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl std::fmt::Write for AddrText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        let Some(room) = self.buf.get_mut(self.len..end) else {
            return Err(std::fmt::Error);
        };
        room.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// The standard methods as `'static` strings: the span's name and tag
/// then need no copy (the request path stays cheap: no allocation).
fn static_method(method: &http::Method) -> Option<&'static str> {
    use http::Method;
    Some(match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => return None,
    })
}

/// The response future of [`TraceService`]: the service's future run inside
/// the request's span ([`InSpan`]), which is tagged with the status (or
/// `error`) and finished when the response is ready, or tagged `cancelled`
/// if the future is dropped first.
pub type ResponseFuture<F> = InSpan<F>;

/// Tags the request's span with the outcome.
fn tag_response<R, E>(span: &mut Span, result: &Result<http::Response<R>, E>) {
    match result {
        Ok(response) => {
            let status = response.status();
            span.set_tag("http.status_code", i64::from(status.as_u16()));
            if status.is_server_error() {
                span.set_tag("error", true);
            }
        }
        Err(_) => span.set_tag("error", true),
    }
}

/// Writes the context of the span entered on this thread into `request`'s
/// headers (the tracer's first configured propagation format). Returns
/// `false` when no span is entered.
pub fn inject_current<B>(tracer: &Tracer, request: &mut http::Request<B>) -> bool {
    let format = tracer
        .config()
        .propagation
        .first()
        .copied()
        .unwrap_or(Format::W3c);
    tracer.inject_active(format, request.headers_mut())
}
