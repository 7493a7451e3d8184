//! When a timed call expires, what it expires with, and what it cancels.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use palisade::error::Elapsed;
use palisade::timeout::{Timeout, TimeoutConfig};
use palisade::BoxError;
use tokio::sync::oneshot;
use tokio_test::task::spawn;
use tower::{service_fn, Layer, Service, ServiceExt};

struct DropCount(Arc<AtomicUsize>);

impl Drop for DropCount {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A request the inner service answers when the test says so; `label` feeds the
/// per-request override.
struct Req {
    label: &'static str,
    reply: oneshot::Receiver<Result<u32, MyError>>,
    dropped: Arc<AtomicUsize>,
}

#[derive(Debug, PartialEq)]
struct MyError(&'static str);

impl std::fmt::Display for MyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for MyError {}

#[derive(Clone)]
struct Inner;

impl Service<Req> for Inner {
    type Response = u32;
    type Error = MyError;
    type Future = BoxFuture<'static, Result<u32, MyError>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> Poll<Result<(), MyError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let guard = DropCount(req.dropped);
        async move {
            let _guard = guard;
            req.reply.await.unwrap_or(Err(MyError("sender dropped")))
        }
        .boxed()
    }
}

fn req(label: &'static str) -> (Req, oneshot::Sender<Result<u32, MyError>>, Arc<AtomicUsize>) {
    let (tx, rx) = oneshot::channel();
    let dropped = Arc::new(AtomicUsize::new(0));
    (
        Req {
            label,
            reply: rx,
            dropped: dropped.clone(),
        },
        tx,
        dropped,
    )
}

fn timeout_ms(ms: u64) -> TimeoutConfig {
    TimeoutConfig::builder()
        .timeout(Duration::from_millis(ms))
        .build()
        .unwrap()
}

fn elapsed_after<T: std::fmt::Debug>(out: Poll<Result<T, BoxError>>) -> Duration {
    match out {
        Poll::Ready(Err(e)) => e.downcast_ref::<Elapsed>().expect("Elapsed").after(),
        other => panic!("expected Elapsed, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn expired_call_resolves_to_elapsed_and_drops_the_inner_future_at_once() {
    let mut svc = timeout_ms(100).layer().layer(Inner);
    let (r, _tx, dropped) = req("slow");
    let mut fut = spawn(svc.ready().await.unwrap().call(r));
    assert!(fut.poll().is_pending());

    tokio::time::advance(Duration::from_millis(99)).await;
    assert!(fut.poll().is_pending());
    assert_eq!(dropped.load(Ordering::SeqCst), 0);
    tokio::time::advance(Duration::from_millis(1)).await;
    assert!(fut.is_woken());
    assert_eq!(elapsed_after(fut.poll()), Duration::from_millis(100));
    // Cancelled on expiry, not later when the response future is dropped.
    assert_eq!(dropped.load(Ordering::SeqCst), 1);
    drop(fut);
    assert_eq!(dropped.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn per_request_override_replaces_the_default_and_none_keeps_it() {
    let config = TimeoutConfig::builder()
        .timeout(Duration::from_millis(100))
        .per_request(|r: &Req| (r.label == "report").then_some(Duration::from_millis(300)))
        .build()
        .unwrap();
    let mut svc = Timeout::new(Inner, &config);

    let (short, _t1, _) = req("plain");
    let mut short = spawn(svc.ready().await.unwrap().call(short));
    let (long, t2, _) = req("report");
    let mut long = spawn(svc.ready().await.unwrap().call(long));
    assert!(short.poll().is_pending());
    assert!(long.poll().is_pending());

    tokio::time::advance(Duration::from_millis(100)).await;
    assert_eq!(elapsed_after(short.poll()), Duration::from_millis(100));
    assert!(long.poll().is_pending(), "the override gave it 300 ms");
    tokio::time::advance(Duration::from_millis(150)).await;
    assert!(long.poll().is_pending());
    t2.send(Ok(5)).unwrap();
    assert!(matches!(long.poll(), Poll::Ready(Ok(5))));

    let (r, _t3, _) = req("report");
    let mut late = spawn(svc.ready().await.unwrap().call(r));
    assert!(late.poll().is_pending());
    tokio::time::advance(Duration::from_millis(300)).await;
    assert_eq!(elapsed_after(late.poll()), Duration::from_millis(300));
}

#[tokio::test(start_paused = true)]
async fn inner_error_passes_through_boxed() {
    let mut svc = timeout_ms(100).layer().layer(Inner);
    let (r, tx, _) = req("x");
    let mut fut = spawn(svc.ready().await.unwrap().call(r));
    assert!(fut.poll().is_pending());
    tx.send(Err(MyError("boom"))).unwrap();
    match fut.poll() {
        Poll::Ready(Err(e)) => assert_eq!(e.downcast_ref::<MyError>(), Some(&MyError("boom"))),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_response_ready_at_first_poll_is_returned_even_past_the_deadline() {
    let mut svc = timeout_ms(10).layer().layer(Inner);
    let (r, tx, _) = req("x");
    let mut fut = spawn(svc.ready().await.unwrap().call(r));
    tx.send(Ok(7)).unwrap();
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(matches!(fut.poll(), Poll::Ready(Ok(7))));
}

#[test]
fn an_always_ready_inner_service_never_times_out_and_needs_no_timer() {
    // No tokio runtime here: a call whose inner future is ready at the first poll never
    // creates a timer (which would need a runtime's time driver).
    let mut svc = TimeoutConfig::builder()
        .timeout(Duration::from_nanos(1))
        .build()
        .unwrap()
        .layer()
        .layer(service_fn(|x: u32| async move { Ok::<_, BoxError>(x + 1) }));
    for i in 0..1000 {
        let out = futures::executor::block_on(async { svc.ready().await?.call(i).await });
        assert_eq!(out.unwrap(), i + 1);
    }
}

#[tokio::test(start_paused = true)]
async fn the_deadline_is_measured_from_call_not_from_first_poll() {
    let mut svc = timeout_ms(100).layer().layer(Inner);
    let (r, _tx, dropped) = req("x");
    let mut fut = spawn(svc.ready().await.unwrap().call(r));
    tokio::time::advance(Duration::from_millis(60)).await; // unpolled, in a queue or a join
    assert!(fut.poll().is_pending());
    tokio::time::advance(Duration::from_millis(39)).await;
    assert!(fut.poll().is_pending());
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(elapsed_after(fut.poll()), Duration::from_millis(100));
    assert_eq!(dropped.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_zero_override_expires_at_the_first_pending_poll() {
    let config = TimeoutConfig::builder()
        .timeout(Duration::from_secs(1))
        .per_request(|_: &Req| Some(Duration::ZERO))
        .build()
        .unwrap();
    let mut svc = config.layer().layer(Inner);
    let (r, _tx, dropped) = req("x");
    let mut fut = spawn(svc.ready().await.unwrap().call(r));
    assert_eq!(elapsed_after(fut.poll()), Duration::ZERO);
    assert_eq!(dropped.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn an_enormous_override_does_not_overflow() {
    let config = TimeoutConfig::builder()
        .per_request(|_: &Req| Some(Duration::MAX))
        .build()
        .unwrap();
    let mut svc = config.layer().layer(Inner);
    let (r, tx, _) = req("x");
    let mut fut = spawn(svc.ready().await.unwrap().call(r));
    assert!(fut.poll().is_pending());
    tokio::time::advance(Duration::from_secs(86_400 * 365)).await;
    assert!(fut.poll().is_pending());
    tx.send(Ok(1)).unwrap();
    assert!(matches!(fut.poll(), Poll::Ready(Ok(1))));
}

#[test]
fn builder_rejects_a_zero_timeout_naming_the_field() {
    let err = TimeoutConfig::builder()
        .timeout(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "timeout");
}
