//! Smooth weighted round robin.

use std::cmp::Ordering;

use super::super::endpoint::EndpointId;
use super::{Candidates, Picker};

/// The longest schedule kept; larger weight sums are scaled down to fit.
const MAX_SCHEDULE: u64 = 1 << 18;

/// Sends requests to the members in a fixed, smooth, weighted rotation.
///
/// With weights `w₁ … wₙ` (after slow start, reduced by their greatest common divisor)
/// the rotation is `W = Σwᵢ` picks long and gives member *i* exactly *wᵢ* of them, spread
/// as evenly as possible: member *i*'s *k*-th turn falls at `(k + ½) / wᵢ` of the way
/// through the rotation, ties going to the earlier member. For weights 5:1:1 the rotation
/// is `a a a b c a a`, so any 7 consecutive picks hold exactly five `a`, one `b` and one
/// `c`; like nginx's smooth algorithm, no member gets a long burst.
///
/// The rotation is precomputed as a table when membership or weights change (including
/// slow-start steps), so a pick is O(1): read the next entry, and skip it if that member
/// is not ready right now. Weight sums above 2¹⁸ are scaled down proportionally (every
/// member keeps at least one turn), which makes shares approximate only for extreme
/// weight ratios.
#[derive(Debug, Clone, Default)]
pub struct WeightedRoundRobin {
    schedule: Vec<EndpointId>,
    cursor: usize,
    epochs: Option<(u64, u64)>,
}

impl WeightedRoundRobin {
    /// An empty rotation, built on the first pick.
    pub fn new() -> Self {
        Self::default()
    }

    fn rebuild(&mut self, candidates: &Candidates<'_>) {
        let members: Vec<(EndpointId, f64)> = candidates
            .members()
            .map(|e| (e.id(), e.effective_weight()))
            .collect();
        let weights = integer_weights(members.iter().map(|m| m.1));
        let (old_len, old_cursor) = (self.schedule.len(), self.cursor);
        self.schedule = schedule(&weights)
            .into_iter()
            .map(|i| members[i].0)
            .collect();
        // Resume at the same fraction of the rotation: restarting at 0 on every change
        // would favour the members whose turns come first when changes are frequent.
        self.cursor = if old_len == 0 || self.schedule.is_empty() {
            0
        } else {
            (old_cursor as u128 * self.schedule.len() as u128 / old_len as u128) as usize
                % self.schedule.len()
        };
    }
}

/// Turns effective weights into small positive integers with the same ratios.
fn integer_weights(weights: impl Iterator<Item = f64> + Clone) -> Vec<u64> {
    let fractional = weights.clone().any(|w| w.fract() != 0.0);
    let scale = if fractional { 100.0 } else { 1.0 };
    let mut ints: Vec<u64> = weights
        .map(|w| ((w * scale).round() as u64).max(1))
        .collect();
    let g = ints.iter().copied().fold(0, gcd);
    if g > 1 {
        ints.iter_mut().for_each(|w| *w /= g);
    }
    let sum: u64 = ints.iter().sum();
    if sum > MAX_SCHEDULE {
        let f = MAX_SCHEDULE as f64 / sum as f64;
        ints.iter_mut()
            .for_each(|w| *w = ((*w as f64 * f).floor() as u64).max(1));
    }
    ints
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// The smooth rotation: member indices, `Σw` long.
fn schedule(weights: &[u64]) -> Vec<usize> {
    // Turn k of member i sits at (2k + 1) / (2 wᵢ); compare fractions exactly.
    let mut turns: Vec<(u64, u64, usize)> =
        Vec::with_capacity(weights.iter().sum::<u64>() as usize);
    for (i, &w) in weights.iter().enumerate() {
        for k in 0..w {
            turns.push((2 * k + 1, 2 * w, i));
        }
    }
    turns.sort_by(|a, b| {
        let lhs = a.0 as u128 * b.1 as u128;
        let rhs = b.0 as u128 * a.1 as u128;
        match lhs.cmp(&rhs) {
            Ordering::Equal => a.2.cmp(&b.2),
            o => o,
        }
    });
    turns.into_iter().map(|t| t.2).collect()
}

impl Picker for WeightedRoundRobin {
    fn pick(&mut self, candidates: &Candidates<'_>, _key: Option<u64>) -> usize {
        let epochs = (candidates.members_epoch(), candidates.weights_epoch());
        if self.epochs != Some(epochs) {
            self.rebuild(candidates);
            self.epochs = Some(epochs);
        }
        let len = self.schedule.len();
        for _ in 0..len {
            let id = self.schedule[self.cursor];
            self.cursor += 1;
            if self.cursor == len {
                self.cursor = 0;
            }
            if let Some(pos) = candidates.position(id) {
                return pos;
            }
        }
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_one_one_rotation_is_smooth() {
        assert_eq!(schedule(&[5, 1, 1]), vec![0, 0, 0, 1, 2, 0, 0]);
    }

    #[test]
    fn weights_reduce_by_gcd_and_scale_fractions() {
        assert_eq!(integer_weights([10.0, 20.0].into_iter()), vec![1, 2]);
        assert_eq!(integer_weights([0.5, 1.0].into_iter()), vec![1, 2]);
        assert_eq!(integer_weights([0.01, 1.0].into_iter()), vec![1, 100]);
    }

    #[test]
    fn huge_weight_sums_are_capped() {
        let w = integer_weights([1e9, 1.0, 3e9].into_iter());
        assert!(w.iter().sum::<u64>() <= MAX_SCHEDULE + 3);
        assert_eq!(w[1], 1);
        assert!(w[2] > 2 * w[0]);
    }
}
