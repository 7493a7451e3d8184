//! Per-endpoint circuit breakers through the balancer's builder
//! (`Builder::endpoint_breaker`), on tokio's paused clock: an open circuit makes its
//! endpoint not ready, so traffic goes around it instead of failing.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use palisade::balance::{Builder, LeastConnections, OutlierDetection, RoundRobin};
use palisade::breaker::{BreakerConfig, CircuitState};
use palisade::clock::Clock;
use palisade::discover::{ChannelSet, FixedList};
use palisade::error::{BreakerOpen, NoEndpoints};
use palisade::BoxError;
use tokio::time::Instant;
use tower::{Service, ServiceExt};

/// An endpoint that counts its calls, fails while `failing` is set, and answers after
/// `delay`.
#[derive(Clone)]
struct Ep {
    name: &'static str,
    calls: Arc<AtomicU32>,
    failing: Arc<AtomicBool>,
    delay: Duration,
}

fn ep(name: &'static str) -> Ep {
    Ep {
        name,
        calls: Arc::default(),
        failing: Arc::default(),
        delay: Duration::ZERO,
    }
}

impl Ep {
    fn slow(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
    fn calls(&self) -> u32 {
        self.calls.load(Ordering::SeqCst)
    }
    fn fail(&self, on: bool) {
        self.failing.store(on, Ordering::SeqCst);
    }
}

type BoxFut = Pin<Box<dyn Future<Output = Result<&'static str, io::Error>> + Send>>;

impl Service<()> for Ep {
    type Response = &'static str;
    type Error = io::Error;
    type Future = BoxFut;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: ()) -> BoxFut {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let fail = self.failing.load(Ordering::SeqCst);
        let (name, delay) = (self.name, self.delay);
        Box::pin(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if fail {
                Err(io::Error::other(name))
            } else {
                Ok(name)
            }
        })
    }
}

fn breaker(failures: u32, probes: u32, to_close: u32) -> BreakerConfig {
    BreakerConfig::builder()
        .clock(Clock::tokio())
        .consecutive_failures(failures)
        .without_error_percentage()
        .sleep_window(Duration::from_secs(5))
        .half_open_probes(probes)
        .probes_to_close(to_close)
        .probe_max_wait(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// Sends `n` requests one after another; returns who served each (or the error text),
/// and panics on a `BreakerOpen` or `NoEndpoints`.
async fn run<S>(svc: &mut S, n: usize) -> Vec<Result<&'static str, String>>
where
    S: Service<(), Response = &'static str, Error = BoxError>,
{
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let r = svc.ready().await.unwrap().call(()).await;
        if let Err(e) = &r {
            assert!(
                !e.is::<BreakerOpen>() && !e.is::<NoEndpoints>(),
                "a request failed with {e} while a healthy endpoint was available"
            );
        }
        out.push(r.map_err(|e| e.to_string()));
    }
    out
}

#[tokio::test(start_paused = true)]
async fn failing_endpoint_is_routed_around_probed_and_taken_back() {
    let (a, b, c) = (ep("a"), ep("b"), ep("c"));
    let list = FixedList::unweighted([("a", a.clone()), ("b", b.clone()), ("c", c.clone())]);
    let mut balance = Builder::new(RoundRobin::new())
        .endpoint_breaker(breaker(3, 1, 2))
        .build_weighted(list)
        .unwrap();
    balance.ready().await.unwrap();
    let handle = balance.endpoint_breaker(&"a").unwrap();

    a.fail(true);
    let out = run(&mut balance, 30).await;
    assert_eq!(
        a.calls(),
        3,
        "a is called until its breaker trips, not after"
    );
    assert_eq!(handle.state(), CircuitState::Open);
    assert_eq!(out.iter().filter(|r| r.is_err()).count(), 3);
    assert_eq!(b.calls() + c.calls(), 27, "the others take the traffic");
    assert_eq!(balance.len(), 3, "an open circuit is not a removal");
    assert_eq!(balance.ready_len(), 2);

    // Still failing when the open period ends: exactly one probe reaches it.
    tokio::time::advance(Duration::from_secs(5)).await;
    let out = run(&mut balance, 10).await;
    assert_eq!(a.calls(), 4, "one probe");
    assert_eq!(out.iter().filter(|r| r.is_err()).count(), 1);
    assert_eq!(
        handle.state(),
        CircuitState::Open,
        "the failed probe reopened it"
    );

    // Recovered: the probes close the circuit and a is back in the rotation.
    a.fail(false);
    tokio::time::advance(Duration::from_secs(5)).await;
    let out = run(&mut balance, 30).await;
    assert!(out.iter().all(|r| r.is_ok()));
    assert_eq!(handle.state(), CircuitState::Closed);
    assert!(
        a.calls() >= 4 + 9,
        "a takes its share again once closed: {}",
        a.calls()
    );
    let m = handle.metrics();
    assert_eq!(m.total_trips, 2);
}

#[tokio::test(start_paused = true)]
async fn half_open_admits_exactly_the_configured_probes_under_concurrency() {
    let slow = Duration::from_millis(100);
    let (a, b) = (ep("a").slow(slow), ep("b").slow(slow));
    let list = FixedList::unweighted([("a", a.clone()), ("b", b.clone())]);
    let mut balance = Builder::new(LeastConnections::seeded(7))
        .endpoint_breaker(breaker(2, 3, 3))
        .build_weighted(list)
        .unwrap();
    balance.ready().await.unwrap();
    let handle = balance.endpoint_breaker(&"a").unwrap();
    a.fail(true);
    run(&mut balance, 10).await;
    assert_eq!(handle.state(), CircuitState::Open);
    let before = a.calls();
    assert_eq!(before, 2);

    tokio::time::advance(Duration::from_secs(5)).await;
    a.fail(false);
    // Forty requests in flight at once: a takes exactly its three probes.
    let mut pending = Vec::new();
    for _ in 0..40 {
        let fut = balance.ready().await.unwrap().call(());
        pending.push(tokio::spawn(fut));
    }
    assert_eq!(a.calls() - before, 3, "exactly half_open_probes probes");
    assert_eq!(handle.metrics().probes_in_flight, 3);
    for p in pending {
        p.await.unwrap().unwrap();
    }
    assert_eq!(
        handle.state(),
        CircuitState::Closed,
        "three good probes close it"
    );
}

#[tokio::test(start_paused = true)]
async fn circuit_opening_while_its_endpoint_is_reserved_sends_requests_elsewhere() {
    // Failures complete while `a` is already reserved for the next call: its circuit
    // rejects at `call`, the balancer picks `b` instead and polls `a` again, finding it
    // not ready.
    let slow = Duration::from_millis(10);
    let (a, b) = (ep("a").slow(slow), ep("b").slow(slow));
    let list = FixedList::unweighted([("a", a.clone()), ("b", b.clone())]);
    let mut balance = Builder::new(RoundRobin::new())
        .endpoint_breaker(breaker(3, 1, 1))
        .build_weighted(list)
        .unwrap();
    a.fail(true);
    let mut pending = Vec::new();
    for _ in 0..8 {
        pending.push(tokio::spawn(balance.ready().await.unwrap().call(())));
    }
    let mut failures = 0;
    for p in pending {
        if let Err(e) = p.await.unwrap() {
            assert!(!e.is::<BreakerOpen>());
            failures += 1;
        }
    }
    assert_eq!(failures, 4, "a's four requests were already sent");
    assert_eq!(
        balance.endpoint_breaker(&"a").unwrap().state(),
        CircuitState::Open
    );
    let out = run(&mut balance, 10).await;
    assert!(out.iter().all(|r| r == &Ok("b")), "{out:?}");
    assert_eq!(a.calls(), 4);
}

#[tokio::test(start_paused = true)]
async fn circuit_that_rejects_at_call_time_makes_the_balancer_pick_again() {
    let (a, b) = (ep("a"), ep("b"));
    let list = FixedList::unweighted([("a", a.clone()), ("b", b.clone())]);
    let mut balance = Builder::new(RoundRobin::new())
        .endpoint_breaker(breaker(3, 1, 1))
        .build_weighted(list)
        .unwrap();
    balance.ready().await.unwrap();
    assert_eq!(balance.ready_len(), 2);
    // Forced open between poll_ready and call: round robin would pick `a` first.
    balance.endpoint_breaker(&"a").unwrap().force_open();
    let r = balance.call(()).await.unwrap();
    assert_eq!(r, "b");
    assert_eq!(a.calls(), 0);
    assert_eq!(balance.ready_len(), 1, "a left the ready list");
    let out = run(&mut balance, 4).await;
    assert!(out.iter().all(|r| r == &Ok("b")));
    // Released: a is polled again (the transition woke it) and takes traffic.
    balance.endpoint_breaker(&"a").unwrap().reset();
    run(&mut balance, 4).await;
    assert_eq!(a.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn every_circuit_open_rejects_at_call_with_breaker_open() {
    let a = ep("a");
    let list = FixedList::unweighted([("a", a.clone())]);
    let mut balance = Builder::new(RoundRobin::new())
        .endpoint_breaker(breaker(3, 1, 1))
        .build_weighted(list)
        .unwrap();
    balance.ready().await.unwrap();
    balance.endpoint_breaker(&"a").unwrap().force_open();
    let err = balance.call(()).await.unwrap_err();
    assert!(err.is::<BreakerOpen>(), "{err}");
    assert_eq!(a.calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn request_waiting_on_an_all_open_set_is_served_when_the_open_period_ends() {
    let (a, b) = (ep("a"), ep("b"));
    let list = FixedList::unweighted([("a", a.clone()), ("b", b.clone())]);
    let mut balance = Builder::new(RoundRobin::new())
        .no_endpoint_deadline(Duration::from_secs(60))
        .endpoint_breaker(breaker(1, 1, 1))
        .build_weighted(list)
        .unwrap();
    a.fail(true);
    b.fail(true);
    let out = run(&mut balance, 2).await;
    assert!(out.iter().all(|r| r.is_err()));
    a.fail(false);
    b.fail(false);
    // Nothing else happens: only the gates' timers can wake the waiting request, at the
    // end of the open period (well before the 60 s no-endpoint deadline).
    let started = Instant::now();
    let r = balance.ready().await.unwrap().call(()).await.unwrap();
    assert_eq!(started.elapsed(), Duration::from_secs(5));
    assert!(r == "a" || r == "b");
}

#[tokio::test(start_paused = true)]
async fn update_keeps_the_circuit_and_removal_drops_it() {
    let (set, handle) = ChannelSet::new();
    let mut balance = Builder::new(RoundRobin::new())
        .endpoint_breaker(breaker(1, 1, 1))
        .build_weighted(set)
        .unwrap();
    let a = ep("a");
    a.fail(true);
    handle.insert("a", a.clone(), 1).unwrap();
    handle.insert("b", ep("b"), 1).unwrap();
    run(&mut balance, 2).await;
    let circuit = balance.endpoint_breaker(&"a").unwrap();
    assert_eq!(circuit.state(), CircuitState::Open);

    // An update of `a` (new service, new weight) keeps its open circuit.
    let a2 = ep("a");
    handle.insert("a", a2.clone(), 3).unwrap();
    let out = run(&mut balance, 6).await;
    assert!(out.iter().all(|r| r == &Ok("b")));
    assert_eq!(a2.calls(), 0);
    assert_eq!(
        balance
            .endpoint_breaker(&"a")
            .unwrap()
            .metrics()
            .total_trips,
        1
    );

    // Removal drops it; a new insert of the key starts closed.
    handle.remove("a").unwrap();
    run(&mut balance, 1).await;
    assert!(balance.endpoint_breaker(&"a").is_none());
    handle.insert("a", a2.clone(), 1).unwrap();
    run(&mut balance, 4).await;
    assert_eq!(
        balance.endpoint_breaker(&"a").unwrap().state(),
        CircuitState::Closed
    );
    assert!(a2.calls() > 0);
}

#[tokio::test(start_paused = true)]
async fn ejections_and_open_breakers_together_stay_within_max_ejection_percent() {
    let names = ["e0", "e1", "e2", "e3", "e4", "e5", "e6", "e7", "e8", "e9"];
    let eps: Vec<Ep> = names.iter().map(|&n| ep(n)).collect();
    let list = FixedList::unweighted(names.iter().copied().zip(eps.iter().cloned()));
    // Breakers that never trip on their own; ejection after two failures in a row.
    let never = BreakerConfig::builder()
        .clock(Clock::tokio())
        .consecutive_failures(1_000)
        .without_error_percentage()
        .build()
        .unwrap();
    let detection = OutlierDetection::builder()
        .consecutive_failures(2)
        .max_ejection_percent(30)
        .base_ejection_time(Duration::from_secs(600))
        .max_ejection_time(Duration::from_secs(600))
        .success_rate(false)
        .build()
        .unwrap();
    let mut balance = Builder::new(RoundRobin::new())
        .clock(Clock::tokio())
        .outlier_detection(detection)
        .endpoint_breaker(never)
        .build_weighted(list)
        .unwrap();
    balance.ready().await.unwrap();
    // Two endpoints kept out by their breakers, four failing.
    for n in ["e8", "e9"] {
        balance.endpoint_breaker(&n).unwrap().force_open();
    }
    for e in &eps[..4] {
        e.fail(true);
    }
    for _ in 0..100 {
        let _ = balance.ready().await.unwrap().call(()).await;
        assert!(balance.ejected_len() + 2 <= 3, "cap exceeded");
    }
    assert_eq!(
        balance.ejected_len(),
        1,
        "one ejection fits beside two open breakers"
    );

    // With the breakers released, ejection may use the whole cap, and no more.
    for n in ["e8", "e9"] {
        balance.endpoint_breaker(&n).unwrap().reset();
    }
    for _ in 0..100 {
        let _ = balance.ready().await.unwrap().call(()).await;
        assert!(balance.ejected_len() <= 3);
    }
    assert_eq!(balance.ejected_len(), 3);
}

#[test]
fn balancer_with_endpoint_breakers_and_its_futures_are_send() {
    fn send<T: Send>(_: &T) {}
    fn send_static<T: Send + 'static>(_: &T) {}
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _entered = rt.enter();
    let list = FixedList::unweighted([("a", ep("a"))]);
    let mut balance = Builder::new(LeastConnections::seeded(1))
        .endpoint_breaker(breaker(3, 1, 1))
        .build_weighted(list)
        .unwrap();
    send(&balance);
    let fut = balance.call(());
    send_static(&fut);
}
