//! Capped exponential backoff with jitter, for reconnect attempts.

use std::time::Duration;

use rand::Rng;

/// Capped exponential backoff with "equal jitter": attempt `n` waits a random time in
/// `[d/2, d]` where `d = min(max, base * 2^n)`. The floor of `d/2` keeps a crowd of
/// clients from hammering a restarting peer; the random half spreads them out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    max: Duration,
}

impl Backoff {
    /// A backoff from `base` doubling up to `max` (`max` is raised to `base` if smaller).
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max: max.max(base),
        }
    }

    /// The un-jittered delay of attempt `attempt` (0-based): `min(max, base * 2^attempt)`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// The jittered delay of attempt `attempt`, drawn from `rng`.
    pub fn delay(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling(attempt);
        let half = ceiling / 2;
        // Saturates for spans past 584 years (a `Duration::MAX` cap) instead of wrapping.
        let spread = u64::try_from((ceiling - half).as_nanos()).unwrap_or(u64::MAX);
        half + Duration::from_nanos(rng.random_range(0..=spread))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn ceiling_doubles_then_caps() {
        let b = Backoff::new(Duration::from_millis(50), Duration::from_secs(1));
        assert_eq!(b.ceiling(0), Duration::from_millis(50));
        assert_eq!(b.ceiling(1), Duration::from_millis(100));
        assert_eq!(b.ceiling(4), Duration::from_millis(800));
        assert_eq!(b.ceiling(5), Duration::from_secs(1));
        assert_eq!(b.ceiling(500), Duration::from_secs(1));
    }

    #[test]
    fn delay_stays_within_half_and_whole_ceiling() {
        let b = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        for attempt in 0..40 {
            let d = b.delay(attempt, &mut rng);
            let c = b.ceiling(attempt);
            assert!(d >= c / 2 && d <= c, "attempt {attempt}: {d:?} vs {c:?}");
        }
    }

    #[test]
    fn the_longest_durations_neither_panic_nor_wrap() {
        let b = Backoff::new(Duration::MAX, Duration::MAX);
        let mut rng = rand::rngs::SmallRng::seed_from_u64(1);
        for attempt in [0, 1, 31, 32, u32::MAX] {
            assert_eq!(b.ceiling(attempt), Duration::MAX);
            assert!(b.delay(attempt, &mut rng) >= Duration::MAX / 2);
        }
    }
}
