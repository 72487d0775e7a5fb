//! `spanrec export` against the provisioned server: the OTLP JSON output
//! deserializes with the `opentelemetry-proto` crate's serde types (the
//! protocol's own definitions) and round-trips ids, times, tags, logs (as
//! events), references (parent and links) and baggage; the Jaeger and
//! Chrome outputs parse. (Golden files for those two: `src/export.rs`.)

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use spanrec::{OverflowPolicy, Tracer, Value};
use spanrec_mongo::{MongoOptions, MongoRecorder};
use spanrec_testkit::LocalServer;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const DB: &str = "spanrec_export_test";

fn export(uri: &str, coll: &str, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_spanrec"))
        .args([
            "--uri",
            uri,
            "--database",
            DB,
            "--collection",
            coll,
            "export",
        ])
        .args(args)
        .env_remove("SPANREC_MONGO_URI")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn attr<'a>(attrs: &'a [opentelemetry_proto::tonic::common::v1::KeyValue], key: &str) -> &'a Any {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
        .unwrap_or_else(|| panic!("no attribute {key}: {attrs:?}"))
}

#[test]
fn otlp_json_round_trips_through_the_protocol_types() {
    let server = LocalServer::start()
        .unwrap_or_else(|e| panic!("no MongoDB server could be provisioned: {e}"));
    let coll = format!("export_{}", std::process::id());
    let mut o = MongoOptions::new(DB, &coll);
    o.spool_dir = std::env::temp_dir().join(format!("spanrec-export-spool-{coll}"));
    let tracer = Tracer::builder()
        .service_name("apiserver")
        .process_tag("host", "h1")
        .overflow(OverflowPolicy::Block {
            timeout: Duration::from_secs(30),
        })
        .recorder(MongoRecorder::connect(server.uri(), o).unwrap())
        .build()
        .unwrap();
    let t0 = SystemTime::now() - Duration::from_secs(60);
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let ns = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64;
    let cause = tracer.span("cause").start_time(at(0)).start();
    let cause_ctx = cause.context();
    cause.finish_at(at(1));
    let mut request = tracer.span("request").start_time(at(2)).start();
    request.set_baggage_item("tenant", "t-1");
    let mut find = tracer
        .span("mongo.find \"x\"\n\u{1b}[31m")
        .child_of(&request)
        .follows_from(&cause_ctx)
        .start_time(at(3))
        .start();
    find.set_tag("db.rows", 3);
    find.set_tag("big", u64::MAX);
    find.set_tag("ratio", 0.5);
    find.set_tag("error", true);
    find.log_at(at(4), "cache.miss", [("key", Value::StaticStr("machines"))]);
    let (trace, request_id, find_id) = (request.trace_id(), request.span_id(), find.span_id());
    find.finish_at(at(9));
    request.finish_at(at(10));
    tracer
        .shutdown(Instant::now() + Duration::from_secs(60))
        .unwrap();

    let text = export(
        server.uri(),
        &coll,
        &[&format!("{trace:032x}"), "--format", "otlp-json"],
    );
    let req: ExportTraceServiceRequest =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    let rs = &req.resource_spans[0];
    let resource = &rs.resource.as_ref().unwrap().attributes;
    assert_eq!(
        attr(resource, "service.name"),
        &Any::StringValue("apiserver".into())
    );
    assert_eq!(attr(resource, "host"), &Any::StringValue("h1".into()));
    let spans = &rs.scope_spans[0].spans;
    assert_eq!(spans.len(), 2);
    let f = spans
        .iter()
        .find(|s| s.span_id == find_id.to_be_bytes())
        .unwrap();
    let r = spans
        .iter()
        .find(|s| s.span_id == request_id.to_be_bytes())
        .unwrap();
    assert_eq!(f.trace_id, trace.to_be_bytes());
    assert_eq!(f.parent_span_id, request_id.to_be_bytes());
    assert!(r.parent_span_id.is_empty());
    assert_eq!(
        f.name, "mongo.find \"x\"\n\u{1b}[31m",
        "hostile name, exactly"
    );
    assert_eq!(
        (f.start_time_unix_nano, f.end_time_unix_nano),
        (ns(at(3)), ns(at(9)))
    );
    assert_eq!(attr(&f.attributes, "db.rows"), &Any::IntValue(3));
    assert_eq!(
        attr(&f.attributes, "big"),
        &Any::StringValue(u64::MAX.to_string())
    );
    assert_eq!(attr(&f.attributes, "ratio"), &Any::DoubleValue(0.5));
    assert_eq!(attr(&f.attributes, "error"), &Any::BoolValue(true));
    assert_eq!(
        attr(&f.attributes, "baggage.tenant"),
        &Any::StringValue("t-1".into())
    );
    assert_eq!(
        attr(&r.attributes, "baggage.tenant"),
        &Any::StringValue("t-1".into())
    );
    assert_eq!(f.status.as_ref().map(|s| s.code), Some(2));
    assert_eq!(f.events.len(), 1);
    assert_eq!(f.events[0].name, "cache.miss");
    assert_eq!(f.events[0].time_unix_nano, ns(at(4)));
    assert_eq!(
        attr(&f.events[0].attributes, "key"),
        &Any::StringValue("machines".into())
    );
    assert_eq!(f.links.len(), 1);
    assert_eq!(f.links[0].span_id, cause_ctx.span_id.to_be_bytes());
    assert_eq!(
        attr(&f.links[0].attributes, "opentracing.ref_type"),
        &Any::StringValue("follows_from".into())
    );

    // The other formats, through the filters and to a file.
    for format in ["jaeger-json", "chrome-trace"] {
        let path = std::env::temp_dir().join(format!("spanrec-export-{coll}.{format}.json"));
        export(
            server.uri(),
            &coll,
            &[
                "--format",
                format,
                "--operation",
                "request",
                "-o",
                path.to_str().unwrap(),
            ],
        );
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let n = match format {
            "jaeger-json" => v["data"][0]["spans"].as_array().unwrap().len(),
            _ => v["traceEvents"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["ph"] == "X")
                .count(),
        };
        assert_eq!(n, 1, "{format}: {v}");
        let _ = std::fs::remove_file(path);
    }

    // Through the filters, the page `find` shows: the newest spans.
    let page = export(
        server.uri(),
        &coll,
        &["--format", "chrome-trace", "--limit", "2"],
    );
    let v: serde_json::Value = serde_json::from_str(&page).unwrap();
    let mut names: Vec<&str> = v["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["ph"] == "X")
        .filter_map(|e| e["name"].as_str())
        .collect();
    names.sort_unstable();
    assert_eq!(names.len(), 2, "{v}");
    assert!(
        !names.contains(&"cause"),
        "the oldest span is not on the newest page: {names:?}"
    );
    assert!(names.contains(&"request"), "{names:?}");
}
