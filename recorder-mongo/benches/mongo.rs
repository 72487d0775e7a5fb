//! `mongo/*`: what persisting a span costs.
//!
//! - `mongo/encode_span`: raw-BSON encoding of one span (start + 2 tags + a
//!   log with 2 fields + 1 baggage item), timed per batch inside a recorder
//!   on the flusher thread, where it runs in production, into buffers reused
//!   from the previous batch as `MongoRecorder` reuses them.
//! - `mongo/chain_encode`: the same with the audit chain: each document's
//!   place in the chain encoded, its leaf hash (SHA-256), one Merkle root
//!   per batch. Target: ≤ 1.3× `encode_span`.
//! - `mongo/e2e_spans_per_sec`: spans through the tracer, flusher, writer
//!   thread and `insert_many` into the server, until all are acknowledged.
//! - `mongo/e2e_no_chain`: the same without the audit chain (target: the
//!   chain keeps ≥ 0.9× of this).
//! - `mongo/write_ahead_e2e`: the same with `MongoOptions::write_ahead`
//!   (every batch synced into the spool before it is sent).
//! - `mongo/raw_insert_many`: the same documents inserted directly with the
//!   driver in batches of 1,024, one insert in flight — the ceiling.
//!
//! Run: `cargo bench -p spanrec-mongo --bench mongo`. The server comes from
//! `LocalServer` (`SPANREC_MONGO_URI`, `mongod` or SecantusDB).

use bson::raw::RawDocumentBuf;
use criterion::{criterion_main, BenchmarkId, Criterion, Throughput};
use spanrec::{Batch, Recorder, RecorderError, Tracer, Value};
use spanrec_mongo::chain::{leaf_hash, merkle_root, ChainPos};
use spanrec_mongo::encode::{encode_span_at, encode_span_into};
use spanrec_mongo::{MongoOptions, MongoRecorder};
use spanrec_testkit::LocalServer;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Encodes every span it receives, timing only the encoding; keeps the
/// documents when asked to.
#[derive(Clone, Default)]
struct EncodeTimer {
    nanos: Arc<AtomicU64>,
    spans: Arc<AtomicU64>,
    keep: Arc<Mutex<Option<Vec<RawDocumentBuf>>>>,
    /// Buffers of the previous batch, reused as `MongoRecorder` reuses the
    /// buffers its writer has inserted.
    spare: Vec<Vec<u8>>,
    /// Also place each document in the audit chain and hash it.
    chained: bool,
}

impl Recorder for EncodeTimer {
    fn record(&mut self, batch: &Batch<'_>) -> Result<(), RecorderError> {
        let mut kept = self.keep.lock().unwrap();
        // The batch is timed as a whole, as the recorder encodes it: two
        // clock reads per span would add ~50 ns to a ~200 ns measurement.
        let mut docs = Vec::with_capacity(batch.len());
        let t = Instant::now();
        if self.chained {
            // As `MongoRecorder` with the chain on: place in the chain
            // encoded, a leaf hash per document, one root per batch.
            let mut leaves = Vec::with_capacity(batch.len());
            for (pos, span) in batch.iter().enumerate() {
                let at = ChainPos {
                    chain: "0123456789abcdef0123456789abcdef",
                    seq: 42,
                    pos: pos as u32,
                };
                let doc = encode_span_at(
                    span,
                    batch.process(),
                    Some(at),
                    self.spare.pop().unwrap_or_default(),
                );
                leaves.push(leaf_hash(doc.as_bytes()));
                docs.push(doc);
            }
            std::hint::black_box(merkle_root(&leaves));
        } else {
            for span in batch.iter() {
                docs.push(encode_span_into(
                    span,
                    batch.process(),
                    self.spare.pop().unwrap_or_default(),
                ));
            }
        }
        let nanos = t.elapsed().as_nanos() as u64;
        std::hint::black_box(&docs);
        self.nanos.fetch_add(nanos, Ordering::Relaxed);
        self.spans.fetch_add(batch.len() as u64, Ordering::Relaxed);
        match kept.as_mut() {
            Some(k) => k.extend(docs),
            None => self.spare = docs.into_iter().map(RawDocumentBuf::into_bytes).collect(),
        }
        Ok(())
    }
}

/// Finishes `n` spans, flushing every `EMIT_CHUNK`: the producer then waits
/// while the flusher encodes, so the encode timing is not stretched by the
/// producer competing for one of the two cores (runs varied 270–520 ns when
/// it did). The records are still written by another thread just before,
/// as in production.
const EMIT_CHUNK: u64 = 2048;

fn emit(t: &Tracer, n: u64) {
    let mut left = n;
    while left > 0 {
        let chunk = left.min(EMIT_CHUNK);
        emit_chunk(t, chunk);
        left -= chunk;
    }
}

fn emit_chunk(t: &Tracer, n: u64) {
    for i in 0..n {
        let mut s = t.start_span("mongo.find");
        s.set_tag("db.rows", i as i64);
        s.set_tag("db.op", Value::StaticStr("find"));
        s.set_baggage_item("user", "admin");
        s.log(
            "cache.miss",
            [("key", Value::from("machines")), ("rows", Value::from(3))],
        );
        s.finish();
    }
    t.flush(Instant::now() + Duration::from_secs(600))
        .expect("flush");
}

fn mongo(c: &mut Criterion) {
    let mut group = c.benchmark_group("mongo");

    let timer = EncodeTimer::default();
    // Only the encoding is timed, so let producers wait rather than drop.
    let block = spanrec::OverflowPolicy::Block {
        timeout: Duration::from_secs(10),
    };
    let t = Tracer::builder()
        .recorder(timer.clone())
        .overflow(block)
        .build()
        .expect("tracer");
    let chained = EncodeTimer {
        chained: true,
        ..EncodeTimer::default()
    };
    let tc = Tracer::builder()
        .recorder(chained.clone())
        .overflow(block)
        .build()
        .expect("tracer");
    for (id, timer, t) in [("encode_span", &timer, &t), ("chain_encode", &chained, &tc)] {
        group.bench_function(id, |b| {
            b.iter_custom(|iters| {
                let (n0, s0) = (
                    timer.nanos.load(Ordering::Relaxed),
                    timer.spans.load(Ordering::Relaxed),
                );
                emit(t, iters);
                let (n1, s1) = (
                    timer.nanos.load(Ordering::Relaxed),
                    timer.spans.load(Ordering::Relaxed),
                );
                assert_eq!(s1 - s0, iters, "every span reached the encoder");
                Duration::from_nanos(n1 - n0)
            })
        });
    }
    drop(t);
    drop(tc);

    let server = LocalServer::start().unwrap_or_else(|e| panic!("no MongoDB server: {e}"));
    const N: u64 = 2048;
    group.sample_size(10).throughput(Throughput::Elements(N));
    group.measurement_time(Duration::from_secs(10));

    let mut run = 0u64;
    for (id, write_ahead, chain) in [
        ("e2e_spans_per_sec", false, true),
        ("e2e_no_chain", false, false),
        ("write_ahead_e2e", true, true),
    ] {
        group.bench_function(BenchmarkId::new(id, N), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    run += 1;
                    let coll = format!("e2e_{}_{run}", std::process::id());
                    let mut o = MongoOptions::new("spanrec_bench", &coll);
                    o.spool_dir = std::env::temp_dir().join(format!("spanrec-bench-spool-{coll}"));
                    o.write_ahead = write_ahead;
                    o.chain = chain;
                    let recorder = MongoRecorder::connect(server.uri(), o).expect("recorder");
                    let stats = recorder.stats();
                    let t = Tracer::builder()
                        .recorder(recorder)
                        .build()
                        .expect("tracer");
                    let began = Instant::now();
                    emit(&t, N);
                    t.shutdown(Instant::now() + Duration::from_secs(600))
                        .expect("shutdown");
                    total += began.elapsed();
                    assert_eq!(stats.get().delivered, N, "{:?}", stats.get());
                }
                total
            })
        });
    }

    // The same documents, inserted directly.
    let keeper = EncodeTimer::default();
    *keeper.keep.lock().unwrap() = Some(Vec::new());
    let t = Tracer::builder()
        .recorder(keeper.clone())
        .overflow(block)
        .build()
        .expect("tracer");
    emit(&t, N);
    drop(t);
    let docs = keeper.keep.lock().unwrap().take().unwrap_or_default();
    let client = mongodb::sync::Client::with_uri_str(server.uri()).expect("client");
    group.bench_function(BenchmarkId::new("raw_insert_many", N), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                run += 1;
                // The recorder's default write concern (w: 1, journaled), so
                // both pay for the same durability.
                let coll = client
                    .database("spanrec_bench")
                    .collection_with_options::<RawDocumentBuf>(
                        &format!("raw_{}_{run}", std::process::id()),
                        mongodb::options::CollectionOptions::builder()
                            .write_concern(MongoOptions::new("d", "c").write_concern)
                            .build(),
                    );
                // The same indexes the recorder creates, so both insert
                // into equally indexed collections.
                coll.create_indexes([
                    mongodb::IndexModel::builder()
                        .keys(bson::doc! { "trace_id": 1 })
                        .build(),
                    mongodb::IndexModel::builder()
                        .keys(bson::doc! { "start": 1 })
                        .build(),
                ])
                .run()
                .expect("indexes");
                let began = Instant::now();
                for chunk in docs.chunks(1024) {
                    coll.insert_many(chunk)
                        .ordered(false)
                        .run()
                        .expect("insert");
                }
                total += began.elapsed();
            }
            total
        })
    });
    group.finish();
}

mod group {
    #![allow(missing_docs)]
    criterion::criterion_group!(benches, super::mongo);
}
criterion_main!(group::benches);
