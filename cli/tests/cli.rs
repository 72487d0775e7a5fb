//! The `spanrec` binary against a provisioned server (`SPANREC_MONGO_URI`,
//! `mongod`, or SecantusDB; never skipped): a known trace is written through
//! `MongoRecorder` with explicit times, then read back by every command.

use spanrec::{OverflowPolicy, Tracer, Value};
use spanrec_mongo::{MongoOptions, MongoRecorder};
use spanrec_testkit::LocalServer;
use std::process::{Command, Output};
use std::time::{Duration, Instant, SystemTime};

const DB: &str = "spanrec_cli_test";

fn spanrec(uri: &str, collection: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_spanrec"))
        .args(["--uri", uri, "--database", DB, "--collection", collection])
        .args(args)
        .env_remove("SPANREC_MONGO_URI")
        .output()
        .expect("run spanrec")
}

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}: {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn write_known_trace(uri: &str, collection: &str) -> String {
    let mut options = MongoOptions::new(DB, collection);
    options.spool_dir = std::env::temp_dir().join(format!("spanrec-cli-spool-{collection}"));
    let recorder = MongoRecorder::connect(uri, options).expect("recorder");
    let stats = recorder.stats();
    let tracer = Tracer::builder()
        .service_name("apiserver")
        .overflow(OverflowPolicy::Block {
            timeout: Duration::from_secs(30),
        })
        .recorder(recorder)
        .build()
        .expect("tracer");
    let t0 = SystemTime::now() - Duration::from_secs(60);
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let mut request = tracer.span("request").start_time(at(0)).start();
    request.set_baggage_item("user", "admin");
    let mut auth = tracer
        .span("auth")
        .child_of(&request)
        .start_time(at(1))
        .start();
    auth.set_tag("user", "admin");
    auth.finish_at(at(2));
    let mut find = tracer
        .span("mongo.find")
        .child_of(&request)
        .start_time(at(3))
        .start();
    find.set_tag("db.rows", 3);
    find.set_tag("error", true);
    find.log_at(at(5), "cache.miss", [("key", Value::StaticStr("machines"))]);
    find.finish_at(at(9));
    let trace_id = format!("{:032x}", request.trace_id());
    request.finish_at(at(10));
    tracer
        .shutdown(Instant::now() + Duration::from_secs(60))
        .expect("shutdown");
    assert_eq!(stats.get().delivered, 3, "{:?}", stats.get());
    trace_id
}

#[test]
fn reads_a_known_trace_with_every_command() {
    let server = LocalServer::start()
        .unwrap_or_else(|e| panic!("no MongoDB server could be provisioned: {e}"));
    let uri = server.uri();
    let coll = format!("cli_{}", std::process::id());
    let trace_id = write_known_trace(uri, &coll);

    // trace: the tree, the waterfall (10 ms over 40 columns: auth starts at
    // 1 ms = column 4 and lasts 4 columns; mongo.find starts at 3 ms =
    // column 12 and lasts 6 ms = 24 columns), and each span's details.
    let text = stdout(&spanrec(uri, &coll, &["trace", &trace_id]));
    let bar = |from: usize, len: usize| {
        format!(
            "{}{}{}",
            " ".repeat(from),
            "█".repeat(len),
            " ".repeat(40 - from - len)
        )
    };
    let expected = format!(
        "trace {trace_id}  3 spans  10.00ms  service apiserver\n\
         request          10.00ms |{}|\n\
         \x20   baggage: user=admin\n\
         ├─ auth           1.00ms |{}|\n\
         │      tags: user=admin\n\
         │      baggage: user=admin\n\
         └─ mongo.find     6.00ms |{}| ERROR\n\
         \x20      tags: db.rows=3 error=true\n\
         \x20      log +2.00ms cache.miss key=machines\n\
         \x20      baggage: user=admin\n",
        bar(0, 40),
        bar(4, 4),
        bar(12, 24),
    );
    assert_eq!(text, expected, "got:\n{text}");

    // trace --json: every span, typed tags.
    let json: serde_json::Value = serde_json::from_str(&stdout(&spanrec(
        uri,
        &coll,
        &["--json", "trace", &trace_id],
    )))
    .expect("json");
    let spans = json["spans"].as_array().expect("spans");
    assert_eq!(spans.len(), 3);
    let find = spans
        .iter()
        .find(|s| s["name"] == "mongo.find")
        .expect("find");
    assert_eq!(find["tags"]["db.rows"], 3);
    assert_eq!(find["tags"]["error"], true);
    assert_eq!(find["logs"][0]["event"], "cache.miss");

    // find: by operation, tag (typed and as text), status; paging.
    let only = |args: &[&str]| -> Vec<String> {
        let out = stdout(&spanrec(uri, &coll, &[&["--json", "find"], args].concat()));
        let v: serde_json::Value = serde_json::from_str(&out).expect("json");
        v["spans"]
            .as_array()
            .expect("spans")
            .iter()
            .map(|s| s["name"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    assert_eq!(only(&["--operation", "mongo.find"]), ["mongo.find"]);
    assert_eq!(only(&["--tag", "user=admin"]), ["auth"]);
    assert_eq!(only(&["--tag", "db.rows=3"]), ["mongo.find"]);
    assert_eq!(only(&["--status", "error"]), ["mongo.find"]);
    // Newest first.
    assert_eq!(only(&["--since", "2h"]), ["mongo.find", "auth", "request"]);
    assert_eq!(only(&["--limit", "1", "--skip", "1"]), ["auth"]);
    let none = spanrec(uri, &coll, &["find", "--operation", "nothing"]);
    assert_eq!(none.status.code(), Some(1));

    // stats: one row per operation.
    let stats = stdout(&spanrec(uri, &coll, &["stats", "--since", "2h"]));
    assert!(
        stats
            .lines()
            .any(|l| l.starts_with("mongo.find") && l.contains("6.00ms")),
        "{stats}"
    );
    let stats: serde_json::Value = serde_json::from_str(&stdout(&spanrec(
        uri,
        &coll,
        &["--json", "stats", "--since", "2h"],
    )))
    .expect("json");
    assert_eq!(stats["spans"], 3);
    // Errors are counted from the streamed `tags.error` alone.
    let ops = stats["operations"].as_array().expect("operations");
    let errors = |name: &str| {
        ops.iter()
            .find(|o| o["name"] == name)
            .map(|o| o["errors"].clone())
    };
    assert_eq!(errors("mongo.find"), Some(1.into()), "{stats}");
    assert_eq!(errors("auth"), Some(0.into()), "{stats}");

    // tail: a span written after it started is printed.
    let tail = {
        let (uri, coll) = (uri.to_owned(), coll.clone());
        std::thread::spawn(move || {
            spanrec(&uri, &coll, &["tail", "--max", "1", "--interval-ms", "200"])
        })
    };
    std::thread::sleep(Duration::from_secs(1));
    let mut options = MongoOptions::new(DB, &coll);
    options.spool_dir = std::env::temp_dir().join(format!("spanrec-cli-spool-tail-{coll}"));
    let tracer = Tracer::builder()
        .recorder(MongoRecorder::connect(uri, options).expect("recorder"))
        .build()
        .expect("tracer");
    tracer.start_span("late.request").finish();
    tracer
        .shutdown(Instant::now() + Duration::from_secs(60))
        .expect("shutdown");
    let tailed = stdout(&tail.join().expect("tail thread"));
    assert!(tailed.contains("late.request"), "{tailed}");
}

/// A tracer that writes `name` (from `start` to `finish`) to `coll`, and
/// returns once it is stored.
fn write_span(uri: &str, coll: &str, name: &'static str, start: SystemTime, finish: SystemTime) {
    let mut options = MongoOptions::new(DB, coll);
    options.spool_dir = std::env::temp_dir().join(format!("spanrec-cli-spool-{coll}-{name}"));
    let tracer = Tracer::builder()
        .recorder(MongoRecorder::connect(uri, options).expect("recorder"))
        .build()
        .expect("tracer");
    tracer
        .span(name)
        .start_time(start)
        .start()
        .finish_at(finish);
    tracer
        .shutdown(Instant::now() + Duration::from_secs(60))
        .expect("shutdown");
}

#[test]
fn tail_shows_a_span_stored_after_one_that_started_later() {
    // A request outlives its children: its document is written after
    // theirs although it started first. `tail` once followed the latest
    // start it had seen and so never showed such a span.
    let server = LocalServer::start()
        .unwrap_or_else(|e| panic!("no MongoDB server could be provisioned: {e}"));
    let uri = server.uri();
    let coll = format!("cli_tail_{}", std::process::id());
    let mut tail = Command::new(env!("CARGO_BIN_EXE_spanrec"))
        .args(["--uri", uri, "--database", DB, "--collection", &coll])
        .args(["tail", "--max", "2", "--interval-ms", "100"])
        .env_remove("SPANREC_MONGO_URI")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run spanrec tail");
    std::thread::sleep(Duration::from_secs(1));
    let now = SystemTime::now();
    let ms = Duration::from_millis;
    write_span(uri, &coll, "child.first", now, now + ms(20));
    // Two polls at least: `tail` has seen (and printed) the child.
    std::thread::sleep(Duration::from_secs(1));
    write_span(uri, &coll, "request.late", now - ms(10), now + ms(10));
    let deadline = Instant::now() + Duration::from_secs(30);
    while tail.try_wait().expect("wait").is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = tail.kill();
    let out = tail.wait_with_output().expect("tail output");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("child.first") && text.contains("request.late"),
        "tail did not show both spans within 30 s: {:?}\n{text}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn friendly_errors() {
    // A malformed trace id is refused before any connection.
    let out = spanrec("mongodb://127.0.0.1:1", "c", &["trace", "not-hex"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a trace id"));
    // So are a page of no spans (MongoDB reads `limit 0` as "all") and a
    // poll interval that would hammer the server.
    for args in [
        &["find", "--limit", "0"][..],
        &["tail", "--interval-ms", "0"],
    ] {
        let out = spanrec("mongodb://127.0.0.1:1", "c", args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("not in"), "{args:?}: {err}");
    }

    // A hostile argument is quoted back cut short, escaped.
    let huge = format!("\u{1b}[2J{}", "f".repeat(100_000));
    for args in [
        &["trace", huge.as_str()][..],
        &["verify", "--head", huge.as_str()],
        &["find", "--tag", huge.as_str()],
    ] {
        let out = spanrec("mongodb://127.0.0.1:1", "c", args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{}", &err[..err.len().min(300)]);
        assert!(err.len() < 400, "{} bytes: {}", err.len(), &err[..300]);
        assert!(err.contains("(100004 bytes)"), "{err}");
        assert!(!err.contains('\u{1b}'), "{err}");
    }

    // A database or collection name MongoDB refuses (its manual's naming
    // rules) is refused before any connection, whatever the command.
    for (db, coll) in [
        ("", "spans"),
        ("a.b", "spans"),
        ("a/b", "spans"),
        ("a b", "spans"),
        ("spanrec", ""),
        ("spanrec", "$cmd"),
        ("spanrec", "system.users"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_spanrec"))
            .args([
                "--uri",
                "mongodb://127.0.0.1:1",
                "--database",
                db,
                "--collection",
                coll,
            ])
            .arg("stats")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{db:?} {coll:?}: {err}");
        assert!(err.contains("invalid"), "{db:?} {coll:?}: {err}");
        assert!(!err.contains("cannot reach"), "{db:?} {coll:?}: {err}");
    }

    // An unreachable server is named, its password never shown.
    let out = spanrec(
        "mongodb://reader:s3cret-pw@127.0.0.1:1/?serverSelectionTimeoutMS=500",
        "c",
        &["trace", "4bf92f3577b34da6a3ce929d0e0e4736"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("cannot reach MongoDB at"), "{err}");
    assert!(!err.contains("s3cret-pw"), "{err}");
    assert!(err.contains("****"), "{err}");
}

#[test]
fn no_secret_in_any_message_and_times_out_of_range_are_errors() {
    // Credentials in the query string, given every way a user can.
    let uri = "mongodb://reader:s3cret-pw@127.0.0.1:1/?serverSelectionTimeoutMS=500\
               &tlsCertificateKeyFilePassword=hunter2\
               &authMechanismProperties=AWS_SESSION_TOKEN:tok3n";
    let file = std::env::temp_dir().join(format!("spanrec-cli-uri-{}", std::process::id()));
    std::fs::write(&file, format!("{uri}\n")).unwrap();
    let runs = [
        spanrec(uri, "c", &["find", "--since", "1h"]),
        Command::new(env!("CARGO_BIN_EXE_spanrec"))
            .args(["--uri-file", file.to_str().unwrap(), "find"])
            .env_remove("SPANREC_MONGO_URI")
            .output()
            .unwrap(),
        Command::new(env!("CARGO_BIN_EXE_spanrec"))
            .args(["stats"])
            .env("SPANREC_MONGO_URI", uri)
            .output()
            .unwrap(),
        // A connection string the driver refuses is quoted, masked.
        spanrec(
            "mongodb://u:s3cret-pw@h/?tlsCertificateKeyFilePassword=hunter2&bogusOption=\u{1}",
            "c",
            &["find"],
        ),
    ];
    for out in &runs {
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(2), "{all}");
        for secret in ["s3cret-pw", "hunter2", "tok3n"] {
            assert!(!all.contains(secret), "{secret} shown: {all}");
        }
    }
    let _ = std::fs::remove_file(&file);
    // Out-of-range times: bad input, not a panic.
    for since in [
        "99999999999d",
        "9999-12-31T23:59:59Z",
        "+026-11-26T00:00:00Z",
    ] {
        let out = spanrec("mongodb://127.0.0.1:1", "c", &["find", "--since", since]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{since}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}
