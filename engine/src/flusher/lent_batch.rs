//! The batch the flusher lends to the recorder, held where the records lie:
//! runs of records read in place in the threads' rings (no copy: the
//! threads wrote them there), and runs in a buffer of its own for records
//! that are not in a ring (late spans) or had to leave their ring before
//! the batch was due (a spill).
//!
//! A record read in place stays its ring's until released: the producer
//! does not reuse its slot (`Consumer::read_in_place`), so a ring holds
//! the flusher's share of the batch besides what its thread has in flight.
//! The batch is released after the recorder's call, or spilled when a ring
//! it holds records in is due (its thread would wake the flusher, or found
//! the ring full): so a full ring gets its room back before the flusher
//! sleeps, and the doorbell's re-check does not keep it awake.

use super::Slot;
use crate::record::SpanRecord;
use crate::recorder::{Batch, Run};
use crate::shared::Shared;
use std::collections::HashMap;
use std::ptr::NonNull;

pub(super) struct LentBatch {
    /// The records, in order.
    ///
    /// Invariant: every run is a [`Run`] (initialized records nobody else
    /// touches) until `release` or `spill`: a ring's runs are values it
    /// read in place and has not released (`held` counts them), the others
    /// are `owned`'s records.
    runs: Vec<Run>,
    /// The records in `runs`.
    len: usize,
    /// (index in the flusher's slots, count) of the records read in place
    /// and not released, per ring (a ring may appear more than once: the
    /// counts add up).
    ///
    /// Invariant: the slots' indices do not change while it is not empty
    /// (the flusher retires slots only when it is).
    held: Vec<(usize, usize)>,
    /// Records of the batch that are not in a ring: late spans and
    /// spilled ones.
    ///
    /// Invariant: never reallocated while a run points into it (while it
    /// holds records): `add_owned` hands a record back rather than grow it.
    owned: Vec<SpanRecord>,
    /// An empty buffer to spill into next (`owned`'s predecessor, kept to
    /// spare an allocation).
    spill_to: Vec<SpanRecord>,
    /// The indices in the batch of the records that hold an extension,
    /// noted as each record arrives (its lines in cache), so that handing
    /// the extensions back after the recorder touches only those records,
    /// not every line of a batch the recorder has long evicted.
    ///
    /// Invariant: exactly the records of the batch with an extension, in
    /// order (records gain no extension once in it: the recorder sees them
    /// shared).
    with_ext: Vec<usize>,
    /// Records in a full batch.
    max: usize,
}

impl LentBatch {
    pub(super) fn new(max: usize) -> Self {
        LentBatch {
            runs: Vec::new(),
            len: 0,
            held: Vec::new(),
            owned: Vec::new(),
            spill_to: Vec::new(),
            with_ext: Vec::with_capacity(max),
            max: max.max(1),
        }
    }

    /// Records in the batch.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Whether the batch holds records in some ring (which keeps the
    /// flusher from retiring slots: `held` names them by index).
    pub(super) fn holds_ring_records(&self) -> bool {
        !self.held.is_empty()
    }

    /// Adds the records the ring at `slot` just read in place, from
    /// `first` on, `len` of them.
    pub(super) fn add_read_in_place(
        &mut self,
        slot: usize,
        first: NonNull<SpanRecord>,
        len: usize,
        shared: &Shared,
    ) {
        match self.held.last_mut() {
            Some((i, n)) if *i == slot => *n += len,
            _ => self.held.push((slot, len)),
        }
        // The run's invariant: read in place, released only through
        // `held`.
        self.took(Run { first, len }, shared);
    }

    /// Whether `add_owned` has room without moving `owned` (into which
    /// runs point): if not, deliver the batch first.
    pub(super) fn owned_has_room(&self) -> bool {
        self.owned.len() < self.owned.capacity() || self.owned.is_empty()
    }

    /// Adds a record that is not in a ring (a late span). The caller made
    /// sure `owned_has_room`; were it not so, the record would be counted
    /// as a recorder error rather than move `owned` under the runs.
    pub(super) fn add_owned(&mut self, record: SpanRecord, shared: &Shared) {
        if self.owned.len() == self.owned.capacity() {
            if !self.owned.is_empty() {
                debug_assert!(false, "add_owned without room");
                shared.flusher_counters.recorder_error_drops.incr();
                drop(record);
                return;
            }
            // Empty: no run points into it.
            self.owned.reserve_exact(self.max);
        }
        self.owned.push(record);
        let Some(first) = self.owned_record(self.owned.len() - 1) else {
            return;
        };
        // The run's invariant: `owned` is not moved while it has records.
        self.took(Run { first, len: 1 }, shared);
    }

    /// A pointer to `owned[i]` (`None` past its end), made without a
    /// reference to the vector's slice: one would retag every element and,
    /// by the aliasing rules, invalidate the pointers earlier runs hold
    /// into `owned` (`Vec::as_mut_ptr` and `push` materialize none).
    fn owned_record(&mut self, i: usize) -> Option<NonNull<SpanRecord>> {
        if i >= self.owned.len() {
            return None;
        }
        // SAFETY: `i < len`: within the vector's allocation.
        NonNull::new(unsafe { self.owned.as_mut_ptr().add(i) })
    }

    /// Readies the records of `run` and adds them to the batch.
    fn took(&mut self, run: Run, shared: &Shared) {
        // SAFETY: the run's records are initialized and ours alone (read
        // in place and not released, or in `owned`); no other reference to
        // them exists during this loop.
        let records = unsafe { std::slice::from_raw_parts_mut(run.first.as_ptr(), run.len) };
        for (k, record) in records.iter_mut().enumerate() {
            record.prepare_for_recorder(shared);
            if record.has_ext() {
                self.with_ext.push(self.len + k);
            }
        }
        self.len += run.len;
        let owned = self.owned.as_ptr_range();
        match self.runs.last_mut() {
            // Late spans one after another in `owned`: one run.
            Some(last)
                if owned.contains(&last.first.as_ptr().cast_const())
                    && last.first.as_ptr().wrapping_add(last.len) == run.first.as_ptr() =>
            {
                last.len += run.len;
            }
            _ => self.runs.push(run),
        }
    }

    /// The batch, lent: valid while borrowed, as nothing releases its
    /// records through a shared borrow (the runs' invariant holds for it).
    pub(super) fn lend<'a>(
        &'a self,
        process: &'a crate::Process,
        dropped: Option<crate::DropCounts>,
    ) -> Batch<'a> {
        Batch {
            runs: &self.runs,
            len: self.len,
            process,
            dropped,
        }
    }

    /// After the recorder's call: sends every extension back to the thread
    /// that allocated it and releases the records; the batch is empty.
    pub(super) fn finish(&mut self, slots: &mut [Slot], homes: &HashMap<u64, usize>) {
        self.give_extensions_back(slots, homes);
        self.release(slots);
    }

    /// Takes the extension out of every record that has one (`with_ext`)
    /// and sends it back to its thread.
    fn give_extensions_back(&mut self, slots: &mut [Slot], homes: &HashMap<u64, usize>) {
        // The last home looked up: a batch holds runs of one thread's
        // spans, and a hit saves hashing the slot id.
        let mut last_home: Option<(u64, usize)> = None;
        // The run holding batch index `i`, walked forward with `with_ext`
        // (in order): `run_start` is the batch index of its first record.
        let (mut run, mut run_start) = (0, 0);
        for &i in &self.with_ext {
            while i >= run_start + self.runs[run].len {
                run_start += self.runs[run].len;
                run += 1;
            }
            // SAFETY: `i - run_start` is within this run, whose records are
            // ours until `release` (the runs' invariant); the recorder's
            // borrow has ended (`finish` takes `&mut self`).
            let record = unsafe { &mut *self.runs[run].first.as_ptr().add(i - run_start) };
            // The record is released right after: nothing reads its
            // strings once its extension is gone.
            let Some(mut ext) = record.take_ext() else {
                continue;
            };
            ext.free_heap_off_the_hot_path();
            // Back to the thread that allocated it, so a thread whose spans
            // finish elsewhere (work-stealing runtimes) still never allocates
            // in steady state. An extension whose home is gone, or whose
            // return ring is full (more of its spans in flight than ever
            // before), is freed here, off the hot path.
            let home = match last_home {
                Some((id, i)) if id == ext.home => Some(i),
                _ => homes.get(&ext.home).copied(),
            };
            if let Some(i) = home {
                last_home = Some((ext.home, i));
                let _ = slots[i].inner.receiver.give_back(ext);
            }
        }
        self.with_ext.clear();
    }

    /// Releases every record and empties the batch.
    ///
    /// Records are forgotten, not dropped: dropping would read each one
    /// again (its `ext` field), a line per span long evicted by the
    /// recorder. Nothing is left to drop: `give_extensions_back` took
    /// every extension (`with_ext`'s invariant), and a record owns nothing
    /// else; were that wrong, an extension would leak, which is memory,
    /// not unsoundness.
    fn release(&mut self, slots: &mut [Slot]) {
        debug_assert!(self.runs.iter().all(|run| {
            // SAFETY: the runs' invariant, until the releases below.
            unsafe { std::slice::from_raw_parts(run.first.as_ptr(), run.len) }
                .iter()
                .all(|r| !r.has_ext())
        }));
        self.release_rings(slots);
        // SAFETY: a length of 0 is within the capacity and leaves no
        // element to be initialized (the records are forgotten, above).
        unsafe { self.owned.set_len(0) };
        self.runs.clear();
        self.len = 0;
    }

    /// Releases the records read in place (forgotten, not dropped: what
    /// they own was taken or moved) and wakes any thread waiting for room
    /// in those rings (`Block`).
    fn release_rings(&mut self, slots: &mut [Slot]) {
        for &(i, n) in &self.held {
            slots[i].inner.receiver.forget_read(n);
            slots[i].inner.state.room.notify();
        }
        self.held.clear();
    }

    /// Before the flusher sleeps: if a ring the batch holds records in is
    /// due (it holds `wake_at` values, or its thread found it full),
    /// moves the batch out of the rings (`spill`). Otherwise the batch
    /// stays where it lies: a ring holds `wake_at` values before it is
    /// due, by default `max_batch_size` or more. Returns how many records
    /// left a ring (`Stats::spilled`).
    pub(super) fn spill_if_rings_due(&mut self, slots: &mut [Slot]) -> usize {
        if !self
            .held
            .iter()
            .any(|&(i, _)| slots[i].inner.receiver.wake_due())
        {
            return 0;
        }
        let from_rings = self.held.iter().map(|&(_, n)| n).sum();
        self.spill(slots);
        from_rings
    }

    /// Moves the batch's records, in order, into a buffer of our own and
    /// releases them in the rings.
    fn spill(&mut self, slots: &mut [Slot]) {
        let mut to = std::mem::take(&mut self.spill_to);
        debug_assert!(to.is_empty());
        // Room for a whole batch: late spans may be added after.
        to.reserve_exact(self.max.max(self.len));
        for run in &self.runs {
            // SAFETY: the run's records are initialized and ours (its
            // invariant); `to` has room (reserved above, `len` in all).
            // They are moved bitwise: their old places are released below
            // without dropping them (`release_rings`, `owned`'s `set_len`).
            unsafe {
                let at = to.len();
                std::ptr::copy_nonoverlapping(run.first.as_ptr(), to.as_mut_ptr().add(at), run.len);
                to.set_len(at + run.len);
            }
        }
        self.release_rings(slots);
        // SAFETY: as in `release`: `owned`'s records were moved into `to`.
        unsafe { self.owned.set_len(0) };
        self.spill_to = std::mem::replace(&mut self.owned, to);
        self.runs.clear();
        if let Some(first) = self.owned_record(0) {
            // The run's invariant: `owned`'s records; `owned` is not moved
            // while it holds them.
            self.runs.push(Run {
                first,
                len: self.owned.len(),
            });
        }
    }
}
