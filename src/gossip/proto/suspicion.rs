//! Lifeguard's suspicion timer: long when one member suspects, shorter as independent
//! members confirm.
//!
//! A suspicion raised by a single, possibly slow, member should not kill a healthy peer.
//! The timer therefore starts at `max` and shrinks on a log scale with each distinct
//! confirmation, reaching `min` after `k` confirmations:
//!
//! ```text
//! timeout(c) = max(min, max - (max - min) * ln(c + 1) / ln(k + 1))
//! ```
//!
//! With `k = 0` (small clusters, or Lifeguard off) the timeout is simply `min`.

use std::collections::HashSet;

/// One running suspicion.
#[derive(Debug, Clone)]
pub(crate) struct Suspicion {
    /// The incarnation suspected.
    pub(crate) incarnation: u64,
    start: u64,
    min: u64,
    max: u64,
    k: u32,
    /// Who has suspected it so far (the first suspector included).
    from: HashSet<String>,
    deadline: u64,
}

impl Suspicion {
    /// A suspicion raised by `from` at `now`; times are nanoseconds.
    pub(crate) fn new(incarnation: u64, from: &str, k: u32, min: u64, max: u64, now: u64) -> Self {
        let max = max.max(min);
        let mut s = Self {
            incarnation,
            start: now,
            min,
            max,
            k,
            from: HashSet::from([from.to_owned()]),
            deadline: 0,
        };
        s.deadline = now.saturating_add(s.timeout());
        s
    }

    fn confirmations(&self) -> u32 {
        (self.from.len() as u32).saturating_sub(1)
    }

    /// The current timeout, from the start.
    pub(crate) fn timeout(&self) -> u64 {
        if self.k == 0 {
            return self.min;
        }
        let c = f64::from(self.confirmations().min(self.k));
        let frac = (c + 1.0).ln() / (f64::from(self.k) + 1.0).ln();
        let t = self.max as f64 - (self.max - self.min) as f64 * frac;
        (t.floor() as u64).max(self.min)
    }

    /// Counts a suspicion by `from`; true if it is a new, independent one (and so worth
    /// gossiping on).
    pub(crate) fn confirm(&mut self, from: &str) -> bool {
        if self.confirmations() >= self.k || self.from.contains(from) {
            return false;
        }
        self.from.insert(from.to_owned());
        self.deadline = self.start.saturating_add(self.timeout());
        true
    }

    /// When the suspicion expires.
    pub(crate) fn deadline(&self) -> u64 {
        self.deadline
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn timeout_shrinks_with_independent_confirmations() {
        let mut s = Suspicion::new(1, "a", 3, 2 * S, 30 * S, 0);
        assert_eq!(s.deadline(), 30 * S);
        assert!(s.confirm("b"));
        let one = s.deadline();
        assert!(one < 30 * S && one > 2 * S);
        assert!(!s.confirm("b"), "the same member does not confirm twice");
        assert!(!s.confirm("a"), "the first suspector does not confirm");
        assert!(s.confirm("c"));
        assert!(s.deadline() < one);
        assert!(s.confirm("d"));
        assert_eq!(s.deadline(), 2 * S);
        assert!(!s.confirm("e"), "beyond k confirmations nothing changes");
    }

    #[test]
    fn without_expected_confirmations_the_timeout_is_the_minimum() {
        let s = Suspicion::new(1, "a", 0, 4 * S, 24 * S, 10);
        assert_eq!(s.deadline(), 10 + 4 * S);
    }
}
