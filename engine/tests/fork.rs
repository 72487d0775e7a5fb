//! A real `fork()` (issue 13): the child must not repeat its parent's ids,
//! and a tracer inherited through the fork says so instead of waiting for a
//! flusher that exists only in the parent (`flush`, `shutdown`, a full ring
//! under the `Block` policy). One test in its own binary: the
//! process forks while only the test thread and the flusher run.
#![cfg(target_os = "linux")]

use spanrec::{FlushError, InMemoryRecorder, OverflowPolicy, Tracer};
use std::collections::HashSet;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

extern "C" {
    fn fork() -> i32;
    fn waitpid(pid: i32, status: *mut i32, options: i32) -> i32;
    fn _exit(code: i32) -> !;
    fn kill(pid: i32, signal: i32) -> i32;
}

const WNOHANG: i32 = 1;
const SIGKILL: i32 = 9;

const IDS: usize = 1_000;
/// Spans the child finishes into a full ring: more than its first block.
const BLOCKED: u64 = 2_000;

fn ids(t: &Tracer) -> Vec<u64> {
    (0..IDS)
        .map(|_| {
            let s = t.start_span("id");
            let c = s.context();
            s.finish();
            c.span_id ^ (c.trace_id as u64) ^ ((c.trace_id >> 64) as u64)
        })
        .collect()
}

#[test]
fn a_forked_child_reseeds_its_ids_and_its_inherited_tracer_says_so() {
    let rec = InMemoryRecorder::new();
    let t = Tracer::builder().recorder(rec.clone()).build().unwrap();
    // The thread's generator is seeded before the fork.
    t.start_span("before").finish();
    // A tracer with the `Block` policy and a tiny ring, which the child
    // fills: nothing drains it there, so waiting would only stall.
    let blocking = Tracer::builder()
        .recorder(InMemoryRecorder::new())
        .ring_capacity(4)
        // Asleep from the flush below until the fork: the child's `stats`
        // takes a lock that flusher takes while it runs.
        .flush_interval(Duration::from_secs(60))
        .overflow(OverflowPolicy::Block {
            timeout: Duration::from_secs(10),
        })
        .build()
        .unwrap();
    blocking.start_span("before").finish();
    blocking
        .flush(Instant::now() + Duration::from_secs(10))
        .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let path = std::env::temp_dir().join(format!("spanrec-fork-{}.txt", std::process::id()));
    // SAFETY: `fork` has no preconditions; the child only runs code that is
    // fine after a fork of this process (no other thread of ours holds a
    // lock the child takes: the flusher sleeps, glibc's malloc is
    // fork-safe) and leaves through `_exit`.
    let pid = unsafe { fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mine = ids(&t);
            let flushed = t.flush(Instant::now() + Duration::from_secs(5));
            let began = Instant::now();
            let shut = t.shutdown(Instant::now() + Duration::from_secs(5));
            let quick = began.elapsed() < Duration::from_secs(1);
            let began = Instant::now();
            for _ in 0..BLOCKED {
                blocking.start_span("full").finish();
            }
            let quick = quick && began.elapsed() < Duration::from_secs(5);
            let s = blocking.stats();
            // What the ring could not take was dropped, counted, at once.
            let dropped = s.dropped.block_timeout;
            let quick = quick && dropped >= BLOCKED - 1024 && s.finished == 1 + BLOCKED;
            let mut f = std::fs::File::create(&path).unwrap();
            for id in &mine {
                writeln!(f, "{id}").unwrap();
            }
            writeln!(f, "flush {flushed:?} shutdown {shut:?} quick {quick}").unwrap();
            f.sync_all().unwrap();
        }))
        .map_or(2, |()| 0);
        // SAFETY: ends the child without running the parent's exit
        // handlers or the test harness.
        unsafe { _exit(code) };
    }
    let parent_ids = ids(&t);
    let mut status = 0;
    // A child that stalls fails the test instead of hanging it.
    let deadline = Instant::now() + Duration::from_secs(60);
    let waited = loop {
        // SAFETY: `pid` is our child; `status` is a valid pointer.
        let waited = unsafe { waitpid(pid, &mut status, WNOHANG) };
        if waited != 0 {
            break waited;
        }
        if Instant::now() > deadline {
            // SAFETY: `pid` is our child, not yet reaped.
            unsafe { kill(pid, SIGKILL) };
            panic!("the child stalled for 60 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(waited, pid);
    assert_eq!(status, 0, "the child failed (wait status {status})");
    let mut text = String::new();
    std::fs::File::open(&path)
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    let _ = std::fs::remove_file(&path);
    let mut lines: Vec<&str> = text.lines().collect();
    let last = lines.pop().unwrap();
    assert_eq!(
        last,
        format!(
            "flush {:?} shutdown {:?} quick true",
            Err::<(), _>(FlushError::ForkedChild),
            Err::<(), _>(FlushError::ForkedChild)
        )
    );
    let child_ids: HashSet<u64> = lines.iter().map(|l| l.parse().unwrap()).collect();
    assert_eq!(child_ids.len(), IDS);
    let shared = parent_ids
        .iter()
        .filter(|id| child_ids.contains(id))
        .count();
    assert_eq!(shared, 0, "the child repeated {shared} of its parent's ids");
    // The parent's tracer is untouched by the child.
    t.flush(Instant::now() + Duration::from_secs(10)).unwrap();
    let s = t.stats();
    assert_eq!(s.recorded, 1 + IDS as u64, "{s:?}");
}
