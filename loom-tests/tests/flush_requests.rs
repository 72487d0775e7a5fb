//! Model of the flush-ticket protocol (`engine/src/flush_requests.rs`) end to end
//! with the real ring: a span finished before `flush()` began is delivered
//! before that `flush()` returns, also when another caller's flush is being
//! served at the same time; `shutdown` ends the flusher after a final drain.
//!
//! The flusher thread here does what `engine/src/flusher.rs` does each
//! pass, in the same order: read the requests, drain, complete the ticket it
//! read (or, on shutdown, drain and exit).
//!
//! Run: `RUSTFLAGS="--cfg spanrec_loom" cargo test -p spanrec-loom-tests --release --test flush`.
#![cfg(spanrec_loom)]

use loom::sync::{Arc, Mutex};
use loom::thread;
use spanrec::block_ring::{block_ring, Budget, Consumer};
use spanrec::flush_requests::FlushControl;

mod common;
use common::model;

/// The flusher's loop, reduced to the flush protocol.
fn flusher(control: &FlushControl, mut ring: Consumer<u32>, delivered: &Mutex<Vec<u32>>) {
    let mut done = 0;
    loop {
        let (wanted, shutdown) = control.requests();
        while let Some(span) = ring.pop() {
            delivered.lock().unwrap().push(span);
        }
        if shutdown {
            control.exited();
            return;
        }
        if wanted > done {
            control.complete(wanted);
            done = wanted;
        }
        thread::yield_now();
    }
}

/// Caller A flushes (nothing of its own); caller B finishes a span and then
/// flushes. Whatever the interleaving, B's flush returns only after B's
/// span was delivered — even when the flusher is completing A's ticket
/// from a pass that began before B's span existed.
#[test]
fn spans_finished_before_flush_are_delivered_first() {
    model("flush_tickets", || {
        let control = Arc::new(FlushControl::new());
        let delivered = Arc::new(Mutex::new(Vec::new()));
        let (mut producer, consumer) = block_ring::<u32>(2, 1, Budget::new(8));

        let f = {
            let (control, delivered) = (control.clone(), delivered.clone());
            thread::spawn(move || flusher(&control, consumer, &delivered))
        };
        let a = {
            let control = control.clone();
            thread::spawn(move || {
                let ticket = control.request_flush().expect("flusher running");
                control.wait(ticket, None).expect("served");
            })
        };

        // Caller B: finish a span, then flush.
        producer.push(7).expect("room in the ring");
        let ticket = control.request_flush().expect("flusher running");
        control.wait(ticket, None).expect("served");
        assert_eq!(
            *delivered.lock().unwrap(),
            vec![7],
            "flush returned before a span finished earlier was delivered"
        );

        a.join().unwrap();
        control.request_shutdown();
        control.wait_exited(None).expect("flusher exits");
        f.join().unwrap();
        // After the exit, flushing is refused rather than waiting forever.
        assert!(control.request_flush().is_err());
    });
}
