//! Results of calls admitted under a state the circuit has since left: the closed
//! path's cheap "same word as at admission" check must fall back to the exact rules
//! (counted when the statistics were not cleared meanwhile, never moving the state).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use palisade::breaker::{BreakerConfig, CircuitBreaker, CircuitState};
use palisade::clock::Clock;
use tokio::sync::oneshot;
use tower::{Service, ServiceExt};

/// Answers each request when the test sends the answer (`true`: success).
#[derive(Clone)]
struct Held;

impl Service<oneshot::Receiver<bool>> for Held {
    type Response = ();
    type Error = &'static str;
    type Future = Pin<Box<dyn Future<Output = Result<(), &'static str>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, answer: oneshot::Receiver<bool>) -> Self::Future {
        Box::pin(async move {
            match answer.await {
                Ok(true) => Ok(()),
                _ => Err("boom"),
            }
        })
    }
}

fn breaker() -> CircuitBreaker<Held> {
    let (clock, _hand) = Clock::manual();
    let config = BreakerConfig::builder()
        .without_error_percentage()
        .consecutive_failures(1)
        .sleep_window(Duration::from_secs(5))
        .clock(clock)
        .build()
        .unwrap();
    CircuitBreaker::new(Held, &config)
}

#[tokio::test]
async fn failure_admitted_closed_is_counted_but_not_in_the_run_after_the_state_moved() {
    let mut svc = breaker();
    let handle = svc.handle();
    let (tx, rx) = oneshot::channel();
    let stale = svc.ready().await.unwrap().call(rx);
    handle.metrics_only();
    tx.send(false).unwrap();
    stale.await.unwrap_err();
    let m = handle.metrics();
    assert_eq!(m.state, CircuitState::MetricsOnly);
    assert_eq!(
        m.window.counts.failures, 1,
        "same statistics period: counted"
    );
    assert_eq!(
        m.consecutive_failures, 0,
        "a result of an older generation does not feed the trip conditions"
    );
}

#[tokio::test]
async fn success_admitted_closed_is_counted_after_the_circuit_was_forced_closed() {
    let mut svc = breaker();
    let handle = svc.handle();
    let (tx, rx) = oneshot::channel();
    let stale = svc.ready().await.unwrap().call(rx);
    handle.force_closed();
    tx.send(true).unwrap();
    stale.await.unwrap();
    let m = handle.metrics();
    assert_eq!(m.state, CircuitState::ForcedClosed);
    assert_eq!(m.window.counts.successes, 1);
}

#[tokio::test]
async fn result_admitted_closed_is_not_counted_after_a_reset() {
    let mut svc = breaker();
    let handle = svc.handle();
    let (tx, rx) = oneshot::channel();
    let stale = svc.ready().await.unwrap().call(rx);
    handle.reset();
    tx.send(true).unwrap();
    stale.await.unwrap();
    assert_eq!(handle.metrics().window.counts.total(), 0);
}

#[tokio::test]
async fn a_current_failure_trips_and_a_success_clears_the_run() {
    let (clock, _hand) = Clock::manual();
    let config = BreakerConfig::builder()
        .without_error_percentage()
        .consecutive_failures(2)
        .clock(clock)
        .build()
        .unwrap();
    let mut svc = CircuitBreaker::new(Held, &config);
    let handle = svc.handle();
    let answer = |ok: bool| {
        let (tx, rx) = oneshot::channel();
        tx.send(ok).unwrap();
        rx
    };
    svc.ready()
        .await
        .unwrap()
        .call(answer(false))
        .await
        .unwrap_err();
    assert_eq!(handle.metrics().consecutive_failures, 1);
    svc.ready().await.unwrap().call(answer(true)).await.unwrap();
    assert_eq!(handle.metrics().consecutive_failures, 0);
    svc.ready()
        .await
        .unwrap()
        .call(answer(false))
        .await
        .unwrap_err();
    svc.ready()
        .await
        .unwrap()
        .call(answer(false))
        .await
        .unwrap_err();
    assert_eq!(handle.state(), CircuitState::Open);
}
