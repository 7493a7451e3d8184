//! Property tests: the windows agree with a naive model that keeps every event.
//!
//! For arbitrary sequences of clock moves (small steps, steps of a few buckets, gaps
//! far longer than the window, small steps back), events and latencies, the time
//! window's counts equal those of a `Vec` of timestamped events filtered by the
//! window's bucket-aligned range, and the count window's counts equal those of the last
//! `size` events. Count, mean and maximum latency agree exactly; percentiles agree
//! within the histogram's documented error.

use palisade::window::{Counts, Event, LatencySummary, RollingWindow, Snapshot, WindowConfig};
use proptest::prelude::*;
use std::collections::VecDeque;
use std::time::Duration;

#[derive(Debug, Clone)]
enum Op {
    /// Move the clock forward by this many nanoseconds.
    Advance(u64),
    /// Move the clock back by this many nanoseconds (a racing thread's older reading).
    Back(u64),
    Record(Event, u64),
    Reset,
}

fn event() -> impl Strategy<Value = Event> {
    prop::sample::select(Event::ALL.to_vec())
}

/// Latencies spread over every scale the histogram covers: 0 ns to ~19 minutes.
fn latency() -> impl Strategy<Value = u64> {
    (0u32..40, any::<u64>()).prop_map(|(bits, r)| if bits == 0 { 0 } else { r >> (64 - bits) })
}

fn ops(width: u64, buckets: u64) -> impl Strategy<Value = Vec<Op>> {
    let window = width * buckets;
    let op = prop_oneof![
        6 => (event(), latency()).prop_map(|(e, l)| Op::Record(e, l)),
        2 => (0..width).prop_map(Op::Advance),
        2 => (0..=3 * width).prop_map(Op::Advance),
        1 => (0..=2 * window).prop_map(Op::Advance),
        1 => (window..=1_000 * window).prop_map(Op::Advance),
        1 => (0..=2 * width).prop_map(Op::Back),
        1 => Just(Op::Reset),
    ];
    prop::collection::vec(op, 1..150)
}

/// Widths in nanoseconds: degenerate, odd, and realistic.
fn width() -> impl Strategy<Value = u64> {
    prop::sample::select(vec![1u64, 7, 1_000, 250_000_000, 1_000_000_000])
}

fn stripes() -> impl Strategy<Value = u32> {
    prop::sample::select(vec![1u32, 2, 4])
}

/// Timestamped events, as the naive reference keeps them.
#[derive(Default)]
struct Model {
    events: Vec<(u64, Event, u64)>,
}

fn tally<'a>(
    events: impl Iterator<Item = &'a (u64, Event, u64)>,
    slow: Option<u64>,
) -> (Counts, Vec<u64>) {
    let mut c = Counts::default();
    let mut latencies = Vec::new();
    for &(_, event, latency) in events {
        match event {
            Event::Success => c.successes += 1,
            Event::Failure => c.failures += 1,
            Event::Timeout => c.timeouts += 1,
            Event::Rejected => c.rejections += 1,
            Event::ShortCircuited => c.short_circuits += 1,
        }
        if event.carries_latency() {
            latencies.push(latency);
            if slow.is_some_and(|s| latency >= s) {
                c.slow_calls += 1;
            }
        }
    }
    latencies.sort_unstable();
    (c, latencies)
}

fn check_latency(got: &LatencySummary, sorted: &[u64]) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.count, sorted.len() as u64);
    if sorted.is_empty() {
        prop_assert_eq!(*got, LatencySummary::default());
        return Ok(());
    }
    let sum: u128 = sorted.iter().map(|&l| u128::from(l)).sum();
    let n = sorted.len() as u64;
    prop_assert_eq!(got.mean, Duration::from_nanos((sum / u128::from(n)) as u64));
    prop_assert_eq!(got.max, Duration::from_nanos(*sorted.last().unwrap()));
    for (percent, reported) in [(50u64, got.p50), (90, got.p90), (99, got.p99)] {
        // Nearest rank: the ceil(p * n / 100)-th smallest, at least the first.
        let rank = (percent * n).div_ceil(100).max(1);
        let truth = sorted[(rank - 1) as usize];
        let reported = reported.as_nanos() as u64;
        let bound = (truth / 16).max(500);
        prop_assert!(
            reported.abs_diff(truth) <= bound,
            "p{} reported {} ns, true {} ns, allowed error {} ns",
            percent,
            reported,
            truth,
            bound
        );
    }
    Ok(())
}

fn check(
    window: &RollingWindow,
    now: u64,
    counts: Counts,
    latencies: &[u64],
) -> Result<(), TestCaseError> {
    prop_assert_eq!(window.counts(now), counts);
    let Snapshot {
        counts: snap_counts,
        latency,
    } = window.snapshot(now);
    prop_assert_eq!(snap_counts, counts);
    check_latency(&latency, latencies)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn time_window_matches_the_naive_model(
        (width, buckets, ops) in (width(), 1u64..=10)
            .prop_flat_map(|(w, b)| (Just(w), Just(b), ops(w, b))),
        stripes in stripes(),
        slow in prop::option::of(1u64..1_000_000_000),
        start in 0u64..1_000_000_000_000,
    ) {
        let mut config = WindowConfig::time(Duration::from_nanos(width * buckets), buckets as u32)
            .stripes(stripes);
        if let Some(s) = slow {
            config = config.slow_call_threshold(Duration::from_nanos(s));
        }
        let window = config.build().unwrap();
        let mut model = Model::default();
        let mut now = start;
        for op in ops {
            match op {
                Op::Advance(d) => now = now.saturating_add(d),
                Op::Back(d) => now = now.saturating_sub(d),
                Op::Record(event, latency) => {
                    window.record(now, event, latency);
                    model.events.push((now, event, latency));
                }
                Op::Reset => {
                    window.reset();
                    model.events.clear();
                }
            }
            // The window ends at the later of now's epoch and the newest event's; it
            // holds the `buckets` epochs ending there.
            let newest = model.events.iter().map(|e| e.0 / width).max().unwrap_or(0);
            let end = (now / width).max(newest);
            let in_window = model
                .events
                .iter()
                .filter(|e| e.0 / width <= end && e.0 / width + buckets > end);
            let (counts, latencies) = tally(in_window, slow);
            check(&window, now, counts, &latencies)?;
        }
    }

    #[test]
    fn count_window_matches_the_last_n_events(
        size in 1u32..=20,
        ops in ops(1_000, 10),
        stripes in stripes(),
        slow in prop::option::of(1u64..1_000_000_000),
    ) {
        let mut config = WindowConfig::count(size).stripes(stripes);
        if let Some(s) = slow {
            config = config.slow_call_threshold(Duration::from_nanos(s));
        }
        let window = config.build().unwrap();
        let mut last: VecDeque<(u64, Event, u64)> = VecDeque::new();
        let mut now = 0u64;
        for op in ops {
            match op {
                Op::Advance(d) => now = now.saturating_add(d),
                Op::Back(d) => now = now.saturating_sub(d),
                Op::Record(event, latency) => {
                    window.record(now, event, latency);
                    last.push_back((now, event, latency));
                    if last.len() > size as usize {
                        last.pop_front();
                    }
                }
                Op::Reset => {
                    window.reset();
                    last.clear();
                }
            }
            let (counts, latencies) = tally(last.iter(), slow);
            check(&window, now, counts, &latencies)?;
        }
    }
}
