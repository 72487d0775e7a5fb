//! Helpers shared by the tests against a real server process.
#![allow(dead_code)] // each test binary uses a subset

use bson::{doc, Document};
use spanrec::{OverflowPolicy, Tracer};
use spanrec_mongo::{MongoOptions, MongoRecorder, MongoStatsHandle};
use spanrec_testkit::LocalServer;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// One server at a time: SecantusDB is single-threaded and this machine has
/// two cores.
pub static SERIAL: parking_lot::Mutex<()> = parking_lot::Mutex::new(());

pub fn server() -> LocalServer {
    LocalServer::start().unwrap_or_else(|e| panic!("no MongoDB server could be provisioned: {e}"))
}

pub fn unique(name: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{name}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn spool_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("spanrec-test-spool-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

pub fn options(collection: &str) -> MongoOptions {
    let mut o = MongoOptions::new("spanrec_test", collection);
    o.spool_dir = spool_dir(collection);
    o.max_attempts = 3;
    o.initial_backoff = Duration::from_millis(50);
    o.max_backoff = Duration::from_millis(500);
    o.probe_interval = Duration::from_millis(300);
    o
}

pub fn tracer(recorder: MongoRecorder) -> Tracer {
    Tracer::builder()
        .service_name("itest")
        .process_tag("host", "ci")
        .overflow(OverflowPolicy::Block {
            timeout: Duration::from_secs(30),
        })
        .recorder(recorder)
        .build()
        .unwrap()
}

pub fn collection(uri: &str, name: &str) -> mongodb::sync::Collection<Document> {
    mongodb::sync::Client::with_uri_str(uri)
        .unwrap()
        .database("spanrec_test")
        .collection(name)
}

pub fn count(uri: &str, name: &str) -> u64 {
    collection(uri, name)
        .count_documents(doc! {})
        .run()
        .unwrap()
}

/// Waits until everything handed to the recorder is in the database (spool
/// empty, `delivered` reaching `n`), or fails after `limit`.
pub fn wait_delivered(stats: &MongoStatsHandle, n: u64, limit: Duration) {
    let begun = Instant::now();
    loop {
        let s = stats.get();
        if s.delivered >= n && s.spool_bytes == 0 {
            return;
        }
        assert!(
            begun.elapsed() < limit,
            "not delivered after {limit:?}: {s:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn finish_all(t: &Tracer) {
    let begun = Instant::now();
    t.flush(Instant::now() + Duration::from_secs(120)).unwrap();
    eprintln!("flush took {:?}", begun.elapsed()); // shows outage stalls in --nocapture runs
}
