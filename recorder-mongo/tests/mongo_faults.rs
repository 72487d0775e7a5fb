//! Faults operators meet, injected into a real server process (fail points
//! through `configureFailPoint`), a real filesystem (a 64 KiB tmpfs) and
//! real processes: each ends with every finished span stored exactly once
//! or counted under a named reason, in `MongoStats` and in the tracer's
//! ledger alike.

use bson::doc;
use spanrec::Tracer;
use spanrec_mongo::{MongoOptions, MongoRecorder, MongoRecorderError, SpoolError};
use spanrec_testkit::FailPoint;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

mod common;
use common::*;

fn emit(t: &Tracer, name: &'static str, n: u64) {
    for i in 0..n {
        let mut s = t.start_span(name);
        s.set_tag("i", i);
        s.finish();
    }
}

/// Waits until `ok` holds for the recorder's counters, or fails.
fn wait_until(
    stats: &spanrec_mongo::MongoStatsHandle,
    limit: Duration,
    ok: impl Fn(&spanrec_mongo::MongoStats) -> bool,
) {
    let begun = Instant::now();
    loop {
        let s = stats.get();
        if ok(&s) {
            return;
        }
        assert!(begun.elapsed() < limit, "not reached in {limit:?}: {s:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The ledger identity, with nothing in flight after a shutdown.
fn assert_settled(t: &Tracer) -> spanrec::Stats {
    let s = t.stats();
    assert_eq!(s.in_flight(), 0, "{s:?}");
    assert_eq!(s.durable + s.dropped.total(), s.finished, "{s:?}");
    s
}

#[test]
fn rotated_credentials_spool_and_replay_instead_of_dropping() {
    let _serial = SERIAL.lock();
    let server = server();
    let name = unique("authfail");
    let recorder = MongoRecorder::connect(server.uri(), options(&name)).unwrap();
    let stats = recorder.stats();
    let t = tracer(recorder);
    emit(&t, "before", 50);
    finish_all(&t);
    wait_delivered(&stats, 50, Duration::from_secs(60));
    // Every insert refused as AuthenticationFailed (18), then Unauthorized
    // (13), as after a credential rotation or a revoked role.
    let mut sent = 50;
    for code in [18, 13] {
        let fp = FailPoint::always_on(
            server.uri(),
            doc! { "failCommands": ["insert"], "errorCode": code },
        )
        .unwrap();
        emit(&t, "refused", 200);
        sent += 200;
        finish_all(&t);
        wait_until(&stats, Duration::from_secs(60), |s| {
            s.spooled + s.delivered >= sent
        });
        let s = stats.get();
        assert_eq!(s.failed_permanently, 0, "code {code}: {s:?}");
        let ts = t.stats();
        assert_eq!(ts.dropped.total(), 0, "code {code}: {ts:?}");
        fp.off();
        wait_delivered(&stats, sent, Duration::from_secs(60));
    }
    t.shutdown(Instant::now() + Duration::from_secs(60))
        .unwrap();
    let s = stats.get();
    assert_eq!(count(server.uri(), &name), 450, "{s:?}");
    assert_eq!(s.failed_permanently, 0, "{s:?}");
    assert!(s.replayed >= 400, "{s:?}");
    let ts = assert_settled(&t);
    assert_eq!(ts.durable, 450, "{ts:?}");
}

#[test]
fn refused_create_indexes_never_stops_inserts_and_is_retried() {
    let _serial = SERIAL.lock();
    let server = server();
    let name = unique("noindexrole");
    let fp = FailPoint::always_on(
        server.uri(),
        doc! { "failCommands": ["createIndexes"], "errorCode": 13 },
    )
    .unwrap();
    let recorder = MongoRecorder::connect(server.uri(), options(&name)).unwrap();
    let stats = recorder.stats();
    let t = tracer(recorder);
    emit(&t, "indexless", 300);
    finish_all(&t);
    wait_delivered(&stats, 300, Duration::from_secs(60));
    let s = stats.get();
    assert!(s.index_failures >= 1, "{s:?}");
    assert_eq!(s.failed_permanently, 0, "{s:?}");
    // The role is granted: the next insert after `probe_interval` creates
    // the indexes.
    fp.off();
    std::thread::sleep(options(&name).probe_interval);
    emit(&t, "indexed", 10);
    finish_all(&t);
    t.shutdown(Instant::now() + Duration::from_secs(60))
        .unwrap();
    assert_eq!(count(server.uri(), &name), 310);
    let names: Vec<String> = collection(server.uri(), &name)
        .list_index_names()
        .run()
        .unwrap();
    assert!(names.iter().any(|n| n == "trace_id"), "{names:?}");
    assert_eq!(assert_settled(&t).durable, 310);
}

#[test]
fn documents_the_server_refuses_are_named_drops_in_both_ledgers() {
    let _serial = SERIAL.lock();
    let server = server();
    let name = unique("validator");
    // A collection whose validator refuses spans named "forbidden": the
    // server can never accept those documents; the others land.
    mongodb::sync::Client::with_uri_str(server.uri())
        .unwrap()
        .database("spanrec_test")
        .create_collection(&name)
        .validator(doc! { "name": { "$ne": "forbidden" } })
        .run()
        .unwrap();
    let recorder = MongoRecorder::connect(server.uri(), options(&name)).unwrap();
    let stats = recorder.stats();
    let t = tracer(recorder);
    for i in 0..100u64 {
        let mut s = t.start_span(if i % 25 == 7 { "forbidden" } else { "fine" });
        s.set_tag("i", i);
        s.finish();
    }
    finish_all(&t);
    t.shutdown(Instant::now() + Duration::from_secs(60))
        .unwrap();
    let s = stats.get();
    assert_eq!(s.failed_permanently, 4, "{s:?}");
    assert_eq!(s.delivered, 96, "{s:?}");
    assert_eq!(count(server.uri(), &name), 96);
    let ts = assert_settled(&t);
    assert_eq!((ts.durable, ts.dropped.rejected), (96, 4), "{ts:?}");
}

/// A 64 KiB tmpfs mounted for one test, unmounted when dropped.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(name: &str) -> SmallDisk {
        let dir = std::env::temp_dir().join(format!("spanrec-small-disk-{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs"])
            .arg(&dir)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "this test needs a real small filesystem: `mount -t tmpfs -o size=64k` \
             failed (it needs root, as the developers' machines and CI run): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_spool_on_a_full_disk_counts_each_refused_batch_once_and_keeps_the_rest() {
    let _serial = SERIAL.lock();
    let server = server();
    let name = unique("diskfull");
    let disk = SmallDisk::mount(&name);
    let mut o = options(&name);
    o.spool_dir = disk.path().join("spool");
    o.max_attempts = 1;
    let recorder = MongoRecorder::connect(server.uri(), o).unwrap();
    let stats = recorder.stats();
    let t = tracer(recorder);
    // The database is down for inserts: every batch goes to the spool,
    // which fills the 64 KiB disk after a few batches (ENOSPC).
    let fp = FailPoint::always_on(
        server.uri(),
        doc! { "failCommands": ["insert"], "errorCode": 91 },
    )
    .unwrap();
    let rounds = 30;
    for _ in 0..rounds {
        emit(&t, "spooled", 40);
        finish_all(&t);
    }
    let s = stats.get();
    assert!(s.spooled > 0, "some batches fit: {s:?}");
    assert!(
        s.failed_permanently > 0,
        "the disk filled up before {} spans: {s:?}",
        rounds * 40
    );
    assert!(
        s.last_error.as_deref().unwrap_or("").contains("spans lost"),
        "{s:?}"
    );
    fp.off();
    // Replay frees the disk; later batches are spooled (and delivered)
    // again.
    wait_until(&stats, Duration::from_secs(60), |s| s.spool_bytes == 0);
    emit(&t, "after", 100);
    finish_all(&t);
    t.shutdown(Instant::now() + Duration::from_secs(60))
        .unwrap();
    let s = stats.get();
    let finished = rounds * 40 + 100;
    eprintln!("full disk: {finished} finished, {s:?}");
    assert_eq!(s.spool_corrupt_bytes, 0, "no torn record replayed: {s:?}");
    assert_eq!(s.duplicates, 0, "each batch counted once: {s:?}");
    assert_eq!(
        count(server.uri(), &name) + s.failed_permanently,
        finished,
        "{s:?}"
    );
    let ts = assert_settled(&t);
    assert_eq!(ts.dropped.rejected, s.failed_permanently, "{ts:?} {s:?}");
    assert_eq!(ts.durable, count(server.uri(), &name), "{ts:?}");
}

/// Set in the child process of the two-process test: the spool directory
/// it must try to open.
const CHILD_SPOOL: &str = "SPANREC_TEST_CHILD_SPOOL";

#[test]
fn a_second_process_on_the_same_spool_gets_a_clear_error() {
    if let Some(dir) = std::env::var_os(CHILD_SPOOL) {
        // The child: try to open the spool another process holds.
        let mut o = MongoOptions::new("spanrec_test", "two_processes");
        o.spool_dir = PathBuf::from(dir);
        match MongoRecorder::connect("mongodb://127.0.0.1:1/", o) {
            Err(MongoRecorderError::Spool(SpoolError::Locked { path })) => {
                println!("CHILD: locked {}", path.display())
            }
            Err(e) => println!("CHILD: other error {e}"),
            Ok(_) => println!("CHILD: opened"),
        }
        return;
    }
    let name = unique("twoprocs");
    let mut o = MongoOptions::new("spanrec_test", &name);
    o.spool_dir = spool_dir(&name);
    let child = |dir: &Path| {
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "a_second_process_on_the_same_spool_gets_a_clear_error",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_SPOOL, dir)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{text}");
        text.lines()
            .find_map(|l| l.split_once("CHILD: ").map(|(_, r)| r.to_owned()))
            .unwrap_or_else(|| panic!("no child report: {text}"))
    };
    let first = MongoRecorder::connect("mongodb://127.0.0.1:1/", o.clone()).unwrap();
    let report = child(&o.spool_dir);
    assert!(report.starts_with("locked"), "{report}");
    drop(first);
    let report = child(&o.spool_dir);
    assert_eq!(report, "opened");
    let _ = std::fs::remove_dir_all(&o.spool_dir);
}

#[test]
fn a_different_span_under_a_taken_id_is_kept_under_a_disambiguated_id() {
    use bson::spec::BinarySubtype;
    use bson::Binary;
    use spanrec_mongo::encode::document_id;
    let _serial = SERIAL.lock();
    let server = server();
    let name = unique("collision");
    let recorder = MongoRecorder::connect(server.uri(), options(&name)).unwrap();
    let stats = recorder.stats();
    let t = tracer(recorder);
    let mut s = t.start_span("mine");
    let id = document_id(s.trace_id(), s.span_id());
    // Another process (a forked child repeating ids) stored a different
    // span under the same `_id` first.
    let c = collection(server.uri(), &name);
    c.insert_one(doc! {
        "_id": Binary { subtype: BinarySubtype::Generic, bytes: id.to_vec() },
        "name": "theirs",
        "hash": 1i64,
    })
    .run()
    .unwrap();
    s.set_tag("i", 1);
    s.finish();
    emit(&t, "plain", 10);
    finish_all(&t);
    t.shutdown(Instant::now() + Duration::from_secs(60))
        .unwrap();
    let m = stats.get();
    assert_eq!(
        (
            m.collisions,
            m.duplicates,
            m.delivered,
            m.failed_permanently
        ),
        (1, 0, 11, 0),
        "{m:?}"
    );
    assert_eq!(count(server.uri(), &name), 12);
    let theirs = c
        .find_one(doc! { "name": "theirs" })
        .run()
        .unwrap()
        .unwrap();
    assert_eq!(theirs.get_binary_generic("_id").unwrap(), &id.to_vec());
    let mine = c.find_one(doc! { "name": "mine" }).run().unwrap().unwrap();
    let mine_id = mine.get_binary_generic("_id").unwrap();
    assert_eq!((mine_id.len(), &mine_id[..24]), (32, &id[..]));
    assert_eq!(
        mine_id[24..],
        mine.get_i64("hash").unwrap().to_be_bytes(),
        "the disambiguated _id ends with the content hash"
    );
    assert_eq!(assert_settled(&t).durable, 11);
}

/// Set in the child process of the application-kill test: `URI|COLLECTION|SPOOL|WA`.
const CHILD_WORKLOAD: &str = "SPANREC_TEST_CHILD_WORKLOAD";

/// The child: the demo-like workload, printing after every 500 spans how
/// many it finished and how many of them are not durable yet, until killed.
fn workload_child(spec: &str) {
    let parts: Vec<&str> = spec.split('|').collect();
    let [uri, collection, spool, write_ahead] = parts[..] else {
        panic!("bad {CHILD_WORKLOAD}: {spec}");
    };
    let mut o = options(collection);
    o.spool_dir = PathBuf::from(spool);
    o.write_ahead = write_ahead == "1";
    let recorder = MongoRecorder::connect(uri, o).unwrap();
    let t = tracer(recorder);
    for n in 0u64.. {
        let mut root = t.start_span("ApiServer.Call");
        root.set_tag("n", n as i64);
        root.set_tag("user", "alice");
        root.finish();
        if n % 500 == 499 {
            let s = t.stats();
            println!(
                "CHILD: finished={} not_durable={}",
                s.finished,
                s.in_flight()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Kills the workload child with SIGKILL once it reports `at_least`
/// finished spans; returns (finished, not durable) from its last report.
fn run_and_kill(uri: &str, collection: &str, spool: &Path, write_ahead: bool) -> (u64, u64) {
    use std::io::BufRead;
    let spec = format!(
        "{uri}|{collection}|{}|{}",
        spool.display(),
        u8::from(write_ahead)
    );
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "an_application_killed_mid_stream_loses_at_most_what_was_not_durable",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_WORKLOAD, spec)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let begun = Instant::now();
    for line in stdout.lines() {
        let line = line.unwrap();
        let Some((_, report)) = line.split_once("CHILD: ") else {
            continue;
        };
        let field = |name: &str| -> u64 {
            report
                .split(' ')
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                .unwrap()
                .parse()
                .unwrap()
        };
        let (finished, not_durable) = (field("finished"), field("not_durable"));
        if finished >= 20_000 || begun.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap(); // SIGKILL, at once after this report
            child.wait().unwrap();
            return (finished, not_durable);
        }
    }
    let status = child.wait().unwrap();
    panic!("the workload child ended ({status}) before it was killed");
}

#[test]
fn an_application_killed_mid_stream_loses_at_most_what_was_not_durable() {
    if let Ok(spec) = std::env::var(CHILD_WORKLOAD) {
        workload_child(&spec);
        return;
    }
    let _serial = SERIAL.lock();
    let server = server();
    for write_ahead in [true, false] {
        let name = unique(if write_ahead {
            "killed_wa"
        } else {
            "killed_plain"
        });
        // Not `spool_dir(&name)`: `options(&name)` empties that one.
        let spool = std::env::temp_dir().join(format!("spanrec-test-kill-{name}"));
        let (finished, not_durable) = run_and_kill(server.uri(), &name, &spool, write_ahead);
        // Started again with the same spool: what was spooled is replayed.
        let mut o = options(&name);
        o.spool_dir = spool.clone();
        let recorder = MongoRecorder::connect(server.uri(), o).unwrap();
        let stats = recorder.stats();
        let t = tracer(recorder);
        t.shutdown(Instant::now() + Duration::from_secs(120))
            .unwrap();
        let m = stats.get();
        assert_eq!(m.spool_bytes, 0, "{m:?}");
        let stored = collection(server.uri(), &name)
            .count_documents(doc! { "tags.n": { "$lt": finished as i64 } })
            .run()
            .unwrap();
        let lost = finished - stored;
        eprintln!(
            "application kill -9 (write_ahead={write_ahead}): {finished} finished before the \
             last report, {not_durable} of them not durable then; {lost} lost"
        );
        assert!(
            lost <= not_durable,
            "lost {lost} > not durable {not_durable}: {m:?}"
        );
        if write_ahead {
            // What the ring holds and the one batch being encoded and
            // synced — never the writer's queue (`queue_batches` more).
            let c = spanrec::Config::default();
            let bound = (c.ring_capacity + c.max_batch_size) as u64;
            assert!(not_durable <= bound, "{not_durable} > {bound}");
        }
        let _ = std::fs::remove_dir_all(&spool);
    }
}
