//! The count-based window: the last N events.

use palisade::window::{Counts, Event, WindowConfig};
use std::sync::Arc;
use std::time::Duration;

const MS: u64 = 1_000_000;

#[test]
fn holds_only_the_last_size_events() {
    let w = WindowConfig::count(3).build().unwrap();
    w.record(0, Event::Failure, MS);
    w.record(0, Event::Failure, 2 * MS);
    assert_eq!(w.counts(0).failures, 2);
    w.record(0, Event::Success, 3 * MS);
    w.record(0, Event::Success, 4 * MS);
    let c = w.counts(0);
    assert_eq!((c.failures, c.successes), (1, 2));
    w.record(0, Event::Timeout, 5 * MS);
    let s = w.snapshot(0);
    assert_eq!(
        s.counts,
        Counts {
            successes: 2,
            timeouts: 1,
            ..Counts::default()
        }
    );
    assert_eq!(s.latency.count, 3);
    assert_eq!(s.latency.max, Duration::from_millis(5));
    assert_eq!(s.latency.mean, Duration::from_millis(4));
}

#[test]
fn time_does_not_expire_a_count_window() {
    let w = WindowConfig::count(10).build().unwrap();
    w.record(0, Event::Failure, 0);
    assert_eq!(w.counts(u64::MAX).failures, 1);
}

#[test]
fn every_event_kind_takes_a_place() {
    let w = WindowConfig::count(2).build().unwrap();
    w.record(0, Event::Failure, 0);
    w.record(0, Event::Rejected, 0);
    w.record(0, Event::ShortCircuited, 0);
    let c = w.counts(0);
    assert_eq!((c.failures, c.rejections, c.short_circuits), (0, 1, 1));
}

#[test]
fn evicted_slow_calls_leave_the_slow_count() {
    let w = WindowConfig::count(2)
        .slow_call_threshold(Duration::from_millis(10))
        .build()
        .unwrap();
    w.record(0, Event::Success, 50 * MS);
    w.record(0, Event::Success, MS);
    assert_eq!(w.counts(0).slow_calls, 1);
    assert_eq!(w.counts(0).slow_call_percentage(), 50.0);
    w.record(0, Event::Success, MS);
    assert_eq!(w.counts(0).slow_calls, 0);
}

#[test]
fn max_is_of_the_events_still_held() {
    let w = WindowConfig::count(2).build().unwrap();
    w.record(0, Event::Success, 900 * MS);
    w.record(0, Event::Success, MS);
    w.record(0, Event::Success, 2 * MS);
    assert_eq!(w.snapshot(0).latency.max, Duration::from_millis(2));
}

#[test]
fn reset_empties_the_window_and_it_refills() {
    let w = WindowConfig::count(3).build().unwrap();
    for _ in 0..5 {
        w.record(0, Event::Failure, MS);
    }
    w.reset();
    assert_eq!(w.snapshot(0).counts, Counts::default());
    assert_eq!(w.snapshot(0).latency.count, 0);
    w.record(0, Event::Success, MS);
    w.record(0, Event::Success, MS);
    w.record(0, Event::Success, MS);
    w.record(0, Event::Failure, MS);
    let c = w.counts(0);
    assert_eq!((c.successes, c.failures), (2, 1));
}

#[test]
fn concurrent_records_leave_totals_equal_to_the_held_events() {
    let w = Arc::new(WindowConfig::count(64).stripes(4).build().unwrap());
    let handles: Vec<_> = (0..4u64)
        .map(|t| {
            let w = w.clone();
            std::thread::spawn(move || {
                for i in 0..20_000u64 {
                    let e = Event::ALL[((i + t) % 5) as usize];
                    w.record(0, e, i);
                    if i % 5_000 == 0 {
                        w.reset();
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let s = w.snapshot(0);
    // The running totals must agree with a fresh scan of the slots: the latency count
    // comes from the scan, the counts from the totals.
    assert_eq!(s.counts.completed(), s.latency.count);
    let all = s.counts.total() + s.counts.short_circuits;
    assert!(all <= 64, "{all}");
}
