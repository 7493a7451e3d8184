//! tower's contract, pinned for the bulkhead: what `poll_ready` and `call` do, how clones
//! and layers share the limit, what the futures are, and that dropping releases.

use std::fmt::Debug;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use palisade::bulkhead::{
    Bulkhead, BulkheadConfig, BulkheadHandle, BulkheadLayer, FailFast, Queued,
    QueuedResponseFuture, ResponseFuture,
};
use palisade::error::BulkheadFull;
use palisade::BoxError;
use tokio_test::task::spawn;
use tower::{Layer, Service, ServiceBuilder, ServiceExt};

const PENDING: u8 = 0;
const READY: u8 = 1;
const BROKEN: u8 = 2;

#[derive(Debug, PartialEq)]
struct InnerError;

impl std::fmt::Display for InnerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("inner error")
    }
}

impl std::error::Error for InnerError {}

/// An inner service whose readiness the test sets, which checks tower's rule that `call`
/// follows a successful `poll_ready` on the same instance, and whose calls stay pending
/// until released.
#[derive(Debug)]
struct Strict {
    readiness: Arc<AtomicU8>,
    calls: Arc<AtomicUsize>,
    /// Set by `poll_ready`, consumed by `call`; a clone starts unready.
    ready: bool,
    /// Calls fail with `InnerError` instead of staying pending.
    fail: bool,
}

impl Clone for Strict {
    fn clone(&self) -> Self {
        Strict {
            readiness: self.readiness.clone(),
            calls: self.calls.clone(),
            ready: false,
            fail: self.fail,
        }
    }
}

impl Strict {
    fn new() -> Self {
        Strict {
            readiness: Arc::new(AtomicU8::new(READY)),
            calls: Arc::new(AtomicUsize::new(0)),
            ready: false,
            fail: false,
        }
    }
}

impl Service<u32> for Strict {
    type Response = u32;
    type Error = InnerError;
    type Future = BoxFuture<'static, Result<u32, InnerError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), InnerError>> {
        match self.readiness.load(Ordering::SeqCst) {
            PENDING => Poll::Pending,
            READY => {
                self.ready = true;
                Poll::Ready(Ok(()))
            }
            _ => Poll::Ready(Err(InnerError)),
        }
    }

    fn call(&mut self, req: u32) -> Self::Future {
        assert!(
            std::mem::take(&mut self.ready),
            "call without poll_ready on this instance"
        );
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.fail {
            futures::future::ready(Err(InnerError)).boxed()
        } else {
            futures::future::pending::<()>()
                .map(move |_| Ok(req))
                .boxed()
        }
    }
}

fn fail_fast(n: usize) -> (BulkheadLayer<FailFast>, BulkheadHandle) {
    let layer = BulkheadConfig::builder()
        .max_concurrent_calls(n)
        .build()
        .unwrap()
        .layer();
    let handle = layer.handle();
    (layer, handle)
}

fn queued(n: usize) -> (BulkheadLayer<Queued>, BulkheadHandle) {
    let layer = BulkheadConfig::builder()
        .max_concurrent_calls(n)
        .max_wait(Duration::from_secs(1))
        .build()
        .unwrap()
        .layer();
    let handle = layer.handle();
    (layer, handle)
}

fn poll_ready<S: Service<u32>>(svc: &mut S) -> Poll<Result<(), S::Error>> {
    let waker = futures::task::noop_waker();
    svc.poll_ready(&mut Context::from_waker(&waker))
}

#[tokio::test(start_paused = true)]
async fn poll_ready_forwards_inner_pending_and_inner_errors() {
    let (layer, _) = fail_fast(1);
    let inner = Strict::new();
    let readiness = inner.readiness.clone();
    let mut svc = layer.layer(inner);

    readiness.store(PENDING, Ordering::SeqCst);
    assert!(poll_ready(&mut svc).is_pending());
    readiness.store(BROKEN, Ordering::SeqCst);
    match poll_ready(&mut svc) {
        Poll::Ready(Err(e)) => assert!(e.is::<InnerError>()),
        other => panic!("unexpected {other:?}"),
    }
    readiness.store(READY, Ordering::SeqCst);
    assert!(matches!(poll_ready(&mut svc), Poll::Ready(Ok(()))));
}

#[tokio::test(start_paused = true)]
async fn poll_ready_stays_ready_when_full_and_the_rejection_comes_from_call() {
    for queued_mode in [false, true] {
        let inner = Strict::new();
        let calls = inner.calls.clone();
        let rejection = if queued_mode {
            let (layer, _) = queued(1);
            let mut svc = layer.layer(inner);
            let mut held = spawn(svc.ready().await.unwrap().call(1));
            assert!(held.poll().is_pending());
            assert!(matches!(poll_ready(&mut svc), Poll::Ready(Ok(()))));
            let mut second = spawn(svc.call(2));
            assert!(second.poll().is_pending());
            tokio::time::advance(Duration::from_secs(1)).await;
            second.poll()
        } else {
            let (layer, _) = fail_fast(1);
            let mut svc = layer.layer(inner);
            let mut held = spawn(svc.ready().await.unwrap().call(1));
            assert!(held.poll().is_pending());
            assert!(matches!(poll_ready(&mut svc), Poll::Ready(Ok(()))));
            spawn(svc.call(2)).poll()
        };
        match rejection {
            Poll::Ready(Err(e)) => assert!(e.is::<BulkheadFull>()),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}

#[tokio::test(start_paused = true)]
async fn inner_errors_pass_through_boxed() {
    let (layer, handle) = fail_fast(1);
    let mut inner = Strict::new();
    inner.fail = true;
    let mut svc = layer.layer(inner);
    let err = svc.ready().await.unwrap().call(1).await.unwrap_err();
    assert!(err.is::<InnerError>());
    assert_eq!(handle.in_use(), 0);
    assert_eq!(handle.rejected(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_queued_call_is_sent_to_the_instance_that_was_driven_ready() {
    let (layer, handle) = queued(1);
    let inner = Strict::new();
    let calls = inner.calls.clone();
    let mut svc = layer.layer(inner);

    let mut held = spawn(svc.ready().await.unwrap().call(1));
    assert!(held.poll().is_pending());
    // Queued: the ready instance travels with the call; `Strict` panics otherwise.
    let mut waiting = spawn(svc.ready().await.unwrap().call(2));
    assert!(waiting.poll().is_pending());
    // The replacement left behind must be driven ready before the next call, as usual.
    let mut third = spawn(svc.ready().await.unwrap().call(3));
    assert!(third.poll().is_pending());
    assert_eq!(handle.waiting(), 2);

    drop(held);
    assert!(waiting.poll().is_pending());
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn clones_share_one_limit() {
    let (layer, handle) = fail_fast(2);
    let mut a = layer.layer(Strict::new());
    let mut b = a.clone();
    let mut c = a.clone();
    let _one = spawn(a.ready().await.unwrap().call(1));
    let _two = spawn(b.ready().await.unwrap().call(2));
    assert!(c
        .ready()
        .await
        .unwrap()
        .call(3)
        .await
        .unwrap_err()
        .is::<BulkheadFull>());
    assert_eq!(handle.in_use(), 2);
    assert_eq!(a.handle().in_use(), 2);
}

#[tokio::test(start_paused = true)]
async fn services_from_one_layer_and_its_clones_share_one_limit() {
    let (layer, handle) = fail_fast(2);
    let mut a = layer.layer(Strict::new());
    let mut b = layer.clone().layer(Strict::new());
    let mut c = ServiceBuilder::new()
        .layer(layer.clone())
        .service(Strict::new());
    let _one = spawn(a.ready().await.unwrap().call(1));
    let _two = spawn(b.ready().await.unwrap().call(2));
    assert!(c
        .ready()
        .await
        .unwrap()
        .call(3)
        .await
        .unwrap_err()
        .is::<BulkheadFull>());
    assert_eq!(handle.in_use(), 2);
}

#[tokio::test(start_paused = true)]
async fn layers_made_from_one_config_are_independent() {
    let config = BulkheadConfig::builder()
        .max_concurrent_calls(1)
        .build()
        .unwrap();
    let mut a = config.layer().layer(Strict::new());
    let mut b = config.layer().layer(Strict::new());
    let mut c = Bulkhead::new(Strict::new(), &config);
    let _one = spawn(a.ready().await.unwrap().call(1));
    let mut two = spawn(b.ready().await.unwrap().call(2));
    let mut three = spawn(c.ready().await.unwrap().call(3));
    assert!(two.poll().is_pending(), "admitted by its own bulkhead");
    assert!(three.poll().is_pending(), "admitted by its own bulkhead");
}

#[tokio::test(start_paused = true)]
async fn dropping_the_response_future_releases_its_permit_in_both_modes() {
    let (ff, ff_handle) = fail_fast(1);
    let mut svc = ff.layer(Strict::new());
    for i in 0..3 {
        let mut fut = spawn(svc.ready().await.unwrap().call(i));
        assert!(fut.poll().is_pending());
        assert_eq!(ff_handle.in_use(), 1);
    }
    assert_eq!(ff_handle.in_use(), 0);

    let (q, q_handle) = queued(1);
    let mut svc = q.layer(Strict::new());
    let mut first = spawn(svc.ready().await.unwrap().call(1));
    assert!(first.poll().is_pending());
    let mut second = spawn(svc.ready().await.unwrap().call(2));
    assert!(second.poll().is_pending());
    assert_eq!((q_handle.in_use(), q_handle.waiting()), (1, 1));
    drop(second);
    drop(first);
    assert_eq!((q_handle.in_use(), q_handle.waiting()), (0, 0));
}

fn assert_send_static<T: Send + 'static>(_: &T) {}
fn assert_service_traits<T: Send + Sync + Clone + Debug + 'static>() {}

#[tokio::test(start_paused = true)]
async fn futures_are_send_and_static_and_the_parts_are_send_sync_clone_debug() {
    let (ff, _) = fail_fast(1);
    let (q, _) = queued(1);
    let mut a = ff.layer(Strict::new());
    let mut b = q.layer(Strict::new());
    let fa: ResponseFuture<BoxFuture<'static, Result<u32, InnerError>>> =
        a.ready().await.unwrap().call(1);
    let fb: QueuedResponseFuture<Strict, u32> = b.ready().await.unwrap().call(1);
    assert_send_static(&fa);
    assert_send_static(&fb);
    // Rejections and results are usable through `BoxError` across tasks.
    let joined = tokio::spawn(fa).now_or_never();
    assert!(joined.is_none(), "still pending inside the task");

    assert_service_traits::<Bulkhead<Strict>>();
    assert_service_traits::<Bulkhead<Strict, Queued>>();
    assert_service_traits::<BulkheadLayer>();
    assert_service_traits::<BulkheadLayer<Queued>>();
    assert_service_traits::<BulkheadHandle>();
    assert_service_traits::<BulkheadConfig>();
    let _: BoxError = BulkheadFull::new().into();
}
