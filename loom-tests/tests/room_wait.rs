//! Models of the room wait (`engine/src/room_wait.rs`): threads under the
//! `Block` policy park until the flusher drains their ring (or the tracer
//! closes). The property is the absence of lost wake-ups: under loom a wait
//! has no timeout, so a notification the protocol loses leaves the waiter
//! parked forever while the flusher waits for its values, which loom
//! reports as a deadlock or as "exceeded maximum number of branches".
//!
//! Run: `bash ci/loom.sh` (sets `--cfg spanrec_loom`).
#![cfg(spanrec_loom)]

use loom::sync::atomic::{AtomicBool, Ordering};
use loom::sync::Arc;
use loom::thread;
use spanrec::block_ring::{block_ring, Budget};
use spanrec::room_wait::RoomWait;
use std::time::{Duration, Instant};

mod common;
use common::model;

/// Far enough never to pass (loom has no clock: a wait never times out).
fn never() -> Instant {
    Instant::now() + Duration::from_secs(3600)
}

/// A producer pushes three values into a ring of 2, waiting for room
/// through `RoomWait` whenever it is full, as `ThreadSlot::push_blocking`
/// does; the flusher drains and notifies after each drain that moved
/// something, as the flusher's pass does. Whatever the interleaving, every
/// value arrives, in order, and nobody is left parked.
#[test]
fn a_drain_wakes_a_thread_waiting_for_room() {
    model("room_wait_drain", || {
        const N: u32 = 3;
        let room = Arc::new(RoomWait::new());
        let (mut tx, mut rx) = block_ring::<u32>(2, 1, Budget::new(8));
        let flusher = {
            let room = room.clone();
            thread::spawn(move || {
                let mut got = Vec::new();
                while got.len() < N as usize {
                    let before = got.len();
                    while let Some(v) = rx.pop() {
                        got.push(v);
                    }
                    if got.len() > before {
                        room.notify();
                    } else {
                        thread::yield_now();
                    }
                }
                got
            })
        };
        for v in 0..N {
            let mut value = Some(v);
            if !tx.push_from(&mut value, || {}) {
                let sent =
                    room.wait_until(never(), || tx.push_from(&mut value, || {}).then_some(()));
                assert_eq!(sent, Some(()), "no timeout under loom");
            }
        }
        assert_eq!(flusher.join().unwrap(), vec![0, 1, 2]);
    });
}

/// A thread waits for room in a full ring nobody drains; another closes
/// the tracer (its `closed` flag, read by the waiter's attempts as
/// `SlotSender::send_from` reads it) and notifies, as `Shared::shutdown`
/// does. The waiter always sees the close.
#[test]
fn a_close_wakes_a_thread_waiting_for_room() {
    model("room_wait_close", || {
        let room = Arc::new(RoomWait::new());
        let closed = Arc::new(AtomicBool::new(false));
        let (mut tx, _rx) = block_ring::<u32>(2, 1, Budget::new(8));
        for v in 0..2 {
            assert!(tx.push_from(&mut Some(v), || {}));
        }
        let closer = {
            let (room, closed) = (room.clone(), closed.clone());
            thread::spawn(move || {
                // ORDERING: as `Shared::shutdown`: the flag is read
                // Relaxed; `notify`'s fence orders it before the count.
                closed.store(true, Ordering::Release);
                room.notify();
            })
        };
        let mut value = Some(2);
        let outcome = room.wait_until(never(), || {
            // ORDERING: Relaxed, as in `SlotSender::send_from`; ordered
            // after the count by `wait_until`'s fence.
            if closed.load(Ordering::Relaxed) {
                return Some(false);
            }
            tx.push_from(&mut value, || {}).then_some(true)
        });
        assert_eq!(
            outcome,
            Some(false),
            "the ring stays full: only the close ends the wait"
        );
        closer.join().unwrap();
    });
}
