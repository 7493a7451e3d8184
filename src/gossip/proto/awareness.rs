//! Lifeguard's local health awareness: how much this member distrusts itself.
//!
//! A member that is itself slow (overloaded CPU, lossy link) misses acks and then
//! wrongly suspects healthy members. Lifeguard lets it notice: the score rises when a
//! probe fails without the expected nacks from the indirect probers (they could reach
//! the target, or at least answer us, so the problem is likely here) and when the member
//! has to refute a suspicion of itself; it falls with every successful probe. The probe
//! interval and timeout are multiplied by `score + 1`, so an unhealthy member probes
//! less often and waits longer before accusing anyone.

use super::config::nanos;
use std::time::Duration;

/// The health score, between 0 (healthy) and `max` inclusive.
#[derive(Debug, Clone)]
pub(crate) struct Awareness {
    score: u32,
    max: u32,
}

impl Awareness {
    /// A healthy score; `max_multiplier` bounds the stretch factor (1 disables it).
    pub(crate) fn new(max_multiplier: u32) -> Self {
        Self {
            score: 0,
            max: max_multiplier.saturating_sub(1),
        }
    }

    /// Moves the score by `delta`, clamped to `0..=max`.
    pub(crate) fn apply(&mut self, delta: i64) {
        let s = (i64::from(self.score) + delta).clamp(0, i64::from(self.max));
        self.score = s as u32;
    }

    /// The current score.
    pub(crate) fn score(&self) -> u32 {
        self.score
    }

    /// A timeout stretched by the score, in nanoseconds.
    pub(crate) fn scale(&self, d: Duration) -> u64 {
        (nanos(d)).saturating_mul(u64::from(self.score) + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn score_is_clamped_and_stretches_timeouts() {
        let mut a = Awareness::new(8);
        a.apply(-3);
        assert_eq!(a.score(), 0);
        assert_eq!(a.scale(Duration::from_millis(500)), 500_000_000);
        a.apply(20);
        assert_eq!(a.score(), 7);
        assert_eq!(a.scale(Duration::from_millis(500)), 4_000_000_000);
        a.apply(-1);
        assert_eq!(a.score(), 6);
    }

    #[test]
    fn multiplier_one_disables_awareness() {
        let mut a = Awareness::new(1);
        a.apply(5);
        assert_eq!(a.score(), 0);
    }
}
