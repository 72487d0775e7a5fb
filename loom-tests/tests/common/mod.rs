//! Runs a loom model and prints how many interleavings it explored.

use std::sync::atomic::{AtomicUsize, Ordering};

static INTERLEAVINGS: AtomicUsize = AtomicUsize::new(0);

/// `loom::model(f)`, counting executions.
pub fn model(name: &str, f: impl Fn() + Sync + Send + 'static) {
    // Tests in one binary may run in parallel; count per call.
    let counter = std::sync::Arc::new(AtomicUsize::new(0));
    let c = counter.clone();
    loom::model(move || {
        c.fetch_add(1, Ordering::Relaxed);
        f()
    });
    INTERLEAVINGS.fetch_add(counter.load(Ordering::Relaxed), Ordering::Relaxed);
    println!(
        "loom model {name}: {} interleavings",
        counter.load(Ordering::Relaxed)
    );
}
