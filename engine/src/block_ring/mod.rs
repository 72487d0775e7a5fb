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
mod consumer;
mod producer;
pub use budget::Budget;
pub use consumer::Consumer;
pub use producer::Producer;

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

/// The producer's side of a queue: both written only by the producer, both
/// read by the consumer's re-check, one cache line.
struct Pushed {
    /// Count of values ever pushed.
    tail: AtomicUsize,
    /// The `head` at which the producer last found the queue full and
    /// called its `wake` (`usize::MAX`: never), so that the consumer's
    /// `wake_due` re-check sees a full queue below `wake_at` (no block
    /// left within the budget) until it has read from it.
    ///
    /// Invariant: written with the `head` the producer had just acquired
    /// (so never ahead of the real one), before the `wake` call whose fence
    /// orders it for the doorbell; equal to `head` only while the consumer
    /// has read nothing since that refusal.
    refused_at: AtomicUsize,
}

/// The shared part of a queue.
struct Queue<T> {
    /// Count of values ever popped. Written only by the consumer.
    ///
    /// Invariant: `head <= tail` and `tail - head <= capacity` (wrapping).
    head: CachePadded<AtomicUsize>,
    /// What the producer publishes, on one line: the consumer's `wake_due`
    /// re-check reads `refused_at` from the line it just read `tail` from.
    pushed: CachePadded<Pushed>,
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
        let tail = self.pushed.tail.load(Ordering::Relaxed);
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
        pushed: CachePadded::new(Pushed {
            tail: AtomicUsize::new(0),
            refused_at: AtomicUsize::new(usize::MAX),
        }),
        mask: capacity - 1,
        spare: AtomicUsize::new(0),
        unused: AtomicUsize::new(0),
        head_block: UnsafeCell::new((first, BLOCK)),
        budget,
    });
    (
        Producer::new(queue.clone(), first, wake_at),
        Consumer::new(queue, first, wake_at),
    )
}

/// The queue was full; the value is handed back.
#[derive(Debug, PartialEq, Eq)]
pub struct Full<T>(pub T);

#[cfg(all(test, not(spanrec_loom)))]
mod tests;
