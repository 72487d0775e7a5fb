//! Under `cfg(spanrec_loom)`: loom's `Mutex` and `Condvar` behind the
//! `parking_lot`-shaped API the engine uses, so the flush-ticket protocol
//! (`flush_requests.rs`) is model-checked with the very code the tracer runs. Loom
//! has no clock: a deadline never expires here (models do not rely on
//! timeouts).

use std::time::Instant;

#[derive(Debug, Default)]
pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

impl<T> Mutex<T> {
    pub(crate) fn new(value: T) -> Self {
        Self(loom::sync::Mutex::new(value))
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
        // A panic while holding the lock aborts the model anyway.
        super::WaitableGuard(Some(self.0.lock().unwrap_or_else(|e| e.into_inner())))
    }

    #[allow(dead_code)]
    pub(crate) fn into_inner(self) -> T {
        self.0.into_inner().unwrap_or_else(|e| e.into_inner())
    }
}

pub(crate) type MutexGuard<'a, T> = super::WaitableGuard<loom::sync::MutexGuard<'a, T>>;

/// What `wait_until` returns; never timed out under loom.
pub(crate) struct WaitTimeoutResult;

impl WaitTimeoutResult {
    pub(crate) fn timed_out(&self) -> bool {
        false
    }
}

#[derive(Debug, Default)]
pub(crate) struct Condvar(loom::sync::Condvar);

#[allow(dead_code)]
impl Condvar {
    pub(crate) fn new() -> Self {
        Self(loom::sync::Condvar::new())
    }

    pub(crate) fn notify_all(&self) {
        self.0.notify_all();
    }

    pub(crate) fn wait<T>(&self, guard: &mut MutexGuard<'_, T>) {
        let inner = guard.0.take().expect("guard present outside wait");
        guard.0 = Some(self.0.wait(inner).unwrap_or_else(|e| e.into_inner()));
    }

    pub(crate) fn wait_until<T>(
        &self,
        guard: &mut MutexGuard<'_, T>,
        _deadline: Instant,
    ) -> WaitTimeoutResult {
        self.wait(guard);
        WaitTimeoutResult
    }
}
