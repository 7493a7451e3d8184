//! Builder validation: every invalid setting is refused at build time, naming its
//! builder method.

use std::time::Duration;

use palisade::breaker::{BreakerConfig, BreakerConfigBuilder};
use palisade::window::WindowConfig;

fn field(builder: BreakerConfigBuilder) -> &'static str {
    builder.build().unwrap_err().field()
}

const ZERO: Duration = Duration::ZERO;
const SEC: Duration = Duration::from_secs(1);

#[test]
fn defaults_are_valid() {
    BreakerConfig::builder().build().unwrap();
    let _ = BreakerConfig::default();
}

#[test]
fn zero_durations_are_refused() {
    let b = BreakerConfig::builder;
    assert_eq!(field(b().sleep_window(ZERO)), "sleep_window");
    assert_eq!(field(b().probe_max_wait(ZERO)), "probe_max_wait");
    assert_eq!(field(b().slow_call_threshold(ZERO)), "slow_call_threshold");
    assert_eq!(
        field(b().exponential_backoff(ZERO, SEC)),
        "exponential_backoff"
    );
    assert_eq!(
        field(b().exponential_backoff(SEC, ZERO)),
        "exponential_backoff"
    );
}

#[test]
fn backoff_max_below_base_is_refused() {
    let err = BreakerConfig::builder()
        .exponential_backoff(2 * SEC, SEC)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "exponential_backoff");
    assert!(err.reason().contains("max"), "{err}");
    BreakerConfig::builder()
        .exponential_backoff(SEC, SEC)
        .build()
        .unwrap();
}

#[test]
fn backoff_multiplier_and_jitter_must_be_in_range() {
    let b = BreakerConfig::builder;
    assert_eq!(field(b().backoff_multiplier(0.5)), "backoff_multiplier");
    assert_eq!(
        field(b().backoff_multiplier(f64::NAN)),
        "backoff_multiplier"
    );
    assert_eq!(
        field(b().backoff_multiplier(f64::INFINITY)),
        "backoff_multiplier"
    );
    assert_eq!(field(b().backoff_jitter(-0.1)), "backoff_jitter");
    assert_eq!(field(b().backoff_jitter(1.5)), "backoff_jitter");
    assert_eq!(field(b().backoff_jitter(f64::NAN)), "backoff_jitter");
    b().backoff_jitter(1.0)
        .backoff_multiplier(1.0)
        .build()
        .unwrap();
}

#[test]
fn percentages_outside_0_to_100_are_refused() {
    let b = BreakerConfig::builder;
    assert_eq!(field(b().error_percentage(100.5)), "error_percentage");
    assert_eq!(field(b().error_percentage(-1.0)), "error_percentage");
    assert_eq!(field(b().error_percentage(f64::NAN)), "error_percentage");
    let slow = || b().slow_call_threshold(SEC);
    assert_eq!(
        field(slow().slow_call_percentage(101.0)),
        "slow_call_percentage"
    );
    b().error_percentage(0.0).build().unwrap();
    slow().slow_call_percentage(100.0).build().unwrap();
}

#[test]
fn slow_call_percentage_needs_a_threshold() {
    let b = BreakerConfig::builder;
    assert_eq!(
        field(b().slow_call_percentage(50.0)),
        "slow_call_percentage"
    );
    // A threshold set on the window is enough.
    b().window(WindowConfig::default().slow_call_threshold(SEC))
        .slow_call_percentage(50.0)
        .build()
        .unwrap();
}

#[test]
fn zero_counts_are_refused() {
    let b = BreakerConfig::builder;
    assert_eq!(field(b().half_open_probes(0)), "half_open_probes");
    assert_eq!(field(b().probes_to_close(0)), "probes_to_close");
    assert_eq!(field(b().consecutive_failures(0)), "consecutive_failures");
    assert_eq!(field(b().event_buffer(0)), "event_buffer");
    // More successes to close than probes at once is allowed: permits are reused.
    b().half_open_probes(1).probes_to_close(5).build().unwrap();
}

#[test]
fn invalid_window_is_refused_naming_the_window_field() {
    let err = BreakerConfig::builder()
        .window(WindowConfig::time(Duration::from_secs(10), 0))
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "window");
    assert!(err.reason().contains("time.buckets"), "{err}");
}
