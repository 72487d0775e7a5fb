//! The load generator: keep-alive HTTP/1.1 connections on this process's
//! current-thread runtime, each with one request outstanding at a time.
//! Every request carries a caller's `traceparent`, as in a service mesh.

use hdrhistogram::Histogram;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

const REQUEST: &[u8] = b"GET /machines HTTP/1.1\r\nhost: bench\r\n\
traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\r\n";
/// Connections of the closed loop (as `wrk -c8`).
const CLOSED_CONNECTIONS: usize = 8;
/// Connections of the open loop: enough that one slow response does not
/// hold up the schedule of the others.
const OPEN_CONNECTIONS: usize = 128;

struct Connection {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Connection {
    async fn open(port: u16) -> Connection {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect to the server");
        stream.set_nodelay(true).expect("nodelay");
        Connection {
            stream,
            buf: Vec::with_capacity(4096),
        }
    }

    /// Sends one request and reads its whole response.
    async fn round_trip(&mut self) {
        self.stream.write_all(REQUEST).await.expect("send");
        self.buf.clear();
        loop {
            let mut chunk = [0u8; 2048];
            let n = self.stream.read(&mut chunk).await.expect("receive");
            assert!(n > 0, "server closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
            if let Some(end) = response_end(&self.buf) {
                assert!(self.buf.starts_with(b"HTTP/1.1 200"), "unexpected response");
                assert_eq!(end, self.buf.len(), "one response per request");
                return;
            }
        }
    }
}

/// The length of the response at the start of `buf` once it is complete.
fn response_end(buf: &[u8]) -> Option<usize> {
    let head = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let text = std::str::from_utf8(&buf[..head]).ok()?;
    let length: usize = text
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    (buf.len() >= head + length).then_some(head + length)
}

/// Requests completed by `CLOSED_CONNECTIONS` connections sending back to
/// back for `duration`.
pub async fn closed_loop(port: u16, duration: Duration) -> u64 {
    let until = Instant::now() + duration;
    let mut tasks = Vec::new();
    for _ in 0..CLOSED_CONNECTIONS {
        tasks.push(tokio::spawn(async move {
            let mut c = Connection::open(port).await;
            let mut done = 0u64;
            while Instant::now() < until {
                c.round_trip().await;
                done += 1;
            }
            done
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("load task");
    }
    total
}

/// Latency in µs of requests sent at `rate` per second for `duration`
/// over `OPEN_CONNECTIONS` connections, each with its own schedule. Each
/// request is timed from its scheduled send time when it waited behind a
/// slow response on its connection (no coordinated omission), else from
/// when it was sent. tokio's timer has 1 ms ticks, so requests go out in
/// per-millisecond groups: an arrival pattern burstier than Poisson, the
/// same for every tracer. (Blocking client threads paced by
/// `thread::sleep` were smoother but took so much CPU from the 2 cores
/// that even the untraced server saturated at 90 %.)
pub async fn open_loop(port: u16, rate: f64, duration: Duration) -> Histogram<u64> {
    let start = Instant::now() + Duration::from_millis(50);
    let per_connection = rate / OPEN_CONNECTIONS as f64;
    let interval = Duration::from_secs_f64(1.0 / per_connection);
    let count = (duration.as_secs_f64() * per_connection) as u64;
    let mut tasks = Vec::new();
    for k in 0..OPEN_CONNECTIONS {
        tasks.push(tokio::spawn(async move {
            let mut c = Connection::open(port).await;
            let mut h = histogram();
            let offset = interval.mul_f64(k as f64 / OPEN_CONNECTIONS as f64);
            let mut previous_done = start;
            for i in 0..count {
                let scheduled = start + offset + interval.mul_f64(i as f64);
                tokio::time::sleep_until(scheduled).await;
                let sent = Instant::now();
                let from = if previous_done > scheduled {
                    scheduled
                } else {
                    sent
                };
                c.round_trip().await;
                previous_done = Instant::now();
                let us = previous_done.duration_since(from).as_micros() as u64;
                h.saturating_record(us.max(1));
            }
            h
        }));
    }
    let mut all = histogram();
    for t in tasks {
        all.add(t.await.expect("load task")).expect("same bounds");
    }
    all
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}
