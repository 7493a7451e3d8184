//! Least connections: the ready endpoint with the fewest requests in flight.

use super::{Candidates, LoadIndex, PickRng, Picker};

/// Sends each request to the ready endpoint with the fewest requests in flight, choosing
/// uniformly at random among ties. [`weighted`](Self::weighted) compares
/// `(in flight + 1) / effective weight` instead, so an endpoint of weight 2 is given
/// about twice the concurrency of one of weight 1.
///
/// Exact: the pick is an endpoint with the least load among the ready ones, counting
/// every request that completed before the pick. Inside a
/// [`Balance`](super::super::Balance) it asks for a [`LoadIndex`], so there is no scan:
/// unweighted, a pick and each change of an endpoint's in-flight count are O(1) and ties
/// are drawn uniformly at random for every pick; [`weighted`](Self::weighted), changes
/// are O(log ready) and ties are broken by per-endpoint random tags (see [`LoadIndex`]).
/// Nothing is allocated per request. Called by another picker that does not forward
/// [`Picker::load_index`], it falls back to an O(ready) scan that draws ties at random.
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
    #[inline]
    fn pick(&mut self, candidates: &Candidates<'_>, _key: Option<u64>) -> usize {
        if let Some(position) = candidates.least_loaded() {
            return position;
        }
        self.scan(candidates)
    }

    fn load_index(&mut self) -> Option<LoadIndex> {
        let seed = self.rng.next_u64();
        Some(if self.weighted {
            LoadIndex::in_flight_per_weight(seed)
        } else {
            LoadIndex::in_flight(seed)
        })
    }
}

impl LeastConnections {
    /// The exact scan, for candidates without a load index.
    fn scan(&mut self, candidates: &Candidates<'_>) -> usize {
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
