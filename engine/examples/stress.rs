//! A fixed-size concurrency workout for race detectors (not a timed test):
//! 3 threads finish spans through a tiny ring, one of them exits early, the
//! tracer flushes and shuts down, and the totals are checked.
//!
//! `cargo run -p spanrec --example stress [spans]`. `ci/race.sh` builds it
//! with `--cfg spanrec_valgrind` (the engine's atomics and locks then
//! announce their happens-before edges to the race detector) and runs it
//! under Helgrind and DRD, which must report zero errors, and checks that a
//! mutant with a `Relaxed` ring publish is reported.

use spanrec::{InMemoryRecorder, OverflowPolicy, Tracer};
use std::time::{Duration, Instant};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let spans: u64 = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(2_000);
    // First with `Block`: producers wait for the flusher, so every span
    // crosses the ring while its producer is still running (under a race
    // detector, which runs one thread at a time, a dropping producer could
    // otherwise finish before the flusher ever reads its ring). Then with
    // the default `DropNewest`, which exercises the overflow accounting.
    run(
        spans,
        OverflowPolicy::Block {
            timeout: Duration::from_secs(60),
        },
    )?;
    run(spans, OverflowPolicy::DropNewest)
}

fn run(spans: u64, overflow: OverflowPolicy) -> Result<(), Box<dyn std::error::Error>> {
    let recorder = InMemoryRecorder::new();
    let tracer = Tracer::builder()
        .recorder(recorder.clone())
        .ring_capacity(8)
        .max_batch_size(4)
        .flush_interval(Duration::from_millis(1))
        .overflow(overflow)
        .build()?;
    let workers: Vec<_> = (0..3u64)
        .map(|w| {
            let tracer = tracer.clone();
            std::thread::spawn(move || {
                let n = if w == 0 { spans / 4 } else { spans };
                for i in 0..n {
                    let mut s = tracer.start_span("stress");
                    s.set_tag("worker", w);
                    s.set_tag("i", i);
                    s.set_baggage_item("k", "v");
                    s.finish();
                }
            })
        })
        .collect();
    for w in workers {
        w.join().map_err(|_| "worker panicked")?;
    }
    tracer.flush(Instant::now() + Duration::from_secs(120))?;
    tracer.shutdown(Instant::now() + Duration::from_secs(120))?;
    let s = tracer.stats();
    println!(
        "stress ({overflow:?}): finished {} recorded {} dropped {} received {}",
        s.finished,
        s.recorded,
        s.dropped.total(),
        recorder.len()
    );
    if s.recorded + s.dropped.total() != s.finished || recorder.len() as u64 != s.recorded {
        return Err("accounting mismatch".into());
    }
    if matches!(overflow, OverflowPolicy::Block { .. }) && s.dropped.total() != 0 {
        return Err("Block dropped spans".into());
    }
    Ok(())
}
