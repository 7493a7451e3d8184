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
use std::sync::atomic::Ordering;

// From the facade so that the `loom` models below check the slots.
use crate::sync::AtomicU64;

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
            let mut held = cell.load(Ordering::Acquire);
            // A failed swap means another caller changed the slot meanwhile: look again,
            // since it may have been released or have expired (giving up would refuse a
            // probe while a slot is free).
            while held == 0 || now >= held {
                match cell.compare_exchange(held, ticket.get(), Ordering::AcqRel, Ordering::Acquire)
                {
                    Ok(_) => {
                        return Some(ProbePermit {
                            slot: slot as u32,
                            ticket,
                        })
                    }
                    Err(actual) => held = actual,
                }
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

/// Model checking of the probe slots with [loom](https://docs.rs/loom) (see the
/// [`sync`](crate::sync) module docs for the command).
#[cfg(all(test, palisade_loom))]
mod loom {
    use super::HalfOpenProbes;
    use ::loom::sync::atomic::AtomicU32;
    use ::loom::thread;
    use std::sync::atomic::Ordering::{AcqRel, Acquire, Release};
    use std::sync::Arc;

    /// Three callers race for `permits` slots whose permits do not expire in the model:
    /// never more than `permits` held at once, every holder gives its own permit back, and
    /// afterwards every slot is free for the next half-open period's probes.
    fn never_more_probes_than_slots(permits: u32) {
        ::loom::model(move || {
            let probes = Arc::new(HalfOpenProbes::new(permits, 1_000));
            let holding = Arc::new(AtomicU32::new(0));
            let threads: Vec<_> = (0..3)
                .map(|_| {
                    let (probes, holding) = (Arc::clone(&probes), Arc::clone(&holding));
                    thread::spawn(move || {
                        let Some(permit) = probes.try_acquire(1) else {
                            return 0;
                        };
                        let before = holding.fetch_add(1, AcqRel);
                        assert!(before < permits, "more probes admitted than slots");
                        holding.fetch_sub(1, AcqRel);
                        assert!(probes.release(permit), "an unexpired permit was taken away");
                        1
                    })
                })
                .collect();
            let admitted: u32 = threads.into_iter().map(|t| t.join().unwrap()).sum();
            assert!(admitted >= 1, "every caller was refused");
            assert_eq!(probes.in_flight(1), 0);
            for _ in 0..permits {
                assert!(
                    probes.try_acquire(2).is_some(),
                    "a released slot is not reusable"
                );
            }
            assert!(probes.try_acquire(2).is_none());
        });
    }

    #[test]
    fn loom_one_slot_admits_one_probe_at_a_time_and_is_reused() {
        never_more_probes_than_slots(1);
    }

    #[test]
    fn loom_two_slots_admit_two_probes_at_a_time_and_are_reused() {
        never_more_probes_than_slots(2);
    }

    /// A holder overstays (its permit expires at 10) while another caller reclaims the slot
    /// at 10: the late holder's release never gives back the new holder's permit, so the
    /// new holder's result counts, and the slot ends free.
    #[test]
    fn loom_a_late_holder_never_releases_the_reclaimed_permit() {
        ::loom::model(|| {
            let probes = Arc::new(HalfOpenProbes::new(1, 10));
            let late = {
                let probes = Arc::clone(&probes);
                thread::spawn(move || {
                    if let Some(permit) = probes.try_acquire(0) {
                        probes.release(permit);
                    }
                })
            };
            // At 10 the slot is free or holds the late holder's expired ticket.
            let permit = probes
                .try_acquire(10)
                .expect("a free or expired slot is taken");
            late.join().unwrap();
            assert_eq!(
                probes.in_flight(10),
                1,
                "the late holder gave back the reclaimed permit"
            );
            assert!(
                probes.release(permit),
                "the new holder's result does not count"
            );
            assert_eq!(probes.earliest_expiry(), None, "the slot ends free");
        });
    }

    /// A new half-open period clears the slots while a probe holds one: the probe's result
    /// counts only if it gave its permit back first, and the slot ends free either way.
    #[test]
    fn loom_clearing_for_a_new_period_orphans_the_holder_and_frees_the_slot() {
        ::loom::model(|| {
            let probes = Arc::new(HalfOpenProbes::new(1, 1_000));
            let permit = probes.try_acquire(0).expect("a free slot");
            let cleared = Arc::new(AtomicU32::new(0));
            let clearer = {
                let (probes, cleared) = (Arc::clone(&probes), Arc::clone(&cleared));
                thread::spawn(move || {
                    probes.clear();
                    cleared.store(1, Release);
                })
            };
            // Seen cleared before the release: the clear happens before it.
            let cleared_before = cleared.load(Acquire) == 1;
            let counted = probes.release(permit);
            clearer.join().unwrap();
            if cleared_before {
                assert!(!counted, "a cleared permit still counted");
            }
            assert_eq!(probes.in_flight(0), 0, "the slot ends free");
            assert!(probes.try_acquire(1).is_some(), "the slot is reusable");
        });
    }
}
