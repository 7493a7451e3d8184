//! The time-based window: a ring of buckets, each covering `length / buckets` of time.
//!
//! Time is cut into *epochs* of one bucket width, numbered `now / width`; epoch `e`
//! lives in bucket `e % buckets`. Each bucket is kept in `stripes` cells (see
//! [striping](super::stripe)), and each cell remembers which epoch it holds. There is
//! no background task: a writer that finds its cell holding an older epoch claims it
//! with a compare-and-swap on the cell's epoch and clears it, and readers skip cells
//! whose epoch is outside the window. A gap of any length is therefore handled the same
//! way as a roll of one bucket.
//!
//! The window seen by a read at `now` is the `buckets` epochs ending at the later of
//! `now`'s epoch and the newest epoch any writer has recorded into, so a reader whose
//! clock lags a writer's a little still sees the writer's events.
//!
//! **Late events.** An event is counted in the bucket of its own timestamp, even when
//! a newer epoch has already been recorded (a thread that read the clock, was
//! descheduled, then recorded; a clock that stepped back a little). If its epoch is so
//! old that its cell already holds a newer epoch, it lies outside every window that can
//! still be read, and it is dropped. So counts are exact for any order of timestamps.
//!
//! **Rollover under concurrency.** Only a thread recording into a cell claims and
//! clears it, so a thread that has its stripe to itself rolls over exactly, however
//! many other threads record into other stripes. When threads share a stripe, one that
//! records into the cell at the instant another claims it may have its event wiped by
//! the clearing, or counted in the new epoch: one event per such thread, plus any they
//! record while the claiming thread is descheduled in the middle of clearing the 1 KiB
//! cell. [`reset`](super::RollingWindow::reset) clears the cells while records may race
//! with it; a racing record may be lost. Single-threaded use is exact.

use std::sync::atomic::{AtomicU64, Ordering};

use super::histogram::{AtomicHistogram, Histogram};
use super::snapshot::{Counts, LatencySummary, Snapshot};
use super::stripe::{thread_stripe, EventCounters, StripeSums};
use super::Event;

/// Division by a divisor fixed at construction, by multiplication (a hardware `div`
/// costs tens of cycles; this is two multiplications and a compare).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Divisor {
    d: u64,
    /// floor(2^64 / d); up to 2^64 when d = 1, hence u128.
    m: u128,
}

impl Divisor {
    pub(crate) fn new(d: u64) -> Self {
        assert!(d > 0, "divisor must be positive");
        Self {
            d,
            m: (1u128 << 64) / u128::from(d),
        }
    }

    /// `n / d`. The estimate `floor(n * m / 2^64)` is `n / d` or one less, because
    /// `m > 2^64 / d - 1` and `n < 2^64`; one compare fixes it.
    #[inline]
    pub(crate) fn div(&self, n: u64) -> u64 {
        let q = ((u128::from(n) * self.m) >> 64) as u64;
        if n - q * self.d >= self.d {
            q + 1
        } else {
            q
        }
    }

    /// `n % d`.
    #[inline]
    pub(crate) fn rem(&self, n: u64) -> u64 {
        n - self.div(n) * self.d
    }
}

/// The largest latency that enters the latency sum as itself (about 4.9 hours): a
/// bucket's `u64` sum then overflows only after a million such calls.
const MEAN_LATENCY_LIMIT: u64 = 1 << 44;

/// One stripe of one bucket: its counters and its latency histogram, 1 KiB.
#[repr(align(128))]
struct BucketStripe {
    counters: EventCounters,
    histogram: AtomicHistogram,
}

impl BucketStripe {
    fn new() -> Self {
        Self {
            counters: EventCounters::default(),
            histogram: AtomicHistogram::new(),
        }
    }

    fn clear(&self) {
        self.counters.clear();
        self.histogram.clear();
    }
}

/// The bytes one bucket of one stripe takes.
pub(crate) const BUCKET_STRIPE_BYTES: usize = std::mem::size_of::<BucketStripe>();

pub(crate) struct TimeWindow {
    width: Divisor,
    buckets: Divisor,
    bucket_count: u64,
    stripes: usize,
    slow_nanos: u64,
    /// Per cell, the epoch it holds plus one; 0 for a cell that holds nothing. Kept
    /// apart from the cells, so that the line they share is written only at rollover
    /// and otherwise stays shared by every core that reads it.
    tags: Box<[AtomicU64]>,
    /// `buckets * stripes` cells, bucket-major.
    cells: Box<[BucketStripe]>,
}

impl TimeWindow {
    pub(crate) fn new(width_nanos: u64, buckets: u32, stripes: u32, slow_nanos: u64) -> Self {
        let cells = buckets as usize * stripes as usize;
        Self {
            width: Divisor::new(width_nanos),
            buckets: Divisor::new(u64::from(buckets)),
            bucket_count: u64::from(buckets),
            stripes: stripes as usize,
            slow_nanos,
            tags: (0..cells).map(|_| AtomicU64::new(0)).collect(),
            cells: (0..cells).map(|_| BucketStripe::new()).collect(),
        }
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.tags.len() * 8 + self.cells.len() * BUCKET_STRIPE_BYTES
    }

    #[inline]
    pub(crate) fn record(&self, now: u64, event: Event, latency_nanos: u64) {
        let epoch = self.width.div(now);
        let bucket = self.buckets.rem(epoch) as usize;
        let index = bucket * self.stripes + (thread_stripe() & (self.stripes - 1));
        if !self.claim(index, epoch) {
            return;
        }
        let cell = &self.cells[index];
        if event.carries_latency() {
            let slow = self.slow_nanos != 0 && latency_nanos >= self.slow_nanos;
            cell.counters
                .add(event, slow, latency_nanos.min(MEAN_LATENCY_LIMIT));
            cell.histogram.record(latency_nanos);
            cell.counters.raise_max(latency_nanos);
        } else {
            cell.counters.add(event, false, 0);
        }
    }

    /// Makes cell `index` hold `epoch`, claiming and clearing it if it held an older
    /// one. False when it holds a newer one: the event is older than every window that
    /// can still be read, and is dropped.
    #[inline]
    fn claim(&self, index: usize, epoch: u64) -> bool {
        let tag = epoch.saturating_add(1);
        let slot = &self.tags[index];
        let mut current = slot.load(Ordering::Acquire);
        loop {
            if current == tag {
                return true;
            }
            if current > tag {
                return false;
            }
            match slot.compare_exchange_weak(current, tag, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    self.cells[index].clear();
                    return true;
                }
                Err(actual) => current = actual,
            }
        }
    }

    /// Calls `f` on every cell inside the window read at `now`: the `buckets` epochs
    /// ending at the later of `now`'s epoch and the newest epoch recorded.
    fn for_each_live_cell(&self, now: u64, mut f: impl FnMut(&BucketStripe)) {
        let now_tag = self.width.div(now).saturating_add(1);
        let newest = self
            .tags
            .iter()
            .map(|t| t.load(Ordering::Acquire))
            .max()
            .unwrap_or(0);
        let end = now_tag.max(newest);
        let start = end.saturating_sub(self.bucket_count);
        for (slot, cell) in self.tags.iter().zip(self.cells.iter()) {
            let tag = slot.load(Ordering::Acquire);
            if tag > start && tag <= end {
                f(cell);
            }
        }
    }

    pub(crate) fn counts(&self, now: u64) -> Counts {
        let mut sums = StripeSums::default();
        self.for_each_live_cell(now, |cell| cell.counters.sum_into(&mut sums));
        sums.counts
    }

    pub(crate) fn snapshot(&self, now: u64) -> Snapshot {
        let mut sums = StripeSums::default();
        let mut hist = Histogram::new();
        self.for_each_live_cell(now, |cell| {
            cell.counters.sum_into(&mut sums);
            cell.histogram.merge_into(&mut hist);
        });
        let c = sums.counts;
        Snapshot {
            counts: c,
            latency: LatencySummary::from_parts(
                &hist,
                c.completed(),
                u128::from(sums.latency_sum),
                sums.latency_max,
            ),
        }
    }

    pub(crate) fn reset(&self) {
        for (slot, cell) in self.tags.iter().zip(self.cells.iter()) {
            slot.store(0, Ordering::Release);
            cell.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn divisor_matches_hardware_division() {
        let divisors = [
            1u64,
            2,
            3,
            7,
            10,
            1_000,
            100_000_000,
            1_000_000_007,
            u64::MAX / 3,
            u64::MAX,
        ];
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for &d in &divisors {
            let div = Divisor::new(d);
            for n in [0, 1, d - 1, d, d.wrapping_add(1), u64::MAX - 1, u64::MAX] {
                assert_eq!(div.div(n), n / d, "{n} / {d}");
                assert_eq!(div.rem(n), n % d, "{n} % {d}");
            }
            for _ in 0..10_000 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                assert_eq!(div.div(x), x / d, "{x} / {d}");
                assert_eq!(div.rem(x), x % d, "{x} % {d}");
            }
        }
    }

    #[test]
    fn bucket_stripe_is_one_kibibyte() {
        assert_eq!(BUCKET_STRIPE_BYTES, 1024);
    }
}
