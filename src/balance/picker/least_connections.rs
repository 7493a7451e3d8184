//! Least connections: the ready endpoint with the fewest requests in flight.

use super::{Candidates, PickRng, Picker};

/// Sends each request to the ready endpoint with the fewest requests in flight, choosing
/// uniformly at random among ties. [`weighted`](Self::weighted) compares
/// `(in flight + 1) / effective weight` instead, so an endpoint of weight 2 is given
/// about twice the concurrency of one of weight 1.
///
/// Exact, so O(ready endpoints) per pick; for large sets prefer
/// [`PowerOfTwoChoices`](super::PowerOfTwoChoices), which approximates it in O(1).
#[derive(Debug, Clone)]
pub struct LeastConnections {
    weighted: bool,
    rng: PickRng,
}

impl LeastConnections {
    /// Unweighted, seeded from the OS (a clone draws a new seed).
    pub fn new() -> Self {
        Self {
            weighted: false,
            rng: PickRng::from_entropy(),
        }
    }

    /// Unweighted, seeded with `seed` (ties then break reproducibly; a clone repeats the sequence).
    pub fn seeded(seed: u64) -> Self {
        Self {
            weighted: false,
            rng: PickRng::seeded(seed),
        }
    }

    /// Divides by the endpoints' effective weights.
    pub fn weighted(mut self) -> Self {
        self.weighted = true;
        self
    }
}

impl Default for LeastConnections {
    fn default() -> Self {
        Self::new()
    }
}

impl Picker for LeastConnections {
    fn pick(&mut self, candidates: &Candidates<'_>, _key: Option<u64>) -> usize {
        let mut best = 0;
        let mut best_score = f64::INFINITY;
        let mut ties = 0usize;
        for (i, e) in candidates.iter().enumerate() {
            let score = if self.weighted {
                (e.in_flight() + 1) as f64 / e.effective_weight()
            } else {
                e.in_flight() as f64
            };
            if score < best_score {
                best = i;
                best_score = score;
                ties = 1;
            } else if score == best_score {
                // Reservoir sampling: each tied endpoint ends up chosen with equal chance.
                ties += 1;
                if self.rng.below(ties) == 0 {
                    best = i;
                }
            }
        }
        best
    }
}
