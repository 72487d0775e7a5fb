//! The service side of the W3C Trace Context conformance harness
//! (github.com/w3c/trace-context, `test/`).
//!
//! Listens on 127.0.0.1:PORT. For `POST /test` with a JSON array of
//! `{"url": ..., "arguments": [...]}`, it joins the incoming trace (or starts
//! one) with `Tracer::join_or_start`, and for each element sends an HTTP
//! `POST` to `url` with `arguments` as the JSON body, carrying `traceparent`
//! and `tracestate` of a child span.
//!
//! ```sh
//! cargo run -p spanrec --example w3c_test_service -- 5000 &
//! cd trace-context/test && pip install aiohttp && python test.py http://127.0.0.1:5000/test
//! ```
//!
//! (Not port 7777: the harness listens there for the service's calls.)
//!
//! Plain `std` networking keeps the example free of an HTTP stack; it
//! handles one request at a time, which is all the harness needs.

use spanrec::{Carrier, Format, NullRecorder, Tracer};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = std::env::args()
        .nth(1)
        .ok_or("usage: w3c_test_service PORT")?
        .parse()?;
    let tracer = Tracer::builder()
        .service_name("w3c-test-service")
        .propagation([Format::W3c])
        .tracestate_key("spanrec")
        .recorder(NullRecorder::new())
        .build()?;
    let listener = TcpListener::bind(("127.0.0.1", port))?;
    eprintln!("listening on http://127.0.0.1:{port}/test");
    for stream in listener.incoming() {
        if let Err(e) = stream
            .map_err(|e| e.to_string())
            .and_then(|s| handle(&tracer, s))
        {
            eprintln!("request failed: {e}");
        }
    }
    Ok(())
}

/// Request headers as received: every line, in order, repeated names
/// included (a repeated `traceparent` is invalid; repeated `tracestate` and
/// `baggage` lines are one list).
struct Headers(Vec<(String, String)>);

impl Carrier for Headers {
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn set(&mut self, name: &str, value: &str) {
        self.0.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        self.0.push((name.to_string(), value.to_string()));
    }
    fn for_each_name<'a>(&'a self, f: &mut dyn FnMut(&'a str)) {
        self.0.iter().for_each(|(k, _)| f(k));
    }
    fn for_each_value<'a>(&'a self, name: &str, f: &mut dyn FnMut(Option<&'a str>)) {
        for (k, v) in &self.0 {
            if k.eq_ignore_ascii_case(name) {
                f(Some(v));
            }
        }
    }
    fn for_each_entry<'a>(&'a self, f: &mut dyn FnMut(&'a str, Option<&'a str>)) {
        self.0.iter().for_each(|(k, v)| f(k, Some(v)));
    }
}

/// One HTTP/1.1 request: method, path, headers, body.
type Request = (String, String, Headers, Vec<u8>);

/// Reads one HTTP/1.1 request.
fn read_request(stream: &TcpStream) -> Result<Request, String> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).map_err(|e| e.to_string())?;
    let mut parts = line.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    let mut headers = Headers(Vec::new());
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).map_err(|e| e.to_string())? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        let h = h.strip_suffix('\n').unwrap_or(&h);
        let h = h.strip_suffix('\r').unwrap_or(h);
        if let Some((k, v)) = h.split_once(':') {
            // Only optional whitespace (space, tab) around a field value.
            headers
                .0
                .push((k.to_string(), v.trim_matches([' ', '\t']).to_string()));
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body).map_err(|e| e.to_string())?;
    Ok((method, path, headers, body))
}

fn handle(tracer: &Tracer, mut stream: TcpStream) -> Result<(), String> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let (method, path, headers, body) = read_request(&stream)?;
    if method != "POST" || path != "/test" {
        return respond(&mut stream, "404 Not Found");
    }
    let span = tracer.join_or_start("test", &headers);
    let cases: serde_json::Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
    for case in cases.as_array().into_iter().flatten() {
        let (Some(url), Some(arguments)) = (case["url"].as_str(), case.get("arguments")) else {
            continue;
        };
        let child = tracer.span("call").child_of(&span).start();
        let mut out: HashMap<String, String> = HashMap::new();
        tracer.inject(&child.context(), Format::W3c, &mut out);
        if let Err(e) = post(url, &out, &arguments.to_string()) {
            eprintln!("POST {url}: {e}");
        }
    }
    respond(&mut stream, "200 OK")
}

fn respond(stream: &mut TcpStream, status: &str) -> Result<(), String> {
    write!(
        stream,
        "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())
}

/// A minimal HTTP/1.1 `POST` to an `http://host:port/path` URL.
fn post(url: &str, headers: &HashMap<String, String>, body: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or("only http:// URLs are supported")?;
    let (authority, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(a, p)| (a, format!("/{p}")));
    let mut stream = TcpStream::connect(authority).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nhost: {authority}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream
        .write_all(request.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    Ok(())
}
