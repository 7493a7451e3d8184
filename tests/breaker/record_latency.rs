//! `BreakerConfigBuilder::record_latency`: by default on exactly when a slow-call setting
//! needs it (and in the Hystrix preset); off, the breaker still counts and trips on
//! outcomes but times nothing, and slow-call settings are refused.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use palisade::breaker::{BreakerConfig, BreakerConfigBuilder, CircuitBreaker, CircuitState};
use palisade::clock::{Clock, ManualClock};
use palisade::window::WindowConfig;
use tower::{Service, ServiceExt};

const MS: Duration = Duration::from_millis(1);

/// Takes `Duration` on the manual clock, then succeeds or fails.
#[derive(Clone)]
struct Timed(ManualClock);

impl Service<(Duration, bool)> for Timed {
    type Response = ();
    type Error = &'static str;
    type Future = Pin<Box<dyn Future<Output = Result<(), &'static str>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, (takes, ok): (Duration, bool)) -> Self::Future {
        let hand = self.0.clone();
        Box::pin(async move {
            hand.advance(takes);
            if ok {
                Ok(())
            } else {
                Err("boom")
            }
        })
    }
}

fn breaker(builder: BreakerConfigBuilder) -> CircuitBreaker<Timed> {
    let (clock, hand) = Clock::manual();
    let config = builder.clock(clock).build().unwrap();
    CircuitBreaker::new(Timed(hand), &config)
}

async fn one_call_taking_7ms(builder: BreakerConfigBuilder) -> palisade::window::LatencySummary {
    let mut svc = breaker(builder);
    svc.ready()
        .await
        .unwrap()
        .call((7 * MS, true))
        .await
        .unwrap();
    let m = svc.handle().metrics();
    assert_eq!(m.window.counts.successes, 1);
    m.window.latency
}

#[tokio::test]
async fn by_default_calls_are_counted_but_not_timed() {
    let latency = one_call_taking_7ms(BreakerConfig::builder()).await;
    assert_eq!(latency.max, Duration::ZERO);
    assert_eq!(latency.mean, Duration::ZERO);
}

#[tokio::test]
async fn a_slow_call_setting_turns_timing_on_by_default() {
    for builder in [
        BreakerConfig::builder().slow_call_threshold(100 * MS),
        BreakerConfig::builder().window(WindowConfig::default().slow_call_threshold(100 * MS)),
    ] {
        let latency = one_call_taking_7ms(builder).await;
        assert_eq!(latency.max, 7 * MS);
        assert_eq!(latency.mean, 7 * MS);
    }
}

#[tokio::test]
async fn record_latency_true_times_calls_without_a_slow_call_rule() {
    let latency = one_call_taking_7ms(BreakerConfig::builder().record_latency(true)).await;
    assert_eq!(latency.max, 7 * MS);
    assert_eq!(latency.mean, 7 * MS);
    assert_eq!(latency.count, 1);
}

#[tokio::test]
async fn the_hystrix_preset_times_every_call_unless_told_not_to() {
    use palisade::preset::Hystrix;
    let (clock, hand) = Clock::manual();
    let timed = Hystrix::builder()
        .breaker(|b| b.clock(clock.clone()))
        .build()
        .unwrap();
    let untimed = Hystrix::builder()
        .breaker(|b| b.clock(clock.clone()).record_latency(false))
        .build()
        .unwrap();
    for (config, want) in [(timed, 7 * MS), (untimed, Duration::ZERO)] {
        let layer = config.layer();
        let handle = layer.breaker();
        let mut svc = tower::Layer::layer(&layer, Timed(hand.clone()));
        svc.ready()
            .await
            .unwrap()
            .call((7 * MS, true))
            .await
            .unwrap();
        let m = handle.metrics();
        assert_eq!(m.window.counts.successes, 1);
        assert_eq!(m.window.latency.max, want);
    }
}

#[tokio::test]
async fn without_latency_outcomes_still_count_and_trip_but_take_no_time() {
    let builder = BreakerConfig::builder()
        .without_error_percentage()
        .consecutive_failures(3)
        .record_latency(false);
    let mut svc = breaker(builder);
    let handle = svc.handle();
    svc.ready()
        .await
        .unwrap()
        .call((7 * MS, true))
        .await
        .unwrap();
    for _ in 0..2 {
        let r = svc.ready().await.unwrap().call((5 * MS, false)).await;
        assert!(r.is_err());
    }
    let m = handle.metrics();
    assert_eq!(
        (m.window.counts.successes, m.window.counts.failures),
        (1, 2)
    );
    assert_eq!(m.window.latency.max, Duration::ZERO);
    assert_eq!(m.window.latency.mean, Duration::ZERO);
    assert_eq!(m.state, CircuitState::Closed);
    let r = svc.ready().await.unwrap().call((5 * MS, false)).await;
    assert!(r.is_err());
    assert_eq!(handle.state(), CircuitState::Open);
}

#[test]
fn record_latency_false_is_rejected_with_any_slow_call_setting() {
    let off = || BreakerConfig::builder().record_latency(false);
    let cases = [
        off().slow_call_threshold(100 * MS),
        off()
            .slow_call_threshold(100 * MS)
            .slow_call_percentage(50.0),
        off().window(WindowConfig::default().slow_call_threshold(100 * MS)),
    ];
    for builder in cases {
        let err = builder.build().unwrap_err();
        assert_eq!(err.field(), "record_latency", "{err}");
    }
    // Without slow-call settings it builds; with latency on, they are accepted.
    off().build().unwrap();
    BreakerConfig::builder()
        .slow_call_threshold(100 * MS)
        .slow_call_percentage(50.0)
        .build()
        .unwrap();
}

/// Succeeds or fails at once.
#[derive(Clone)]
struct Instant;

impl Service<bool> for Instant {
    type Response = ();
    type Error = &'static str;
    type Future = std::future::Ready<Result<(), &'static str>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, ok: bool) -> Self::Future {
        std::future::ready(if ok { Ok(()) } else { Err("boom") })
    }
}

/// Untimed calls on the system clock are filed at one clock read each: counts and the
/// trip at the exact thresholds are the same as when timed.
#[tokio::test]
async fn untimed_calls_on_the_system_clock_count_and_trip_at_the_thresholds() {
    for record_latency in [false, true] {
        let config = BreakerConfig::builder()
            .record_latency(record_latency)
            .build()
            .unwrap();
        let mut svc = CircuitBreaker::new(Instant, &config);
        let handle = svc.handle();
        for _ in 0..10 {
            svc.ready().await.unwrap().call(true).await.unwrap();
        }
        for _ in 0..9 {
            svc.ready().await.unwrap().call(false).await.unwrap_err();
        }
        let m = handle.metrics();
        assert_eq!(
            (m.window.counts.successes, m.window.counts.failures),
            (10, 9)
        );
        assert_eq!(
            handle.state(),
            CircuitState::Closed,
            "19 calls: below volume"
        );
        let before_trip = std::time::Instant::now();
        svc.ready().await.unwrap().call(false).await.unwrap_err();
        assert_eq!(handle.state(), CircuitState::Open, "20 calls, 50 %: trips");
        let err = svc.ready().await.unwrap().call(true).await.unwrap_err();
        let since_trip = before_trip.elapsed();
        let open = err
            .downcast_ref::<palisade::error::BreakerOpen>()
            .expect("BreakerOpen");
        let wait = open.retry_after().expect("open for a sleep window");
        // The default 5 s sleep window, less the time from the trip to the rejection
        // (measured around both, so a slow machine only widens it) and less how much
        // the trip's recent reading may lag the counter: its thread's interval (10 ms
        // at most) plus the wait to be scheduled, given a whole second here. The exact
        // figure, on a manual clock, is pinned in breaker_scenarios.rs.
        let lag = Duration::from_secs(1);
        let sleep_window = Duration::from_secs(5);
        assert!(
            wait <= sleep_window && wait + since_trip + lag >= sleep_window,
            "{wait:?} with {since_trip:?} between the trip and the rejection"
        );
    }
}
