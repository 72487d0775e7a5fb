//! A bounded single-producer single-consumer queue stored in a chain of
//! fixed-size blocks, whose memory follows what is in flight.
//!
//! The indices are Lamport's SPSC queue ("Proving the Correctness of
//! Multiprocess Programs", 1977) with the refinements `rtrb` made popular:
//! indices that grow without bound (so "full" and "empty" need no spare
//! slot), a cached copy of the other side's index (the fast path reads no
//! line the other side writes), and a `check_at` schedule that refreshes
//! it a few times per trip round the queue. `tail - head <= capacity`
//! bounds what one thread has in flight. The storage is not one array of
//! `capacity` slots per thread (1 MiB of span records at the default
//! capacity, touched by any thread that ever had a few thousand spans in
//! flight): slots live in blocks of [`BLOCK`] linked in index order, as in
//! the segmented queues of crossbeam's `SegQueue` and Vyukov's unbounded
//! SPSC queue:
//!
//! - the producer writes the block holding `tail`; when `tail` reaches its
//!   end it takes the next block: one the consumer handed back (*spares*),
//!   else a new one if the tracer-wide [`Budget`] allows, else — when
//!   everything it wrote has been read — its own block again (a
//!   *self-link*); if none of those, the queue counts as full;
//! - the producer links the next block into the full one before it
//!   publishes a `tail` past it, so a consumer that acquired that `tail`
//!   finds the link;
//! - the consumer, reading past the end of a block, follows the link and
//!   adds the block it left to the shared spare list (taking the list
//!   back with a swap, prepending, storing it with Release); the producer
//!   takes the list (an Acquire swap), uses its first block and leaves the
//!   rest in a second slot, `unused`, which it takes from first next time
//!   and the consumer rebuilds the spare list from. Each slot has one
//!   storer, who stores only after swapping it to 0, so no chain is ever
//!   lost. A busy thread stops allocating once warm, and a thread never
//!   hoards blocks: the flusher frees both slots' chains when the queue
//!   stayed idle (`release_spare`).
//!
//! So a thread holds one block (8 KiB of span records) when idle, a few
//! under a steady load, and at most `capacity` slots' worth in a burst, and
//! all threads of a tracer together hold at most the budget beyond their
//! first block each.
//!
//! Public only so that `spanrec-loom-tests` can model it; not part of the
//! supported API.

use crate::sync::{Arc, AtomicUsize, Ordering, UnsafeCell};
use crossbeam_utils::CachePadded;
use std::mem::MaybeUninit;
use std::ptr;

mod budget;
pub use budget::Budget;

/// Slots per block: 64 span records of 128 bytes, 8 KiB (2 under loom, so
/// that small models cross blocks).
#[cfg(not(spanrec_loom))]
pub const BLOCK: usize = 64;
/// Slots per block: 64 span records of 128 bytes, 8 KiB (2 under loom, so
/// that small models cross blocks).
#[cfg(spanrec_loom)]
pub const BLOCK: usize = 2;

struct Block<T> {
    /// The block holding the indices after this one's.
    ///
    /// Invariant: written only by the producer while this is its current
    /// block, before it publishes a `tail` past this block's end; read by
    /// the consumer only after it acquired such a `tail`. Null or this block
    /// itself (a self-link) while the block is the producer's current one,
    /// and never rewritten while the consumer may still read an older value
    /// (see `Producer::relinked_at`).
    next: UnsafeCell<*mut Block<T>>,
    /// Invariant: the slots of indices in `head..tail` that fall in this
    /// block hold initialized values owned by the queue; the others are
    /// uninitialized.
    slots: [UnsafeCell<MaybeUninit<T>>; BLOCK],
}

impl<T> Block<T> {
    /// A block with a null link and uninitialized slots, allocated in
    /// place (not built on the stack and copied: 8 KiB).
    #[cfg(not(spanrec_loom))]
    fn allocate() -> *mut Block<T> {
        let mut block = Box::<Block<T>>::new_uninit();
        let raw = block.as_mut_ptr();
        // SAFETY: `raw` points at the allocation, valid for writes; the
        // field is written before anything reads it.
        unsafe { ptr::addr_of_mut!((*raw).next).write(UnsafeCell::new(ptr::null_mut())) };
        // SAFETY: `next` is initialized; `slots` is an array of
        // `UnsafeCell<MaybeUninit<T>>`, valid whatever its bytes.
        Box::into_raw(unsafe { block.assume_init() })
    }

    /// Under loom every cell is built (loom tracks each one).
    #[cfg(spanrec_loom)]
    fn allocate() -> *mut Block<T> {
        Box::into_raw(Box::new(Block {
            next: UnsafeCell::new(ptr::null_mut()),
            slots: std::array::from_fn(|_| UnsafeCell::new(MaybeUninit::uninit())),
        }))
    }

    /// # Safety
    /// `block` came from `allocate`, holds no initialized value, and nobody
    /// uses it afterwards.
    unsafe fn free(block: *mut Block<T>) {
        // SAFETY: by the caller's obligations.
        drop(unsafe { Box::from_raw(block) });
    }
}

/// The size of one block of `T`s, to turn a budget in bytes into blocks.
pub fn block_bytes<T>() -> usize {
    std::mem::size_of::<Block<T>>()
}

/// The shared part of a queue.
struct Queue<T> {
    /// Count of values ever popped. Written only by the consumer.
    ///
    /// Invariant: `head <= tail` and `tail - head <= capacity` (wrapping).
    head: CachePadded<AtomicUsize>,
    /// Count of values ever pushed. Written only by the producer.
    tail: CachePadded<AtomicUsize>,
    /// `capacity - 1`; the capacity is a power of two.
    mask: usize,
    /// Blocks the consumer left, for the producer: the address of the
    /// first of a chain linked through `next` (0: none).
    ///
    /// Invariant: only the consumer stores to it (Release: its reads of
    /// the blocks and writes of their links happen before), always after
    /// swapping it to 0 itself; the producer only swaps it to 0 (Acquire),
    /// taking the whole chain. So no chain is ever overwritten.
    spare: AtomicUsize,
    /// What the producer took from `spare` and did not need: a chain, or 0.
    ///
    /// Invariant: only the producer stores to it (Release), always after
    /// swapping it to 0 itself; both sides swap it to 0 (Acquire) to take
    /// the chain: the producer for its next block, the consumer to rebuild
    /// `spare` from it or to free it.
    unused: AtomicUsize,
    /// The consumer's current block and the index where it ends, for the
    /// queue's drop. Written only by the consumer.
    head_block: UnsafeCell<(*mut Block<T>, usize)>,
    budget: Arc<Budget>,
}

// SAFETY: a `Queue<T>` hands each `T` from the producer's thread to the
// consumer's exactly once (the slot protocol of the blocks), and each block
// between them through Release/Acquire pairs, so it may be shared between
// threads whenever `T` itself may be sent between them.
unsafe impl<T: Send> Sync for Queue<T> {}
// SAFETY: as above; the queue owns its blocks and values.
unsafe impl<T: Send> Send for Queue<T> {}

impl<T> Queue<T> {
    /// Frees a chain of blocks linked through `next` (null-terminated).
    ///
    /// # Safety
    /// As `Block::free`, for every block of the chain.
    unsafe fn free_chain(&self, mut block: *mut Block<T>) {
        while !block.is_null() {
            // SAFETY: the chain is ours (the caller's obligation).
            let next = unsafe { (*block).next.with(|n| *n) };
            // SAFETY: as above.
            unsafe { self.free_block(block) };
            block = next;
        }
    }

    /// Frees a block nobody uses any more and uncounts it.
    ///
    /// # Safety
    /// As `Block::free`.
    unsafe fn free_block(&self, block: *mut Block<T>) {
        // SAFETY: by the caller's obligations.
        unsafe { Block::free(block) };
        self.budget.give_back();
    }
}

impl<T> Drop for Queue<T> {
    fn drop(&mut self) {
        // ORDERING: `&mut self`: both handles are gone and `Arc`'s drop
        // synchronized with their last writes; Relaxed reads suffice.
        let mut head = self.head.load(Ordering::Relaxed);
        let tail = self.tail.load(Ordering::Relaxed);
        let (mut block, mut end) = self.head_block.with(|b| {
            // SAFETY: nobody else is left to write it.
            unsafe { *b }
        });
        while head != tail {
            if head == end {
                // SAFETY: `tail` is past `end`, so the producer linked it
                // (the `next` invariant); nobody writes it any more.
                let next = unsafe { (*block).next.with(|n| *n) };
                if next != block {
                    // SAFETY: every value in `block` was dropped above;
                    // nothing points at it but the chain we leave.
                    unsafe { self.free_block(block) };
                }
                block = next;
                end = end.wrapping_add(BLOCK);
            }
            // SAFETY: `head..tail` holds initialized values (the `slots`
            // invariant) and nobody else can touch them any more.
            unsafe { (*block).slots[head % BLOCK].with_mut(|s| (*s).assume_init_drop()) };
            head = head.wrapping_add(1);
        }
        // The rest of the chain holds no values: `block`, and any block the
        // producer linked after it without writing to it yet. The chain
        // ends at the producer's current block, whose `next` is null or
        // itself.
        loop {
            // SAFETY: nobody writes links any more.
            let next = unsafe { (*block).next.with(|n| *n) };
            // SAFETY: all values in the chain were dropped above; nothing
            // else points at `block`, and it is freed once.
            unsafe { self.free_block(block) };
            if next.is_null() || next == block {
                break;
            }
            block = next;
        }
        // ORDERING: Relaxed, as above.
        let spare = self.spare.load(Ordering::Relaxed) as *mut Block<T>;
        // ORDERING: Relaxed, as above.
        let unused = self.unused.load(Ordering::Relaxed) as *mut Block<T>;
        // SAFETY: the chains' blocks hold no values and nobody can take
        // them now.
        unsafe {
            self.free_chain(spare);
            self.free_chain(unused);
        }
        self.budget.remove_queue();
    }
}

/// Creates a queue that holds up to `capacity` values (rounded up to a power
/// of two, at least 1), whose blocks beyond the first count against
/// `budget`, and whose consumer is due a wake-up once it holds `wake_at`
/// values (kept within 1..=half the capacity).
pub fn block_ring<T>(
    capacity: usize,
    wake_at: usize,
    budget: Arc<Budget>,
) -> (Producer<T>, Consumer<T>) {
    let capacity = capacity.max(1).next_power_of_two();
    let wake_at = wake_at.clamp(1, (capacity / 2).max(1));
    budget.add_queue();
    let first = Block::allocate();
    let queue = Arc::new(Queue {
        head: CachePadded::new(AtomicUsize::new(0)),
        tail: CachePadded::new(AtomicUsize::new(0)),
        mask: capacity - 1,
        spare: AtomicUsize::new(0),
        unused: AtomicUsize::new(0),
        head_block: UnsafeCell::new((first, BLOCK)),
        budget,
    });
    (
        Producer {
            queue: queue.clone(),
            tail: 0,
            cached_head: 0,
            // Refresh at the first push (sets the real schedule).
            check_at: 0,
            wake_at,
            reported_at: usize::MAX,
            block: first,
            block_end: BLOCK,
            relinked_at: usize::MAX,
        },
        Consumer {
            queue,
            wake_at,
            head: 0,
            cached_tail: 0,
            block: first,
            block_end: BLOCK,
        },
    )
}

/// The queue was full; the value is handed back.
#[derive(Debug, PartialEq, Eq)]
pub struct Full<T>(pub T);

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
    /// values, or per drain while full. The values that filled it were
    /// published before the call, which is what the doorbell's fence needs
    /// (`doorbell.rs`; its re-check sees only a queue past `wake_at`, so a
    /// full queue below it that rings while the consumer is going to sleep
    /// waits for the consumer's timer, as without the call).
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
            if self.cached_head != self.reported_at {
                self.reported_at = self.cached_head;
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
        self.queue.tail.store(self.tail, Ordering::Release);
        #[cfg(spanrec_loom_mutant = "ring_publish_relaxed")]
        self.queue.tail.store(self.tail, Ordering::Relaxed);
    }
}

/// The reading end of a queue.
pub struct Consumer<T> {
    queue: Arc<Queue<T>>,
    /// The producer's `wake_at`: the fill at which a wake-up is due.
    wake_at: usize,
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
    /// Removes the oldest value, if any.
    #[inline]
    pub fn pop(&mut self) -> Option<T> {
        if self.head == self.cached_tail {
            // ORDERING: Acquire pairs with the producer's Release store of
            // `tail`: its slot writes and links happen before our reads.
            self.cached_tail = self.queue.tail.load(Ordering::Acquire);
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
            self.cached_tail = self.queue.tail.load(Ordering::Acquire);
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
            ptr::copy_nonoverlapping(first, out.as_mut_ptr().add(len), run);
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

    /// Whether the queue holds at least `wake_at` values now (a fresh
    /// read of the producer's index): the flusher's re-check before it
    /// sleeps, the same threshold as the producer's `wake`.
    #[inline]
    pub fn wake_due(&mut self) -> bool {
        // ORDERING: Acquire pairs with the producer's Release store of
        // `tail` (like `pop`); under the doorbell protocol this load follows
        // the flusher's SeqCst fence (see `doorbell.rs`).
        self.cached_tail = self.queue.tail.load(Ordering::Acquire);
        self.cached_tail.wrapping_sub(self.head) >= self.wake_at
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

#[cfg(all(test, not(spanrec_loom)))]
mod tests;
