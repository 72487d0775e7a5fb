//! The tracer-wide ring memory budget: how many blocks all span queues may
//! hold beyond their first each (`Config::ring_memory_budget`).

use crate::sync::{Arc, AtomicUsize, Ordering};
use crossbeam_utils::CachePadded;

/// How many blocks the queues sharing it may hold beyond their first.
#[derive(Debug)]
pub struct Budget {
    /// Blocks allocated now by every queue sharing this budget (first
    /// blocks included).
    blocks: CachePadded<AtomicUsize>,
    /// Live queues: each has its first block outside the limit.
    queues: AtomicUsize,
    /// The most blocks all queues may hold beyond their first each.
    limit: usize,
}

impl Budget {
    /// A budget of `limit` blocks.
    pub fn new(limit: usize) -> Arc<Budget> {
        Arc::new(Budget {
            blocks: CachePadded::new(AtomicUsize::new(0)),
            queues: AtomicUsize::new(0),
            limit,
        })
    }

    /// Blocks allocated now.
    pub fn blocks(&self) -> usize {
        // ORDERING: Relaxed: a gauge, read for statistics.
        self.blocks.load(Ordering::Relaxed)
    }

    /// Counts a new queue and its first block (always granted).
    pub(super) fn add_queue(&self) {
        // ORDERING: Relaxed, see `take`.
        self.queues.fetch_add(1, Ordering::Relaxed);
        self.blocks.fetch_add(1, Ordering::Relaxed);
    }

    /// Uncounts a queue (its blocks are uncounted as they are freed).
    pub(super) fn remove_queue(&self) {
        // ORDERING: Relaxed, see `take`.
        self.queues.fetch_sub(1, Ordering::Relaxed);
    }

    /// Counts one more block; `false` (and nothing counted) when the
    /// budget is spent.
    pub(super) fn take(&self) -> bool {
        // ORDERING: Relaxed: the counts publish no data (a block's memory
        // passes between threads through the queue's own Release/Acquire
        // pairs), and a momentary overshoot by concurrent takers is undone
        // below.
        let before = self.blocks.fetch_add(1, Ordering::Relaxed);
        // ORDERING: Relaxed, as above.
        let queues = self.queues.load(Ordering::Relaxed);
        if before >= self.limit.saturating_add(queues) {
            // ORDERING: Relaxed, as above.
            self.blocks.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    pub(super) fn give_back(&self) {
        // ORDERING: Relaxed, see `take`.
        self.blocks.fetch_sub(1, Ordering::Relaxed);
    }
}
