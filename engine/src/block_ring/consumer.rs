//! The reading end of a block queue: pops, following block links and
//! handing the blocks read to the producer, the flusher's `wake_due`
//! re-check. The protocol is in `mod.rs`.

use super::{Block, Queue, BLOCK};
use crate::sync::{Arc, Ordering};

/// The reading end of a queue.
pub struct Consumer<T> {
    queue: Arc<Queue<T>>,
    /// The producer's `wake_at`: the fill at which a wake-up is due.
    pub(super) wake_at: usize,
    /// Our own copy of `queue.head` (we are its only writer).
    head: usize,
    /// A possibly stale copy of `queue.tail`; never ahead of the real one.
    cached_tail: usize,
    /// The block that holds `head` while `head < block_end`.
    block: *mut Block<T>,
    /// One past the last index `block` holds.
    block_end: usize,
}

// SAFETY: as for `Producer`: the pointer is into the consumer's own queue,
// kept alive by its `Arc`; methods take `&mut self`.
unsafe impl<T: Send> Send for Consumer<T> {}

impl<T> Consumer<T> {
    /// The consumer of a new, empty `queue` whose first block is `first`.
    pub(super) fn new(queue: Arc<Queue<T>>, first: *mut Block<T>, wake_at: usize) -> Self {
        Consumer {
            queue,
            wake_at,
            head: 0,
            cached_tail: 0,
            block: first,
            block_end: BLOCK,
        }
    }

    /// Removes the oldest value, if any.
    #[inline]
    pub fn pop(&mut self) -> Option<T> {
        if self.head == self.cached_tail {
            // ORDERING: Acquire pairs with the producer's Release store of
            // `tail`: its slot writes and links happen before our reads.
            self.cached_tail = self.queue.pushed.tail.load(Ordering::Acquire);
            if self.head == self.cached_tail {
                return None;
            }
        }
        // SAFETY: `head < tail` (acquired above or earlier).
        let value = unsafe { self.read_head() };
        self.head = self.head.wrapping_add(1);
        self.publish_head();
        Some(value)
    }

    /// Moves up to `max` values, oldest first, to the end of `out`, and
    /// returns how many: one refresh of the producer's index and one publish
    /// of ours for the lot.
    #[inline]
    pub fn pop_into(&mut self, out: &mut Vec<T>, max: usize) -> usize {
        if self.cached_tail.wrapping_sub(self.head) < max {
            // ORDERING: as in `pop`.
            self.cached_tail = self.queue.pushed.tail.load(Ordering::Acquire);
        }
        let n = self.cached_tail.wrapping_sub(self.head).min(max);
        if n == 0 {
            return 0;
        }
        out.reserve(n);
        let mut left = n;
        while left > 0 {
            if self.head == self.block_end {
                self.leave_block();
            }
            // The values up to the end of this block, in one copy.
            let run = left.min(self.block_end.wrapping_sub(self.head));
            // SAFETY: `head..head + run` is below `tail` (fewer than `n`
            // were read since the acquire) and within `block` (just
            // ensured); `reserve(n)` made room in `out`.
            unsafe { self.move_run(run, out) };
            self.head = self.head.wrapping_add(run);
            left -= run;
        }
        self.publish_head();
        n
    }

    /// Moves the `run` values from `head` on, all in `block`, to the end of
    /// `out`, with one copy: the slots are an array, laid out as `T`s.
    ///
    /// # Safety
    /// `head + run <= tail` (acquired) and `<= block_end`; `out` has room
    /// for `run` more; `head` is published after the call.
    #[cfg(not(spanrec_loom))]
    #[inline(always)]
    unsafe fn move_run(&mut self, run: usize, out: &mut Vec<T>) {
        // SAFETY: `block` holds `head..head + run` (the caller's
        // obligations): initialized (the `slots` invariant) and not written
        // until we publish `head`. `UnsafeCell` and `MaybeUninit` are
        // `repr(transparent)` (the facade's cell too), so the slots are
        // laid out as `[T]`. Reading moves the values out; the slots count
        // as uninitialized from then on. `out` has room (`reserve`).
        unsafe {
            let first = (*self.block).slots[self.head % BLOCK].with(|s| s.cast::<T>());
            let len = out.len();
            std::ptr::copy_nonoverlapping(first, out.as_mut_ptr().add(len), run);
            out.set_len(len + run);
        }
    }

    /// Under loom, slot by slot, so that loom checks every access.
    ///
    /// # Safety
    /// As the non-loom `move_run`.
    #[cfg(spanrec_loom)]
    unsafe fn move_run(&mut self, run: usize, out: &mut Vec<T>) {
        for i in 0..run {
            let at = self.head.wrapping_add(i) % BLOCK;
            // SAFETY: as in `read_head`, for each slot of the run.
            out.push(unsafe { (*self.block).slots[at].with(|s| (*s).assume_init_read()) });
        }
    }

    /// Moves the value at `head` out of its slot, first following the link
    /// to the next block if `head` is past this one.
    ///
    /// # Safety
    /// `head < tail`, by an Acquire load of `tail`; `head` is published
    /// after the call.
    #[inline(always)]
    unsafe fn read_head(&mut self) -> T {
        if self.head == self.block_end {
            self.leave_block();
        }
        // SAFETY: `block` holds `head` (just ensured); `head < tail`, so the
        // slot is initialized (the `slots` invariant) and not written until
        // we publish `head` past it. Reading moves the value out; the slot
        // counts as uninitialized from then on.
        unsafe { (*self.block).slots[self.head % BLOCK].with(|s| (*s).assume_init_read()) }
    }

    /// Follows the link from the block we have read to the end, and hands
    /// that block to the producer (or frees it).
    #[cold]
    fn leave_block(&mut self) {
        let old = self.block;
        // SAFETY: `head == block_end < tail`: the producer linked `old`
        // before publishing that `tail`, which we acquired.
        let next = unsafe { (*old).next.with(|n| *n) };
        self.block = next;
        self.block_end = self.block_end.wrapping_add(BLOCK);
        self.queue.head_block.with_mut(|b| {
            // SAFETY: only the consumer writes `head_block`; the queue's
            // drop reads it after both handles are gone.
            unsafe { *b = (next, self.block_end) };
        });
        if next == old {
            // A self-link: the producer reuses this block.
            return;
        }
        // Take the list back (what the producer has not taken yet); if it
        // took it all, start from what it left over.
        // ORDERING: Relaxed: only we store to `spare`, so what we take back
        // is what we stored.
        let mut list = self.queue.spare.swap(0, Ordering::Relaxed);
        if list == 0 {
            // ORDERING: Acquire pairs with the producer's Release store in
            // `take_one_spare`: the chain as it left it.
            list = self.queue.unused.swap(0, Ordering::Acquire);
        }
        // SAFETY: we read `old` to the end and the producer moved on from
        // it: it is ours now; we relink it in front of the list.
        unsafe { (*old).next.with_mut(|n| *n = list as *mut Block<T>) };
        // `spare` is 0 (we swapped it, and only we store to it).
        // ORDERING: Release pairs with the producer's Acquire swap in
        // `take_one_spare`: our reads of the blocks (and the links we
        // wrote) happen before its writes to them.
        #[cfg(not(spanrec_loom_mutant = "block_spare_relaxed"))]
        self.queue.spare.store(old as usize, Ordering::Release);
        #[cfg(spanrec_loom_mutant = "block_spare_relaxed")]
        self.queue.spare.store(old as usize, Ordering::Relaxed);
    }

    /// Whether the producer is due the consumer's attention now (fresh
    /// reads of its index and its refusal): the queue holds at least
    /// `wake_at` values, or the producer found it full (below `wake_at`:
    /// no block left within the budget) and nothing was read since. The
    /// flusher's re-check before it sleeps: the same two triggers as the
    /// producer's `wake`.
    #[inline]
    pub fn wake_due(&mut self) -> bool {
        // ORDERING: Acquire pairs with the producer's Release store of
        // `tail` (like `pop`); under the doorbell protocol this load follows
        // the flusher's SeqCst fence (see `doorbell.rs`).
        self.cached_tail = self.queue.pushed.tail.load(Ordering::Acquire);
        if self.cached_tail.wrapping_sub(self.head) >= self.wake_at {
            return true;
        }
        // ORDERING: Relaxed, after the flusher's SeqCst fence, which pairs
        // with the fence in the producer's `wake` after its store (Dekker,
        // `doorbell.rs`); nothing is read through it.
        let refused = self.queue.pushed.refused_at.load(Ordering::Relaxed) == self.head;
        // The mutant forgets refusals: a full queue below `wake_at` that
        // rang while the flusher was going to sleep waits for its timer.
        #[cfg(spanrec_loom_mutant = "doorbell_no_refused_recheck")]
        let refused = refused && false;
        refused
    }

    /// Frees the spare list (unless the producer took it): memory an idle
    /// thread does not need. What the producer already took stays with it.
    pub fn release_spare(&mut self) {
        // ORDERING: Relaxed, Acquire: as in `leave_block`.
        let spare = self.queue.spare.swap(0, Ordering::Relaxed) as *mut Block<T>;
        let unused = self.queue.unused.swap(0, Ordering::Acquire) as *mut Block<T>;
        // SAFETY: the chains hold no values; we took them, so the producer
        // cannot.
        unsafe {
            self.queue.free_chain(spare);
            self.queue.free_chain(unused);
        }
    }

    /// Publishes `head`: the slots before it are free for the producer.
    #[inline(always)]
    fn publish_head(&mut self) {
        // ORDERING: Release pairs with the producer's Acquire load of `head`
        // in `has_room_refreshed`: our reads of the slots (and links) happen
        // before its next writes to them.
        #[cfg(not(spanrec_loom_mutant = "ring_release_relaxed"))]
        self.queue.head.store(self.head, Ordering::Release);
        #[cfg(spanrec_loom_mutant = "ring_release_relaxed")]
        self.queue.head.store(self.head, Ordering::Relaxed);
    }
}
