//! Models of the doorbell (`engine/src/doorbell.rs`): the hand-off between
//! a span-finishing thread whose ring fills up and a flusher going to
//! sleep. The property is the absence of lost wake-ups: the flusher here
//! parks *without* a timeout, so a wake-up the protocol loses leaves it
//! parked forever, which loom reports as a deadlock, or (when it strikes
//! while the ring is full) leaves the producer waiting for room forever,
//! which loom reports as "exceeded maximum number of branches". (The real flusher's
//! park is bounded by its deadline, so a lost wake-up would only delay
//! spans; the model makes it fatal so that it cannot hide.)
//!
//! Run: `bash ci/loom.sh` (sets `--cfg spanrec_loom`).
#![cfg(spanrec_loom)]

use loom::sync::atomic::{AtomicBool, Ordering};
use loom::sync::Arc;
use loom::thread;
use spanrec::block_ring::{block_ring, Budget, Consumer};
use spanrec::doorbell::Doorbell;

mod common;
use common::model;

/// The flusher's loop reduced to the sleep protocol: drain, stop once the
/// producer is done and everything arrived, else sleep through
/// `Doorbell::sleep` (re-check: a ring at least half full, or the
/// producer's `done` flag).
fn flusher(bell: &Doorbell, mut rx: Consumer<u32>, done: &AtomicBool, expected: u32) -> Vec<u32> {
    let mut got = Vec::new();
    loop {
        while let Some(v) = rx.pop() {
            got.push(v);
        }
        // ORDERING: Acquire pairs with the producer's Release store of
        // `done`, after its last push.
        if done.load(Ordering::Acquire) && got.len() as u32 == expected {
            // The producer's last push happened before `done`: drained.
            if rx.pop().is_none() {
                return got;
            }
        }
        bell.sleep(
            || rx.wake_due() || done.load(Ordering::Acquire),
            thread::park,
        );
    }
}

/// A producer pushes 0, 1, 2 into a ring built with `capacity`, `wake_at`
/// and `budget` while the flusher drains and sleeps; the producer rings
/// whenever `push_from` says so (as `ThreadSlot::send_sampled` does: a ring
/// found at `wake_at`, or a refusal), yields while the ring is full, and
/// finally signals `done` through the same doorbell. Whatever the
/// interleaving, every value arrives in order and the flusher is never left
/// parked.
fn produce_and_drain(capacity: usize, wake_at: usize, budget: usize) {
    const N: u32 = 3;
    let bell = Arc::new(Doorbell::new());
    let done = Arc::new(AtomicBool::new(false));
    let (mut tx, rx) = block_ring::<u32>(capacity, wake_at, Budget::new(budget));
    let f = {
        let (bell, done) = (bell.clone(), done.clone());
        thread::spawn(move || flusher(&bell, rx, &done, N))
    };
    let flusher_thread = f.thread().clone();
    for v in 0..N {
        let mut value = Some(v);
        while !tx.push_from(&mut value, || {
            if bell.ring() {
                flusher_thread.unpark();
            }
        }) {
            thread::yield_now();
        }
    }
    // ORDERING: Release pairs with the flusher's Acquire loads.
    done.store(true, Ordering::Release);
    if bell.ring() {
        flusher_thread.unpark();
    }
    assert_eq!(f.join().unwrap(), vec![0, 1, 2]);
}

/// A ring of 2 with `wake_at` 1: every push that finds the other value
/// still there finds it at its threshold and rings.
#[test]
fn a_ring_past_half_wakes_a_sleeping_flusher() {
    model("doorbell_wakes", || produce_and_drain(2, 1, 8));
}

/// A ring the memory budget holds below its threshold: one block of 2
/// under a `wake_at` of 4 (the budget grants no second block), so the third
/// push finds it full at a fill of 2. That refusal rings, as a `DropNewest`
/// drop or a `Block` wait does, and the flusher's re-check must see it
/// (`refused_at`): a flusher that parks on a ring "not yet at `wake_at`"
/// leaves the producer waiting for room forever (the
/// `doorbell_no_refused_recheck` mutant).
#[test]
fn a_ring_full_below_its_threshold_wakes_a_sleeping_flusher() {
    model("doorbell_full_below_threshold", || {
        produce_and_drain(8, 4, 0)
    });
}

/// `push_from` calls `wake` once per drain: a producer that keeps
/// pushing into a ring the consumer does not drain rings once, not per
/// push.
#[test]
fn wake_is_reported_once_per_drain() {
    model("doorbell_once_per_drain", || {
        let (mut tx, mut rx) = block_ring::<u32>(4, 2, Budget::new(8));
        let push = |tx: &mut spanrec::block_ring::Producer<u32>, v| {
            let mut rang = 0;
            assert!(tx.push_from(&mut Some(v), || rang += 1));
            rang
        };
        let reports: u32 = (0..4).map(|v| push(&mut tx, v)).sum();
        assert_eq!(reports, 1, "pushes 3 and 4 find 2 and 3 of 4: one report");
        let t = thread::spawn(move || {
            let mut got = Vec::new();
            while got.len() < 2 {
                if let Some(v) = rx.pop() {
                    got.push(v);
                } else {
                    thread::yield_now();
                }
            }
            got
        });
        assert_eq!(t.join().unwrap(), vec![0, 1]);
        // Two drained: head moved, two left (half); the next push finds
        // the ring half full under a new head: one new report.
        let again: u32 = (4..6).map(|v| push(&mut tx, v)).sum();
        assert_eq!(again, 1);
    });
}
