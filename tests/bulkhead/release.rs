//! A bulkhead never leaks a permit: on completion, on drop at every await point, on panic,
//! and under concurrent load with random completion and cancellation.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use palisade::bulkhead::{BulkheadConfig, BulkheadHandle, BulkheadLayer, FailFast, Queued};
use palisade::error::BulkheadFull;
use palisade::BoxError;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::sync::oneshot;
use tokio_test::task::spawn;
use tower::{Layer, Service, ServiceExt};

/// Counts drops, to observe that an inner future was dropped.
struct DropCount(Arc<AtomicUsize>);

impl Drop for DropCount {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// What the inner service does with a request.
enum Act {
    /// Complete when the sender fires (or fail if it is dropped).
    Reply(oneshot::Receiver<u32>),
    /// Panic when polled.
    Panic,
}

struct Req {
    act: Act,
    dropped: Arc<AtomicUsize>,
}

#[derive(Clone, Default)]
struct Inner {
    calls: Arc<AtomicUsize>,
}

impl Service<Req> for Inner {
    type Response = u32;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<u32, BoxError>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let guard = DropCount(req.dropped);
        async move {
            let _guard = guard;
            match req.act {
                Act::Reply(rx) => rx.await.map_err(BoxError::from),
                Act::Panic => panic!("inner future panicked"),
            }
        }
        .boxed()
    }
}

fn reply() -> (Req, oneshot::Sender<u32>, Arc<AtomicUsize>) {
    let (tx, rx) = oneshot::channel();
    let dropped = Arc::new(AtomicUsize::new(0));
    (
        Req {
            act: Act::Reply(rx),
            dropped: dropped.clone(),
        },
        tx,
        dropped,
    )
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

#[tokio::test(start_paused = true)]
async fn dropping_a_call_before_its_first_poll_returns_the_permit_and_drops_inner() {
    let (layer, handle) = fail_fast(1);
    let mut svc = layer.layer(Inner::default());
    let (req, _tx, dropped) = reply();
    let fut = svc.ready().await.unwrap().call(req);
    assert_eq!(handle.in_use(), 1);
    drop(fut);
    assert_eq!(handle.in_use(), 0);
    assert_eq!(dropped.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn dropping_a_call_whose_inner_future_is_pending_returns_the_permit() {
    let (layer, handle) = queued(1, Duration::from_secs(1));
    let mut svc = layer.layer(Inner::default());
    let (req, _tx, dropped) = reply();
    let mut fut = spawn(svc.ready().await.unwrap().call(req));
    assert!(fut.poll().is_pending());
    assert_eq!(handle.in_use(), 1);
    drop(fut);
    assert_eq!(handle.in_use(), 0);
    assert_eq!(dropped.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn dropping_a_queued_call_leaves_the_queue_and_the_next_waiter_gets_the_permit() {
    let (layer, handle) = queued(1, Duration::from_secs(1));
    let inner = Inner::default();
    let mut svc = layer.layer(inner.clone());

    let (ra, ta, _) = reply();
    let mut a = spawn(svc.ready().await.unwrap().call(ra));
    let (rb, _tb, _) = reply();
    let mut b = spawn(svc.ready().await.unwrap().call(rb));
    let (rc, tc, _) = reply();
    let mut c = spawn(svc.ready().await.unwrap().call(rc));
    assert!(a.poll().is_pending());
    assert!(b.poll().is_pending());
    assert!(c.poll().is_pending());
    assert_eq!(handle.waiting(), 2);

    drop(b);
    assert_eq!(handle.waiting(), 1);
    ta.send(1).unwrap();
    assert!(a.poll().is_ready());
    assert!(c.is_woken(), "the permit skips the dropped waiter");
    assert!(c.poll().is_pending());
    assert_eq!(
        inner.calls.load(Ordering::SeqCst),
        2,
        "b never reached inner"
    );
    tc.send(3).unwrap();
    assert!(matches!(c.poll(), Poll::Ready(Ok(3))));
    assert_eq!(handle.in_use(), 0);
    assert_eq!(handle.waiting(), 0);
}

#[tokio::test(start_paused = true)]
async fn dropping_a_waiter_after_it_was_handed_a_permit_passes_the_permit_on() {
    let (layer, handle) = queued(1, Duration::from_secs(1));
    let inner = Inner::default();
    let mut svc = layer.layer(inner.clone());

    let (ra, ta, _) = reply();
    let mut a = spawn(svc.ready().await.unwrap().call(ra));
    let (rb, _tb, _) = reply();
    let mut b = spawn(svc.ready().await.unwrap().call(rb));
    let (rc, _tc, _) = reply();
    let mut c = spawn(svc.ready().await.unwrap().call(rc));
    assert!(a.poll().is_pending());
    assert!(b.poll().is_pending());
    assert!(c.poll().is_pending());

    ta.send(1).unwrap();
    assert!(a.poll().is_ready()); // the permit is handed to `b`
    assert_eq!(handle.in_use(), 1);
    drop(b); // ... which is dropped before it runs
    assert!(c.is_woken());
    assert!(c.poll().is_pending());
    assert_eq!(inner.calls.load(Ordering::SeqCst), 2, "a and c");
    assert_eq!(handle.in_use(), 1);
    drop(c);
    assert_eq!(handle.in_use(), 0);
    assert_eq!(handle.rejected(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_inner_future_in_a_task_returns_the_permit() {
    let (layer, handle) = fail_fast(1);
    let mut svc = layer.layer(Inner::default());
    let dropped = Arc::new(AtomicUsize::new(0));
    let fut = svc.ready().await.unwrap().call(Req {
        act: Act::Panic,
        dropped: dropped.clone(),
    });
    let joined = tokio::spawn(fut).await;
    assert!(joined.unwrap_err().is_panic());
    assert_eq!(handle.in_use(), 0);
    assert_eq!(dropped.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_inner_future_returns_the_permit_while_unwinding() {
    let (layer, handle) = queued(1, Duration::from_secs(1));
    let mut svc = layer.layer(Inner::default());
    let (ra, ta, _) = reply();
    let mut holder = spawn(svc.ready().await.unwrap().call(ra));
    assert!(holder.poll().is_pending());

    let dropped = Arc::new(AtomicUsize::new(0));
    let mut panicky = spawn(svc.ready().await.unwrap().call(Req {
        act: Act::Panic,
        dropped,
    }));
    assert!(panicky.poll().is_pending(), "queued behind the holder");
    ta.send(1).unwrap();
    assert!(holder.poll().is_ready());
    assert_eq!(handle.in_use(), 1, "handed to the panicky call");

    let caught = std::panic::catch_unwind(AssertUnwindSafe(|| panicky.poll()));
    assert!(caught.is_err());
    // The future itself is still alive, but its permit went back during unwinding.
    assert_eq!(handle.in_use(), 0);
    let (rb, tb, _) = reply();
    let mut next = spawn(svc.ready().await.unwrap().call(rb));
    tb.send(2).unwrap();
    assert!(matches!(next.poll(), Poll::Ready(Ok(2))));
    drop(panicky);
    assert_eq!(handle.in_use(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_panic_in_inner_call_returns_the_permit() {
    #[derive(Clone)]
    struct PanicsInCall;
    impl Service<()> for PanicsInCall {
        type Response = ();
        type Error = BoxError;
        type Future = std::future::Ready<Result<(), BoxError>>;
        fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> Poll<Result<(), BoxError>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, _: ()) -> Self::Future {
            panic!("inner call panicked")
        }
    }
    let (layer, handle) = fail_fast(1);
    let mut svc = layer.layer(PanicsInCall);
    svc.ready().await.unwrap();
    let caught = std::panic::catch_unwind(AssertUnwindSafe(|| svc.call(())));
    assert!(caught.is_err());
    assert_eq!(handle.in_use(), 0);
}

/// How one stress call ended.
#[derive(Default)]
struct Tally {
    ok: AtomicUsize,
    inner_err: AtomicUsize,
    rejected: AtomicUsize,
    cancelled: AtomicUsize,
}

/// An inner service for the stress test: yields a given number of times, then succeeds or
/// fails, while tracking how many of its futures are alive at once.
#[derive(Clone, Default)]
struct Busy {
    calls: Arc<AtomicUsize>,
    alive: Arc<AtomicUsize>,
    max_alive: Arc<AtomicUsize>,
}

struct Alive(Arc<AtomicUsize>);

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Service<(u32, bool)> for Busy {
    type Response = ();
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<(), BoxError>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, (yields, fail): (u32, bool)) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let now = self.alive.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_alive.fetch_max(now, Ordering::SeqCst);
        let alive = Alive(self.alive.clone());
        async move {
            let _alive = alive;
            for _ in 0..yields {
                tokio::task::yield_now().await;
            }
            if fail {
                Err("inner failure".into())
            } else {
                Ok(())
            }
        }
        .boxed()
    }
}

const CALLS: usize = 10_000;
const CAPACITY: usize = 64;

/// Runs `CALLS` concurrent calls with seeded random work, failures and cancellations.
async fn stress<S>(svc: S, seed: u64) -> Arc<Tally>
where
    S: Service<(u32, bool), Response = (), Error = BoxError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let tally = Arc::new(Tally::default());
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut tasks = Vec::with_capacity(CALLS);
    for _ in 0..CALLS {
        let yields = rng.random_range(0..8u32);
        let fail = rng.random_bool(0.1);
        // A quarter of the callers give up after a few polls.
        let give_up_after = rng.random_bool(0.25).then(|| rng.random_range(0..4u32));
        let mut svc = svc.clone();
        let tally = tally.clone();
        tasks.push(tokio::spawn(async move {
            let fut = svc.ready().await.unwrap().call((yields, fail));
            let out = match give_up_after {
                None => Some(fut.await),
                Some(n) => {
                    tokio::select! {
                        biased;
                        out = fut => Some(out),
                        _ = async { for _ in 0..n { tokio::task::yield_now().await } } => None,
                    }
                }
            };
            let slot = match out {
                None => &tally.cancelled,
                Some(Ok(())) => &tally.ok,
                Some(Err(e)) if e.is::<BulkheadFull>() => &tally.rejected,
                Some(Err(_)) => &tally.inner_err,
            };
            slot.fetch_add(1, Ordering::SeqCst);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    tally
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_fail_fast_calls_leak_no_permit_and_every_call_is_accounted_for() {
    let (layer, handle) = fail_fast(CAPACITY);
    let inner = Busy::default();
    let tally = stress(layer.layer(inner.clone()), 7).await;

    let get = |a: &AtomicUsize| a.load(Ordering::SeqCst);
    assert_eq!(handle.in_use(), 0);
    assert_eq!(handle.waiting(), 0);
    assert_eq!(get(&inner.alive), 0);
    assert!(get(&inner.max_alive) <= CAPACITY, "the limit held");
    assert!(get(&tally.rejected) > 0, "the test must exercise rejection");
    // Fail-fast decides at `call`: every call either reached inner or was rejected.
    assert_eq!(get(&inner.calls) + handle.rejected() as usize, CALLS);
    assert_eq!(get(&tally.rejected), handle.rejected() as usize);
    assert_eq!(
        get(&tally.ok) + get(&tally.inner_err) + get(&tally.rejected) + get(&tally.cancelled),
        CALLS
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_queued_calls_leak_no_permit_and_every_call_is_accounted_for() {
    let (layer, handle) = queued(CAPACITY, Duration::from_millis(20));
    let inner = Busy::default();
    let tally = stress(layer.layer(inner.clone()), 11).await;

    let get = |a: &AtomicUsize| a.load(Ordering::SeqCst);
    assert_eq!(handle.in_use(), 0);
    assert_eq!(handle.waiting(), 0);
    assert_eq!(get(&inner.alive), 0);
    assert!(get(&inner.max_alive) <= CAPACITY, "the limit held");
    assert_eq!(get(&tally.rejected), handle.rejected() as usize);
    assert!(get(&inner.calls) > 0);
    // A call reaches inner, is rejected after waiting, or is dropped while queued.
    assert!(get(&inner.calls) + handle.rejected() as usize <= CALLS);
    assert!(get(&inner.calls) >= get(&tally.ok) + get(&tally.inner_err));
    assert_eq!(
        get(&tally.ok) + get(&tally.inner_err) + get(&tally.rejected) + get(&tally.cancelled),
        CALLS
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_queued_calls_without_a_deadline_all_finish_so_no_wakeup_is_lost() {
    // With an effectively unbounded wait, a lost wake-up would leave a waiter parked
    // forever (no deadline would rescue it): the hang guard turns that into a failure.
    let (layer, handle) = queued(8, Duration::from_secs(3600));
    let inner = Busy::default();
    let tally = tokio::time::timeout(
        Duration::from_secs(60),
        stress(layer.layer(inner.clone()), 13),
    )
    .await
    .expect("every queued call was eventually admitted or cancelled");

    let get = |a: &AtomicUsize| a.load(Ordering::SeqCst);
    assert_eq!(handle.rejected(), 0);
    assert_eq!(get(&tally.rejected), 0);
    assert_eq!(handle.in_use(), 0);
    assert_eq!(handle.waiting(), 0);
    assert!(get(&inner.max_alive) <= 8, "the limit held");
    assert_eq!(
        get(&tally.ok) + get(&tally.inner_err) + get(&tally.cancelled),
        CALLS
    );
    assert!(get(&inner.calls) >= get(&tally.ok) + get(&tally.inner_err));
}

#[tokio::test(start_paused = true)]
async fn a_timeout_around_a_queued_bulkhead_cancels_the_wait_and_then_the_call() {
    use palisade::error::Elapsed;
    use palisade::timeout::TimeoutConfig;
    use tower::ServiceBuilder;

    let (layer, handle) = queued(1, Duration::from_secs(10));
    let inner = Inner::default();
    // Two stacks over one bulkhead: one without a timeout, one with.
    let mut plain = layer.layer(inner.clone());
    let mut timed = ServiceBuilder::new()
        .layer(
            TimeoutConfig::builder()
                .timeout(Duration::from_millis(100))
                .build()
                .unwrap()
                .layer(),
        )
        .layer(layer)
        .service(inner.clone());
    let expect_elapsed = |out: Poll<Result<u32, BoxError>>| match out {
        Poll::Ready(Err(e)) => assert!(e.is::<Elapsed>()),
        other => panic!("unexpected {other:?}"),
    };

    let (ra, ta, _) = reply();
    let mut a = spawn(plain.ready().await.unwrap().call(ra));
    assert!(a.poll().is_pending());
    let (rb, _tb, b_dropped) = reply();
    let mut b = spawn(timed.ready().await.unwrap().call(rb));
    assert!(b.poll().is_pending());
    assert_eq!((handle.in_use(), handle.waiting()), (1, 1));

    // Expiry while queued: the call leaves the queue and its request is dropped unsent.
    tokio::time::advance(Duration::from_millis(100)).await;
    expect_elapsed(b.poll());
    assert_eq!((handle.in_use(), handle.waiting()), (1, 0));
    assert_eq!(
        Arc::strong_count(&b_dropped),
        1,
        "the unsent request was dropped"
    );
    assert_eq!(
        b_dropped.load(Ordering::SeqCst),
        0,
        "no inner future was made for it"
    );
    assert_eq!(inner.calls.load(Ordering::SeqCst), 1);

    // Expiry while running: the inner call is cancelled and the permit returned.
    ta.send(1).unwrap();
    assert!(a.poll().is_ready());
    let (rc, _tc, c_dropped) = reply();
    let mut c = spawn(timed.ready().await.unwrap().call(rc));
    assert!(c.poll().is_pending());
    assert_eq!(handle.in_use(), 1);
    tokio::time::advance(Duration::from_millis(100)).await;
    expect_elapsed(c.poll());
    assert_eq!(handle.in_use(), 0);
    assert_eq!(c_dropped.load(Ordering::SeqCst), 1);
    assert_eq!(inner.calls.load(Ordering::SeqCst), 2);
    assert_eq!(
        handle.rejected(),
        0,
        "a timeout is not a bulkhead rejection"
    );
}
