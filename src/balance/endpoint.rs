//! Per-endpoint state: identity, live statistics, weight.
//!
//! Every endpoint in a [`Balance`](super::Balance) has an [`EndpointId`] and a block of
//! live statistics shared (through an `Arc`) with the response futures of the requests it
//! serves. A response future increments the in-flight count when the request is sent and
//! decrements it when the future completes or is dropped, so counts return to zero even
//! for requests cancelled half-way or served by an endpoint that has since been removed.
//!
//! The statistics are atomics: recording a call is a handful of relaxed atomic operations,
//! no lock. Latency is a *peak EWMA* (as in Finagle and `tower::load::PeakEwma`): a sample
//! above the estimate replaces it at once, a sample below pulls it down exponentially with
//! the configured decay, and reading the estimate decays it toward zero with the time
//! elapsed since the last sample so an idle endpoint is tried again.
//!
//! [`Weighted`], the service wrapper that carries a static weight from a discovery
//! source to the balancer, lives in the crate-level `weighted` module so that the
//! sources build without the balancer.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use super::load_index::CompletionQueue;
use crate::classify::Outcome;

/// Identifies one endpoint of a balancer for as long as it is a member.
///
/// An id is never reused for a different endpoint of the same balancer while a picker
/// could still hold it: the slot part may be recycled after a removal, but the generation
/// part changes, so a stale id simply no longer resolves (see
/// [`Candidates::position`](super::Candidates::position)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EndpointId {
    slot: u32,
    generation: u32,
}

impl EndpointId {
    pub(crate) fn new(slot: u32, generation: u32) -> Self {
        Self { slot, generation }
    }

    /// The dense slot index of this endpoint (below the balancer's high-water mark of
    /// members), handy for pickers that keep per-endpoint arrays.
    pub fn slot(&self) -> usize {
        self.slot as usize
    }

    /// The generation of the slot; it changes every time the slot is reused.
    pub fn generation(&self) -> u32 {
        self.generation
    }
}

impl fmt::Display for EndpointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "endpoint#{}.{}", self.slot, self.generation)
    }
}

/// Live statistics of one endpoint, shared with the response futures of its requests.
pub(crate) struct EndpointStats {
    /// Requests in flight (low 32 bits) and, when the balancer keeps a load index,
    /// completions the balancer has not seen yet (high 32 bits): one word, so that a
    /// completion is one atomic add and the balancer's look one atomic `and`.
    in_flight: AtomicU64,
    /// Peak-EWMA latency in nanoseconds as `f64` bits; `0` means no sample yet.
    ewma_bits: AtomicU64,
    /// Clock reading of the last latency sample.
    ewma_at: AtomicU64,
    decay_ns: f64,
    consecutive_failures: AtomicU32,
    successes: AtomicU32,
    failures: AtomicU32,
    /// Consecutive failures at which the balancer is asked to look at this endpoint
    /// (`0`: never).
    failure_threshold: u32,
    /// Raised (for the balancer's next `poll_ready`) when the threshold is crossed.
    attention: Arc<AtomicBool>,
    /// Where to report a completion when the balancer keeps a load index: the queue and
    /// this endpoint's slot.
    completions: Option<(Arc<CompletionQueue>, u32)>,
}

const IN_FLIGHT_MASK: u64 = (1 << 32) - 1;
/// Added by a completion: one more unseen completion, one fewer in flight. (A call
/// also counts as an unseen change: see `begin`.)
const COMPLETED: u64 = IN_FLIGHT_MASK;

impl EndpointStats {
    pub(crate) fn new(
        decay_ns: f64,
        failure_threshold: u32,
        attention: Arc<AtomicBool>,
        completions: Option<(Arc<CompletionQueue>, u32)>,
    ) -> Self {
        Self {
            in_flight: AtomicU64::new(0),
            ewma_bits: AtomicU64::new(0),
            ewma_at: AtomicU64::new(0),
            decay_ns,
            consecutive_failures: AtomicU32::new(0),
            successes: AtomicU32::new(0),
            failures: AtomicU32::new(0),
            failure_threshold,
            attention,
            completions,
        }
    }

    #[inline]
    pub(crate) fn in_flight(&self) -> usize {
        (self.in_flight.load(Ordering::Relaxed) & IN_FLIGHT_MASK) as usize
    }

    #[inline]
    pub(crate) fn begin(&self) {
        // With a load index, the balancer looks at this endpoint at its next pick anyway
        // (see `EndpointSet::refresh_load`): mark a completion as unseen already, so
        // that a request completing before then does not queue the slot.
        if self.completions.is_some() {
            self.in_flight.fetch_add(1 + (1 << 32), Ordering::AcqRel);
        } else {
            self.in_flight.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[inline]
    pub(crate) fn end(&self) {
        match &self.completions {
            None => {
                self.in_flight.fetch_sub(1, Ordering::Relaxed);
            }
            Some((queue, slot)) => {
                // The first completion the balancer has not seen queues the slot; the
                // balancer's `take_queued` clears the unseen count in the same word, so
                // a completion is either seen by that look or queues the slot again.
                let before = self.in_flight.fetch_add(COMPLETED, Ordering::AcqRel);
                if before >> 32 == 0 {
                    queue.push(*slot);
                }
            }
        }
    }

    /// Clears the unseen completions and reads the in-flight count, for the balancer
    /// draining the completion queue (see `end`).
    #[inline]
    pub(crate) fn take_queued(&self) -> usize {
        (self.in_flight.fetch_and(IN_FLIGHT_MASK, Ordering::AcqRel) & IN_FLIGHT_MASK) as usize
    }

    /// The latency estimate decayed to `now`, in nanoseconds; `None` before any sample.
    #[inline]
    pub(crate) fn latency_at(&self, now: u64) -> Option<f64> {
        let est = f64::from_bits(self.ewma_bits.load(Ordering::Relaxed));
        if est <= 0.0 {
            return None;
        }
        let at = self.ewma_at.load(Ordering::Relaxed);
        let elapsed = now.saturating_sub(at) as f64;
        Some(est * (-elapsed / self.decay_ns).exp())
    }

    /// Folds one latency sample taken at `now` into the peak EWMA. Concurrent samples
    /// may overwrite each other; the estimate stays a valid recent value either way.
    pub(crate) fn record_latency(&self, rtt_ns: u64, now: u64) {
        let rtt = (rtt_ns.max(1)) as f64;
        let prev = f64::from_bits(self.ewma_bits.load(Ordering::Relaxed));
        let next = if prev <= 0.0 || rtt > prev {
            rtt
        } else {
            let at = self.ewma_at.load(Ordering::Relaxed);
            let elapsed = now.saturating_sub(at) as f64;
            let keep = (-elapsed / self.decay_ns).exp();
            prev * keep + rtt * (1.0 - keep)
        };
        self.ewma_bits.store(next.to_bits(), Ordering::Relaxed);
        self.ewma_at.store(now, Ordering::Relaxed);
    }

    /// Counts one classified outcome for outlier detection.
    pub(crate) fn record_outcome(&self, outcome: Outcome) {
        match outcome {
            Outcome::Success => {
                self.successes.fetch_add(1, Ordering::Relaxed);
                // Read first: a store on every success would bounce the cache line
                // between cores for no change.
                if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
                    self.consecutive_failures.store(0, Ordering::Relaxed);
                }
            }
            Outcome::Failure => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                let run = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
                if self.failure_threshold != 0 && run == self.failure_threshold {
                    self.attention.store(true, Ordering::Release);
                }
            }
            Outcome::Ignored => {}
        }
    }

    pub(crate) fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures.load(Ordering::Relaxed)
    }

    pub(crate) fn reset_consecutive_failures(&self) {
        self.consecutive_failures.store(0, Ordering::Relaxed);
    }

    /// Takes and resets the (successes, failures) counted since the last call.
    pub(crate) fn take_interval(&self) -> (u32, u32) {
        (
            self.successes.swap(0, Ordering::Relaxed),
            self.failures.swap(0, Ordering::Relaxed),
        )
    }
}

impl fmt::Debug for EndpointStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EndpointStats")
            .field("in_flight", &self.in_flight())
            .field("consecutive_failures", &self.consecutive_failures())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(threshold: u32) -> (EndpointStats, Arc<AtomicBool>) {
        let flag = Arc::new(AtomicBool::new(false));
        (EndpointStats::new(1e9, threshold, flag.clone(), None), flag)
    }

    #[test]
    fn peak_ewma_jumps_up_and_decays_down() {
        let (s, _) = stats(0);
        assert_eq!(s.latency_at(0), None);
        s.record_latency(100, 0);
        assert_eq!(s.latency_at(0), Some(100.0));
        s.record_latency(1_000, 0);
        assert_eq!(
            s.latency_at(0),
            Some(1_000.0),
            "a peak replaces the estimate"
        );
        // One decay constant later a low sample pulls it about 63% of the way down.
        s.record_latency(0, 1_000_000_000);
        let v = s.latency_at(1_000_000_000).unwrap();
        assert!((v - (1_000.0 * (-1f64).exp() + 1.0 * (1.0 - (-1f64).exp()))).abs() < 1e-6);
        // Reading later decays toward zero.
        assert!(s.latency_at(10_000_000_000).unwrap() < v / 1_000.0);
    }

    #[test]
    fn consecutive_failures_raise_attention_once_at_threshold() {
        let (s, flag) = stats(3);
        s.record_outcome(Outcome::Failure);
        s.record_outcome(Outcome::Failure);
        s.record_outcome(Outcome::Success);
        assert_eq!(s.consecutive_failures(), 0);
        for _ in 0..3 {
            s.record_outcome(Outcome::Failure);
        }
        assert!(flag.load(Ordering::Acquire));
        s.record_outcome(Outcome::Ignored);
        assert_eq!(s.consecutive_failures(), 3);
        assert_eq!(s.take_interval(), (1, 5));
        assert_eq!(s.take_interval(), (0, 0));
    }
}
