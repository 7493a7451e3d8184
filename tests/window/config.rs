//! WindowConfig validation: each invalid field is named in the ConfigError.

use palisade::window::{WindowConfig, WindowKind, MAX_BUCKETS, MAX_SIZE};
use std::time::Duration;

fn field_of(config: WindowConfig) -> &'static str {
    config
        .build()
        .expect_err("configuration must be rejected")
        .field()
}

#[test]
fn default_is_hystrix_ten_seconds_in_ten_buckets() {
    let c = WindowConfig::default();
    assert_eq!(
        c.kind(),
        WindowKind::Time {
            length: Duration::from_secs(10),
            buckets: 10
        }
    );
    assert_eq!(c.slow_threshold(), None);
    let w = c.build().unwrap();
    assert_eq!(w.config(), &c);
}

#[test]
fn zero_length_is_rejected_naming_time_length() {
    assert_eq!(
        field_of(WindowConfig::time(Duration::ZERO, 10)),
        "time.length"
    );
}

#[test]
fn length_beyond_u64_nanos_is_rejected_naming_time_length() {
    assert_eq!(
        field_of(WindowConfig::time(Duration::MAX, 1)),
        "time.length"
    );
}

#[test]
fn zero_buckets_is_rejected_naming_time_buckets() {
    assert_eq!(
        field_of(WindowConfig::time(Duration::from_secs(1), 0)),
        "time.buckets"
    );
}

#[test]
fn too_many_buckets_is_rejected_naming_time_buckets() {
    assert_eq!(
        field_of(WindowConfig::time(Duration::from_secs(10), MAX_BUCKETS + 1)),
        "time.buckets"
    );
    assert!(WindowConfig::time(Duration::from_secs(10), MAX_BUCKETS)
        .build()
        .is_ok());
}

#[test]
fn length_not_divisible_into_buckets_is_rejected_naming_time_buckets() {
    let err = WindowConfig::time(Duration::from_nanos(10), 3)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "time.buckets");
    assert!(err.reason().contains("divide"), "{err}");
    assert!(WindowConfig::time(Duration::from_nanos(9), 3)
        .build()
        .is_ok());
}

#[test]
fn zero_size_is_rejected_naming_count_size() {
    assert_eq!(field_of(WindowConfig::count(0)), "count.size");
}

#[test]
fn oversized_count_is_rejected_naming_count_size() {
    assert_eq!(field_of(WindowConfig::count(MAX_SIZE + 1)), "count.size");
}

#[test]
fn zero_slow_threshold_is_rejected_naming_slow_call_threshold() {
    assert_eq!(
        field_of(WindowConfig::default().slow_call_threshold(Duration::ZERO)),
        "slow_call_threshold"
    );
    assert_eq!(
        field_of(WindowConfig::count(5).slow_call_threshold(Duration::ZERO)),
        "slow_call_threshold"
    );
}

#[test]
fn stripes_must_be_a_power_of_two_up_to_64() {
    for bad in [0, 3, 12, 128] {
        assert_eq!(field_of(WindowConfig::default().stripes(bad)), "stripes");
    }
    for good in [1, 2, 64] {
        let c = WindowConfig::default().stripes(good);
        assert_eq!(c.stripe_count(), good);
        assert!(c.build().is_ok());
    }
}

#[test]
fn default_stripe_count_is_a_small_power_of_two() {
    let s = WindowConfig::default().stripe_count();
    assert!(s.is_power_of_two() && s <= 8, "{s}");
}

#[test]
fn heap_bytes_follows_the_documented_formula() {
    let w = WindowConfig::default().stripes(1).build().unwrap();
    assert_eq!(w.heap_bytes(), 10 * (1024 + 8 + 136));
    let w = WindowConfig::default().stripes(4).build().unwrap();
    assert_eq!(w.heap_bytes(), 10 * (4 * (1024 + 8) + 136));
    let w = WindowConfig::count(100).stripes(2).build().unwrap();
    assert_eq!(w.heap_bytes(), 100 * 8 + 2 * 128);
}
