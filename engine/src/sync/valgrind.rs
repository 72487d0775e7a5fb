//! Under `cfg(spanrec_valgrind)`: the facade's atomics and locks, annotated
//! for Helgrind and DRD.
//!
//! Race detectors know `pthread` locks and thread create/join, not atomics
//! or `parking_lot`'s futexes, so a correct release/acquire hand-off looks
//! like a race to them. Here every `Release` write announces a
//! happens-before edge on the atomic's address (`ANNOTATE_HAPPENS_BEFORE`)
//! and every `Acquire` read that follows it completes the edge
//! (`ANNOTATE_HAPPENS_AFTER`); a lock acquire/release does the same on the
//! lock's address. With the orderings the code really uses made visible, a
//! report that remains is a real unordered access. `Relaxed` operations are
//! not annotated: they order nothing, so they must not hide anything.
//!
//! The client requests are valgrind's documented magic instruction sequence
//! (`valgrind.h`, amd64): a no-op when not running under valgrind.

use std::ops::{Deref, DerefMut};
use std::sync::atomic::Ordering;
use std::time::Instant;

/// `_VG_USERREQ__HG_USERSO_SEND_PRE` / `_RECV_POST` from `helgrind.h`
/// (`VG_USERREQ_TOOL_BASE('H','G') + 256 + 33/34`); DRD implements the same
/// requests for its `ANNOTATE_HAPPENS_*`.
const HAPPENS_BEFORE: u64 = 1_212_612_897;
const HAPPENS_AFTER: u64 = 1_212_612_898;

#[cfg(target_arch = "x86_64")]
fn client_request(request: u64, tag: usize) {
    let args: [u64; 6] = [request, tag as u64, 0, 0, 0, 0];
    // Valgrind's client-request sequence: four rotations of `rdi` by
    // 3+13+61+51 = 128 bits (leaving it unchanged) and `xchg rbx, rbx` (no
    // effect). Under valgrind the core reads `args` through `rax` and
    // writes its result to `rdx`.
    // SAFETY: natively a no-op; no memory but `args` (alive for the call)
    // is read or written, and every register it changes is declared.
    unsafe {
        core::arch::asm!(
            "rol rdi, 3",
            "rol rdi, 13",
            "rol rdi, 61",
            "rol rdi, 51",
            "xchg rbx, rbx",
            in("rax") args.as_ptr(),
            inout("rdx") 0u64 => _,
            inout("rdi") 0u64 => _,
            options(nostack),
        );
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn client_request(_request: u64, _tag: usize) {}

fn happens_before<T: ?Sized>(tag: &T) {
    client_request(
        HAPPENS_BEFORE,
        std::ptr::from_ref(tag).cast::<()>() as usize,
    );
}

fn happens_after<T: ?Sized>(tag: &T) {
    client_request(HAPPENS_AFTER, std::ptr::from_ref(tag).cast::<()>() as usize);
}

fn releases(order: Ordering) -> bool {
    matches!(
        order,
        Ordering::Release | Ordering::AcqRel | Ordering::SeqCst
    )
}

fn acquires(order: Ordering) -> bool {
    matches!(
        order,
        Ordering::Acquire | Ordering::AcqRel | Ordering::SeqCst
    )
}

macro_rules! annotated_atomic {
    ($name:ident, $int:ty) => {
        #[derive(Debug, Default)]
        pub struct $name(std::sync::atomic::$name);

        #[allow(dead_code)]
        impl $name {
            pub(crate) const fn new(v: $int) -> Self {
                Self(std::sync::atomic::$name::new(v))
            }

            pub(crate) fn load(&self, order: Ordering) -> $int {
                let v = self.0.load(order);
                if acquires(order) {
                    happens_after(self);
                }
                v
            }

            pub(crate) fn store(&self, v: $int, order: Ordering) {
                if releases(order) {
                    happens_before(self);
                }
                self.0.store(v, order);
            }

            pub(crate) fn swap(&self, v: $int, order: Ordering) -> $int {
                self.rmw(order, |a| a.swap(v, order))
            }

            /// A read-modify-write `op`, its release half announced before
            /// and its acquire half after.
            fn rmw(
                &self,
                order: Ordering,
                op: impl FnOnce(&std::sync::atomic::$name) -> $int,
            ) -> $int {
                if releases(order) {
                    happens_before(self);
                }
                let old = op(&self.0);
                if acquires(order) {
                    happens_after(self);
                }
                old
            }

            pub(crate) fn get_mut(&mut self) -> &mut $int {
                self.0.get_mut()
            }
        }
    };
}

annotated_atomic!(AtomicBool, bool);
annotated_atomic!(AtomicU64, u64);
annotated_atomic!(AtomicUsize, usize);

impl AtomicU64 {
    pub(crate) fn fetch_add(&self, v: u64, order: Ordering) -> u64 {
        self.rmw(order, |a| a.fetch_add(v, order))
    }

    pub(crate) fn fetch_sub(&self, v: u64, order: Ordering) -> u64 {
        self.rmw(order, |a| a.fetch_sub(v, order))
    }
}

impl AtomicUsize {
    pub(crate) fn fetch_add(&self, v: usize, order: Ordering) -> usize {
        self.rmw(order, |a| a.fetch_add(v, order))
    }

    pub(crate) fn fetch_sub(&self, v: usize, order: Ordering) -> usize {
        self.rmw(order, |a| a.fetch_sub(v, order))
    }
}

/// `std_locks::Mutex`, with its acquire and release announced.
#[derive(Debug, Default)]
pub(crate) struct Mutex<T>(super::std_locks::Mutex<T>);

impl<T> Mutex<T> {
    pub(crate) const fn new(value: T) -> Self {
        Self(super::std_locks::Mutex::new(value))
    }

    #[allow(dead_code)] // used by the `tracing` feature's layer
    pub(crate) fn into_inner(self) -> T {
        self.0.into_inner()
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
        let inner = self.0.lock();
        happens_after(self);
        MutexGuard {
            inner,
            tag: std::ptr::from_ref(self).cast::<()>() as usize,
        }
    }
}

pub(crate) struct MutexGuard<'a, T> {
    inner: super::std_locks::MutexGuard<'a, T>,
    tag: usize,
}

impl<T> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.inner
    }
}

impl<T> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.inner
    }
}

impl<T> Drop for MutexGuard<'_, T> {
    fn drop(&mut self) {
        // Runs before `inner` unlocks.
        client_request(HAPPENS_BEFORE, self.tag);
    }
}

/// `std_locks::Condvar` over the annotated [`Mutex`].
#[derive(Debug, Default)]
pub(crate) struct Condvar(super::std_locks::Condvar);

#[allow(dead_code)] // `new` is used where a `Condvar` is not `Default`-built
impl Condvar {
    pub(crate) const fn new() -> Self {
        Self(super::std_locks::Condvar::new())
    }

    pub(crate) fn notify_all(&self) {
        self.0.notify_all();
    }

    pub(crate) fn wait<T>(&self, guard: &mut MutexGuard<'_, T>) {
        client_request(HAPPENS_BEFORE, guard.tag);
        self.0.wait(&mut guard.inner);
        client_request(HAPPENS_AFTER, guard.tag);
    }

    pub(crate) fn wait_until<T>(
        &self,
        guard: &mut MutexGuard<'_, T>,
        deadline: Instant,
    ) -> std::sync::WaitTimeoutResult {
        client_request(HAPPENS_BEFORE, guard.tag);
        let r = self.0.wait_until(&mut guard.inner, deadline);
        client_request(HAPPENS_AFTER, guard.tag);
        r
    }
}
