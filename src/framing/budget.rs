//! A byte budget shared by every connection of one server: what partially read frames
//! may hold in memory at once, whatever their announced lengths.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Bytes charged by readers, at most `limit` in total.
#[derive(Debug)]
pub(crate) struct MemoryBudget {
    limit: usize,
    used: AtomicUsize,
}

impl MemoryBudget {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            limit,
            used: AtomicUsize::new(0),
        }
    }

    /// A budget that never refuses (a client reads from one connection only).
    pub(crate) fn unlimited() -> Self {
        Self::new(usize::MAX)
    }

    /// Charges `n` bytes if they fit under the limit; `false` (nothing charged) if not.
    pub(crate) fn try_charge(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|&total| total <= self.limit)
            })
            .is_ok()
    }

    /// Returns `n` bytes charged earlier.
    pub(crate) fn release(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }

    /// Bytes charged now.
    // Read by the transport's server only.
    #[cfg_attr(not(feature = "transport"), allow(dead_code))]
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_up_to_the_limit_and_releases() {
        let b = MemoryBudget::new(10);
        assert!(b.try_charge(6));
        assert!(!b.try_charge(5));
        assert!(b.try_charge(4));
        assert_eq!(b.used(), 10);
        b.release(6);
        assert!(b.try_charge(5));
        assert_eq!(b.used(), 9);
    }

    #[test]
    fn the_largest_charges_do_not_overflow() {
        let b = MemoryBudget::unlimited();
        assert!(b.try_charge(usize::MAX));
        assert!(!b.try_charge(1));
        let zero = MemoryBudget::new(0);
        assert!(zero.try_charge(0));
        assert!(!zero.try_charge(1));
    }
}
