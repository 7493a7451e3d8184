//! A gossip-discovered, load-balanced cluster on 127.0.0.1, with failures.
//!
//! Five members start in this process, each with its own tokio runtime (so one can be
//! killed like a process: its runtime is dropped, every socket closes at once), each
//! serving a small request/response service over `transport::serve` and announcing its
//! address by gossip. A client member discovers them through gossip
//! (`Membership::discover`), balances over them with power-of-two-choices and a
//! circuit breaker per endpoint, and sends a steady stream of requests. Every second it
//! prints a table of each member: its state in the client's view, whether it is in the
//! balancer, requests it was picked for, errors, and its breaker state. Breaker
//! transitions are printed as they happen, with the member they concern
//! (`Balance::endpoint_events`).
//!
//! - at 5 s `m2` is killed: no leave, its runtime and server vanish. Its connection
//!   drops (the endpoint stops being ready at once), gossip suspects it (`Suspect`),
//!   then declares it `Dead`, and discovery removes it;
//! - at 9 s `m4` starts failing every request: its breaker opens and traffic moves to
//!   the others; at 14 s it recovers, a half-open probe succeeds, the breaker closes;
//! - at 18 s the run ends with a summary in which every request is accounted for (the
//!   example asserts it).
//!
//! Run with `cargo run --example cluster`.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use palisade::balance::{Builder, PowerOfTwoChoices};
use palisade::breaker::{BreakerConfig, BreakerEvent, CircuitState};
use palisade::error::{BreakerOpen, NoEndpoints};
use palisade::gossip::proto::{Config, MemberState};
use palisade::gossip::runtime::{Membership, MembershipConfig};
use palisade::transport::{
    serve, Connection, ConnectionConfig, ConnectionLost, Disconnected, RemoteError,
};
use palisade::BoxError;
use parking_lot::Mutex;
use tower::{service_fn, Service, ServiceExt};

const MEMBERS: usize = 5;
const KILL_AT: u64 = 5;
const FAIL_AT: u64 = 9;
const HEAL_AT: u64 = 14;
const END_AT: u64 = 18;
const RATE_EVERY: Duration = Duration::from_millis(4);
const MAX_IN_FLIGHT: usize = 32;

/// Loopback timings: failures are declared within about a second or two.
fn gossip() -> Config {
    Config {
        probe_interval: Duration::from_millis(200),
        probe_timeout: Duration::from_millis(100),
        gossip_interval: Duration::from_millis(50),
        // Members that join within milliseconds of each other through one seed: four
        // retransmissions per update (not `local`'s two) so that every member hears of
        // every other by gossip, and a push-pull every second as the backstop.
        retransmit_mult: 4,
        push_pull_interval: Duration::from_secs(1),
        ..Config::local()
    }
}

/// One server member, with its own runtime.
struct Server {
    name: String,
    runtime: Option<tokio::runtime::Runtime>,
    membership: Option<Membership>,
    failing: Arc<AtomicBool>,
    served: Arc<AtomicU64>,
}

impl Server {
    fn start(name: &str, seed: Option<SocketAddr>) -> Result<Server, BoxError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(name)
            .enable_all()
            .build()?;
        let failing = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicU64::new(0));
        let (f, s, me) = (
            failing.clone(),
            served.clone(),
            Bytes::from(name.to_owned()),
        );
        let membership = runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?;
            let service = service_fn(move |_req: Bytes| {
                let (f, s, me) = (f.clone(), s.clone(), me.clone());
                async move {
                    s.fetch_add(1, Ordering::Relaxed);
                    if f.load(Ordering::Relaxed) {
                        Err(std::io::Error::other("injected failure"))
                    } else {
                        Ok(me)
                    }
                }
            });
            tokio::spawn(serve(listener, service, ConnectionConfig::default()));
            let mut config = MembershipConfig::new(name, "127.0.0.1:0".parse()?)
                .service_addr(addr)
                .protocol(gossip());
            if let Some(seed) = seed {
                config = config.seeds([seed]);
            }
            Ok::<_, BoxError>(Membership::start(config).await?)
        })?;
        Ok(Server {
            name: name.to_owned(),
            runtime: Some(runtime),
            membership: Some(membership),
            failing,
            served,
        })
    }

    /// Like `kill -9`: the runtime and everything on it (gossip, server, connections)
    /// stop at once, without a leave.
    fn kill(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
        self.membership = None;
    }
}

/// What one endpoint saw from the client side.
#[derive(Default)]
struct EndpointStats {
    picks: AtomicU64,
    errors: AtomicU64,
}

/// Counts the requests the balancer sends to one endpoint, and their failures.
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
        self.inner.poll_ready(cx).map_err(Into::into)
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

/// How the client's requests ended.
#[derive(Default, Debug)]
struct Outcomes {
    sent: u64,
    ok: u64,
    remote_error: u64,
    connection_lost: u64,
    disconnected: u64,
    breaker_open: u64,
    no_endpoints: u64,
    timed_out: u64,
    other: u64,
    ok_by_member: BTreeMap<String, u64>,
}

impl Outcomes {
    fn record(&mut self, r: Result<Result<Bytes, BoxError>, tokio::time::error::Elapsed>) {
        match r {
            Ok(Ok(name)) => {
                self.ok += 1;
                *self
                    .ok_by_member
                    .entry(String::from_utf8_lossy(&name).into_owned())
                    .or_default() += 1;
            }
            Ok(Err(e)) if e.is::<RemoteError>() => self.remote_error += 1,
            Ok(Err(e)) if e.is::<ConnectionLost>() => self.connection_lost += 1,
            Ok(Err(e)) if e.is::<Disconnected>() => self.disconnected += 1,
            Ok(Err(e)) if e.is::<BreakerOpen>() => self.breaker_open += 1,
            Ok(Err(e)) if e.is::<NoEndpoints>() => self.no_endpoints += 1,
            Ok(Err(_)) => self.other += 1,
            Err(_) => self.timed_out += 1,
        }
    }

    fn failed(&self) -> u64 {
        self.remote_error
            + self.connection_lost
            + self.disconnected
            + self.breaker_open
            + self.no_endpoints
            + self.timed_out
            + self.other
    }
}

/// The client's view of a member, in `MemberState`'s words.
fn state_name(s: Option<MemberState>) -> &'static str {
    match s {
        Some(MemberState::Alive) => "Alive",
        Some(MemberState::Suspect) => "Suspect",
        Some(MemberState::Dead) => "Dead",
        Some(MemberState::Left) => "Left",
        None => "unknown",
    }
}

fn main() -> Result<(), BoxError> {
    // Each member's runtime is built (and blocked on for its start) outside any other.
    let mut servers = vec![Server::start("m0", None)?];
    let seed = servers[0].membership.as_ref().unwrap().gossip_addr();
    for i in 1..MEMBERS {
        servers.push(Server::start(&format!("m{i}"), Some(seed))?);
    }
    tokio::runtime::Runtime::new()?.block_on(run(servers, seed))
}

async fn run(mut servers: Vec<Server>, seed: SocketAddr) -> Result<(), BoxError> {
    let client = Membership::start(
        MembershipConfig::new("client", "127.0.0.1:0".parse()?)
            .protocol(gossip())
            .seeds([seed]),
    )
    .await?;
    let stats: Arc<Mutex<BTreeMap<String, Arc<EndpointStats>>>> = Default::default();
    let by_name = stats.clone();
    let discover = client.discover(move |addr, member| Counted {
        inner: Connection::new(addr, ConnectionConfig::default()),
        stats: by_name
            .lock()
            .entry(member.name().to_owned())
            .or_default()
            .clone(),
    });
    let breaker = BreakerConfig::builder()
        .consecutive_failures(5)
        .sleep_window(Duration::from_secs(2))
        .build()?;
    let mut balance = Builder::new(PowerOfTwoChoices::seeded(7))
        .endpoint_breaker(breaker)
        .no_endpoint_deadline(Duration::from_secs(1))
        .build_weighted(discover)?;
    // Every member's breaker events, with the member's name: those discovered later
    // included.
    let mut breaker_events = balance.endpoint_events();

    let started = Instant::now();
    let mut outcomes = Outcomes::default();
    let mut in_flight = FuturesUnordered::new();
    let mut send = tokio::time::interval(RATE_EVERY);
    let mut table = tokio::time::interval(Duration::from_secs(1));
    let mut second = 0u64;
    let mut m4_breaker_opened = false;
    let mut m2_removed_at: Option<u64> = None;
    let mut m2_picks_at_removal = 0;
    loop {
        tokio::select! {
            _ = table.tick() => {
                match second {
                    KILL_AT => {
                        println!("--- {second}s: killing m2 (no leave) ---");
                        servers[2].kill();
                    }
                    FAIL_AT => {
                        println!("--- {second}s: m4 starts failing every request ---");
                        servers[4].failing.store(true, Ordering::Relaxed);
                    }
                    HEAL_AT => {
                        println!("--- {second}s: m4 recovers ---");
                        servers[4].failing.store(false, Ordering::Relaxed);
                    }
                    _ => {}
                }
                print_table(second, &client, &balance, &stats, &servers);
                if m2_removed_at.is_none() && second > KILL_AT && balance.endpoint_id(&"m2".to_owned()).is_none() {
                    m2_removed_at = Some(second);
                    m2_picks_at_removal = stats.lock()["m2"].picks.load(Ordering::Relaxed);
                }
                if second == END_AT {
                    break;
                }
                second += 1;
            }
            _ = send.tick(), if in_flight.len() < MAX_IN_FLIGHT => {
                balance.ready().await?;
                outcomes.sent += 1;
                in_flight.push(tokio::time::timeout(
                    Duration::from_secs(2),
                    balance.call(Bytes::from_static(b"hello")),
                ));
            }
            Some(r) = in_flight.next() => outcomes.record(r),
            Some((member, event)) = breaker_events.next() => {
                if let BreakerEvent::StateChanged { from, to, reason } = event {
                    println!(
                        "--- {:.1}s: {member}'s breaker {from} -> {to} ({reason}) ---",
                        started.elapsed().as_secs_f64()
                    );
                    m4_breaker_opened |= member == "m4" && to == CircuitState::Open;
                }
            }
        }
    }
    // Let every request still in flight finish (each is bounded by its timeout).
    while let Some(r) = in_flight.next().await {
        outcomes.record(r);
    }
    let elapsed = started.elapsed();

    println!();
    println!("=== summary after {:.1} s ===", elapsed.as_secs_f64());
    println!("requests sent      {:>7}", outcomes.sent);
    println!("  succeeded        {:>7}", outcomes.ok);
    println!(
        "  remote errors    {:>7}  (m4's injected failures)",
        outcomes.remote_error
    );
    println!(
        "  connection lost  {:>7}  (in flight on a member that died)",
        outcomes.connection_lost
    );
    println!(
        "  disconnected     {:>7}  (reached a connection as it went down)",
        outcomes.disconnected
    );
    println!("  breaker open     {:>7}", outcomes.breaker_open);
    println!("  no endpoints     {:>7}", outcomes.no_endpoints);
    println!("  timed out        {:>7}", outcomes.timed_out);
    println!("  other            {:>7}", outcomes.other);
    let picks: u64 = stats
        .lock()
        .values()
        .map(|s| s.picks.load(Ordering::Relaxed))
        .sum();
    let endpoint_errors: u64 = stats
        .lock()
        .values()
        .map(|s| s.errors.load(Ordering::Relaxed))
        .sum();
    println!(
        "picked endpoints   {picks:>7}  (= succeeded + endpoint errors: {} + {endpoint_errors})",
        outcomes.ok
    );
    for s in &servers {
        let ok = outcomes.ok_by_member.get(&s.name).copied().unwrap_or(0);
        println!(
            "  {}: served {:>6}, answered ok {:>6}",
            s.name,
            s.served.load(Ordering::Relaxed),
            ok
        );
    }
    println!(
        "m2: declared Dead and removed at {}s; m4 breaker opened: {}",
        m2_removed_at.map_or("never".to_owned(), |s| s.to_string()),
        m4_breaker_opened
    );

    // Every request is accounted for.
    assert_eq!(
        outcomes.sent,
        outcomes.ok + outcomes.failed(),
        "{outcomes:?}"
    );
    assert_eq!(outcomes.timed_out + outcomes.other, 0, "{outcomes:?}");
    // Every request that reached an endpoint is one of its picks; the others were
    // refused by the balancer itself.
    assert_eq!(picks, outcomes.ok + endpoint_errors);
    assert_eq!(
        outcomes.sent,
        picks + outcomes.breaker_open + outcomes.no_endpoints
    );
    // A success was served by the member that answered it.
    for s in &servers {
        let ok = outcomes.ok_by_member.get(&s.name).copied().unwrap_or(0);
        assert!(ok <= s.served.load(Ordering::Relaxed), "{}", s.name);
    }
    // m2 was declared Dead and removed, and got nothing afterwards.
    assert_eq!(
        client.member("m2").map(|m| m.state()),
        Some(MemberState::Dead)
    );
    assert!(m2_removed_at.is_some(), "m2 was never removed");
    assert_eq!(
        stats.lock()["m2"].picks.load(Ordering::Relaxed),
        m2_picks_at_removal
    );
    // m4's breaker opened, and m4 serves again after recovering.
    assert!(m4_breaker_opened, "m4's breaker never opened");
    assert_eq!(
        balance
            .endpoint_breaker(&"m4".to_owned())
            .map(|h| h.state()),
        Some(CircuitState::Closed)
    );
    assert!(elapsed < Duration::from_secs(30));
    println!("every request accounted for.");

    client.shutdown().await?;
    for s in &mut servers {
        if let Some(m) = s.membership.take() {
            m.kill();
        }
        if let Some(rt) = s.runtime.take() {
            rt.shutdown_background();
        }
    }
    Ok(())
}

fn print_table<D, P, H, C>(
    second: u64,
    client: &Membership,
    balance: &palisade::balance::Balance<D, P, H, C>,
    stats: &Mutex<BTreeMap<String, Arc<EndpointStats>>>,
    servers: &[Server],
) where
    D: tower::discover::Discover<Key = String>,
{
    println!();
    println!(
        "t={second:>2}s  {:<6} {:<8} {:<9} {:>7} {:>7}  {:<9}",
        "member", "state", "balancer", "picks", "errors", "breaker"
    );
    let stats = stats.lock();
    for s in servers {
        let state = state_name(client.member(&s.name).map(|m| m.state()));
        let in_set = if balance.endpoint_id(&s.name).is_some() {
            "in"
        } else {
            "out"
        };
        let (picks, errors) = stats.get(&s.name).map_or((0, 0), |e| {
            (
                e.picks.load(Ordering::Relaxed),
                e.errors.load(Ordering::Relaxed),
            )
        });
        let breaker = balance
            .endpoint_breaker(&s.name)
            .map_or("-".to_owned(), |h| format!("{:?}", h.state()));
        println!(
            "       {:<6} {:<8} {:<9} {:>7} {:>7}  {:<9}",
            s.name, state, in_set, picks, errors, breaker
        );
    }
}
