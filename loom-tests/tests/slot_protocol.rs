//! Models of the slot protocol (`engine/src/slot_protocol.rs`), the hand-off between
//! a span-finishing thread and the flusher: buffer recycling, exiting
//! threads, overflow accounting, and close (shutdown) accounting.
//!
//! Run: `bash ci/loom.sh` (sets `--cfg spanrec_loom`).
#![cfg(spanrec_loom)]

use loom::alloc::Track;
use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicBool, Ordering};
use loom::sync::Arc;
use loom::thread;
use spanrec::block_ring::Budget;
use spanrec::slot_protocol::{slot, Refused, SlotReceiver};

mod common;
use common::model;

fn open() -> Arc<AtomicBool> {
    Arc::new(AtomicBool::new(false))
}

/// A span buffer: data written by its owner, read by the flusher. loom's
/// `UnsafeCell` fails the model on any access the protocol does not order;
/// `Track` fails it on a buffer that is never freed.
struct Buffer {
    data: UnsafeCell<u64>,
}

type Tracked = Track<Box<Buffer>>;

fn write(b: &Tracked, v: u64) {
    // SAFETY: loom checks that no other thread accesses the cell meanwhile.
    b.get_ref().data.with_mut(|p| unsafe { *p = v });
}

fn read(b: &Tracked) -> u64 {
    // SAFETY: as in `write`.
    b.get_ref().data.with(|p| unsafe { *p })
}

fn drain_all<T>(rx: &mut SlotReceiver<T>) -> (Vec<T>, bool) {
    let mut out = Vec::new();
    let d = rx.drain(usize::MAX, |v| out.push(v));
    (out, d.for_good)
}

/// Model 2: a buffer goes to the flusher, comes back recycled and is
/// written again: never written by its owner while the flusher reads it,
/// never read stale, never leaked.
#[test]
fn buffers_round_trip_without_races_or_leaks() {
    model("buffers_round_trip", || {
        let (mut tx, mut rx) = slot::<Tracked, Tracked>(2, 1, 2, Budget::new(8), open());
        let owner = thread::spawn(move || {
            let b = Track::new(Box::new(Buffer {
                data: UnsafeCell::new(0),
            }));
            write(&b, 1);
            assert!(tx.send(b).is_ok());
            let again = loop {
                match tx.recycled() {
                    Some(b) => break b,
                    None => thread::yield_now(),
                }
            };
            write(&again, 2);
            assert!(tx.send(again).is_ok());
            tx
        });
        let mut seen = Vec::new();
        while seen.len() < 2 {
            let (got, _) = drain_all(&mut rx);
            for b in got {
                seen.push(read(&b));
                if seen.len() == 1 {
                    assert!(rx.give_back(b).is_ok());
                }
            }
            thread::yield_now();
        }
        assert_eq!(seen, vec![1, 2], "stale or torn read");
        drop(owner.join().unwrap());
    });
}

/// Model 3: a thread finishes spans and exits (or goes idle). The flusher
/// collects every span exactly once, and a drain that reports `for_good`
/// has collected all of them: nothing stranded, nothing twice.
#[test]
fn exiting_thread_strands_nothing() {
    model("exiting_thread", || {
        let (mut tx, mut rx) = slot::<u64, u64>(4, 2, 4, Budget::new(8), open());
        let worker = thread::spawn(move || {
            assert!(tx.send(1).is_ok());
            assert!(tx.send(2).is_ok());
            // Thread exit: the sender drops here.
        });
        let mut seen = Vec::new();
        loop {
            let (got, for_good) = drain_all(&mut rx);
            seen.extend(got);
            if for_good {
                break;
            }
            thread::yield_now();
        }
        assert_eq!(
            seen,
            vec![1, 2],
            "a drain after the exit flag must find every span"
        );
        let (late, _) = drain_all(&mut rx);
        assert!(late.is_empty(), "nothing after for_good");
        worker.join().unwrap();
    });
}

/// Model 5: with a ring of one, a thread finishes three spans under
/// `DropNewest` while the flusher drains: `recorded + dropped == finished`
/// in every interleaving.
#[test]
fn overflow_accounting_is_exact() {
    model("overflow_accounting", || {
        let (mut tx, mut rx) = slot::<u64, u64>(1, 1, 1, Budget::new(8), open());
        let worker = thread::spawn(move || {
            let mut dropped = 0;
            for span in 0..3 {
                match tx.send(span) {
                    Ok(()) => {}
                    Err(Refused::Full(_)) => dropped += 1,
                    Err(Refused::Closed(_)) => unreachable!("not closed"),
                }
            }
            dropped
        });
        let (first, _) = drain_all(&mut rx);
        let dropped = worker.join().unwrap();
        let mut recorded = first.len();
        loop {
            let (more, for_good) = drain_all(&mut rx);
            recorded += more.len();
            if for_good {
                break;
            }
        }
        assert_eq!(recorded + dropped, 3);
    });
}

/// Model 4: shutdown. The flusher closes the tracer and does its final
/// drain while a thread finishes a span; later, `stats` drains the closed
/// slot once more. Every span is recorded (final drain), refused as
/// `Closed`, or found by the `stats` drain — never lost silently.
#[test]
fn finish_during_shutdown_is_recorded_or_counted() {
    model("finish_during_shutdown", || {
        let closed = open();
        let (mut tx, mut rx) = slot::<u64, u64>(2, 1, 2, Budget::new(8), closed.clone());
        let worker = thread::spawn(move || {
            let refused = match tx.send(7) {
                Ok(()) => 0,
                Err(Refused::Closed(_)) => 1,
                Err(Refused::Full(_)) => unreachable!("room for one"),
            };
            (refused, tx)
        });
        // Shutdown: close, then the final drain.
        closed.store(true, Ordering::Release);
        let (recorded, _) = drain_all(&mut rx);
        let (refused, tx) = worker.join().unwrap();
        drop(tx);
        // `Tracer::stats` after shutdown: what raced past the flag.
        let (late, _) = drain_all(&mut rx);
        assert_eq!(recorded.len() + refused + late.len(), 1);
    });
}
