//! The slot protocol: how one thread hands finished spans to the flusher and
//! gets the emptied buffers back, and how it leaves.
//!
//! ```text
//!   SlotSender (the thread)                 SlotReceiver (the flusher)
//!   spans:   Producer ── block_ring ─────▶ Consumer
//!   returns: Consumer ◀─ block_ring ────── Producer
//!   drop ──▶ flags.exited = true (Release)  drain: load exited (Acquire) first
//! ```
//!
//! Generic over the values (`T` one way, `R` the other) so the loom models
//! in `loom-tests` run exactly this code. The invariants it keeps:
//! - **nothing stranded**: a `drain` that saw `exited == true` *before* it
//!   started empties the ring for good (the exiting thread's pushes all
//!   happen-before its Release store);
//! - **nothing after close**: `send` refuses values once the tracer is
//!   closed, handing them back for the caller to count; a value that raced
//!   past the check is found by a later drain ([`SlotReceiver::drain`] works
//!   after shutdown too), so every value is either drained or refused.

use crate::block_ring::{block_ring, Budget, Consumer, Full, Producer};
use crate::sync::{Arc, AtomicBool, Ordering};

/// Flags shared by the two halves.
#[derive(Debug, Default)]
struct Flags {
    /// Set once, by the sender's drop, after its last send.
    ///
    /// Invariant: once the receiver reads `true`, no further send happens.
    exited: AtomicBool,
}

/// Why [`SlotSender::send`] handed a value back.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused<T> {
    /// The ring to the receiver is full.
    Full(T),
    /// The tracer is closed.
    Closed(T),
}

/// The thread's half. `Send`, used through `&mut self`.
pub struct SlotSender<T, R = T> {
    spans: Producer<T>,
    returns: Consumer<R>,
    flags: Arc<Flags>,
    /// The tracer's "closed" flag, shared by all its slots.
    closed: Arc<AtomicBool>,
}

/// The flusher's half.
pub struct SlotReceiver<T, R = T> {
    spans: Consumer<T>,
    returns: Producer<R>,
    flags: Arc<Flags>,
}

/// What one [`SlotReceiver::drain`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    /// Values handed to the callback.
    pub moved: usize,
    /// The sender had exited before the drain began, so the ring is now
    /// empty for good and the slot can be retired.
    pub for_good: bool,
}

/// A slot whose queues hold `capacity` and `returns_capacity` values (the
/// first's blocks beyond its first within `budget`; the returns', small,
/// are bounded by their capacity only), whose sender refuses values once
/// `closed` is set, and calls its `wake` from `wake_at` values on.
pub fn slot<T, R>(
    capacity: usize,
    wake_at: usize,
    returns_capacity: usize,
    budget: Arc<Budget>,
    closed: Arc<AtomicBool>,
) -> (SlotSender<T, R>, SlotReceiver<T, R>) {
    let (spans_tx, spans_rx) = block_ring(capacity, wake_at, budget);
    // Nobody waits on the returns queue: its wake threshold is unused.
    let (returns_tx, returns_rx) = block_ring(
        returns_capacity,
        returns_capacity,
        Budget::new(usize::MAX / 2),
    );
    let flags = Arc::new(Flags::default());
    (
        SlotSender {
            spans: spans_tx,
            returns: returns_rx,
            flags: flags.clone(),
            closed,
        },
        SlotReceiver {
            spans: spans_rx,
            returns: returns_tx,
            flags,
        },
    )
}

impl<T, R> SlotSender<T, R> {
    /// Hands `value` to the receiver, unless the ring is full or the tracer
    /// is closed. (The loom models' way in; the engine uses `send_from`.)
    #[cfg(spanrec_loom)]
    #[inline]
    pub fn send(&mut self, value: T) -> Result<(), Refused<T>> {
        let mut value = Some(value);
        match self.send_from(&mut value, || {}) {
            Ok(()) => Ok(()),
            Err(refused) => match (refused, value) {
                (Refused::Full(()), Some(v)) => Err(Refused::Full(v)),
                (Refused::Closed(()), Some(v)) => Err(Refused::Closed(v)),
                // `send_from` leaves a refused value in place.
                (_, None) => Ok(()),
            },
        }
    }

    /// [`send`](Self::send) for a value held in place: on success the value
    /// is moved out of `value` with one copy; when refused, `value` is left
    /// as it was (the production path: spans finish this way). Calls
    /// `wake` when the ring holds at least `wake_at` values or refuses the
    /// value as full, once per drain (`Producer::push_from`): the moment to
    /// ring the flusher's doorbell.
    #[inline(always)]
    pub fn send_from(
        &mut self,
        value: &mut Option<T>,
        wake: impl FnOnce(),
    ) -> Result<(), Refused<()>> {
        // ORDERING: Relaxed: a stale `false` lets the value into the ring
        // after the receiver's final drain; the receiver drains closed slots
        // again when counting (see the module docs), so either outcome is
        // accounted for. Nothing is read through the flag.
        if self.closed.load(Ordering::Relaxed) {
            // A mutant for the loom suite: a closed tracer that loses the
            // span instead of handing it back to be counted.
            #[cfg(spanrec_loom_mutant = "close_drops_silently")]
            return {
                drop(value.take());
                Ok(())
            };
            #[cfg(not(spanrec_loom_mutant = "close_drops_silently"))]
            return Err(Refused::Closed(()));
        }
        if self.spans.push_from(value, wake) {
            Ok(())
        } else {
            Err(Refused::Full(()))
        }
    }

    /// A value the receiver gave back, if any.
    #[inline]
    pub fn recycled(&mut self) -> Option<R> {
        self.returns.pop()
    }
}

impl<T, R> Drop for SlotSender<T, R> {
    fn drop(&mut self) {
        // ORDERING: Release pairs with the Acquire load in `drain`: every
        // send made through this sender happens-before a drain that sees
        // the flag, so that drain finds them all.
        #[cfg(not(spanrec_loom_mutant = "exit_relaxed"))]
        self.flags.exited.store(true, Ordering::Release);
        #[cfg(spanrec_loom_mutant = "exit_relaxed")]
        self.flags.exited.store(true, Ordering::Relaxed);
    }
}

impl<T, R> SlotReceiver<T, R> {
    /// Moves queued values to the end of `out`: at most `limit` while the
    /// sender lives (so one busy thread cannot starve the others), all of
    /// them once it has exited.
    pub fn drain_into(&mut self, limit: usize, out: &mut Vec<T>) -> Drained {
        // ORDERING: Acquire pairs with the Release store in
        // `SlotSender::drop`. The load must come before the pops: a flag
        // read after them could be set by an exit whose last push the pops
        // missed.
        #[cfg(not(spanrec_loom_mutant = "exit_checked_after_drain"))]
        let for_good = self.flags.exited.load(Ordering::Acquire);
        #[cfg(spanrec_loom_mutant = "exit_checked_after_drain")]
        let for_good = false;
        let limit = if for_good { usize::MAX } else { limit };
        let moved = self.spans.pop_into(out, limit);
        // The mutant: the classic bug of reading the flag after the pops.
        #[cfg(spanrec_loom_mutant = "exit_checked_after_drain")]
        let for_good = self.flags.exited.load(Ordering::Acquire);
        Drained { moved, for_good }
    }

    /// Reads queued values in place, one run within a block of at most
    /// `limit` ([`Consumer::read_in_place`]): a pointer to the first and how
    /// many, valid until [`forget_read`](Self::forget_read) releases them;
    /// `for_good` once the sender had exited before this call and nothing
    /// is left unread.
    pub fn read_in_place(&mut self, limit: usize) -> (*mut T, Drained) {
        // ORDERING: Acquire pairs with the Release store in
        // `SlotSender::drop`; `unread` below loads `tail` afresh after it,
        // so it sees every push the exited sender made.
        let exited = self.flags.exited.load(Ordering::Acquire);
        let (first, moved) = self.spans.read_in_place(limit);
        let for_good = exited && self.spans.unread() == 0;
        (first, Drained { moved, for_good })
    }

    /// Releases the `n` oldest values read in place, without dropping them
    /// ([`Consumer::forget_read`]): the caller moved out what they own.
    pub fn forget_read(&mut self, n: usize) {
        self.spans.forget_read(n);
    }

    /// [`drain_into`](Self::drain_into), handing each value to `f`.
    pub fn drain(&mut self, limit: usize, f: impl FnMut(T)) -> Drained {
        let mut out = Vec::new();
        let drained = self.drain_into(limit, &mut out);
        out.into_iter().for_each(f);
        drained
    }

    /// Whether the ring holds at least `wake_at` values now (the
    /// flusher's re-check before it sleeps, see `doorbell.rs`).
    pub fn wake_due(&mut self) -> bool {
        self.spans.wake_due()
    }

    /// Frees the span ring's spare block (the flusher calls it for a ring
    /// that stayed idle): an idle thread keeps one block.
    pub fn release_spare(&mut self) {
        self.spans.release_spare();
    }

    /// Gives a value back to the sender's thread; hands it back if the
    /// return ring is full.
    pub fn give_back(&mut self, value: R) -> Result<(), R> {
        self.returns.push(value).map_err(|Full(v)| v)
    }
}
