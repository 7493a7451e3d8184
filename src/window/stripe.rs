//! Striping: spreading one logical counter over several cache lines.
//!
//! Many threads adding to one atomic fight over its cache line, and throughput falls
//! as threads are added. As in Java's `LongAdder`, each logical counter is kept in a
//! small power-of-two number of *stripes*, each on its own cache lines; a thread adds
//! into the stripe picked by its [`thread_stripe`] index, and readers sum the stripes.
//! Threads get indexes round-robin at their first record, so `stripes` threads started
//! together do not share a line; a thread that finds its stripe's cell of a time window
//! taken records into another one and [moves](move_thread_stripe) there for good, so
//! threads that happen to collide spread apart.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

pub(crate) use crate::sync::CachePadded;

use super::snapshot::Counts;
use super::Event;

/// The default number of stripes: the machine's parallelism rounded up to a power of
/// two, at most [`MAX_DEFAULT_STRIPES`].
pub(crate) fn default_stripes() -> u32 {
    let cpus = crate::sync::available_parallelism();
    (cpus.next_power_of_two().min(MAX_DEFAULT_STRIPES as usize)) as u32
}

/// The cap on the default stripe count (memory grows linearly with it).
pub(crate) const MAX_DEFAULT_STRIPES: u32 = 8;

/// The largest stripe count a configuration may ask for.
pub(crate) const MAX_STRIPES: u32 = 64;

thread_local! {
    static INDEX: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// This thread's stripe index; callers mask it with `stripes - 1`.
#[inline]
pub(crate) fn thread_stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    INDEX.with(|i| {
        let v = i.get();
        if v != usize::MAX {
            return v;
        }
        let v = NEXT.fetch_add(1, Ordering::Relaxed) & (usize::MAX >> 1);
        i.set(v);
        v
    })
}

/// Moves this thread to another stripe index, after it found its own stripe taken and
/// another free: like `LongAdder`'s rehash on contention, threads that collide spread
/// apart instead of colliding again.
#[inline]
pub(crate) fn move_thread_stripe(to: usize) {
    INDEX.with(|i| i.set(to & (usize::MAX >> 1)));
}

const SUCCESS: usize = 0;
const FAILURE: usize = 1;
const TIMEOUT: usize = 2;
const REJECTED: usize = 3;
const SHORT_CIRCUITED: usize = 4;
const SLOW: usize = 5;
const LATENCY_SUM: usize = 6;
const LATENCY_MAX: usize = 7;

/// The largest latency that enters the latency sum as itself (2⁴⁴ ns, about 4.9
/// hours): a stripe's `u64` sum then overflows only after a million such calls.
pub(crate) const SUM_LATENCY_LIMIT: u64 = 1 << 44;

/// The per-event counters of one stripe: eight `u64`s, one cache line.
///
/// Counts are added and subtracted with wrapping arithmetic, so a count window may
/// subtract an event in a different stripe from the one that added it; the stripes'
/// sum is what is exact.
#[derive(Default)]
pub(crate) struct EventCounters {
    cells: [AtomicU64; 8],
}

impl EventCounters {
    /// Adds one event with atomic read-modify-writes, for counters several threads may
    /// add to at once. `slow` is whether it is a slow call; `latency_nanos` is ignored
    /// for events that carry no latency, enters the sum clamped at
    /// [`SUM_LATENCY_LIMIT`], and raises the maximum.
    #[inline]
    pub(crate) fn add(&self, event: Event, slow: bool, latency_nanos: u64) {
        self.cells[index(event)].fetch_add(1, Ordering::Relaxed);
        if event.carries_latency() {
            self.cells[LATENCY_SUM]
                .fetch_add(latency_nanos.min(SUM_LATENCY_LIMIT), Ordering::Relaxed);
            if slow {
                self.cells[SLOW].fetch_add(1, Ordering::Relaxed);
            }
            // A plain load first, so that the usual case (not a new maximum) writes
            // nothing.
            let max = &self.cells[LATENCY_MAX];
            if latency_nanos > max.load(Ordering::Relaxed) {
                max.fetch_max(latency_nanos, Ordering::Relaxed);
            }
        }
    }

    /// [`add`](Self::add) for a caller that holds these counters exclusively: plain
    /// loads and stores, no atomic read-modify-write.
    #[inline]
    pub(crate) fn add_exclusive(&self, event: Event, slow: bool, latency_nanos: u64) {
        let bump = |i: usize, by: u64| {
            let c = &self.cells[i];
            c.store(
                c.load(Ordering::Relaxed).wrapping_add(by),
                Ordering::Relaxed,
            );
        };
        bump(index(event), 1);
        if event.carries_latency() {
            bump(LATENCY_SUM, latency_nanos.min(SUM_LATENCY_LIMIT));
            if slow {
                bump(SLOW, 1);
            }
            let max = &self.cells[LATENCY_MAX];
            if latency_nanos > max.load(Ordering::Relaxed) {
                max.store(latency_nanos, Ordering::Relaxed);
            }
        }
    }

    /// Counts one event, without its latency (a count window reads latencies from its
    /// slots).
    #[inline]
    pub(crate) fn add_count(&self, event: Event, slow: bool) {
        self.cells[index(event)].fetch_add(1, Ordering::Relaxed);
        if slow {
            self.cells[SLOW].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Uncounts one event counted before by [`add_count`](Self::add_count), possibly
    /// into another stripe.
    #[inline]
    pub(crate) fn sub_count(&self, event: Event, slow: bool) {
        self.cells[index(event)].fetch_sub(1, Ordering::Relaxed);
        if slow {
            self.cells[SLOW].fetch_sub(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn clear(&self) {
        for c in &self.cells {
            c.store(0, Ordering::Relaxed);
        }
    }

    /// Adds this stripe into the running sums (wrapping, see the type docs).
    pub(crate) fn sum_into(&self, sums: &mut StripeSums) {
        let c = &mut sums.counts;
        let load = |i: usize| self.cells[i].load(Ordering::Relaxed);
        c.successes = c.successes.wrapping_add(load(SUCCESS));
        c.failures = c.failures.wrapping_add(load(FAILURE));
        c.timeouts = c.timeouts.wrapping_add(load(TIMEOUT));
        c.rejections = c.rejections.wrapping_add(load(REJECTED));
        c.short_circuits = c.short_circuits.wrapping_add(load(SHORT_CIRCUITED));
        c.slow_calls = c.slow_calls.wrapping_add(load(SLOW));
        sums.latency_sum = sums.latency_sum.wrapping_add(load(LATENCY_SUM));
        sums.latency_max = sums.latency_max.max(load(LATENCY_MAX));
    }
}

#[inline]
fn index(event: Event) -> usize {
    match event {
        Event::Success => SUCCESS,
        Event::Failure => FAILURE,
        Event::Timeout => TIMEOUT,
        Event::Rejected => REJECTED,
        Event::ShortCircuited => SHORT_CIRCUITED,
    }
}

/// The sum of some stripes' counters.
#[derive(Default, Clone, Copy)]
pub(crate) struct StripeSums {
    pub(crate) counts: Counts,
    pub(crate) latency_sum: u64,
    pub(crate) latency_max: u64,
}

impl StripeSums {
    /// Clamps counts that a racing subtraction took below zero (they wrap to huge
    /// values) back to zero. Only a count window subtracts.
    pub(crate) fn clamp_negative(mut self) -> Self {
        let fix = |v: &mut u64| {
            if (*v as i64) < 0 {
                *v = 0;
            }
        };
        let c = &mut self.counts;
        for v in [
            &mut c.successes,
            &mut c.failures,
            &mut c.timeouts,
            &mut c.rejections,
            &mut c.short_circuits,
            &mut c.slow_calls,
        ] {
            fix(v);
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_stripe_is_stable_per_thread_and_differs_across_threads() {
        let mine = thread_stripe();
        assert_eq!(thread_stripe(), mine);
        let other = std::thread::spawn(thread_stripe).join().unwrap();
        assert_ne!(other, mine);
    }

    #[test]
    fn a_moved_thread_stays_on_its_new_stripe() {
        std::thread::spawn(|| {
            let before = thread_stripe();
            move_thread_stripe(before + 1);
            assert_eq!(thread_stripe(), before + 1);
            assert_eq!(thread_stripe(), before + 1);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn cache_padded_occupies_whole_line_pairs() {
        assert_eq!(std::mem::size_of::<EventCounters>(), 64);
        #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
        {
            assert_eq!(std::mem::align_of::<CachePadded<EventCounters>>(), 128);
            assert_eq!(std::mem::size_of::<CachePadded<EventCounters>>(), 128);
        }
    }

    #[test]
    fn add_then_sub_in_another_stripe_sums_to_zero() {
        let a = EventCounters::default();
        let b = EventCounters::default();
        a.add_count(Event::Failure, true);
        b.sub_count(Event::Failure, true);
        let mut s = StripeSums::default();
        a.sum_into(&mut s);
        b.sum_into(&mut s);
        assert_eq!(s.counts, Counts::default());
    }
}
