//! Delivery at process exit (issue 13): a tracer kept in a `static` (its
//! destructor never runs) and a process that ends with
//! `std::process::exit` still deliver every finished span. The test runs
//! itself as a child process (`SPANREC_EXIT_CHILD`), whose recorder appends
//! what it receives to a file the parent reads after the child exited.

use spanrec::{Batch, Recorder, RecorderError, Tracer};
use std::io::Write;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

const SPANS: u64 = 1_000;

static TRACER: OnceLock<Tracer> = OnceLock::new();

/// Appends the size of every batch to a file, and a line at shutdown.
struct FileRecorder(std::fs::File);

impl Recorder for FileRecorder {
    fn record(&mut self, batch: &Batch<'_>) -> Result<(), RecorderError> {
        writeln!(self.0, "{}", batch.len()).map_err(|e| RecorderError::with_source("write", e))
    }

    fn shutdown(&mut self) -> Result<(), RecorderError> {
        writeln!(self.0, "shutdown").map_err(|e| RecorderError::with_source("write", e))
    }
}

fn child(path: &str) -> ! {
    let file = std::fs::File::create(path).unwrap();
    let t = TRACER.get_or_init(|| {
        Tracer::builder()
            .recorder(FileRecorder(file))
            // Nothing would be due before the exit on its own.
            .flush_interval(Duration::from_secs(3600))
            .build()
            .unwrap()
    });
    // Spans on this thread (drained at exit after its thread-locals are
    // destroyed) and on a thread that has exited.
    for _ in 0..SPANS / 2 {
        t.start_span("main").finish();
    }
    std::thread::spawn(|| {
        for _ in 0..SPANS / 2 {
            TRACER.get().unwrap().start_span("worker").finish();
        }
    })
    .join()
    .unwrap();
    std::process::exit(0);
}

#[test]
fn process_exit_delivers_what_a_static_tracer_holds() {
    if let Ok(path) = std::env::var("SPANREC_EXIT_CHILD") {
        child(&path);
    }
    let path = std::env::temp_dir().join(format!("spanrec-exit-{}.txt", std::process::id()));
    let status = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "process_exit_delivers_what_a_static_tracer_holds",
            "--nocapture",
        ])
        .env("SPANREC_EXIT_CHILD", &path)
        .status()
        .unwrap();
    assert!(status.success(), "child failed: {status}");
    let text = std::fs::read_to_string(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    let delivered: u64 = text.lines().filter_map(|l| l.parse::<u64>().ok()).sum();
    assert_eq!(delivered, SPANS, "delivered at exit: {text:?}");
    assert_eq!(text.lines().last(), Some("shutdown"));
}
