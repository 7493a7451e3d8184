//! The count-based window: the last `size` recorded events.
//!
//! A ring of `size` slots, each holding one event packed into a `u64` (its kind, its
//! slow flag and its latency), and striped running counts. Recording takes the next
//! position from a shared sequence counter, swaps the new event into that slot, and
//! adds the new event to (and subtracts the evicted one from) the counts, unless the
//! two are of the same kind and slowness (the steady state of a healthy service, which
//! then costs two atomic operations): O(1), no lock, no allocation.
//! [`counts`](super::RollingWindow::counts) sums the stripes of the totals;
//! [`snapshot`](super::RollingWindow::snapshot) also reads every slot to build the
//! latency histogram, so it is O(`size`) (each slot is the bucket of one call).
//!
//! Because every event that enters a slot is added to the totals once and subtracted
//! once when it leaves (by a later record's swap, or by a reset's), the totals always
//! equal the slots' contents once writers are quiet, whatever the interleaving; while
//! writers race, a count may lag by the events in flight (a subtraction may even run
//! ahead of its addition, so reads clamp at zero). With one writer at a time the window
//! is exactly the last `size` events.
//!
//! The sequence counter is one shared cache line that every record increments; for
//! windows hammered by many threads, prefer the time-based window.

use std::sync::atomic::{AtomicU64, Ordering};

use super::divisor::Divisor;
use super::histogram::Histogram;
use super::snapshot::{Counts, LatencySummary, Snapshot};
use super::stripe::{thread_stripe, CachePadded, EventCounters, StripeSums};
use super::Event;

/// Latencies are stored in 60 bits: clamped at about 36 years.
const LATENCY_LIMIT: u64 = (1 << 60) - 1;

pub(crate) struct CountWindow {
    size: Divisor,
    slow_nanos: u64,
    seq: CachePadded<AtomicU64>,
    /// Each slot holds an [`encode`]d event, or 0 when empty.
    slots: Box<[AtomicU64]>,
    totals: Box<[CachePadded<EventCounters>]>,
}

impl CountWindow {
    pub(crate) fn new(size: u32, stripes: u32, slow_nanos: u64) -> Self {
        Self {
            size: Divisor::new(u64::from(size)),
            slow_nanos,
            seq: CachePadded::new(AtomicU64::new(0)),
            slots: (0..size).map(|_| AtomicU64::new(0)).collect(),
            totals: (0..stripes).map(|_| CachePadded::default()).collect(),
        }
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.slots.len() * 8 + self.totals.len() * std::mem::size_of::<CachePadded<EventCounters>>()
    }

    #[inline]
    pub(crate) fn record(&self, _now: u64, event: Event, latency_nanos: u64) {
        let latency = if event.carries_latency() {
            latency_nanos.min(LATENCY_LIMIT)
        } else {
            0
        };
        let slow =
            event.carries_latency() && self.slow_nanos != 0 && latency_nanos >= self.slow_nanos;
        let position = self.size.rem(self.seq.fetch_add(1, Ordering::Relaxed)) as usize;
        let evicted = self.slots[position].swap(encode(event, slow, latency), Ordering::AcqRel);
        if let Some((old_event, old_slow, _)) = decode(evicted) {
            if old_event == event && old_slow == slow {
                // The usual steady state: an event replaces one of its own kind, and
                // the totals do not change.
                return;
            }
            self.stripe().sub_count(old_event, old_slow);
        }
        self.stripe().add_count(event, slow);
    }

    #[inline]
    fn stripe(&self) -> &EventCounters {
        &self.totals[thread_stripe() & (self.totals.len() - 1)]
    }

    fn sums(&self) -> StripeSums {
        let mut sums = StripeSums::default();
        for t in self.totals.iter() {
            t.sum_into(&mut sums);
        }
        sums.clamp_negative()
    }

    pub(crate) fn counts(&self, _now: u64) -> Counts {
        self.sums().counts
    }

    pub(crate) fn snapshot(&self, _now: u64) -> Snapshot {
        let counts = self.sums().counts;
        let mut hist = Histogram::new();
        let (mut count, mut sum, mut max) = (0u64, 0u128, 0u64);
        for slot in self.slots.iter() {
            if let Some((event, _, latency)) = decode(slot.load(Ordering::Acquire)) {
                if event.carries_latency() {
                    hist.record(latency);
                    count += 1;
                    sum += u128::from(latency);
                    max = max.max(latency);
                }
            }
        }
        Snapshot {
            counts,
            latency: LatencySummary::from_parts(&hist, count, sum, max),
        }
    }

    pub(crate) fn reset(&self) {
        // Swap every event out and subtract it, rather than zeroing the totals, so that
        // a record racing with the reset cannot leave the totals out of step with the
        // slots.
        let totals = self.stripe();
        for slot in self.slots.iter() {
            if let Some((event, slow, _)) = decode(slot.swap(0, Ordering::AcqRel)) {
                totals.sub_count(event, slow);
            }
        }
    }
}

/// Packs an event: bits 0..3 the kind (1 to 5), bit 3 the slow flag, bits 4.. the
/// latency. Never 0, which marks an empty slot.
#[inline]
fn encode(event: Event, slow: bool, latency: u64) -> u64 {
    let kind = match event {
        Event::Success => 1,
        Event::Failure => 2,
        Event::Timeout => 3,
        Event::Rejected => 4,
        Event::ShortCircuited => 5,
    };
    (latency << 4) | (u64::from(slow) << 3) | kind
}

#[inline]
fn decode(word: u64) -> Option<(Event, bool, u64)> {
    let event = match word & 0b111 {
        1 => Event::Success,
        2 => Event::Failure,
        3 => Event::Timeout,
        4 => Event::Rejected,
        5 => Event::ShortCircuited,
        _ => return None,
    };
    Some((event, word & 0b1000 != 0, word >> 4))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_round_trips_every_kind() {
        for event in Event::ALL {
            for slow in [false, true] {
                for latency in [0, 1, 123_456_789, LATENCY_LIMIT] {
                    let word = encode(event, slow, latency);
                    assert_ne!(word, 0);
                    assert_eq!(decode(word), Some((event, slow, latency)));
                }
            }
        }
        assert_eq!(decode(0), None);
    }
}
