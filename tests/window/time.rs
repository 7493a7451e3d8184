//! The time-based window: rollover, gaps, late events, reset, slow calls, latency.

use palisade::window::{Counts, Event, RollingWindow, WindowConfig};
use std::sync::Arc;
use std::time::Duration;

const MS: u64 = 1_000_000;
const SEC: u64 = 1_000 * MS;

/// 10 s in 10 buckets of 1 s.
fn hystrix() -> RollingWindow {
    WindowConfig::default().build().unwrap()
}

#[test]
fn empty_window_counts_nothing() {
    let w = hystrix();
    assert_eq!(w.counts(0), Counts::default());
    let s = w.snapshot(5 * SEC);
    assert_eq!(s.counts, Counts::default());
    assert_eq!(s.latency.count, 0);
    assert_eq!(s.latency.p99, Duration::ZERO);
}

#[test]
fn every_event_kind_is_counted_in_its_own_field() {
    let w = hystrix();
    w.record(0, Event::Success, 1);
    w.record(0, Event::Failure, 1);
    w.record(0, Event::Failure, 1);
    w.record(0, Event::Timeout, 1);
    w.record(0, Event::Rejected, 1);
    w.record(0, Event::ShortCircuited, 1);
    let c = w.counts(0);
    assert_eq!(
        c,
        Counts {
            successes: 1,
            failures: 2,
            timeouts: 1,
            rejections: 1,
            short_circuits: 1,
            slow_calls: 0,
        }
    );
    assert_eq!(c.total(), 5);
    assert_eq!(c.errors(), 4);
}

#[test]
fn oldest_bucket_rolls_out_after_one_bucket_width() {
    let w = hystrix();
    w.record(0, Event::Failure, 0); // epoch 0
    w.record(SEC + 1, Event::Success, 0); // epoch 1
    assert_eq!(w.counts(9 * SEC + 999 * MS).failures, 1);
    // At 10 s the window is epochs 1..=10: epoch 0 is gone, epoch 1 stays.
    let c = w.counts(10 * SEC);
    assert_eq!((c.failures, c.successes), (0, 1));
    let c = w.counts(11 * SEC);
    assert_eq!((c.failures, c.successes), (0, 0));
}

#[test]
fn a_write_into_a_reused_bucket_clears_its_old_epoch() {
    let w = hystrix();
    w.record(3 * SEC, Event::Failure, 0);
    w.record(13 * SEC, Event::Success, 0); // same bucket, ten epochs later
    let c = w.counts(13 * SEC);
    assert_eq!((c.failures, c.successes), (0, 1));
}

#[test]
fn gap_longer_than_the_window_clears_everything() {
    let w = hystrix();
    for t in 0..10 {
        w.record(t * SEC, Event::Failure, 5 * MS);
    }
    assert_eq!(w.counts(9 * SEC).failures, 10);
    let later = 3_600 * SEC + 500 * MS;
    assert_eq!(w.counts(later), Counts::default());
    w.record(later, Event::Success, MS);
    let s = w.snapshot(later);
    assert_eq!(s.counts.failures, 0);
    assert_eq!(s.counts.successes, 1);
    assert_eq!(s.latency.max, Duration::from_millis(1));
}

#[test]
fn late_event_inside_the_window_counts_in_its_own_bucket() {
    let w = hystrix();
    w.record(5 * SEC, Event::Success, 0);
    // A racing thread that read the clock at 4.5 s records after the 5 s event.
    w.record(4 * SEC + 500 * MS, Event::Failure, 0);
    assert_eq!(w.counts(5 * SEC).failures, 1);
    // It leaves with its own bucket (epoch 4), one second before the 5 s event.
    let c = w.counts(14 * SEC);
    assert_eq!((c.failures, c.successes), (0, 1));
}

#[test]
fn event_older_than_the_window_is_dropped_without_disturbing_it() {
    let w = hystrix();
    w.record(12 * SEC, Event::Success, 0); // bucket 2 holds epoch 12
    w.record(2 * SEC, Event::Failure, 0); // epoch 2: outside every readable window
    w.record(0, Event::Failure, 0); // epoch 0: bucket 0 is empty; the event is expired
    let c = w.counts(12 * SEC);
    assert_eq!((c.successes, c.failures), (1, 0));
}

#[test]
fn reader_with_a_lagging_clock_sees_newer_writes() {
    let w = hystrix();
    w.record(20 * SEC, Event::Failure, 0);
    assert_eq!(w.counts(19 * SEC).failures, 1);
    assert_eq!(w.counts(0).failures, 1);
}

#[test]
fn clock_readings_at_the_extremes_do_not_panic() {
    let w = WindowConfig::time(Duration::from_nanos(10), 10)
        .build()
        .unwrap();
    w.record(u64::MAX, Event::Success, u64::MAX);
    w.record(u64::MAX - 1, Event::Failure, 0);
    let s = w.snapshot(u64::MAX);
    assert_eq!(s.counts.successes, 1);
    assert_eq!(s.latency.max, Duration::from_nanos(u64::MAX));
    w.record(0, Event::Failure, 0);
    let _ = w.counts(0);
}

#[test]
fn reset_forgets_everything_and_recording_resumes() {
    let w = hystrix();
    w.record(SEC, Event::Failure, 3 * MS);
    w.record(2 * SEC, Event::Success, 3 * MS);
    w.reset();
    assert_eq!(w.snapshot(2 * SEC).counts, Counts::default());
    assert_eq!(w.snapshot(2 * SEC).latency.count, 0);
    w.record(2 * SEC, Event::Timeout, 7 * MS);
    let s = w.snapshot(2 * SEC);
    assert_eq!(s.counts.timeouts, 1);
    assert_eq!(s.counts.total(), 1);
    assert_eq!(s.latency.max, Duration::from_millis(7));
}

#[test]
fn slow_calls_are_successes_failures_and_timeouts_at_or_over_the_threshold() {
    let w = WindowConfig::default()
        .slow_call_threshold(Duration::from_millis(100))
        .build()
        .unwrap();
    w.record(0, Event::Success, 99 * MS);
    w.record(0, Event::Success, 100 * MS);
    w.record(0, Event::Failure, 200 * MS);
    w.record(0, Event::Timeout, 1_000 * MS);
    w.record(0, Event::Rejected, 1_000 * MS);
    w.record(0, Event::ShortCircuited, 1_000 * MS);
    let c = w.counts(0);
    assert_eq!(c.slow_calls, 3);
    assert_eq!(c.slow_call_percentage(), 75.0);
}

#[test]
fn without_a_threshold_nothing_is_slow() {
    let w = hystrix();
    w.record(0, Event::Success, u64::MAX);
    assert_eq!(w.counts(0).slow_calls, 0);
}

#[test]
fn rejections_and_short_circuits_carry_no_latency() {
    let w = hystrix();
    w.record(0, Event::Success, 10 * MS);
    w.record(0, Event::Rejected, 900 * MS);
    w.record(0, Event::ShortCircuited, 900 * MS);
    let l = w.snapshot(0).latency;
    assert_eq!(l.count, 1);
    assert_eq!(l.max, Duration::from_millis(10));
    assert_eq!(l.mean, Duration::from_millis(10));
}

#[test]
fn latency_summary_is_exact_for_count_mean_max_and_close_for_percentiles() {
    let w = hystrix();
    // 1..=100 ms spread over the window's buckets.
    for i in 1..=100u64 {
        w.record((i % 10) * SEC, Event::Success, i * MS);
    }
    let l = w.snapshot(9 * SEC).latency;
    assert_eq!(l.count, 100);
    assert_eq!(l.max, Duration::from_millis(100));
    assert_eq!(l.mean, Duration::from_nanos(50_500_000));
    for (got, want) in [(l.p50, 50), (l.p90, 90), (l.p99, 99)] {
        let want = Duration::from_millis(want);
        let err = got.abs_diff(want);
        assert!(err <= want / 16, "{got:?} vs {want:?}");
    }
}

#[test]
fn percentiles_of_one_value_are_that_value_up_to_the_bin_error() {
    let w = hystrix();
    w.record(0, Event::Success, 1_234_567);
    let l = w.snapshot(0).latency;
    assert_eq!(l.max, Duration::from_nanos(1_234_567));
    // The midpoint of the bin is capped at the exact maximum.
    assert!(l.p50 <= l.max && l.max - l.p50 <= l.max / 16);
    assert_eq!(l.p50, l.p99);
}

#[test]
fn concurrent_records_within_one_bucket_are_all_counted() {
    let w = Arc::new(WindowConfig::default().stripes(4).build().unwrap());
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let w = w.clone();
            std::thread::spawn(move || {
                for i in 0..10_000u64 {
                    let event = if (i + t) % 4 == 0 {
                        Event::Failure
                    } else {
                        Event::Success
                    };
                    w.record(SEC + i, event, i * 1_000);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let s = w.snapshot(SEC);
    assert_eq!(s.counts.total(), 40_000);
    assert_eq!(s.counts.failures, 10_000);
    assert_eq!(s.latency.count, 40_000);
    assert_eq!(s.latency.max, Duration::from_nanos(9_999_000));
}

#[test]
fn threads_sharing_stripes_across_rollovers_count_all_but_a_few_events() {
    // 4 threads, each recording events 0.1 ms apart through 100 epochs of a 10-bucket
    // window of 1 ms buckets; count what the final window holds against what was
    // recorded into its epochs.
    let threads = 4u64;
    let w = Arc::new(
        WindowConfig::time(Duration::from_millis(10), 10)
            .stripes(2)
            .build()
            .unwrap(),
    );
    let per_thread = 1_000u64;
    let step = MS / 10;
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let w = w.clone();
            std::thread::spawn(move || {
                for i in 0..per_thread {
                    w.record(i * step, Event::Success, 0);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let end = (per_thread - 1) * step;
    // The window at `end` holds epochs 90..=99: events 900..1000 of each thread.
    let expected = threads * 100;
    let got = w.counts(end).successes;
    // Two threads share each stripe. A thread that finds its cell taken moves to the
    // other stripe, and only when both are taken to the bucket's overflow cell, whose
    // rollover may wipe or misplace the events racing with it (the threads record 10
    // events per epoch each): allow two epochs' worth per thread.
    let bound = threads * 20;
    assert!(
        got.abs_diff(expected) <= bound,
        "got {got}, expected {expected} +- {bound}"
    );
}

#[test]
fn one_bucket_window_covers_exactly_its_length() {
    let w = WindowConfig::time(Duration::from_secs(1), 1)
        .build()
        .unwrap();
    w.record(999 * MS, Event::Success, 0);
    assert_eq!(w.counts(999 * MS).successes, 1);
    assert_eq!(w.counts(SEC).successes, 0);
}

#[test]
fn absurd_latencies_do_not_wrap_the_mean() {
    let w = hystrix();
    for _ in 0..100 {
        w.record(0, Event::Success, u64::MAX);
    }
    let l = w.snapshot(0).latency;
    assert_eq!(l.max, Duration::from_nanos(u64::MAX));
    assert_eq!(l.mean, Duration::from_nanos(1 << 44));
    assert!(l.p50 > Duration::from_secs(55 * 60));
}

#[test]
fn readers_racing_writers_rollovers_and_resets_never_see_more_than_was_recorded() {
    let w = Arc::new(
        WindowConfig::time(Duration::from_millis(1), 4)
            .stripes(2)
            .build()
            .unwrap(),
    );
    let writers: Vec<_> = (0..3u64)
        .map(|t| {
            let w = w.clone();
            std::thread::spawn(move || {
                for i in 0..30_000u64 {
                    let event = Event::ALL[((i + t) % 5) as usize];
                    w.record(i * 1_000, event, i % 7_000 * 1_000);
                    if t == 0 && i % 10_000 == 0 {
                        w.reset();
                    }
                }
            })
        })
        .collect();
    let reader = {
        let w = w.clone();
        std::thread::spawn(move || {
            for i in 0..3_000u64 {
                let s = w.snapshot(i * 10_000);
                // A 1 ms window of 4 buckets at 1 µs per event per writer holds at most
                // 3 writers x 1000 events, give or take a racing rollover.
                assert!(
                    s.counts.total() + s.counts.short_circuits <= 3 * 1_100,
                    "{s:?}"
                );
                assert!(s.latency.p50 <= s.latency.p90 && s.latency.p90 <= s.latency.p99);
                assert!(s.latency.p99 <= s.latency.max || s.latency.count == 0);
            }
        })
    };
    for h in writers {
        h.join().unwrap();
    }
    reader.join().unwrap();
}

#[test]
fn threads_with_stripes_of_their_own_roll_over_exactly() {
    // With more stripes than threads in this test binary, every thread has its own
    // cells and never needs the overflow: counts are exact under concurrency.
    let threads = 4u64;
    let w = Arc::new(
        WindowConfig::time(Duration::from_millis(10), 10)
            .stripes(64)
            .build()
            .unwrap(),
    );
    let per_thread = 2_000u64;
    let step = MS / 20;
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let w = w.clone();
            std::thread::spawn(move || {
                for i in 0..per_thread {
                    w.record(i * step, Event::Failure, i);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let end = (per_thread - 1) * step;
    let s = w.snapshot(end);
    // Epochs 90..=99, 20 events each, from every thread.
    assert_eq!(s.counts.failures, threads * 200);
    assert_eq!(s.latency.count, threads * 200);
    assert_eq!(s.latency.max, Duration::from_nanos(per_thread - 1));
}

#[test]
fn more_threads_than_stripes_within_one_epoch_count_exactly() {
    // Eight threads on one stripe: writers that find the cell taken add into the
    // bucket's overflow counters, and nothing is lost.
    let w = Arc::new(WindowConfig::default().stripes(1).build().unwrap());
    let handles: Vec<_> = (0..8u64)
        .map(|t| {
            let w = w.clone();
            std::thread::spawn(move || {
                for i in 0..20_000u64 {
                    w.record(5 * SEC + i, Event::ALL[((i + t) % 5) as usize], i);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let s = w.snapshot(5 * SEC);
    assert_eq!(s.counts.total() + s.counts.short_circuits, 160_000);
    assert_eq!(s.counts.successes, 32_000);
    assert_eq!(s.counts.short_circuits, 32_000);
    assert_eq!(s.latency.count, 96_000);
    assert_eq!(s.latency.max, Duration::from_nanos(19_999));
}
