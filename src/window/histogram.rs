//! The fixed-size log-linear latency histogram.
//!
//! Latencies are quantised to whole microseconds and binned HdrHistogram-style: values
//! below 16 µs get one bin each, and every power of two above that is split into
//! [`SUB_BUCKETS`] equal linear bins. [`BINS`] bins in all cover 0 µs to
//! 14 × 2²⁸ µs (about 62.6 minutes); longer latencies are clamped into the top bin.
//!
//! **Error bound.** A value is reported as the middle of its bin. A bin at or above
//! 16 µs is at most 1/8 as wide as its lower edge, so the reported value is within
//! **6.25 %** of the true one; below 16 µs bins are 1 µs wide and the report is within
//! **0.5 µs**. In short: `|reported - true| <= max(true / 16, 500 ns)` for latencies up
//! to 62.6 minutes. Reports are also capped at the exact maximum, which can only bring them
//! closer.
//!
//! **Memory.** One [`AtomicHistogram`] is 238 `u32` counters, 952 bytes (so that a
//! bucket's stripe, with its counters and lock, fits in 1 KiB). A bin's counter wraps after 2³² events, which at one time bucket per stripe
//! takes more than a million calls per second in one bin for an hour.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// Linear bins per power of two (3 bits of mantissa).
pub(crate) const SUB_BUCKETS: usize = 8;
const SUB_BITS: u32 = SUB_BUCKETS.trailing_zeros();
/// Total number of bins.
pub(crate) const BINS: usize = 238;
/// The largest latency, in microseconds, that is not clamped: the top of the top bin,
/// 14 × 2²⁸ - 1 µs (about 62.6 minutes).
#[cfg(test)]
pub(crate) const MAX_MICROS: u64 = (14 << 28) - 1;

/// The bin holding a latency of `nanos` nanoseconds.
///
/// Branch-free: with `e` the position of the highest set bit of `us | 8` (so at least
/// 3) and `s = e - 3`, `us >> s` lies in `8..16`, and the bin is `8 * s + (us >> s)`.
/// For `us < 16`, `s` is 0 and the bin is `us` itself; above, `8 * s + 8` is the first
/// bin of the power of two and the low three bits of `us >> s` the linear sub-bucket.
/// Bins grow with `us`, so clamping the bin clamps the value at the top of the top bin.
#[inline]
pub(crate) fn bin_of(nanos: u64) -> usize {
    let us = nanos / 1_000;
    let s = 63 - (us | SUB_BUCKETS as u64).leading_zeros() - SUB_BITS;
    let bin = ((s as usize) << SUB_BITS) + (us >> s) as usize;
    bin.min(BINS - 1)
}

/// The lowest latency, in microseconds, that falls into bin `i`.
pub(crate) fn bin_low_micros(i: usize) -> u64 {
    if i < 2 * SUB_BUCKETS {
        return i as u64;
    }
    let e = (i / SUB_BUCKETS) as u32 + SUB_BITS - 1;
    let mantissa = (i % SUB_BUCKETS) as u64;
    (SUB_BUCKETS as u64 + mantissa) << (e - SUB_BITS)
}

/// The width of bin `i`, in microseconds.
pub(crate) fn bin_width_micros(i: usize) -> u64 {
    if i < 2 * SUB_BUCKETS {
        return 1;
    }
    let e = (i / SUB_BUCKETS) as u32 + SUB_BITS - 1;
    1 << (e - SUB_BITS)
}

/// The value reported for bin `i`: its middle, in nanoseconds.
pub(crate) fn bin_midpoint_nanos(i: usize) -> u64 {
    bin_low_micros(i) * 1_000 + bin_width_micros(i) * 500
}

/// One histogram of atomic bin counters, recorded into concurrently.
pub(crate) struct AtomicHistogram {
    bins: [AtomicU32; BINS],
}

impl AtomicHistogram {
    pub(crate) fn new() -> Self {
        Self {
            bins: std::array::from_fn(|_| AtomicU32::new(0)),
        }
    }

    /// Counts one latency, for a caller that holds the histogram exclusively (a time
    /// window's cell lock): a plain load and store, no atomic read-modify-write.
    #[inline]
    pub(crate) fn record_exclusive(&self, nanos: u64) {
        let bin = &self.bins[bin_of(nanos)];
        bin.store(
            bin.load(Ordering::Relaxed).wrapping_add(1),
            Ordering::Relaxed,
        );
    }

    pub(crate) fn clear(&self) {
        for b in &self.bins {
            b.store(0, Ordering::Relaxed);
        }
    }

    /// Adds this histogram's counts into `into`.
    pub(crate) fn merge_into(&self, into: &mut Histogram) {
        for (sum, b) in into.bins.iter_mut().zip(&self.bins) {
            *sum += u64::from(b.load(Ordering::Relaxed));
        }
    }
}

/// A plain histogram: the merge of a window's bucket histograms, from which
/// percentiles are read. Lives on the stack (1920 bytes); merging is O(bins).
#[derive(Clone)]
pub(crate) struct Histogram {
    bins: [u64; BINS],
}

impl Histogram {
    pub(crate) fn new() -> Self {
        Self { bins: [0; BINS] }
    }

    pub(crate) fn record(&mut self, nanos: u64) {
        self.bins[bin_of(nanos)] += 1;
    }

    /// The number of values recorded.
    pub(crate) fn count(&self) -> u64 {
        self.bins.iter().sum()
    }

    /// The nearest-rank percentile: the reported value of the bin holding the
    /// `ceil(percent / 100 * count)`-th smallest value (at least the first), capped at
    /// `max_nanos`. Zero when empty.
    pub(crate) fn percentile(&self, percent: u32, count: u64, max_nanos: u64) -> Duration {
        if count == 0 {
            return Duration::ZERO;
        }
        let rank = nearest_rank(percent, count);
        let mut seen = 0;
        for (i, &n) in self.bins.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Duration::from_nanos(bin_midpoint_nanos(i).min(max_nanos));
            }
        }
        // Only reachable when `count` exceeds the bins' sum (a racing reset): report the
        // maximum rather than nothing.
        Duration::from_nanos(max_nanos)
    }
}

/// The 1-based rank of the `percent`-th percentile among `count` values, by the
/// nearest-rank method: `ceil(percent * count / 100)`, at least 1.
pub(crate) fn nearest_rank(percent: u32, count: u64) -> u64 {
    let p = u128::from(percent.min(100));
    let rank = (p * u128::from(count)).div_ceil(100) as u64;
    rank.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_are_contiguous_and_cover_the_range() {
        assert_eq!(bin_of(0), 0);
        assert_eq!(bin_of(u64::MAX), BINS - 1);
        assert_eq!(bin_of(MAX_MICROS * 1_000), BINS - 1);
        for i in 1..BINS {
            assert_eq!(
                bin_low_micros(i),
                bin_low_micros(i - 1) + bin_width_micros(i - 1),
                "bin {i} must start where bin {} ends",
                i - 1
            );
            assert_eq!(bin_of(bin_low_micros(i) * 1_000), i);
            assert_eq!(bin_of(bin_low_micros(i) * 1_000 - 1), i - 1);
        }
        let top = BINS - 1;
        assert_eq!(bin_low_micros(top) + bin_width_micros(top) - 1, MAX_MICROS);
    }

    /// The binning spelled out with a clamp and a branch, as the module docs describe it.
    fn reference_bin(nanos: u64) -> usize {
        let us = (nanos / 1_000).min(MAX_MICROS);
        if us < 2 * SUB_BUCKETS as u64 {
            return us as usize;
        }
        let e = 63 - us.leading_zeros();
        let mantissa = ((us >> (e - SUB_BITS)) as usize) & (SUB_BUCKETS - 1);
        (e - SUB_BITS + 1) as usize * SUB_BUCKETS + mantissa
    }

    #[test]
    fn branch_free_binning_matches_the_reference() {
        for i in 0..BINS {
            let low = bin_low_micros(i) * 1_000;
            let high = (bin_low_micros(i) + bin_width_micros(i)) * 1_000 - 1;
            for v in [low, low + 1, high, high + 1, low.saturating_sub(1)] {
                assert_eq!(bin_of(v), reference_bin(v), "{v} ns");
            }
        }
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = x >> (x % 64);
            assert_eq!(bin_of(v), reference_bin(v), "{v} ns");
        }
        for v in [0, 999, 1_000, 15_999, 16_000, u64::MAX - 1, u64::MAX] {
            assert_eq!(bin_of(v), reference_bin(v), "{v} ns");
        }
    }

    #[test]
    fn reported_value_is_within_the_documented_error() {
        // Every bin edge and a spread of values in between, over the whole range.
        let mut v: u64 = 0;
        while v <= MAX_MICROS * 1_000 {
            let reported = bin_midpoint_nanos(bin_of(v));
            let err = reported.abs_diff(v);
            assert!(
                err <= (v / 16).max(500) + 1,
                "value {v} ns reported as {reported} ns"
            );
            v = v + 1 + v / 37;
        }
        for i in 0..BINS {
            for edge in [
                bin_low_micros(i) * 1_000,
                (bin_low_micros(i) + bin_width_micros(i)) * 1_000 - 1,
            ] {
                let err = bin_midpoint_nanos(bin_of(edge)).abs_diff(edge);
                assert!(
                    err <= (edge / 16).max(500),
                    "edge {edge} ns off by {err} ns"
                );
            }
        }
    }

    #[test]
    fn nearest_rank_matches_definition() {
        assert_eq!(nearest_rank(50, 1), 1);
        assert_eq!(nearest_rank(50, 2), 1);
        assert_eq!(nearest_rank(50, 3), 2);
        assert_eq!(nearest_rank(99, 100), 99);
        assert_eq!(nearest_rank(99, 101), 100);
        assert_eq!(nearest_rank(0, 10), 1);
        assert_eq!(nearest_rank(100, 10), 10);
    }

    #[test]
    fn percentiles_of_a_uniform_spread_are_accurate() {
        let mut h = Histogram::new();
        for ms in 1..=1000u64 {
            h.record(ms * 1_000_000);
        }
        let max = 1000 * 1_000_000;
        for (p, want_ms) in [(50, 500u64), (90, 900), (99, 990)] {
            let got = h.percentile(p, h.count(), max).as_nanos() as u64;
            let want = want_ms * 1_000_000;
            assert!(got.abs_diff(want) <= want / 16, "p{p}: {got} vs {want}");
        }
        assert_eq!(h.percentile(100, h.count(), max), Duration::from_secs(1));
    }

    #[test]
    fn values_beyond_the_range_clamp_to_the_top_bin() {
        let mut h = Histogram::new();
        h.record(u64::MAX);
        let max = u64::MAX;
        let p = h.percentile(50, 1, max);
        assert_eq!(p, Duration::from_nanos(bin_midpoint_nanos(BINS - 1)));
        assert!(p > Duration::from_secs(55 * 60));
    }

    #[test]
    fn atomic_histogram_merges_and_clears() {
        let a = AtomicHistogram::new();
        a.record_exclusive(3_000);
        a.record_exclusive(3_400);
        a.record_exclusive(1_000_000);
        let mut h = Histogram::new();
        a.merge_into(&mut h);
        a.merge_into(&mut h);
        assert_eq!(h.count(), 6);
        a.clear();
        let mut h = Histogram::new();
        a.merge_into(&mut h);
        assert_eq!(h.count(), 0);
    }
}
