//! `fork()` while other threads hold spanrec's locks: a child is a copy of
//! the forking thread only, so a lock another thread held at that instant
//! would stay held there forever. The child must still be able to read an
//! inherited tracer's `stats`, record on a new thread (which registers a
//! slot), and build and use a tracer of its own. In the parent, threads
//! keep recording and reading stats, and seven flushers run a pass every
//! millisecond, while the main thread forks; a child that stalls fails the
//! test. One test in its own binary (the harness runs no other test thread
//! beside it).
#![cfg(target_os = "linux")]

use spanrec::{InMemoryRecorder, NullRecorder, Tracer};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

extern "C" {
    fn fork() -> i32;
    fn waitpid(pid: i32, status: *mut i32, options: i32) -> i32;
    fn kill(pid: i32, signal: i32) -> i32;
    fn _exit(code: i32) -> !;
}

const WNOHANG: i32 = 1;
const SIGKILL: i32 = 9;
const FORKS: usize = 150;

/// What the child does; its exit code says what failed.
fn child(t: &Tracer) -> i32 {
    let s = t.stats();
    if s.finished < s.recorded {
        return 3;
    }
    let t2 = t.clone();
    let recorded_on_new_thread = std::thread::spawn(move || {
        let mut span = t2.start_span("child.thread");
        span.set_tag("k", "v".to_string());
        span.finish();
    })
    .join()
    .is_ok();
    if !recorded_on_new_thread {
        return 4;
    }
    let rec = InMemoryRecorder::new();
    let own = match Tracer::builder().recorder(rec.clone()).build() {
        Ok(own) => own,
        Err(_) => return 5,
    };
    own.start_span("child.own").finish();
    if own.flush(Instant::now() + Duration::from_secs(10)).is_err() || rec.spans().len() != 1 {
        return 6;
    }
    let _ = t.stats();
    0
}

#[test]
fn a_child_forked_while_other_threads_hold_locks_does_not_stall() {
    let t = Tracer::builder()
        .recorder(NullRecorder::new())
        .flush_interval(Duration::from_millis(1))
        .build()
        .unwrap();
    // Tracers whose flushers take their locks every millisecond.
    let tracers: Vec<Tracer> = (0..6)
        .map(|_| {
            Tracer::builder()
                .recorder(NullRecorder::new())
                .flush_interval(Duration::from_millis(1))
                .build()
                .unwrap()
        })
        .collect();
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        // Threads that record, read stats and the last error, in a loop.
        // They start no thread (and so build no tracer) once the forks
        // begin: `std` itself takes a process-wide lock in every new
        // thread, which a child that starts a thread could find held, and
        // which no hook of ours can take.
        for _ in 0..2 {
            scope.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    for t in tracers.iter().chain([&t]) {
                        t.start_span("busy").finish();
                        let _ = t.stats();
                        let _ = t.last_recorder_error();
                    }
                }
            });
        }
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            for i in 0..FORKS {
                // SAFETY: `fork` has no preconditions. The child runs only
                // spanrec calls whose locks the at-fork hook hands over
                // unlocked (what this test checks) and the allocator
                // (glibc's is fork-safe); it leaves through `_exit`.
                let pid = unsafe { fork() };
                assert!(pid >= 0, "fork failed");
                if pid == 0 {
                    let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| child(&t)))
                        .unwrap_or(2);
                    // SAFETY: ends the child without running the parent's
                    // exit handlers or the test harness.
                    unsafe { _exit(code) };
                }
                let deadline = Instant::now() + Duration::from_secs(20);
                let mut status = 0;
                loop {
                    // SAFETY: `pid` is our child; `status` is a valid pointer.
                    let waited = unsafe { waitpid(pid, &mut status, WNOHANG) };
                    if waited == pid {
                        break;
                    }
                    assert_eq!(waited, 0, "waitpid failed");
                    if Instant::now() > deadline {
                        // SAFETY: `pid` is our child, not yet reaped.
                        unsafe { kill(pid, SIGKILL) };
                        // SAFETY: as above.
                        unsafe { waitpid(pid, &mut status, 0) };
                        panic!("child {i} stalled for 20 s");
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                assert_eq!(status, 0, "child {i} failed (wait status {status:#x})");
            }
        }));
        stop.store(true, Ordering::Relaxed);
        if let Err(panic) = result {
            std::panic::resume_unwind(panic);
        }
    });
    t.flush(Instant::now() + Duration::from_secs(10)).unwrap();
    let s = t.stats();
    assert_eq!(s.recorded + s.dropped.total(), s.finished);
}
