//! `cli/verify`: what `spanrec verify` costs per stored span, excluding the
//! server's read time — the chain records and the documents are read once
//! into memory; every record hash, link and Merkle root is recomputed per
//! iteration. Target: ≥ 200,000 spans/s.
//!
//! Run: `cargo bench -p spanrec-cli --bench verify` (provisions a server).

use bson::raw::RawDocumentBuf;
use criterion::{criterion_main, Criterion, Throughput};
use spanrec::{OverflowPolicy, Tracer, Value};
use spanrec_mongo::verify::{verify, VerifyOptions};
use spanrec_mongo::{MongoOptions, MongoRecorder};
use spanrec_testkit::LocalServer;
use std::time::{Duration, Instant};

const SPANS: u64 = 20_000;

fn cli(c: &mut Criterion) {
    let server = LocalServer::start().unwrap_or_else(|e| panic!("no MongoDB server: {e}"));
    let coll = format!("verify_bench_{}", std::process::id());
    let mut o = MongoOptions::new("spanrec_bench", &coll);
    o.spool_dir = std::env::temp_dir().join(format!("spanrec-bench-spool-{coll}"));
    let t = Tracer::builder()
        .overflow(OverflowPolicy::Block {
            timeout: Duration::from_secs(60),
        })
        .recorder(MongoRecorder::connect(server.uri(), o).expect("recorder"))
        .build()
        .expect("tracer");
    for i in 0..SPANS {
        let mut s = t.start_span("mongo.find");
        s.set_tag("db.rows", i as i64);
        s.set_tag("db.op", Value::StaticStr("find"));
        s.set_baggage_item("user", "admin");
        s.log("cache.miss", [("key", Value::from("machines"))]);
        s.finish();
    }
    t.shutdown(Instant::now() + Duration::from_secs(600))
        .expect("shutdown");
    let db = mongodb::sync::Client::with_uri_str(server.uri())
        .expect("client")
        .database("spanrec_bench");
    let read = |name: &str| -> Vec<RawDocumentBuf> {
        db.collection::<RawDocumentBuf>(name)
            .find(bson::doc! {})
            .run()
            .expect("find")
            .collect::<Result<_, _>>()
            .expect("read")
    };
    let records = read(&format!("{coll}.chain"));
    let spans = read(&coll);
    assert_eq!(spans.len() as u64, SPANS);
    let options = VerifyOptions::default();
    let mut group = c.benchmark_group("cli");
    group.throughput(Throughput::Elements(SPANS));
    group.bench_function("verify", |b| {
        b.iter(|| {
            let report = verify(&records, spans.iter().map(|d| &**d), &options);
            assert!(report.intact(), "{:?}", report.violations);
            assert_eq!(report.verified_spans, SPANS);
        })
    });
    group.finish();
}

mod group {
    #![allow(missing_docs)]
    criterion::criterion_group!(benches, super::cli);
}
criterion_main!(group::benches);
