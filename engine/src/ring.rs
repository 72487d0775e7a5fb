//! A bounded single-producer single-consumer ring buffer.
//!
//! The algorithm is Lamport's classic SPSC queue ("Proving the Correctness of
//! Multiprocess Programs", 1977) with the two refinements `rtrb` made popular:
//! indices that grow without bound and are reduced modulo a power-of-two
//! capacity (so "full" and "empty" never need a spare slot), and a cached copy
//! of the other side's index, so that the fast path of a push or a pop reads
//! no cache line the other side writes ("possibly full" → refresh → "really
//! full").
//!
//! spanrec uses it for recycled extension buffers flowing from the flusher
//! back to the thread that allocated them (finished spans flow the other way
//! through `block_ring.rs`, the same indices over storage that follows what
//! is in flight). Each side is a handle that is `Send` but whose methods
//! take `&mut self`, so the single-producer / single-consumer discipline is
//! enforced by the borrow checker instead of by documentation.
//!
//! Public only so that `spanrec-loom-tests` can model it; not part of the
//! supported API.

use crate::sync::{Arc, AtomicUsize, Ordering, UnsafeCell};
use crossbeam_utils::CachePadded;
use std::mem::MaybeUninit;

/// The shared part of a ring.
struct Ring<T> {
    /// Count of values ever popped. Written only by the consumer; read by the
    /// producer to learn which slots are free again.
    ///
    /// Invariant: `head <= tail` and `tail - head <= capacity` (wrapping).
    head: CachePadded<AtomicUsize>,
    /// Count of values ever pushed. Written only by the producer; read by the
    /// consumer to learn which slots hold values.
    tail: CachePadded<AtomicUsize>,
    /// `capacity - 1`; the capacity is a power of two.
    mask: usize,
    /// Invariant: the slots at indices `head..tail` (mod capacity) hold
    /// initialized values owned by the ring; every other slot is uninitialized.
    slots: Box<[UnsafeCell<MaybeUninit<T>>]>,
}

// SAFETY: a `Ring<T>` hands each `T` from the producer's thread to the
// consumer's exactly once (the slot protocol above), so it may be shared
// between threads whenever `T` itself may be sent between them.
unsafe impl<T: Send> Sync for Ring<T> {}
// SAFETY: as above; the ring owns its values and moving it moves them.
unsafe impl<T: Send> Send for Ring<T> {}

impl<T> Ring<T> {
    #[inline(always)]
    fn slot(&self, index: usize) -> &UnsafeCell<MaybeUninit<T>> {
        // The mask keeps the index in bounds, so the compiler drops the check.
        &self.slots[index & self.mask]
    }
}

impl<T> Drop for Ring<T> {
    fn drop(&mut self) {
        // ORDERING: `&mut self` means both handles are gone and `Arc`'s drop
        // already synchronized with their last writes; Relaxed reads suffice.
        let mut head = self.head.load(Ordering::Relaxed);
        let tail = self.tail.load(Ordering::Relaxed);
        while head != tail {
            self.slot(head).with_mut(|slot| {
                // SAFETY: `head..tail` holds initialized values (the `slots`
                // invariant) and nobody else can touch them any more.
                unsafe { (*slot).assume_init_drop() }
            });
            head = head.wrapping_add(1);
        }
    }
}

/// Creates a ring that holds up to `capacity` values, rounded up to a power of
/// two (and at least 1).
pub fn ring<T>(capacity: usize) -> (Producer<T>, Consumer<T>) {
    let capacity = capacity.max(1).next_power_of_two();
    let slots = (0..capacity)
        .map(|_| UnsafeCell::new(MaybeUninit::uninit()))
        .collect();
    let ring = Arc::new(Ring {
        head: CachePadded::new(AtomicUsize::new(0)),
        tail: CachePadded::new(AtomicUsize::new(0)),
        mask: capacity - 1,
        slots,
    });
    (
        Producer {
            ring: ring.clone(),
            tail: 0,
            cached_head: 0,
        },
        Consumer {
            ring,
            head: 0,
            cached_tail: 0,
        },
    )
}

/// The ring was full; the value is handed back.
#[derive(Debug, PartialEq, Eq)]
pub struct Full<T>(pub T);

/// The writing end of a ring.
pub struct Producer<T> {
    ring: Arc<Ring<T>>,
    /// Our own copy of `ring.tail` (we are its only writer).
    tail: usize,
    /// A possibly stale copy of `ring.head`; never ahead of the real one.
    cached_head: usize,
}

impl<T> Producer<T> {
    /// Appends `value`, or hands it back if the ring is really full.
    #[inline]
    pub fn push(&mut self, value: T) -> Result<(), Full<T>> {
        if !self.has_room() {
            return Err(Full(value));
        }
        self.write_and_publish(value);
        Ok(())
    }

    /// Whether the slot at `tail` is free. The fast path compares two of
    /// our own fields; only when the cached view says "full" is the
    /// consumer's index refreshed.
    #[inline(always)]
    fn has_room(&mut self) -> bool {
        if self.tail.wrapping_sub(self.cached_head) <= self.ring.mask {
            return true;
        }
        // ORDERING: Acquire pairs with the consumer's Release store of
        // `head` in `publish_head`, so its read of the slot we are about to
        // reuse happened before our write to it.
        self.cached_head = self.ring.head.load(Ordering::Acquire);
        self.tail.wrapping_sub(self.cached_head) <= self.ring.mask
    }

    /// Writes the slot at `tail` and publishes it.
    ///
    /// Precondition: `has_room` returned true since the last publish.
    #[inline(always)]
    fn write_and_publish(&mut self, value: T) {
        self.ring.slot(self.tail).with_mut(|slot| {
            // SAFETY: `has_room` saw `tail - head < capacity`, so the slot at
            // `tail` is outside `head..tail`: uninitialized and not read by
            // the consumer until we publish it below.
            unsafe { (*slot).write(value) };
        });
        self.tail = self.tail.wrapping_add(1);
        self.publish_tail();
    }

    /// Publishes `tail`: the slots before it hold values for the consumer.
    #[inline(always)]
    fn publish_tail(&mut self) {
        // ORDERING: Release pairs with the consumer's Acquire load of `tail`
        // in `pop`/`pop_into`: the slot writes before it happen before its
        // reads.
        #[cfg(not(spanrec_loom_mutant = "ring_publish_relaxed"))]
        self.ring.tail.store(self.tail, Ordering::Release);
        #[cfg(spanrec_loom_mutant = "ring_publish_relaxed")]
        self.ring.tail.store(self.tail, Ordering::Relaxed);
    }

    /// The number of values the ring holds when full.
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.ring.mask + 1
    }
}

/// The reading end of a ring.
pub struct Consumer<T> {
    ring: Arc<Ring<T>>,
    /// Our own copy of `ring.head` (we are its only writer).
    head: usize,
    /// A possibly stale copy of `ring.tail`; never ahead of the real one.
    cached_tail: usize,
}

impl<T> Consumer<T> {
    /// Removes the oldest value, if any.
    #[inline]
    pub fn pop(&mut self) -> Option<T> {
        if self.head == self.cached_tail {
            // Possibly empty: refresh the producer's index.
            // ORDERING: Acquire pairs with the producer's Release store of
            // `tail` in `push`: its slot write happens before our read.
            self.cached_tail = self.ring.tail.load(Ordering::Acquire);
            if self.head == self.cached_tail {
                return None;
            }
        }
        let value = self.ring.slot(self.head).with(|slot| {
            // Reading moves the value out; the slot counts as uninitialized
            // from then on.
            // SAFETY: `head < tail`: the slot is initialized (the `slots`
            // invariant) and not written until we publish `head` below.
            unsafe { (*slot).assume_init_read() }
        });
        self.head = self.head.wrapping_add(1);
        self.publish_head();
        Some(value)
    }

    /// Moves up to `max` values, oldest first, to the end of `out`, and
    /// returns how many: one refresh of the producer's index and one publish
    /// of ours for the lot (the flusher's way to drain a ring).
    #[inline]
    pub fn pop_into(&mut self, out: &mut Vec<T>, max: usize) -> usize {
        if self.cached_tail.wrapping_sub(self.head) < max {
            // Possibly fewer than `max` ready: refresh the producer's index.
            // ORDERING: Acquire pairs with the producer's Release store of
            // `tail` in `push`: its slot writes happen before our reads.
            self.cached_tail = self.ring.tail.load(Ordering::Acquire);
        }
        let n = self.cached_tail.wrapping_sub(self.head).min(max);
        if n == 0 {
            return 0;
        }
        out.reserve(n);
        let dst = out.spare_capacity_mut();
        for (i, dst) in dst.iter_mut().take(n).enumerate() {
            self.ring.slot(self.head.wrapping_add(i)).with(|slot| {
                // Copied straight into `out`'s spare capacity (one copy);
                // the slot counts as uninitialized from then on.
                // SAFETY: `head + i < tail`: the slot is initialized (the
                // `slots` invariant) and not written until we publish `head`
                // below; each is read once, into distinct spare slots.
                unsafe { std::ptr::copy_nonoverlapping(slot, dst, 1) }
            });
        }
        // SAFETY: the loop initialized the `n` spare slots after `len`
        // (`reserve(n)` made room for them).
        unsafe { out.set_len(out.len() + n) };
        self.head = self.head.wrapping_add(n);
        self.publish_head();
        n
    }

    /// Publishes `head`: the slots before it are free for the producer.
    #[inline(always)]
    fn publish_head(&mut self) {
        // ORDERING: Release pairs with the producer's Acquire load of `head`
        // in `has_room`: our reads of the slots happen before its next
        // writes to them.
        #[cfg(not(spanrec_loom_mutant = "ring_release_relaxed"))]
        self.ring.head.store(self.head, Ordering::Release);
        #[cfg(spanrec_loom_mutant = "ring_release_relaxed")]
        self.ring.head.store(self.head, Ordering::Relaxed);
    }
}

#[cfg(all(test, not(spanrec_loom)))]
mod tests {
    use super::*;

    #[test]
    fn fifo_wraps_and_reports_full() {
        let (mut p, mut c) = ring::<u32>(3);
        assert_eq!(p.capacity(), 4);
        for round in 0..10u32 {
            for i in 0..4 {
                p.push(round * 10 + i).unwrap();
            }
            assert_eq!(p.push(99), Err(Full(99)));
            for i in 0..4 {
                assert_eq!(c.pop(), Some(round * 10 + i));
            }
            assert_eq!(c.pop(), None);
        }
    }

    #[test]
    fn pop_into_moves_in_order_across_the_wrap() {
        let (mut p, mut c) = ring::<u32>(8);
        let mut out = Vec::new();
        let mut next = 0;
        for round in 0..5 {
            for _ in 0..6 {
                p.push(next).unwrap();
                next += 1;
            }
            assert_eq!(c.pop_into(&mut out, 4), 4);
            assert_eq!(c.pop_into(&mut out, usize::MAX), 2);
            assert_eq!(c.pop_into(&mut out, usize::MAX), 0);
            assert_eq!(out.len(), 6 * (round + 1));
        }
        assert!(out.iter().copied().eq(0..30));
    }

    #[test]
    fn drop_releases_unpopped_values() {
        let value = std::sync::Arc::new(());
        let (mut p, c) = ring(8);
        for _ in 0..5 {
            p.push(value.clone()).unwrap();
        }
        drop(p);
        drop(c);
        assert_eq!(std::sync::Arc::strong_count(&value), 1);
    }

    #[test]
    fn threads_hand_over_every_value_in_order() {
        let (mut p, mut c) = ring::<u64>(64);
        const N: u64 = 200_000;
        let producer = std::thread::spawn(move || {
            for i in 0..N {
                let mut v = i;
                while let Err(Full(back)) = p.push(v) {
                    v = back;
                    std::hint::spin_loop();
                }
            }
        });
        let mut expected = 0;
        while expected < N {
            if let Some(v) = c.pop() {
                assert_eq!(v, expected);
                expected += 1;
            }
        }
        producer.join().unwrap();
    }
}
