//! `#[spanrec::trace]` at run time (sync and async functions, names,
//! skipped and extra fields, `err`, nesting), and its compile-time errors
//! (`tests/ui`, through trybuild).
#![cfg(feature = "macros")]

use spanrec::{global, InMemoryRecorder, OwnedValue, Tracer};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The process-wide tracer of this test binary, and its spans.
fn recorded() -> &'static InMemoryRecorder {
    static RECORDER: OnceLock<InMemoryRecorder> = OnceLock::new();
    RECORDER.get_or_init(|| {
        let recorder = InMemoryRecorder::new();
        let t = Tracer::builder()
            .recorder(recorder.clone())
            .build()
            .unwrap();
        global::set_tracer(t).unwrap();
        recorder
    })
}

fn flushed() -> Vec<spanrec::FinishedSpan> {
    let r = recorded();
    global::tracer()
        .unwrap()
        .flush(Instant::now() + Duration::from_secs(10))
        .unwrap();
    r.spans()
}

struct Conn;

#[spanrec::trace]
fn load_machine(machine: &str, attempts: u32, ratio: f64, force: bool) -> usize {
    machine.len() + attempts as usize + usize::from(force) + ratio as usize
}

#[spanrec::trace(name = "Client.FullStatus", skip(conn), fields(user = user.to_uppercase(), n = 3))]
fn full_status(conn: &Conn, user: String) -> u8 {
    let _ = conn;
    inner_step();
    user.len() as u8
}

#[spanrec::trace(skip_all)]
fn inner_step() {}

#[derive(Debug)]
struct Denied;

impl std::fmt::Display for Denied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("permission denied")
    }
}

#[spanrec::trace(err)]
fn checked(ok: bool) -> Result<u8, Denied> {
    if !ok {
        return Err(Denied);
    }
    let v: u8 = "7".parse().map_err(|_| Denied)?;
    Ok(v)
}

#[spanrec::trace(name = "async.fetch", err)]
async fn fetch(id: i64) -> Result<i64, Denied> {
    tokio::task::yield_now().await;
    nested_async(id).await;
    if id < 0 {
        Err(Denied)
    } else {
        Ok(id * 2)
    }
}

#[spanrec::trace]
async fn nested_async(id: i64) -> i64 {
    id
}

fn find<'a>(
    spans: &'a [spanrec::FinishedSpan],
    name: &str,
    pick: impl Fn(&spanrec::FinishedSpan) -> bool,
) -> &'a spanrec::FinishedSpan {
    spans
        .iter()
        .find(|s| s.operation_name == name && pick(s))
        .unwrap_or_else(|| panic!("no span {name}: {spans:?}"))
}

#[test]
fn sync_functions_record_names_tags_fields_and_errors() {
    recorded();
    assert_eq!(load_machine("m-1", 2, 0.5, true), 6);
    assert_eq!(full_status(&Conn, "alice".into()), 5);
    assert_eq!(checked(true).unwrap(), 7);
    assert!(checked(false).is_err());
    let spans = flushed();
    let load = find(&spans, "trace_attr::load_machine", |_| true);
    assert_eq!(load.tag("machine"), Some(&OwnedValue::Str("m-1".into())));
    assert_eq!(load.tag("attempts"), Some(&OwnedValue::U64(2)));
    assert_eq!(load.tag("ratio"), Some(&OwnedValue::F64(0.5)));
    assert_eq!(load.tag("force"), Some(&OwnedValue::Bool(true)));
    let status = find(&spans, "Client.FullStatus", |_| true);
    assert_eq!(status.tag("conn"), None, "skipped");
    assert_eq!(
        status.tag("user"),
        Some(&OwnedValue::Str("ALICE".into())),
        "fields override"
    );
    assert_eq!(status.tag("n"), Some(&OwnedValue::I64(3)));
    let step = find(&spans, "trace_attr::inner_step", |_| true);
    assert_eq!(step.parent_span_id, Some(status.span_id), "nested: a child");
    let failed = find(&spans, "trace_attr::checked", |s| {
        s.tag("ok") == Some(&OwnedValue::Bool(false))
    });
    assert_eq!(failed.tag("error"), Some(&OwnedValue::Bool(true)));
    assert_eq!(failed.logs[0].event, "error");
    assert_eq!(
        failed.logs[0].fields[0].1,
        OwnedValue::Str("permission denied".into())
    );
    let fine = find(&spans, "trace_attr::checked", |s| {
        s.tag("ok") == Some(&OwnedValue::Bool(true))
    });
    assert_eq!(fine.tag("error"), None);
}

#[test]
fn async_functions_run_in_their_span_across_workers() {
    recorded();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    rt.block_on(async {
        let mut handles = Vec::new();
        for id in -5..20i64 {
            handles.push(tokio::spawn(fetch(id)));
        }
        for (h, id) in handles.into_iter().zip(-5..20i64) {
            assert_eq!(h.await.unwrap().is_ok(), id >= 0);
        }
    });
    let spans = flushed();
    for id in -5..20i64 {
        let f = find(&spans, "async.fetch", |s| {
            s.tag("id") == Some(&OwnedValue::I64(id))
        });
        assert_eq!(f.tag("error").is_some(), id < 0, "{f:?}");
        let n = find(&spans, "trace_attr::nested_async", |s| {
            s.tag("id") == Some(&OwnedValue::I64(id))
        });
        assert_eq!(n.parent_span_id, Some(f.span_id));
    }
}

#[test]
fn misuse_fails_to_compile_with_readable_errors() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
