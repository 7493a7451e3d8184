//! A recent reading of the system clock, for call paths that only need to know which
//! bucket of a rolling window an event falls in.
//!
//! A breaker that does not time its calls still reads the clock once per call, to file
//! the outcome in its window's bucket. Reading the CPU's counter costs about 9 ns here,
//! a third of that path, while a bucket is usually a second wide. So one process-wide
//! thread, `palisade-clock`, stores the counter into one atomic every *interval*, and
//! such paths load that atomic instead (about 1 ns, on a line every core shares).
//!
//! The thread runs only while some [`RecentLease`] is alive: the first lease starts it,
//! and it ends within one interval after the last one is dropped. Each lease asks for a
//! resolution; the interval is the finest asked for since the thread started, clamped
//! to [`MIN_INTERVAL`]..=[`MAX_INTERVAL`]. A reading lags the counter by at most one
//! interval plus the time the thread waits to be scheduled; a rolling window files such
//! a slightly late event exactly, in the bucket of its (recent) timestamp.
//!
//! Where the thread is not running (no lease, or it could not be spawned), the atomic
//! holds 0 and [`RecentTicks::read`] reads the counter itself, so a reading is never
//! older than the rules above.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

/// The finest interval the thread ticks at.
pub(crate) const MIN_INTERVAL: Duration = Duration::from_millis(1);

/// The coarsest interval the thread ticks at.
pub(crate) const MAX_INTERVAL: Duration = Duration::from_millis(10);

/// One recent reading and the thread that keeps it fresh.
pub(crate) struct RecentTicks {
    /// The counter as last stored by the thread; 0 while no thread runs.
    recent: AtomicU64,
    ticker: Mutex<Ticker>,
}

struct Ticker {
    leases: usize,
    running: bool,
    interval: Duration,
}

/// The process's recent reading, shared by every system clock.
pub(crate) static GLOBAL: RecentTicks = RecentTicks::new();

impl RecentTicks {
    pub(crate) const fn new() -> Self {
        RecentTicks {
            recent: AtomicU64::new(0),
            ticker: parking_lot::const_mutex(Ticker {
                leases: 0,
                running: false,
                interval: MAX_INTERVAL,
            }),
        }
    }

    /// The last stored reading of `clock`'s counter, or a fresh one when no thread
    /// keeps it.
    #[inline]
    pub(crate) fn read(&self, clock: &quanta::Clock) -> u64 {
        match self.recent.load(Ordering::Relaxed) {
            0 => clock.raw(),
            ticks => ticks,
        }
    }

    /// Keeps the reading fresh to within about `resolution` while the lease lives,
    /// starting the thread if it is not running. `None` if the thread could not be
    /// started (readings then come from the counter itself).
    pub(crate) fn lease(
        &'static self,
        clock: &quanta::Clock,
        resolution: Duration,
    ) -> Option<RecentLease> {
        let interval = resolution.clamp(MIN_INTERVAL, MAX_INTERVAL);
        let mut ticker = self.ticker.lock();
        if ticker.running {
            ticker.interval = ticker.interval.min(interval);
        } else {
            // Fresh before the first reader can see it.
            self.recent.store(clock.raw().max(1), Ordering::Relaxed);
            ticker.interval = interval;
            let source = clock.clone();
            let spawned = std::thread::Builder::new()
                .name("palisade-clock".into())
                .spawn(move || self.run(&source));
            if spawned.is_err() {
                self.recent.store(0, Ordering::Relaxed);
                return None;
            }
            ticker.running = true;
        }
        ticker.leases += 1;
        Some(RecentLease { owner: self })
    }

    /// The thread: stores the counter every interval until no lease is left.
    fn run(&self, clock: &quanta::Clock) {
        loop {
            let interval = {
                let mut ticker = self.ticker.lock();
                if ticker.leases == 0 {
                    // Readers fall back to the counter from here on.
                    self.recent.store(0, Ordering::Relaxed);
                    ticker.running = false;
                    return;
                }
                ticker.interval
            };
            // `max(1)`: 0 means "no thread".
            self.recent.store(clock.raw().max(1), Ordering::Relaxed);
            std::thread::sleep(interval);
        }
    }

    #[cfg(test)]
    fn state(&self) -> (usize, bool, Duration) {
        let t = self.ticker.lock();
        (t.leases, t.running, t.interval)
    }
}

/// Keeps the `palisade-clock` thread running; dropping the last lease stops it.
pub(crate) struct RecentLease {
    owner: &'static RecentTicks,
}

impl Drop for RecentLease {
    fn drop(&mut self) {
        self.owner.ticker.lock().leases -= 1;
    }
}

impl std::fmt::Debug for RecentLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecentLease")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// A private instance, so that the process-wide one's other users do not matter.
    fn instance() -> &'static RecentTicks {
        Box::leak(Box::new(RecentTicks::new()))
    }

    /// Polls `done` every millisecond for up to 5 s (the thread's interval is at most
    /// 10 ms; the bound only guards against a wedged machine).
    fn eventually(mut done: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if done() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        false
    }

    #[test]
    fn without_a_lease_a_reading_comes_from_the_counter() {
        let r = instance();
        let clock = quanta::Clock::new();
        let before = clock.raw();
        let read = r.read(&clock);
        assert!(read >= before, "{read} < {before}");
        assert_eq!(r.state(), (0, false, MAX_INTERVAL));
    }

    #[test]
    fn a_lease_keeps_the_reading_fresh_and_the_last_drop_stops_the_thread() {
        let r = instance();
        let clock = quanta::Clock::new();
        let start = clock.raw();
        let lease = r
            .lease(&clock, Duration::from_millis(2))
            .expect("thread starts");
        let second = r
            .lease(&clock, Duration::from_secs(1))
            .expect("already running");
        assert_eq!(
            r.state(),
            (2, true, Duration::from_millis(2)),
            "finest interval"
        );
        // The reading moves on by itself.
        assert!(eventually(|| r.recent.load(Ordering::Relaxed) > start));
        let seen = r.read(&clock);
        assert!(eventually(|| r.read(&clock) > seen));
        drop(lease);
        assert_eq!(r.state().0, 1);
        assert!(r.state().1, "one lease left: still running");
        drop(second);
        assert!(
            eventually(|| !r.state().1),
            "thread ends after the last lease"
        );
        assert_eq!(r.recent.load(Ordering::Relaxed), 0);
        // And reading falls back to the counter.
        let now = clock.raw();
        assert!(r.read(&clock) >= now);
    }

    #[test]
    fn a_lease_taken_after_the_thread_stopped_starts_it_again() {
        let r = instance();
        let clock = quanta::Clock::new();
        drop(r.lease(&clock, Duration::from_millis(5)).expect("starts"));
        assert!(eventually(|| !r.state().1));
        let _lease = r.lease(&clock, Duration::from_secs(60)).expect("restarts");
        assert_eq!(
            r.state(),
            (1, true, MAX_INTERVAL),
            "clamped to the coarsest"
        );
        let seen = r.read(&clock);
        assert!(eventually(|| r.read(&clock) > seen));
    }
}
