//! Whole-process CPU accounting for the benches: a span's cost is the CPU
//! of every thread its library runs (the request thread *and* the
//! background thread that drains, batches and exports), per span delivered.
//!
//! CPU per thread comes from `/proc/self/task/<tid>/schedstat`, whose first
//! field is the thread's time on a CPU in nanoseconds (the scheduler's own
//! accounting: no sampling, no tick granularity). A library's background
//! threads are found by name (`/proc/self/task/<tid>/comm`, 15 bytes).

use std::collections::HashMap;
use std::path::PathBuf;

/// The name prefixes (as `comm` shows them, at most 15 bytes) of each
/// library's background threads.
pub mod threads {
    /// spanrec's flusher.
    pub const SPANREC: &[&str] = &["spanrec-flusher"];
    /// The OpenTelemetry SDK's `BatchSpanProcessor` thread.
    pub const OTEL: &[&str] = &["OpenTelemetry"];
    /// fastrace's global collector.
    pub const FASTRACE: &[&str] = &["fastrace"];
    /// `tracing`'s registry runs no thread.
    pub const NONE: &[&str] = &[];
}

/// This thread's kernel id.
pub fn current_tid() -> u32 {
    std::fs::read_link("/proc/thread-self")
        .ok()
        .and_then(|p| p.file_name()?.to_str()?.parse().ok())
        .unwrap_or(0)
}

/// `(name, ns on CPU)` of every thread of this process, by tid.
pub fn threads_cpu() -> HashMap<u32, (String, u64)> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(tid) = entry.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        let path = entry.path();
        let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        let ns = std::fs::read_to_string(path.join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok());
        if let Some(ns) = ns {
            out.insert(tid, (name.trim().to_owned(), ns));
        }
    }
    out
}

/// CPU of one library's background threads over a window.
pub struct BackgroundMeter {
    prefixes: &'static [&'static str],
    before: HashMap<u32, (String, u64)>,
}

impl BackgroundMeter {
    /// Starts the window for the threads named with one of `prefixes`.
    pub fn start(prefixes: &'static [&'static str]) -> Self {
        BackgroundMeter {
            prefixes,
            before: threads_cpu(),
        }
    }

    /// Nanoseconds those threads spent on a CPU since `start` (a thread
    /// that exited in between is not seen: stop before shutting down).
    pub fn stop(&self) -> u64 {
        threads_cpu()
            .into_iter()
            .filter(|(_, (name, _))| self.prefixes.iter().any(|p| name.starts_with(p)))
            .map(|(tid, (_, ns))| ns - self.before.get(&tid).map_or(0, |b| b.1).min(ns))
            .sum()
    }
}

/// What a bench measured of one library's whole-process cost.
#[derive(Debug, Clone, Copy)]
pub struct CpuReport {
    /// Spans the request threads created in the window.
    pub created: u64,
    /// Spans the backend received in the window.
    pub delivered: u64,
    /// CPU of the background threads in the window, ns.
    pub background_ns: u64,
    /// CPU of the request threads in the window, ns (`None`: the bench
    /// takes criterion's per-iteration median instead).
    pub request_ns: Option<u64>,
}

impl CpuReport {
    /// Background CPU per delivered span, ns.
    pub fn background_per_span(&self) -> f64 {
        self.background_ns as f64 / self.delivered.max(1) as f64
    }

    /// Prints the report and saves it as
    /// `<target>/spanrec-cpu/<group>/<id>.json` for `ci/bench-table.py`.
    pub fn save(&self, group: &str, id: &str) {
        if self.created == 0 {
            // Filtered out of this run (`cargo bench -- <filter>`): keep
            // the last real report.
            return;
        }
        let request = self.request_ns.map_or(String::from("-"), |r| {
            format!("{:.1}", r as f64 / self.created.max(1) as f64)
        });
        println!(
            "cpu {group}/{id}: created {} delivered {} request-thread {request} ns/span \
             background {:.1} ns/delivered span ({:.1} ms)",
            self.created,
            self.delivered,
            self.background_per_span(),
            self.background_ns as f64 / 1e6
        );
        let dir = target_dir().join("spanrec-cpu").join(group);
        let json = format!(
            "{{\"created\": {}, \"delivered\": {}, \"background_ns\": {}, \"request_ns\": {}}}\n",
            self.created,
            self.delivered,
            self.background_ns,
            self.request_ns.map_or("null".into(), |r| r.to_string())
        );
        let file = dir.join(format!("{}.json", id.replace('/', "_")));
        if let Err(e) = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&file, json)) {
            eprintln!("could not write {}: {e}", file.display());
        }
    }
}

/// Cargo's target directory (where criterion writes too).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target")))
}
