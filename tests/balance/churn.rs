//! Churn: endpoints join, leave and fail while many requests run on a multi-thread
//! runtime. Every request must reach the endpoint that was picked for it, which must be a
//! member at that moment, and every in-flight count must return to zero.
//!
//! The long version is ignored by default; run it with
//! `cargo test --release --test balance -- --ignored churn::`.

use std::collections::HashSet;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicIsize, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use palisade::balance::{
    Builder, Candidates, ConsistentHash, LeastConnections, Picker, PowerOfTwoChoices,
    WeightedRoundRobin,
};
use palisade::discover::ChannelSet;
use palisade::error::NoEndpoints;
use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tower::{Service, ServiceExt};

#[derive(Default)]
struct Tally {
    wrong_endpoint: AtomicUsize,
    not_a_member: AtomicUsize,
    active: AtomicIsize,
    served: AtomicUsize,
    last_pick: AtomicU64,
}

fn key_hash(k: &u32) -> u64 {
    palisade::balance::stable_hash(k)
}

struct ChurnEp {
    key: u32,
    rng: SmallRng,
    present: Arc<Mutex<HashSet<u32>>>,
    tally: Arc<Tally>,
}

/// Decrements the active count however the response future ends.
struct Active(Arc<Tally>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Service<u64> for ChurnEp {
    type Response = u32;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<u32, io::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        let roll: f64 = self.rng.random();
        if roll < 0.001 {
            Poll::Ready(Err(io::Error::other("endpoint broke")))
        } else if roll < 0.05 {
            // Briefly busy: ask to be polled again.
            cx.waker().wake_by_ref();
            Poll::Pending
        } else {
            Poll::Ready(Ok(()))
        }
    }

    fn call(&mut self, _: u64) -> Self::Future {
        let t = &self.tally;
        if t.last_pick.load(Ordering::SeqCst) != key_hash(&self.key) {
            t.wrong_endpoint.fetch_add(1, Ordering::SeqCst);
        }
        if !self.present.lock().contains(&self.key) {
            t.not_a_member.fetch_add(1, Ordering::SeqCst);
        }
        t.active.fetch_add(1, Ordering::SeqCst);
        let guard = Active(t.clone());
        let yields = self.rng.random_range(0..4);
        let key = self.key;
        Box::pin(async move {
            for _ in 0..yields {
                tokio::task::yield_now().await;
            }
            guard.0.served.fetch_add(1, Ordering::SeqCst);
            drop(guard);
            Ok(key)
        })
    }
}

/// Tells the endpoints which one was picked, then delegates.
struct Reporting<P> {
    inner: P,
    tally: Arc<Tally>,
}

impl<P: Picker> Picker for Reporting<P> {
    fn pick(&mut self, c: &Candidates<'_>, key: Option<u64>) -> usize {
        let pos = self.inner.pick(c, key);
        self.tally
            .last_pick
            .store(c.get(pos.min(c.len() - 1)).key_hash(), Ordering::SeqCst);
        pos
    }
}

async fn churn<P: Picker + Send + 'static>(picker: P, changes: usize, requests: usize, seed: u64) {
    let tally = Arc::new(Tally::default());
    let present = Arc::new(Mutex::new(HashSet::new()));
    let (set, handle) = ChannelSet::new();
    let endpoint = |key: u32| ChurnEp {
        key,
        rng: SmallRng::seed_from_u64(seed ^ key as u64),
        present: present.clone(),
        tally: tally.clone(),
    };
    let mut next_key = 0u32;
    for _ in 0..10 {
        present.lock().insert(next_key);
        handle
            .insert(next_key, endpoint(next_key), 1 + next_key % 4)
            .unwrap();
        next_key += 1;
    }
    let mut balance = Builder::new(Reporting {
        inner: picker,
        tally: tally.clone(),
    })
    .hash_key(|r: &u64| *r)
    .no_endpoint_deadline(Duration::from_millis(20))
    .build_weighted(set)
    .unwrap();

    let mut rng = SmallRng::seed_from_u64(seed);
    let change_odds = changes as f64 / requests as f64;
    let mut tasks = Vec::with_capacity(requests);
    let mut no_endpoints = 0;
    for i in 0..requests {
        if rng.random_bool(change_odds) || balance.is_empty() {
            let live: Vec<u32> = present.lock().iter().copied().collect();
            if !live.is_empty() && (live.len() > 20 || rng.random_bool(0.5)) {
                let k = live[rng.random_range(0..live.len())];
                present.lock().remove(&k);
                handle.remove(k).unwrap();
            } else {
                present.lock().insert(next_key);
                handle
                    .insert(next_key, endpoint(next_key), rng.random_range(1..5))
                    .unwrap();
                next_key += 1;
            }
        }
        let fut = balance.ready().await.unwrap().call(i as u64);
        if rng.random_bool(0.05) {
            drop(fut); // cancelled before it ran
            continue;
        }
        tasks.push(tokio::spawn(async move {
            match fut.await {
                Ok(_) => 0,
                Err(e) if e.is::<NoEndpoints>() => 1,
                Err(e) => panic!("unexpected error {e}"),
            }
        }));
    }
    for t in tasks {
        no_endpoints += t.await.unwrap();
    }
    assert_eq!(tally.wrong_endpoint.load(Ordering::SeqCst), 0);
    assert_eq!(tally.not_a_member.load(Ordering::SeqCst), 0);
    assert_eq!(tally.active.load(Ordering::SeqCst), 0);
    assert_eq!(
        balance.in_flight(),
        0,
        "every in-flight count returns to zero"
    );
    let served = tally.served.load(Ordering::SeqCst);
    assert!(
        served + no_endpoints as usize >= requests * 9 / 10,
        "served {served}, no endpoint {no_endpoints}"
    );
    assert!(served >= requests * 8 / 10, "served only {served}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_p2c_every_request_reaches_its_picked_member() {
    churn(PowerOfTwoChoices::seeded(1), 200, 20_000, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_weighted_round_robin_every_request_reaches_its_picked_member() {
    churn(WeightedRoundRobin::new(), 200, 20_000, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_consistent_hash_and_least_connections_reach_their_picked_member() {
    churn(ConsistentHash::with_replicas(20), 100, 5_000, 3).await;
    churn(LeastConnections::seeded(4).weighted(), 100, 5_000, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: cargo test --release --test balance -- --ignored churn::"]
async fn churn_long_thousand_changes_hundred_thousand_requests() {
    churn(PowerOfTwoChoices::seeded(10), 1_000, 100_000, 10).await;
    churn(WeightedRoundRobin::new(), 1_000, 100_000, 11).await;
}
