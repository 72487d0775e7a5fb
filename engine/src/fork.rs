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

/// Runs in the child right after `fork()`, on the one thread the child
/// has. Only async-signal-safe work: an atomic increment and a write to a
/// const-initialized thread-local.
#[cfg(all(unix, not(spanrec_loom)))]
extern "C" fn in_child() {
    // ORDERING: Relaxed, see `generation`.
    FORKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    crate::ids::forget_seed();
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
            // function pointers (or null); `in_child` is a plain `extern
            // "C" fn` that lives as long as the program. Its result (only
            // ENOMEM) is ignored: without the hook a child reseeds on its
            // next thread, not its forking one.
            let _ = unsafe { pthread_atfork(None, None, Some(in_child)) };
        });
    }
}
