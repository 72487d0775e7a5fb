//! Integration tests against a real server process, provisioned by
//! `spanrec_testkit::LocalServer` (`SPANREC_MONGO_URI`, else `mongod`,
//! else SecantusDB in the workspace's virtualenv). A missing server fails
//! these tests with the reason; they never skip.

use bson::spec::BinarySubtype;
use bson::{doc, Binary, Bson, Document};
use spanrec::{OverflowPolicy, SpanLimits, Tracer, Value};
use spanrec_mongo::encode::{decimal128_to_u64, document_id};
use spanrec_mongo::{MongoOptions, MongoRecorder};
use std::time::{Duration, Instant};

mod common;
use common::*;

#[test]
fn hundred_thousand_spans_round_trip_exactly() {
    let _serial = SERIAL.lock();
    let server = server();
    let name = unique("roundtrip");
    let recorder = MongoRecorder::connect(server.uri(), options(&name)).unwrap();
    let stats = recorder.stats();
    let t = tracer(recorder);

    // One span with every kind of field, checked field by field below.
    let parent = t.start_span("parent");
    let cause = t.start_span("cause");
    let mut s = t
        .span("special")
        .child_of(&parent)
        .follows_from(&cause)
        .start();
    s.set_tag("i", -5i64);
    s.set_tag("u", u64::MAX);
    s.set_tag("f", 2.5);
    s.set_tag("b", true);
    s.set_tag("s", "text");
    s.set_tag("$weird.key", "escaped");
    s.set_baggage_item("user", "admin");
    s.log(
        "event",
        [("rows", Value::from(3)), ("a.b", Value::from("x"))],
    );
    let (trace_id, span_id, parent_id) = (s.trace_id(), s.span_id(), parent.span_id());
    s.finish();
    drop(cause);
    drop(parent);

    let threads: Vec<_> = (0..4)
        .map(|th| {
            let t = t.clone();
            std::thread::spawn(move || {
                for i in 0..25_000u64 {
                    let mut s = t.start_span("work");
                    s.set_tag("thread", th);
                    s.set_tag("i", i);
                    s.finish();
                }
            })
        })
        .collect();
    for th in threads {
        th.join().unwrap();
    }
    finish_all(&t);
    wait_delivered(&stats, 100_003, Duration::from_secs(300));
    t.shutdown(Instant::now() + Duration::from_secs(60))
        .unwrap();
    let st = t.stats();
    assert_eq!(st.recorded, 100_003);
    assert_eq!(st.dropped.total(), 0);
    assert_eq!(count(server.uri(), &name), 100_003, "{:?}", stats.get());
    assert_eq!(stats.get().failed_permanently, 0);

    let coll = collection(server.uri(), &name);
    let id = Binary {
        subtype: BinarySubtype::Generic,
        bytes: document_id(trace_id, span_id).to_vec(),
    };
    let d = coll
        .find_one(doc! { "_id": id })
        .run()
        .unwrap()
        .expect("special span stored");
    assert_eq!(d.get_str("name").unwrap(), "special");
    assert_eq!(d.get_str("trace_id").unwrap(), format!("{trace_id:032x}"));
    assert_eq!(
        d.get_str("parent_span_id").unwrap(),
        format!("{parent_id:016x}")
    );
    let refs = d.get_array("references").unwrap();
    assert_eq!(refs.len(), 2);
    assert_eq!(
        refs[1].as_document().unwrap().get_str("kind").unwrap(),
        "follows_from"
    );
    let tags = d.get_document("tags").unwrap();
    assert_eq!(tags.get("i"), Some(&Bson::Int64(-5)));
    match tags.get("u") {
        Some(Bson::Decimal128(v)) => assert_eq!(decimal128_to_u64(*v), Some(u64::MAX)),
        other => panic!("u64 tag stored as {other:?}"),
    }
    assert_eq!(tags.get("f"), Some(&Bson::Double(2.5)));
    assert_eq!(tags.get("b"), Some(&Bson::Boolean(true)));
    assert_eq!(tags.get_str("s").unwrap(), "text");
    assert_eq!(tags.get_str("%24weird%2Ekey").unwrap(), "escaped");
    assert_eq!(
        d.get_document("baggage").unwrap().get_str("user").unwrap(),
        "admin"
    );
    let log = d.get_array("logs").unwrap()[0]
        .as_document()
        .unwrap()
        .clone();
    assert_eq!(log.get_str("event").unwrap(), "event");
    assert_eq!(
        log.get_document("fields").unwrap().get("rows"),
        Some(&Bson::Int64(3))
    );
    assert_eq!(
        log.get_document("fields")
            .unwrap()
            .get_str("a%2Eb")
            .unwrap(),
        "x"
    );
    let start_ns = d.get_i64("start_ns").unwrap();
    let finish_ns = d.get_i64("finish_ns").unwrap();
    assert_eq!(d.get_i64("duration_ns").unwrap(), finish_ns - start_ns);
    assert_eq!(
        d.get_datetime("start").unwrap().timestamp_millis(),
        start_ns / 1_000_000
    );
    assert_eq!(d.get_str("service").unwrap(), "itest");
    assert_eq!(
        d.get_document("process").unwrap().get_str("host").unwrap(),
        "ci"
    );
    assert!(d.get_bool("sampled").unwrap());
    // The indexes exist.
    let names = coll.list_index_names().run().unwrap();
    assert!(
        ["trace_id", "start_ns", "finish_ns", "start"]
            .iter()
            .all(|n| names.iter().any(|m| m == n)),
        "{names:?}"
    );
}

fn fail_point(uri: &str, data: Document, times: i32) {
    spanrec_testkit::fail_point::times(uri, data, times).unwrap();
}

#[test]
fn injected_insert_failures_are_retried_and_nothing_is_lost_or_doubled() {
    let _serial = SERIAL.lock();
    let server = server();
    let name = unique("failpoint");
    let recorder = MongoRecorder::connect(server.uri(), options(&name)).unwrap();
    let stats = recorder.stats();
    let t = tracer(recorder);
    let mut sent = 0u64;
    let cases = [
        (doc! { "failCommands": ["insert"], "errorCode": 91 }, 2),
        (
            doc! { "failCommands": ["insert"], "closeConnection": true },
            2,
        ),
        (doc! { "failCommands": ["insert"], "errorCode": 11600 }, 3),
        (
            doc! { "failCommands": ["insert"], "writeConcernError": { "code": 91, "errmsg": "shutting down" } },
            1,
        ),
    ];
    for (data, times) in cases {
        fail_point(server.uri(), data, times);
        for i in 0..200 {
            let mut s = t.start_span("failpoint");
            s.set_tag("i", i);
            s.finish();
            sent += 1;
        }
        finish_all(&t);
    }
    wait_delivered(&stats, sent, Duration::from_secs(120));
    t.shutdown(Instant::now() + Duration::from_secs(60))
        .unwrap();
    let s = stats.get();
    assert_eq!(count(server.uri(), &name), sent, "{s:?}");
    assert!(s.retries > 0, "retries should have moved: {s:?}");
    assert_eq!(s.failed_permanently, 0, "{s:?}");
}

#[test]
fn server_killed_mid_stream_then_restarted_loses_nothing() {
    let _serial = SERIAL.lock();
    let mut server = server();
    if !server.is_managed() {
        panic!(
            "this test kills and restarts the server; unset SPANREC_MONGO_URI to let it start one"
        );
    }
    let name = unique("killed");
    let recorder = MongoRecorder::connect(server.uri(), options(&name)).unwrap();
    let stats = recorder.stats();
    let t = tracer(recorder);
    let emit = |n: u64| {
        for i in 0..n {
            let mut s = t.start_span("outage");
            s.set_tag("i", i);
            s.finish();
        }
    };
    emit(1000);
    finish_all(&t);
    server.kill();
    emit(1000); // while the server is down
    finish_all(&t);
    let during = stats.get();
    assert!(
        during.spooled > 0,
        "the outage should have spooled: {during:?}"
    );
    server.restart().unwrap();
    emit(1000);
    finish_all(&t);
    wait_delivered(&stats, 3000, Duration::from_secs(120));
    t.shutdown(Instant::now() + Duration::from_secs(60))
        .unwrap();
    let s = stats.get();
    assert_eq!(count(server.uri(), &name), 3000, "{s:?}");
    assert_eq!(s.spool_bytes, 0, "the spool was drained: {s:?}");
    assert!(s.replayed > 0, "{s:?}");
}

#[test]
fn restarted_recorder_replays_its_spool_without_duplicates() {
    let _serial = SERIAL.lock();
    let mut server = server();
    if !server.is_managed() {
        panic!(
            "this test stops and restarts the server; unset SPANREC_MONGO_URI to let it start one"
        );
    }
    let name = unique("respool");
    server.kill();
    {
        // The database is down for this whole recorder's life.
        let recorder = MongoRecorder::connect(server.uri(), options(&name)).unwrap();
        let stats = recorder.stats();
        let t = tracer(recorder);
        for i in 0..500 {
            let mut s = t.start_span("spooled");
            s.set_tag("i", i);
            s.finish();
        }
        t.shutdown(Instant::now() + Duration::from_secs(120))
            .unwrap();
        let s = stats.get();
        assert_eq!(s.spooled, 500, "{s:?}");
        assert!(s.spool_bytes > 0);
    }
    server.restart().unwrap();
    // The same spool directory, not emptied this time.
    let mut opts = MongoOptions::new("spanrec_test", &name);
    opts.spool_dir = std::env::temp_dir().join(format!("spanrec-test-spool-{name}"));
    let recorder = MongoRecorder::connect(server.uri(), opts).unwrap();
    let stats = recorder.stats();
    wait_delivered(&stats, 500, Duration::from_secs(120));
    drop(recorder);
    let s = stats.get();
    assert_eq!(s.replayed, 500, "{s:?}");
    assert_eq!(count(server.uri(), &name), 500, "{s:?}");
}

#[test]
fn oversized_document_is_refused_and_counted_while_the_batch_lands() {
    let _serial = SERIAL.lock();
    let server = server();
    let name = unique("oversized");
    let recorder = MongoRecorder::connect(server.uri(), options(&name)).unwrap();
    let stats = recorder.stats();
    let t = Tracer::builder()
        .recorder(recorder)
        .limits(SpanLimits {
            max_value_bytes: SpanLimits::MAX.max_value_bytes,
            ..SpanLimits::default()
        })
        .build()
        .unwrap();
    // 17 tags of 1 MiB each: a document over MongoDB's 16 MiB.
    let huge = "x".repeat(SpanLimits::MAX.max_value_bytes);
    for i in 0..10 {
        let mut s = t.start_span("normal");
        s.set_tag("i", i);
        if i == 5 {
            for j in 0..17 {
                s.set_tag(format!("absurd{j}"), huge.as_str());
            }
        }
        s.finish();
    }
    finish_all(&t);
    wait_delivered(&stats, 9, Duration::from_secs(60));
    t.shutdown(Instant::now() + Duration::from_secs(60))
        .unwrap();
    let s = stats.get();
    assert_eq!(s.failed_permanently, 1, "{s:?}");
    assert!(
        s.last_error.as_deref().unwrap_or("").contains("16 MiB"),
        "{s:?}"
    );
    assert_eq!(count(server.uri(), &name), 9);
    // The tracer's ledger and the recorder's agree: one drop, with a reason.
    let ts = t.stats();
    assert_eq!(ts.dropped.rejected, 1, "{ts:?}");
    assert_eq!(
        (ts.durable, ts.recorded, ts.in_flight()),
        (9, 9, 0),
        "{ts:?}"
    );
}

#[test]
fn names_mongodb_refuses_are_typed_errors_and_never_paths() {
    let uri = "mongodb://127.0.0.1:1";
    for (db, coll) in [("a.b", "c"), ("", "c"), ("db", "system.x"), ("db", "a$b")] {
        let mut o = MongoOptions::new(db, coll);
        o.spool_dir = spool_dir("names-refused");
        match MongoRecorder::connect(uri, o) {
            Err(spanrec_mongo::MongoRecorderError::Name(e)) => {
                assert!(e.to_string().contains("invalid"), "{e}")
            }
            other => panic!("{db:?} {coll:?}: {other:?}"),
        }
    }
    // A collection name may hold `/` (MongoDB allows it): its default
    // spool directory is still one directory under the spool root.
    let root = spanrec_mongo::default_spool_dir("db", "c");
    let root = root.parent().expect("a spool root");
    for coll in ["a/b", "../../../../tmp/x", "..", "x/.."] {
        let dir = spanrec_mongo::default_spool_dir("db", coll);
        assert_eq!(dir.parent(), Some(root), "{coll:?} -> {}", dir.display());
        assert!(
            dir.components()
                .all(|c| !matches!(c, std::path::Component::ParentDir)),
            "{coll:?} -> {}",
            dir.display()
        );
    }
}

#[test]
fn out_of_range_options_are_typed_errors() {
    // Each once passed `connect`; the backoffs then overflowed the retry
    // arithmetic (a panic on the writer thread) or slept past any shutdown.
    let uri = "mongodb://127.0.0.1:1";
    type Setting = (&'static str, fn(&mut MongoOptions));
    let cases: [Setting; 5] = [
        ("queue", |o| o.queue_batches = 0),
        ("backoff", |o| o.max_backoff = Duration::MAX),
        ("initial", |o| {
            o.initial_backoff = Duration::from_secs(10);
            o.max_backoff = Duration::from_secs(1);
        }),
        ("probe", |o| o.probe_interval = Duration::from_secs(3601)),
        ("both", |o| {
            o.initial_backoff = Duration::MAX;
            o.max_backoff = Duration::MAX;
        }),
    ];
    for (name, set) in cases {
        let mut o = MongoOptions::new("db", "c");
        o.spool_dir = spool_dir(&format!("options-{name}"));
        set(&mut o);
        match MongoRecorder::connect(uri, o) {
            Err(spanrec_mongo::MongoRecorderError::Option(m)) => {
                assert!(!m.is_empty(), "{name}")
            }
            other => panic!("{name}: {other:?}"),
        }
    }
    let mut o = MongoOptions::new("db", "c");
    o.spool_dir = spool_dir("options-edge");
    o.initial_backoff = spanrec_mongo::MAX_WAIT;
    o.max_backoff = spanrec_mongo::MAX_WAIT;
    o.probe_interval = spanrec_mongo::MAX_WAIT;
    assert!(
        MongoRecorder::connect(uri, o).is_ok(),
        "the limits themselves"
    );
}

#[test]
fn passwords_never_show() {
    let uri = "mongodb://auditor:s3cr3t-pw@127.0.0.1:1/?authSource=admin";
    let mut o = MongoOptions::new("db", "c");
    o.spool_dir = spool_dir("pw");
    let recorder = MongoRecorder::connect(uri, o).unwrap();
    let shown = format!("{recorder:?}");
    assert!(
        !shown.contains("s3cr3t-pw") && shown.contains("****"),
        "{shown}"
    );
    let err =
        MongoRecorder::connect("mongodb://u:s3cr3t-pw@", MongoOptions::new("d", "c")).unwrap_err();
    assert!(!err.to_string().contains("s3cr3t-pw"), "{err}");
}

#[test]
fn an_index_that_cannot_be_created_never_stops_inserts() {
    let _serial = SERIAL.lock();
    let server = server();
    let name = unique("indexconflict");
    // An operator's index named like ours but on another key: creating
    // ours fails (index options/key conflict), as a changed `retention`
    // or a user without `createIndex` would make it.
    let c = collection(server.uri(), &name);
    c.create_index(
        mongodb::IndexModel::builder()
            .keys(doc! { "start": -1, "trace_id": 1 })
            .options(
                mongodb::options::IndexOptions::builder()
                    .name("start".to_string())
                    .build(),
            )
            .build(),
    )
    .run()
    .unwrap();
    let recorder = MongoRecorder::connect(server.uri(), options(&name)).unwrap();
    let stats = recorder.stats();
    let t = tracer(recorder);
    for i in 0..300 {
        let mut s = t.start_span("indexless");
        s.set_tag("i", i);
        s.finish();
    }
    finish_all(&t);
    wait_delivered(&stats, 300, Duration::from_secs(60));
    t.shutdown(Instant::now() + Duration::from_secs(60))
        .unwrap();
    let s = stats.get();
    assert_eq!(s.failed_permanently, 0, "{s:?}");
    assert!(s.index_failures >= 1, "{s:?}");
    assert!(
        s.last_error
            .as_deref()
            .unwrap_or("")
            .contains("indexes not created"),
        "{s:?}"
    );
    assert_eq!(count(server.uri(), &name), 300);
}

#[test]
fn a_flush_during_an_outage_does_not_stall_the_flusher() {
    let _serial = SERIAL.lock();
    let mut server = server();
    if !server.is_managed() {
        panic!(
            "this test stops and restarts the server; unset SPANREC_MONGO_URI to let it start one"
        );
    }
    let name = unique("flushoutage");
    let recorder = MongoRecorder::connect(server.uri(), options(&name)).unwrap();
    let stats = recorder.stats();
    // Half a second of spans at the rate below: room for one slow fsync
    // on a shared machine (CI once saw a ring of 1,024, 0.13 s, overflow
    // by one batch), none for a flusher held by the flush for seconds.
    let t = Tracer::builder()
        .service_name("itest")
        .ring_capacity(4096)
        .overflow(OverflowPolicy::DropNewest)
        .recorder(recorder)
        .build()
        .unwrap();
    let mut first = t.start_span("before");
    first.set_tag("i", 0);
    first.finish();
    finish_all(&t);
    server.kill();
    // A flush that cannot finish while the database is down: the caller
    // waits (until its deadline), the flusher does not.
    let flushing = {
        let t = t.clone();
        std::thread::spawn(move || t.flush(Instant::now() + Duration::from_secs(3)))
    };
    let began = Instant::now();
    let mut i = 0;
    while began.elapsed() < Duration::from_secs(4) {
        let mut s = t.start_span("during");
        s.set_tag("i", i);
        s.finish();
        i += 1;
        // ~8,000 spans/s: a flusher that spools each batch (one fsync) keeps
        // up on a busy machine; one stuck in a flush for seconds does not.
        if i % 32 == 0 {
            std::thread::sleep(Duration::from_millis(4));
        }
    }
    let _ = flushing.join().unwrap();
    let s = t.stats();
    assert_eq!(s.dropped.total(), 0, "the rings kept draining: {s:?}");
    // Durable means in the database or synced into the spool; what the
    // writer still holds in memory is in flight, not durable.
    let m = stats.get();
    assert!(s.durable <= m.delivered + m.spooled, "{s:?} {m:?}");
    assert_eq!(s.durable + s.dropped.total() + s.in_flight(), s.finished);
    server.restart().unwrap();
    wait_delivered(&stats, i as u64 + 1, Duration::from_secs(120));
    t.shutdown(Instant::now() + Duration::from_secs(60))
        .unwrap();
    assert_eq!(count(server.uri(), &name), i as u64 + 1);
    let s = t.stats();
    assert_eq!((s.durable, s.in_flight()), (s.finished, 0), "{s:?}");
}
