//! End to end over loopback: a client balancing over a gossip-fed discovery source
//! keeps every request accounted for while members join, leave, crash and restart.
//!
//! Each server member runs on its own tokio runtime so that a crash is real: the
//! runtime is shut down and every socket it owned (gossip, listener, connections)
//! closes at once, without a leave.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use palisade::balance::{Builder, PowerOfTwoChoices};
use palisade::error::NoEndpoints;
use palisade::gossip::proto::MemberState;
use palisade::gossip::runtime::{Membership, MembershipConfig};
use palisade::transport::{serve, Connection, ConnectionConfig, ConnectionLost, Disconnected};
use palisade::BoxError;
use parking_lot::Mutex;
use tokio::time::Instant;
use tower::{service_fn, Service, ServiceExt};

use crate::common;
use common::PATIENCE;

const MAX_IN_FLIGHT: usize = 16;

struct Server {
    runtime: Option<tokio::runtime::Runtime>,
    membership: Option<Membership>,
    served: Arc<AtomicU64>,
}

impl Server {
    async fn start(name: &'static str, seed: SocketAddr) -> Server {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let served = Arc::new(AtomicU64::new(0));
        let s = served.clone();
        let membership = runtime
            .spawn(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let addr = listener.local_addr().unwrap();
                let service = service_fn(move |_req: Bytes| {
                    s.fetch_add(1, Ordering::Relaxed);
                    async move { Ok::<_, std::io::Error>(Bytes::from_static(name.as_bytes())) }
                });
                tokio::spawn(serve(listener, service, ConnectionConfig::default()));
                Membership::start(
                    MembershipConfig::new(name, "127.0.0.1:0".parse().unwrap())
                        .service_addr(addr)
                        .protocol(common::fast_gossip())
                        .seeds([seed]),
                )
                .await
                .unwrap()
            })
            .await
            .unwrap();
        Server {
            runtime: Some(runtime),
            membership: Some(membership),
            served,
        }
    }

    fn crash(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
        self.membership = None;
    }

    /// Leaves the cluster and keeps serving for `drain`; the caller stops the server
    /// (`crash`) when the returned task is done.
    fn leave_and_drain(&mut self, drain: Duration) -> tokio::task::JoinHandle<bool> {
        let m = self.membership.take().unwrap();
        self.runtime.as_ref().unwrap().spawn(async move {
            let acked = m.leave().await;
            m.shutdown().await.unwrap();
            tokio::time::sleep(drain).await;
            acked
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.crash();
    }
}

#[derive(Default)]
struct EndpointStats {
    picks: AtomicU64,
    errors: AtomicU64,
}

#[derive(Clone)]
struct Counted {
    inner: Connection,
    stats: Arc<EndpointStats>,
}

impl Service<Bytes> for Counted {
    type Response = Bytes;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Bytes, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Bytes) -> Self::Future {
        self.stats.picks.fetch_add(1, Ordering::Relaxed);
        let stats = self.stats.clone();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let r = fut.await;
            if r.is_err() {
                stats.errors.fetch_add(1, Ordering::Relaxed);
            }
            r
        })
    }
}

#[derive(Debug, Default)]
struct Outcomes {
    sent: u64,
    ok: BTreeMap<String, u64>,
    lost: u64,
    disconnected: u64,
    no_endpoints: u64,
    other: Vec<String>,
}

impl Outcomes {
    fn ok(&self) -> u64 {
        self.ok.values().sum()
    }

    fn failed(&self) -> u64 {
        self.lost + self.disconnected + self.no_endpoints + self.other.len() as u64
    }

    fn record(&mut self, r: Result<Result<Bytes, BoxError>, tokio::time::error::Elapsed>) {
        match r {
            Ok(Ok(b)) => {
                *self
                    .ok
                    .entry(String::from_utf8_lossy(&b).into_owned())
                    .or_default() += 1
            }
            Ok(Err(e)) if e.is::<ConnectionLost>() => self.lost += 1,
            Ok(Err(e)) if e.is::<Disconnected>() => self.disconnected += 1,
            Ok(Err(e)) if e.is::<NoEndpoints>() => self.no_endpoints += 1,
            Ok(Err(e)) => self.other.push(e.to_string()),
            Err(_) => self.other.push("timed out".into()),
        }
    }
}

/// Whether the scenario reached its final state: the endpoint set is s1, the restarted
/// s3 and s4, the joiner and the restarted s3 both answered, and the client sees s2 as
/// left and s3 as alive.
fn settled(
    is_endpoint: impl Fn(&str) -> bool,
    client: &Membership,
    outcomes: &Outcomes,
    restarted_s3: Option<&Arc<AtomicU64>>,
) -> bool {
    let endpoints: Vec<&str> = ["s1", "s2", "s3", "s4"]
        .into_iter()
        .filter(|k| is_endpoint(k))
        .collect();
    endpoints == ["s1", "s3", "s4"]
        && outcomes.ok.get("s4").is_some_and(|&n| n > 0)
        && restarted_s3.is_some_and(|s| s.load(Ordering::Relaxed) > 0)
        && client.member("s2").map(|m| m.state()) == Some(MemberState::Left)
        && client.member("s3").map(|m| m.state()) == Some(MemberState::Alive)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_is_accounted_for_through_join_leave_crash_and_restart() {
    let client = Membership::start(
        MembershipConfig::new("client", "127.0.0.1:0".parse().unwrap())
            .protocol(common::fast_gossip()),
    )
    .await
    .unwrap();
    let seed = client.gossip_addr();
    let mut servers: BTreeMap<&str, Server> = BTreeMap::new();
    for name in ["s1", "s2", "s3"] {
        servers.insert(name, Server::start(name, seed).await);
    }
    let stats: Arc<Mutex<BTreeMap<String, Arc<EndpointStats>>>> = Default::default();
    let by_name = stats.clone();
    let discover = client.discover(move |addr, m| Counted {
        inner: Connection::new(addr, ConnectionConfig::default()),
        stats: by_name
            .lock()
            .entry(m.name().to_owned())
            .or_default()
            .clone(),
    });
    let mut balance = Builder::new(PowerOfTwoChoices::seeded(3))
        .no_endpoint_deadline(Duration::from_secs(2))
        .build_weighted(discover)
        .unwrap();

    let mut outcomes = Outcomes::default();
    let mut in_flight = FuturesUnordered::new();
    let mut send = tokio::time::interval(Duration::from_millis(3));
    let start = Instant::now();
    let mut step = 0;
    let mut leaving = None;
    let mut s2_acked = None;
    let mut old_s3_served = None;
    let mut restarted_s3 = None;
    let mut s2_picks_at_removal = None;
    loop {
        let t = start.elapsed();
        // The scenario, one step at a time.
        match step {
            0 if t >= Duration::from_millis(1000) => {
                servers.insert("s4", Server::start("s4", seed).await);
                step += 1;
            }
            1 if t >= Duration::from_millis(2000) => {
                leaving = Some(
                    servers
                        .get_mut("s2")
                        .unwrap()
                        .leave_and_drain(Duration::from_millis(500)),
                );
                step += 1;
            }
            2 if t >= Duration::from_millis(3000) => {
                let s3 = servers.get_mut("s3").unwrap();
                // Read at the end: the crashed runtime's worker may still finish a
                // request it was serving (`shutdown_background` does not wait).
                old_s3_served = Some(s3.served.clone());
                s3.crash();
                step += 1;
            }
            3 if t >= Duration::from_millis(4500) => {
                let s3 = Server::start("s3", seed).await;
                restarted_s3 = Some(s3.served.clone());
                servers.insert("s3", s3);
                step += 1;
            }
            // The schedule gives each change a second or more to take effect, enough on
            // an idle machine; on a loaded one gossip and reconnects run late, so the
            // run goes on (traffic flowing) until the final view is reached, at most
            // PATIENCE longer. The assertions below then check that view.
            4 if t >= Duration::from_millis(7000)
                && leaving.is_none()
                && (t >= Duration::from_millis(7000) + PATIENCE
                    || settled(
                        |k| balance.endpoint_id(&k.to_owned()).is_some(),
                        &client,
                        &outcomes,
                        restarted_s3.as_ref(),
                    )) =>
            {
                break
            }
            _ => {}
        }
        // s2 drained: stop its server for good.
        if leaving.as_ref().is_some_and(|h| h.is_finished()) {
            s2_acked = Some(leaving.take().unwrap().await.unwrap());
            servers.get_mut("s2").unwrap().crash();
        }
        if s2_picks_at_removal.is_none()
            && step >= 2
            && balance.endpoint_id(&"s2".to_owned()).is_none()
        {
            s2_picks_at_removal = Some(stats.lock()["s2"].picks.load(Ordering::Relaxed));
        }
        tokio::select! {
            _ = send.tick(), if in_flight.len() < MAX_IN_FLIGHT => {
                balance.ready().await.unwrap();
                outcomes.sent += 1;
                in_flight.push(tokio::time::timeout(
                    Duration::from_secs(3),
                    balance.call(Bytes::from_static(b"req")),
                ));
            }
            Some(r) = in_flight.next() => outcomes.record(r),
        }
    }
    while let Some(r) = in_flight.next().await {
        outcomes.record(r);
    }

    println!("{outcomes:?} in {:?}", start.elapsed());
    // Every request ended, in a known way.
    assert_eq!(
        outcomes.sent,
        outcomes.ok() + outcomes.failed(),
        "{outcomes:?}"
    );
    assert!(outcomes.other.is_empty(), "{outcomes:?}");
    // Failures come only from the crash (requests in flight on s3, or sent to it just
    // before its connection noticed): bounded by one window of requests in flight.
    assert!(
        outcomes.failed() <= 2 * MAX_IN_FLIGHT as u64,
        "{outcomes:?}"
    );
    assert!(outcomes.ok() > 1000, "{outcomes:?}");
    // The graceful leave lost nothing, and s2 was not picked after its removal.
    assert_eq!(
        s2_acked,
        Some(true),
        "s2's leave was not acknowledged (or not done)"
    );
    assert_eq!(stats.lock()["s2"].errors.load(Ordering::Relaxed), 0);
    assert_eq!(
        Some(stats.lock()["s2"].picks.load(Ordering::Relaxed)),
        s2_picks_at_removal
    );
    assert_eq!(client.member("s2").unwrap().state(), MemberState::Left);
    // The joiner and the restarted member took traffic.
    assert!(
        outcomes.ok.get("s4").copied().unwrap_or(0) > 0,
        "{outcomes:?}"
    );
    let new_s3 = restarted_s3.unwrap().load(Ordering::Relaxed);
    assert!(new_s3 > 0, "restarted s3 got no traffic: {outcomes:?}");
    // Each success was served by the member that answered it.
    let old_s3 = old_s3_served.unwrap().load(Ordering::Relaxed);
    assert!(
        outcomes.ok["s3"] <= old_s3 + new_s3,
        "{outcomes:?}, old s3 served {old_s3}, new s3 {new_s3}"
    );
    for name in ["s1", "s4"] {
        assert!(outcomes.ok[name] <= servers[name].served.load(Ordering::Relaxed));
    }
    // The final view and endpoint set.
    assert_eq!(client.member("s3").unwrap().state(), MemberState::Alive);
    let mut keys: Vec<&str> = ["s1", "s2", "s3", "s4"]
        .into_iter()
        .filter(|k| balance.endpoint_id(&k.to_string()).is_some())
        .collect();
    keys.sort();
    assert_eq!(keys, ["s1", "s3", "s4"]);
    client.kill();
}
