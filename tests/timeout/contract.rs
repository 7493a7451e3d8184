//! tower's contract, pinned for the timeout: what `poll_ready` and `call` do, clone
//! semantics, what the futures are, and that dropping releases the inner future.

use std::fmt::Debug;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use palisade::error::Elapsed;
use palisade::timeout::{ResponseFuture, Timeout, TimeoutConfig, TimeoutLayer};
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

struct DropCount(Arc<AtomicUsize>);

impl Drop for DropCount {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// An inner service with test-set readiness whose calls never complete, counting calls and
/// dropped futures.
#[derive(Clone, Debug, Default)]
struct Stuck {
    readiness: Arc<AtomicU8>,
    calls: Arc<AtomicUsize>,
    dropped: Arc<AtomicUsize>,
}

impl Service<u32> for Stuck {
    type Response = u32;
    type Error = InnerError;
    type Future = BoxFuture<'static, Result<u32, InnerError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), InnerError>> {
        match self.readiness.load(Ordering::SeqCst) {
            PENDING => Poll::Pending,
            READY => Poll::Ready(Ok(())),
            _ => Poll::Ready(Err(InnerError)),
        }
    }

    fn call(&mut self, req: u32) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let guard = DropCount(self.dropped.clone());
        async move {
            let _guard = guard;
            futures::future::pending::<()>().await;
            Ok(req)
        }
        .boxed()
    }
}

fn stuck() -> Stuck {
    let s = Stuck::default();
    s.readiness.store(READY, Ordering::SeqCst);
    s
}

fn layer(ms: u64) -> TimeoutLayer {
    TimeoutConfig::builder()
        .timeout(Duration::from_millis(ms))
        .build()
        .unwrap()
        .layer()
}

#[tokio::test(start_paused = true)]
async fn poll_ready_forwards_inner_readiness_and_is_not_timed() {
    let inner = stuck();
    let readiness = inner.readiness.clone();
    let mut svc = layer(10).layer(inner);
    let waker = futures::task::noop_waker();
    let mut cx = Context::from_waker(&waker);

    readiness.store(PENDING, Ordering::SeqCst);
    assert!(svc.poll_ready(&mut cx).is_pending());
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(
        svc.poll_ready(&mut cx).is_pending(),
        "readiness has no deadline"
    );
    readiness.store(BROKEN, Ordering::SeqCst);
    match svc.poll_ready(&mut cx) {
        Poll::Ready(Err(e)) => assert!(e.is::<InnerError>()),
        other => panic!("unexpected {other:?}"),
    }
    readiness.store(READY, Ordering::SeqCst);
    assert!(matches!(svc.poll_ready(&mut cx), Poll::Ready(Ok(()))));
}

#[tokio::test(start_paused = true)]
async fn call_always_calls_inner_and_inner_errors_pass_through_boxed() {
    let inner = stuck();
    let calls = inner.calls.clone();
    let mut svc = ServiceBuilder::new()
        .layer(layer(10))
        .service(tower::service_fn(|fail: bool| async move {
            if fail {
                Err(InnerError)
            } else {
                Ok(1u32)
            }
        }));
    assert_eq!(svc.ready().await.unwrap().call(false).await.unwrap(), 1);
    let err = svc.ready().await.unwrap().call(true).await.unwrap_err();
    assert!(err.is::<InnerError>());

    let mut svc = layer(10).layer(inner);
    let _pending = svc.ready().await.unwrap().call(1);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_clone_is_an_independent_service_with_the_same_timeout() {
    let inner = stuck();
    let calls = inner.calls.clone();
    let mut a = layer(50).layer(inner);
    let mut b = a.clone();
    assert_eq!(b.timeout(), Duration::from_millis(50));
    let mut fa = spawn(a.ready().await.unwrap().call(1));
    assert!(fa.poll().is_pending());
    tokio::time::advance(Duration::from_millis(30)).await;
    let mut fb = spawn(b.ready().await.unwrap().call(2));
    assert!(fb.poll().is_pending());
    tokio::time::advance(Duration::from_millis(20)).await;
    assert!(matches!(fa.poll(), Poll::Ready(Err(ref e)) if e.is::<Elapsed>()));
    assert!(fb.poll().is_pending(), "b's call has its own deadline");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_response_future_drops_the_inner_future() {
    let inner = stuck();
    let dropped = inner.dropped.clone();
    let mut svc = layer(10).layer(inner);

    let unpolled = svc.ready().await.unwrap().call(1);
    drop(unpolled);
    assert_eq!(dropped.load(Ordering::SeqCst), 1);

    let mut armed = spawn(svc.ready().await.unwrap().call(2));
    assert!(armed.poll().is_pending());
    drop(armed);
    assert_eq!(dropped.load(Ordering::SeqCst), 2);
    // Nothing fires later for a dropped call.
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(dropped.load(Ordering::SeqCst), 2);
}

fn assert_send_static<T: Send + 'static>(_: &T) {}
fn assert_parts<T: Send + Sync + Clone + Debug + 'static>() {}

#[tokio::test(start_paused = true)]
async fn futures_are_send_and_static_and_the_parts_are_send_sync_clone_debug() {
    let config = TimeoutConfig::builder()
        .per_request(|x: &u32| (*x > 10).then_some(Duration::from_secs(5)))
        .build()
        .unwrap();
    let mut svc = Timeout::new(stuck(), &config);
    let fut: ResponseFuture<BoxFuture<'static, Result<u32, InnerError>>> =
        svc.ready().await.unwrap().call(1);
    assert_send_static(&fut);
    let task = tokio::spawn(fut);
    tokio::time::advance(Duration::from_secs(1)).await;
    let err = task.await.unwrap().unwrap_err();
    assert!(err.is::<Elapsed>());

    assert_parts::<Timeout<Stuck>>();
    assert_parts::<TimeoutLayer>();
    assert_parts::<TimeoutConfig>();
    fn assert_clone_send_sync<T: Clone + Send + Sync + 'static>(_: &T) {}
    assert_clone_send_sync(&svc);
    assert_clone_send_sync(&config.layer());
    assert!(format!("{:?}", config.layer()).contains("TimeoutLayer"));
    let _: BoxError = Elapsed::new(Duration::from_secs(1)).into();
}
