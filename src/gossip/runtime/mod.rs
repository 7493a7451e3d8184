//! The tokio runtime of a gossip member: sockets and timers around the sans-IO core.
//!
//! [`Membership::start`] binds one UDP socket and one TCP listener on the same address,
//! builds a [`Swim`] for the configured identity, spawns the
//! task that drives it, joins the cluster through the seeds, and returns a cheap,
//! cloneable handle.
//!
//! - **Datagrams** (probes, acks, gossip) travel over UDP, one packet per datagram.
//! - **Streams** (push-pull: joins, anti-entropy, reconnects, acknowledged leaves; and
//!   the [TCP fallback ping](crate::gossip::proto::Config::tcp_fallback_ping) of a probe whose
//!   UDP ping went unanswered, answered by an ack on the same connection) travel over
//!   TCP, sealed like datagrams when a keyring is set, one connection per exchange,
//!   length-prefixed, bounded by the protocol's `max_stream_size` and by a
//!   [stream timeout](MembershipConfig::stream_timeout) at every step; inbound
//!   connections are capped. Wire: a big-endian `u32` length,
//!   then the sealed message; the answer comes back on the same connection.
//! - **Timers**: the driver sleeps until the core's next deadline, on tokio's clock
//!   (so a paused test clock jumps while the runtime is idle, and real-socket members
//!   then suspect each other: use the simulator (`gossip::sim`, feature `sim`) for virtual
//!   time).
//! - **Answers**: an inbound stream message is handed to the core with the peer's TCP
//!   address as `from`; the core's answer (a stream transmit to that address, queued by
//!   the same call) is written back on the same connection, so answers need no
//!   listening port on the initiator's side and pass NAT.
//!
//! # Joining
//! [`start`](Membership::start) joins through the [seeds](MembershipConfig::seeds) in
//! up to [`join_attempts`](MembershipConfig::join_attempts) rounds with a jittered,
//! capped backoff, and returns once a seed answered (so the view is complete on
//! return). If none answered:
//! - by default it fails with [`StartError::Join`] and nothing keeps running (a
//!   mistyped seed shows at once);
//! - with [`retry_join`](MembershipConfig::retry_join) it returns `Ok` with the member
//!   running alone, and a background task keeps retrying the seeds (jittered
//!   exponential backoff up to a [maximum interval](RetryJoin::max_interval), forever or
//!   for a [bounded number of rounds](RetryJoin::max_attempts)) until one answers (even
//!   if other members joined through it meanwhile: only a seed's answer ties it to the
//!   seeds' cluster). The same task retries the seeds whenever the member has seen no
//!   other alive or suspect member for an
//!   [isolation timeout](RetryJoin::isolation_timeout), so a member cut off from
//!   everyone (a cluster cold-starting in any order, a rolling restart, a partition that
//!   healed only partly) finds the cluster again once a seed is reachable. One round is
//!   in flight at a time; the backoff starts over after a successful join; the task
//!   ends when the member leaves or stops. Rounds and background joins are counted in
//!   the [stats](MembershipStats); the members a background join brings in arrive as
//!   [`Event::Join`]s like any others.
//!
//! # The handle
//! [`Membership`] reads the view ([`members`](Membership::members),
//! [`local`](Membership::local)), changes this member's metadata
//! ([`set_tags`](Membership::set_tags), [`set_service_addr`](Membership::set_service_addr)),
//! delivers events ([`subscribe`](Membership::subscribe): an [`EventStream`] that counts
//! what a slow reader lost), exposes counters
//! ([`stats`](Membership::stats)), feeds a balancer
//! ([`discover`](Membership::discover)), and ends the member:
//! - [`leave`](Membership::leave) then [`shutdown`](Membership::shutdown): graceful. The
//!   leave is sent in a datagram to every live member (see [`Swim::leave`] for why),
//!   gossiped, and also sent over TCP to up to three live members; it completes when one
//!   of them acknowledged it (answered the exchange) and the leave has been gossiped its
//!   full retransmit count, or when the [leave timeout](MembershipConfig::leave_timeout)
//!   passes. Others see [`Event::Leave`].
//! - [`kill`](Membership::kill), or dropping the last clone of the handle: abrupt, like
//!   a crash. The sockets close at once; others see the member `Failed` after their
//!   suspicion timeout.
//!
//! Clones share the one member. After the member stopped, reads return the last view
//! and commands return [`Stopped`].
//!
//! # When the driver ends
//! The member stops whenever its driver task ends, on request or not: a panic in the
//! driver (a bug, or a resource exhausted), or the end of the task that accepts its
//! stream connections (the driver then stops the member rather than run unable to
//! answer joins and leaves). Either way, and at once:
//! - [`is_stopped`](Membership::is_stopped) is `true`, commands return [`Stopped`];
//! - [`EventStream`]s yield what they had not read, then end; and
//!   [`GossipDiscover`](crate::gossip::discover::GossipDiscover)s end (the balancer
//!   keeps the endpoints it has);
//! - [`members`](Membership::members) returns the view as it was when the driver
//!   ended, frozen (to others this member now looks crashed): check
//!   [`is_stopped`](Membership::is_stopped) or [`stats`](Membership::stats) before
//!   trusting it;
//! - [`stats`](Membership::stats)`.driver` is [`DriverStatus::Failed`] (or
//!   [`Stopped`](DriverStatus::Stopped) after [`shutdown`](Membership::shutdown),
//!   [`kill`](Membership::kill) or dropping the handles);
//! - the failure is kept: [`driver_error`](Membership::driver_error) returns it,
//!   [`shutdown`](Membership::shutdown) returns it as an error (to every caller, on
//!   every clone), and with the `tracing` feature it is logged as an error when it
//!   happens.
//!
//! ```
//! use palisade::gossip::proto::Config;
//! use palisade::gossip::runtime::{Membership, MembershipConfig};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let a = Membership::start(
//!     MembershipConfig::new("a", "127.0.0.1:0".parse()?).protocol(Config::local()),
//! )
//! .await?;
//! let b = Membership::start(
//!     MembershipConfig::new("b", "127.0.0.1:0".parse()?)
//!         .protocol(Config::local())
//!         .seeds([a.gossip_addr()]),
//! )
//! .await?; // returns once `a` answered the join
//! assert_eq!(b.members().len(), 1);
//! b.shutdown().await?; // leaves gracefully: `a` sees Event::Leave
//! # a.kill();
//! # Ok(())
//! # }
//! ```

mod config;
pub(crate) mod driver;
mod error;
mod events;
mod retry_join;
pub(crate) mod stream;

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rand::seq::SliceRandom;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{broadcast, oneshot, watch, Notify};
use tokio::time::Instant;

pub use config::{MembershipConfig, MAX_EVENT_CAPACITY};
pub use error::{DriverError, JoinError, StartError, Stopped};
pub use events::EventStream;
pub use retry_join::RetryJoin;

use crate::backoff::Backoff;
use crate::error::ConfigError;
use crate::gossip::keyring::Keyring;
#[cfg(doc)]
use crate::gossip::proto::Event;
use crate::gossip::proto::{Identity, Member, MemberState, Stats, Swim};
use driver::{Counters, ProtocolState, RunningMember};

/// A running gossip member. See the [module docs](self).
#[derive(Clone)]
pub struct Membership {
    shared: Arc<RunningMember>,
    tasks: Arc<MemberTasks>,
}

/// The member's background tasks (its driver, its retry-join), held by every handle;
/// stops them when the last handle goes.
struct MemberTasks {
    shared: Arc<RunningMember>,
    driver: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The retry-join task, when the config asks for one.
    retry: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for MemberTasks {
    fn drop(&mut self) {
        let _ = self.shared.stop.send(true);
    }
}

/// Whether a member's driver runs (see [when the driver ends](self#when-the-driver-ends)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum DriverStatus {
    /// The member runs.
    #[default]
    Running,
    /// Stopped on request: [`shutdown`](Membership::shutdown),
    /// [`kill`](Membership::kill), the last handle dropped, or a failed join in
    /// [`start`](Membership::start).
    Stopped,
    /// The driver ended by itself; [`Membership::driver_error`] says why.
    Failed,
}

/// Counters of one member: the core's (packets and bytes sent and received, drops by
/// reason) and the runtime's (stream connections, socket errors), and whether its driver
/// still runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MembershipStats {
    /// Whether the driver runs, was stopped, or failed. Once it is not
    /// [`Running`](DriverStatus::Running) the counters no longer move.
    pub driver: DriverStatus,
    /// The protocol's counters: `packets_received` includes dropped ones, `drops` counts
    /// them by reason (bad authentication, malformed, oversized, replayed...).
    pub protocol: Stats,
    /// Inbound stream connections accepted.
    pub streams_accepted: u64,
    /// Inbound stream connections closed at accept because too many were open.
    pub streams_refused: u64,
    /// Inbound stream messages refused because their length exceeded `max_stream_size`
    /// (never read, so the core never saw them).
    pub streams_oversized: u64,
    /// Stream exchanges that failed: connect refused, reset, timed out, no answer (TCP
    /// fallback pings to a crashed member included).
    pub stream_failures: u64,
    /// Probe rounds saved only by the TCP fallback ping
    /// ([`Config::tcp_fallback_ping`](crate::gossip::proto::Config::tcp_fallback_ping)):
    /// the probed member answered over TCP but neither directly nor through the
    /// indirect probes over UDP. Anything above zero means UDP between this member and
    /// some others is broken (a firewall dropping UDP, a one-way partition) while TCP
    /// works; with the `tracing` feature each such round also logs a warning naming the
    /// peer. The same count as `protocol.tcp_fallback_saves`.
    pub tcp_fallback_saves: u64,
    /// Datagrams the socket refused to send.
    pub send_errors: u64,
    /// Errors receiving datagrams.
    pub recv_errors: u64,
    /// Join rounds made (each a full-state exchange with every seed at once): by
    /// [`start`](Membership::start), [`join`](Membership::join) and
    /// [retry-join](MembershipConfig::retry_join) in the background.
    pub join_attempts: u64,
    /// Background retry-join rounds a seed answered: how often the member joined (or
    /// rejoined after finding itself alone) in the background.
    pub background_joins: u64,
    /// Times the background retry-join ran out of its
    /// [`max_attempts`](RetryJoin::max_attempts) and stopped for good (0 or 1).
    pub retry_join_given_up: u64,
}

impl MembershipStats {
    /// Every received packet or stream message dropped without effect: the core's drops
    /// plus oversized stream messages.
    pub fn dropped(&self) -> u64 {
        self.protocol.drops.total() + self.streams_oversized
    }
}

impl Membership {
    /// Binds, starts the member and joins the cluster through the configured seeds (if
    /// any). Returns once a seed answered, or with [`StartError::Join`] after the last
    /// join attempt (unless [`retry_join`](MembershipConfig::retry_join) is set: then
    /// `Ok`, running alone and retrying in the background); [`StartError::Bind`] when the address is taken or not local;
    /// [`StartError::Config`] for an invalid configuration. On error nothing keeps
    /// running. Needs a tokio runtime with I/O and time enabled.
    pub async fn start(config: MembershipConfig) -> Result<Membership, StartError> {
        config.validate()?;
        let (udp, listener) = bind(config.bind).await?;
        let bound = udp.local_addr().map_err(|source| StartError::Bind {
            addr: config.bind,
            source,
        })?;
        let gossip_addr = config.advertise.unwrap_or(bound);
        let mut identity =
            Identity::new(config.name.clone(), gossip_addr).with_tags(config.tags.clone());
        if let Some(s) = config.service_addr {
            identity = identity.with_service_addr(s);
        }
        let epoch = Instant::now();
        let swim = Swim::new(identity, config.protocol.clone(), 0)?;
        let (events, _) = broadcast::channel(config.event_capacity);
        let (version, _) = watch::channel(0);
        let (stop, stop_rx) = watch::channel(false);
        let seeds = config.seeds.clone();
        let retry = config.retry_join;
        let shared = Arc::new(RunningMember {
            core: Mutex::new(ProtocolState {
                swim,
                waiters: Default::default(),
                stopped: false,
                failure: None,
            }),
            config,
            epoch,
            wake: Notify::new(),
            stepped: Notify::new(),
            events: Mutex::new(Some(events)),
            version,
            stop,
            counters: Counters::default(),
            #[cfg(test)]
            faults: Default::default(),
        });
        let driver = tokio::spawn(driver::run(Arc::clone(&shared), udp, listener, stop_rx));
        let membership = Membership {
            tasks: Arc::new(MemberTasks {
                shared: Arc::clone(&shared),
                driver: Mutex::new(Some(driver)),
                retry: Mutex::new(None),
            }),
            shared,
        };
        let targets = join_targets(&seeds, gossip_addr);
        let joined = if targets.is_empty() {
            Ok(0)
        } else {
            membership.join(&targets).await
        };
        let begin = match (joined, retry) {
            (Ok(_), _) => retry_join::Begin::Joined,
            (Err(e), Some(_)) => {
                #[cfg(feature = "tracing")]
                tracing::warn!(error = %e, "gossip join failed; running alone and retrying in the background");
                retry_join::Begin::Retrying {
                    attempt: e.attempts,
                }
            }
            (Err(e), None) => {
                #[cfg(feature = "tracing")]
                tracing::warn!(error = %e, "gossip join failed; stopping");
                // Stop and wait, so that the address is free again when this returns.
                membership.kill();
                membership.wait_stopped().await;
                return Err(StartError::Join(e));
            }
        };
        if let (Some(policy), false) = (retry, targets.is_empty()) {
            let task = tokio::spawn(retry_join::run(
                Arc::clone(&membership.shared),
                targets,
                policy,
                begin,
            ));
            *membership.tasks.retry.lock() = Some(task);
        }
        Ok(membership)
    }

    /// Joins (more of) the cluster through `seeds`: a full-state exchange with each, in
    /// rounds, until at least one answers; between rounds it waits a jittered, doubling
    /// backoff. Returns how many seeds answered in the successful round, or a
    /// [`JoinError`] after the configured number of attempts. This member's own address
    /// is skipped; with no other seed it returns `Ok(0)` at once.
    pub async fn join(&self, seeds: &[SocketAddr]) -> Result<usize, JoinError> {
        let targets = join_targets(seeds, self.gossip_addr());
        let config = &self.shared.config;
        let error = JoinError {
            seeds: targets.clone(),
            attempts: config.join_attempts,
        };
        if targets.is_empty() {
            return Ok(0);
        }
        let backoff = Backoff::new(config.join_backoff.0, config.join_backoff.1);
        for attempt in 0..config.join_attempts {
            match join_round(&self.shared, &targets).await {
                Ok(0) => {}
                Ok(answered) => return Ok(answered),
                Err(Stopped) => break,
            }
            #[cfg(feature = "tracing")]
            tracing::debug!(attempt, seeds = ?targets, "gossip join: no seed answered");
            if attempt + 1 < config.join_attempts {
                let delay = backoff.delay(attempt, &mut rand::rng());
                tokio::time::sleep(delay).await;
            }
        }
        Err(error)
    }

    /// Leaves the cluster gracefully, bounded by the
    /// [leave timeout](MembershipConfig::leave_timeout): the others will see
    /// [`Event::Leave`]. Returns `true` if the leave was acknowledged by a live member
    /// over TCP and gossiped its full retransmit count (or there was nobody to tell),
    /// `false` if the timeout
    /// cut it short. The member keeps running (answering probes as left) until
    /// [`shutdown`](Self::shutdown) or [`kill`](Self::kill). Calling it again is harmless.
    pub async fn leave(&self) -> bool {
        let deadline = self.shared.config.leave_deadline(Instant::now());
        let peers: Vec<SocketAddr> = {
            let core = self.shared.core.lock();
            let mut live: Vec<SocketAddr> = core
                .swim
                .members()
                .filter(|m| m.state() == MemberState::Alive)
                .map(|m| m.gossip_addr())
                .collect();
            live.shuffle(&mut rand::rng());
            live.truncate(3);
            live
        };
        let Ok(waiting) = exchange_with(&self.shared, &peers, |swim, now| {
            swim.leave(now);
            // A push-pull while leaving carries this member as left; the answer is the
            // acknowledgement.
            swim.join(&peers, now);
        }) else {
            return false;
        };
        self.shared.bump();
        let acked = async {
            peers.is_empty()
                || tokio::time::timeout_at(deadline, count_answers(waiting))
                    .await
                    .is_ok_and(|n| n > 0)
        };
        if !acked.await {
            return false;
        }
        // Then let the leave be gossiped its full count (the others spread it further).
        // Only this member's own leave: the queue also holds what others sent, which
        // under churn (many members leaving at once) would not drain before the timeout.
        loop {
            let stepped = self.shared.stepped.notified();
            tokio::pin!(stepped);
            stepped.as_mut().enable();
            {
                let core = self.shared.core.lock();
                if core.stopped {
                    return false;
                }
                if core.swim.leave_spread() || core.swim.live_members() == 0 {
                    return true;
                }
            }
            if tokio::time::timeout_at(deadline, stepped).await.is_err() {
                return false;
            }
        }
    }

    /// Leaves gracefully (see [`leave`](Self::leave)), then stops the member and waits
    /// for its tasks to end: the sockets are closed and background joining has stopped
    /// when this returns. Other clones of
    /// the handle see a stopped member.
    ///
    /// Returns the [`DriverError`] if the driver had ended by itself (before or during
    /// the call; see [when the driver ends](self#when-the-driver-ends)), `Ok` otherwise,
    /// also when the member had already been stopped on request.
    pub async fn shutdown(&self) -> Result<(), DriverError> {
        if !self.is_stopped() {
            self.leave().await;
        }
        self.kill();
        self.wait_stopped().await;
        match self.driver_error() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Why the driver ended by itself, if it did (see
    /// [when the driver ends](self#when-the-driver-ends)); `None` while it runs or after
    /// it was stopped on request.
    pub fn driver_error(&self) -> Option<DriverError> {
        self.shared.core.lock().failure.clone()
    }

    /// Waits for the driver task and the retry-join task to end (once, for the first
    /// caller; later callers return at once).
    async fn wait_stopped(&self) {
        let retry = self.tasks.retry.lock().take();
        if let Some(retry) = retry {
            let _ = retry.await;
        }
        let driver = self.tasks.driver.lock().take();
        if let Some(driver) = driver {
            let _ = driver.await;
        }
    }

    /// Stops the member at once, without leaving: to the others it looks like a crash.
    /// The driver closes the sockets, and the retry-join task (if any) ends, as soon as
    /// each runs next.
    pub fn kill(&self) {
        let _ = self.shared.stop.send(true);
    }

    /// Whether the member has stopped: on request, or because its driver ended by itself
    /// (see [when the driver ends](self#when-the-driver-ends)).
    pub fn is_stopped(&self) -> bool {
        self.shared.core.lock().stopped || *self.shared.stop.borrow()
    }

    /// The address other members gossip with this one at.
    pub fn gossip_addr(&self) -> SocketAddr {
        self.shared.core.lock().swim.local().gossip_addr()
    }

    /// This member as it announces itself.
    pub fn local(&self) -> Member {
        self.shared.core.lock().swim.local().clone()
    }

    /// Every other member this one knows, in any state (failed and left ones until
    /// reaped). After the member stopped, the view as it was then (see
    /// [when the driver ends](self#when-the-driver-ends)).
    pub fn members(&self) -> Vec<Member> {
        self.shared.core.lock().swim.members().cloned().collect()
    }

    /// One member by name (this one included).
    pub fn member(&self, name: &str) -> Option<Member> {
        self.shared.core.lock().swim.member(name).cloned()
    }

    /// How many other members are alive or suspect.
    pub fn live_members(&self) -> usize {
        self.shared.core.lock().swim.live_members()
    }

    /// Lifeguard's local health score (0 is healthy; it grows when this member misses
    /// acks or has to refute suspicions of itself, and stretches its probe timing).
    pub fn health_score(&self) -> u32 {
        self.shared.core.lock().swim.health_score()
    }

    /// Replaces this member's tags and spreads them (others see [`Event::Update`]).
    /// Fails if they exceed the protocol's `max_tags_bytes`, or if the member stopped.
    pub fn set_tags(&self, tags: BTreeMap<String, String>) -> Result<(), SetError> {
        {
            let mut core = self.shared.core.lock();
            if core.stopped {
                return Err(SetError::Stopped(Stopped));
            }
            let now = self.shared.now();
            core.swim.set_tags(tags, now).map_err(SetError::Config)?;
        }
        self.shared.bump();
        self.shared.wake.notify_one();
        Ok(())
    }

    /// Replaces this member's service address and spreads it.
    pub fn set_service_addr(&self, addr: Option<SocketAddr>) -> Result<(), Stopped> {
        {
            let mut core = self.shared.core.lock();
            if core.stopped {
                return Err(Stopped);
            }
            let now = self.shared.now();
            core.swim.set_service_addr(addr, now);
        }
        self.shared.bump();
        self.shared.wake.notify_one();
        Ok(())
    }

    /// Every membership event from now on, as an [`EventStream`]. A stream that falls
    /// more than [`event_capacity`](MembershipConfig::event_capacity) events behind
    /// loses the oldest and counts them ([`EventStream::dropped`]); the view
    /// ([`members`](Self::members)) is always complete. Once the member stops, the
    /// stream yields the events it has not read yet, then ends.
    pub fn subscribe(&self) -> EventStream {
        // Stopped: a stream that has ended.
        EventStream::new(self.shared.events.lock().as_ref().map(|s| s.subscribe()))
    }

    /// The same as [`subscribe`](Self::subscribe) (the name the breaker's handle uses).
    pub fn events(&self) -> EventStream {
        self.subscribe()
    }

    /// The counters of this member, and whether its driver runs.
    pub fn stats(&self) -> MembershipStats {
        let (protocol, driver) = {
            let core = self.shared.core.lock();
            let driver = if core.failure.is_some() {
                DriverStatus::Failed
            } else if core.stopped || *self.shared.stop.borrow() {
                DriverStatus::Stopped
            } else {
                DriverStatus::Running
            };
            (*core.swim.stats(), driver)
        };
        let c = &self.shared.counters;
        MembershipStats {
            driver,
            protocol,
            streams_accepted: c.streams_accepted.load(Ordering::Relaxed),
            streams_refused: c.streams_refused.load(Ordering::Relaxed),
            streams_oversized: c.streams_oversized.load(Ordering::Relaxed),
            stream_failures: c.stream_failures.load(Ordering::Relaxed),
            tcp_fallback_saves: protocol.tcp_fallback_saves,
            send_errors: c.send_errors.load(Ordering::Relaxed),
            recv_errors: c.recv_errors.load(Ordering::Relaxed),
            join_attempts: c.join_attempts.load(Ordering::Relaxed),
            background_joins: c.background_joins.load(Ordering::Relaxed),
            retry_join_given_up: c.retry_join_given_up.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn shared(&self) -> &Arc<RunningMember> {
        &self.shared
    }

    /// Runs `f` on the keyring, to install, promote or remove keys at run time (rotation
    /// without downtime: install the new key everywhere, then make it primary
    /// everywhere, then remove the old one). `None` if packets are not sealed (no
    /// keyring configured) or the member stopped.
    pub fn with_keyring<R>(&self, f: impl FnOnce(&mut Keyring) -> R) -> Option<R> {
        let mut core = self.shared.core.lock();
        if core.stopped {
            return None;
        }
        core.swim.keyring_mut().map(f)
    }

    /// The configuration it was started with.
    pub fn config(&self) -> &MembershipConfig {
        &self.shared.config
    }

    /// A receiver whose value changes whenever the view may have changed (an event, a
    /// local update, the member stopping): the hook for adapters like
    /// [`GossipDiscover`](crate::gossip::discover::GossipDiscover).
    pub fn watch_changes(&self) -> watch::Receiver<u64> {
        self.shared.version.subscribe()
    }
}

impl fmt::Debug for Membership {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Membership")
            .field("name", &self.shared.config.name)
            .field("gossip_addr", &self.gossip_addr())
            .field("live_members", &self.live_members())
            .field("stopped", &self.is_stopped())
            .finish()
    }
}

/// Why [`Membership::set_tags`] failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetError {
    /// The tags are too large (or a key or value is invalid).
    Config(ConfigError),
    /// The member stopped.
    Stopped(Stopped),
}

impl fmt::Display for SetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SetError::Config(e) => e.fmt(f),
            SetError::Stopped(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for SetError {}

/// The seeds to join through: `seeds` without this member's own address, deduplicated.
fn join_targets(seeds: &[SocketAddr], me: SocketAddr) -> Vec<SocketAddr> {
    let mut targets: Vec<SocketAddr> = seeds.iter().copied().filter(|s| *s != me).collect();
    targets.sort();
    targets.dedup();
    targets
}

/// One join round: a full-state exchange with every target at once. Returns how many
/// answered, bounded by the stream timeout (plus a margin). Counted in
/// [`MembershipStats::join_attempts`].
pub(crate) async fn join_round(
    shared: &RunningMember,
    targets: &[SocketAddr],
) -> Result<usize, Stopped> {
    shared
        .counters
        .join_attempts
        .fetch_add(1, Ordering::Relaxed);
    let waiting = exchange_with(shared, targets, |swim, now| swim.join(targets, now))?;
    // Each exchange is bounded by the stream timeout; the margin covers scheduling, and
    // the bound covers an exchange the core did not start (an oversized state).
    let bound = shared
        .config
        .stream_timeout
        .saturating_add(Duration::from_millis(500));
    Ok(tokio::time::timeout(bound, count_answers(waiting))
        .await
        .unwrap_or(0))
}

/// Runs `op` on the core, registers a waiter per address for the stream exchanges it
/// started, and wakes the driver to send them.
fn exchange_with(
    shared: &RunningMember,
    targets: &[SocketAddr],
    op: impl FnOnce(&mut Swim, u64),
) -> Result<Vec<oneshot::Receiver<bool>>, Stopped> {
    let mut core = shared.core.lock();
    if core.stopped {
        return Err(Stopped);
    }
    let now = shared.now();
    op(&mut core.swim, now);
    // Forget waiters whose caller gave up (timed out or dropped).
    core.waiters.retain(|_, w| {
        w.retain(|tx| !tx.is_closed());
        !w.is_empty()
    });
    let waiting = targets
        .iter()
        .map(|t| {
            let (tx, rx) = oneshot::channel();
            core.waiters.entry(*t).or_default().push(tx);
            rx
        })
        .collect();
    drop(core);
    shared.wake.notify_one();
    Ok(waiting)
}

/// How many of the exchanges answered (a dropped waiter counts as no answer).
async fn count_answers(waiting: Vec<oneshot::Receiver<bool>>) -> usize {
    futures::future::join_all(waiting)
        .await
        .into_iter()
        .filter(|r| matches!(r, Ok(true)))
        .count()
}

/// Binds UDP and TCP on the same address. With port 0 the UDP port is picked first and
/// TCP must get the same one; if TCP's is taken, try again with another.
async fn bind(addr: SocketAddr) -> Result<(UdpSocket, TcpListener), StartError> {
    let err = |source: io::Error| StartError::Bind { addr, source };
    let tries = if addr.port() == 0 { 16 } else { 1 };
    let mut last = None;
    for _ in 0..tries {
        let udp = UdpSocket::bind(addr).await.map_err(err)?;
        let bound = udp.local_addr().map_err(err)?;
        match TcpListener::bind(bound).await {
            Ok(listener) => return Ok((udp, listener)),
            Err(e) => last = Some(e),
        }
    }
    Err(err(last.unwrap_or_else(|| io::Error::other("no port"))))
}

#[cfg(test)]
mod tests;
