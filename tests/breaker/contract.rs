//! tower's contract, pinned for the circuit breaker: readiness, call, clone sharing,
//! `Send + 'static` futures, and release on drop.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::task::noop_waker;
use futures::StreamExt;
use palisade::breaker::{BreakerConfig, CircuitBreaker, CircuitState};
use palisade::clock::{Clock, ManualClock};
use palisade::error::{BoxError, BreakerOpen};
use tokio::sync::oneshot;
use tower::{Layer, Service, ServiceExt};

#[derive(Debug)]
pub(super) struct Boom;

impl std::fmt::Display for Boom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("boom")
    }
}

impl std::error::Error for Boom {}

/// An inner service whose readiness the test controls, and which answers each call
/// through a oneshot the request carries (or at once with `None`).
#[derive(Clone)]
pub(super) struct Inner {
    pub(super) ready: Arc<AtomicBool>,
    pub(super) dead: Arc<AtomicBool>,
    pub(super) calls: Arc<AtomicUsize>,
}

impl Inner {
    pub(super) fn new() -> Self {
        Inner {
            ready: Arc::new(AtomicBool::new(true)),
            dead: Arc::new(AtomicBool::new(false)),
            calls: Arc::new(AtomicUsize::new(0)),
        }
    }
}

pub(super) type Req = Option<oneshot::Receiver<bool>>;

impl Service<Req> for Inner {
    type Response = &'static str;
    type Error = Boom;
    type Future = futures::future::BoxFuture<'static, Result<&'static str, Boom>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Boom>> {
        if self.dead.load(Ordering::SeqCst) {
            Poll::Ready(Err(Boom))
        } else if self.ready.load(Ordering::SeqCst) {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }

    fn call(&mut self, req: Req) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            let ok = match req {
                None => false,
                Some(rx) => rx.await.unwrap_or(false),
            };
            if ok {
                Ok("ok")
            } else {
                Err(Boom)
            }
        })
    }
}

pub(super) fn config() -> (BreakerConfig, ManualClock) {
    let (clock, hand) = Clock::manual();
    let config = BreakerConfig::builder()
        .clock(clock)
        .without_error_percentage()
        .consecutive_failures(1)
        .sleep_window(Duration::from_secs(1))
        .build()
        .unwrap();
    (config, hand)
}

pub(super) fn poll_ready<S: Service<Req>>(svc: &mut S) -> Poll<Result<(), S::Error>> {
    let waker = noop_waker();
    svc.poll_ready(&mut Context::from_waker(&waker))
}

pub(super) fn assert_send_static<T: Send + 'static>(_: &T) {}

#[test]
fn poll_ready_forwards_the_inner_readiness_and_its_errors() {
    let inner = Inner::new();
    let (config, _) = config();
    let mut svc = CircuitBreaker::new(inner.clone(), &config);
    assert!(matches!(poll_ready(&mut svc), Poll::Ready(Ok(()))));
    inner.ready.store(false, Ordering::SeqCst);
    assert!(poll_ready(&mut svc).is_pending());
    inner.dead.store(true, Ordering::SeqCst);
    match poll_ready(&mut svc) {
        Poll::Ready(Err(e)) => assert!(e.is::<Boom>(), "the inner error is boxed as is"),
        other => panic!("expected the inner error, got {other:?}"),
    }
}

#[tokio::test]
async fn open_circuit_stays_ready_and_rejects_in_call_without_calling_inner() {
    let inner = Inner::new();
    let (config, _) = config();
    let mut svc = CircuitBreaker::new(inner.clone(), &config);
    svc.handle().force_open();
    assert!(matches!(poll_ready(&mut svc), Poll::Ready(Ok(()))));
    let fut = svc.call(None);
    assert_send_static(&fut);
    // Ready at the first poll.
    let waker = noop_waker();
    let mut fut = Box::pin(fut);
    match fut.as_mut().poll(&mut Context::from_waker(&waker)) {
        Poll::Ready(Err(e)) => assert!(e.downcast_ref::<BreakerOpen>().unwrap().is_forced()),
        other => panic!("expected an immediate rejection, got {other:?}"),
    }
    assert_eq!(inner.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn inner_errors_pass_through_boxed() {
    let (config, _) = config();
    let mut svc = CircuitBreaker::new(Inner::new(), &config);
    let err = svc.ready().await.unwrap().call(None).await.unwrap_err();
    assert!(err.is::<Boom>());
}

#[tokio::test]
async fn clones_share_one_circuit() {
    let inner = Inner::new();
    let (config, _) = config();
    let mut a = CircuitBreaker::new(inner.clone(), &config);
    let mut b = a.clone();
    a.ready().await.unwrap().call(None).await.unwrap_err();
    assert_eq!(b.handle().state(), CircuitState::Open);
    let err = b.ready().await.unwrap().call(None).await.unwrap_err();
    assert!(err.is::<BreakerOpen>());
    assert_eq!(inner.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn services_of_one_layer_share_a_circuit_and_each_layer_call_makes_a_new_one() {
    let (config, _) = config();
    let layer = config.layer();
    let mut a = layer.layer(Inner::new());
    let b = layer.layer(Inner::new());
    let other = config.layer().layer(Inner::new());
    a.ready().await.unwrap().call(None).await.unwrap_err();
    assert_eq!(layer.handle().state(), CircuitState::Open);
    assert_eq!(b.handle().state(), CircuitState::Open);
    assert_eq!(other.handle().state(), CircuitState::Closed);
}

#[tokio::test]
async fn response_futures_are_send_and_static() {
    let (config, _) = config();
    let mut svc = CircuitBreaker::new(Inner::new(), &config);
    let fut = svc.ready().await.unwrap().call(None);
    assert_send_static(&fut);
    // And they run on another task.
    tokio::spawn(fut).await.unwrap().unwrap_err();
}

#[tokio::test]
async fn dropping_an_unfinished_call_counts_nothing_and_holds_no_permit() {
    let (config, hand) = config();
    let mut svc = CircuitBreaker::new(Inner::new(), &config);
    let handle = svc.handle();
    let (_tx, rx) = oneshot::channel();
    drop(svc.ready().await.unwrap().call(Some(rx)));
    assert_eq!(handle.metrics().window.counts.total(), 0);

    svc.ready().await.unwrap().call(None).await.unwrap_err();
    hand.advance(Duration::from_secs(1));
    let (_tx, rx) = oneshot::channel();
    let probe = svc.ready().await.unwrap().call(Some(rx));
    assert_eq!(handle.metrics().probes_in_flight, 1);
    drop(probe);
    assert_eq!(handle.metrics().probes_in_flight, 0);
    let (tx, rx) = oneshot::channel();
    let probe = svc.ready().await.unwrap().call(Some(rx));
    tx.send(true).unwrap();
    assert_eq!(probe.await.unwrap(), "ok");
    assert_eq!(handle.state(), CircuitState::Closed);
}

#[tokio::test]
async fn dropping_a_rejected_call_is_harmless() {
    let (config, _) = config();
    let mut svc = CircuitBreaker::new(Inner::new(), &config);
    svc.handle().force_open();
    drop(svc.ready().await.unwrap().call(None));
    svc.handle().reset();
    let (tx, rx) = oneshot::channel();
    tx.send(true).unwrap();
    assert_eq!(
        svc.ready().await.unwrap().call(Some(rx)).await.unwrap(),
        "ok"
    );
}

#[tokio::test]
async fn event_stream_ends_when_the_circuit_is_gone() {
    let (config, _) = config();
    let svc = CircuitBreaker::new(Inner::new(), &config);
    let handle = svc.handle();
    let mut events = handle.events();
    handle.force_open();
    drop(svc);
    drop(handle);
    assert!(events.next().await.is_some());
    assert_eq!(events.next().await, None);
}

#[test]
fn services_handles_and_layers_are_send_sync_and_debug() {
    fn assert_traits<T: Send + Sync + std::fmt::Debug>() {}
    assert_traits::<palisade::breaker::BreakerHandle>();
    assert_traits::<palisade::breaker::CircuitBreakerLayer>();
    assert_traits::<palisade::breaker::EventStream>();
    assert_traits::<BreakerConfig>();
    let (config, _) = config();
    let svc = CircuitBreaker::new(Inner::new(), &config);
    let _: &(dyn Send + Sync) = &svc;
    let _: BoxError = BreakerOpen::forced().into();
}

#[test]
fn response_future_adds_little_to_the_inner_future() {
    type Inner = std::future::Ready<Result<u64, Boom>>;
    type Fut = palisade::breaker::ResponseFuture<Inner, palisade::classify::ErrIsFailure>;
    let added = std::mem::size_of::<Fut>() - std::mem::size_of::<Inner>();
    assert!(
        added <= 56,
        "the breaker adds {added} bytes to the inner future"
    );
}

#[tokio::test]
async fn a_call_finishing_after_its_breaker_is_gone_completes_normally() {
    let (config, _) = config();
    let mut svc = CircuitBreaker::new(Inner::new(), &config);
    let mut events = svc.handle().events();
    let (tx, rx) = oneshot::channel();
    let in_flight = svc.ready().await.unwrap().call(Some(rx));
    // Every owner of the circuit is gone: the stream ends at once.
    drop(svc);
    assert_eq!(events.next().await, None);
    tx.send(true).unwrap();
    assert_eq!(in_flight.await.unwrap(), "ok");
}

#[tokio::test]
async fn calls_completed_on_other_threads_count_in_the_circuit() {
    let (config, _) = config();
    let svc = CircuitBreaker::new(Inner::new(), &config);
    let handle = svc.handle();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let mut svc = svc.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .unwrap();
                let (tx, rx) = oneshot::channel();
                // Called here, completed on another thread.
                let fut = rt.block_on(svc.ready()).unwrap().call(Some(rx));
                tx.send(true).unwrap();
                std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .build()
                        .unwrap();
                    rt.block_on(fut).unwrap()
                })
                .join()
                .unwrap()
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), "ok");
    }
    assert_eq!(handle.metrics().window.counts.successes, 4);
}

/// An event callback that completes a call of another breaker on the same thread while
/// the first breaker's completion is running (re-entrant completion).
#[tokio::test]
async fn a_completion_inside_an_event_callback_of_another_completion_is_counted() {
    let (clock, _) = Clock::manual();
    let other = BreakerConfig::builder()
        .clock(clock.clone())
        .build()
        .unwrap();
    let other_svc = CircuitBreaker::new(Inner::new(), &other);
    let other_handle = other_svc.handle();
    let slot = Arc::new(std::sync::Mutex::new(Some(other_svc)));
    let in_callback = slot.clone();
    let config = BreakerConfig::builder()
        .clock(clock)
        .without_error_percentage()
        .consecutive_failures(1)
        .on_event(move |_| {
            if let Some(mut svc) = in_callback.lock().unwrap().take() {
                let (tx, rx) = oneshot::channel();
                tx.send(true).unwrap();
                let fut = svc.call(Some(rx));
                assert_eq!(futures::executor::block_on(fut).unwrap(), "ok");
            }
        })
        .build()
        .unwrap();
    let mut svc = CircuitBreaker::new(Inner::new(), &config);
    // The failure trips the circuit; the transition's callback runs the other call.
    svc.ready().await.unwrap().call(None).await.unwrap_err();
    assert_eq!(svc.handle().state(), CircuitState::Open);
    assert!(slot.lock().unwrap().is_none(), "the callback ran");
    assert_eq!(other_handle.metrics().window.counts.successes, 1);
}
