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
            source,
            anchor_ticks,
            anchor_unix_nanos: wall,
        }
    }

    /// The current time in raw ticks.
    #[inline(always)]
    pub(crate) fn now(&self) -> u64 {
        self.source.raw()
    }

    /// Converts a tick reading to nanoseconds since the Unix epoch.
    pub(crate) fn ticks_to_unix_nanos(&self, ticks: u64) -> u64 {
        if ticks >= self.anchor_ticks {
            self.anchor_unix_nanos + self.source.delta_as_nanos(self.anchor_ticks, ticks)
        } else {
            self.anchor_unix_nanos
                .saturating_sub(self.source.delta_as_nanos(ticks, self.anchor_ticks))
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
    }
}
