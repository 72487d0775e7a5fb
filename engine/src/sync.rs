//! The one place that imports atomics, `UnsafeCell`, `Arc` and `thread_local!`.
//!
//! Modeled on tokio's `src/loom/` facade: under `cfg(spanrec_loom)` every
//! primitive here is loom's, so the lock-free protocols built on top of this
//! module can be model-checked by loom without a line of them changing. The
//! cfg is deliberately not called `loom`: that name would flip tokio's (and so
//! mongodb's) own loom mode in any build that shares the flags.
//!
//! Under `cfg(spanrec_valgrind)` the atomics and locks are instead wrappers
//! that announce every release/acquire edge to Helgrind and DRD
//! (`sync/valgrind.rs`), for the race-detector run in `ci/race.sh`.
//!
//! The locks are `std`'s behind `parking_lot`'s API (`sync/std_locks.rs`):
//! they must be releasable in a `fork()`ed child.

#[cfg(not(spanrec_loom))]
mod imp {
    #[cfg(not(spanrec_valgrind))]
    pub(crate) use super::std_locks::{Condvar, Mutex};
    #[cfg(spanrec_valgrind)]
    pub(crate) use super::valgrind::{AtomicBool, AtomicU64, AtomicUsize, Condvar, Mutex};
    pub(crate) use std::sync::atomic::{fence, Ordering};
    #[cfg(not(spanrec_valgrind))]
    pub(crate) use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
    pub(crate) use std::sync::Arc;
    pub(crate) use std::thread_local;

    /// `std`'s `UnsafeCell` with loom's closure-based API, so that code using
    /// it is written once for both builds.
    ///
    /// `repr(transparent)`: an array of cells is laid out as an array of
    /// `T` (the block queue copies runs of slots at once).
    #[derive(Debug)]
    #[repr(transparent)]
    pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

    impl<T> UnsafeCell<T> {
        pub(crate) const fn new(value: T) -> Self {
            Self(std::cell::UnsafeCell::new(value))
        }

        /// Gives `f` a raw pointer for reading.
        #[inline(always)]
        pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
            f(self.0.get())
        }

        /// Gives `f` a raw pointer for writing.
        #[inline(always)]
        pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
            f(self.0.get())
        }
    }
}

#[cfg(spanrec_loom)]
mod imp {
    pub(crate) use loom::cell::UnsafeCell;
    // Loom's locks, so that the flush-ticket protocol is modeled too.
    pub(crate) use super::loom_locks::{Condvar, Mutex};
    pub(crate) use loom::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
    pub(crate) use loom::sync::Arc;
    pub(crate) use loom::thread_local;
}

pub(crate) use imp::*;

/// A lock guard that a condition variable's wait can take out and put
/// back (`std`'s and loom's waits take their guard by value), for the
/// `parking_lot`-shaped locks of `std_locks.rs` and `loom_locks.rs`.
///
/// Invariant: `Some` except inside a `Condvar` wait.
pub(crate) struct WaitableGuard<G>(pub(crate) Option<G>);

impl<G: std::ops::Deref> std::ops::Deref for WaitableGuard<G> {
    type Target = G::Target;
    fn deref(&self) -> &G::Target {
        self.0.as_deref().expect("guard present outside wait")
    }
}

impl<G: std::ops::DerefMut> std::ops::DerefMut for WaitableGuard<G> {
    fn deref_mut(&mut self) -> &mut G::Target {
        self.0.as_deref_mut().expect("guard present outside wait")
    }
}

#[cfg(all(spanrec_valgrind, not(spanrec_loom)))]
mod valgrind;

#[cfg(not(spanrec_loom))]
mod std_locks;

#[cfg(spanrec_loom)]
mod loom_locks;

/// A process-wide unique id for each tracer (never reused, so a thread's
/// slot for a dropped tracer can never be mistaken for a new tracer's).
///
/// Deliberately `std`'s atomic in both builds: a unique-id counter is not
/// part of any protocol the loom models check, and loom atomics cannot live
/// in a `static`.
pub(crate) fn next_tracer_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    // ORDERING: Relaxed: only uniqueness matters, which the RMW guarantees.
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// A process-wide map from tracer id to a weak handle on the tracer's
/// shared state, for the cold paths that hold only an id: a span finished
/// (or given an extension) on a thread that has no slot for its tracer yet.
/// Type-erased so that this module knows nothing of the tracer.
///
/// Locked when a tracer is built and on those cold paths; never on a span's
/// hot path. Under loom it is empty: the models never build a tracer, and
/// loom's `Arc` has no weak handles.
pub(crate) mod directory {
    #[cfg(not(spanrec_loom))]
    use std::any::Any;
    #[cfg(not(spanrec_loom))]
    use std::sync::{Arc, Weak};

    #[cfg(not(spanrec_loom))]
    type Entry = (u64, Weak<dyn Any + Send + Sync>);

    #[cfg(not(spanrec_loom))]
    static ENTRIES: super::Mutex<Vec<Entry>> = super::Mutex::new(Vec::new());

    /// Adds tracer `id`, forgetting tracers that are gone.
    #[cfg(not(spanrec_loom))]
    pub(crate) fn insert<T: Any + Send + Sync>(id: u64, value: &Arc<T>) {
        let value: Arc<dyn Any + Send + Sync> = value.clone();
        let mut entries = ENTRIES.lock();
        entries.retain(|(_, weak)| weak.strong_count() > 0);
        entries.push((id, Arc::downgrade(&value)));
    }

    /// Tracer `id`'s state, if it is still alive.
    #[cfg(not(spanrec_loom))]
    pub(crate) fn find<T: Any + Send + Sync>(id: u64) -> Option<Arc<T>> {
        let entries = ENTRIES.lock();
        let (_, weak) = entries.iter().find(|(i, _)| *i == id)?;
        weak.upgrade()?.downcast().ok()
    }

    /// Every live tracer's state (the lock is released before returning).
    #[cfg(not(spanrec_loom))]
    pub(crate) fn all<T: Any + Send + Sync>() -> Vec<Arc<T>> {
        let entries = ENTRIES.lock();
        entries
            .iter()
            .filter_map(|(_, weak)| weak.upgrade()?.downcast().ok())
            .collect()
    }

    /// Locks the directory for a `fork()` (see `fork.rs`) and lists every
    /// live tracer: until the guard is dropped no tracer is added or found.
    #[cfg(all(unix, not(spanrec_loom)))]
    pub(crate) fn lock_for_fork<T: Any + Send + Sync>() -> (impl Sized, Vec<Arc<T>>) {
        let entries = ENTRIES.lock();
        let all = entries
            .iter()
            .filter_map(|(_, weak)| weak.upgrade()?.downcast().ok())
            .collect();
        (entries, all)
    }

    #[cfg(spanrec_loom)]
    pub(crate) fn insert<T>(_id: u64, _value: &super::Arc<T>) {}

    #[cfg(spanrec_loom)]
    pub(crate) fn find<T>(_id: u64) -> Option<super::Arc<T>> {
        None
    }
}

/// `thread_local!` with a `const` initializer, for a `Cell` read on every
/// span: no lazy set-up check on access. Loom's `thread_local!` takes no
/// `const` block, so under loom it is the plain form.
macro_rules! const_thread_local {
    ($(#[$attr:meta])* static $name:ident: $t:ty = $init:expr;) => {
        #[cfg(not(spanrec_loom))]
        std::thread_local! { $(#[$attr])* static $name: $t = const { $init }; }
        #[cfg(spanrec_loom)]
        loom::thread_local! { $(#[$attr])* static $name: $t = $init; }
    };
}
pub(crate) use const_thread_local;
