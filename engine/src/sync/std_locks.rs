//! `std`'s `Mutex` and `Condvar` behind the `parking_lot`-shaped API the
//! engine uses (no poisoning: a panic under one of these locks leaves the
//! data consistent, see the callers).
//!
//! `std`'s and not `parking_lot`'s, for `fork()`: a `parking_lot` lock
//! keeps its waiters in a process-wide queue and may hand itself straight
//! to a waiter on unlock, so a lock held across `fork()` (`fork.rs`) and
//! released in the child could pass to a thread the child does not have
//! and stay locked forever. `std`'s futex lock keeps no queue: releasing
//! it is a store and at most a futex wake (`tests/fork_locks.rs`).

use std::sync::PoisonError;
use std::time::Instant;

#[derive(Debug, Default)]
pub(crate) struct Mutex<T>(std::sync::Mutex<T>);

impl<T> Mutex<T> {
    pub(crate) const fn new(value: T) -> Self {
        Self(std::sync::Mutex::new(value))
    }

    #[inline]
    pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
        super::WaitableGuard(Some(self.0.lock().unwrap_or_else(PoisonError::into_inner)))
    }

    #[allow(dead_code)] // used by the `tracing` feature's layer
    pub(crate) fn into_inner(self) -> T {
        self.0.into_inner().unwrap_or_else(PoisonError::into_inner)
    }
}

pub(crate) type MutexGuard<'a, T> = super::WaitableGuard<std::sync::MutexGuard<'a, T>>;

#[derive(Debug, Default)]
pub(crate) struct Condvar(std::sync::Condvar);

#[allow(dead_code)] // `new` is used where a `Condvar` is not `Default`-built
impl Condvar {
    pub(crate) const fn new() -> Self {
        Self(std::sync::Condvar::new())
    }

    pub(crate) fn notify_all(&self) {
        self.0.notify_all();
    }

    pub(crate) fn wait<T>(&self, guard: &mut MutexGuard<'_, T>) {
        let inner = guard.0.take().expect("guard present outside wait");
        guard.0 = Some(self.0.wait(inner).unwrap_or_else(PoisonError::into_inner));
    }

    /// Waits until notified or `deadline` (callers re-check their
    /// condition: wake-ups may be spurious).
    pub(crate) fn wait_until<T>(
        &self,
        guard: &mut MutexGuard<'_, T>,
        deadline: Instant,
    ) -> std::sync::WaitTimeoutResult {
        let inner = guard.0.take().expect("guard present outside wait");
        let timeout = deadline.saturating_duration_since(Instant::now());
        let (inner, result) = self
            .0
            .wait_timeout(inner, timeout)
            .unwrap_or_else(PoisonError::into_inner);
        guard.0 = Some(inner);
        result
    }
}
