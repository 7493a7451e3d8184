//! Half-open probe permits: at most `n` probes in flight, lock-free, each permit
//! reclaimable once its holder overstays `probe_max_wait`.
//!
//! There are `n` slots. A free slot holds `0`; a taken slot holds its permit's *ticket*,
//! the clock reading at which the permit expires (`start + probe_max_wait`, never 0).
//! Taking a permit is one compare-and-swap from `0` (or from an expired ticket) to a new
//! ticket, so `n` permits can never be held at once by more than `n` callers, however
//! many race. Giving one back is a compare-and-swap from the holder's ticket to `0`: it
//! fails, harmlessly, if the slot was reclaimed (or cleared for a new half-open period),
//! and then the holder knows its result no longer counts.
//!
//! Tickets in one slot only grow: a reclaiming caller arrives at or after the old
//! ticket's expiry and adds a non-zero wait to its own reading, and a new half-open
//! period starts a whole open period after any earlier probe started. So a late holder
//! can never give back somebody else's permit.

use std::num::NonZeroU64;
use std::sync::atomic::{AtomicU64, Ordering};

/// A taken probe permit: which slot, and the ticket written in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProbePermit {
    slot: u32,
    /// Never zero (zero marks a free slot), which also keeps `Option<ProbePermit>` small.
    ticket: NonZeroU64,
}

/// The probe slots of one circuit. See the [module docs](self).
#[derive(Debug)]
pub(crate) struct HalfOpenProbes {
    slots: Box<[AtomicU64]>,
    max_wait: u64,
}

impl HalfOpenProbes {
    /// `permits` slots (at least one), each held for at most `max_wait_nanos` (> 0).
    pub(crate) fn new(permits: u32, max_wait_nanos: u64) -> Self {
        HalfOpenProbes {
            slots: (0..permits.max(1)).map(|_| AtomicU64::new(0)).collect(),
            max_wait: max_wait_nanos.max(1),
        }
    }

    /// Takes a free or expired permit at `now`, if there is one.
    pub(crate) fn try_acquire(&self, now: u64) -> Option<ProbePermit> {
        // `max_wait >= 1`, so the ticket is never zero.
        let ticket = NonZeroU64::new(now.saturating_add(self.max_wait)).unwrap_or(NonZeroU64::MAX);
        for (slot, cell) in self.slots.iter().enumerate() {
            let held = cell.load(Ordering::Acquire);
            let free = held == 0 || now >= held;
            if free
                && cell
                    .compare_exchange(held, ticket.get(), Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            {
                return Some(ProbePermit {
                    slot: slot as u32,
                    ticket,
                });
            }
        }
        None
    }

    /// Gives a permit back. Returns whether it was still held (not reclaimed, not
    /// cleared): only then does its probe's result count.
    pub(crate) fn release(&self, permit: ProbePermit) -> bool {
        self.slots[permit.slot as usize]
            .compare_exchange(permit.ticket.get(), 0, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Frees every slot, for a new half-open period.
    pub(crate) fn clear(&self) {
        for cell in self.slots.iter() {
            cell.store(0, Ordering::Release);
        }
    }

    /// How many permits there are.
    pub(crate) fn permits(&self) -> u32 {
        self.slots.len() as u32
    }

    /// The earliest expiry of a held permit, if any is held.
    pub(crate) fn earliest_expiry(&self) -> Option<u64> {
        self.slots
            .iter()
            .map(|c| c.load(Ordering::Acquire))
            .filter(|&held| held != 0)
            .min()
    }

    /// Permits held and not yet expired at `now`.
    pub(crate) fn in_flight(&self, now: u64) -> u32 {
        self.slots
            .iter()
            .filter(|c| {
                let held = c.load(Ordering::Acquire);
                held != 0 && now < held
            })
            .count() as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_exactly_the_number_of_slots() {
        let p = HalfOpenProbes::new(3, 100);
        let taken: Vec<_> = (0..10).filter_map(|_| p.try_acquire(5)).collect();
        assert_eq!(taken.len(), 3);
        assert_eq!(p.in_flight(5), 3);
        assert!(p.release(taken[1]));
        assert!(p.try_acquire(6).is_some());
        assert!(p.try_acquire(6).is_none());
    }

    #[test]
    fn expired_permit_is_reclaimed_and_its_holder_learns_it() {
        let p = HalfOpenProbes::new(1, 100);
        let old = p.try_acquire(0).unwrap();
        assert!(p.try_acquire(99).is_none());
        let new = p.try_acquire(100).unwrap();
        assert!(!p.release(old), "a reclaimed permit no longer counts");
        assert!(p.release(new));
    }

    #[test]
    fn clear_frees_all_and_orphans_holders() {
        let p = HalfOpenProbes::new(2, 100);
        let a = p.try_acquire(0).unwrap();
        p.clear();
        assert_eq!(p.in_flight(0), 0);
        assert!(!p.release(a));
    }

    #[test]
    fn racing_threads_never_hold_more_than_the_permits() {
        use std::sync::atomic::AtomicU32;
        use std::sync::Arc;
        let p = Arc::new(HalfOpenProbes::new(2, u64::MAX / 2));
        let won = Arc::new(AtomicU32::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (p, won) = (p.clone(), won.clone());
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        if p.try_acquire(1).is_some() {
                            won.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(won.load(Ordering::Relaxed), 2);
    }
}
