//! Round robin: each ready endpoint in turn.

use super::{Candidates, Picker};

/// Sends requests to the ready endpoints in turn, ignoring weights and load.
///
/// The turn is kept over the ready list, whose order is the order in which endpoints
/// became ready and is stable while they stay ready: with `a`, `b`, `c` always ready the
/// sequence is `a b c a b c …`. An endpoint that is pending is skipped without a gap.
/// O(1) per pick.
#[derive(Debug, Clone, Default)]
pub struct RoundRobin {
    next: usize,
}

impl RoundRobin {
    /// Starts with the first ready endpoint.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Picker for RoundRobin {
    #[inline]
    fn pick(&mut self, candidates: &Candidates<'_>, _key: Option<u64>) -> usize {
        let len = candidates.len();
        let pos = if self.next >= len { 0 } else { self.next };
        self.next = pos + 1;
        pos
    }
}
