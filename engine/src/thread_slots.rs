//! Per-thread state: each thread that touches a tracer gets a *slot* (the
//! protocol in `slot_protocol.rs`: a ring of finished span records to the flusher, a
//! ring of recycled extension buffers back) and a few counters.
//!
//! A thread registers its slot on its first span (one lock, the
//! only lock the span path ever takes, and only once per thread and tracer).
//! After that, finishing a span copies its record into the ring: no lock, no
//! syscall, no allocation. A span that needs an extension (see `record/ext.rs`)
//! pops a recycled one.
//!
//! Nothing is stranded: the flusher passes over every slot at least once
//! per flush interval, whether or not its thread is busy, so an idle
//! thread's spans move on (and a ring that fills past half wakes it
//! early, `doorbell.rs`); when a thread exits, its `SlotSender` drops, which marks
//! the slot exited, and the flusher drains and retires it.

use crate::record::{Ext, SpanRecord, Time};
use crate::room_wait::RoomWait;
use crate::shared::{self, Shared};
use crate::slot_protocol::{slot, Refused, SlotReceiver, SlotSender};
use crate::stats::ThreadCounters;
use crate::sync::{const_thread_local, thread_local, Arc, AtomicBool, Ordering};
use crate::OverflowPolicy;
use std::cell::{Cell, RefCell};

/// A slot's counters and identity, seen by the thread, the flusher and
/// `Tracer::stats`.
#[derive(Debug)]
pub(crate) struct SlotState {
    /// Set when the tracer is gone, so the thread can free its half early.
    pub(crate) tracer_gone: AtomicBool,
    /// Counters written only by the owning thread.
    pub(crate) counters: ThreadCounters,
    /// Unique within the tracer; extensions this thread allocates carry it
    /// as their `home`, and the flusher returns them here.
    pub(crate) id: u64,
    /// Where the owning thread waits for room under the `Block` policy;
    /// the flusher notifies it after draining this slot's ring.
    pub(crate) room: RoomWait,
}

/// The flusher's half of a slot.
pub(crate) struct FlusherSlot {
    pub(crate) receiver: SlotReceiver<SpanRecord, Box<Ext>>,
    pub(crate) state: Arc<SlotState>,
}

/// Recycled extensions kept aside by a thread when its return ring is empty
/// of them (from dropped and unsampled spans); beyond this many they are
/// freed.
const SPARE_CAPACITY: usize = 32;

/// The thread's half of a slot.
pub(crate) struct ThreadSlot {
    tracer_id: u64,
    /// For the clock and for allocating extensions.
    shared: Arc<Shared>,
    /// Dropped with the thread-local at thread exit, which tells the flusher.
    sender: SlotSender<SpanRecord, Box<Ext>>,
    #[allow(
        clippy::vec_box,
        reason = "a `Box<Ext>` is the unit records carry and the rings recycle: an 8-byte \
                  field in the 128-byte record, moved as a pointer"
    )]
    spare: Vec<Box<Ext>>,
    state: Arc<SlotState>,
}

/// A thread's slots, one per tracer it has used.
#[allow(
    clippy::vec_box,
    reason = "boxed so that a slot's address is stable while it is in the list (`LAST` points at one)"
)]
type Slots = Vec<Box<ThreadSlot>>;

thread_local! {
    /// Invariant: at most one slot per tracer id.
    static SLOTS: RefCell<Slots> = RefCell::new(Vec::new());
}

const_thread_local! {
    /// The slot this thread used last, as `(tracer id, slot)`; `(0, null)`
    /// when unset. Lets `start` and `finish` skip the `SLOTS` lookup (the
    /// lazy thread-local check, the `RefCell` borrow, the scan).
    ///
    /// Invariant: when the pointer is non-null, it points at a slot in this
    /// thread's `SLOTS`, and no borrow of `SLOTS` is active. Every borrow of
    /// `SLOTS` clears it first (`forget_last`) and sets it only after the
    /// borrow has ended (`remember_last`); a slot leaving `SLOTS` (dropped)
    /// clears it if it points there. A `&mut` reached through it (not through
    /// `SLOTS`) is held only by code that runs no caller code and calls no
    /// allocator: it frees nothing (extensions it does not keep are handed
    /// back and dropped after the borrow) and allocates nothing (`spare`
    /// never grows past its capacity), so a global allocator that itself
    /// records spans cannot reach the slot a second time.
    static LAST: Cell<(u64, *mut ThreadSlot)> = Cell::new((0, std::ptr::null_mut()));
}

#[inline(always)]
fn forget_last() {
    LAST.with(|l| l.set((0, std::ptr::null_mut())));
}

#[inline(always)]
fn remember_last(tracer_id: u64, slot: *mut ThreadSlot) {
    LAST.with(|l| l.set((tracer_id, slot)));
}

/// This thread's cached slot if it is `tracer_id`'s, else null.
#[inline(always)]
fn last(tracer_id: u64) -> *mut ThreadSlot {
    let (id, slot) = LAST.with(Cell::get);
    if id == tracer_id {
        slot
    } else {
        std::ptr::null_mut()
    }
}

/// Runs `f` on this thread's slot for `tracer_id` if it is the cached one.
#[inline(always)]
fn with_last<R>(tracer_id: u64, f: impl FnOnce(&mut ThreadSlot) -> R) -> Option<R> {
    let slot = last(tracer_id);
    if slot.is_null() {
        return None;
    }
    // `f` (starting or finishing a span) runs no caller code, so it never
    // borrows `SLOTS` or re-enters this function while `slot` is borrowed.
    // SAFETY: by the `LAST` invariant the slot is alive in `SLOTS` and no
    // borrow of `SLOTS` is active: this is the only reference to it.
    let slot = unsafe { &mut *slot };
    Some(f(slot))
}

impl Drop for ThreadSlot {
    fn drop(&mut self) {
        let this: *mut ThreadSlot = self;
        let _ = LAST.try_with(|l| {
            if l.get().1 == this {
                l.set((0, std::ptr::null_mut()));
            }
        });
    }
}

fn register(shared: &Arc<Shared>) -> Box<ThreadSlot> {
    let capacity = shared.config.ring_capacity;
    // The return ring has room for every extension this thread can have in
    // flight (its ring, the flusher's batch, its spare list), so returns do
    // not overflow in steady state.
    let (sender, receiver) = slot(
        capacity,
        shared.config.wake_at(),
        capacity + shared.config.max_batch_size + SPARE_CAPACITY,
        shared.ring_budget.clone(),
        shared.closed.clone(),
    );
    let state = Arc::new(SlotState {
        tracer_gone: AtomicBool::new(false),
        counters: ThreadCounters::default(),
        id: shared.next_slot_id(),
        room: RoomWait::new(),
    });
    shared.register(FlusherSlot {
        receiver,
        state: state.clone(),
    });
    Box::new(ThreadSlot {
        tracer_id: shared.id,
        shared: shared.clone(),
        sender,
        spare: Vec::with_capacity(SPARE_CAPACITY),
        state,
    })
}

/// Runs `f` on this thread's slot for tracer `tracer_id`, registering it on
/// first use (with `shared` if given, else the tracer found by id). `None`
/// when the thread-local is gone (thread teardown) or busy, or the tracer is.
#[inline]
fn with_slot<R>(
    tracer_id: u64,
    shared: Option<&Arc<Shared>>,
    f: impl FnOnce(&mut ThreadSlot) -> R,
) -> Option<R> {
    forget_last();
    let mut used: *mut ThreadSlot = std::ptr::null_mut();
    let result = SLOTS
        .try_with(|slots| {
            let mut slots = slots.try_borrow_mut().ok()?;
            let i = match slots.iter().position(|s| s.tracer_id == tracer_id) {
                Some(i) => i,
                None => {
                    let shared = match shared {
                        Some(s) => s.clone(),
                        None => shared::find(tracer_id)?,
                    };
                    // ORDERING: Relaxed, see `Shared::release`.
                    slots.retain(|s| !s.state.tracer_gone.load(Ordering::Relaxed));
                    slots.push(register(&shared));
                    slots.len() - 1
                }
            };
            let slot = &mut *slots[i];
            used = slot;
            Some(f(slot))
        })
        .ok()
        .flatten();
    if !used.is_null() {
        remember_last(tracer_id, used);
    }
    result
}

/// Counts a started span.
#[inline(always)]
pub(crate) fn count_started(shared: &Arc<Shared>) {
    let counted = with_last(shared.id, |slot| slot.state.counters.started.incr());
    if counted.is_none() {
        count_started_general(shared);
    }
}

#[cold]
#[inline(never)]
fn count_started_general(shared: &Arc<Shared>) {
    if with_slot(shared.id, Some(shared), |slot| {
        slot.state.counters.started.incr()
    })
    .is_none()
    {
        shared.count_late(|c| c.started.incr());
    }
}

/// A cleared extension for a span of tracer `tracer_id`: recycled if one is
/// at hand, else allocated (warm-up, or more extensions in flight than ever
/// before). `None` only when the tracer is gone.
///
/// The slot is borrowed only to take a buffer (through `LAST` when it is
/// cached: that borrow may neither free nor allocate); resetting, which may
/// free, and allocating happen after the borrow has ended.
#[cold]
#[inline(never)]
pub(crate) fn acquire_ext(tracer_id: u64) -> Option<Box<Ext>> {
    let taken =
        with_last(tracer_id, TakenExt::take).or_else(|| with_slot(tracer_id, None, TakenExt::take));
    match taken {
        Some(TakenExt::Spare(mut ext)) => {
            // Its span never reached the flusher: it may have grown.
            ext.trim();
            ext.reset();
            Some(ext)
        }
        Some(TakenExt::Recycled(mut ext)) => {
            // Reset here rather than on the flusher (see
            // `Ext::free_heap_off_the_hot_path`); not oversized: the
            // flusher trims what it gives back.
            ext.reset();
            Some(ext)
        }
        Some(TakenExt::Fresh(shared, home)) => Some(Ext::new(shared, home)),
        None => {
            // Thread teardown: an extension that belongs to no slot (home
            // 0), which the flusher frees after use.
            let shared = shared::find(tracer_id)?;
            shared.count_late(|c| c.buffers_allocated.incr());
            Some(Ext::new(shared, 0))
        }
    }
}

/// What `acquire_ext` took from the slot.
enum TakenExt {
    Spare(Box<Ext>),
    Recycled(Box<Ext>),
    /// None at hand: allocate one for this slot (tracer, slot id).
    Fresh(Arc<Shared>, u64),
}

impl TakenExt {
    /// Frees and allocates nothing (see `LAST`).
    #[inline(always)]
    fn take(slot: &mut ThreadSlot) -> TakenExt {
        if let Some(ext) = slot.spare.pop() {
            return TakenExt::Spare(ext);
        }
        if let Some(ext) = slot.sender.recycled() {
            return TakenExt::Recycled(ext);
        }
        slot.state.counters.buffers_allocated.incr();
        TakenExt::Fresh(slot.shared.clone(), slot.state.id)
    }
}

/// Keeps the extension of a span that never reached the flusher (a builder
/// dropped before `start`, a span dropped for a counted reason) for reuse.
pub(crate) fn recycle(ext: Option<Box<Ext>>) {
    if let Some(ext) = ext {
        let shared = ext.shared.clone();
        let excess = with_slot(shared.id, Some(&shared), |slot| slot.keep_spare(ext));
        drop(excess);
    }
}

/// Hands a finished span to the flusher, or counts why not. `at` is an
/// explicit finish time (Unix nanoseconds); `None` reads the clock. Takes
/// the record out of `span` (which the caller owns) so that it is copied
/// once, straight into the ring.
///
/// The common case (this thread has a slot, sampled, nothing truncated,
/// room in the ring) is inlined; everything else goes through
/// [`finish_general`].
#[inline(always)]
pub(crate) fn finish(span: &mut Option<SpanRecord>, at: Option<u64>) {
    let Some(record) = span.as_ref() else {
        return;
    };
    let common = at.is_none() && record.sampled() && record.truncations_if_any().is_none();
    // The cached slot is reached here without `with_last`: its closure was
    // not inlined once `finish_sampled` grew its doorbell call (+14
    // instructions per span under callgrind).
    if common {
        let slot = last(record.tracer_id);
        if !slot.is_null() {
            // SAFETY: `last` returned a non-null pointer: by the `LAST`
            // invariant the slot is alive in `SLOTS` and no borrow of
            // `SLOTS` is active, so this is the only reference to it;
            // `send_sampled` runs no caller code, allocates and frees
            // nothing (an allocator that records spans would re-enter here).
            if let Err(refused) = unsafe { &mut *slot }.send_sampled(span, None) {
                refused_general(span, refused);
            }
            return;
        }
    }
    finish_general(span, at);
}

/// The ring refused a span that `finish` sent through the cached slot: the
/// overflow policy runs through `SLOTS` (its `&mut` to the slot ended), so
/// that freeing the record's extension may re-enter the span path.
#[cold]
#[inline(never)]
fn refused_general(span: &mut Option<SpanRecord>, refused: Refused<()>) {
    let Some(tracer_id) = span.as_ref().map(|r| r.tracer_id) else {
        return;
    };
    let excess = with_slot(tracer_id, None, |slot| slot.refused(span, refused));
    drop(excess);
    // Unreachable in practice (`LAST` was set, so `SLOTS` is alive and
    // free), but never lose a span silently: it was counted as finished.
    if let Some(record) = span.take() {
        if let Some(shared) = shared::find(record.tracer_id) {
            shared.count_late(|c| c.shutdown.incr());
        }
    }
}

/// `finish` for every case: registers a slot for a span that moved here,
/// counts truncations and unsampled spans, takes explicit times.
#[cold]
#[inline(never)]
fn finish_general(span: &mut Option<SpanRecord>, at: Option<u64>) {
    let Some(tracer_id) = span.as_ref().map(|r| r.tracer_id) else {
        return;
    };
    let excess = with_slot(tracer_id, None, |slot| slot.finish(span, at));
    drop(excess);
    if let Some(record) = span.take() {
        finish_late(record, at);
    }
}

/// `finish` without a thread-local (thread teardown): the span goes to the
/// tracer's locked late list, which the flusher also drains. A span whose
/// tracer is gone has nobody left to count it.
#[cold]
fn finish_late(mut record: SpanRecord, at: Option<u64>) {
    let Some(shared) = shared::find(record.tracer_id) else {
        return;
    };
    shared.count_late(|c| {
        c.finished.incr();
        if let Some(t) = record.truncations_if_any() {
            c.add_truncations(t);
        }
    });
    if !record.sampled() {
        shared.count_late(|c| c.unsampled.incr());
        return;
    }
    // ORDERING: Relaxed, see `SlotSender::send`; `Tracer::stats` counts late
    // spans that arrive after the flusher exited.
    if shared.closed.load(Ordering::Relaxed) {
        shared.count_late(|c| c.shutdown.incr());
        return;
    }
    record.set_finish(match at {
        Some(t) => Time::UnixNanos(t),
        None => Time::Ticks(shared.clock.now()),
    });
    record.clear_truncations();
    shared.push_late(record);
}

/// The thread's ring holds `Config::wake_at` spans, or is full (each once
/// per drain): wake the flusher if it sleeps. The only syscall a finish
/// can make outside `Block`: at most once per drain; see `doorbell.rs`.
#[cold]
#[inline(never)]
fn ring_doorbell(shared: &Shared, state: &SlotState) {
    if shared.doorbell.ring() {
        state.counters.doorbells.incr();
        shared.wake_flusher();
    }
}

impl ThreadSlot {
    /// Takes the record out of `span` (into the ring, or counted); returns
    /// an extension not kept, for the caller to free (see `finish_sampled`).
    fn finish(&mut self, span: &mut Option<SpanRecord>, at: Option<u64>) -> Option<Box<Ext>> {
        let record = span.as_ref()?;
        let counters = &self.state.counters;
        if let Some(t) = record.truncations_if_any() {
            counters.add_truncations(t);
        }
        if !record.sampled() {
            // An unsampled span's times are never read: skip the clock.
            counters.finished.incr();
            counters.unsampled.incr();
            return self.recycle(span.take());
        }
        match self.send_sampled(span, at) {
            Ok(()) => None,
            Err(refused) => self.refused(span, refused),
        }
    }

    /// Stamps the finish time of a sampled span and sends it to the
    /// flusher. A refusal leaves the record in `span`, for [`Self::refused`]
    /// (reached through `SLOTS`, not `LAST`: it may free and sleep).
    #[inline(always)]
    fn send_sampled(
        &mut self,
        span: &mut Option<SpanRecord>,
        at: Option<u64>,
    ) -> Result<(), Refused<()>> {
        let Some(record) = span.as_mut() else {
            return Ok(());
        };
        self.state.counters.finished.incr();
        record.set_finish(match at {
            Some(t) => Time::UnixNanos(t),
            None => Time::Ticks(self.shared.clock.now()),
        });
        let (shared, state) = (&self.shared, &self.state);
        self.sender.send_from(span, || ring_doorbell(shared, state))
    }

    /// The ring refused the span: closed, or full (the overflow policy).
    #[cold]
    #[inline(never)]
    fn refused(&mut self, span: &mut Option<SpanRecord>, refused: Refused<()>) -> Option<Box<Ext>> {
        match refused {
            Refused::Closed(()) => {
                self.state.counters.shutdown.incr();
                self.recycle(span.take())
            }
            Refused::Full(()) => match self.shared.config.overflow {
                OverflowPolicy::DropNewest => self.drop_full(span.take()),
                OverflowPolicy::Block { timeout } => self.push_blocking(span, timeout),
            },
        }
    }

    #[cold]
    fn drop_full(&mut self, record: Option<SpanRecord>) -> Option<Box<Ext>> {
        self.state.counters.ring_full.incr();
        self.recycle(record)
    }

    /// The `Block` policy: wait for room, spinning first, then yielding,
    /// then parked until the flusher drains (`room_wait.rs`), at most
    /// `timeout` in all.
    #[cold]
    fn push_blocking(
        &mut self,
        span: &mut Option<SpanRecord>,
        timeout: std::time::Duration,
    ) -> Option<Box<Ext>> {
        if self.shared.in_forked_child() {
            // A tracer inherited through `fork()`: its flusher runs only
            // in the parent, nothing will ever make room. Waiting would
            // stall every `finish` for `timeout`.
            self.state.counters.block_timeout.incr();
            return self.recycle(span.take());
        }
        let start = std::time::Instant::now();
        let deadline = start.checked_add(timeout);
        // The refusal that brought us here has rung the doorbell already
        // (or the ring rang at `wake_at` for this drain, and the flusher's
        // re-check sees it past `wake_at`); each attempt that finds the
        // ring drained since and full again rings once more.
        let mut try_push = || {
            let (shared, state) = (&self.shared, &self.state);
            match self.sender.send_from(span, || ring_doorbell(shared, state)) {
                Ok(()) => Some(true),
                Err(Refused::Full(())) => None,
                Err(Refused::Closed(())) => Some(false),
            }
        };
        let mut sent = None;
        // Room usually comes within a flusher pass: spin, then yield.
        for attempt in 0..128 {
            if attempt >= 64 {
                std::thread::yield_now();
            } else if attempt > 0 {
                std::hint::spin_loop();
            }
            sent = try_push();
            if sent.is_some() || deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                break;
            }
        }
        if sent.is_none() {
            // A timeout past `Instant`'s range waits as long as it takes.
            let far = start + std::time::Duration::from_secs(1 << 32);
            sent = self
                .state
                .room
                .wait_until(deadline.unwrap_or(far), try_push);
        }
        match sent {
            Some(true) => None,
            Some(false) => {
                self.state.counters.shutdown.incr();
                self.recycle(span.take())
            }
            None => {
                self.state.counters.block_timeout.incr();
                self.recycle(span.take())
            }
        }
    }

    /// Keeps the extension of a record that goes no further; returns it
    /// when the spare list is full, for the caller to free.
    #[inline]
    #[must_use = "the returned extension must be freed after the slot's borrow ends"]
    fn recycle(&mut self, record: Option<SpanRecord>) -> Option<Box<Ext>> {
        self.keep_spare(record.and_then(SpanRecord::into_ext)?)
    }

    /// Keeps `ext` aside (no allocation: `spare` never grows past its
    /// initial capacity); returns it when the list is full.
    #[inline]
    #[must_use = "the returned extension must be freed after the slot's borrow ends"]
    fn keep_spare(&mut self, ext: Box<Ext>) -> Option<Box<Ext>> {
        if self.spare.len() < SPARE_CAPACITY {
            self.spare.push(ext);
            None
        } else {
            Some(ext)
        }
    }
}
