//! Power of two choices: the cheaper of two random ready endpoints.

use std::time::Duration;

use super::{Candidates, Endpoint, PickRng, Picker};

/// What [`PowerOfTwoChoices`] compares.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cost {
    /// Requests in flight.
    InFlight,
    /// Peak-EWMA latency × (in flight + 1), as Finagle and `tower::load::PeakEwma`; an
    /// endpoint with no response yet is assumed to take `default_rtt`.
    PeakEwma {
        /// The latency assumed before the first response.
        default_rtt: Duration,
    },
}

/// Picks two distinct ready endpoints at random and sends the request to the one with
/// the lower [`Cost`] (the first of the two on a tie). O(1) per pick: one random
/// number per candidate, no scan. Comparing in-flight counts, a pick reads two entries
/// of one dense array kept by the balancer (see [`Picker::uses_in_flight`]), so its cost
/// does not grow with the number of endpoints.
///
/// Seeded with [`seeded`](Self::seeded), the sequence of picks is reproducible.
#[derive(Debug, Clone)]
pub struct PowerOfTwoChoices {
    cost: Cost,
    rng: PickRng,
}

impl PowerOfTwoChoices {
    /// Compares in-flight counts; seeded from the OS (a clone draws a new seed).
    pub fn new() -> Self {
        Self {
            cost: Cost::InFlight,
            rng: PickRng::from_entropy(),
        }
    }

    /// Compares in-flight counts; seeded with `seed` (a clone repeats the sequence).
    pub fn seeded(seed: u64) -> Self {
        Self {
            cost: Cost::InFlight,
            rng: PickRng::seeded(seed),
        }
    }

    /// Compares by `cost` instead.
    pub fn with_cost(mut self, cost: Cost) -> Self {
        self.cost = cost;
        self
    }

    /// Compares peak-EWMA cost, assuming `default_rtt` before the first response. Any
    /// duration (zero to `Duration::MAX`).
    pub fn peak_ewma(self, default_rtt: Duration) -> Self {
        self.with_cost(Cost::PeakEwma { default_rtt })
    }

    #[inline]
    fn cost_of(&self, e: &Endpoint<'_>, now: u64) -> f64 {
        match self.cost {
            Cost::InFlight => e.in_flight() as f64,
            Cost::PeakEwma { default_rtt } => {
                let rtt = e
                    .latency_nanos_at(now)
                    .unwrap_or(default_rtt.as_nanos() as f64);
                rtt * (e.in_flight() + 1) as f64
            }
        }
    }
}

impl Default for PowerOfTwoChoices {
    fn default() -> Self {
        Self::new()
    }
}

impl Picker for PowerOfTwoChoices {
    #[inline]
    fn pick(&mut self, candidates: &Candidates<'_>, _key: Option<u64>) -> usize {
        let len = candidates.len();
        if len < 2 {
            return 0;
        }
        let a = self.rng.below(len);
        let mut b = self.rng.below(len - 1);
        if b >= a {
            b += 1;
        }
        match self.cost {
            Cost::InFlight => {
                if candidates.in_flight(b) < candidates.in_flight(a) {
                    b
                } else {
                    a
                }
            }
            Cost::PeakEwma { .. } => {
                let now = candidates.now();
                let ca = self.cost_of(&candidates.get(a), now);
                let cb = self.cost_of(&candidates.get(b), now);
                if cb < ca {
                    b
                } else {
                    a
                }
            }
        }
    }

    fn uses_latency(&self) -> bool {
        matches!(self.cost, Cost::PeakEwma { .. })
    }

    /// Comparing in-flight counts reads them on every pick, so the balancer keeps them
    /// dense (one small array, however many endpoints); peak-EWMA cost reads each
    /// candidate's latency beside its count anyway, so it does not ask.
    fn uses_in_flight(&self) -> bool {
        matches!(self.cost, Cost::InFlight)
    }
}
