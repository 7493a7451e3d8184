//! Distribution of every built-in picker, through a real `Balance`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::{pending, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use palisade::balance::{
    Balance, Builder, Candidates, ConsistentHash, LeastConnections, LoadIndex, Picker,
    PowerOfTwoChoices, Random, RoundRobin, WeightedRoundRobin,
};
use palisade::discover::{ChannelSet, FixedList};
use palisade::BoxError;
use parking_lot::Mutex;
use tower::{Service, ServiceExt};

type Reply = Pin<Box<dyn Future<Output = Result<&'static str, Infallible>> + Send>>;

/// An endpoint that answers with its name, or (stuck) never answers so that its
/// requests stay in flight.
#[derive(Clone)]
struct Ep {
    name: &'static str,
    stuck: bool,
}

impl Service<u64> for Ep {
    type Response = &'static str;
    type Error = Infallible;
    type Future = Reply;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: u64) -> Reply {
        if self.stuck {
            Box::pin(pending())
        } else {
            let name = self.name;
            Box::pin(async move { Ok(name) })
        }
    }
}

fn named(name: &'static str) -> Ep {
    Ep { name, stuck: false }
}

fn stuck(name: &'static str) -> Ep {
    Ep { name, stuck: true }
}

async fn send<S>(svc: &mut S, req: u64) -> &'static str
where
    S: Service<u64, Response = &'static str, Error = BoxError>,
{
    svc.ready().await.unwrap().call(req).await.unwrap()
}

async fn picks<S>(svc: &mut S, n: usize) -> Vec<&'static str>
where
    S: Service<u64, Response = &'static str, Error = BoxError>,
{
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        out.push(send(svc, i as u64).await);
    }
    out
}

fn counts(picks: &[&'static str]) -> HashMap<&'static str, usize> {
    let mut m = HashMap::new();
    for p in picks {
        *m.entry(*p).or_default() += 1;
    }
    m
}

#[tokio::test]
async fn round_robin_visits_endpoints_in_order() {
    let list = FixedList::unweighted([("a", named("a")), ("b", named("b")), ("c", named("c"))]);
    let mut b = Balance::new(list, RoundRobin::new());
    assert_eq!(picks(&mut b, 7).await, ["a", "b", "c", "a", "b", "c", "a"]);
}

#[tokio::test]
async fn weighted_round_robin_five_one_one_every_seven_picks() {
    let list = FixedList::builder()
        .endpoint("a", named("a"), 5)
        .endpoint("b", named("b"), 1)
        .endpoint("c", named("c"), 1)
        .build()
        .unwrap();
    let mut b = Builder::new(WeightedRoundRobin::new())
        .build_weighted(list)
        .unwrap();
    let seq = picks(&mut b, 70).await;
    assert_eq!(&seq[..7], ["a", "a", "a", "b", "c", "a", "a"]);
    for window in seq.windows(7) {
        let c = counts(window);
        assert_eq!((c["a"], c["b"], c["c"]), (5, 1, 1), "window {window:?}");
    }
}

#[tokio::test]
async fn weighted_round_robin_follows_a_weight_change_at_runtime() {
    let (set, handle) = ChannelSet::new();
    handle.insert("a", named("a"), 3).unwrap();
    handle.insert("b", named("b"), 1).unwrap();
    let mut b = Builder::new(WeightedRoundRobin::new())
        .build_weighted(set)
        .unwrap();
    let c = counts(&picks(&mut b, 40).await);
    assert_eq!((c["a"], c["b"]), (30, 10));
    // Update: the same key with a new weight.
    handle.insert("b", named("b"), 9).unwrap();
    let seq = picks(&mut b, 40).await;
    for window in seq.windows(4) {
        let c = counts(window);
        assert_eq!((c["a"], c["b"]), (1, 3), "window {window:?}");
    }
}

#[tokio::test]
async fn weighted_random_matches_weights_within_bounds() {
    let list = FixedList::builder()
        .endpoint("a", named("a"), 1)
        .endpoint("b", named("b"), 2)
        .endpoint("c", named("c"), 7)
        .build()
        .unwrap();
    let mut b = Builder::new(Random::seeded(7).weighted())
        .build_weighted(list)
        .unwrap();
    let n = 50_000;
    let c = counts(&picks(&mut b, n).await);
    for (name, share) in [("a", 0.1), ("b", 0.2), ("c", 0.7)] {
        let got = c[name] as f64 / n as f64;
        assert!((got - share).abs() < 0.01, "{name}: {got} vs {share}");
    }
}

#[tokio::test]
async fn uniform_random_spreads_evenly_within_bounds() {
    let names = ["a", "b", "c", "d", "e"];
    let list = FixedList::unweighted(names.iter().map(|&n| (n, named(n))));
    let mut b = Balance::new(list, Random::seeded(11));
    let n = 50_000;
    let c = counts(&picks(&mut b, n).await);
    for name in names {
        let got = c[name] as f64 / n as f64;
        assert!((got - 0.2).abs() < 0.01, "{name}: {got}");
    }
}

#[tokio::test]
async fn p2c_spreads_evenly_when_loads_are_equal() {
    let names = ["a", "b", "c", "d"];
    let list = FixedList::unweighted(names.iter().map(|&n| (n, named(n))));
    let mut b = Balance::new(list, PowerOfTwoChoices::seeded(3));
    let n = 40_000;
    let c = counts(&picks(&mut b, n).await);
    for name in names {
        let got = c[name] as f64 / n as f64;
        assert!((got - 0.25).abs() < 0.015, "{name}: {got}");
    }
}

#[tokio::test]
async fn p2c_avoids_the_endpoint_with_requests_in_flight() {
    let list = FixedList::unweighted([
        ("slow", stuck("slow")),
        ("a", named("a")),
        ("b", named("b")),
        ("c", named("c")),
    ]);
    let mut b = Balance::new(list, PowerOfTwoChoices::seeded(5));
    let mut held = Vec::new();
    let mut done = HashMap::<&str, usize>::new();
    for i in 0..3_000u64 {
        let mut fut = b.ready().await.unwrap().call(i);
        match futures::poll!(&mut fut) {
            Poll::Ready(r) => *done.entry(r.unwrap()).or_default() += 1,
            // Only "slow" never answers: keep its request in flight.
            Poll::Pending => held.push(fut),
        }
    }
    // Once "slow" has a request in flight it loses every comparison, as the two choices
    // are always distinct endpoints.
    assert_eq!(held.len(), 1, "slow took more than its first request");
    assert_eq!(b.in_flight(), 1);
    let total: usize = done.values().sum();
    for name in ["a", "b", "c"] {
        let got = done[name] as f64 / total as f64;
        assert!((got - 1.0 / 3.0).abs() < 0.05, "{name}: {got}");
    }
    drop(held);
    assert_eq!(b.in_flight(), 0, "dropped futures release their count");
}

#[tokio::test]
async fn least_connections_fills_endpoints_evenly() {
    fills_evenly(Spread::new(LeastConnections::seeded(1))).await;
}

#[tokio::test]
async fn least_connections_without_its_load_index_scans_and_fills_evenly() {
    fills_evenly(Spread::new(LeastConnections::seeded(1)).without_index()).await;
}

async fn fills_evenly(picker: Spread<LeastConnections>) {
    let list = FixedList::unweighted([("a", stuck("a")), ("b", stuck("b")), ("c", stuck("c"))]);
    let mut b = Balance::new(list, picker);
    let mut held = Vec::new();
    for i in 0..31 {
        held.push(b.ready().await.unwrap().call(i));
    }
    let seen = b.picker().seen.lock().clone();
    for (i, loads) in seen.iter().enumerate() {
        let (min, max) = (loads.iter().min().unwrap(), loads.iter().max().unwrap());
        assert!(max - min <= 1, "pick {i} saw {loads:?}");
        if i % 3 == 0 {
            assert_eq!(loads, &vec![i / 3; 3], "level before pick {i}");
        }
    }
    drop(held);
    assert_eq!(b.in_flight(), 0);
}

/// Wraps a picker and records the in-flight counts it was shown at each pick.
/// Forwards `load_index` unless built `without_index`.
struct Spread<P> {
    inner: P,
    seen: Mutex<Vec<Vec<usize>>>,
    index: bool,
}

impl<P> Spread<P> {
    fn new(inner: P) -> Self {
        Self {
            inner,
            seen: Mutex::default(),
            index: true,
        }
    }

    fn without_index(mut self) -> Self {
        self.index = false;
        self
    }
}

impl<P: Picker> Picker for Spread<P> {
    fn pick(&mut self, c: &Candidates<'_>, key: Option<u64>) -> usize {
        self.seen
            .lock()
            .push(c.iter().map(|e| e.in_flight()).collect());
        self.inner.pick(c, key)
    }

    fn load_index(&mut self) -> Option<LoadIndex> {
        self.index.then(|| self.inner.load_index()).flatten()
    }
}

#[tokio::test]
async fn weighted_least_connections_gives_concurrency_in_proportion_to_weight() {
    weighted_proportion(Recorder::new(LeastConnections::seeded(2).weighted())).await;
}

#[tokio::test]
async fn weighted_least_connections_without_its_load_index_gives_the_same_proportion() {
    weighted_proportion(Recorder::new(LeastConnections::seeded(2).weighted()).without_index())
        .await;
}

async fn weighted_proportion(picker: Recorder<LeastConnections>) {
    let list = FixedList::builder()
        .endpoint("a", stuck("a"), 1)
        .endpoint("b", stuck("b"), 3)
        .build()
        .unwrap();
    let mut b = Builder::new(picker).build_weighted(list).unwrap();
    let mut held = Vec::new();
    for i in 0..40 {
        held.push(b.ready().await.unwrap().call(i));
    }
    let log = b.picker().log.lock().clone();
    let to_b = log.iter().filter(|&&w| w == 3).count();
    assert_eq!(to_b, 30, "weight 3 takes three quarters of the concurrency");
}

/// Wraps a picker and records the weight of every endpoint it picked.
/// Forwards `load_index` unless built `without_index`.
struct Recorder<P> {
    inner: P,
    log: Arc<Mutex<Vec<u32>>>,
    index: bool,
}

impl<P> Recorder<P> {
    fn new(inner: P) -> Self {
        Self {
            inner,
            log: Arc::default(),
            index: true,
        }
    }

    fn without_index(mut self) -> Self {
        self.index = false;
        self
    }
}

impl<P: Picker> Picker for Recorder<P> {
    fn pick(&mut self, c: &Candidates<'_>, key: Option<u64>) -> usize {
        let pos = self.inner.pick(c, key);
        self.log.lock().push(c.get(pos).weight());
        pos
    }

    fn load_index(&mut self) -> Option<LoadIndex> {
        self.index.then(|| self.inner.load_index()).flatten()
    }
}

#[tokio::test]
async fn consistent_hash_moves_about_one_nth_of_keys_on_join_and_restores_on_leave() {
    const NAMES: [&str; 11] = [
        "e0", "e1", "e2", "e3", "e4", "e5", "e6", "e7", "e8", "e9", "e10",
    ];
    let (set, handle) = ChannelSet::new();
    for &n in &NAMES[..10] {
        handle.insert(n, named(n), 1).unwrap();
    }
    let mut b = Builder::new(ConsistentHash::new())
        .hash_key(|k: &u64| *k)
        .build_weighted(set)
        .unwrap();
    let keys = 10_000u64;
    let mut before = Vec::new();
    for k in 0..keys {
        before.push(send(&mut b, k).await);
    }
    // The same key keeps its endpoint.
    for k in 0..100 {
        assert_eq!(send(&mut b, k).await, before[k as usize]);
    }
    // Every endpoint owns a fair share.
    let c = counts(&before);
    for &n in &NAMES[..10] {
        assert!((600..=1_400).contains(&c[n]), "{n} owns {}", c[n]);
    }
    handle.insert("e10", named("e10"), 1).unwrap();
    let mut moved = 0;
    let mut after = Vec::new();
    for k in 0..keys {
        let e = send(&mut b, k).await;
        if e != before[k as usize] {
            moved += 1;
            assert_eq!(e, "e10", "a key only moves to the endpoint that joined");
        }
        after.push(e);
    }
    let ideal = keys as f64 / 11.0;
    assert!(
        (moved as f64) < ideal * 1.5 && (moved as f64) > ideal * 0.5,
        "moved {moved}, ideal {ideal}"
    );
    handle.remove("e10").unwrap();
    for k in 0..keys {
        assert_eq!(send(&mut b, k).await, before[k as usize], "key {k} returns");
    }
}

#[tokio::test]
async fn consistent_hash_agrees_between_balancers_over_the_same_keys() {
    let mk = || {
        let list = FixedList::unweighted(["x", "y", "z"].map(|n| (n, named(n))));
        Builder::new(ConsistentHash::with_replicas(50))
            .hash_key(|k: &u64| *k)
            .build(list)
            .unwrap()
    };
    let (mut b1, mut b2) = (mk(), mk());
    for k in 0..500 {
        assert_eq!(
            send(&mut b1, k).await.to_string(),
            send(&mut b2, k).await.to_string()
        );
    }
}

/// Which endpoint each key goes to is fixed by palisade's stable hash (XXH3 of the
/// discovery key), not by the toolchain: clients built apart agree. Pinned for five
/// endpoints keyed by name and request keys 0..24 (each key is itself a `u64`, placed by
/// the fixed `mix64` finaliser).
#[tokio::test]
async fn consistent_hash_sends_fixed_keys_to_fixed_endpoints_in_every_build() {
    let list = FixedList::unweighted(["m1", "m2", "m3", "m4", "m5"].map(|n| (n, named(n))));
    let mut b = Builder::new(ConsistentHash::new())
        .hash_key(|k: &u64| *k)
        .build(list)
        .unwrap();
    let mut got = Vec::new();
    for k in 0..24 {
        got.push(send(&mut b, k).await);
    }
    assert_eq!(got, GOLDEN_RING_PICKS);
}

const GOLDEN_RING_PICKS: [&str; 24] = [
    "m1", "m1", "m2", "m3", "m2", "m3", "m3", "m2", "m1", "m5", "m4", "m3", "m5", "m1", "m5", "m4",
    "m1", "m3", "m3", "m5", "m1", "m5", "m4", "m4",
];

#[tokio::test]
async fn custom_picker_sees_ready_endpoints_with_weights() {
    struct Heaviest;
    impl Picker for Heaviest {
        fn pick(&mut self, c: &Candidates<'_>, _: Option<u64>) -> usize {
            (0..c.len()).max_by_key(|&i| c.get(i).weight()).unwrap()
        }
    }
    let list = FixedList::builder()
        .endpoint("light", named("light"), 1)
        .endpoint("heavy", named("heavy"), 9)
        .build()
        .unwrap();
    let mut b = Builder::new(Heaviest).build_weighted(list).unwrap();
    assert_eq!(picks(&mut b, 5).await, ["heavy"; 5]);
}

#[tokio::test]
async fn out_of_range_pick_is_reduced_not_trusted() {
    struct Wild;
    impl Picker for Wild {
        fn pick(&mut self, c: &Candidates<'_>, _: Option<u64>) -> usize {
            c.len() + 1
        }
    }
    let list = FixedList::unweighted([("a", named("a")), ("b", named("b"))]);
    let mut b = Balance::new(list, Wild);
    assert_eq!(send(&mut b, 0).await, "b");
}

/// An endpoint that answers after a fixed delay (on tokio's clock).
#[derive(Clone)]
struct Delayed {
    name: &'static str,
    delay: std::time::Duration,
}

impl Service<u64> for Delayed {
    type Response = &'static str;
    type Error = Infallible;
    type Future = Reply;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: u64) -> Reply {
        let (name, delay) = (self.name, self.delay);
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            Ok(name)
        })
    }
}

#[tokio::test(start_paused = true)]
async fn p2c_peak_ewma_prefers_the_faster_endpoint() {
    use std::time::Duration;
    let ms = Duration::from_millis;
    let list = FixedList::unweighted([
        (
            "fast",
            Delayed {
                name: "fast",
                delay: ms(10),
            },
        ),
        (
            "slow",
            Delayed {
                name: "slow",
                delay: ms(200),
            },
        ),
    ]);
    let mut b = Builder::new(PowerOfTwoChoices::seeded(8).peak_ewma(ms(50)))
        .clock(palisade::clock::Clock::tokio())
        .build(list)
        .unwrap();
    let c = counts(&picks(&mut b, 200).await);
    let slow = c.get("slow").copied().unwrap_or(0);
    assert!(slow <= 2, "slow took {slow}");
    assert_eq!(c["fast"] + slow, 200);
}

#[tokio::test]
async fn least_connections_sends_to_the_endpoint_whose_requests_completed() {
    // 100 endpoints whose requests stay in flight until dropped: after every endpoint
    // holds two, dropping a request makes its endpoint the only least-loaded one, and
    // the next pick must go to it.
    let names: Vec<&'static str> = (0..100)
        .map(|i| &*Box::leak(format!("e{i}").into_boxed_str()))
        .collect();
    let list = FixedList::unweighted(names.iter().map(|&n| (n, stuck(n))));
    let mut b = Balance::new(list, Spread::new(LeastConnections::seeded(9)));
    let mut held = Vec::new();
    for i in 0..200 {
        held.push(b.ready().await.unwrap().call(i));
    }
    for loads in b.picker().seen.lock().iter() {
        let (min, max) = (loads.iter().min().unwrap(), loads.iter().max().unwrap());
        assert!(max - min <= 1, "uneven: {min}..{max}");
    }
    // Drop one request: exactly one endpoint is at 1, and the next pick must go there.
    drop(held.remove(0));
    b.ready().await.unwrap();
    assert_eq!(b.in_flight(), 199);
    let first = b.picker().seen.lock().len();
    held.push(b.call(500));
    let seen = b.picker().seen.lock()[first].clone();
    assert_eq!(seen.iter().filter(|&&l| l == 1).count(), 1, "{seen:?}");
    // The pick levelled it: everyone is at two again.
    b.ready().await.unwrap();
    let level = b.picker().seen.lock().len();
    held.push(b.call(501));
    let seen = b.picker().seen.lock()[level].clone();
    assert!(seen.iter().all(|&l| l == 2), "{seen:?}");
}

/// Checks, at every pick after quiescence, that the endpoint the load index offers has
/// the least in flight.
struct ExactAfterQuiet<P> {
    inner: P,
    check: Arc<std::sync::atomic::AtomicBool>,
    checked: Arc<std::sync::atomic::AtomicU32>,
}

impl<P: Picker> Picker for ExactAfterQuiet<P> {
    fn pick(&mut self, c: &Candidates<'_>, key: Option<u64>) -> usize {
        let pos = self.inner.pick(c, key);
        if self.check.load(std::sync::atomic::Ordering::SeqCst) {
            let min = c.iter().map(|e| e.in_flight()).min().unwrap();
            assert_eq!(c.get(pos).in_flight(), min, "not a least-loaded endpoint");
            self.checked
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        pos
    }

    fn load_index(&mut self) -> Option<LoadIndex> {
        self.inner.load_index()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_connections_index_stays_exact_when_requests_complete_on_other_threads() {
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    // Endpoints whose responses finish after a few yields, on whichever worker polls them.
    #[derive(Clone)]
    struct Yielding;
    impl Service<u64> for Yielding {
        type Response = u64;
        type Error = Infallible;
        type Future = Pin<Box<dyn Future<Output = Result<u64, Infallible>> + Send>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, req: u64) -> Self::Future {
            Box::pin(async move {
                for _ in 0..(req % 7) {
                    tokio::task::yield_now().await;
                }
                Ok(req)
            })
        }
    }
    let check = Arc::new(AtomicBool::new(false));
    let checked = Arc::new(AtomicU32::new(0));
    for weighted in [false, true] {
        let lc = LeastConnections::seeded(3);
        let picker = ExactAfterQuiet {
            inner: if weighted { lc.weighted() } else { lc },
            check: check.clone(),
            checked: checked.clone(),
        };
        let list = FixedList::unweighted((0..64u64).map(|i| (i, Yielding)));
        let mut b = Balance::new(list, picker);
        for round in 0..5u64 {
            check.store(false, Ordering::SeqCst);
            let mut tasks = Vec::new();
            for i in 0..2_000u64 {
                let fut = b.ready().await.unwrap().call(round * 10_000 + i);
                tasks.push(tokio::spawn(fut));
            }
            for t in tasks {
                t.await.unwrap().unwrap();
            }
            assert_eq!(b.in_flight(), 0);
            // Quiet: every completion happened before these picks, so the index must
            // offer an endpoint with nothing in flight, then level the load.
            check.store(true, Ordering::SeqCst);
            let mut held = Vec::new();
            for i in 0..128u64 {
                held.push(b.ready().await.unwrap().call(i * 7));
            }
            drop(held);
        }
    }
    assert_eq!(checked.load(Ordering::SeqCst), 2 * 5 * 128);
}

/// Checks the in-flight counts every pick is shown against a model of the requests
/// held, and records which endpoint each pick chose.
struct CountsMatchModel<P> {
    inner: P,
    model: Arc<Mutex<CountModel>>,
}

#[derive(Default)]
struct CountModel {
    checking: bool,
    in_flight: HashMap<palisade::balance::EndpointId, usize>,
    picked: Vec<palisade::balance::EndpointId>,
    checked: usize,
}

impl<P: Picker> Picker for CountsMatchModel<P> {
    fn pick(&mut self, c: &Candidates<'_>, key: Option<u64>) -> usize {
        let pos = self.inner.pick(c, key);
        let mut model = self.model.lock();
        if model.checking {
            for i in 0..c.len() {
                let id = c.get(i).id();
                let want = model.in_flight.get(&id).copied().unwrap_or(0);
                assert_eq!(c.in_flight(i), want, "{id} at {i}");
                assert_eq!(c.get(i).in_flight(), want, "{id} at {i}");
            }
            let id = c.get(pos).id();
            *model.in_flight.entry(id).or_default() += 1;
            model.picked.push(id);
            model.checked += 1;
        }
        pos
    }

    fn uses_in_flight(&self) -> bool {
        self.inner.uses_in_flight()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2c_dense_in_flight_counts_stay_exact_when_requests_complete_on_other_threads() {
    // Endpoints whose responses finish after a few yields, on whichever worker polls them.
    #[derive(Clone)]
    struct Yielding;
    impl Service<u64> for Yielding {
        type Response = u64;
        type Error = Infallible;
        type Future = Pin<Box<dyn Future<Output = Result<u64, Infallible>> + Send>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, req: u64) -> Self::Future {
            Box::pin(async move {
                for _ in 0..(req % 7) {
                    tokio::task::yield_now().await;
                }
                Ok(req)
            })
        }
    }
    let p2c = PowerOfTwoChoices::seeded(7);
    assert!(p2c.uses_in_flight(), "in-flight p2c asks for dense counts");
    let model = Arc::new(Mutex::new(CountModel::default()));
    let picker = CountsMatchModel {
        inner: p2c,
        model: model.clone(),
    };
    let list = FixedList::unweighted((0..64u64).map(|i| (i, Yielding)));
    let mut b = Balance::new(list, picker);
    for round in 0..5u64 {
        model.lock().checking = false;
        let mut tasks = Vec::new();
        for i in 0..2_000u64 {
            let fut = b.ready().await.unwrap().call(round * 10_000 + i);
            tasks.push(tokio::spawn(fut));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(b.in_flight(), 0);
        // Quiet: every completion happened before these picks, so every count shown
        // is exact. Requests held unpolled stay in flight.
        {
            let mut m = model.lock();
            m.checking = true;
            m.in_flight.clear();
            m.picked.clear();
        }
        let mut held = Vec::new();
        for i in 0..256u64 {
            held.push(b.ready().await.unwrap().call(i * 7));
        }
        // End every other held request on another thread; the next picks must see it.
        let mut ended = Vec::new();
        let mut kept = Vec::new();
        for (i, fut) in held.into_iter().enumerate() {
            if i % 2 == 0 {
                ended.push(fut);
            } else {
                kept.push(fut);
            }
        }
        std::thread::spawn(move || drop(ended)).join().unwrap();
        {
            let mut m = model.lock();
            let gone: Vec<_> = m.picked.iter().copied().step_by(2).collect();
            for id in gone {
                *m.in_flight.get_mut(&id).unwrap() -= 1;
            }
        }
        for i in 0..128u64 {
            kept.push(b.ready().await.unwrap().call(i * 7));
        }
        assert_eq!(b.in_flight(), 256);
        drop(kept);
        assert_eq!(b.in_flight(), 0);
    }
    assert_eq!(model.lock().checked, 5 * (256 + 128));
}
