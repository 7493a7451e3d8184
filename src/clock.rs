//! The monotonic clock the counting layers read.
//!
//! A circuit breaker that times its calls reads the time twice per call (start and end),
//! so the clock is on the hot path. [`Clock::system`], the default, reads the CPU's
//! time-stamp counter through [`quanta`] (cheaper than the OS clock, which it falls back
//! to where the counter is unreliable). What a read costs on your machine: the `clock`
//! group of the layers bench, `cargo bench --bench layers -- clock/`, against
//! `std::time::Instant`.
//!
//! Every breaker call reads the counter directly, the untimed ones too (to file the
//! outcome in its window's bucket). A process-wide `palisade-clock` thread that stored
//! a *recent* reading every 1 to 10 ms, for untimed calls to load instead, was retired:
//! it was to stay only with a clear win (more than 10 %, consistently), and it showed
//! none. Built both ways and alternated 8 times
//! (`CRITERION_HOME=<dir> cargo bench --bench layers -- palisade_breaker`, a shared
//! 2-core machine at load 5 to 14), the untimed breaker with plain reads against the
//! recent reading, medians of the runs' medians: `contended/palisade_breaker` 35.9 vs
//! 29.8 ns at 1 worker (1.21), 30.3 vs 28.9 at 2 (1.05), 24.7 vs 23.1 at 4 (1.07);
//! `per_call/palisade_breaker`, 6 runs of that group alone, 85.5 vs 84.1 ns (1.02).
//!
//! quanta's own upkeep clock (`quanta::Upkeep`, read with `quanta::Clock::recent`) was
//! not used in its place: only one upkeep thread may run per process (a second `start`
//! fails), so a library that started it would take it from the application or fail
//! beside it; its interval is fixed by whoever started it; `recent` reads 0 while no
//! upkeep runs, so every reader needs its own fallback; it stores scaled instants, not
//! the raw ticks the call path converts; and dropping its handle joins the thread.
//!
//! Tests pick one of the other two:
//! - [`Clock::tokio`] follows tokio's clock, so a runtime started with
//!   `start_paused = true` and driven by `tokio::time::advance` drives the breaker too;
//! - [`Clock::manual`] is a clock that moves only when told to.
//!
//! A clock reads as nanoseconds since its own origin; clones share the origin.
//!
//! Inside the crate, a call path that needs both a duration and a timestamp reads raw
//! *ticks* (the counter's own unit) and converts them only when it has both ends: a
//! conversion is one multiplication by a fixed-point scale derived once from quanta's
//! calibration, with no call and no branch.
//!
//! ```
//! use palisade::clock::Clock;
//! use std::time::Duration;
//!
//! let (clock, hand) = Clock::manual();
//! assert_eq!(clock.now(), 0);
//! hand.advance(Duration::from_millis(3));
//! assert_eq!(clock.now(), 3_000_000);
//! ```

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A cheap, cloneable monotonic clock. See the [module docs](self).
#[derive(Clone)]
pub struct Clock {
    source: Source,
    /// The tick reading at the origin (0 for the clocks that count nanoseconds).
    origin: u64,
    /// Nanoseconds per 2^[`SCALE_SHIFT`] ticks.
    scale: u64,
}

/// The fixed-point shift of [`Clock::scale`]: ticks are converted with one 64×64-bit
/// multiplication and one constant shift.
const SCALE_SHIFT: u32 = 40;

/// Explicitly tagged (no niche in quanta's clock), so that telling the sources apart
/// on the hot path is one byte compare; the system clock comes first.
#[derive(Clone)]
#[repr(u8)]
enum Source {
    /// Reads ticks of the CPU's counter (or of the OS clock, where quanta found the
    /// counter unreliable).
    System(quanta::Clock),
    /// Reads nanoseconds since `origin`.
    Tokio { origin: tokio::time::Instant },
    /// Reads nanoseconds.
    Manual(Arc<AtomicU64>),
}

impl Clock {
    /// The fast system clock (the default): the CPU's time-stamp counter where it is
    /// reliable (see the [module docs](self)).
    pub fn system() -> Self {
        let clock = quanta::Clock::new();
        // quanta converts ticks with its own calibration; derive from it the scale of
        // 2^SCALE_SHIFT ticks once, so that a conversion needs no call and no branch.
        // The relative rounding error is below one part in 10^11.
        let scale = clock.delta_as_nanos(0, 1 << SCALE_SHIFT).max(1);
        let origin = clock.raw();
        Clock {
            source: Source::System(clock),
            origin,
            scale,
        }
    }

    /// A clock that reads `tokio::time::Instant::now()`, so it pauses and advances with a
    /// paused tokio runtime.
    pub fn tokio() -> Self {
        Self::counting_nanos(Source::Tokio {
            origin: tokio::time::Instant::now(),
        })
    }

    /// A clock that stands still until its [`ManualClock`] hand moves it.
    pub fn manual() -> (Self, ManualClock) {
        let t = Arc::new(AtomicU64::new(0));
        (
            Self::counting_nanos(Source::Manual(t.clone())),
            ManualClock(t),
        )
    }

    fn counting_nanos(source: Source) -> Self {
        Clock {
            source,
            origin: 0,
            scale: 1 << SCALE_SHIFT,
        }
    }

    /// Nanoseconds since this clock's origin.
    #[inline]
    pub fn now(&self) -> u64 {
        self.ticks_to_nanos(self.ticks())
    }

    /// The raw reading: ticks of the CPU's counter for the system clock, nanoseconds
    /// for the others. Ticks are only meaningful to [`ticks_to_nanos`] and
    /// [`nanos_between`] of the same clock (or a clone).
    ///
    /// [`ticks_to_nanos`]: Self::ticks_to_nanos
    /// [`nanos_between`]: Self::nanos_between
    #[inline]
    pub(crate) fn ticks(&self) -> u64 {
        match &self.source {
            Source::System(clock) => clock.raw(),
            Source::Tokio { origin } => {
                let d = tokio::time::Instant::now().saturating_duration_since(*origin);
                u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
            }
            Source::Manual(t) => t.load(Ordering::Acquire),
        }
    }

    /// Converts a [`ticks`](Self::ticks) reading to nanoseconds since the origin (0
    /// for a reading before it).
    #[inline]
    pub(crate) fn ticks_to_nanos(&self, ticks: u64) -> u64 {
        self.nanos_between(self.origin, ticks)
    }

    /// The nanoseconds from one [`ticks`](Self::ticks) reading to a later one (0 if
    /// `end` is not later, as when a thread moved to a core whose counter lags).
    #[inline]
    pub(crate) fn nanos_between(&self, start: u64, end: u64) -> u64 {
        let ticks = end.saturating_sub(start);
        let nanos = (u128::from(ticks) * u128::from(self.scale)) >> SCALE_SHIFT;
        // Fits: it would take centuries of uptime on a counter slower than 1 GHz to
        // overflow, and the nanosecond clocks convert 1:1.
        nanos as u64
    }

    /// Converts a reading of this clock into tokio's time, for scheduling a timer at it.
    pub fn to_tokio_instant(&self, nanos: u64) -> tokio::time::Instant {
        let now_nanos = self.now();
        let now = tokio::time::Instant::now();
        if nanos >= now_nanos {
            now + Duration::from_nanos(nanos - now_nanos)
        } else {
            now.checked_sub(Duration::from_nanos(now_nanos - nanos))
                .unwrap_or(now)
        }
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::system()
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.source {
            Source::System(_) => "system",
            Source::Tokio { .. } => "tokio",
            Source::Manual(_) => "manual",
        };
        f.debug_tuple("Clock").field(&kind).finish()
    }
}

/// The hand of a [`Clock::manual`] clock.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_nanos() as u64, Ordering::AcqRel);
    }

    /// The current reading, in nanoseconds since the origin.
    pub fn now(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_clock_is_monotonic() {
        let c = Clock::system();
        let a = c.now();
        let b = c.now();
        assert!(b >= a);
    }

    #[test]
    fn system_ticks_convert_like_quanta() {
        let c = Clock::system();
        let Source::System(q) = &c.source else {
            unreachable!()
        };
        let start = c.ticks();
        for end in [
            start,
            start + 1,
            start + 1_000,
            start + 3_000_000_000,
            start + (1 << 50),
        ] {
            let ours = c.nanos_between(start, end);
            let quanta = q.delta_as_nanos(start, end);
            // Within a nanosecond plus one part in 10^10.
            assert!(
                ours.abs_diff(quanta) <= 1 + quanta / 10_000_000_000,
                "{ours} vs {quanta}"
            );
        }
        assert_eq!(c.nanos_between(start + 10, start), 0, "never backwards");
        assert!(c.ticks_to_nanos(c.ticks()) >= c.ticks_to_nanos(start));
    }

    #[test]
    fn manual_ticks_are_nanoseconds() {
        let (c, hand) = Clock::manual();
        hand.advance(Duration::from_nanos(1_234_567));
        assert_eq!(c.ticks(), 1_234_567);
        assert_eq!(c.ticks_to_nanos(c.ticks()), 1_234_567);
        assert_eq!(c.nanos_between(1_000, 1_234_567), 1_233_567);
        assert_eq!(c.ticks_to_nanos(u64::MAX), u64::MAX);
    }

    #[tokio::test(start_paused = true)]
    async fn tokio_clock_follows_paused_time() {
        let c = Clock::tokio();
        let a = c.now();
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(c.now() - a, 2_000_000_000);
    }
}
