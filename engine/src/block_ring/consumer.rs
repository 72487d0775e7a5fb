//! The reading end of a block queue: pops, reads in place (values the
//! consumer uses where they lie and releases later), following block links
//! and handing the blocks read to the producer, the flusher's `wake_due`
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
    /// One past the last value read in place (`read_in_place`); the values
    /// in `head..read` are read but not released: still the queue's, their
    /// slots not reused, since `head` is not published past them.
    ///
    /// Invariant: `head <= read <= tail` (wrapping).
    read: usize,
    /// The block that holds `read` while `read < read_block_end`: `block`
    /// or a later one in the chain, whose links were followed before
    /// `head` left any block (so no link it followed was rewritten).
    read_block: *mut Block<T>,
    /// One past the last index `read_block` holds.
    read_block_end: usize,
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
            read: 0,
            read_block: first,
            read_block_end: BLOCK,
            cached_tail: 0,
            block: first,
            block_end: BLOCK,
        }
    }

    /// Removes the oldest value, if any.
    #[inline]
    pub fn pop(&mut self) -> Option<T> {
        debug_assert!(self.read == self.head, "pop with values read in place");
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
        self.read_from_head();
        Some(value)
    }

    /// Moves up to `max` values, oldest first, to the end of `out`, and
    /// returns how many: one refresh of the producer's index and one publish
    /// of ours for the lot.
    #[inline]
    pub fn pop_into(&mut self, out: &mut Vec<T>, max: usize) -> usize {
        debug_assert!(self.read == self.head, "pop with values read in place");
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
        self.read_from_head();
        n
    }

    /// After a pop: nothing is read in place, so `read` is `head`.
    #[inline(always)]
    fn read_from_head(&mut self) {
        self.read = self.head;
        self.read_block = self.block;
        self.read_block_end = self.block_end;
    }

    /// Reads up to `max` values in place, the oldest not yet read first,
    /// all within one block: returns a pointer to the first and how many
    /// (0 and null: none). The values stay in their slots, owned by the
    /// queue, until [`forget_read`](Self::forget_read) releases them:
    /// until then the producer does not write their slots (`head` is not
    /// published past them) and the blocks stay linked, so the pointer is
    /// valid for reads and writes of those values while this consumer
    /// lives and they are not released. (Under loom, one value at a time:
    /// loom's cells are not laid out as an array.)
    ///
    /// A way to hand values on without copying them: the flusher lends
    /// span records to the recorder where they lie.
    #[inline]
    pub fn read_in_place(&mut self, max: usize) -> (*mut T, usize) {
        if self.cached_tail.wrapping_sub(self.read) < max {
            // ORDERING: as in `pop`.
            self.cached_tail = self.queue.pushed.tail.load(Ordering::Acquire);
        }
        let available = self.cached_tail.wrapping_sub(self.read).min(max);
        if available == 0 {
            return (std::ptr::null_mut(), 0);
        }
        if self.read == self.read_block_end {
            // SAFETY: `read == read_block_end < tail` (acquired): the
            // producer linked `read_block` before publishing that `tail`.
            // `head <= read`, so `head` has not left this block and the
            // link is not rewritten yet (`leave_block` relinks a block only
            // once `head` is past its end; the producer rewrites a
            // self-link only once the published `head` is past it).
            self.read_block = unsafe { (*self.read_block).next.with(|n| *n) };
            self.read_block_end = self.read_block_end.wrapping_add(BLOCK);
        }
        let run = available.min(self.read_block_end.wrapping_sub(self.read));
        #[cfg(spanrec_loom)]
        let run = run.min(1);
        // SAFETY: `read_block` holds `read` (just ensured), below `tail`:
        // the slot is initialized (the `slots` invariant). Only a pointer
        // is taken here.
        let first =
            unsafe { (*self.read_block).slots[self.read % BLOCK].with_mut(|s| s.cast::<T>()) };
        self.read = self.read.wrapping_add(run);
        // The mutant releases values as it reads them in place: the
        // producer may then overwrite a value the consumer still uses.
        #[cfg(spanrec_loom_mutant = "read_in_place_releases")]
        self.queue.head.store(self.read, Ordering::Release);
        (first, run)
    }

    /// Releases the `n` oldest values read in place (at most all of them),
    /// without dropping them: their slots count as uninitialized from now
    /// on, so the caller must have moved out whatever they own, or accepts
    /// that it leaks. Publishes `head`; blocks read to the end go back to
    /// the producer.
    pub fn forget_read(&mut self, n: usize) {
        debug_assert!(n <= self.read.wrapping_sub(self.head));
        let n = n.min(self.read.wrapping_sub(self.head));
        let mut left = n;
        while left > 0 {
            if self.head == self.block_end {
                // `head == block_end < read <= tail`: as `read_head`
                // requires; `read` followed this block's link already.
                self.leave_block();
            }
            let run = left.min(self.block_end.wrapping_sub(self.head));
            self.head = self.head.wrapping_add(run);
            left -= run;
        }
        if n > 0 {
            self.publish_head();
        }
    }

    /// How many values are queued and not read in place, by a fresh
    /// (Acquire) load of the producer's index.
    pub fn unread(&mut self) -> usize {
        // ORDERING: as in `pop`.
        self.cached_tail = self.queue.pushed.tail.load(Ordering::Acquire);
        self.cached_tail.wrapping_sub(self.read)
    }

    /// The value read in place `k` places after the oldest not released,
    /// copied: the loom models' check that a value read in place is not
    /// overwritten before its release (loom tracks this access).
    #[cfg(spanrec_loom)]
    pub fn read_value(&self, k: usize) -> T
    where
        T: Copy,
    {
        assert!(k < self.read.wrapping_sub(self.head), "not read in place");
        let at = self.head.wrapping_add(k);
        let (mut block, mut end) = (self.block, self.block_end);
        while at.wrapping_sub(end) as isize >= 0 {
            // SAFETY: `end <= at < read <= tail`: linked (as in
            // `read_in_place`), and not relinked while `head` is in it.
            block = unsafe { (*block).next.with(|n| *n) };
            end = end.wrapping_add(BLOCK);
        }
        // SAFETY: `at` is in `head..read`: initialized, not released.
        unsafe { (*block).slots[at % BLOCK].with(|s| (*s).assume_init_read()) }
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
    /// producer's `wake`. Values read in place and not released count as
    /// queued: their slots are not free to the producer.
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
