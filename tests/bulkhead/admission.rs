//! Who a bulkhead admits, who it queues, in what order, and who it rejects.

use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use palisade::bulkhead::{BulkheadConfig, BulkheadHandle, BulkheadLayer, FailFast, Queued};
use palisade::error::BulkheadFull;
use palisade::BoxError;
use parking_lot::Mutex;
use tokio::sync::oneshot;
use tokio_test::task::{spawn, Spawn};
use tower::{Layer, Service, ServiceExt};

/// A request that completes when the test sends its reply.
struct Req {
    id: u32,
    reply: oneshot::Receiver<u32>,
}

/// The inner service: records the id of every call it receives, in order.
#[derive(Clone)]
struct Gate {
    calls: Arc<Mutex<Vec<u32>>>,
}

impl Service<Req> for Gate {
    type Response = u32;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<u32, BoxError>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        self.calls.lock().push(req.id);
        async move { req.reply.await.map_err(BoxError::from) }.boxed()
    }
}

fn gate() -> (Gate, Arc<Mutex<Vec<u32>>>) {
    let calls = Arc::new(Mutex::new(Vec::new()));
    (
        Gate {
            calls: calls.clone(),
        },
        calls,
    )
}

type Fut<S> = Spawn<<S as Service<Req>>::Future>;

/// Drives the service ready, calls it with request `id`, and returns the response future
/// (wrapped in a mock task, not yet polled) and the sender that completes the inner call.
async fn call<S>(svc: &mut S, id: u32) -> (Fut<S>, oneshot::Sender<u32>)
where
    S: Service<Req, Error = BoxError>,
{
    let (tx, rx) = oneshot::channel();
    let fut = svc.ready().await.unwrap().call(Req { id, reply: rx });
    (spawn(fut), tx)
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

fn queued(n: usize, max_wait: Duration) -> (BulkheadLayer<Queued>, BulkheadHandle) {
    let layer = BulkheadConfig::builder()
        .max_concurrent_calls(n)
        .max_wait(max_wait)
        .build()
        .unwrap()
        .layer();
    let handle = layer.handle();
    (layer, handle)
}

fn expect_full<T: std::fmt::Debug>(out: Poll<Result<T, BoxError>>) -> BulkheadFull {
    match out {
        Poll::Ready(Err(e)) => *e.downcast_ref::<BulkheadFull>().expect("BulkheadFull"),
        other => panic!("expected a BulkheadFull rejection, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn full_fail_fast_bulkhead_rejects_without_calling_inner() {
    let (layer, handle) = fail_fast(2);
    let (inner, calls) = gate();
    let mut svc = layer.layer(inner);

    let (mut a, _ta) = call(&mut svc, 1).await;
    let (mut b, _tb) = call(&mut svc, 2).await;
    let (mut c, _tc) = call(&mut svc, 3).await;

    assert!(a.poll().is_pending());
    assert!(b.poll().is_pending());
    let full = expect_full(c.poll());
    assert_eq!(
        full.waited(),
        Duration::ZERO,
        "fail-fast rejections do not wait"
    );
    assert_eq!(
        *calls.lock(),
        vec![1, 2],
        "the rejected call never reached inner"
    );
    assert_eq!(handle.in_use(), 2);
    assert_eq!(handle.waiting(), 0);
    assert_eq!(handle.rejected(), 1);
}

#[tokio::test(start_paused = true)]
async fn permit_is_returned_when_the_response_completes() {
    let (layer, handle) = fail_fast(1);
    let (inner, _calls) = gate();
    let mut svc = layer.layer(inner);

    let (mut a, ta) = call(&mut svc, 1).await;
    assert!(a.poll().is_pending());
    ta.send(10).unwrap();
    assert_eq!(handle.in_use(), 1);
    match a.poll() {
        Poll::Ready(Ok(10)) => {}
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(
        handle.in_use(),
        0,
        "released on completion, before the future is dropped"
    );

    let (mut b, tb) = call(&mut svc, 2).await;
    tb.send(20).unwrap();
    assert!(matches!(b.poll(), Poll::Ready(Ok(20))));
}

#[tokio::test(start_paused = true)]
async fn queued_waiters_are_admitted_in_fifo_order() {
    let (layer, handle) = queued(1, Duration::from_secs(10));
    let (inner, calls) = gate();
    let mut svc = layer.layer(inner);

    let (mut a, ta) = call(&mut svc, 1).await;
    let (mut b, tb) = call(&mut svc, 2).await;
    let (mut c, tc) = call(&mut svc, 3).await;
    let (mut d, td) = call(&mut svc, 4).await;
    // Poll the waiters in reverse order: order of polling must not matter, only arrival.
    assert!(d.poll().is_pending());
    assert!(c.poll().is_pending());
    assert!(b.poll().is_pending());
    assert!(a.poll().is_pending());
    assert_eq!(handle.waiting(), 3);
    assert_eq!(*calls.lock(), vec![1]);

    ta.send(1).unwrap();
    assert!(a.poll().is_ready());
    assert!(
        b.is_woken(),
        "the head waiter is woken by the released permit"
    );
    assert!(!c.is_woken() && !d.is_woken());
    assert!(d.poll().is_pending());
    assert!(c.poll().is_pending());
    assert!(b.poll().is_pending(), "admitted: now waiting on inner");
    assert_eq!(*calls.lock(), vec![1, 2]);

    tb.send(2).unwrap();
    assert!(b.poll().is_ready());
    assert!(d.poll().is_pending());
    assert!(c.poll().is_pending());
    assert_eq!(*calls.lock(), vec![1, 2, 3]);

    tc.send(3).unwrap();
    assert!(c.poll().is_ready());
    assert!(d.poll().is_pending());
    td.send(4).unwrap();
    assert!(matches!(d.poll(), Poll::Ready(Ok(4))));
    assert_eq!(*calls.lock(), vec![1, 2, 3, 4]);
    assert_eq!(handle.in_use(), 0);
    assert_eq!(handle.rejected(), 0);
}

#[tokio::test(start_paused = true)]
async fn later_arrival_cannot_barge_ahead_of_the_head_waiter() {
    let (layer, handle) = queued(1, Duration::from_secs(10));
    let (inner, calls) = gate();
    let mut svc = layer.layer(inner);

    let (mut a, ta) = call(&mut svc, 1).await;
    assert!(a.poll().is_pending());
    let (mut b, tb) = call(&mut svc, 2).await;
    assert!(b.poll().is_pending());

    // The permit is freed; `b` has not been polled since, yet it owns that permit.
    ta.send(1).unwrap();
    assert!(a.poll().is_ready());
    let (mut late, _tl) = call(&mut svc, 3).await;
    assert!(
        late.poll().is_pending(),
        "the late arrival waits behind `b`"
    );
    assert_eq!(*calls.lock(), vec![1]);
    assert_eq!(handle.in_use(), 1);
    assert_eq!(handle.waiting(), 1);

    assert!(b.poll().is_pending());
    assert_eq!(*calls.lock(), vec![1, 2]);
    tb.send(2).unwrap();
    assert!(b.poll().is_ready());
    assert!(late.poll().is_pending());
    assert_eq!(*calls.lock(), vec![1, 2, 3]);
}

#[tokio::test(start_paused = true)]
async fn queued_call_that_waits_too_long_fails_with_bulkhead_full_after_its_wait() {
    let (layer, handle) = queued(1, Duration::from_millis(50));
    let (inner, calls) = gate();
    let mut svc = layer.layer(inner);

    let (mut a, _ta) = call(&mut svc, 1).await;
    assert!(a.poll().is_pending());
    let (mut b, _tb) = call(&mut svc, 2).await;
    assert!(b.poll().is_pending());

    tokio::time::advance(Duration::from_millis(49)).await;
    assert!(b.poll().is_pending());
    tokio::time::advance(Duration::from_millis(1)).await;
    assert!(b.is_woken());
    let full = expect_full(b.poll());
    assert_eq!(full.waited(), Duration::from_millis(50));
    assert_eq!(
        *calls.lock(),
        vec![1],
        "a call that timed out waiting never reaches inner"
    );
    assert_eq!(handle.waiting(), 0);
    assert_eq!(handle.in_use(), 1);
    assert_eq!(handle.rejected(), 1);
}

#[tokio::test(start_paused = true)]
async fn wait_is_measured_from_call_not_from_first_poll() {
    let (layer, _handle) = queued(1, Duration::from_millis(50));
    let (inner, _calls) = gate();
    let mut svc = layer.layer(inner);

    let (mut a, _ta) = call(&mut svc, 1).await;
    assert!(a.poll().is_pending());
    let (mut b, _tb) = call(&mut svc, 2).await;
    tokio::time::advance(Duration::from_millis(50)).await;
    assert_eq!(expect_full(b.poll()).waited(), Duration::from_millis(50));
}

#[tokio::test(start_paused = true)]
async fn a_permit_handed_over_at_the_deadline_admits_the_call() {
    let (layer, handle) = queued(1, Duration::from_millis(50));
    let (inner, calls) = gate();
    let mut svc = layer.layer(inner);

    let (mut a, ta) = call(&mut svc, 1).await;
    assert!(a.poll().is_pending());
    let (mut b, tb) = call(&mut svc, 2).await;
    assert!(b.poll().is_pending());
    // Both the permit and the deadline arrive before `b` is polled again.
    ta.send(1).unwrap();
    assert!(a.poll().is_ready());
    tokio::time::advance(Duration::from_millis(50)).await;
    assert!(b.poll().is_pending(), "admitted, waiting on inner");
    assert_eq!(*calls.lock(), vec![1, 2]);
    tb.send(2).unwrap();
    assert!(matches!(b.poll(), Poll::Ready(Ok(2))));
    assert_eq!(handle.rejected(), 0);
    assert_eq!(handle.in_use(), 0);
}

#[tokio::test(start_paused = true)]
async fn growing_capacity_admits_waiters_at_once() {
    let (layer, handle) = queued(1, Duration::from_secs(10));
    let (inner, calls) = gate();
    let mut svc = layer.layer(inner);

    let (mut a, _ta) = call(&mut svc, 1).await;
    let (mut b, _tb) = call(&mut svc, 2).await;
    let (mut c, _tc) = call(&mut svc, 3).await;
    for f in [&mut a, &mut b, &mut c] {
        assert!(f.poll().is_pending());
    }
    assert_eq!(handle.waiting(), 2);

    handle.set_capacity(3).unwrap();
    assert_eq!(handle.capacity(), 3);
    assert!(b.is_woken() && c.is_woken());
    assert_eq!(handle.waiting(), 0);
    assert_eq!(handle.in_use(), 3);
    assert!(b.poll().is_pending());
    assert!(c.poll().is_pending());
    assert_eq!(*calls.lock(), vec![1, 2, 3]);
}

#[tokio::test(start_paused = true)]
async fn shrinking_capacity_lets_in_flight_calls_finish_and_admits_only_below_it() {
    let (layer, handle) = fail_fast(3);
    let (inner, calls) = gate();
    let mut svc = layer.layer(inner);

    let (mut a, ta) = call(&mut svc, 1).await;
    let (mut b, tb) = call(&mut svc, 2).await;
    let (mut c, tc) = call(&mut svc, 3).await;
    for f in [&mut a, &mut b, &mut c] {
        assert!(f.poll().is_pending());
    }
    handle.set_capacity(1).unwrap();
    assert_eq!(handle.in_use(), 3, "nothing is revoked");

    ta.send(1).unwrap();
    assert!(matches!(a.poll(), Poll::Ready(Ok(1))));
    let (mut d, _td) = call(&mut svc, 4).await;
    expect_full(d.poll());
    tb.send(2).unwrap();
    assert!(matches!(b.poll(), Poll::Ready(Ok(2))));
    let (mut e, _te) = call(&mut svc, 5).await;
    expect_full(e.poll());
    tc.send(3).unwrap();
    assert!(matches!(c.poll(), Poll::Ready(Ok(3))));
    assert_eq!(handle.in_use(), 0);

    let (mut f, tf) = call(&mut svc, 6).await;
    assert!(f.poll().is_pending());
    let (mut g, _tg) = call(&mut svc, 7).await;
    expect_full(g.poll());
    tf.send(6).unwrap();
    assert!(f.poll().is_ready());
    assert_eq!(*calls.lock(), vec![1, 2, 3, 6]);
    assert_eq!(handle.rejected(), 3);
}

#[tokio::test(start_paused = true)]
async fn set_capacity_to_zero_is_rejected_and_changes_nothing() {
    let (_layer, handle) = fail_fast(4);
    let err = handle.set_capacity(0).unwrap_err();
    assert_eq!(err.field(), "set_capacity");
    assert_eq!(handle.capacity(), 4);
}

#[test]
fn builder_rejects_zero_limits_naming_the_field() {
    let err = BulkheadConfig::builder()
        .max_concurrent_calls(0)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "max_concurrent_calls");
    let err = BulkheadConfig::builder()
        .max_concurrent_calls(3)
        .max_wait(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "max_wait");
}

#[tokio::test(start_paused = true)]
async fn an_enormous_max_wait_waits_without_overflowing() {
    let (layer, handle) = queued(1, Duration::MAX);
    let (inner, calls) = gate();
    let mut svc = layer.layer(inner);
    let (mut a, ta) = call(&mut svc, 1).await;
    assert!(a.poll().is_pending());
    let (mut b, _tb) = call(&mut svc, 2).await;
    assert!(b.poll().is_pending());
    tokio::time::advance(Duration::from_secs(86_400 * 365)).await;
    assert!(b.poll().is_pending());
    ta.send(1).unwrap();
    assert!(a.poll().is_ready());
    assert!(b.poll().is_pending());
    assert_eq!(*calls.lock(), vec![1, 2]);
    assert_eq!(handle.rejected(), 0);
}
