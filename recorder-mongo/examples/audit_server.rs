//! The README's main job: a simulated RPC server in the shape of the seed's
//! audit-log design, recording into MongoDB.
//!
//! Worker threads serve requests; each request joins the caller's trace from
//! its headers or starts one at the server gate, carries the calling user as
//! baggage, and opens child spans for the facade and the database call, with
//! tags and logs. After a fixed number of requests the tracer shuts down, the
//! records are read back from MongoDB, and the demo prints what happened to
//! every span, the hot-path cost, and one trace as a tree, and the audit
//! chain is verified from what MongoDB holds. It exits non-zero if anything
//! was lost or the chain does not verify.
//!
//! `cargo run --release -p spanrec-mongo --example audit_server [requests]`
//!
//! Uses `SPANREC_MONGO_URI` if set; otherwise starts a local server (see
//! `spanrec_testkit`), which it stops and removes at the end.

use bson::raw::RawDocumentBuf;
use bson::{doc, Document};
use spanrec::{OverflowPolicy, SpanContext, Tracer};
use spanrec_mongo::encode::unescape_key;
use spanrec_mongo::verify::{verify, VerifyOptions};
use spanrec_mongo::{MongoOptions, MongoRecorder};
use spanrec_testkit::LocalServer;
use std::collections::HashMap;
use std::time::{Duration, Instant};

const WORKERS: usize = 4;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let requests: usize = match std::env::args().nth(1) {
        Some(n) => n
            .parse()
            .map_err(|e| format!("requests must be a number: {e}"))?,
        None => 8_000,
    };
    let requests = requests / WORKERS * WORKERS;
    println!("starting MongoDB (SPANREC_MONGO_URI, else mongod, else SecantusDB)...");
    let server = LocalServer::start()?;
    println!(
        "server: {:?} at {}",
        server.kind(),
        spanrec_mongo::RedactedUri::new(server.uri())
    );

    let collection = format!("demo_{}", std::process::id());
    let mut options = MongoOptions::new("spanrec_demo", &collection);
    options.spool_dir = std::env::temp_dir().join(format!("spanrec-demo-spool-{collection}"));
    let recorder = MongoRecorder::connect(server.uri(), options)?;
    let mongo_stats = recorder.stats();
    let tracer = Tracer::builder()
        .service_name("apiserver")
        .process_tag("host", "demo")
        .recorder(recorder)
        // An audit log prefers a briefly slower request to a missing record.
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
    tracer.shutdown(Instant::now() + Duration::from_secs(300))?;
    let delivered_in = began.elapsed();

    let stats = tracer.stats();
    let mongo = mongo_stats.get();
    let coll = mongodb::sync::Client::with_uri_str(server.uri())?
        .database("spanrec_demo")
        .collection::<Document>(&collection);
    let stored = coll.count_documents(doc! {}).run()?;

    finish_ns.sort_unstable();
    let pct = |p: f64| finish_ns[((finish_ns.len() - 1) as f64 * p) as usize];
    println!();
    println!("requests served       {requests}");
    println!("spans created         {}", stats.finished);
    println!(
        "spans delivered       {} (stored in MongoDB: {stored})",
        mongo.delivered
    );
    println!(
        "spans durable         {} (in flight {})",
        stats.durable,
        stats.in_flight()
    );
    println!(
        "spans dropped         {} {:?}",
        stats.dropped.total(),
        stats.dropped
    );
    println!(
        "spooled / replayed    {} / {}",
        mongo.spooled, mongo.replayed
    );
    println!("failed permanently    {}", mongo.failed_permanently);
    println!(
        "spans/s               {:.0} on the request threads, {:.0} end to end into MongoDB",
        stats.finished as f64 / served.as_secs_f64(),
        stored as f64 / delivered_in.as_secs_f64()
    );
    println!(
        "request span finish   p50 {} ns, p99 {} ns, p99.9 {} ns, max {} ns",
        pct(0.50),
        pct(0.99),
        pct(0.999),
        finish_ns.last().copied().unwrap_or(0)
    );
    if let Some(root) = coll
        .find_one(doc! { "name": "Client.FullStatus", "tags.rpc%2Erequest_id": 3 })
        .run()?
    {
        let trace_id = root.get_str("trace_id")?.to_string();
        let spans: Vec<Document> = coll
            .find(doc! { "trace_id": &trace_id })
            .sort(doc! { "start_ns": 1 })
            .run()?
            .collect::<Result<_, _>>()?;
        println!("\none trace read back from MongoDB ({trace_id}):");
        print_tree(&spans);
    }
    // The log proves itself: every chain record, link and Merkle root
    // recomputed from what MongoDB holds (what `spanrec verify` does).
    let db = mongodb::sync::Client::with_uri_str(server.uri())?.database("spanrec_demo");
    let read = |name: &str| -> Result<Vec<RawDocumentBuf>, mongodb::error::Error> {
        db.collection::<RawDocumentBuf>(name)
            .find(doc! {})
            .run()?
            .collect()
    };
    let records = read(&format!("{collection}.chain"))?;
    let docs = read(&collection)?;
    let report = verify(
        &records,
        docs.iter().map(|d| &**d),
        &VerifyOptions::default(),
    );
    println!(
        "\naudit chain: {} spans verified in {} chain records; {}",
        report.verified_spans,
        report.records,
        if report.intact() {
            "intact".to_string()
        } else {
            format!("{} violations", report.violations.len())
        }
    );
    let _ = coll.drop().run();
    let _ = db
        .collection::<Document>(&format!("{collection}.chain"))
        .drop()
        .run();
    if !report.intact() || report.verified_spans != stored {
        eprintln!(
            "FAILED: the audit chain does not verify: {:?}",
            report.violations
        );
        std::process::exit(1);
    }
    if stats.dropped.total() > 0 || stored != stats.finished || mongo.failed_permanently > 0 {
        eprintln!("FAILED: {} spans created, {stored} stored", stats.finished);
        std::process::exit(1);
    }
    println!(
        "\nnothing lost: every span created is in MongoDB exactly once, and the log proves it"
    );
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
        request.set_tag("rpc.worker", worker as i64);
        request.set_tag("rpc.request_id", i as i64);
        {
            let _active = request.enter();
            let mut facade = tracer.start_span("facade.FullStatus");
            facade.set_tag("facade.version", 2);
            {
                let _active = facade.enter();
                let mut db = tracer.start_span("mongo.find");
                db.set_tag("db.collection", "machines");
                db.set_tag("db.rows", (i % 50) as i64);
                if i % 10 == 3 {
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

fn print_tree(spans: &[Document]) {
    let id = |d: &Document, k: &str| d.get_str(k).ok().map(str::to_string);
    let ids: Vec<String> = spans.iter().filter_map(|s| id(s, "span_id")).collect();
    let mut children: HashMap<Option<String>, Vec<&Document>> = HashMap::new();
    for s in spans {
        let parent = id(s, "parent_span_id").filter(|p| ids.contains(p));
        children.entry(parent).or_default().push(s);
    }
    fn walk(
        children: &HashMap<Option<String>, Vec<&Document>>,
        parent: Option<String>,
        depth: usize,
    ) {
        for s in children.get(&parent).cloned().unwrap_or_default() {
            let fields = |key: &str| {
                let Ok(d) = s.get_document(key) else {
                    return String::new();
                };
                let kv: Vec<String> = d
                    .iter()
                    .map(|(k, v)| format!("{}={v}", unescape_key(k)))
                    .collect();
                kv.join(", ")
            };
            let (tags, baggage) = (fields("tags"), fields("baggage"));
            let logs = s
                .get_array("logs")
                .map(|l| format!(" logs {}", l.len()))
                .unwrap_or_default();
            println!(
                "{:indent$}{} {:.1} µs  [{tags}] baggage [{baggage}]{logs}",
                "",
                s.get_str("name").unwrap_or("?"),
                s.get_i64("duration_ns").unwrap_or(0) as f64 / 1000.0,
                indent = depth * 2
            );
            walk(
                children,
                s.get_str("span_id").ok().map(str::to_string),
                depth + 1,
            );
        }
    }
    walk(&children, None, 1);
}
