//! Rolling-window statistics: how many calls succeeded, failed, timed out or were
//! rejected recently, and how long they took.
//!
//! A [`RollingWindow`] is a plain data structure: no tower, no tokio, no background
//! task. Every method takes the current time explicitly, as nanoseconds from a
//! [`Clock`](crate::clock::Clock), so tests drive it with any timestamps they like. It
//! is `Send + Sync`; share it through an `Arc`.
//!
//! ```
//! use palisade::window::{Event, WindowConfig};
//! use std::time::Duration;
//!
//! const MS: u64 = 1_000_000;
//! let window = WindowConfig::time(Duration::from_secs(10), 10).build()?;
//! window.record(0, Event::Success, 20 * MS);
//! window.record(1_400 * MS, Event::Failure, 80 * MS);
//! window.record(1_900 * MS, Event::ShortCircuited, 0);
//!
//! let counts = window.counts(2_000 * MS);
//! assert_eq!((counts.successes, counts.failures, counts.short_circuits), (1, 1, 1));
//! assert_eq!(counts.error_percentage(), 50.0);
//!
//! let snapshot = window.snapshot(2_000 * MS);
//! assert_eq!(snapshot.latency.max, Duration::from_millis(80));
//! assert_eq!(snapshot.latency.mean, Duration::from_millis(50));
//!
//! // At 10 s the first one-second bucket has rolled out of the window.
//! assert_eq!(window.counts(10_000 * MS).successes, 0);
//! assert_eq!(window.counts(10_000 * MS).failures, 1);
//! # Ok::<(), palisade::ConfigError>(())
//! ```
//!
//! # Two kinds of window
//!
//! - **Time** ([`WindowConfig::time`], the default being Hystrix's 10 s in 10 buckets):
//!   the events of the last `length`, kept in `buckets` buckets of `length / buckets`
//!   each. Buckets roll lazily: a bucket holding an old epoch is cleared by the first
//!   write into it and skipped by reads, so gaps of any length (longer than the whole
//!   window included) clear correctly. A read at `now` covers the `buckets` bucket
//!   epochs ending with `now`'s (or with the newest epoch recorded, if later), so it
//!   sees between `length - length / buckets` and `length` of history. An event is
//!   counted in the bucket of its own timestamp, also when it arrives late (racing
//!   threads, a clock that stepped back a little); one older than every readable
//!   window is dropped. Counts are exact under concurrency too (see
//!   [Concurrency](self#concurrency) for the rare exception).
//! - **Count** ([`WindowConfig::count`]): the last `size` recorded events. Every event
//!   kind takes a place, short circuits included; a breaker that does not want its own
//!   rejections to push real outcomes out should not record them into a count window.
//!
//! # Events
//!
//! Successes, failures and timeouts carry a latency; rejections and short circuits do
//! not (their latency argument is ignored). When a
//! [slow-call threshold](WindowConfig::slow_call_threshold) is set, a success, failure
//! or timeout whose latency is at least the threshold is also counted as slow.
//!
//! # Latency
//!
//! Each time bucket keeps a fixed-size log-linear histogram (HdrHistogram-like): 1 µs
//! bins below 16 µs, then 8 linear bins per power of two, 238 bins of `u32` in all,
//! covering 0 to 14 × 2²⁸ µs (about 62.6 minutes); longer latencies are clamped into
//! the top bin. Percentiles use the nearest-rank method and report the middle of the
//! bin, capped at the exact maximum, so each is within **6.25 %** of the true value or
//! **0.5 µs**, whichever is larger. The count and the maximum are exact, and so is the
//! mean, to the nanosecond (latencies above 2⁴⁴ ns, about 4.9 hours, enter a time
//! window's mean as 2⁴⁴ ns so that a bucket's sum cannot overflow). In a time window,
//! events recorded through a bucket's overflow cell (see [Concurrency](self#concurrency))
//! are in the count, mean and maximum but not in the percentiles.
//!
//! # Cost
//!
//! [`RollingWindow::record`] on a time window is O(1), lock-free and allocation-free:
//! a multiplication and a compare that confirm the time falls in the bucket the last
//! record found (a division by multiplication when a new bucket starts), then a
//! try-lock on the recording thread's cell of the bucket (one atomic swap) and plain
//! loads and stores into it. The swap is most of the cost; a record is part of every
//! breaker call, so `cargo bench --bench layers -- per_call/palisade_breaker` measures
//! it with the rest of the breaker's closed path. On a count window, a record
//! is two atomic operations when the event it evicts is of the same kind, four to six
//! otherwise. [`RollingWindow::counts`] sums the counters of every bucket and stripe
//! (O(buckets × stripes)); [`RollingWindow::snapshot`] also merges their histograms (a
//! fixed 238 bins each). Neither allocates. For a count window, `snapshot` reads each
//! of the `size` slots.
//!
//! # Concurrency
//!
//! Each bucket of a time window is kept in [`stripes`](WindowConfig::stripes) *cells*,
//! each on its own cache lines with its own counters, histogram, epoch and try-lock. A
//! thread records into the cell of its own stripe (threads take stripes round-robin in
//! the order they first record, so `stripes` threads started together get one each),
//! and readers sum the cells, as in Java's `LongAdder`. Threads on different stripes
//! share no written cache line, so throughput grows with threads up to the stripe
//! count. Holding the cell's lock, a writer alone checks the cell's epoch, clears the
//! cell when it rolls over, and adds its event, so counts are exact under any
//! concurrency. A writer that finds its cell taken (a thread on the same stripe is
//! inside its few-nanosecond critical section, or was descheduled there) tries the
//! bucket's other cells, and moves to the stripe where it succeeds (so threads that
//! collide spread apart); if all are taken, it adds into the bucket's *overflow* cell
//! with atomic adds: nobody ever waits. The overflow cell is claimed by compare-and-swap
//! on its epoch and then cleared, so a writer adding into it at the instant another
//! rolls it over may have that event wiped or counted in the new epoch; the overflow is
//! only used when every cell of a bucket is taken at once. [`RollingWindow::reset`]
//! waits for each cell's writer (a few nanoseconds) to clear it; records racing with a
//! reset may be lost.
//!
//! A count window stripes its counts the same way (with atomic adds), but every record
//! also increments one shared sequence counter, so prefer a time window for a window
//! hammered by many threads.
//!
//! # Memory
//!
//! A time window takes `buckets × (stripes × 1032 + 136)` bytes: per bucket and stripe,
//! a 1 KiB cell (64 bytes of counters, the lock, a 952-byte histogram) and an 8-byte
//! epoch; per bucket, a 128-byte overflow cell and its epoch. With the Hystrix default
//! of 10 buckets that is 11.4 KiB with `.stripes(1)` (for one window per endpoint of a
//! large balancer), 21.5 KiB with 2 stripes and 82 KiB with 8, the largest default. A
//! count window takes 8 bytes per slot plus 128 bytes per stripe.
//! [`RollingWindow::heap_bytes`] reports the figure.

mod config;
mod count;
mod divisor;
mod histogram;
mod snapshot;
mod stripe;
mod time;

use std::fmt;

pub use config::{WindowConfig, WindowKind, MAX_BUCKETS, MAX_SIZE};
pub use snapshot::{Counts, LatencySummary, Snapshot};

use count::CountWindow;
use time::TimeWindow;

/// What became of one call, as a window counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Event {
    /// The call ran and succeeded.
    Success,
    /// The call ran and failed.
    Failure,
    /// The call ran out of time.
    Timeout,
    /// A bulkhead (or another admission limit) turned the call away before it ran.
    Rejected,
    /// An open circuit breaker turned the call away before it ran.
    ShortCircuited,
}

impl Event {
    /// Every event kind.
    pub const ALL: [Event; 5] = [
        Event::Success,
        Event::Failure,
        Event::Timeout,
        Event::Rejected,
        Event::ShortCircuited,
    ];

    /// Whether the event has a latency worth recording: successes, failures and
    /// timeouts do; rejections and short circuits do not.
    #[inline]
    pub fn carries_latency(self) -> bool {
        matches!(self, Event::Success | Event::Failure | Event::Timeout)
    }
}

/// Rolling counts and latency of recent calls. Built by [`WindowConfig::build`]; see
/// the [module docs](self) for semantics and costs.
pub struct RollingWindow {
    config: WindowConfig,
    inner: Inner,
}

enum Inner {
    Time(TimeWindow),
    Count(CountWindow),
}

impl RollingWindow {
    /// Builds the window for a configuration that passed validation.
    fn from_valid(config: WindowConfig) -> Self {
        let stripes = config.stripe_count();
        let slow = config.slow_nanos();
        let inner = match config.kind() {
            WindowKind::Time { length, buckets } => {
                let width = length.as_nanos() as u64 / u64::from(buckets);
                Inner::Time(TimeWindow::new(width, buckets, stripes, slow))
            }
            WindowKind::Count { size } => Inner::Count(CountWindow::new(size, stripes, slow)),
        };
        Self { config, inner }
    }

    /// Records one event that happened at `now` (nanoseconds, from the same clock as
    /// every other call on this window) and took `latency_nanos`. The latency is
    /// ignored for [`Event::Rejected`] and [`Event::ShortCircuited`].
    ///
    /// O(1), lock-free, allocation-free; never panics.
    #[inline]
    pub fn record(&self, now: u64, event: Event, latency_nanos: u64) {
        match &self.inner {
            Inner::Time(w) => w.record(now, event, latency_nanos),
            Inner::Count(w) => w.record(now, event, latency_nanos),
        }
    }

    /// The counts in the window as of `now`, without latency: cheap enough to call on
    /// every failure.
    pub fn counts(&self, now: u64) -> Counts {
        match &self.inner {
            Inner::Time(w) => w.counts(now),
            Inner::Count(w) => w.counts(now),
        }
    }

    /// The counts and the latency summary of the window as of `now`.
    pub fn snapshot(&self, now: u64) -> Snapshot {
        match &self.inner {
            Inner::Time(w) => w.snapshot(now),
            Inner::Count(w) => w.snapshot(now),
        }
    }

    /// Forgets every event recorded so far. A record that races with the reset may be
    /// forgotten too.
    pub fn reset(&self) {
        match &self.inner {
            Inner::Time(w) => w.reset(),
            Inner::Count(w) => w.reset(),
        }
    }

    /// The first clock reading after `now` at which the window, read without new
    /// records, may have let older events go: the start of the next bucket of a time
    /// window; `u64::MAX` for a count window, which lets an event go only when a new
    /// one takes its place.
    #[cfg_attr(not(feature = "breaker"), allow(dead_code))] // read by the breaker
    pub(crate) fn next_roll(&self, now: u64) -> u64 {
        match &self.inner {
            Inner::Time(w) => w.next_roll(now),
            Inner::Count(_) => u64::MAX,
        }
    }

    /// The configuration this window was built from.
    pub fn config(&self) -> &WindowConfig {
        &self.config
    }

    /// The heap memory the window holds, in bytes (see the
    /// [module docs](self#memory)).
    pub fn heap_bytes(&self) -> usize {
        match &self.inner {
            Inner::Time(w) => w.heap_bytes(),
            Inner::Count(w) => w.heap_bytes(),
        }
    }
}

impl fmt::Debug for RollingWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RollingWindow")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync + 'static>() {}

    #[test]
    fn rolling_window_is_send_and_sync() {
        assert_send_sync::<RollingWindow>();
    }
}
