//! A deterministic simulator: many [`Swim`] members in one process on a virtual clock.
//!
//! The simulation is an event queue ordered by virtual time (ties broken by insertion
//! order): packet deliveries and member wake-ups. A packet sent at `t` arrives at
//! `t + delay`, with the delay drawn uniformly from the [`Network`]'s range (so packets
//! overtake each other), unless the network loses it (datagrams only: streams are
//! reliable, as TCP is), a partition blocks it (both transports, or datagrams only:
//! [`Simulation::block_datagrams`] and [`Simulation::isolate_datagrams`] model a
//! firewall dropping UDP while TCP passes), or the receiver has crashed. A *slow* member handles every input late by an extra delay, fixed
//! ([`Simulation::set_slow`]) or drawn per packet ([`Simulation::set_slow_between`], so
//! that its inputs also reorder, like a member whose CPU stalls now and then).
//! Everything random is drawn from one seeded generator, so a run is reproducible.
//!
//! Use it to check a configuration before running it:
//!
//! ```
//! use palisade::gossip::sim::{Network, Simulation};
//! use palisade::gossip::{Config, MemberState};
//! use std::time::Duration;
//!
//! let mut sim = Simulation::new(7, Network::lan());
//! let cfg = Config { seed: Some(0), ..Config::lan() };
//! let ids = sim.add_members(8, &cfg)?;
//! for &id in &ids[1..] {
//!     sim.join(id, &[ids[0]]);
//! }
//! sim.run_for(Duration::from_secs(5));
//! assert!(ids.iter().all(|&id| sim.swim(id).unwrap().live_members() == 7));
//!
//! sim.crash(ids[3]);
//! sim.run_for(Duration::from_secs(30));
//! let name = sim.name(ids[3]).to_owned();
//! for &id in ids.iter().filter(|&&id| id != ids[3]) {
//!     assert_eq!(sim.swim(id).unwrap().member(&name).unwrap().state(), MemberState::Dead);
//! }
//! # Ok::<(), palisade::ConfigError>(())
//! ```

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::error::ConfigError;
use crate::gossip::proto::config::nanos;
use crate::gossip::proto::{Config, Event, Identity, Swim, Transport};

/// A member of a simulation (an index).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MemberId(pub usize);

/// How the simulated network treats packets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Network {
    /// Probability that a datagram is lost, from 0.0 to 1.0 (above 1 counts as 1; NaN
    /// and negatives as 0).
    pub loss: f64,
    /// Shortest one-way delay. Any duration; delays saturate at the end of virtual time
    /// (`u64::MAX` ns), so `Duration::MAX` means never delivered.
    pub min_delay: Duration,
    /// Longest one-way delay; delays are uniform between the two, so packets reorder.
    /// Not below `min_delay` (a smaller one means exactly `min_delay`).
    pub max_delay: Duration,
}

impl Network {
    /// A data centre: no loss, 0.2 to 2 ms one way.
    pub fn lan() -> Self {
        Self {
            loss: 0.0,
            min_delay: Duration::from_micros(200),
            max_delay: Duration::from_millis(2),
        }
    }

    /// The same network losing `loss` of the datagrams.
    pub fn with_loss(self, loss: f64) -> Self {
        Self { loss, ..self }
    }
}

/// Counters of the simulated network.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Packets delivered to a running member.
    pub delivered: u64,
    /// Datagrams lost by the network.
    pub lost: u64,
    /// Packets blocked by a partition (datagram-only blocks included).
    pub blocked: u64,
    /// Packets that arrived at a crashed member.
    pub to_crashed: u64,
    /// Bytes of every packet sent (both transports).
    pub bytes_sent: u64,
    /// Bytes of the stream messages (push-pull) among them.
    pub stream_bytes_sent: u64,
}

enum Job {
    Deliver {
        to: usize,
        from: SocketAddr,
        transport: Transport,
        bytes: Vec<u8>,
    },
    Wake {
        member: usize,
    },
}

struct Scheduled {
    at: u64,
    seq: u64,
    job: Job,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

struct SimMember {
    identity: Identity,
    swim: Option<Swim>,
    /// Extra input delay, uniform in `slow.0..=slow.1` nanoseconds.
    slow: (u64, u64),
    wake_at: u64,
}

/// Observer of every membership event: `(virtual time, member that saw it, event)`.
pub type Observer = Box<dyn FnMut(u64, MemberId, &Event)>;

/// The simulation. See the [module docs](self).
pub struct Simulation {
    now: u64,
    seq: u64,
    rng: SmallRng,
    network: Network,
    members: Vec<SimMember>,
    by_addr: HashMap<SocketAddr, usize>,
    queue: BinaryHeap<Reverse<Scheduled>>,
    blocked: HashSet<(usize, usize)>,
    blocked_datagrams: HashSet<(usize, usize)>,
    stats: SimStats,
    observer: Option<Observer>,
}

impl fmt::Debug for Simulation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Simulation")
            .field("now", &self.now)
            .field("members", &self.members.len())
            .field("queued", &self.queue.len())
            .finish_non_exhaustive()
    }
}

/// The fake address of the `i`th member: `10.a.b.c:7946`.
pub fn fake_addr(i: usize) -> SocketAddr {
    let i = i as u32 + 1;
    SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::new(10, (i >> 16) as u8, (i >> 8) as u8, i as u8),
        7946,
    ))
}

impl Simulation {
    /// An empty simulation at virtual time zero.
    pub fn new(seed: u64, network: Network) -> Self {
        Self {
            now: 0,
            seq: 0,
            rng: SmallRng::seed_from_u64(seed),
            network,
            members: Vec::new(),
            by_addr: HashMap::new(),
            queue: BinaryHeap::new(),
            blocked: HashSet::new(),
            blocked_datagrams: HashSet::new(),
            stats: SimStats::default(),
            observer: None,
        }
    }

    /// The virtual time, in nanoseconds.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Network counters.
    pub fn stats(&self) -> &SimStats {
        &self.stats
    }

    /// Changes the network from now on.
    pub fn set_network(&mut self, network: Network) {
        self.network = network;
    }

    /// Calls `observer` for every membership event any member emits.
    pub fn set_observer(&mut self, observer: impl FnMut(u64, MemberId, &Event) + 'static) {
        self.observer = Some(Box::new(observer));
    }

    /// Adds a member (not yet joined). Its gossip address must be unique.
    pub fn add_member(
        &mut self,
        identity: Identity,
        config: Config,
    ) -> Result<MemberId, ConfigError> {
        if self.by_addr.contains_key(&identity.gossip_addr()) {
            return Err(ConfigError::new(
                "gossip_addr",
                "is already used in this simulation",
            ));
        }
        let swim = Swim::new(identity.clone(), config, self.now)?;
        let id = self.members.len();
        self.by_addr.insert(identity.gossip_addr(), id);
        self.members.push(SimMember {
            identity,
            swim: Some(swim),
            slow: (0, 0),
            wake_at: u64::MAX,
        });
        self.reschedule(id);
        Ok(MemberId(id))
    }

    /// Adds `n` members named `m0`, `m1`, ... at [`fake_addr`]s, each with `config`
    /// (its seed, if any, offset by the member's index so that members differ).
    pub fn add_members(&mut self, n: usize, config: &Config) -> Result<Vec<MemberId>, ConfigError> {
        (0..n)
            .map(|_| {
                let i = self.members.len();
                let mut cfg = config.clone();
                cfg.seed = cfg.seed.map(|s| s.wrapping_add(i as u64));
                self.add_member(Identity::new(format!("m{i}"), fake_addr(i)), cfg)
            })
            .collect()
    }

    /// The member's name.
    pub fn name(&self, id: MemberId) -> &str {
        self.members[id.0].identity.name()
    }

    /// How many members were added.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether no member was added.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The member's state machine, `None` while crashed.
    pub fn swim(&self, id: MemberId) -> Option<&Swim> {
        self.members[id.0].swim.as_ref()
    }

    /// Runs `f` on the member's state machine at the current virtual time and sends what
    /// it produced. Does nothing while the member is crashed.
    pub fn with_swim<R>(&mut self, id: MemberId, f: impl FnOnce(&mut Swim, u64) -> R) -> Option<R> {
        let now = self.now;
        let r = f(self.members[id.0].swim.as_mut()?, now);
        self.flush(id.0);
        Some(r)
    }

    /// Makes the member join through the seeds.
    pub fn join(&mut self, id: MemberId, seeds: &[MemberId]) {
        let addrs: Vec<SocketAddr> = seeds
            .iter()
            .map(|s| self.members[s.0].identity.gossip_addr())
            .collect();
        self.with_swim(id, |s, now| s.join(&addrs, now));
    }

    /// Makes the member leave gracefully (it keeps running to spread the leave).
    pub fn leave(&mut self, id: MemberId) {
        self.with_swim(id, |s, now| s.leave(now));
    }

    /// Stops the member abruptly: it sends nothing more and drops what reaches it.
    pub fn crash(&mut self, id: MemberId) {
        self.members[id.0].swim = None;
        self.members[id.0].wake_at = u64::MAX;
    }

    /// Starts a crashed (or running) member afresh with the same identity, at
    /// incarnation zero and knowing no one; call [`join`](Self::join) next.
    pub fn restart(&mut self, id: MemberId, config: Config) -> Result<(), ConfigError> {
        let swim = Swim::new(self.members[id.0].identity.clone(), config, self.now)?;
        self.members[id.0].swim = Some(swim);
        self.members[id.0].wake_at = u64::MAX;
        self.reschedule(id.0);
        Ok(())
    }

    /// Makes the member handle every packet `extra` late (zero makes it timely again).
    pub fn set_slow(&mut self, id: MemberId, extra: Duration) {
        self.set_slow_between(id, extra, extra);
    }

    /// Makes the member handle every packet late by a delay drawn afresh for each packet,
    /// uniformly between `min` and `max` (swapped if given in the wrong order), so that
    /// its inputs also reorder. `Duration::ZERO` for both makes it timely again.
    pub fn set_slow_between(&mut self, id: MemberId, min: Duration, max: Duration) {
        let (a, b) = (nanos(min), nanos(max));
        self.members[id.0].slow = (a.min(b), a.max(b));
    }

    /// Drops every packet from `from` to `to` (a one-way partition).
    pub fn block(&mut self, from: MemberId, to: MemberId) {
        self.blocked.insert((from.0, to.0));
    }

    /// Drops every packet between the two groups, both ways.
    pub fn partition(&mut self, a: &[MemberId], b: &[MemberId]) {
        for &x in a {
            for &y in b {
                self.block(x, y);
                self.block(y, x);
            }
        }
    }

    /// Drops every datagram from `from` to `to`, but lets stream messages through: a
    /// one-way UDP partition (a firewall dropping UDP) with TCP still working.
    pub fn block_datagrams(&mut self, from: MemberId, to: MemberId) {
        self.blocked_datagrams.insert((from.0, to.0));
    }

    /// Drops every datagram to and from the member, both ways, with every other member
    /// added so far, but lets stream messages through: its UDP is broken, its TCP works.
    pub fn isolate_datagrams(&mut self, id: MemberId) {
        for other in (0..self.members.len()).filter(|&o| o != id.0) {
            self.blocked_datagrams.insert((id.0, other));
            self.blocked_datagrams.insert((other, id.0));
        }
    }

    /// Removes every partition (datagram-only blocks included).
    pub fn heal(&mut self) {
        self.blocked.clear();
        self.blocked_datagrams.clear();
    }

    /// Runs until the virtual clock reaches `now + d`.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.now.saturating_add(nanos(d));
        self.run_until(until);
    }

    /// Runs until the virtual clock reaches `until` (nanoseconds).
    pub fn run_until(&mut self, until: u64) {
        while self.queue.peek().is_some_and(|Reverse(s)| s.at <= until) {
            let Reverse(s) = self.queue.pop().expect("peeked");
            self.now = s.at;
            self.run_job(s.job);
        }
        self.now = self.now.max(until);
    }

    /// Runs in steps of `step` until `done` holds or `limit` elapses; returns the virtual
    /// time taken when `done` held, `None` on timeout.
    pub fn run_until_true(
        &mut self,
        step: Duration,
        limit: Duration,
        mut done: impl FnMut(&Simulation) -> bool,
    ) -> Option<Duration> {
        let start = self.now;
        let end = start.saturating_add(nanos(limit));
        loop {
            if done(self) {
                return Some(Duration::from_nanos(self.now - start));
            }
            if self.now >= end {
                return None;
            }
            self.run_for(step);
        }
    }

    fn run_job(&mut self, job: Job) {
        match job {
            Job::Wake { member } => {
                let m = &mut self.members[member];
                if m.wake_at != self.now {
                    return; // superseded
                }
                m.wake_at = u64::MAX;
                let now = self.now;
                if let Some(swim) = m.swim.as_mut() {
                    swim.handle_timeout(now);
                    self.flush(member);
                }
            }
            Job::Deliver {
                to,
                from,
                transport,
                bytes,
            } => {
                let now = self.now;
                let Some(swim) = self.members[to].swim.as_mut() else {
                    self.stats.to_crashed += 1;
                    return;
                };
                self.stats.delivered += 1;
                match transport {
                    Transport::Datagram => swim.handle_datagram(from, &bytes, now),
                    Transport::Stream => swim.handle_stream(from, &bytes, now),
                }
                self.flush(to);
            }
        }
    }

    fn push(&mut self, at: u64, job: Job) {
        self.seq += 1;
        self.queue.push(Reverse(Scheduled {
            at,
            seq: self.seq,
            job,
        }));
    }

    fn reschedule(&mut self, id: usize) {
        let Some(swim) = self.members[id].swim.as_ref() else {
            return;
        };
        let at = swim.next_deadline().max(self.now);
        if at != self.members[id].wake_at && at != u64::MAX {
            self.members[id].wake_at = at;
            self.push(at, Job::Wake { member: id });
        }
    }

    /// Sends what the member produced, reports its events and schedules its wake-up.
    fn flush(&mut self, id: usize) {
        let from = self.members[id].identity.gossip_addr();
        let mut out = Vec::new();
        let mut events = Vec::new();
        if let Some(swim) = self.members[id].swim.as_mut() {
            out.extend(swim.drain_transmits());
            while let Some(e) = swim.poll_event() {
                events.push(e);
            }
        }
        for t in out {
            self.stats.bytes_sent += t.bytes.len() as u64;
            if t.transport == Transport::Stream {
                self.stats.stream_bytes_sent += t.bytes.len() as u64;
            }
            let Some(&to) = self.by_addr.get(&t.to) else {
                self.stats.lost += 1;
                continue;
            };
            if self.blocked.contains(&(id, to))
                || (t.transport == Transport::Datagram
                    && self.blocked_datagrams.contains(&(id, to)))
            {
                self.stats.blocked += 1;
                continue;
            }
            if t.transport == Transport::Datagram
                && self.network.loss > 0.0
                && self.rng.random_bool(self.network.loss.min(1.0))
            {
                self.stats.lost += 1;
                continue;
            }
            let (lo, hi) = (nanos(self.network.min_delay), nanos(self.network.max_delay));
            let delay = if hi > lo {
                self.rng.random_range(lo..=hi)
            } else {
                lo
            };
            let slow = match self.members[to].slow {
                (lo, hi) if hi > lo => self.rng.random_range(lo..=hi),
                (lo, _) => lo,
            };
            let at = self.now.saturating_add(delay).saturating_add(slow);
            self.push(
                at,
                Job::Deliver {
                    to,
                    from,
                    transport: t.transport,
                    bytes: t.bytes,
                },
            );
        }
        if let Some(obs) = self.observer.as_mut() {
            for e in &events {
                obs(self.now, MemberId(id), e);
            }
        }
        self.reschedule(id);
    }
}
