//! Many threads calling clones of one breaker while it changes state: every call is
//! accounted for exactly, the window agrees with the callers, half-open never admits
//! more than its permits, and the transitions form one unbroken chain.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use palisade::breaker::{BreakerConfig, BreakerEvent, CircuitBreaker, CircuitState};
use palisade::clock::{Clock, ManualClock};
use palisade::error::{BoxError, BreakerOpen};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tower::{Service, ServiceExt};

const TASKS: u64 = 8;
const CALLS_PER_TASK: u64 = 2_000;

#[derive(Default)]
struct Tally {
    successes: AtomicU64,
    failures: AtomicU64,
    rejections: AtomicU64,
}

/// The backend: answers what the request says, sometimes after yielding so that calls
/// overlap transitions.
fn backend(
    calls: Arc<AtomicUsize>,
) -> impl Service<
    (bool, bool),
    Response = (),
    Error = BoxError,
    Future = BoxFuture<'static, Result<(), BoxError>>,
> + Clone
       + Send
       + 'static {
    tower::service_fn(move |(ok, pause): (bool, bool)| {
        calls.fetch_add(1, Ordering::Relaxed);
        async move {
            if pause {
                tokio::task::yield_now().await;
            }
            if ok {
                Ok(())
            } else {
                Err(BoxError::from("backend failure"))
            }
        }
        .boxed()
    })
}

async fn hammer<S>(
    mut svc: S,
    seed: u64,
    failure_rate: f64,
    tally: Arc<Tally>,
    tick: Option<ManualClock>,
) where
    S: Service<(bool, bool), Response = (), Error = BoxError>,
{
    let mut rng = SmallRng::seed_from_u64(seed);
    for _ in 0..CALLS_PER_TASK {
        let ok = !rng.random_bool(failure_rate);
        let pause = rng.random_bool(0.25);
        match svc.ready().await.unwrap().call((ok, pause)).await {
            Ok(()) => tally.successes.fetch_add(1, Ordering::Relaxed),
            Err(e) if e.is::<BreakerOpen>() => tally.rejections.fetch_add(1, Ordering::Relaxed),
            Err(_) => tally.failures.fetch_add(1, Ordering::Relaxed),
        };
        if let Some(hand) = &tick {
            hand.advance(Duration::from_micros(1));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_call_is_accounted_for_and_the_window_agrees() {
    // A frozen clock: the circuit trips once and never half-opens on its own, and the
    // window never rolls, so it must hold every outcome.
    let (clock, _hand) = Clock::manual();
    let config = BreakerConfig::builder()
        .clock(clock)
        .minimum_requests(50)
        .error_percentage(30.0)
        .consecutive_failures(6)
        .build()
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = CircuitBreaker::new(backend(calls.clone()), &config);
    let handle = svc.handle();
    let tally = Arc::new(Tally::default());
    let done = Arc::new(AtomicBool::new(false));

    // Flip between metrics-only and forced-open while the callers run: neither clears
    // the statistics.
    let steer = {
        let (handle, done) = (handle.clone(), done.clone());
        tokio::spawn(async move {
            // Let the circuit trip on its own first.
            while handle.state() != CircuitState::Open && !done.load(Ordering::Relaxed) {
                tokio::task::yield_now().await;
            }
            let mut flips = 0u32;
            while !done.load(Ordering::Relaxed) {
                for _ in 0..20 {
                    tokio::task::yield_now().await;
                }
                if flips % 2 == 0 {
                    handle.metrics_only();
                } else {
                    handle.force_open();
                }
                flips += 1;
            }
            flips
        })
    };
    let tasks: Vec<_> = (0..TASKS)
        .map(|i| tokio::spawn(hammer(svc.clone(), i, 0.4, tally.clone(), None)))
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    done.store(true, Ordering::Relaxed);
    let flips = steer.await.unwrap();

    let (s, f, r) = (
        tally.successes.load(Ordering::Relaxed),
        tally.failures.load(Ordering::Relaxed),
        tally.rejections.load(Ordering::Relaxed),
    );
    assert_eq!(
        s + f + r,
        TASKS * CALLS_PER_TASK,
        "every call ends exactly one way"
    );
    assert_eq!(
        calls.load(Ordering::Relaxed) as u64,
        s + f,
        "rejections never reach inner"
    );
    assert!(
        r > 0 && s > 0 && f > 0,
        "the run exercised every path: {s} {f} {r}"
    );
    let counts = handle.metrics().window.counts;
    assert_eq!(
        (counts.successes, counts.failures, counts.short_circuits),
        (s, f, r),
        "the window holds every outcome ({flips} flips)"
    );
    assert_eq!(
        handle.metrics().total_trips,
        1,
        "the circuit tripped once, on its own"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn full_cycles_under_contention_account_for_every_call_and_chain_transitions() {
    let (clock, hand) = Clock::manual();
    let transitions = Arc::new(Mutex::new(Vec::new()));
    let log = transitions.clone();
    let config = BreakerConfig::builder()
        .clock(clock)
        .without_error_percentage()
        .consecutive_failures(3)
        .sleep_window(Duration::from_micros(200))
        .half_open_probes(2)
        .probes_to_close(2)
        .probe_max_wait(Duration::from_millis(1))
        .on_event(move |e| {
            if let BreakerEvent::StateChanged { from, to, .. } = e {
                log.lock().unwrap().push((*from, *to));
            }
        })
        .build()
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = CircuitBreaker::new(backend(calls.clone()), &config);
    let handle = svc.handle();
    let tally = Arc::new(Tally::default());

    // Every call moves time on by a microsecond: the open periods end while callers race.
    let tasks: Vec<_> = (0..TASKS)
        .map(|i| {
            let tick = Some(hand.clone());
            tokio::spawn(hammer(svc.clone(), 100 + i, 0.3, tally.clone(), tick))
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }

    let (s, f, r) = (
        tally.successes.load(Ordering::Relaxed),
        tally.failures.load(Ordering::Relaxed),
        tally.rejections.load(Ordering::Relaxed),
    );
    assert_eq!(s + f + r, TASKS * CALLS_PER_TASK);
    assert_eq!(calls.load(Ordering::Relaxed) as u64, s + f);

    let transitions = transitions.lock().unwrap();
    assert!(
        transitions.len() >= 20,
        "the circuit went round many times: {transitions:?}"
    );
    let mut state = CircuitState::Closed;
    for &(from, to) in transitions.iter() {
        assert_eq!(from, state, "transitions chain: {transitions:?}");
        assert!(matches!(
            (from, to),
            (CircuitState::Closed, CircuitState::Open)
                | (CircuitState::Open, CircuitState::HalfOpen)
                | (CircuitState::HalfOpen, CircuitState::Open)
                | (CircuitState::HalfOpen, CircuitState::Closed)
        ));
        state = to;
    }
    assert_eq!(handle.state(), state);
}

#[test]
fn half_open_never_admits_more_than_its_permits_across_threads() {
    const THREADS: usize = 8;
    const PERMITS: usize = 3;
    let (clock, hand) = Clock::manual();
    let config = BreakerConfig::builder()
        .clock(clock)
        .without_error_percentage()
        .consecutive_failures(1)
        .half_open_probes(PERMITS as u32)
        .build()
        .unwrap();
    let inner_calls = Arc::new(AtomicUsize::new(0));
    let counter = inner_calls.clone();
    // The first call fails (tripping the circuit); every later one never finishes.
    let inner = tower::service_fn(move |_: ()| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        async move {
            if n == 0 {
                Err::<(), BoxError>("trip".into())
            } else {
                std::future::pending().await
            }
        }
        .boxed()
    });
    let mut svc = CircuitBreaker::new(inner, &config);
    futures::executor::block_on(async {
        svc.ready().await.unwrap().call(()).await.unwrap_err();
    });
    assert_eq!(svc.handle().state(), CircuitState::Open);
    hand.advance(Duration::from_secs(5));

    let barrier = Arc::new(Barrier::new(THREADS));
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let (mut svc, barrier) = (svc.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                // Keep the futures alive: a probe in flight holds its permit.
                let mut held = Vec::new();
                let mut rejected = 0;
                for _ in 0..50 {
                    let mut fut = futures::executor::block_on(svc.ready()).unwrap().call(());
                    let waker = futures::task::noop_waker();
                    let mut cx = std::task::Context::from_waker(&waker);
                    match fut.poll_unpin(&mut cx) {
                        std::task::Poll::Ready(Err(e)) if e.is::<BreakerOpen>() => rejected += 1,
                        std::task::Poll::Pending => held.push(fut),
                        other => panic!("unexpected {other:?}"),
                    }
                }
                (held, rejected)
            })
        })
        .collect();
    let mut held = 0;
    let mut rejected = 0;
    let mut keep = Vec::new();
    for t in threads {
        let (h, r) = t.join().unwrap();
        held += h.len();
        rejected += r;
        keep.push(h);
    }
    assert_eq!(held, PERMITS, "exactly the permits are in flight");
    assert_eq!(rejected, THREADS * 50 - PERMITS);
    assert_eq!(inner_calls.load(Ordering::SeqCst), 1 + PERMITS);
    assert_eq!(svc.handle().metrics().probes_in_flight, PERMITS as u32);
    drop(keep);
    assert_eq!(
        svc.handle().metrics().probes_in_flight,
        0,
        "dropped probes give back"
    );
}
