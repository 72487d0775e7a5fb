//! Room waits: how threads under the `Block` overflow policy sleep until
//! the flusher has drained their ring (or the tracer closes), instead of
//! polling.
//!
//! Each thread slot has one (`SlotState::room`): its thread, finding its
//! ring full, spins and yields briefly, then parks on the condition
//! variable with its deadline (`OverflowPolicy::Block`'s timeout); the
//! flusher, whenever it releases records of that ring (after the
//! recorder's call, or a spill; and `shutdown`, after setting `closed`),
//! notifies it — only when it waits:
//! one fence and one load per drained ring otherwise, no lock. One waiter
//! per `RoomWait`, so a notifier contends with at most that thread for
//! the lock, and never wakes threads whose rings it did not drain. (A
//! first version had one per tracer: with 2,000 threads blocked, each
//! drain woke them all, and the flusher queued behind them for the lock:
//! the 2,000-thread memory bench took 16–19 s instead of ~1 s.)
//!
//! Before this, a blocked thread slept 50 µs at a time and re-tried:
//! 20,000 wakes a second per blocked thread, CPU taken from the flusher
//! that makes the room (on a 2-core machine with 2,000 threads blocked,
//! a plausible cause of waits running into their timeout, counted as
//! `block_timeout`, seen once in CI's memory bench).
//!
//! The hand-off is Dekker's, as in `doorbell.rs`, with the lock closing
//! the window between a waiter's last attempt and its wait:
//!
//! ```text
//!   waiter (holds `lock`)                 flusher
//!   waiting += 1                          store ring.head (Release, a drain)
//!   fence(SeqCst)                         fence(SeqCst)
//!   try the push: load ring.head          load waiting: > 0?
//!   full? wait (releases `lock`)            lock, unlock, notify_all
//! ```
//!
//! If the waiter's fence comes first in the single total order of `SeqCst`
//! operations, the flusher's load sees the waiter counted; the waiter held
//! `lock` from before its count until its wait released it, so the
//! flusher's lock-unlock ends after the waiter is in the condition
//! variable's queue, and the notification reaches it. If the flusher's
//! fence comes first, every attempt the waiter makes after its own fence
//! sees the drain. Either way no waiter sleeps past a drain that made it
//! room. A waiter stays counted across its re-attempts, so one fence
//! covers them all. Modeled by `loom-tests/tests/room_wait.rs`, with two
//! mutants: the fences removed (`room_wait_no_fence`) and the flusher
//! notifying without the lock (`room_wait_no_lock`).
//!
//! Not hidden: this module is `pub` only so that `loom-tests` can drive it.

use crate::sync::{fence, AtomicUsize, Condvar, Mutex, Ordering};
use std::time::Instant;

/// The thread of one slot waiting for room in its ring (the type allows
/// several waiters; the engine has one per slot).
#[derive(Debug)]
pub struct RoomWait {
    /// Threads between their count under `lock` and the end of their wait.
    ///
    /// Invariant: a thread parked in `freed` is counted here (it counts
    /// itself, under `lock`, before its first attempt, and uncounts itself
    /// after its last).
    waiting: AtomicUsize,
    /// Held by a waiter from its count through each attempt until its
    /// wait releases it; taken and released by a notifier.
    lock: Mutex<()>,
    /// Notified after a drain or a close.
    freed: Condvar,
}

impl RoomWait {
    /// Nobody waiting.
    #[allow(clippy::new_without_default)] // built once per thread slot
    pub fn new() -> Self {
        Self {
            waiting: AtomicUsize::new(0),
            lock: Mutex::new(()),
            freed: Condvar::new(),
        }
    }

    /// Waiter side: calls `attempt` until it returns `Some` (room, or a
    /// closed tracer), sleeping between attempts until the flusher drains
    /// or `deadline` passes; `None` if `deadline` passed first. May block
    /// (the `Block` policy's wait).
    pub fn wait_until<R>(
        &self,
        deadline: Instant,
        mut attempt: impl FnMut() -> Option<R>,
    ) -> Option<R> {
        let mut guard = self.lock.lock();
        // ORDERING: Relaxed, ordered before the attempts' loads by the
        // SeqCst fence below, which pairs with the fence in `notify` (an
        // RMW, so concurrent waiters' counts never overwrite each other).
        self.waiting.fetch_add(1, Ordering::Relaxed);
        #[cfg(not(spanrec_loom_mutant = "room_wait_no_fence"))]
        fence(Ordering::SeqCst);
        let outcome = loop {
            if let Some(done) = attempt() {
                break Some(done);
            }
            if Instant::now() >= deadline {
                break None;
            }
            // Releases `lock` once queued; spurious wake-ups re-attempt.
            self.freed.wait_until(&mut guard, deadline);
        };
        // ORDERING: Relaxed: a stale count only makes a notifier lock and
        // notify for nobody.
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        drop(guard);
        outcome
    }

    /// Notifier side (the flusher after a drain, `shutdown` after setting
    /// `closed`): wakes the waiters, if any. The caller's stores that make
    /// room (or close) come before this call.
    pub fn notify(&self) {
        // ORDERING: SeqCst fence between the caller's stores (the drain's
        // Release store of `head`, or `closed`) and the load below; pairs
        // with the fence in `wait_until` (Dekker: one side sees the other).
        #[cfg(not(spanrec_loom_mutant = "room_wait_no_fence"))]
        fence(Ordering::SeqCst);
        // ORDERING: Relaxed, ordered by the fence.
        if self.waiting.load(Ordering::Relaxed) == 0 {
            return;
        }
        // A waiter counted itself under the lock and holds it until it is
        // queued in `freed`: once we have had the lock, it is queued (or
        // done).
        #[cfg(not(spanrec_loom_mutant = "room_wait_no_lock"))]
        drop(self.lock.lock());
        self.freed.notify_all();
    }
}
