//! Models of the SPSC queue's indices (`engine/src/block_ring/`, Lamport's
//! queue with cached indices): hand-over, wrap-around, full and empty
//! boundaries, drop of unpopped values, two producers. The block chain
//! itself has its own models in `block_ring.rs`.
//!
//! Run: `RUSTFLAGS="--cfg spanrec_loom" cargo test -p spanrec-loom-tests --release`.
#![cfg(spanrec_loom)]

use loom::sync::Arc;
use loom::thread;
use spanrec::block_ring::{block_ring, Budget, Full, Producer};

mod common;
use common::model;

/// A value whose halves must match: a torn read would split them. (loom's
/// `UnsafeCell` tracking also fails the model on any unsynchronized access.)
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

/// Capacity 2, three values: the producer wraps around and meets the full
/// boundary; the consumer meets the empty boundary. Every value arrives
/// exactly once, in order, untorn.
#[test]
fn hand_over_wraps_around_full_and_empty() {
    model("ring_hand_over", || {
        let (mut p, mut c) = block_ring::<Pair>(2, 1, Budget::new(8));
        let producer = thread::spawn(move || {
            for i in 0..3 {
                push_spinning(&mut p, Pair(i, i));
            }
        });
        let mut next = 0;
        while next < 3 {
            match c.pop() {
                Some(Pair(a, b)) => {
                    assert_eq!(a, b, "torn read");
                    assert_eq!(a, next, "out of order or duplicated");
                    next += 1;
                }
                None => thread::yield_now(),
            }
        }
        assert_eq!(c.pop(), None);
        producer.join().unwrap();
    });
}

/// A full ring refuses a push and hands the value back, whatever the
/// consumer is doing; after the consumer has popped, the push succeeds.
#[test]
fn full_push_hands_the_value_back() {
    model("ring_full_push", || {
        let (mut p, mut c) = block_ring::<u64>(1, 1, Budget::new(8));
        p.push(1).unwrap();
        let consumer = thread::spawn(move || {
            let got = c.pop();
            (got, c)
        });
        match p.push(2) {
            Ok(()) => {
                // Only possible after the consumer took 1.
                let (got, mut c) = consumer.join().unwrap();
                assert_eq!(got, Some(1));
                assert_eq!(c.pop(), Some(2));
            }
            Err(Full(v)) => {
                assert_eq!(v, 2);
                let (got, mut c) = consumer.join().unwrap();
                assert_eq!(got, Some(1));
                assert_eq!(c.pop(), None);
            }
        }
    });
}

/// Values left in the ring when both handles are gone are dropped exactly
/// once (loom fails the model on a leaked `loom::sync::Arc`).
#[test]
fn unpopped_values_are_dropped_not_leaked() {
    model("ring_drop", || {
        let (mut p, mut c) = block_ring::<Arc<u64>>(2, 1, Budget::new(8));
        let producer = thread::spawn(move || {
            p.push(Arc::new(1)).unwrap();
            let _ = p.push(Arc::new(2));
        });
        let first = c.pop();
        producer.join().unwrap();
        if let Some(v) = first {
            assert_eq!(*v, 1);
        }
        drop(c);
    });
}

/// Model 1 with two producers: each thread has its own ring (as each
/// span-finishing thread has its slot) and the one consumer polls both.
/// Every record is popped exactly once, in per-producer order.
#[test]
fn two_producers_one_consumer() {
    model("ring_two_producers", || {
        let (mut p1, mut c1) = block_ring::<u64>(1, 1, Budget::new(8));
        let (mut p2, mut c2) = block_ring::<u64>(1, 1, Budget::new(8));
        let t1 = thread::spawn(move || {
            push_spinning(&mut p1, 10);
            push_spinning(&mut p1, 11);
        });
        let t2 = thread::spawn(move || push_spinning(&mut p2, 20));
        let (mut from1, mut from2) = (Vec::new(), Vec::new());
        while from1.len() < 2 || from2.is_empty() {
            let mut progressed = false;
            if let Some(v) = c1.pop() {
                from1.push(v);
                progressed = true;
            }
            if let Some(v) = c2.pop() {
                from2.push(v);
                progressed = true;
            }
            if !progressed {
                thread::yield_now();
            }
        }
        assert_eq!(from1, vec![10, 11]);
        assert_eq!(from2, vec![20]);
        t1.join().unwrap();
        t2.join().unwrap();
    });
}
