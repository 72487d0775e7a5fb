//! Trace and span ids from a per-thread generator.
//!
//! wyrand (Wang Yi's 64-bit generator, public domain, the one `fastrand`
//! uses): one multiply per id, no shared state, so id generation costs a few
//! cycles and never contends. Each thread is seeded from std's per-process
//! random hasher keys mixed with its thread id and the time, so threads and
//! processes do not repeat each other's sequences (a forked child reseeds:
//! `fork.rs`). Ids are not secrets.

use crate::sync::const_thread_local;
use std::cell::Cell;
use std::hash::{BuildHasher, Hasher};

const_thread_local! {
    static STATE: Cell<u64> = Cell::new(0);
}

fn seed() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
    );
    std::hash::Hash::hash(&std::thread::current().id(), &mut hasher);
    // A forked child has its parent's hasher keys, thread id and nearly
    // its time: the pid tells them apart (`fork.rs`).
    hasher.write_u32(std::process::id());
    hasher.finish() | 1
}

/// Makes this thread reseed on its next id (in a forked child: `fork.rs`).
/// Async-signal-safe: one write to a const-initialized thread-local.
#[cfg(all(unix, not(spanrec_loom)))]
pub(crate) fn forget_seed() {
    let _ = STATE.try_with(|s| s.set(0));
}

/// The thread's generator state, seeded on first use.
#[inline(always)]
fn seeded(state: u64) -> u64 {
    if state == 0 {
        seed()
    } else {
        state
    }
}

/// One wyrand step: advances `state` and returns the next value.
#[inline(always)]
fn wyrand(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0xa076_1d64_78bd_642f);
    let t = u128::from(*state) * u128::from(*state ^ 0xe703_7ed1_a0b4_28db);
    (t as u64) ^ ((t >> 64) as u64)
}

#[inline]
fn next_u64() -> u64 {
    STATE
        .try_with(|state| {
            let mut s = seeded(state.get());
            let next = wyrand(&mut s);
            state.set(s);
            next
        })
        // During thread teardown the thread-local is gone; fall back to a
        // fresh seed, which is slow but still random.
        .unwrap_or_else(|_| seed())
}

/// A random span id, never zero.
#[inline]
pub(crate) fn span_id() -> u64 {
    loop {
        let id = next_u64();
        if id != 0 {
            return id;
        }
    }
}

/// A random trace id and span id, never zero, from one thread-local access.
#[inline]
pub(crate) fn trace_and_span_id() -> (u128, u64) {
    STATE
        .try_with(|state| {
            let mut s = seeded(state.get());
            // The low half alone is never zero, so neither is the whole.
            let high = wyrand(&mut s);
            let trace = (u128::from(high) << 64) | u128::from(wyrand(&mut s).max(1));
            let span = wyrand(&mut s).max(1);
            state.set(s);
            (trace, span)
        })
        .unwrap_or_else(|_| (trace_id(), span_id()))
}

/// A random trace id, never zero.
#[inline]
pub(crate) fn trace_id() -> u128 {
    // The low half alone is never zero, so neither is the whole.
    (u128::from(next_u64()) << 64) | u128::from(span_id())
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_nonzero_and_distinct() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            assert!(seen.insert(super::span_id()));
            assert_ne!(super::trace_id(), 0);
        }
    }
}
