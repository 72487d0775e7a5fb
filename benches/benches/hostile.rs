//! `propagation/hostile/*` (issue 14): what one `extract` of a hostile
//! request costs, per format: a 1 MiB worst-case header (the shapes that
//! were quadratic or allocated in proportion to the input), 10,000
//! headers, and 10,000 lines of one list header (`tracestate`, `baggage`). Self-timed: the median of 15 extracts, and the bytes allocated
//! by one (a counting global allocator, which is why this is its own
//! binary). Targets: ≤ 1 ms per extract, ≤ 64 KiB allocated.
//!
//! `cargo bench -p spanrec-benches --bench hostile`; each figure is saved
//! to `target/spanrec-hostile/<id>.json` for CI's table.

use hyper::header::{HeaderMap, HeaderValue};
use spanrec::{Carrier, Format, NullRecorder, Tracer};
use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Counts bytes allocated (not freed) by this process.
struct Counting;

static ALLOCATED: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to `System`; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // ORDERING: Relaxed: a statistic read by the same thread.
        ALLOCATED.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's pointer and layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // ORDERING: Relaxed, as above.
        ALLOCATED.fetch_add(new_size.saturating_sub(layout.size()), Ordering::Relaxed);
        // SAFETY: forwarded with the caller's arguments.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const MIB: usize = 1 << 20;
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// Repeats `unit(i)` until the text is 1 MiB, joined by `sep`.
fn mib_of(sep: &str, unit: impl Fn(usize) -> String) -> String {
    let mut s = String::with_capacity(MIB + 64);
    let mut i = 0;
    while s.len() < MIB {
        if i > 0 {
            s.push_str(sep);
        }
        s.push_str(&unit(i));
        i += 1;
    }
    s
}

fn carrier(pairs: &[(&str, String)]) -> Box<dyn Carrier> {
    Box::new(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect::<HashMap<String, String>>(),
    )
}

/// A request with `traceparent` and 10,000 lines of header `name`
/// (`http::HeaderMap` keeps every line).
fn lines(name: &'static str, line: impl Fn(usize) -> String) -> Box<dyn Carrier> {
    let mut h = HeaderMap::new();
    h.insert("traceparent", HeaderValue::from_static(TRACEPARENT));
    for i in 0..10_000 {
        h.append(name, HeaderValue::from_str(&line(i)).expect("ASCII"));
    }
    Box::new(h)
}

fn main() {
    let (tracer, _recorder) = {
        let recorder = NullRecorder::new();
        let t = Tracer::builder()
            .recorder(recorder.clone())
            .build()
            .expect("valid");
        (t, recorder)
    };
    let cases: Vec<(&str, Format, Box<dyn Carrier>)> = vec![
        (
            "w3c_tracestate_1mib",
            Format::W3c,
            carrier(&[
                ("traceparent", TRACEPARENT.into()),
                ("tracestate", mib_of(",", |i| format!("k{i}=v"))),
            ]),
        ),
        (
            "w3c_baggage_1mib",
            Format::W3c,
            carrier(&[
                ("traceparent", TRACEPARENT.into()),
                ("baggage", mib_of(",", |i| format!("k{i}=v%20{i}"))),
            ]),
        ),
        (
            "w3c_baggage_ows_1mib",
            Format::W3c,
            carrier(&[
                ("traceparent", TRACEPARENT.into()),
                ("baggage", mib_of(" ,\t", |i| format!("k{i} = v"))),
            ]),
        ),
        (
            "b3_single_1mib",
            Format::B3Single,
            carrier(&[("b3", "-".repeat(MIB))]),
        ),
        (
            "jaeger_1mib",
            Format::Jaeger,
            carrier(&[("uber-trace-id", ":".repeat(MIB))]),
        ),
        (
            "ot_traceid_1mib",
            Format::OpenTracing,
            carrier(&[
                ("ot-tracer-traceid", "a".repeat(MIB)),
                ("ot-tracer-spanid", "1".into()),
            ]),
        ),
        (
            "binary_1mib",
            Format::Binary,
            carrier(&[("spanrec-context", "0".repeat(MIB))]),
        ),
        ("ot_10000_headers", Format::OpenTracing, {
            let mut c: HashMap<String, String> = (0..10_000)
                .map(|i| (format!("ot-baggage-k{i}"), format!("v{i}")))
                .collect();
            c.insert("ot-tracer-traceid".into(), "4bf92f3577b34da6".into());
            c.insert("ot-tracer-spanid".into(), "00f067aa0ba902b7".into());
            Box::new(c)
        }),
        ("w3c_10000_headers", Format::W3c, {
            let mut c: HashMap<String, String> = (0..10_000)
                .map(|i| (format!("x-header-{i}"), format!("v{i}")))
                .collect();
            c.insert("traceparent".into(), TRACEPARENT.into());
            Box::new(c)
        }),
        (
            "w3c_10000_tracestate_lines",
            Format::W3c,
            lines("tracestate", |i| format!("k{i}=v")),
        ),
        (
            "w3c_10000_baggage_lines",
            Format::W3c,
            lines("baggage", |i| format!("k{i}=v%20{i}")),
        ),
    ];
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/spanrec-hostile");
    let _ = std::fs::create_dir_all(&dir);
    for (name, format, c) in &cases {
        let mut times = Vec::new();
        let mut allocated = 0;
        let mut outcome = String::new();
        for _ in 0..15 {
            // ORDERING: Relaxed: same thread.
            let before = ALLOCATED.load(Ordering::Relaxed);
            let began = Instant::now();
            let r = black_box(tracer.extract(*format, c.as_ref()));
            times.push(began.elapsed());
            allocated = ALLOCATED.load(Ordering::Relaxed) - before;
            outcome = match &r {
                Ok(Some(ctx)) => format!(
                    "joined ({} baggage items, tracestate {} bytes)",
                    ctx.baggage.len(),
                    ctx.trace_state.len()
                ),
                Ok(None) => "absent".into(),
                Err(e) => format!("refused ({:?})", e.kind),
            };
            drop(r);
        }
        times.sort();
        let median: Duration = times[times.len() / 2];
        let us = median.as_secs_f64() * 1e6;
        let ok = us <= 1000.0 && allocated <= 64 * 1024;
        println!(
            "propagation/hostile/{name}: {us:.1} us per extract, {allocated} bytes allocated; {outcome} \
             (targets <= 1000 us, <= 65536 bytes: {})",
            if ok { "met" } else { "MISSED" }
        );
        let _ = std::fs::write(
            dir.join(format!("{name}.json")),
            format!(
                "{{\"id\": \"propagation/hostile/{name}\", \"us\": {us:.2}, \"allocated\": {allocated}, \"outcome\": \"{outcome}\"}}\n"
            ),
        );
    }
}
