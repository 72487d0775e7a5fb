//! The writing end of a block queue: pushes, the `check_at` schedule and
//! its consumer wake-ups, taking the next block (spare, new within the
//! budget, or a self-link). The protocol is in `mod.rs`.

use super::{Block, Full, Queue, BLOCK};
use crate::sync::{Arc, Ordering};
use std::ptr;

/// The writing end of a queue.
pub struct Producer<T> {
    queue: Arc<Queue<T>>,
    /// Our own copy of `queue.tail` (we are its only writer).
    tail: usize,
    /// A possibly stale copy of `queue.head`; never ahead of the real one.
    cached_head: usize,
    /// The `tail` at which to take the cold path next.
    ///
    /// Invariant: `tail <= check_at <= min(cached_head + capacity,
    /// block_end)` (wrapping), so a `tail` short of it has a free slot in
    /// the current block.
    check_at: usize,
    /// From this many values on the queue the consumer is due a wake-up
    /// (at most half the capacity).
    wake_at: usize,
    /// The `head` at which `push_from` last called its `wake`: at most
    /// once per value of `head`.
    reported_at: usize,
    /// The block that holds `tail` while `tail < block_end`.
    block: *mut Block<T>,
    /// One past the last index `block` holds.
    block_end: usize,
    /// The index at which `block` was last linked to itself (`usize::MAX`:
    /// not since it became current). Until the consumer has read that
    /// index, it may still have to follow the self-link, so the link must
    /// not be rewritten.
    relinked_at: usize,
}

// SAFETY: the producer's raw pointer is to a block of its own queue, which
// its `Arc` keeps alive; every access to shared state goes through the
// queue's protocol, so the handle may move to another thread with `T`. It
// is not `Sync`: its methods take `&mut self`.
unsafe impl<T: Send> Send for Producer<T> {}

impl<T> Producer<T> {
    /// The producer of a new, empty `queue` whose first block is `first`.
    pub(super) fn new(queue: Arc<Queue<T>>, first: *mut Block<T>, wake_at: usize) -> Self {
        Producer {
            queue,
            tail: 0,
            cached_head: 0,
            // Refresh at the first push (sets the real schedule).
            check_at: 0,
            wake_at,
            reported_at: usize::MAX,
            block: first,
            block_end: BLOCK,
            relinked_at: usize::MAX,
        }
    }

    /// Appends `value`, or hands it back if the queue is full.
    #[inline]
    pub fn push(&mut self, value: T) -> Result<(), Full<T>> {
        let mut value = Some(value);
        if self.push_from(&mut value, || {}) {
            Ok(())
        } else {
            Err(Full(
                value.take().expect("a refused value is left in place"),
            ))
        }
    }

    /// Moves the value out of `value` into the queue, unless it is full
    /// (then `value` is left as it was and `false` returned): one copy.
    ///
    /// Calls `wake` (before the push) when the queue holds at least
    /// `wake_at` values, or refuses the value (full: perhaps below
    /// `wake_at`, no block left within the budget), once per drain by the
    /// consumer: the doorbell's trigger: at most one call per `wake_at`
    /// values, or per drain while full. The values that filled it (and a
    /// refusal's `refused_at`) were published before the call, which is
    /// what the doorbell's fence needs (`doorbell.rs`): the consumer's
    /// `wake_due` re-check sees either.
    #[inline(always)]
    pub fn push_from(&mut self, value: &mut Option<T>, wake: impl FnOnce()) -> bool {
        if self.tail == self.check_at && !self.has_room_refreshed(wake) {
            return false;
        }
        let Some(v) = value.as_ref() else {
            return true;
        };
        let src: *const T = v;
        // SAFETY: `tail < check_at <= block_end` or the cold path just made
        // it so: `block` holds `tail`; its slot is outside `head..tail`
        // (free) and unread until we publish `tail` below. `src` is a valid
        // `T` we own through `value`, copied bitwise (one copy).
        unsafe {
            (*self.block).slots[self.tail % BLOCK]
                .with_mut(|slot| ptr::copy_nonoverlapping(src, (*slot).as_mut_ptr(), 1));
        }
        // SAFETY: the `T` now lives in the slot; overwriting `value` without
        // dropping its old contents completes the move.
        unsafe { ptr::write(value, None) };
        self.tail = self.tail.wrapping_add(1);
        self.publish_tail();
        true
    }

    /// Refreshes `head`; calls `wake` if the queue holds at least `wake_at`
    /// values or is full, and it was not called for this `head` yet; at the end
    /// of the block, takes the next one; sets the next `check_at`: where
    /// the cached view reaches `wake_at`, if it is below, else `wake_at / 4` pushes
    /// on (or where the queue could be full), and never past the block.
    #[cold]
    #[inline(never)]
    fn has_room_refreshed(&mut self, wake: impl FnOnce()) -> bool {
        // ORDERING: Acquire pairs with the consumer's Release store of
        // `head` in `publish_head`: its reads of the slots before `head`
        // (and of the links it followed) happen before what we do next.
        self.cached_head = self.queue.head.load(Ordering::Acquire);
        let fill = self.tail.wrapping_sub(self.cached_head);
        if fill > self.queue.mask || (self.tail == self.block_end && !self.next_block(fill)) {
            // Full, perhaps below `wake_at` (no block within the budget):
            // the consumer is due a wake-up all the same, once per `head`.
            // (Already called for this `head`: at `wake_at`, and the fill
            // has not dropped since, so `wake_due` sees it.)
            if self.cached_head != self.reported_at {
                self.reported_at = self.cached_head;
                // ORDERING: Relaxed; `wake`'s SeqCst fence (the doorbell's
                // `ring`) orders it before the flusher's flag and pairs
                // with the fence before `wake_due`'s load, as for `tail`.
                self.queue
                    .pushed
                    .refused_at
                    .store(self.cached_head, Ordering::Relaxed);
                wake();
            }
            return false;
        }
        if fill >= self.wake_at && self.cached_head != self.reported_at {
            self.reported_at = self.cached_head;
            wake();
        }
        let check_at = if fill < self.wake_at {
            self.cached_head.wrapping_add(self.wake_at)
        } else {
            let to_full = self.queue.mask + 1 - fill;
            self.tail.wrapping_add(to_full.min(self.wake_at / 4).max(1))
        };
        // Both bounds are ahead of `tail` (modulo wrapping): take the nearer.
        self.check_at =
            if check_at.wrapping_sub(self.tail) <= self.block_end.wrapping_sub(self.tail) {
                check_at
            } else {
                self.block_end
            };
        true
    }

    /// Makes `block` the block that holds `tail` (== `block_end`): the
    /// spare, a new one within the budget, or (the queue empty) the same
    /// one again. `false` when none is possible yet.
    #[cold]
    fn next_block(&mut self, fill: usize) -> bool {
        // The current block's link may be rewritten only once the consumer
        // has read past an earlier self-link (`relinked_at`).
        let link_free = self.relinked_at == usize::MAX
            || self.cached_head.wrapping_sub(self.relinked_at) as isize > 0;
        if !link_free {
            return false;
        }
        let spare = self.take_one_spare();
        let next = if !spare.is_null() {
            spare
        } else if self.queue.budget.take() {
            Block::allocate()
        } else if fill == 0 {
            // Everything written was read: the block is free to reuse. The
            // consumer still follows the link from it, so link it to
            // itself and leave that link alone until it has.
            // SAFETY: `block` is our current block; the consumer reads its
            // `next` only after acquiring a `tail` past `block_end`, which
            // we publish after this write.
            unsafe { (*self.block).next.with_mut(|n| *n = self.block) };
            self.relinked_at = self.block_end;
            self.block_end = self.block_end.wrapping_add(BLOCK);
            return true;
        } else {
            return false;
        };
        // SAFETY: `next` is ours alone (fresh, or a spare the consumer no
        // longer uses); `block` is our current block,
        // whose link the consumer reads only after acquiring a `tail` past
        // `block_end`, published after these writes.
        unsafe {
            (*next).next.with_mut(|n| *n = ptr::null_mut());
            (*self.block).next.with_mut(|n| *n = next);
        }
        self.block = next;
        self.block_end = self.block_end.wrapping_add(BLOCK);
        self.relinked_at = usize::MAX;
        true
    }

    /// Takes one block the consumer left: from our own leftovers
    /// (`unused`) if the consumer has not taken them back, else from the
    /// spare list; what we do not need goes to `unused`, where the consumer
    /// finds it (to reuse or free). So a thread never hoards blocks. Null
    /// if there are none.
    fn take_one_spare(&mut self) -> *mut Block<T> {
        // ORDERING: Acquire pairs with our own Release store below (the
        // consumer never stores to `unused`).
        let mut list = self.queue.unused.swap(0, Ordering::Acquire) as *mut Block<T>;
        if list.is_null() {
            // ORDERING: Acquire pairs with the consumer's Release store in
            // `leave_block`: its reads of the blocks (and its writes of
            // their links) happen before our writes to them.
            #[cfg(not(spanrec_loom_mutant = "block_spare_relaxed"))]
            let taken = self.queue.spare.swap(0, Ordering::Acquire);
            #[cfg(spanrec_loom_mutant = "block_spare_relaxed")]
            let taken = self.queue.spare.swap(0, Ordering::Relaxed);
            list = taken as *mut Block<T>;
        }
        if list.is_null() {
            return list;
        }
        // SAFETY: the chain is ours now: its links were written before the
        // Release store we acquired.
        let rest = unsafe { (*list).next.with(|n| *n) };
        if !rest.is_null() {
            // `unused` is 0 (we swapped it, and only we store to it).
            // ORDERING: Release pairs with the consumer's Acquire swap of
            // `unused` (and our own next one): the chain as we leave it.
            self.queue.unused.store(rest as usize, Ordering::Release);
        }
        list
    }

    /// Publishes `tail`: the slots before it hold values for the consumer.
    #[inline(always)]
    fn publish_tail(&mut self) {
        // ORDERING: Release pairs with the consumer's Acquire load of
        // `tail`: the slot writes (and block links) before it happen
        // before its reads.
        #[cfg(not(spanrec_loom_mutant = "ring_publish_relaxed"))]
        self.queue.pushed.tail.store(self.tail, Ordering::Release);
        #[cfg(spanrec_loom_mutant = "ring_publish_relaxed")]
        self.queue.pushed.tail.store(self.tail, Ordering::Relaxed);
    }
}
