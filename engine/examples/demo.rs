//! A simulated RPC server in the shape of the seed's audit-log design: worker
//! threads serve requests; each request joins the caller's trace or starts
//! one at the server gate, carries the calling user as baggage, and opens
//! child spans for the facade and the database. At the end it prints what
//! happened to every span, the hot-path cost, and one trace as a tree.
//!
//! `cargo run --release -p spanrec --example demo [requests]`
//!
//! (The MongoDB-backed version of this demo arrives with `spanrec-mongo`.)

use spanrec::{FinishedSpan, InMemoryRecorder, OverflowPolicy, SpanContext, Tracer};
use std::collections::HashMap;
use std::time::{Duration, Instant};

const WORKERS: usize = 4;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let requests: usize = match std::env::args().nth(1) {
        Some(n) => n
            .parse()
            .map_err(|e| format!("requests must be a number: {e}"))?,
        None => 50_000,
    };
    let recorder = InMemoryRecorder::new();
    let tracer = Tracer::builder()
        .service_name("apiserver")
        .process_tag("host", "demo")
        .recorder(recorder.clone())
        // An audit log prefers a briefly slower request to a missing record.
        // (Four workers on a laptop outrun a recorder that copies every span.)
        .overflow(OverflowPolicy::Block {
            timeout: Duration::from_secs(1),
        })
        .build()?;

    let began = Instant::now();
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let tracer = tracer.clone();
            std::thread::Builder::new()
                .name(format!("rpc-worker-{w}"))
                .spawn(move || serve(&tracer, w, requests / WORKERS))
        })
        .collect::<Result<_, _>>()?;
    let mut finish_ns: Vec<u64> = Vec::new();
    for w in workers {
        finish_ns.extend(w.join().map_err(|_| "worker panicked")?);
    }
    let served = began.elapsed();
    tracer.shutdown(Instant::now() + Duration::from_secs(30))?;

    let stats = tracer.stats();
    let spans = recorder.spans();
    finish_ns.sort_unstable();
    let pct = |p: f64| finish_ns[((finish_ns.len() - 1) as f64 * p) as usize];
    println!("requests served     {}", requests / WORKERS * WORKERS);
    println!("spans finished      {}", stats.finished);
    println!("spans recorded      {}", stats.recorded);
    println!(
        "spans dropped       {} {:?}",
        stats.dropped.total(),
        stats.dropped
    );
    println!("spans received      {}", spans.len());
    println!(
        "throughput          {:.0} spans/s",
        stats.finished as f64 / served.as_secs_f64()
    );
    println!(
        "root span finish    p50 {} ns, p99 {} ns, p99.9 {} ns, max {} ns",
        pct(0.50),
        pct(0.99),
        pct(0.999),
        finish_ns.last().copied().unwrap_or(0)
    );
    if let Some(root) = spans
        .iter()
        .find(|s| s.operation_name == "Client.FullStatus")
    {
        println!("\none trace ({:032x}):", root.trace_id);
        print_tree(&recorder.trace(root.trace_id));
    }
    let lost = stats.finished - stats.recorded - stats.dropped.total();
    if stats.dropped.total() > 0 || lost > 0 || spans.len() as u64 != stats.recorded {
        eprintln!("FAILED: spans were dropped or lost");
        std::process::exit(1);
    }
    Ok(())
}

/// Serves `n` requests; returns how long each request span's `finish` took.
fn serve(tracer: &Tracer, worker: usize, n: usize) -> Vec<u64> {
    let mut finish_ns = Vec::with_capacity(n);
    for i in 0..n {
        // Every third caller already traces and sends its context along.
        let incoming = (i % 3 == 0).then(|| {
            SpanContext::new(
                (0x5eed_u128 << 64) | ((worker as u128) << 32) | i as u128,
                7 + i as u64,
                true,
            )
            .with_baggage_item("user", format!("user-{}", i % 17))
        });
        // The server gate: join the caller's trace, or start one.
        let mut request = match &incoming {
            Some(ctx) => tracer.span("Client.FullStatus").child_of(ctx).start(),
            None => {
                let mut s = tracer.start_span("Client.FullStatus");
                s.set_baggage_item("user", "anonymous");
                s
            }
        };
        request.set_tag("rpc.worker", worker);
        request.set_tag("rpc.request_id", i);
        {
            let _active = request.enter();
            let mut facade = tracer.start_span("facade.FullStatus");
            facade.set_tag("facade.version", 2);
            {
                let _active = facade.enter();
                let mut db = tracer.start_span("mongo.find");
                db.set_tag("db.collection", "machines");
                db.set_tag("db.rows", (i % 50) as i64);
                if i % 10 == 0 {
                    db.log("cache.miss", [("key", "machines")]);
                }
            }
        }
        request.set_tag("rpc.status", "ok");
        let t = Instant::now();
        request.finish();
        finish_ns.push(t.elapsed().as_nanos() as u64);
    }
    finish_ns
}

fn print_tree(spans: &[FinishedSpan]) {
    let mut children: HashMap<Option<u64>, Vec<&FinishedSpan>> = HashMap::new();
    let ids: Vec<u64> = spans.iter().map(|s| s.span_id).collect();
    for s in spans {
        let parent = s.parent_span_id.filter(|p| ids.contains(p));
        children.entry(parent).or_default().push(s);
    }
    fn walk(
        children: &HashMap<Option<u64>, Vec<&FinishedSpan>>,
        parent: Option<u64>,
        depth: usize,
    ) {
        let mut kids = children.get(&parent).cloned().unwrap_or_default();
        kids.sort_by_key(|s| s.start_unix_nanos);
        for s in kids {
            let tags: Vec<String> = s.tags.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
            let baggage: Vec<String> = s.baggage.iter().map(|(k, v)| format!("{k}={v}")).collect();
            println!(
                "{:indent$}{} {:.1} µs  [{}] baggage[{}]",
                "",
                s.operation_name,
                s.duration_nanos as f64 / 1000.0,
                tags.join(", "),
                baggage.join(", "),
                indent = depth * 2
            );
            walk(children, Some(s.span_id), depth + 1);
        }
    }
    walk(&children, None, 1);
}
