//! How a per-endpoint circuit breaker plugs into the balancer: as a layer on every
//! endpoint (through `discover::Layered`) whose `poll_ready` is `Pending` while the
//! circuit is open and which wakes its waker when a probe is due. The toy breaker here
//! opens after `threshold` failures in a row and admits a probe after `open_for`.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use palisade::balance::{Builder, RoundRobin};
use palisade::classify::{Classify, ErrIsFailure, Outcome};
use palisade::discover::{FixedList, Layered};
use parking_lot::Mutex;
use tokio::time::{Instant, Sleep};
use tower::{Layer, Service, ServiceExt};

#[derive(Clone)]
struct ToyBreakerLayer {
    threshold: u32,
    open_for: Duration,
}

impl<S> Layer<S> for ToyBreakerLayer {
    type Service = ToyBreaker<S>;
    fn layer(&self, inner: S) -> ToyBreaker<S> {
        ToyBreaker {
            inner,
            threshold: self.threshold,
            open_for: self.open_for,
            state: Arc::new(BreakerState::default()),
            timer: None,
        }
    }
}

#[derive(Default)]
struct BreakerState {
    failures: AtomicU32,
    open_until: Mutex<Option<Instant>>,
}

struct ToyBreaker<S> {
    inner: S,
    threshold: u32,
    open_for: Duration,
    state: Arc<BreakerState>,
    timer: Option<Pin<Box<Sleep>>>,
}

impl<S> Service<u32> for ToyBreaker<S>
where
    S: Service<u32, Response = &'static str, Error = io::Error>,
    S::Future: Send + 'static,
{
    type Response = &'static str;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<&'static str, io::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        let open_until = *self.state.open_until.lock();
        if let Some(until) = open_until {
            // Open: not ready; the timer wakes the balancer when a probe is due.
            let timer = self
                .timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(until)));
            if timer.deadline() != until {
                timer.as_mut().reset(until);
            }
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            *self.state.open_until.lock() = None; // half-open: let one probe through
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: u32) -> Self::Future {
        let state = self.state.clone();
        let (threshold, open_for) = (self.threshold, self.open_for);
        let fut = self.inner.call(req);
        Box::pin(async move {
            let result = fut.await;
            match ErrIsFailure.classify(&result) {
                Outcome::Failure => {
                    if state.failures.fetch_add(1, Ordering::SeqCst) + 1 >= threshold {
                        *state.open_until.lock() = Some(Instant::now() + open_for);
                    }
                }
                Outcome::Success => state.failures.store(0, Ordering::SeqCst),
                Outcome::Ignored => {}
            }
            result
        })
    }
}

#[tokio::test(start_paused = true)]
async fn open_per_endpoint_breaker_routes_traffic_around_its_endpoint_until_probe_time() {
    let broken = Arc::new(AtomicU32::new(1));
    let make = |name: &'static str, fails: Option<Arc<AtomicU32>>| {
        tower::service_fn(move |_: u32| {
            let fail = fails
                .as_ref()
                .is_some_and(|f| f.load(Ordering::SeqCst) == 1);
            async move {
                if fail {
                    Err(io::Error::other(name))
                } else {
                    Ok(name)
                }
            }
        })
    };
    let list = FixedList::builder()
        .endpoint("a", make("a", Some(broken.clone())), 1)
        .endpoint("b", make("b", None), 1)
        .build()
        .unwrap();
    let layered = Layered::new(
        list,
        ToyBreakerLayer {
            threshold: 2,
            open_for: Duration::from_secs(5),
        },
    );
    let mut balance = Builder::new(RoundRobin::new())
        .build_weighted(layered)
        .unwrap();
    let mut outcomes = Vec::new();
    for _ in 0..10 {
        let r = balance.ready().await.unwrap().call(0).await;
        outcomes.push(r.map_err(|e| e.to_string()));
    }
    let failures = outcomes.iter().filter(|r| r.is_err()).count();
    assert_eq!(
        failures, 2,
        "the breaker opened after two failures: {outcomes:?}"
    );
    assert!(outcomes[4..].iter().all(|r| r == &Ok("b")));
    assert_eq!(balance.len(), 2, "an open breaker is not a removal");

    broken.store(0, Ordering::SeqCst);
    tokio::time::advance(Duration::from_secs(5)).await;
    let mut seen_a = false;
    for _ in 0..4 {
        seen_a |= balance.ready().await.unwrap().call(0).await.unwrap() == "a";
    }
    assert!(
        seen_a,
        "the endpoint is back once its breaker admits a probe"
    );
}
