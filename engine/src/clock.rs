//! Span timestamps: raw TSC ticks on the hot path, UTC off it.
//!
//! Reading the wall clock costs a vDSO call (~25 ns here); reading the TSC
//! through `quanta` costs ~10 ns and no syscall. The tracer anchors one
//! (ticks, UTC) pair when it is built and converts ticks to UTC only where a
//! record is read, i.e. on the flusher thread (as fastrace does). Where the
//! CPU has no usable TSC, `quanta` falls back to the monotonic clock, whose
//! readings convert the same way.

use std::time::{SystemTime, UNIX_EPOCH};

pub(crate) struct Clock {
    source: quanta::Clock,
    anchor_ticks: u64,
    anchor_unix_nanos: u64,
    /// Nanoseconds per 2^32 ticks, from `quanta`'s calibration: converting
    /// a reading is then one multiply and a shift on the flusher, instead of
    /// `quanta`'s general path (a third of the flusher's work per span).
    nanos_per_2_32_ticks: u64,
    /// `source` reads the TSC: `now` then reads it directly, skipping
    /// `quanta`'s per-call dispatch on its clock kind.
    reads_tsc: bool,
}

/// The CPU's time-stamp counter.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn tsc() -> u64 {
    // SAFETY: `rdtsc` exists on every x86_64 CPU and only reads a counter:
    // no memory is touched, no precondition applies.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Whether `source` reads the TSC: three of its readings each fall between
/// two TSC readings taken around it. (A monotonic-clock source counts
/// nanoseconds, which do not fall between two TSC readings tens of
/// nanoseconds apart.) A false "no" only costs the faster path.
#[cfg(target_arch = "x86_64")]
fn reads_tsc(source: &quanta::Clock) -> bool {
    (0..3).all(|_| {
        let before = tsc();
        let reading = source.raw();
        let after = tsc();
        before <= reading && reading <= after
    })
}

#[cfg(not(target_arch = "x86_64"))]
fn reads_tsc(_: &quanta::Clock) -> bool {
    false
}

impl Clock {
    pub(crate) fn new() -> Clock {
        let source = quanta::Clock::new();
        // The wall clock is read right after the ticks; the anchor is off by
        // that gap (well under a microsecond), which is the same for every
        // span and so leaves durations exact.
        let anchor_ticks = source.raw();
        let wall = unix_nanos(SystemTime::now());
        Clock {
            nanos_per_2_32_ticks: source.delta_as_nanos(0, 1 << 32),
            reads_tsc: reads_tsc(&source),
            source,
            anchor_ticks,
            anchor_unix_nanos: wall,
        }
    }

    /// The current time in raw ticks.
    #[inline(always)]
    pub(crate) fn now(&self) -> u64 {
        #[cfg(target_arch = "x86_64")]
        if self.reads_tsc {
            return tsc();
        }
        self.source.raw()
    }

    #[inline]
    fn ticks_as_nanos(&self, ticks: u64) -> u64 {
        let nanos = (u128::from(ticks) * u128::from(self.nanos_per_2_32_ticks)) >> 32;
        u64::try_from(nanos).unwrap_or(u64::MAX)
    }

    /// Converts a tick reading to nanoseconds since the Unix epoch.
    #[inline]
    pub(crate) fn ticks_to_unix_nanos(&self, ticks: u64) -> u64 {
        if ticks >= self.anchor_ticks {
            self.anchor_unix_nanos
                .saturating_add(self.ticks_as_nanos(ticks - self.anchor_ticks))
        } else {
            self.anchor_unix_nanos
                .saturating_sub(self.ticks_as_nanos(self.anchor_ticks - ticks))
        }
    }
}

/// Nanoseconds since the Unix epoch; times before it count as the epoch, and
/// times past year 2554 saturate.
pub(crate) fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

#[cfg(all(test, not(spanrec_loom)))]
mod tests {
    use super::*;

    #[test]
    fn ticks_convert_to_wall_time() {
        let clock = Clock::new();
        let t = clock.now();
        let wall = unix_nanos(SystemTime::now());
        let converted = clock.ticks_to_unix_nanos(t);
        assert!(
            converted.abs_diff(wall) < 50_000_000,
            "{converted} vs {wall}"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
        let later = clock.now();
        let d = clock.ticks_to_unix_nanos(later) - clock.ticks_to_unix_nanos(t);
        assert!((4_000_000..1_000_000_000).contains(&d), "{d}");
        // The fixed-point conversion agrees with quanta's to a nanosecond
        // per second of span.
        let q = clock.source.delta_as_nanos(t, later);
        assert!(d.abs_diff(q) <= 1 + q / 1_000_000_000, "{d} vs {q}");
    }
}
