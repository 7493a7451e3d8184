//! `BreakerConfigBuilder::record_latency`: on by default; off, the breaker still counts
//! and trips on outcomes but times nothing, and slow-call settings are refused.

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

#[tokio::test]
async fn latency_is_recorded_by_default() {
    let mut svc = breaker(BreakerConfig::builder());
    svc.ready()
        .await
        .unwrap()
        .call((7 * MS, true))
        .await
        .unwrap();
    let latency = svc.handle().metrics().window.latency;
    assert_eq!(latency.max, 7 * MS);
    assert_eq!(latency.mean, 7 * MS);
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
