//! How long the circuit stays open after its `trips`-th trip in a row.
//!
//! Three shapes, chosen on the builder:
//! - fixed: every open period is the sleep window (the default, as in Hystrix);
//! - exponential: the crate's one [`Backoff`] rule at attempt `trips - 1`, that is
//!   `base * multiplier^(trips - 1)`, capped at `max`, then shortened by a random
//!   fraction of at most `jitter` (so the period lies in
//!   `[nominal * (1 - jitter), nominal]` and never exceeds the cap);
//! - a user closure `Fn(trips: u32) -> Duration`.
//!
//! `trips` counts trips since the circuit last closed: 1 for the trip from `Closed`, 2 for
//! the first failed probe, and so on. A successful close starts it over.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::SmallRng;

use crate::backoff::Backoff;

/// The open-period rule. See the [module docs](self).
#[derive(Clone)]
pub(crate) enum OpenDuration {
    Fixed(Duration),
    Exponential(Backoff),
    Custom(Arc<dyn Fn(u32) -> Duration + Send + Sync>),
}

impl OpenDuration {
    pub(crate) fn fixed(period: Duration) -> Self {
        OpenDuration::Fixed(period)
    }

    /// The open period after the `trips`-th trip in a row (`trips >= 1`).
    pub(crate) fn for_trip(&self, trips: u32, rng: &mut SmallRng) -> Duration {
        match self {
            OpenDuration::Fixed(d) => *d,
            OpenDuration::Exponential(backoff) => backoff.delay(trips.saturating_sub(1), rng),
            OpenDuration::Custom(f) => f(trips),
        }
    }
}

impl fmt::Debug for OpenDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenDuration::Fixed(d) => f.debug_tuple("Fixed").field(d).finish(),
            OpenDuration::Exponential(backoff) => {
                f.debug_tuple("Exponential").field(backoff).finish()
            }
            OpenDuration::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn exp(jitter: f64) -> OpenDuration {
        OpenDuration::Exponential(Backoff::exponential(
            Duration::from_secs(1),
            Duration::from_secs(30),
            2.0,
            jitter,
        ))
    }

    #[test]
    fn exponential_doubles_then_caps() {
        let mut rng = SmallRng::seed_from_u64(1);
        let got: Vec<u64> = (1..=7)
            .map(|t| exp(0.0).for_trip(t, &mut rng).as_secs())
            .collect();
        assert_eq!(got, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(
            exp(0.0).for_trip(u32::MAX, &mut rng),
            Duration::from_secs(30)
        );
    }

    #[test]
    fn jitter_stays_within_its_fraction_below_the_nominal() {
        let mut rng = SmallRng::seed_from_u64(2);
        for trips in 1..=8 {
            let nominal = Duration::from_secs(1 << (trips - 1)).min(Duration::from_secs(30));
            for _ in 0..200 {
                let d = exp(0.25).for_trip(trips, &mut rng);
                assert!(d <= nominal, "{d:?} > {nominal:?}");
                assert!(
                    d >= nominal.mul_f64(0.75),
                    "{d:?} too short for {nominal:?}"
                );
            }
        }
    }

    #[test]
    fn custom_closure_gets_the_trip_count() {
        let mut rng = SmallRng::seed_from_u64(3);
        let f = OpenDuration::Custom(Arc::new(|t| Duration::from_millis(100 * u64::from(t))));
        assert_eq!(f.for_trip(3, &mut rng), Duration::from_millis(300));
    }
}
