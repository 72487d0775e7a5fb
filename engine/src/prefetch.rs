//! Cache prefetch hints for the flusher's reads of finished records.
//!
//! A record is written on a request thread and read on the flusher thread,
//! so every line of it the recorder touches is a cross-core cache miss;
//! profiling the Mongo encoder showed half its time waiting on those. While
//! the recorder works on one record, [`Batch::iter`](crate::Batch::iter)
//! asks the CPU to start fetching the next ones, so the misses overlap with
//! work instead of following each other.

/// Hints the CPU to load the cache line holding `p` into L1. A prefetch
/// never faults and has no architectural effect: `p` may dangle.
#[inline(always)]
pub(crate) fn line<T: ?Sized>(p: *const T) {
    #[cfg(all(target_arch = "x86_64", not(spanrec_loom)))]
    // SAFETY: `prefetcht0` is a hint: it never dereferences `p` in the
    // language's sense and cannot fault, whatever `p` is.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p.cast::<i8>());
    }
    #[cfg(not(all(target_arch = "x86_64", not(spanrec_loom))))]
    let _ = p;
}

const LINE: usize = 64;
/// Enough for a record and the first few entries of each of its arrays;
/// beyond that the hardware prefetcher has seen the stride.
const MAX_LINES: usize = 8;

/// Hints every cache line of `bytes` bytes from `p` (at most `MAX_LINES`).
#[inline(always)]
pub(crate) fn lines(p: *const u8, bytes: usize) {
    let end = bytes.min(LINE * MAX_LINES);
    let mut offset = 0;
    while offset < end {
        line(p.wrapping_add(offset));
        offset += LINE;
    }
}

/// Hints the cache lines of a slice's elements.
#[inline(always)]
pub(crate) fn slice<T>(s: &[T]) {
    lines(s.as_ptr().cast(), core::mem::size_of_val(s));
}
