//! The Hystrix preset, black-box on tokio's paused clock.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use palisade::breaker::CircuitState;
use palisade::clock::Clock;
use palisade::error::{BreakerOpen, BulkheadFull, Elapsed};
use palisade::preset::Hystrix;
use palisade::BoxError;
use tower::{service_fn, Service, ServiceExt};

/// A service whose behaviour is switched by flags: fail, hang, or answer.
#[derive(Clone, Default)]
struct Switch {
    fail: Arc<AtomicBool>,
    hang: Arc<AtomicBool>,
    calls: Arc<AtomicUsize>,
}

impl Switch {
    fn service(
        &self,
    ) -> impl Service<
        u32,
        Response = u32,
        Error = BoxError,
        Future = impl std::future::Future<Output = Result<u32, BoxError>> + Send + 'static,
    > + Clone
           + Send
           + 'static {
        let s = self.clone();
        service_fn(move |x: u32| {
            let s = s.clone();
            async move {
                s.calls.fetch_add(1, Ordering::SeqCst);
                if s.hang.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
                if s.fail.load(Ordering::SeqCst) {
                    return Err::<u32, BoxError>("boom".into());
                }
                Ok(x)
            }
        })
    }
}

#[tokio::test(start_paused = true)]
async fn trips_at_volume_and_percentage_and_not_one_call_earlier() {
    let layer = Hystrix::builder()
        .breaker(|b| b.clock(Clock::tokio()))
        .build()
        .unwrap()
        .layer();
    let breaker = layer.breaker();
    let switch = Switch::default();
    let mut svc = tower::ServiceBuilder::new()
        .layer(layer)
        .service(switch.service());

    for i in 0..10 {
        svc.ready().await.unwrap().call(i).await.unwrap();
    }
    switch.fail.store(true, Ordering::SeqCst);
    // 9 failures out of 19 calls: under the volume of 20 (and under 50 %).
    for i in 0..9 {
        assert!(svc.ready().await.unwrap().call(i).await.is_err());
    }
    assert_eq!(breaker.state(), CircuitState::Closed);
    // The 20th call makes 10 errors of 20: exactly 50 %.
    assert!(svc.ready().await.unwrap().call(0).await.is_err());
    assert_eq!(breaker.state(), CircuitState::Open);

    let before = switch.calls.load(Ordering::SeqCst);
    let err = svc.ready().await.unwrap().call(0).await.unwrap_err();
    let open = err.downcast_ref::<BreakerOpen>().expect("BreakerOpen");
    assert_eq!(open.retry_after(), Some(Duration::from_millis(5000)));
    assert_eq!(switch.calls.load(Ordering::SeqCst), before, "inner called");
}

#[tokio::test(start_paused = true)]
async fn timeouts_count_as_errors_and_trip_the_circuit() {
    let layer = Hystrix::builder()
        .timeout(Duration::from_millis(100))
        .request_volume_threshold(5)
        .breaker(|b| b.clock(Clock::tokio()))
        .build()
        .unwrap()
        .layer();
    let breaker = layer.breaker();
    let switch = Switch::default();
    switch.hang.store(true, Ordering::SeqCst);
    let mut svc = tower::ServiceBuilder::new()
        .layer(layer)
        .service(switch.service());
    for i in 0..5 {
        let err = svc.ready().await.unwrap().call(i).await.unwrap_err();
        assert!(err.is::<Elapsed>(), "got {err}");
    }
    let counts = breaker.metrics().window.counts;
    assert_eq!(counts.timeouts, 5);
    assert_eq!(counts.errors(), 5);
    assert_eq!(breaker.state(), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn bulkhead_rejections_count_as_errors() {
    let layer = Hystrix::builder()
        .max_concurrent_requests(1)
        .request_volume_threshold(4)
        .breaker(|b| b.clock(Clock::tokio()))
        .build()
        .unwrap()
        .layer();
    let breaker = layer.breaker();
    let bulkhead = layer.bulkhead();
    let switch = Switch::default();
    switch.hang.store(true, Ordering::SeqCst);
    let mut svc = tower::ServiceBuilder::new()
        .layer(layer)
        .service(switch.service());

    // One call holds the only permit (it hangs until its timeout).
    let held = tokio::spawn(svc.ready().await.unwrap().call(0));
    tokio::task::yield_now().await;
    assert_eq!(bulkhead.in_use(), 1);
    for i in 0..3 {
        let err = svc.ready().await.unwrap().call(i).await.unwrap_err();
        assert!(err.is::<BulkheadFull>(), "got {err}");
    }
    assert_eq!(breaker.metrics().window.counts.rejections, 3);
    assert_eq!(breaker.state(), CircuitState::Closed, "3 calls < volume 4");
    // The held call times out: the fourth error, with 4 calls in the window.
    let err = held.await.unwrap().unwrap_err();
    assert!(err.is::<Elapsed>());
    assert_eq!(bulkhead.in_use(), 0);
    assert_eq!(breaker.state(), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn after_the_sleep_window_one_probe_closes_the_circuit() {
    let layer = Hystrix::builder()
        .request_volume_threshold(2)
        .sleep_window(Duration::from_secs(2))
        .breaker(|b| b.clock(Clock::tokio()))
        .build()
        .unwrap()
        .layer();
    let breaker = layer.breaker();
    let switch = Switch::default();
    switch.fail.store(true, Ordering::SeqCst);
    let mut svc = tower::ServiceBuilder::new()
        .layer(layer)
        .service(switch.service());
    for i in 0..2 {
        assert!(svc.ready().await.unwrap().call(i).await.is_err());
    }
    assert_eq!(breaker.state(), CircuitState::Open);

    tokio::time::advance(Duration::from_millis(1999)).await;
    let err = svc.ready().await.unwrap().call(0).await.unwrap_err();
    assert!(err.is::<BreakerOpen>());

    tokio::time::advance(Duration::from_millis(1)).await;
    switch.fail.store(false, Ordering::SeqCst);
    assert_eq!(svc.ready().await.unwrap().call(7).await.unwrap(), 7);
    assert_eq!(breaker.state(), CircuitState::Closed);
}

#[test]
fn preset_futures_are_send_and_static() {
    fn assert_send_static<T: Send + 'static>(_: &T) {}
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _entered = rt.enter();
    let mut svc = tower::ServiceBuilder::new()
        .layer(Hystrix::builder().build().unwrap().layer())
        .service(Switch::default().service());
    let fut = svc.call(1);
    assert_send_static(&fut);
}
