//! The time-based window: a ring of buckets, each covering `length / buckets` of time.
//!
//! Time is cut into *epochs* of one bucket width, numbered `now / width`; epoch `e`
//! lives in bucket `e % buckets`. Each bucket is kept in `stripes` *cells* (see
//! [striping](super::stripe)) plus one *overflow* cell, and each cell remembers which
//! epoch it holds. There is no background task: a writer that finds its cell holding
//! an older epoch clears it and moves it to the new epoch, and readers skip cells
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
//! **Locating.** Dividing every timestamp by the bucket width would cost a wide
//! multiplication per record, so the window keeps a *hint*: the newest epoch located so
//! far and its bucket, packed in one atomic word. A record whose time falls inside the
//! hinted epoch (one multiplication and one compare) uses it; any other divides, and
//! moves the hint forward if its epoch is newer. The hint is only a cache of the
//! division: a stale one costs a division, never a wrong bucket.
//!
//! **Recording.** A writer takes its cell with a try-lock: one atomic swap on the
//! cell's lock word. Holding it, the writer alone checks the cell's epoch, clears the
//! cell if it is stale, and adds the event with plain loads and stores, then releases
//! the lock with a plain store. That is one atomic read-modify-write per record, where
//! adding into shared counters would take three, and rollover is exact however many
//! threads record at once. A writer that finds its stripe's cell taken (another thread
//! on the same stripe is inside its few-nanosecond critical section, or was descheduled
//! there) tries the other stripes' cells of the bucket, and moves to the stripe where
//! it succeeds; if all are taken, it records into the bucket's overflow cell with
//! atomic adds, so no writer ever waits.
//!
//! The overflow cell has counters but no histogram: its events are in the counts, the
//! latency count, mean and maximum, but not in the percentiles. It is claimed by a
//! compare-and-swap on its epoch and then cleared, so a writer adding into it at the
//! instant another rolls it over may have its event wiped or counted in the new epoch;
//! the overflow is only used when every cell of a bucket is taken at once, so this is
//! rare and small.
//!
//! [`reset`](super::RollingWindow::reset) takes each cell's lock in turn (waiting for a
//! writer inside it) and clears it; records that race with a reset may be lost.

use std::sync::atomic::{AtomicU64, Ordering};

use super::divisor::Divisor;
use super::histogram::{AtomicHistogram, Histogram};
use super::snapshot::{Counts, LatencySummary, Snapshot};
use super::stripe::{move_thread_stripe, thread_stripe, CachePadded, EventCounters, StripeSums};
use super::Event;
use crate::sync;

/// One stripe of one bucket: its counters, its lock and its latency histogram, 1 KiB.
#[repr(C, align(128))]
struct BucketStripe {
    counters: EventCounters,
    /// 0 when free, 1 while a writer holds the cell. From the [`sync`](crate::sync) facade,
    /// so that the `loom` models below check the lock (the counters it guards are `std`'s).
    lock: sync::AtomicU64,
    histogram: AtomicHistogram,
}

impl BucketStripe {
    fn new() -> Self {
        Self {
            counters: EventCounters::default(),
            lock: sync::AtomicU64::new(0),
            histogram: AtomicHistogram::new(),
        }
    }

    /// Takes the lock if it is free. The plain load first keeps a writer that finds
    /// the cell taken from pulling its line away from the holder. A compare-and-swap
    /// rather than a swap: a failed one writes nothing, where a swap that lost would
    /// write its `1` over the holder's, a write loom's model cannot order after the
    /// holder's unlock.
    #[inline]
    fn try_lock(&self) -> bool {
        self.lock.load(Ordering::Relaxed) == 0
            && self
                .lock
                .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
    }

    #[inline]
    fn unlock(&self) {
        self.lock.store(0, Ordering::Release);
    }

    fn clear(&self) {
        self.counters.clear();
        self.histogram.clear();
    }
}

/// The bytes one bucket of one stripe takes.
pub(crate) const BUCKET_STRIPE_BYTES: usize = std::mem::size_of::<BucketStripe>();

/// The bytes of one bucket's overflow cell.
pub(crate) const OVERFLOW_BYTES: usize = std::mem::size_of::<CachePadded<EventCounters>>();

pub(crate) struct TimeWindow {
    width: Divisor,
    buckets: Divisor,
    bucket_count: u64,
    /// The epoch most recently located and the first cell of its bucket, packed as
    /// `epoch << HINT_BUCKET_BITS | bucket << stripe_shift` (see
    /// [`locate`](Self::locate)). Written only
    /// when a record enters a newer epoch (once per bucket width), so the line stays
    /// shared by every core that reads it.
    hint: AtomicU64,
    /// `stripes - 1`; `stripes` is a power of two.
    stripe_mask: usize,
    /// `log2(stripes)`: a bucket's first cell is `bucket << stripe_shift`.
    stripe_shift: u32,
    /// One less than the slow-call threshold (a latency above it is slow); `u64::MAX`
    /// when there is no threshold, so that nothing is.
    slow_above: u64,
    /// Per cell, the epoch it holds plus one; 0 for a cell that holds nothing. Written
    /// only under the cell's lock, at rollover; kept apart from the cells so that the
    /// line they share stays shared by every core that reads it.
    tags: Box<[AtomicU64]>,
    /// `buckets * stripes` cells, bucket-major.
    cells: Box<[BucketStripe]>,
    /// Per bucket, the epoch its overflow cell holds plus one (claimed by CAS).
    overflow_tags: Box<[AtomicU64]>,
    overflow: Box<[CachePadded<EventCounters>]>,
}

/// Bits of [`TimeWindow::hint`] holding the first cell of a bucket (`MAX_BUCKETS`
/// × `MAX_STRIPES` < 2^16).
const HINT_BUCKET_BITS: u32 = 16;
const HINT_BUCKET_MASK: u64 = (1 << HINT_BUCKET_BITS) - 1;
/// The largest epoch the hint can hold; later epochs are located by division.
const HINT_MAX_EPOCH: u64 = u64::MAX >> HINT_BUCKET_BITS;

/// What became of a try at recording into one cell.
enum Attempt {
    Recorded,
    /// The event is older than the cell's epoch: outside every readable window.
    Expired,
    Taken,
}

impl TimeWindow {
    pub(crate) fn new(width_nanos: u64, buckets: u32, stripes: u32, slow_nanos: u64) -> Self {
        debug_assert!(stripes.is_power_of_two());
        debug_assert!(u64::from(buckets) * u64::from(stripes) <= HINT_BUCKET_MASK + 1);
        let n = buckets as usize;
        let cells = n * stripes as usize;
        Self {
            width: Divisor::new(width_nanos),
            buckets: Divisor::new(u64::from(buckets)),
            bucket_count: u64::from(buckets),
            // Epoch 0 lies in bucket 0, whose first cell is 0: the zero hint is a true one.
            hint: AtomicU64::new(0),
            stripe_mask: stripes as usize - 1,
            stripe_shift: stripes.trailing_zeros(),
            // Zero means no threshold: wraps to `u64::MAX`.
            slow_above: slow_nanos.wrapping_sub(1),
            tags: (0..cells).map(|_| AtomicU64::new(0)).collect(),
            cells: (0..cells).map(|_| BucketStripe::new()).collect(),
            overflow_tags: (0..n).map(|_| AtomicU64::new(0)).collect(),
            overflow: (0..n).map(|_| CachePadded::default()).collect(),
        }
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        (self.tags.len() + self.overflow_tags.len()) * 8
            + self.cells.len() * BUCKET_STRIPE_BYTES
            + self.overflow.len() * OVERFLOW_BYTES
    }

    /// The tag of `now`'s epoch (the epoch plus one) and the first cell of its bucket.
    /// Nearly every call falls in the epoch of the hint, which one multiplication and
    /// one compare confirm; otherwise this divides, and moves the hint forward if the
    /// epoch is newer.
    #[inline]
    fn locate(&self, now: u64) -> (u64, usize) {
        let hint = self.hint.load(Ordering::Relaxed);
        let epoch = hint >> HINT_BUCKET_BITS;
        // `epoch * width <= now < (epoch + 1) * width`, with `now` below the start
        // wrapping to a huge difference. The hint's epoch came from a clock reading, so
        // the product does not overflow.
        if now.wrapping_sub(epoch.wrapping_mul(self.width.get())) < self.width.get() {
            // A hinted epoch is below 2^48: its tag does not overflow.
            return (epoch + 1, (hint & HINT_BUCKET_MASK) as usize);
        }
        self.locate_by_division(now, epoch)
    }

    #[cold]
    fn locate_by_division(&self, now: u64, hinted_epoch: u64) -> (u64, usize) {
        let epoch = self.width.div(now);
        let first_cell = self.buckets.rem(epoch) << self.stripe_shift;
        // Late events (a descheduled thread, a clock stepping back) do not move the
        // hint back and forth.
        if epoch > hinted_epoch && epoch <= HINT_MAX_EPOCH {
            self.hint
                .fetch_max(epoch << HINT_BUCKET_BITS | first_cell, Ordering::Relaxed);
        }
        (epoch.saturating_add(1), first_cell as usize)
    }

    /// Whether an event carries a latency at or above the slow-call threshold.
    #[inline]
    fn is_slow(&self, event: Event, latency_nanos: u64) -> bool {
        event.carries_latency() && latency_nanos > self.slow_above
    }

    #[inline]
    pub(crate) fn record(&self, now: u64, event: Event, latency_nanos: u64) {
        let (tag, first_cell) = self.locate(now);
        let slow = self.is_slow(event, latency_nanos);
        let first = thread_stripe();
        let index = first_cell | (first & self.stripe_mask);
        if let Attempt::Taken = self.try_record(index, tag, event, slow, latency_nanos) {
            self.record_contended(first_cell, first, tag, event, slow, latency_nanos);
        }
    }

    /// The writer's own cell was taken: tries the bucket's other cells, moving to the
    /// stripe of the first free one, then the overflow cell.
    #[cold]
    fn record_contended(
        &self,
        first_cell: usize,
        first: usize,
        tag: u64,
        event: Event,
        slow: bool,
        latency_nanos: u64,
    ) {
        for k in 1..=self.stripe_mask {
            let stripe = first.wrapping_add(k);
            let index = first_cell | (stripe & self.stripe_mask);
            match self.try_record(index, tag, event, slow, latency_nanos) {
                Attempt::Recorded | Attempt::Expired => {
                    move_thread_stripe(stripe);
                    return;
                }
                Attempt::Taken => {}
            }
        }
        let bucket = first_cell >> self.stripe_shift;
        self.record_overflow(bucket, tag, event, slow, latency_nanos);
    }

    #[inline]
    fn try_record(
        &self,
        index: usize,
        tag: u64,
        event: Event,
        slow: bool,
        latency_nanos: u64,
    ) -> Attempt {
        let cell = &self.cells[index];
        if !cell.try_lock() {
            return Attempt::Taken;
        }
        let slot = &self.tags[index];
        let current = slot.load(Ordering::Relaxed);
        if current > tag {
            cell.unlock();
            return Attempt::Expired;
        }
        if current < tag {
            cell.clear();
            slot.store(tag, Ordering::Release);
        }
        cell.counters.add_exclusive(event, slow, latency_nanos);
        if event.carries_latency() {
            cell.histogram.record_exclusive(latency_nanos);
        }
        cell.unlock();
        Attempt::Recorded
    }

    #[cold]
    fn record_overflow(
        &self,
        bucket: usize,
        tag: u64,
        event: Event,
        slow: bool,
        latency_nanos: u64,
    ) {
        let slot = &self.overflow_tags[bucket];
        let mut current = slot.load(Ordering::Acquire);
        loop {
            if current > tag {
                return;
            }
            if current == tag {
                break;
            }
            match slot.compare_exchange_weak(current, tag, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    // An overflow that held nothing is already clear; not clearing it
                    // again spares the adds racing with this claim.
                    if current != 0 {
                        self.overflow[bucket].clear();
                    }
                    break;
                }
                Err(actual) => current = actual,
            }
        }
        self.overflow[bucket].add(event, slow, latency_nanos);
    }

    /// The start of the epoch after `now`'s (saturating).
    #[cfg_attr(not(feature = "breaker"), allow(dead_code))] // read by the breaker
    pub(crate) fn next_roll(&self, now: u64) -> u64 {
        let next = self.width.div(now).saturating_add(1);
        next.saturating_mul(self.width.get())
    }

    /// The first and last tag (epoch plus one) of the window read at `now`: the
    /// `buckets` epochs ending at the later of `now`'s epoch and the newest recorded.
    fn window_tags(&self, now: u64) -> (u64, u64) {
        let now_tag = self.width.div(now).saturating_add(1);
        let newest = self
            .tags
            .iter()
            .chain(self.overflow_tags.iter())
            .map(|t| t.load(Ordering::Acquire))
            .max()
            .unwrap_or(0);
        let end = now_tag.max(newest);
        (end.saturating_sub(self.bucket_count) + 1, end)
    }

    /// Sums the counters of every cell inside the window read at `now`, and merges
    /// their histograms into `hist` if given.
    fn sum(&self, now: u64, mut hist: Option<&mut Histogram>) -> StripeSums {
        let (first, last) = self.window_tags(now);
        let live = |slot: &AtomicU64| (first..=last).contains(&slot.load(Ordering::Acquire));
        let mut sums = StripeSums::default();
        for (slot, cell) in self.tags.iter().zip(self.cells.iter()) {
            if live(slot) {
                cell.counters.sum_into(&mut sums);
                if let Some(h) = hist.as_deref_mut() {
                    cell.histogram.merge_into(h);
                }
            }
        }
        for (slot, overflow) in self.overflow_tags.iter().zip(self.overflow.iter()) {
            if live(slot) {
                overflow.sum_into(&mut sums);
            }
        }
        sums
    }

    pub(crate) fn counts(&self, now: u64) -> Counts {
        self.sum(now, None).counts
    }

    pub(crate) fn snapshot(&self, now: u64) -> Snapshot {
        let mut hist = Histogram::new();
        let sums = self.sum(now, Some(&mut hist));
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
            // A writer holds a cell for a few nanoseconds (unless descheduled there).
            while !cell.try_lock() {
                sync::yield_now();
            }
            slot.store(0, Ordering::Release);
            cell.clear();
            cell.unlock();
        }
        for (slot, overflow) in self.overflow_tags.iter().zip(self.overflow.iter()) {
            slot.store(0, Ordering::Release);
            overflow.clear();
        }
    }

    /// Records into the overflow cell as if every cell of the bucket were taken.
    #[cfg(test)]
    fn record_into_overflow(&self, now: u64, event: Event, latency_nanos: u64) {
        let (tag, first_cell) = self.locate(now);
        let slow = self.is_slow(event, latency_nanos);
        let bucket = first_cell >> self.stripe_shift;
        self.record_overflow(bucket, tag, event, slow, latency_nanos);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bucket_stripe_is_one_kibibyte() {
        assert_eq!(BUCKET_STRIPE_BYTES, 1024);
        assert_eq!(OVERFLOW_BYTES, 128);
    }

    #[test]
    fn located_tag_and_cell_match_division_in_any_order_of_times() {
        let width = 1_000;
        // Two stripes: a bucket's first cell is twice its index.
        let w = TimeWindow::new(width, 7, 2, 0);
        let want = |now: u64| {
            let epoch = now / width;
            (epoch.saturating_add(1), (epoch % 7) as usize * 2)
        };
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut now = 0u64;
        for step in 0..20_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            now = match step % 5 {
                // Mostly small steps forward, within or just past the hinted epoch.
                0..=2 => now + x % 700,
                3 => now.saturating_sub(x % 3_000),
                _ => x >> (x % 64),
            };
            assert_eq!(w.locate(now), want(now), "at {now}");
        }
        // Epochs too large for the hint are located by division every time.
        for now in [u64::MAX, u64::MAX - 1, (HINT_MAX_EPOCH + 1) * width] {
            assert_eq!(w.locate(now), want(now));
        }
        assert_eq!(w.locate(5 * width), (6, 10));
        // With one-nanosecond buckets the last epoch's tag saturates rather than wraps.
        let w = TimeWindow::new(1, 3, 1, 0);
        assert_eq!(w.locate(u64::MAX), (u64::MAX, (u64::MAX % 3) as usize));
    }

    #[test]
    fn next_roll_is_the_start_of_the_next_bucket() {
        let w = TimeWindow::new(1_000, 4, 1, 0);
        assert_eq!(w.next_roll(0), 1_000);
        assert_eq!(w.next_roll(999), 1_000);
        assert_eq!(w.next_roll(1_000), 2_000);
        assert_eq!(w.next_roll(u64::MAX), u64::MAX, "saturates");
    }

    #[test]
    fn the_hint_only_moves_forward() {
        let w = TimeWindow::new(1_000, 4, 2, 0);
        w.locate(9_500);
        let hinted = w.hint.load(Ordering::Relaxed);
        // Epoch 9 is in bucket 1, whose first cell is 2.
        assert_eq!(hinted, 9 << HINT_BUCKET_BITS | 2);
        w.locate(2_500);
        assert_eq!(w.hint.load(Ordering::Relaxed), hinted, "a late event");
    }

    #[test]
    fn taken_cell_sends_the_writer_to_another_stripe() {
        let w = TimeWindow::new(1_000, 10, 2, 0);
        let mine = thread_stripe() & 1;
        assert!(w.cells[mine].try_lock());
        w.record(0, Event::Failure, 5);
        w.cells[mine].unlock();
        let other = 1 - mine;
        let mut s = StripeSums::default();
        w.cells[other].counters.sum_into(&mut s);
        assert_eq!(s.counts.failures, 1);
        assert_eq!(w.counts(0).failures, 1);
    }

    #[test]
    fn all_cells_taken_sends_the_writer_to_the_overflow() {
        let w = TimeWindow::new(1_000, 10, 2, 100);
        assert!(w.cells[0].try_lock() && w.cells[1].try_lock());
        w.record(0, Event::Success, 300);
        w.record(0, Event::Rejected, 0);
        w.cells[0].unlock();
        w.cells[1].unlock();
        w.record(0, Event::Success, 100);
        let s = w.snapshot(0);
        assert_eq!(s.counts.successes, 2);
        assert_eq!(s.counts.rejections, 1);
        assert_eq!(s.counts.slow_calls, 2);
        // The overflow's latency is in the count, mean and max, not the percentiles.
        assert_eq!(s.latency.count, 2);
        assert_eq!(s.latency.max, Duration::from_nanos(300));
        assert_eq!(s.latency.mean, Duration::from_nanos(200));
    }

    #[test]
    fn overflow_rolls_over_and_drops_expired_events_like_cells() {
        let w = TimeWindow::new(1_000, 4, 1, 0);
        w.record_into_overflow(500, Event::Failure, 0); // epoch 0
        w.record_into_overflow(4_500, Event::Success, 0); // epoch 4, same bucket
        w.record_into_overflow(200, Event::Failure, 0); // epoch 0 again: expired
        let c = w.counts(4_500);
        assert_eq!((c.failures, c.successes), (0, 1));
        w.reset();
        assert_eq!(w.counts(4_500), Counts::default());
        w.record_into_overflow(4_600, Event::Timeout, 0);
        assert_eq!(w.counts(4_600).timeouts, 1);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 64, ..Default::default() })]

        /// Counts agree exactly with a naive model whichever mix of cells and overflow
        /// the events go through.
        #[test]
        fn counts_through_cells_and_overflow_match_the_naive_model(
            buckets in 1u64..=6,
            ops in proptest::collection::vec((0u8..8, 0u64..4_000, proptest::bool::ANY), 1..120),
        ) {
            let width = 1_000;
            let w = TimeWindow::new(width, buckets as u32, 2, 0);
            let mut events: Vec<(u64, Event)> = Vec::new();
            let mut now = 0u64;
            for (kind, amount, overflow) in ops {
                match kind {
                    0..=4 => {
                        let event = Event::ALL[kind as usize];
                        if overflow {
                            w.record_into_overflow(now, event, amount);
                        } else {
                            w.record(now, event, amount);
                        }
                        events.push((now, event));
                    }
                    5 => now += amount,
                    6 => now = now.saturating_sub(amount / 4),
                    _ => {
                        if amount < 200 {
                            w.reset();
                            events.clear();
                        } else {
                            now += amount * buckets * 10;
                        }
                    }
                }
                let newest = events.iter().map(|e| e.0 / width).max().unwrap_or(0);
                let end = (now / width).max(newest);
                let mut want = Counts::default();
                for &(t, event) in &events {
                    if t / width <= end && t / width + buckets > end {
                        match event {
                            Event::Success => want.successes += 1,
                            Event::Failure => want.failures += 1,
                            Event::Timeout => want.timeouts += 1,
                            Event::Rejected => want.rejections += 1,
                            Event::ShortCircuited => want.short_circuits += 1,
                        }
                    }
                }
                proptest::prop_assert_eq!(w.counts(now), want);
            }
        }
    }
}

/// Model checking of the cell's try-lock with [loom](https://docs.rs/loom) (see the
/// [`sync`](crate::sync) module docs for the command): under the lock a writer adds with
/// plain loads and stores (`add_exclusive`), so the lock must admit one writer at a time
/// and hand each holder's writes on to the next. The models stand a loom counter, bumped as
/// `add_exclusive` bumps its cells, in for the cell's counters.
#[cfg(all(test, palisade_loom))]
mod loom {
    use super::BucketStripe;
    use ::loom::sync::atomic::{AtomicU64, AtomicUsize};
    use ::loom::thread;
    use std::sync::atomic::Ordering::{AcqRel, Relaxed, SeqCst};
    use std::sync::Arc;

    /// A cell and what its lock guards.
    struct Guarded {
        cell: BucketStripe,
        /// Bumped under the lock with a relaxed load and store, as the counters are.
        count: AtomicU64,
        /// Writers inside the lock right now.
        inside: AtomicUsize,
    }

    impl Guarded {
        /// The critical section: asserts it is alone, then bumps the count.
        fn bump_locked(&self) {
            assert_eq!(
                self.inside.fetch_add(1, AcqRel),
                0,
                "two writers hold the cell"
            );
            self.count.store(self.count.load(Relaxed) + 1, Relaxed);
            self.inside.fetch_sub(1, AcqRel);
            self.cell.unlock();
        }
    }

    /// Writers try once each (as a recording writer does before moving to another cell),
    /// a reset spins for the lock as [`reset`](super::TimeWindow::reset) does: never two
    /// inside at once, every holder's bump survives, and the lock is free again after.
    #[test]
    fn loom_cell_lock_admits_one_writer_at_a_time_and_loses_no_count() {
        ::loom::model(|| {
            let g = Arc::new(Guarded {
                cell: BucketStripe::new(),
                count: AtomicU64::new(0),
                inside: AtomicUsize::new(0),
            });
            let writer = {
                let g = Arc::clone(&g);
                thread::spawn(move || {
                    let mut won = 0;
                    for _ in 0..2 {
                        if g.cell.try_lock() {
                            g.bump_locked();
                            won += 1;
                        }
                    }
                    won
                })
            };
            // The reset's way in: wait for the writer to leave.
            while !g.cell.try_lock() {
                crate::sync::yield_now();
            }
            g.bump_locked();
            let won = writer.join().unwrap();
            // Joined: the writer's last store happens before this load.
            assert_eq!(g.count.load(SeqCst), won + 1, "a holder's bump was lost");
            assert!(g.cell.try_lock(), "the released lock is free again");
        });
    }

    /// Two writers that each try once: at least one gets in (the lock is only ever held
    /// inside a critical section), and both counts survive when both do.
    #[test]
    fn loom_cell_lock_turns_away_a_writer_only_while_another_holds_it() {
        ::loom::model(|| {
            let g = Arc::new(Guarded {
                cell: BucketStripe::new(),
                count: AtomicU64::new(0),
                inside: AtomicUsize::new(0),
            });
            let threads: Vec<_> = (0..2)
                .map(|_| {
                    let g = Arc::clone(&g);
                    thread::spawn(move || {
                        if g.cell.try_lock() {
                            g.bump_locked();
                            1
                        } else {
                            0
                        }
                    })
                })
                .collect();
            let won: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
            assert!(won >= 1, "both writers were turned away from a free cell");
            assert_eq!(g.count.load(SeqCst), won, "a holder's bump was lost");
        });
    }
}
