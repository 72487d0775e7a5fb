//! The doorbell: how a span-finishing thread wakes a sleeping flusher, with
//! no syscall and no shared write unless the flusher really sleeps while a
//! ring fills up.
//!
//! The flusher sleeps until its batch is due (`flusher/`); a thread that
//! fills its ring faster wakes it. A producer that finds its ring holding
//! `wake_at` spans (`Config::wake_at`: a quarter of the ring, 2,048 spans
//! by default, or a batch if that is more, at most half the ring;
//! `Producer::push_from` calls its `wake`, once per drain, on its cold
//! path) rings: one fence and one swap of `asleep`, and only when the
//! flusher was asleep one `unpark` (a futex wake): at most one syscall per
//! `wake_at` spans, counted in `Stats::doorbells`. A ring found full below
//! `wake_at` (no block left within the memory budget) rings too, once per
//! drain, on its way to `Block`'s wait or a `DropNewest` drop, after
//! storing the `head` it found in the queue's `refused_at`, which the
//! flusher's re-check reads beside `tail` (`Consumer::wake_due`).
//!
//! The hand-off is Dekker's: each side writes its own flag, then a `SeqCst`
//! fence, then reads the other side's.
//!
//! ```text
//!   producer                               flusher
//!   store ring.tail (Release, the pushes)  swap asleep = true
//!   (or ring.refused_at, a full ring)
//!   fence(SeqCst)                          fence(SeqCst)
//!   swap asleep = false                    load every ring.tail and
//!                                          refused_at: any holding wake_at,
//!                                          or refused since its last read?
//!                                          then don't park
//! ```
//!
//! The two fences are ordered one way or the other in the single total
//! order of `SeqCst` operations: if the producer's comes second, its swap
//! sees `asleep == true` and it wakes the flusher; if the flusher's comes
//! second, its re-check sees the push (or the refusal) and it does not
//! park. Either way no ring past `wake_at`, and no ring found full, waits
//! for the flusher's timer (a lost wake-up would
//! delay its spans by up to `flush_interval`, the flusher's sleep being
//! bounded by it, and turn a busy thread's next spans into `ring_full`
//! drops or `Block` waits). `std`'s park token covers
//! an `unpark` that lands between the re-check and the park. Modeled by
//! `loom-tests/tests/doorbell.rs`, with two mutants: the producer's fence
//! removed (`doorbell_no_fence`), the flusher's re-check skipped
//! (`doorbell_no_recheck`), and its re-check blind to refusals
//! (`doorbell_no_refused_recheck`, caught by the model of a ring the
//! budget holds below `wake_at`).
//!
//! Not hidden: this module is `pub` only so that `loom-tests` can drive it.

use crate::sync::{fence, AtomicBool, Ordering};

/// The flusher's "I am about to sleep or asleep" flag, shared by every
/// thread of a tracer.
#[derive(Debug, Default)]
pub struct Doorbell {
    /// Set by the flusher before its re-check and park; cleared by the
    /// flusher when it wakes, or by the one producer that wakes it.
    ///
    /// Invariant: while the flusher is parked with no wake pending, it is
    /// `true` and no ring held `wake_at` spans at the flusher's re-check
    /// (or the producer that filled it since will see `true`).
    asleep: AtomicBool,
}

impl Doorbell {
    /// Awake.
    pub fn new() -> Self {
        Self::default()
    }

    /// Flusher side, before parking: announces the sleep. The caller must
    /// then re-check its rings (any holding `wake_at`: [`awake`](Self::awake)
    /// and do not park) before it parks, as [`sleep`](Self::sleep) does.
    fn going_to_sleep(&self) {
        // ORDERING: Relaxed, ordered before the re-check's loads by the
        // SeqCst fence below; the fence pairs with the producer's fence in
        // `ring` (Dekker: one of the two sees the other's write). Every
        // write to `asleep` is an RMW, so its modification order is one
        // chain that each RMW extends (which is also how loom models it
        // exactly: a plain store here let loom's partial modification
        // order hand a producer's swap a value older than this one).
        self.asleep.swap(true, Ordering::Relaxed);
        #[cfg(not(spanrec_loom_mutant = "doorbell_no_fence"))]
        fence(Ordering::SeqCst);
    }

    /// Flusher side, after waking (or deciding not to park).
    pub fn awake(&self) {
        // ORDERING: Relaxed: nothing is read through the flag; an RMW for
        // the one-chain rule above. A producer whose swap read the `true`
        // before this unparks a flusher that is awake (a spare park token:
        // one early pass).
        self.asleep.swap(false, Ordering::Relaxed);
    }

    /// Flusher side: announces the sleep, re-checks with `pressed` (is any
    /// ring holding `wake_at`?) and, unless one does, sleeps with `park` (a
    /// bounded park: the flusher's own deadline). Returns whether it
    /// parked.
    pub fn sleep(&self, pressed: impl FnOnce() -> bool, park: impl FnOnce()) -> bool {
        self.going_to_sleep();
        // The mutant parks without the re-check: a push that crossed `wake_at`
        // before the announcement was visible to it is then missed.
        #[cfg(not(spanrec_loom_mutant = "doorbell_no_recheck"))]
        if pressed() {
            self.awake();
            return false;
        }
        #[cfg(spanrec_loom_mutant = "doorbell_no_recheck")]
        let _ = pressed;
        park();
        self.awake();
        true
    }

    /// Producer side, after pushes that left its ring holding `wake_at`:
    /// whether the caller must wake the flusher (it was asleep, and this
    /// caller is the one that claimed the wake).
    #[must_use]
    pub fn ring(&self) -> bool {
        // ORDERING: SeqCst fence between the caller's Release store of its
        // ring's tail (the push) and the load below; pairs with the fence
        // in `going_to_sleep`. Without it the load could read a stale
        // `false` while the flusher's re-check reads the stale tail: both
        // would miss (the `doorbell_no_fence` mutant).
        #[cfg(not(spanrec_loom_mutant = "doorbell_no_fence"))]
        fence(Ordering::SeqCst);
        // ORDERING: Relaxed swap, ordered by the fence. An RMW rather than a
        // load: it reads the latest value in `asleep`'s modification order,
        // and makes one caller the waker when several ring at once. (It
        // writes the shared line, but a producer rings at most once per
        // ring past `wake_at`.)
        self.asleep.swap(false, Ordering::Relaxed)
    }
}
