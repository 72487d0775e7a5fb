//! `idle/*`: what spanrec costs a process that records nothing. Threads
//! register with a tracer (one span each, delivered), then sit idle; over a
//! 3-second window the bench reads the CPU every thread of the process used
//! (`/proc/self/task/*/schedstat`): in practice the flusher, which should be
//! asleep, waking once per `flush_interval` to find nothing.
//!
//! `cargo bench -p spanrec-benches --bench idle`. Targets (issue 12):
//! ≤ 0.2 % of a core with 2 idle registered threads, ≤ 1 % with 2,000.

use spanrec_benches::cpu::{self, threads, BackgroundMeter};
use spanrec_benches::null_tracer;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(3);

fn idle(registered: usize, target_percent: f64) -> bool {
    let (tracer, recorder) = null_tracer();
    let registered_all = Arc::new(Barrier::new(registered + 1));
    let release = Arc::new(Barrier::new(registered + 1));
    let workers: Vec<_> = (0..registered)
        .map(|_| {
            let (tracer, registered_all, release) =
                (tracer.clone(), registered_all.clone(), release.clone());
            std::thread::Builder::new()
                .stack_size(64 * 1024)
                .spawn(move || {
                    tracer.start_span("warm-up").finish();
                    registered_all.wait();
                    release.wait();
                })
                .expect("spawn an idle thread")
        })
        .collect();
    registered_all.wait();
    tracer
        .flush(Instant::now() + Duration::from_secs(30))
        .expect("flush");
    let wakeups = tracer.stats().flusher_wakeups;
    let flusher = BackgroundMeter::start(threads::SPANREC);
    // Every thread but this one, which reads 2 × (threads + 1) /proc
    // files to measure (tens of ms with 2,000 threads): its reads are the
    // bench's cost, not the process's.
    let me = cpu::current_tid();
    let others = || -> u64 {
        cpu::threads_cpu()
            .iter()
            .filter(|(tid, _)| **tid != me)
            .map(|(_, (_, ns))| ns)
            .sum()
    };
    let before = others();
    let began = Instant::now();
    std::thread::sleep(WINDOW);
    let flusher_ns = flusher.stop();
    let after = others();
    let elapsed = began.elapsed().as_nanos() as f64;
    let wakeups = tracer.stats().flusher_wakeups - wakeups;
    release.wait();
    for w in workers {
        w.join().expect("idle thread");
    }
    let stats = tracer.stats();
    let percent = flusher_ns as f64 / elapsed * 100.0;
    let met = percent <= target_percent;
    println!(
        "idle/spanrec/{registered}_threads: flusher {percent:.3} % of a core \
         ({:.2} ms in {:.1} s, {wakeups} wakeups; target <= {target_percent} %: {}); \
         every other thread {:.3} % (the flusher and the idle ones; this \
         measuring thread left out); \
         spans finished {} received {}",
        flusher_ns as f64 / 1e6,
        elapsed / 1e9,
        if met { "met" } else { "MISSED" },
        after.saturating_sub(before) as f64 / elapsed * 100.0,
        stats.finished,
        recorder.received(),
    );
    let dir = cpu::target_dir().join("spanrec-cpu").join("idle");
    let _ = std::fs::create_dir_all(&dir).and_then(|()| {
        std::fs::write(
            dir.join(format!("spanrec_{registered}_threads.json")),
            format!("{{\"percent\": {percent:.4}, \"target\": {target_percent}, \"wakeups\": {wakeups}}}\n"),
        )
    });
    met
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    idle(2, 0.2);
    idle(2000, 1.0);
}
