//! The load generator: keep-alive HTTP/1.1 connections driven by one
//! thread of this process over mio (epoll), each connection with one
//! request outstanding at a time, as `wrk` and `wrk2` do. Every request
//! carries a caller's `traceparent`, as in a service mesh.
//!
//! The thread polls without sleeping (`epoll_wait` with a zero timeout):
//! at ~80,000 requests/s the next send is always a few µs away, below
//! any timer's resolution, and a sleeping generator sends in bursts
//! (tokio's 1 ms timer wheel did, and its wake-ups cost so much that the
//! generator, not the server, set the untraced capacity). The generator
//! therefore takes its core whatever the load; `main.rs` pins it to one
//! core and the server process to the other.

use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const REQUEST: &[u8] = b"GET /machines HTTP/1.1\r\nhost: bench\r\n\
traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\r\n";
/// Connections of the closed loop (as `wrk -c8`).
const CLOSED_CONNECTIONS: usize = 8;
/// Connections of the open loop: enough that one slow response does not
/// hold up the schedule of the others.
const OPEN_CONNECTIONS: usize = 128;

struct Connection {
    stream: TcpStream,
    /// Bytes of the current response received so far.
    buf: Vec<u8>,
    /// Bytes of `REQUEST` not yet written (0 when the request is out).
    unsent: usize,
    /// When the outstanding request was due (`None`: no request out).
    due: Option<Instant>,
    /// When this connection's next request is due (open loop).
    next: Instant,
}

impl Connection {
    fn open(poll: &Poll, port: u16, token: usize) -> Connection {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let std = std::net::TcpStream::connect(addr).expect("connect to the server");
        std.set_nodelay(true).expect("nodelay");
        std.set_nonblocking(true).expect("nonblocking");
        let mut stream = TcpStream::from_std(std);
        poll.registry()
            .register(
                &mut stream,
                Token(token),
                Interest::READABLE | Interest::WRITABLE,
            )
            .expect("register");
        Connection {
            stream,
            buf: Vec::with_capacity(4096),
            unsent: 0,
            due: None,
            next: Instant::now(),
        }
    }

    /// Starts a request that was due at `due`.
    fn send(&mut self, due: Instant) {
        self.due = Some(due);
        self.unsent = REQUEST.len();
        self.buf.clear();
        self.write_rest();
    }

    /// Writes what the socket takes of the request; the rest goes on the
    /// next writable event.
    fn write_rest(&mut self) {
        while self.unsent > 0 {
            let from = REQUEST.len() - self.unsent;
            match self.stream.write(&REQUEST[from..]) {
                Ok(n) => self.unsent -= n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => panic!("send: {e}"),
            }
        }
    }

    /// Reads what has arrived; returns when the request was due once its
    /// whole response is in.
    fn read_response(&mut self) -> Option<Instant> {
        let mut chunk = [0u8; 4096];
        // Edge-triggered: read until the socket is empty, or until the
        // whole response is in (nothing else can be there: one request
        // is out at a time), which saves the `read` that would return
        // `WouldBlock`.
        let end = loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => panic!("server closed the connection"),
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    if let Some(end) = response_end(&self.buf) {
                        break end;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return None,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => panic!("receive: {e}"),
            }
        };
        assert!(self.buf.starts_with(b"HTTP/1.1 200"), "unexpected response");
        assert_eq!(end, self.buf.len(), "one response per request");
        self.buf.clear();
        self.due.take()
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

/// Drives `connections` until `until`: a connection's requests are due
/// every `interval` (`None`: as soon as its last one is answered) from a
/// start just after the connections are open; `done(start, due, now)` is
/// called for every completed request.
fn drive(
    port: u16,
    connections: usize,
    interval: Option<Duration>,
    until: Instant,
    mut done: impl FnMut(Instant, Instant, Instant),
) {
    let mut poll = Poll::new().expect("epoll");
    let mut events = Events::with_capacity(1024);
    let start = Instant::now() + Duration::from_millis(20);
    let mut conns: Vec<Connection> = (0..connections)
        .map(|k| {
            let mut c = Connection::open(&poll, port, k);
            // Open loop: the connections' schedules are spread evenly
            // over one interval.
            c.next = start
                + interval.map_or(Duration::ZERO, |i| i.mul_f64(k as f64 / connections as f64));
            c
        })
        .collect();
    // Requests due before `until` are all sent and answered, however late
    // (an open loop's backlog is part of its latency), within a bound.
    let give_up = until + Duration::from_secs(10);
    loop {
        let now = Instant::now();
        let pending = conns.iter().any(|c| c.due.is_some() || c.next < until);
        if !pending {
            return;
        }
        assert!(now < give_up, "the server stopped answering");
        for c in conns
            .iter_mut()
            .filter(|c| c.due.is_none() && c.next <= now && c.next < until)
        {
            let due = c.next;
            c.send(due);
        }
        // The closed loop waits for responses; the open loop never sleeps
        // (its next request is due in µs).
        let timeout = match interval {
            Some(_) => Duration::ZERO,
            None => Duration::from_millis(1),
        };
        poll.poll(&mut events, Some(timeout)).expect("epoll_wait");
        for event in &events {
            let c = &mut conns[event.token().0];
            if event.is_writable() && c.unsent > 0 {
                c.write_rest();
            }
            if event.is_readable() {
                if let Some(due) = c.read_response() {
                    let now = Instant::now();
                    done(start, due, now);
                    // Closed loop: the next request goes out now; open
                    // loop: at its own time, however late this one was.
                    c.next = match interval {
                        Some(i) => due + i,
                        None => now,
                    };
                }
            }
        }
    }
}

/// Requests completed by `CLOSED_CONNECTIONS` connections sending back to
/// back for `duration`.
pub fn closed_loop(port: u16, duration: Duration) -> u64 {
    let until = Instant::now() + duration;
    let mut completed = 0u64;
    drive(port, CLOSED_CONNECTIONS, None, until, |_, _, now| {
        if now <= until {
            completed += 1;
        }
    });
    completed
}

/// Latency in µs of requests sent at `rate` per second for `duration`
/// over `OPEN_CONNECTIONS` connections, each on its own fixed schedule:
/// one histogram per `window` of due times (the schedule starts once the
/// connections are open, ~20 ms after the call: the last window is that
/// much shorter). Each request is timed from when it
/// was due, not from when it could be sent (a request held up behind a
/// slow response on its connection counts its wait: no coordinated
/// omission, as wrk2).
pub fn open_loop(
    port: u16,
    rate: f64,
    duration: Duration,
    window: Duration,
) -> Vec<Histogram<u64>> {
    let per_connection = rate / OPEN_CONNECTIONS as f64;
    let interval = Duration::from_secs_f64(1.0 / per_connection);
    let windows = ((duration.as_nanos() / window.as_nanos()) as usize).max(1);
    let mut h =
        vec![Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds"); windows];
    let until = Instant::now() + duration;
    drive(
        port,
        OPEN_CONNECTIONS,
        Some(interval),
        until,
        |start, due, now| {
            let us = now.saturating_duration_since(due).as_micros() as u64;
            let k = (due.saturating_duration_since(start).as_nanos() / window.as_nanos()) as usize;
            h[k.min(windows - 1)].saturating_record(us.max(1));
        },
    );
    h
}
