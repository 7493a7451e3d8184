//! Capped exponential backoff with jitter: the one delay rule of the breaker's open
//! period, the transport's reconnects and gossip's join rounds.
//!
//! Attempt `n` (0-based) has the nominal delay
//!
//! ```text
//! nominal(n) = min(max, base * multiplier^n)
//! ```
//!
//! and waits a time drawn uniformly from `[nominal * (1 - jitter), nominal]`: jitter only
//! ever shortens a delay, so the cap holds and a `jitter` of 0 is the plain exponential.
//! [`Backoff::new`] doubles (`multiplier` 2) with a `jitter` of ½ ("equal jitter"): the
//! floor of half the nominal keeps a crowd of clients from hammering a restarting peer,
//! the random half spreads them out. The breaker's
//! [`exponential_backoff`](crate::breaker::BreakerConfigBuilder::exponential_backoff)
//! chooses both on its builder (jitter 0 by default).
//!
//! Whole-number growth (every power of 2) is computed exactly in nanoseconds; a
//! fractional multiplier goes through `f64`. Both saturate at the cap, so no attempt
//! number, however large, overflows.
//!
//! ```
//! use palisade::backoff::Backoff;
//! use std::time::Duration;
//!
//! let backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(1));
//! assert_eq!(backoff.ceiling(2), Duration::from_millis(200));
//! assert_eq!(backoff.ceiling(99), Duration::from_secs(1));
//! let delay = backoff.delay(2, &mut rand::rng());
//! assert!(delay >= Duration::from_millis(100) && delay <= Duration::from_millis(200));
//! ```

use std::time::Duration;

use rand::Rng;

/// Capped exponential backoff with jitter. See the [module docs](self) for the formula.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    /// Finite and at least 1.
    multiplier: f64,
    /// From 0 to 1.
    jitter: f64,
}

// Neither float is ever NaN (see the constructors), so equality is an equivalence.
impl Eq for Backoff {}

impl Backoff {
    /// A backoff from `base` doubling up to `max` (`max` is raised to `base` if
    /// smaller), each delay drawn from the upper half of its nominal value.
    pub fn new(base: Duration, max: Duration) -> Self {
        Self::exponential(base, max, 2.0, 0.5)
    }

    /// Any multiplier and jitter; the callers validate them (the breaker's builder
    /// rejects the others with a `ConfigError`), and out-of-range values are clamped
    /// into range here so that no input breaks the formula.
    pub(crate) fn exponential(base: Duration, max: Duration, multiplier: f64, jitter: f64) -> Self {
        let multiplier = if multiplier.is_nan() {
            1.0
        } else {
            multiplier.max(1.0)
        };
        let jitter = if jitter.is_nan() {
            0.0
        } else {
            jitter.clamp(0.0, 1.0)
        };
        Backoff {
            base,
            max: max.max(base),
            multiplier,
            jitter,
        }
    }

    /// The nominal (un-jittered) delay of attempt `attempt` (0-based):
    /// `min(max, base * multiplier^attempt)`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let exponent = i32::try_from(attempt).unwrap_or(i32::MAX);
        let growth = self.multiplier.powi(exponent);
        let base = self.base.as_nanos();
        // Below 2^64 a whole-number growth converts exactly; an infinite one is not
        // whole (its fractional part is NaN) and saturates through the float path.
        let nominal = if growth.fract() == 0.0 && growth < 18_446_744_073_709_551_616.0 {
            base.saturating_mul(growth as u128)
        } else {
            // Float-to-integer casts saturate: infinity becomes u128::MAX.
            (base as f64 * growth) as u128
        };
        from_nanos(nominal.min(self.max.as_nanos()))
    }

    /// The jittered delay of attempt `attempt`, drawn from `rng`: uniform in
    /// `[ceiling * (1 - jitter), ceiling]`. Draws nothing when there is nothing to
    /// jitter (a `jitter` of 0).
    pub fn delay(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling(attempt);
        let nanos = ceiling.as_nanos();
        // `min`: the float product may round up past `nanos` when jitter is 1.
        let spread = ((nanos as f64 * self.jitter) as u128).min(nanos);
        if spread == 0 {
            return ceiling;
        }
        ceiling - from_nanos(rng.random_range(0..=spread))
    }
}

/// `nanos` as a duration; callers pass at most `Duration::MAX`'s nanoseconds.
fn from_nanos(nanos: u128) -> Duration {
    const PER_SEC: u128 = 1_000_000_000;
    let secs = u64::try_from(nanos / PER_SEC).unwrap_or(u64::MAX);
    Duration::new(secs, (nanos % PER_SEC) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    const MS: Duration = Duration::from_millis(1);
    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn ceiling_doubles_then_caps() {
        let b = Backoff::new(50 * MS, SEC);
        assert_eq!(b.ceiling(0), 50 * MS);
        assert_eq!(b.ceiling(1), 100 * MS);
        assert_eq!(b.ceiling(4), 800 * MS);
        assert_eq!(b.ceiling(5), SEC);
        assert_eq!(b.ceiling(500), SEC);
    }

    #[test]
    fn max_below_base_is_raised_to_base() {
        let b = Backoff::new(2 * SEC, SEC);
        assert_eq!(b.ceiling(0), 2 * SEC);
        assert_eq!(b.ceiling(10), 2 * SEC);
    }

    #[test]
    fn growth_keeps_going_past_two_to_the_thirty_one() {
        // An uncapped doubling from 1 ns: exact up to where it meets the cap.
        let b = Backoff::new(Duration::from_nanos(1), Duration::MAX);
        assert_eq!(b.ceiling(40), Duration::from_nanos(1 << 40));
        assert_eq!(b.ceiling(63), Duration::from_nanos(1 << 63));
        assert_eq!(b.ceiling(200), Duration::MAX);
    }

    #[test]
    fn a_fractional_multiplier_grows_by_its_powers_then_caps() {
        let b = Backoff::exponential(SEC, 10 * SEC, 1.5, 0.0);
        let got: Vec<Duration> = (0..7).map(|n| b.ceiling(n)).collect();
        assert_eq!(
            got,
            [
                SEC,
                1500 * MS,
                2250 * MS,
                3375 * MS,
                Duration::from_micros(5_062_500),
                Duration::from_micros(7_593_750),
                10 * SEC
            ]
        );
    }

    #[test]
    fn equal_jitter_stays_within_half_and_whole_ceiling() {
        let b = Backoff::new(50 * MS, 5 * SEC);
        let mut rng = SmallRng::seed_from_u64(7);
        for attempt in 0..40 {
            for _ in 0..50 {
                let d = b.delay(attempt, &mut rng);
                let c = b.ceiling(attempt);
                assert!(d >= c / 2 && d <= c, "attempt {attempt}: {d:?} vs {c:?}");
            }
        }
    }

    #[test]
    fn jitter_draws_cover_its_whole_range() {
        // A quarter of jitter on 1 s: the draws land in [750 ms, 1 s], and in both the
        // lowest and the highest tenth of that range.
        let b = Backoff::exponential(SEC, SEC, 2.0, 0.25);
        let mut rng = SmallRng::seed_from_u64(3);
        let draws: Vec<Duration> = (0..1_000).map(|_| b.delay(0, &mut rng)).collect();
        assert!(draws.iter().all(|d| (750 * MS..=SEC).contains(d)));
        assert!(draws.iter().any(|d| *d < 775 * MS));
        assert!(draws.iter().any(|d| *d > 975 * MS));
    }

    #[test]
    fn zero_jitter_is_the_nominal_and_draws_nothing() {
        let b = Backoff::exponential(SEC, 30 * SEC, 2.0, 0.0);
        let mut rng = SmallRng::seed_from_u64(5);
        let untouched = rng.clone();
        assert_eq!(b.delay(3, &mut rng), 8 * SEC);
        assert_eq!(rng, untouched, "no draw");
    }

    #[test]
    fn full_jitter_may_reach_zero_but_never_exceeds_the_cap() {
        let b = Backoff::exponential(Duration::from_nanos(3), Duration::from_nanos(3), 2.0, 1.0);
        let mut rng = SmallRng::seed_from_u64(9);
        let draws: Vec<Duration> = (0..200).map(|_| b.delay(0, &mut rng)).collect();
        assert!(draws.iter().all(|d| *d <= Duration::from_nanos(3)));
        assert!(draws.contains(&Duration::ZERO));
    }

    #[test]
    fn the_longest_durations_and_attempts_neither_panic_nor_wrap() {
        let mut rng = SmallRng::seed_from_u64(1);
        for b in [
            Backoff::new(Duration::MAX, Duration::MAX),
            Backoff::new(SEC, Duration::MAX),
            Backoff::exponential(SEC, Duration::MAX, f64::MAX, 1.0),
            Backoff::exponential(SEC, Duration::MAX, 1.000_001, 0.5),
        ] {
            for attempt in [0, 1, 31, 32, 64, 1_000_000, u32::MAX] {
                let c = b.ceiling(attempt);
                assert!(c >= SEC, "{b:?} at {attempt}: {c:?}");
                assert!(b.delay(attempt, &mut rng) <= c);
            }
            assert_eq!(b.ceiling(u32::MAX), Duration::MAX);
        }
        let huge = Backoff::new(Duration::MAX, Duration::MAX);
        assert!(huge.delay(u32::MAX, &mut rng) >= Duration::MAX / 2);
    }

    #[test]
    fn out_of_range_multiplier_and_jitter_are_clamped() {
        let b = Backoff::exponential(SEC, 60 * SEC, f64::NAN, f64::NAN);
        assert_eq!(b, Backoff::exponential(SEC, 60 * SEC, 1.0, 0.0));
        let b = Backoff::exponential(SEC, 60 * SEC, 0.5, 7.0);
        assert_eq!(b, Backoff::exponential(SEC, 60 * SEC, 1.0, 1.0));
    }
}
