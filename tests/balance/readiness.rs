//! Readiness, removal, the no-endpoint deadline and index safety of `Balance`.

use std::collections::HashSet;
use std::future::{ready, Ready};
use std::hash::Hash;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::task::AtomicWaker;
use palisade::balance::{Balance, Builder, Candidates, Picker, RoundRobin, WeightedRoundRobin};
use palisade::discover::{ChannelSet, FixedList};
use palisade::error::NoEndpoints;
use palisade::BoxError;
use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio_test::task;
use tower::{Layer, Service, ServiceExt};

/// A switch in front of an endpoint: closed means `poll_ready` is pending, failed means
/// `poll_ready` errors.
#[derive(Clone, Default)]
struct Gate(Arc<GateState>);

#[derive(Default)]
struct GateState {
    closed: AtomicBool,
    failed: AtomicBool,
    waker: AtomicWaker,
    polls: AtomicUsize,
}

impl Gate {
    fn closed() -> Self {
        let g = Gate::default();
        g.0.closed.store(true, Ordering::SeqCst);
        g
    }
    fn open(&self) {
        self.0.closed.store(false, Ordering::SeqCst);
        self.0.waker.wake();
    }
    fn close(&self) {
        self.0.closed.store(true, Ordering::SeqCst);
    }
    fn fail(&self) {
        self.0.failed.store(true, Ordering::SeqCst);
        self.0.waker.wake();
    }
    fn polls(&self) -> usize {
        self.0.polls.load(Ordering::SeqCst)
    }
}

struct Gated {
    name: &'static str,
    gate: Gate,
}

fn gated(name: &'static str, gate: &Gate) -> Gated {
    Gated {
        name,
        gate: gate.clone(),
    }
}

impl Service<u64> for Gated {
    type Response = &'static str;
    type Error = io::Error;
    type Future = Ready<Result<&'static str, io::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        let g = &self.gate.0;
        g.polls.fetch_add(1, Ordering::SeqCst);
        if g.failed.load(Ordering::SeqCst) {
            return Poll::Ready(Err(io::Error::other("broken")));
        }
        if !g.closed.load(Ordering::SeqCst) {
            return Poll::Ready(Ok(()));
        }
        g.waker.register(cx.waker());
        if g.closed.load(Ordering::SeqCst) {
            Poll::Pending
        } else {
            Poll::Ready(Ok(()))
        }
    }

    fn call(&mut self, _: u64) -> Self::Future {
        ready(Ok(self.name))
    }
}

async fn send<S>(svc: &mut S) -> Result<&'static str, BoxError>
where
    S: Service<u64, Response = &'static str, Error = BoxError>,
{
    svc.ready().await?.call(0).await
}

#[tokio::test]
async fn pending_endpoint_is_skipped_until_it_wakes() {
    let (a, b) = (Gate::closed(), Gate::default());
    let list = FixedList::unweighted([("a", gated("a", &a)), ("b", gated("b", &b))]);
    let mut bal = Balance::new(list, RoundRobin::new());
    for _ in 0..5 {
        assert_eq!(send(&mut bal).await.unwrap(), "b");
    }
    let polls_while_pending = a.polls();
    assert_eq!(
        polls_while_pending, 1,
        "a pending endpoint is not re-polled per request"
    );
    a.open();
    let mut seen = HashSet::new();
    for _ in 0..4 {
        seen.insert(send(&mut bal).await.unwrap());
    }
    assert_eq!(seen, HashSet::from(["a", "b"]));
}

#[tokio::test]
async fn waiting_balancer_wakes_when_an_endpoint_becomes_ready() {
    let a = Gate::closed();
    let list = FixedList::unweighted([("a", gated("a", &a))]);
    let mut bal = Balance::new(list, RoundRobin::new());
    {
        let mut waiting = task::spawn(bal.ready());
        assert!(waiting.poll().is_pending());
        assert!(!waiting.is_woken());
        a.open();
        assert!(
            waiting.is_woken(),
            "the endpoint's wake reaches the waiting caller"
        );
        assert!(waiting.poll().is_ready());
    }
    assert_eq!(bal.call(0).await.unwrap(), "a");
}

#[tokio::test(start_paused = true)]
async fn no_ready_endpoint_fails_with_no_endpoints_at_the_deadline() {
    let (a, b) = (Gate::closed(), Gate::closed());
    let list = FixedList::unweighted([("a", gated("a", &a)), ("b", gated("b", &b))]);
    let mut bal = Builder::new(RoundRobin::new())
        .no_endpoint_deadline(Duration::from_secs(2))
        .build(list)
        .unwrap();
    let start = tokio::time::Instant::now();
    let err = send(&mut bal).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    let e = err
        .downcast_ref::<NoEndpoints>()
        .expect("typed NoEndpoints");
    assert_eq!(e.known(), 2);
    // The next request waits afresh, and is served once an endpoint opens.
    let mut next = task::spawn(bal.ready());
    assert!(next.poll().is_pending());
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(next.poll().is_pending());
    b.open();
    assert!(next.is_woken());
    assert!(next.poll().is_ready());
    drop(next);
    assert_eq!(bal.call(0).await.unwrap(), "b");
}

#[tokio::test(start_paused = true)]
async fn empty_set_fails_after_the_deadline_instead_of_hanging() {
    let (set, _handle) = ChannelSet::<&str, Gated>::new();
    let mut bal = Builder::new(RoundRobin::new())
        .no_endpoint_deadline(Duration::from_millis(500))
        .build_weighted(set)
        .unwrap();
    let err = send(&mut bal).await.unwrap_err();
    assert_eq!(
        err.downcast_ref::<NoEndpoints>(),
        Some(&NoEndpoints::new(0))
    );
}

#[tokio::test(start_paused = true)]
async fn zero_deadline_fails_at_once() {
    let a = Gate::closed();
    let list = FixedList::unweighted([("a", gated("a", &a))]);
    let mut bal = Builder::new(RoundRobin::new())
        .no_endpoint_deadline(Duration::ZERO)
        .build(list)
        .unwrap();
    let start = tokio::time::Instant::now();
    assert!(send(&mut bal).await.unwrap_err().is::<NoEndpoints>());
    assert_eq!(start.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn endpoint_inserted_while_waiting_serves_the_waiting_request() {
    let (set, handle) = ChannelSet::new();
    let mut bal = Builder::new(RoundRobin::new())
        .no_endpoint_deadline(Duration::from_secs(5))
        .build_weighted(set)
        .unwrap();
    let mut waiting = task::spawn(bal.ready());
    assert!(waiting.poll().is_pending());
    handle
        .insert("late", gated("late", &Gate::default()), 1)
        .unwrap();
    assert!(waiting.is_woken());
    assert!(waiting.poll().is_ready());
    drop(waiting);
    assert_eq!(bal.call(0).await.unwrap(), "late");
}

#[tokio::test]
async fn call_without_poll_ready_fails_instead_of_panicking() {
    let list = FixedList::unweighted([("a", gated("a", &Gate::default()))]);
    let mut bal = Balance::new(list, RoundRobin::new());
    let err = bal.call(0).await.unwrap_err();
    assert!(err.is::<NoEndpoints>());
    // One poll_ready allows exactly one call.
    bal.ready().await.unwrap();
    assert!(bal.call(0).await.is_ok());
    assert!(bal.call(0).await.unwrap_err().is::<NoEndpoints>());
}

#[tokio::test]
async fn endpoint_whose_poll_ready_errors_is_removed_and_counted() {
    let (a, b) = (Gate::default(), Gate::default());
    let list = FixedList::unweighted([("a", gated("a", &a)), ("b", gated("b", &b))]);
    let mut bal = Balance::new(list, RoundRobin::new());
    assert_eq!(send(&mut bal).await.unwrap(), "a");
    a.fail();
    for _ in 0..4 {
        assert_eq!(send(&mut bal).await.unwrap(), "b");
    }
    assert_eq!(bal.removed_on_error(), 1);
    assert_eq!(bal.len(), 1);
}

#[tokio::test]
async fn request_in_flight_on_a_removed_endpoint_finishes_normally() {
    let (tx, rx) = tokio::sync::oneshot::channel::<&'static str>();
    let rx = Arc::new(Mutex::new(Some(rx)));
    let slow = tower::service_fn(move |_: u64| {
        let rx = rx.lock().take();
        async move {
            match rx {
                Some(rx) => rx.await.map_err(|_| io::Error::other("dropped")),
                None => Ok("slow again"),
            }
        }
    });
    let (set, handle) = ChannelSet::new();
    handle.insert("slow", slow, 1).unwrap();
    let mut bal = Balance::new_weighted_for_test(set);
    let fut = bal.ready().await.unwrap().call(0);
    assert_eq!(bal.in_flight(), 1);
    handle.remove("slow").unwrap();
    let mut waiting = task::spawn(bal.ready());
    assert!(waiting.poll().is_pending(), "nothing left to send to");
    drop(waiting);
    assert_eq!(bal.len(), 0);
    tx.send("done").unwrap();
    assert_eq!(fut.await.unwrap(), "done");
}

/// Shorthand for a weighted round-robin balancer with defaults.
trait NewWeighted<D> {
    fn new_weighted_for_test(d: D) -> Self;
}

impl<D, S> NewWeighted<D> for Balance<D, WeightedRoundRobin>
where
    D: tower::discover::Discover<Service = palisade::discover::Weighted<S>>,
    D::Key: Hash + Eq,
{
    fn new_weighted_for_test(d: D) -> Self {
        Builder::new(WeightedRoundRobin::new())
            .build_weighted(d)
            .unwrap()
    }
}

fn key_hash<K: Hash>(k: &K) -> u64 {
    palisade::balance::stable_hash(k)
}

/// Records the key hash of each endpoint it picks, then delegates.
struct Recording<P> {
    inner: P,
    picked: Arc<Mutex<Vec<u64>>>,
}

impl<P: Picker> Picker for Recording<P> {
    fn pick(&mut self, c: &Candidates<'_>, key: Option<u64>) -> usize {
        let pos = self.inner.pick(c, key);
        self.picked.lock().push(c.get(pos).key_hash());
        pos
    }
}

/// Tower #856: a ready index kept across changes to the set sent requests to the wrong
/// endpoint. Here every change is applied between requests, slots are recycled, and a
/// table-based picker keeps ids across changes: every request must reach exactly the
/// endpoint that was picked, and never a removed one.
#[tokio::test]
async fn recycled_slots_never_send_a_request_to_the_wrong_endpoint() {
    let picked = Arc::new(Mutex::new(Vec::new()));
    let served = Arc::new(Mutex::new(Vec::new()));
    let present = Arc::new(Mutex::new(HashSet::new()));
    let (set, handle) = ChannelSet::new();
    let endpoint = |k: u32| {
        let served = served.clone();
        let present = present.clone();
        tower::service_fn(move |_: u64| {
            assert!(
                present.lock().contains(&k),
                "request reached removed endpoint {k}"
            );
            served.lock().push(key_hash(&k));
            ready(Ok::<_, io::Error>(k))
        })
    };
    for k in 0..8u32 {
        present.lock().insert(k);
        handle.insert(k, endpoint(k), 1 + k % 3).unwrap();
    }
    let mut bal = Builder::new(Recording {
        inner: WeightedRoundRobin::new(),
        picked: picked.clone(),
    })
    .build_weighted(set)
    .unwrap();
    let mut rng = SmallRng::seed_from_u64(856);
    let mut next_key = 8u32;
    for _ in 0..2_000 {
        if rng.random_bool(0.2) {
            let live: Vec<u32> = present.lock().iter().copied().collect();
            if live.len() > 1 && rng.random_bool(0.5) {
                let k = live[rng.random_range(0..live.len())];
                present.lock().remove(&k);
                handle.remove(k).unwrap();
            } else {
                present.lock().insert(next_key);
                handle
                    .insert(next_key, endpoint(next_key), rng.random_range(1..4))
                    .unwrap();
                next_key += 1;
            }
        }
        bal.ready().await.unwrap();
        for k in 0..next_key {
            assert_eq!(
                bal.endpoint_id(&k).is_some(),
                present.lock().contains(&k),
                "key {k} membership"
            );
        }
        bal.call(0).await.unwrap();
    }
    assert_eq!(*picked.lock(), *served.lock());
    assert_eq!(bal.in_flight(), 0);
}

#[tokio::test]
async fn stale_endpoint_id_does_not_resolve_after_its_slot_is_reused() {
    /// Remembers the first endpoint it saw and reports whether that id still resolves.
    struct Sticky {
        first: Option<palisade::balance::EndpointId>,
        resolved: Arc<Mutex<Vec<bool>>>,
    }
    impl Picker for Sticky {
        fn pick(&mut self, c: &Candidates<'_>, _: Option<u64>) -> usize {
            let id = *self.first.get_or_insert(c.get(0).id());
            self.resolved.lock().push(c.position(id).is_some());
            0
        }
    }
    let resolved = Arc::new(Mutex::new(Vec::new()));
    let (set, handle) = ChannelSet::new();
    handle
        .insert("old", gated("old", &Gate::default()), 1)
        .unwrap();
    let mut bal = Builder::new(Sticky {
        first: None,
        resolved: resolved.clone(),
    })
    .build_weighted(set)
    .unwrap();
    assert_eq!(send(&mut bal).await.unwrap(), "old");
    let old = bal.endpoint_id(&"old").unwrap();
    handle.remove("old").unwrap();
    handle
        .insert("new", gated("new", &Gate::default()), 1)
        .unwrap();
    assert_eq!(send(&mut bal).await.unwrap(), "new");
    let new = bal.endpoint_id(&"new").unwrap();
    assert_eq!(new.slot(), old.slot(), "the slot was recycled");
    assert_ne!(new, old);
    assert_eq!(*resolved.lock(), vec![true, false]);
}

#[tokio::test]
async fn discovery_error_is_returned_from_poll_ready() {
    let changes = futures::stream::iter(vec![
        Ok(tower::discover::Change::Insert(
            "a",
            gated("a", &Gate::default()),
        )),
        Err(io::Error::other("registry down")),
    ]);
    let mut bal = Balance::new(changes, RoundRobin::new());
    let err = bal.ready().await.unwrap_err();
    assert_eq!(err.to_string(), "registry down");
}

#[tokio::test]
async fn layer_and_make_service_forms_build_working_balancers() {
    let layer = Builder::new(RoundRobin::new()).into_layer().unwrap();
    let list = FixedList::unweighted([("a", gated("a", &Gate::default()))]);
    let mut bal = layer.clone().layer(list);
    assert_eq!(send(&mut bal).await.unwrap(), "a");

    let weighted = layer.clone().weighted();
    let list = FixedList::builder()
        .endpoint("w", gated("w", &Gate::default()), 4)
        .build()
        .unwrap();
    let mut bal = weighted.layer(list);
    assert_eq!(send(&mut bal).await.unwrap(), "w");

    let make = tower::service_fn(|name: &'static str| async move {
        Ok::<_, io::Error>(FixedList::unweighted([(
            name,
            gated(name, &Gate::default()),
        )]))
    });
    let mut make_balance = layer.clone().make(make);
    let mut bal = make_balance.ready().await.unwrap().call("m").await.unwrap();
    assert_eq!(send(&mut bal).await.unwrap(), "m");

    let mut via_layer = layer.into_make_layer().layer(make);
    let mut bal = via_layer.ready().await.unwrap().call("n").await.unwrap();
    assert_eq!(send(&mut bal).await.unwrap(), "n");
}

#[test]
fn builder_rejects_zero_latency_decay() {
    let err = Builder::new(RoundRobin::new())
        .latency_decay(Duration::ZERO)
        .build(FixedList::<&str, Gated>::unweighted([]))
        .unwrap_err();
    assert_eq!(err.field(), "latency_decay");
}

#[tokio::test]
async fn futures_are_send_and_static() {
    fn assert_send_static<T: Send + 'static>(_: &T) {}
    let list = FixedList::unweighted([("a", gated("a", &Gate::default()))]);
    let mut bal = Balance::new(list, RoundRobin::new());
    assert_send_static(&bal);
    let fut = bal.ready().await.unwrap().call(0);
    assert_send_static(&fut);
    let _ = Gate::close;
    fut.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn enormous_durations_do_not_overflow() {
    let a = Gate::closed();
    let list = FixedList::unweighted([("a", gated("a", &a))]);
    let detection = palisade::balance::OutlierDetection::builder()
        .interval(Duration::MAX)
        .base_ejection_time(Duration::MAX)
        .max_ejection_time(Duration::MAX)
        .build()
        .unwrap();
    let slow_start = palisade::balance::SlowStart::builder()
        .window(Duration::MAX)
        .build()
        .unwrap();
    let mut bal = Builder::new(RoundRobin::new())
        .no_endpoint_deadline(Duration::MAX)
        .latency_decay(Duration::MAX)
        .outlier_detection(detection)
        .slow_start(slow_start)
        .build(list)
        .unwrap();
    let mut waiting = task::spawn(bal.ready());
    assert!(waiting.poll().is_pending());
    a.open();
    assert!(waiting.poll().is_ready());
}

#[tokio::test]
async fn weighted_random_keeps_proportions_among_the_ready_endpoints() {
    let (a, b, c) = (Gate::default(), Gate::default(), Gate::closed());
    let list = FixedList::builder()
        .endpoint("a", gated("a", &a), 1)
        .endpoint("b", gated("b", &b), 2)
        .endpoint("c", gated("c", &c), 7)
        .build()
        .unwrap();
    let mut bal = Builder::new(palisade::balance::Random::seeded(21).weighted())
        .build_weighted(list)
        .unwrap();
    let n = 30_000;
    let mut to_b = 0;
    for _ in 0..n {
        match send(&mut bal).await.unwrap() {
            "b" => to_b += 1,
            "a" => {}
            other => panic!("{other} is not ready"),
        }
    }
    let share = to_b as f64 / n as f64;
    assert!((share - 2.0 / 3.0).abs() < 0.015, "b took {share}");
}

#[tokio::test]
async fn consistent_hash_falls_through_to_the_next_member_while_the_owner_is_pending() {
    let gates: Vec<Gate> = (0..5).map(|_| Gate::default()).collect();
    const NAMES: [&str; 5] = ["a", "b", "c", "d", "e"];
    let list = FixedList::unweighted((0..5).map(|i| (NAMES[i], gated(NAMES[i], &gates[i]))));
    let mut bal = Builder::new(palisade::balance::ConsistentHash::new())
        .hash_key(|k: &u64| *k)
        .build(list)
        .unwrap();
    let mut owner = Vec::new();
    for k in 0..500u64 {
        owner.push(bal.ready().await.unwrap().call(k).await.unwrap());
    }
    gates[0].close();
    // "a" is re-polled (and found pending) after its next call; then its keys move.
    let mut moved = 0;
    for k in 0..500u64 {
        let got = bal.ready().await.unwrap().call(k).await.unwrap();
        if owner[k as usize] == "a" && got != "a" {
            moved += 1;
        }
        if owner[k as usize] != "a" {
            assert_eq!(got, owner[k as usize], "only the pending owner's keys move");
        }
    }
    assert!(moved > 0);
    gates[0].open();
    for k in 0..500u64 {
        let got = bal.ready().await.unwrap().call(k).await.unwrap();
        assert_eq!(got, owner[k as usize], "key {k} returns to its owner");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffered_balance_serves_concurrent_callers() {
    let list = FixedList::unweighted([
        ("a", gated("a", &Gate::default())),
        ("b", gated("b", &Gate::default())),
    ]);
    let balance = Balance::new(list, RoundRobin::new());
    let buffer = tower::buffer::Buffer::new(balance, 64);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let mut svc = buffer.clone();
        tasks.push(tokio::spawn(async move {
            let mut seen = HashSet::new();
            for _ in 0..50 {
                seen.insert(svc.ready().await.unwrap().call(0).await.unwrap());
            }
            seen
        }));
    }
    let mut all = HashSet::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    assert_eq!(all, HashSet::from(["a", "b"]));
}
