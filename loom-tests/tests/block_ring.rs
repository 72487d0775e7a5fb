//! Models of the block queue (`engine/src/block_ring/`), with blocks of 2
//! slots under loom: hand-over across blocks while drained blocks circulate
//! through the spare list, the self-link under a spent budget, and the
//! flusher freeing spares while the producer takes them, values read in
//! place and released later (the flusher lends records to the recorder
//! where they lie). loom's `UnsafeCell` tracking fails a model on any slot
//! or link access that the protocol leaves unordered (the
//! `block_spare_relaxed` and `read_in_place_releases` mutants).
//!
//! Run: `bash ci/loom.sh` (sets `--cfg spanrec_loom`).
#![cfg(spanrec_loom)]

use loom::thread;
use spanrec::block_ring::{block_ring, Budget, Full, Producer, BLOCK};

mod common;
use common::model;

/// A value whose halves must match: a torn read would split them.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Pair(u64, u64);

fn push_spinning<T>(p: &mut Producer<T>, mut v: T) {
    loop {
        match p.push(v) {
            Ok(()) => return,
            Err(Full(back)) => {
                v = back;
                thread::yield_now();
            }
        }
    }
}

/// Capacity 4 (two blocks of 2), five values: the producer crosses three
/// block ends, taking blocks the consumer left through the spare list
/// (or new ones) while the consumer follows the links. Every value arrives
/// once, in order, untorn.
#[test]
fn values_cross_blocks_and_blocks_circulate() {
    assert_eq!(BLOCK, 2, "loom builds use blocks of 2");
    model("block_ring_cross", || {
        let budget = Budget::new(8);
        let (mut p, mut c) = block_ring::<Pair>(4, 2, budget);
        let producer = thread::spawn(move || {
            for i in 0..5 {
                push_spinning(&mut p, Pair(i, i));
            }
        });
        let mut next = 0;
        while next < 5 {
            match c.pop() {
                Some(Pair(a, b)) => {
                    assert_eq!(a, b, "torn read");
                    assert_eq!(a, next, "out of order or duplicated");
                    next += 1;
                }
                None => thread::yield_now(),
            }
        }
        producer.join().unwrap();
        assert_eq!(c.pop(), None);
    });
}

/// No block beyond the first (budget 0): the producer can go on only by
/// linking its block to itself once everything was read, and must not
/// rewrite that link before the consumer followed it.
#[test]
fn a_spent_budget_reuses_the_one_block() {
    model("block_ring_self_link", || {
        let budget = Budget::new(0);
        let (mut p, mut c) = block_ring::<u64>(4, 2, budget.clone());
        let producer = thread::spawn(move || {
            for i in 0..5 {
                push_spinning(&mut p, i);
            }
        });
        let mut next = 0;
        while next < 5 {
            match c.pop() {
                Some(v) => {
                    assert_eq!(v, next);
                    next += 1;
                }
                None => thread::yield_now(),
            }
        }
        producer.join().unwrap();
        assert_eq!(budget.blocks(), 1, "never more than the first block");
    });
}

/// The flusher frees the spare list (an idle ring) while the producer may
/// be taking it: exactly one of them gets each block; nothing is freed
/// twice or used after free; the values still arrive.
#[test]
fn releasing_spares_races_the_producer_safely() {
    model("block_ring_release_spare", || {
        let budget = Budget::new(8);
        let (mut p, mut c) = block_ring::<u64>(4, 2, budget.clone());
        // Fill and drain two blocks: the consumer's spare list holds the
        // first.
        for i in 0..3 {
            p.push(i).unwrap();
        }
        for i in 0..3 {
            assert_eq!(c.pop(), Some(i));
        }
        let producer = thread::spawn(move || {
            // Crosses the end of the second block: takes the spare list.
            for i in 3..6 {
                push_spinning(&mut p, i);
            }
            p
        });
        c.release_spare();
        let p = producer.join().unwrap();
        for i in 3..6 {
            assert_eq!(c.pop(), Some(i));
        }
        drop(p);
        drop(c);
        assert_eq!(budget.blocks(), 0, "every block freed exactly once");
    });
}

/// The consumer reads values in place and releases them later, keeping
/// the newest read back while it reads on, so that its released index lags
/// its read index across block ends (and, with a spent budget, across the
/// self-link the producer may take only once everything is released). The
/// producer must not write a slot read in place before its release: each
/// value is read again (a tracked access) just before it is released, and
/// must be whole and in order.
fn read_in_place_then_release(budget: usize) {
    let budget = Budget::new(budget);
    let (mut p, mut c) = block_ring::<Pair>(4, 2, budget);
    let producer = thread::spawn(move || {
        for i in 0..5 {
            push_spinning(&mut p, Pair(i, i));
        }
    });
    // Values released so far (the value at the released index) and read.
    let (mut released, mut read) = (0u64, 0u64);
    while released < 5 {
        let (first, n) = c.read_in_place(2);
        assert_eq!(first.is_null(), n == 0);
        read += n as u64;
        let held = read - released;
        for k in 0..held {
            let Pair(a, b) = c.read_value(k as usize);
            assert_eq!(a, b, "torn read");
            assert_eq!(a, released + k, "out of order, duplicated or overwritten");
        }
        // Keep the newest back while more arrive; release everything once
        // nothing new came.
        let keep = if n > 0 { 1 } else { 0 };
        let release = held.saturating_sub(keep);
        c.forget_read(release as usize);
        released += release;
        if n == 0 {
            thread::yield_now();
        }
    }
    producer.join().unwrap();
    assert_eq!(c.read_in_place(2).1, 0);
    assert_eq!(c.pop(), None);
}

#[test]
fn values_read_in_place_stay_until_released() {
    model("block_ring_read_in_place", || read_in_place_then_release(8));
}

#[test]
fn values_read_in_place_hold_a_spent_budget_back() {
    model("block_ring_read_in_place_self_link", || {
        read_in_place_then_release(0)
    });
}
