//! Random: a uniformly or weight-proportionally random ready endpoint.

use super::super::endpoint::EndpointId;
use super::{Candidates, PickRng, Picker};

/// Sends each request to a random ready endpoint: uniformly, or (with
/// [`weighted`](Self::weighted)) with probability proportional to effective weight.
///
/// The weighted form samples a Walker/Vose alias table over the members, rebuilt only
/// when membership or weights change, so a pick is O(1); a sample that lands on an
/// endpoint that is not ready is redrawn a few times before falling back to an O(ready)
/// weighted scan, which keeps the distribution exact over the ready endpoints.
#[derive(Debug, Clone)]
pub struct Random {
    weighted: bool,
    rng: PickRng,
    table: AliasTable,
    epochs: Option<(u64, u64)>,
}

#[derive(Debug, Clone, Default)]
struct AliasTable {
    ids: Vec<EndpointId>,
    prob: Vec<f64>,
    alias: Vec<u32>,
    uniform: bool,
}

impl AliasTable {
    fn rebuild(&mut self, candidates: &Candidates<'_>) {
        self.ids.clear();
        self.prob.clear();
        self.alias.clear();
        let weights: Vec<f64> = candidates.members().map(|e| e.effective_weight()).collect();
        self.ids.extend(candidates.members().map(|e| e.id()));
        let n = weights.len();
        self.uniform = weights.windows(2).all(|w| w[0] == w[1]);
        if n == 0 {
            return;
        }
        let total: f64 = weights.iter().sum();
        let mut scaled: Vec<f64> = weights.iter().map(|w| w * n as f64 / total).collect();
        self.prob.resize(n, 1.0);
        self.alias.extend(0..n as u32);
        let (mut small, mut large): (Vec<usize>, Vec<usize>) =
            (0..n).partition(|&i| scaled[i] < 1.0);
        while let (Some(s), Some(&l)) = (small.pop(), large.last()) {
            self.prob[s] = scaled[s];
            self.alias[s] = l as u32;
            scaled[l] -= 1.0 - scaled[s];
            if scaled[l] < 1.0 {
                large.pop();
                small.push(l);
            }
        }
        // Leftovers are 1 up to rounding.
        for i in small.into_iter().chain(large) {
            self.prob[i] = 1.0;
        }
    }
}

impl Random {
    /// Uniform, seeded from the OS (a clone draws a new seed).
    pub fn new() -> Self {
        Self::with_rng(PickRng::from_entropy())
    }

    /// Uniform, seeded with `seed` (a clone repeats the sequence).
    pub fn seeded(seed: u64) -> Self {
        Self::with_rng(PickRng::seeded(seed))
    }

    fn with_rng(rng: PickRng) -> Self {
        Self {
            weighted: false,
            rng,
            table: AliasTable::default(),
            epochs: None,
        }
    }

    /// In proportion to effective weight.
    pub fn weighted(mut self) -> Self {
        self.weighted = true;
        self
    }

    fn scan(&mut self, candidates: &Candidates<'_>) -> usize {
        let total: f64 = candidates.iter().map(|e| e.effective_weight()).sum();
        let mut target = self.rng.unit() * total;
        for (i, e) in candidates.iter().enumerate() {
            target -= e.effective_weight();
            if target < 0.0 {
                return i;
            }
        }
        candidates.len() - 1
    }
}

impl Default for Random {
    fn default() -> Self {
        Self::new()
    }
}

impl Picker for Random {
    fn pick(&mut self, candidates: &Candidates<'_>, _key: Option<u64>) -> usize {
        if !self.weighted {
            return self.rng.below(candidates.len());
        }
        let epochs = (candidates.members_epoch(), candidates.weights_epoch());
        if self.epochs != Some(epochs) {
            self.table.rebuild(candidates);
            self.epochs = Some(epochs);
        }
        if self.table.uniform {
            return self.rng.below(candidates.len());
        }
        let n = self.table.ids.len();
        for _ in 0..4 {
            let i = self.rng.below(n);
            let j = if self.rng.unit() < self.table.prob[i] {
                i
            } else {
                self.table.alias[i] as usize
            };
            if let Some(pos) = candidates.position(self.table.ids[j]) {
                return pos;
            }
        }
        self.scan(candidates)
    }
}
