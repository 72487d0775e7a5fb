//! What a tracer does in a child made by `fork()`.
//!
//! The child is a copy of one thread of the parent: the flusher thread
//! does not exist there, and every thread-local (the id generator's state
//! among them) is the parent's. Two things follow:
//!
//! - Ids: the child would repeat the forking thread's id sequence, and
//!   its spans would collide with the parent's (a recorder that keys on
//!   span ids, like the Mongo one, would then count them as duplicates).
//!   A `pthread_atfork` child handler forgets the forking thread's
//!   generator state, so the child reseeds (mixing in its own pid) on its
//!   next id.
//! - Locks: the child is a copy of the forking thread alone; a lock
//!   another thread held at that instant would stay held there. The
//!   prepare handler takes every lock of spanrec's (the tracer directory
//!   and each tracer's flush requests, registry and last error: what
//!   `stats`, a new thread's first span and building a tracer take), and
//!   the parent and child handlers release them, so the child finds them
//!   consistent and free (`tests/fork_locks.rs`). Not among them: each
//!   slot's `Block` room-wait lock (`room_wait.rs`), which the child
//!   never takes for an inherited tracer (its full rings drop at once,
//!   below, and its `shutdown` returns before notifying).
//! - Delivery: nothing drains a tracer inherited from the parent. Its
//!   `flush` and `shutdown` return [`FlushError::ForkedChild`] at once
//!   (rather than waiting for a flusher that is not there), dropping it
//!   does not wait, and under the `Block` policy a full ring drops at once
//!   (counted as `BlockTimeout`). A child that records spans builds its own
//!   tracer.
//!
//! [`FlushError::ForkedChild`]: crate::FlushError::ForkedChild

/// How many times this process is a forked child of a process that had
/// installed the hook (0 in the original process). `std`'s atomic in both
/// builds: written only by the at-fork handler, never part of a modeled
/// protocol, and loom atomics cannot live in a `static`.
static FORKS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The fork generation of this process: different in a forked child from
/// the value its parent read.
pub(crate) fn generation() -> u64 {
    // ORDERING: Relaxed: written once, in the child, by the only thread
    // that exists there before it can start another.
    FORKS.load(std::sync::atomic::Ordering::Relaxed)
}

#[cfg(all(unix, not(spanrec_loom)))]
crate::sync::thread_local! {
    /// spanrec's locks, held by the thread calling `fork()` from the
    /// prepare handler to the parent's or child's handler (all three run
    /// on that thread).
    static HELD: std::cell::RefCell<Option<crate::shared::ForkLocks>> =
        const { std::cell::RefCell::new(None) };
}

/// Runs in the parent just before `fork()`: takes every lock of spanrec's
/// (`ForkLocks`), waiting for other threads to leave them, so that none is
/// held mid-update by a thread the child will not have.
#[cfg(all(unix, not(spanrec_loom)))]
extern "C" fn before_fork() {
    // During thread teardown (the thread-local gone) nothing is taken.
    let _ = HELD.try_with(|held| {
        if let Ok(mut held) = held.try_borrow_mut() {
            *held = Some(crate::shared::lock_for_fork());
        }
    });
}

/// Releases what `before_fork` took (in the parent, and in the child).
#[cfg(all(unix, not(spanrec_loom)))]
fn release() {
    let held = HELD
        .try_with(|held| held.try_borrow_mut().ok().and_then(|mut h| h.take()))
        .ok()
        .flatten();
    drop(held);
}

/// Runs in the parent right after `fork()`.
#[cfg(all(unix, not(spanrec_loom)))]
extern "C" fn in_parent() {
    release();
}

/// Runs in the child right after `fork()`, on the one thread the child
/// has: counts the generation, forgets the id seed, and unlocks what
/// `before_fork` locked (the locks are consistent: no other thread held
/// them at the fork). `std`'s locks (`sync/std_locks.rs`): unlocking is a
/// store and at most a futex wake, whoever waited in the parent.
#[cfg(all(unix, not(spanrec_loom)))]
extern "C" fn in_child() {
    // ORDERING: Relaxed, see `generation`.
    FORKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    crate::ids::forget_seed();
    release();
}

/// Installs the at-fork handler, once per process (when the first tracer
/// is built).
pub(crate) fn install_hook() {
    #[cfg(all(unix, not(spanrec_loom)))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        extern "C" {
            // POSIX; in the C library std already links.
            fn pthread_atfork(
                prepare: Option<extern "C" fn()>,
                parent: Option<extern "C" fn()>,
                child: Option<extern "C" fn()>,
            ) -> std::ffi::c_int;
        }
        ONCE.call_once(|| {
            // SAFETY: `pthread_atfork` has no preconditions beyond valid
            // function pointers (or null); the three are plain `extern
            // "C" fn`s that live as long as the program and do not
            // unwind. Its result (only ENOMEM) is ignored: without the
            // hook a child reseeds on its next thread, not its forking
            // one, and may find a lock held.
            let _ = unsafe { pthread_atfork(Some(before_fork), Some(in_parent), Some(in_child)) };
        });
    }
}
