//! The tamper suite: a chained audit log is produced by a demo-like
//! workload against the real server (killed and restarted mid-run, with a
//! spool replay, a validator refusing some spans, and a second recorder
//! process start on the same spool), then altered directly in MongoDB one
//! case at a time; `spanrec verify` must fail naming the right place, and
//! pass on the untouched log.

use bson::raw::RawDocumentBuf;
use bson::{doc, Document};
use mongodb::sync::{Collection, Database};
use spanrec::{OverflowPolicy, Tracer};
use spanrec_mongo::chain::{record_hash, record_parts, ChainKey};
use spanrec_mongo::{MongoOptions, MongoRecorder};
use spanrec_testkit::LocalServer;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const DB: &str = "spanrec_verify_test";
const KEY: &[u8] = b"an audit key of 32 bytes, really";

struct Paths {
    spool: PathBuf,
    checkpoint: PathBuf,
    key: PathBuf,
}

fn paths(name: &str) -> Paths {
    let dir = std::env::temp_dir().join(format!("spanrec-verify-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("key"), KEY).unwrap();
    Paths {
        spool: dir.join("spool"),
        checkpoint: dir.join("checkpoint"),
        key: dir.join("key"),
    }
}

fn recorder(uri: &str, collection: &str, p: &Paths) -> MongoRecorder {
    let mut o = MongoOptions::new(DB, collection);
    o.spool_dir = p.spool.clone();
    o.chain_key = Some(ChainKey::new(KEY).unwrap());
    o.checkpoint_file = Some(p.checkpoint.clone());
    o.max_attempts = 2;
    o.initial_backoff = Duration::from_millis(50);
    o.probe_interval = Duration::from_millis(300);
    MongoRecorder::connect(uri, o).unwrap()
}

fn tracer(r: MongoRecorder) -> Tracer {
    Tracer::builder()
        .service_name("apiserver")
        .overflow(OverflowPolicy::Block {
            timeout: Duration::from_secs(30),
        })
        .recorder(r)
        .build()
        .unwrap()
}

/// One round of requests: a server span and a child each; every 97th is
/// named "forbidden" (the validator refuses it: a gap record).
fn round(t: &Tracer, r: u64, n: u64) {
    for i in 0..n {
        let name = if (r * n + i).is_multiple_of(97) {
            "forbidden"
        } else {
            "Client.FullStatus"
        };
        let mut s = t.start_span(name);
        s.set_tag("i", (r * n + i) as i64);
        let mut c = t.span("mongo.find").child_of(&s).start();
        c.set_tag("db.rows", 3);
        c.finish();
        s.finish();
    }
    t.flush(Instant::now() + Duration::from_secs(120)).unwrap();
}

fn db(uri: &str) -> Database {
    mongodb::sync::Client::with_uri_str(uri)
        .unwrap()
        .database(DB)
}

fn raw(d: &Database, name: &str) -> Collection<RawDocumentBuf> {
    d.collection(name)
}

fn docs(d: &Database, name: &str) -> Collection<Document> {
    d.collection(name)
}

/// Produces the log in `collection`, in two recorder lifetimes on one spool.
fn produce(server: &mut LocalServer, collection: &str, p: &Paths) {
    db(server.uri())
        .create_collection(collection)
        .validator(doc! { "name": { "$ne": "forbidden" } })
        .run()
        .unwrap();
    let r = recorder(server.uri(), collection, p);
    let stats = r.stats();
    let t = tracer(r);
    round(&t, 0, 150);
    round(&t, 1, 150);
    server.kill();
    round(&t, 2, 150); // spooled while the server is down
    server.restart().unwrap();
    round(&t, 3, 150);
    t.shutdown(Instant::now() + Duration::from_secs(120))
        .unwrap();
    let s = stats.get();
    assert!(s.replayed > 0 && s.spool_bytes == 0, "{s:?}");
    // The next start on the same spool begins a chain linked to this one.
    let t = tracer(recorder(server.uri(), collection, p));
    round(&t, 4, 150);
    round(&t, 5, 150);
    t.shutdown(Instant::now() + Duration::from_secs(120))
        .unwrap();
}

/// A copy of the log (spans and chain, byte for byte) to tamper with.
fn copy(d: &Database, from: &str, to: &str) {
    for (a, b) in [
        (from.to_owned(), to.to_owned()),
        (format!("{from}.chain"), format!("{to}.chain")),
    ] {
        let all: Vec<RawDocumentBuf> = raw(d, &a)
            .find(doc! {})
            .run()
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        raw(d, &b).insert_many(all).run().unwrap();
    }
}

fn verify(uri: &str, collection: &str, p: &Paths, extra: &[&str]) -> (i32, serde_json::Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_spanrec"))
        .args([
            "--uri",
            uri,
            "--database",
            DB,
            "--collection",
            collection,
            "--json",
            "verify",
        ])
        .arg("--checkpoint")
        .arg(&p.checkpoint)
        .arg("--key-file")
        .arg(&p.key)
        .args(extra)
        .env_remove("SPANREC_MONGO_URI")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let json = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "verify printed no JSON ({e}): {text} {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), json)
}

/// The chains: (first, second) by their start records.
fn chains(d: &Database, coll: &str) -> (String, String) {
    let starts: Vec<Document> = docs(d, &format!("{coll}.chain"))
        .find(doc! { "seq": 0i64 })
        .run()
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(starts.len(), 2, "{starts:?}");
    let second = starts
        .iter()
        .find(|s| s.get_document("prev_chain").is_ok())
        .unwrap();
    let first = starts
        .iter()
        .find(|s| s.get_document("prev_chain").is_err())
        .unwrap();
    (
        first.get_str("chain").unwrap().to_owned(),
        second.get_str("chain").unwrap().to_owned(),
    )
}

/// A batch record of `chain` with documents: its seq.
fn some_batch(d: &Database, coll: &str, chain: &str, nth: usize) -> i64 {
    let batches: Vec<Document> = docs(d, &format!("{coll}.chain"))
        .find(doc! { "chain": chain, "kind": "batch", "n": { "$gt": 0i64 } })
        .sort(doc! { "seq": 1 })
        .run()
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    batches[nth].get_i64("seq").unwrap()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The violations must include one at (chain, seq[, document]).
fn assert_named(
    json: &serde_json::Value,
    chain: &str,
    seq: Option<i64>,
    document: Option<&str>,
    case: &str,
) {
    let vs = json["violations"].as_array().unwrap();
    let hit = vs.iter().any(|v| {
        v["chain"] == chain
            && seq.is_none_or(|s| v["seq"] == s)
            && document.is_none_or(|d| v["document"] == d)
    });
    assert!(
        hit,
        "{case}: no violation at chain {chain} seq {seq:?} document {document:?}: {}",
        serde_json::to_string_pretty(vs).unwrap()
    );
}

#[test]
fn tampering_is_detected_and_the_untouched_log_verifies() {
    let mut server = LocalServer::start()
        .unwrap_or_else(|e| panic!("no MongoDB server could be provisioned: {e}"));
    if !server.is_managed() {
        panic!(
            "this test kills and restarts the server; unset SPANREC_MONGO_URI to let it start one"
        );
    }
    let base = format!("log_{}", std::process::id());
    let p = paths(&base);
    produce(&mut server, &base, &p);
    let uri = server.uri().to_owned();
    let d = db(&uri);

    // Untouched: intact, two chains, the second following the first; the
    // refused spans are gap entries, not violations.
    let (code, json) = verify(&uri, &base, &p, &[]);
    assert_eq!(code, 0, "{}", serde_json::to_string_pretty(&json).unwrap());
    assert_eq!(json["intact"], true);
    eprintln!(
        "untouched log: {} spans verified, chains {}, gaps {}",
        json["verified_spans"], json["chains"], json["gaps"]
    );
    assert_eq!(json["chains"].as_array().unwrap().len(), 2);

    // A log with no chain record at all (never written, wiped, or a
    // mistyped name) is not "intact": nothing proves it was not wiped.
    let empty = Command::new(env!("CARGO_BIN_EXE_spanrec"))
        .args(["--uri", &uri, "--database", DB, "--collection"])
        .arg(format!("{base}_never_written"))
        .arg("verify")
        .env_remove("SPANREC_MONGO_URI")
        .output()
        .unwrap();
    let (out, err) = (
        String::from_utf8_lossy(&empty.stdout),
        String::from_utf8_lossy(&empty.stderr),
    );
    assert_eq!(empty.status.code(), Some(1), "{out}{err}");
    assert!(out.contains("nothing to verify"), "{out}");
    assert!(!out.contains("intact"), "{out}");
    assert!(err.contains("no chain records"), "{err}");

    let gaps = json["gaps"].as_array().unwrap();
    let refused: u64 = gaps
        .iter()
        .filter(|g| g["reason"] == "rejected")
        .map(|g| g["n"].as_u64().unwrap())
        .sum();
    let stored = docs(&d, &base).count_documents(doc! {}).run().unwrap();
    assert_eq!(
        refused + stored,
        6 * 150 * 2,
        "every span stored or a gap: {gaps:?}"
    );
    assert!(refused > 0);
    assert_eq!(json["verified_spans"], stored);
    let (a, b) = chains(&d, &base);

    // Another log (another chain) to copy a batch from.
    let other = format!("other_{}", std::process::id());
    let po = paths(&other);
    {
        let t = tracer(recorder(&uri, &other, &po));
        round(&t, 10, 50);
        round(&t, 11, 50);
        t.shutdown(Instant::now() + Duration::from_secs(60))
            .unwrap();
    }

    let mut case_n = 0;
    let mut case = |name: &str, tamper: &dyn Fn(&str)| -> serde_json::Value {
        case_n += 1;
        let coll = format!("{base}_t{case_n}");
        copy(&d, &base, &coll);
        tamper(&coll);
        let (code, json) = verify(&uri, &coll, &p, &[]);
        assert_eq!(code, 1, "{name}: must fail: {json}");
        assert_eq!(json["intact"], false, "{name}");
        eprintln!("{name}: {}", json["violations"]);
        json
    };

    // 1. One tag of one document changed.
    let s = some_batch(&d, &base, &a, 1);
    let victim = docs(&d, &base)
        .find_one(doc! { "chain": &a, "seq": s, "pos": 3 })
        .run()
        .unwrap()
        .unwrap();
    let id = victim.get_binary_generic("_id").unwrap().clone();
    let json = case("tag changed", &|c| {
        docs(&d, c).update_one(doc! { "_id": bson::Binary { subtype: bson::spec::BinarySubtype::Generic, bytes: id.clone() } }, doc! { "$set": { "tags.i": 123456i64 } }).run().unwrap();
    });
    assert_named(&json, &a, Some(s), Some(&hex(&id)), "tag changed");

    // 2. One document deleted.
    let json = case("document deleted", &|c| {
        docs(&d, c)
            .delete_one(doc! { "chain": &a, "seq": s, "pos": 3 })
            .run()
            .unwrap();
    });
    assert_named(&json, &a, Some(s), None, "document deleted");
    assert!(json.to_string().contains("position 3 missing"), "{json}");

    // 3. A forged document inserted into a batch.
    let json = case("forged document", &|c| {
        let mut forged = victim.clone();
        forged.insert(
            "_id",
            bson::Binary {
                subtype: bson::spec::BinarySubtype::Generic,
                bytes: vec![0xab; 24],
            },
        );
        forged.insert("pos", 9999i32);
        docs(&d, c).insert_one(forged).run().unwrap();
    });
    assert_named(
        &json,
        &a,
        Some(s),
        Some(&"ab".repeat(24)),
        "forged document",
    );

    // 4. A whole batch deleted with its chain record.
    let s4 = some_batch(&d, &base, &b, 0);
    let json = case("batch deleted", &|c| {
        docs(&d, c)
            .delete_many(doc! { "chain": &b, "seq": s4 })
            .run()
            .unwrap();
        docs(&d, &format!("{c}.chain"))
            .delete_one(doc! { "chain": &b, "seq": s4 })
            .run()
            .unwrap();
    });
    assert_named(&json, &b, Some(s4), None, "batch deleted");

    // 5. The last batches truncated: only the checkpoint can tell.
    let last: i64 = docs(&d, &format!("{base}.chain"))
        .find_one(doc! { "chain": &b })
        .sort(doc! { "seq": -1 })
        .run()
        .unwrap()
        .unwrap()
        .get_i64("seq")
        .unwrap();
    let json = case("tail truncated", &|c| {
        for seq in last - 2..=last {
            docs(&d, c)
                .delete_many(doc! { "chain": &b, "seq": seq })
                .run()
                .unwrap();
            docs(&d, &format!("{c}.chain"))
                .delete_one(doc! { "chain": &b, "seq": seq })
                .run()
                .unwrap();
        }
    });
    assert_named(&json, &b, Some(last), None, "tail truncated");
    assert!(json.to_string().contains("checkpoint"), "{json}");

    // 6. Two batches swapped (their records' places exchanged).
    let (s6a, s6b) = (some_batch(&d, &base, &a, 0), some_batch(&d, &base, &a, 1));
    let json = case("batches swapped", &|c| {
        let chain = docs(&d, &format!("{c}.chain"));
        chain
            .update_one(
                doc! { "chain": &a, "seq": s6a },
                doc! { "$set": { "seq": -1i64 } },
            )
            .run()
            .unwrap();
        chain
            .update_one(
                doc! { "chain": &a, "seq": s6b },
                doc! { "$set": { "seq": s6a } },
            )
            .run()
            .unwrap();
        chain
            .update_one(
                doc! { "chain": &a, "seq": -1i64 },
                doc! { "$set": { "seq": s6b } },
            )
            .run()
            .unwrap();
    });
    assert_named(&json, &a, Some(s6a), None, "batches swapped");
    assert_named(&json, &a, Some(s6b), None, "batches swapped");

    // 7. A batch copied in from another chain.
    let (oc, _) = {
        let start = docs(&d, &format!("{other}.chain"))
            .find_one(doc! { "seq": 0i64 })
            .run()
            .unwrap()
            .unwrap();
        (start.get_str("chain").unwrap().to_owned(), ())
    };
    let s7 = some_batch(&d, &other, &oc, 1);
    let json = case("batch from another chain", &|c| {
        let spans: Vec<RawDocumentBuf> = raw(&d, &other)
            .find(doc! { "chain": &oc, "seq": s7 })
            .run()
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        raw(&d, c).insert_many(spans).run().unwrap();
        let rec = raw(&d, &format!("{other}.chain"))
            .find_one(doc! { "chain": &oc, "seq": s7 })
            .run()
            .unwrap()
            .unwrap();
        raw(&d, &format!("{c}.chain"))
            .insert_one(rec)
            .run()
            .unwrap();
    });
    assert_named(&json, &oc, Some(s7), None, "batch from another chain");

    // 8. A gap entry altered (fewer refused spans claimed).
    let gap = docs(&d, &format!("{base}.chain"))
        .find_one(doc! { "kind": "gap" })
        .run()
        .unwrap()
        .expect("a gap record");
    let (gc, gs) = (
        gap.get_str("chain").unwrap().to_owned(),
        gap.get_i64("seq").unwrap(),
    );
    let json = case("gap altered", &|c| {
        docs(&d, &format!("{c}.chain"))
            .update_one(
                doc! { "chain": &gc, "seq": gs },
                doc! { "$set": { "reason": "shutdown" } },
            )
            .run()
            .unwrap();
    });
    assert_named(&json, &gc, Some(gs), None, "gap altered");

    // 9. A chain record's count changed.
    let json = case("count changed", &|c| {
        docs(&d, &format!("{c}.chain"))
            .update_one(
                doc! { "chain": &a, "seq": s },
                doc! { "$inc": { "n": 1i64 } },
            )
            .run()
            .unwrap();
    });
    assert_named(&json, &a, Some(s), None, "count changed");

    // 9b. A record forged far ahead, claiming a huge batch: named, in time
    // and memory that follow what is stored (the verifier once walked, and
    // allocated for, every sequence number and position up to the claim).
    let huge = 1i64 << 40;
    let json = case("huge record forged", &|c| {
        let mut rec = docs(&d, &format!("{c}.chain"))
            .find_one(doc! { "chain": &a, "seq": s })
            .run()
            .unwrap()
            .unwrap();
        rec.insert("_id", format!("{a}-{huge:020}"));
        rec.insert("seq", huge);
        rec.insert("n", huge);
        docs(&d, &format!("{c}.chain"))
            .insert_one(rec)
            .run()
            .unwrap();
    });
    assert_named(&json, &a, Some(huge), None, "huge record forged");
    let text = json["violations"].to_string();
    assert!(text.contains("missing"), "{text}");

    // 10. A record rewritten with a correct hash by someone without the key.
    let json = case("rehashed without the key", &|c| {
        let chain = raw(&d, &format!("{c}.chain"));
        let rec = chain
            .find_one(doc! { "chain": &a, "seq": s })
            .run()
            .unwrap()
            .unwrap();
        let mut rewritten = rec.to_document().unwrap();
        rewritten.insert("n", 1i64);
        rewritten.remove("hash");
        rewritten.remove("mac");
        let mut bytes = RawDocumentBuf::from_document(&rewritten).unwrap();
        let h = record_hash(&bytes.as_bytes()[4..bytes.as_bytes().len() - 1]);
        bytes.append(
            "hash",
            bson::Binary {
                subtype: bson::spec::BinarySubtype::Generic,
                bytes: h.to_vec(),
            },
        );
        bytes.append(
            "mac",
            bson::Binary {
                subtype: bson::spec::BinarySubtype::Generic,
                bytes: vec![0; 32],
            },
        );
        assert_eq!(record_parts(&bytes).unwrap().1, h);
        chain
            .delete_one(doc! { "chain": &a, "seq": s })
            .run()
            .unwrap();
        chain.insert_one(bytes).run().unwrap();
    });
    assert_named(&json, &a, Some(s), None, "rehashed without the key");
    assert!(json.to_string().contains("MAC"), "{json}");

    // The documents stream through verify: a read that fails after the
    // first batch (the cursor's `getMore`) is an error (exit 2), never a
    // verdict on part of the log.
    assert!(stored > 101, "more documents than the cursor's first batch");
    spanrec_testkit::fail_point::times(
        &uri,
        doc! { "failCommands": ["getMore"], "errorCode": 91 },
        1,
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_spanrec"))
        .args([
            "--uri",
            &uri,
            "--database",
            DB,
            "--collection",
            &base,
            "--json",
        ])
        .arg("verify")
        .env_remove("SPANREC_MONGO_URI")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("query failed"), "{stderr}");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("intact"),
        "no verdict on part of the log"
    );

    let _ = std::fs::remove_dir_all(p.spool.parent().unwrap_or(Path::new("/nonexistent")));
    let _ = std::fs::remove_dir_all(po.spool.parent().unwrap_or(Path::new("/nonexistent")));
}
