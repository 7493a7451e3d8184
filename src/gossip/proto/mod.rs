//! The SWIM + Lifeguard membership protocol as a sans-IO state machine.
//!
//! [`Swim`] never touches a socket or a clock. The caller (a runtime, a test, the
//! simulator, `gossip::sim` with the `sim` feature) feeds it:
//! - received packets: [`Swim::handle_datagram`] (UDP-like, at most
//!   [`Config::max_packet_size`] bytes) and [`Swim::handle_stream`] (a whole
//!   TCP-like message, for push-pull and the TCP fallback ping);
//! - the passage of time: [`Swim::handle_timeout`] whenever the clock reaches
//!   [`Swim::next_deadline`];
//! - reports of failed stream exchanges: [`Swim::stream_failed`];
//! - commands: [`Swim::join`], [`Swim::leave`], [`Swim::set_tags`],
//!   [`Swim::set_service_addr`];
//!
//! each with an explicit `now` in nanoseconds on any monotonic clock (the same one for
//! every call). After each call it has queued [`Transmit`]s (take them with
//! [`Swim::drain_transmits`]) and membership [`Event`]s (take them with
//! [`Swim::poll_event`]). [`Swim::members`] is a snapshot of the view at any time,
//! [`Swim::live`] its live part.
//!
//! One mechanism per file: [`member`] (identity and state), `state` (the table and
//! the precedence rules), `probe` (failure detection, with its TCP fallback, see
//! [`Config::tcp_fallback_ping`]), `suspicion` and
//! `awareness` (Lifeguard), `broadcast` (dissemination queue), `push_pull`
//! (anti-entropy, over datagrams too), [`join`] (joining
//! and its status), [`config`] (presets), `message` (what is exchanged).
//!
//! # Driving the core yourself
//! The [tokio runtime](crate::gossip::runtime) is one driver; another runtime, a test
//! or a hand-written event loop (see `examples/sans_io.rs`) drives the core the same
//! way. A driver owns a datagram socket, optionally a stream transport (TCP-like:
//! reliable, one message each way per connection), and a monotonic clock read in
//! nanoseconds.
//!
//! **Datagrams.** Send every [`Transport::Datagram`] transmit to its `to`; hand every
//! received datagram to [`Swim::handle_datagram`] with its source address.
//!
//! **Streams.** A stream transmit says what it is in [`Transmit::stream`]:
//! - [`StreamKind::Request`]: open a new connection to `to`, send the bytes, read one
//!   message back and hand it to [`Swim::handle_stream`] with `to` as `from`. If the
//!   exchange fails (refused, reset, timed out, closed without an answer), call
//!   [`Swim::stream_failed`] with `to`: a join through that seed then counts it failed.
//! - [`StreamKind::Answer`]: it answers the message the last [`Swim::handle_stream`]
//!   call was handed (its `to` is that call's `from`): write it back on that connection.
//!   A call queues at most one; a call that queues none leaves the connection to be
//!   closed unanswered (an answer is never answered).
//!
//! So a driver never matches answers to connections by address, and needs no listening
//! port on the side that opens an exchange.
//!
//! **No streams at all.** Set [`Config::datagram_only`]: the member then never queues a
//! stream transmit. Joins, periodic push-pulls and reconnects go as datagram push-pulls
//! cut to one datagram (see `push_pull.rs`, over datagrams); a seed that stays
//! silent is retried and then counted failed by the core itself, since a lost datagram
//! is never reported. Every member of this build answers them, whatever its own
//! setting.
//!
//! **Joining.** [`Swim::join`] starts a join through the seeds; [`Swim::join_status`]
//! says whether it is pending, joined (a seed answered) or failed (every seed failed),
//! so a join through dead seeds is seen as failed rather than as a view that stays
//! empty. Call `join` again to retry.
//!
//! # Timers
//! There is one deadline, [`Swim::next_deadline`], and no timer tokens: sleep until it
//! (or until a packet arrives), then call [`Swim::handle_timeout`] with the clock's
//! time. Read the deadline again after *every* call, since any input may move it
//! earlier. `u64::MAX` means nothing is scheduled.
//! - **Early calls are harmless**: `handle_timeout(now)` does only the work whose time
//!   has come (deadline at or before `now`). Called before [`Swim::next_deadline`] it
//!   sends nothing, emits nothing and moves no deadline, so a driver whose timer fires
//!   early, or that calls it on every loop turn, needs no bookkeeping.
//! - **Late calls do the overdue work once**: a driver that stalled (a paused process,
//!   a busy loop) gets each overdue piece of work done once, not once per missed
//!   period, and the next periods are scheduled from the late `now`, so there is no
//!   burst to catch up. What waited on a deadline that passed takes effect at once: a
//!   probe round whose end passed closes without its indirect step (its target is
//!   suspected, and can refute as always), expired suspicions declare their members
//!   dead. Keep the driver timely: a stall longer than a probe period makes this member
//!   the slow one, which Lifeguard then accounts for.
//!
//! **The schedule starts at the first input.** [`Swim::new`]'s `now` only dates the
//! member's own state; its periodic work (probes, gossip, push-pulls, reconnects,
//! reaping) is scheduled, at random offsets, from the first call that passes a `now`
//! (any input: [`Swim::join`], a packet, [`Swim::handle_timeout`]...). So a member built
//! well before its driver starts does not find every period due and fire them all at
//! once. Before that first input, [`Swim::next_deadline`] is 0: a driver that sleeps
//! until the deadline starts the member at once.
//!
//! **The view.** [`Swim::live`] yields the other members alive or suspect (the live
//! view), [`Swim::live_members`] counts them, [`Swim::members`] includes the failed and
//! left ones until they are reaped.
//!
//! ```
//! use palisade::gossip::proto::{Config, Identity, Swim, Event};
//!
//! let cfg = Config { seed: Some(1), ..Config::lan() };
//! let mut a = Swim::new(Identity::new("a", "10.0.0.1:7946".parse()?), cfg.clone(), 0)?;
//! let mut b = Swim::new(Identity::new("b", "10.0.0.2:7946".parse()?), cfg, 0)?;
//! b.join(&["10.0.0.1:7946".parse()?], 0);
//! // Deliver b's push-pull to a, and a's answer back to b.
//! for t in b.drain_transmits().collect::<Vec<_>>() {
//!     a.handle_stream(b.local().gossip_addr(), &t.bytes, 1_000);
//! }
//! for t in a.drain_transmits().collect::<Vec<_>>() {
//!     if t.to == b.local().gossip_addr() {
//!         b.handle_stream(a.local().gossip_addr(), &t.bytes, 2_000);
//!     }
//! }
//! assert!(matches!(a.poll_event(), Some(Event::Join(m)) if m.name() == "b"));
//! assert!(matches!(b.poll_event(), Some(Event::Join(m)) if m.name() == "a"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod awareness;
mod broadcast;
pub mod config;
pub mod join;
pub mod member;
// Wire messages: crate-private like the codec (see `gossip::test_util`).
#[cfg_attr(not(feature = "test-util"), allow(unreachable_pub))]
pub(crate) mod message;
mod probe;
mod push_pull;
mod state;
mod suspicion;

use config::nanos;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;

use rand::rngs::SmallRng;
use rand::SeedableRng;

pub use crate::gossip::codec::{DropCounts, DropReason};
pub use config::Config;
pub use join::JoinStatus;
pub use member::{Identity, Member, MemberState, MAX_NAME_LEN, MAX_WIRE_TAGS_BYTES};

use crate::error::ConfigError;
use crate::gossip::codec::{begin_body, decode_body_filtered, encode_frame, Codec};
use crate::gossip::keyring::Keyring;
use awareness::Awareness;
use broadcast::BroadcastQueue;
use join::JoinAttempt;
use message::{Dead, Frame};
use probe::{random_members, ProbeRound, ProbeSchedule, Relay};
use push_pull::next_after;
use state::Table;
use suspicion::Suspicion;

/// A membership change, in Serf's vocabulary (its `member-join`, `member-leave`,
/// `member-failed`, `member-update` and `member-reap` events). A member's *state* uses
/// [`MemberState`]'s words: after `Join` or `Update` it is `Alive`, after `Leave` it is
/// `Left`, after `Failed` it is `Dead`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A member joined (or came back after failing or leaving).
    Join(Member),
    /// A member left gracefully.
    Leave(Member),
    /// A member was declared failed: a suspicion of it timed out without a refutation, and
    /// its state is now [`MemberState::Dead`].
    Failed(Member),
    /// A live member changed its tags or service address.
    Update(Member),
    /// A failed or left member was forgotten after the reap timeout.
    Reap(Member),
}

impl Event {
    /// The member the event is about, as it was at the event.
    pub fn member(&self) -> &Member {
        match self {
            Event::Join(m)
            | Event::Leave(m)
            | Event::Failed(m)
            | Event::Update(m)
            | Event::Reap(m) => m,
        }
    }
}

/// Which transport a [`Transmit`] must travel on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// One datagram (UDP): at most [`Config::max_packet_size`] bytes; may be lost.
    Datagram,
    /// One message on a reliable stream (TCP): a push-pull, or a TCP fallback ping or
    /// its ack; deliver it with [`Swim::handle_stream`]. [`Transmit::stream`] says
    /// whether it opens an exchange or answers one.
    Stream,
}

/// What a stream [`Transmit`] is in its exchange: a driver opens a new stream for a
/// request and writes an answer back on the stream the request came on. See
/// [driving the core yourself](self#driving-the-core-yourself).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamKind {
    /// Opens an exchange: connect to [`Transmit::to`], send the bytes, read one message
    /// back and hand it to [`Swim::handle_stream`] with `to` as `from`; if the exchange
    /// fails (refused, reset, timed out, closed without an answer), report it with
    /// [`Swim::stream_failed`].
    Request,
    /// Answers the stream message handed to the [`Swim::handle_stream`] call that
    /// queued it (its `to` is that call's `from`): write it back on that connection,
    /// then close it. At most one per call; a call that queues none wants the
    /// connection closed unanswered.
    Answer,
}

/// A packet to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Destination gossip address.
    pub to: SocketAddr,
    /// Datagram or stream.
    pub transport: Transport,
    /// For a stream transmit, whether it opens an exchange or answers one; `None` for a
    /// datagram.
    pub stream: Option<StreamKind>,
    /// The sealed bytes.
    pub bytes: Vec<u8>,
    /// Whether this is a full-state exchange (a push-pull, whose answer merges the
    /// peer's whole state): what a runtime waits on to call a join or a leave
    /// acknowledged. False for datagrams and for the TCP fallback ping and its ack.
    pub push_pull: bool,
}

/// Counters of what this member sent, received and dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Packets (datagrams and stream messages) sent.
    pub packets_sent: u64,
    /// Bytes sent.
    pub bytes_sent: u64,
    /// Packets received (dropped ones included).
    pub packets_received: u64,
    /// Bytes received.
    pub bytes_received: u64,
    /// Received packets dropped, by reason.
    pub drops: DropCounts,
    /// Frames of unknown kinds skipped (sent by newer members).
    pub skipped_frames: u64,
    /// Times this member refuted a suspicion or death of itself (or a stale alive).
    pub refutations: u64,
    /// Pings addressed to another name (an address reused by a new member).
    pub misdirected: u64,
    /// Alive updates ignored because another live member holds the name.
    pub conflicts: u64,
    /// Push-pull states not sent because they exceeded `max_stream_size`.
    pub oversized_sends: u64,
    /// Times a stale accusation was answered by gossiping the refutation again.
    pub stale_corrections: u64,
    /// Refutations sent straight back to a member whose datagram carried a stale
    /// accusation (it missed them).
    pub stale_replies: u64,
    /// Probe rounds whose only ack came back over the stream transport, from the TCP
    /// fallback ping ([`Config::tcp_fallback_ping`]): without it the target would have
    /// been suspected. Anything above zero means datagrams between this member and
    /// some others are lost while streams pass: UDP looks broken (a firewall, a one-way
    /// partition).
    pub tcp_fallback_saves: u64,
    /// TCP fallback pings sent (one per probe round that reached its indirect step
    /// while the fallback is on).
    pub tcp_fallback_pings: u64,
    /// Stream exchanges the driver reported failed ([`Swim::stream_failed`]).
    pub stream_failures: u64,
    /// Request frames after the first in one stream message (a stream carries one
    /// request and gets one answer): not answered.
    pub surplus_stream_requests: u64,
}

/// The SWIM + Lifeguard state machine of one member. See the [module docs](self).
#[derive(Debug)]
pub struct Swim {
    config: Config,
    codec: Codec,
    local: Member,
    leaving: bool,
    table: Table,
    rng: SmallRng,
    broadcasts: BroadcastQueue,
    suspicions: HashMap<String, Suspicion>,
    awareness: Awareness,
    schedule: ProbeSchedule,
    round: Option<ProbeRound>,
    relays: Vec<Relay>,
    next_seq: u32,
    next_probe_at: u64,
    next_gossip_at: u64,
    next_push_pull_at: u64,
    next_reconnect_at: u64,
    next_reap_at: u64,
    /// Whether the periodic work is scheduled: from the first input, not from
    /// [`Swim::new`] (see [`start`](Self::start)).
    started: bool,
    /// The current join, if [`join`](Self::join) was called.
    join: Option<JoinAttempt>,
    /// While a stream message is handled: where its one answer goes, until it is given.
    answer_to: Option<SocketAddr>,
    transmits: Vec<Transmit>,
    events: VecDeque<Event>,
    stats: Stats,
    /// While a datagram's frames are applied: its sender, to whom stale accusations are
    /// answered directly (see [`state`]).
    stale_sender: Option<SocketAddr>,
    /// The refutations to send back to `stale_sender` once the datagram is applied.
    stale_replies: Vec<Frame>,
}

impl Swim {
    /// A member with this identity, alone in its cluster until it joins one. Fails if the
    /// configuration or the identity is invalid. `now` dates this member's own state;
    /// its periodic work is scheduled from its first input, not from `now` (see
    /// [timers](self#timers)).
    pub fn new(identity: Identity, config: Config, now: u64) -> Result<Self, ConfigError> {
        config.validate()?;
        identity.validate(config.max_tags_bytes)?;
        let rng = match config.seed {
            Some(s) => SmallRng::seed_from_u64(s),
            None => SmallRng::from_os_rng(),
        };
        let codec = Codec::new(
            &config.cluster_label,
            config.keyring.clone(),
            config.replay_window,
        );
        Ok(Self {
            awareness: Awareness::new(if config.lifeguard {
                config.awareness_max_multiplier
            } else {
                1
            }),
            local: Member {
                identity,
                incarnation: 0,
                state: MemberState::Alive,
                state_since: now,
            },
            config,
            codec,
            leaving: false,
            table: Table::default(),
            rng,
            broadcasts: BroadcastQueue::default(),
            suspicions: HashMap::new(),
            schedule: ProbeSchedule::default(),
            round: None,
            relays: Vec::new(),
            next_seq: 0,
            next_probe_at: u64::MAX,
            next_gossip_at: u64::MAX,
            next_push_pull_at: u64::MAX,
            next_reconnect_at: u64::MAX,
            next_reap_at: u64::MAX,
            started: false,
            join: None,
            answer_to: None,
            transmits: Vec::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
            stale_sender: None,
            stale_replies: Vec::new(),
        })
    }

    /// Schedules the periodic work from `now`, at the first input of any kind: a member
    /// built long before it is first driven does not find every period already due and
    /// fire them all at once.
    fn start(&mut self, now: u64) {
        if self.started {
            return;
        }
        self.started = true;
        // Random offsets, so members do not tick in lockstep.
        let mut jitter = |d: std::time::Duration| {
            let d = nanos(d);
            if d == 0 {
                u64::MAX
            } else {
                now.saturating_add(rand::Rng::random_range(&mut self.rng, 0..d))
            }
        };
        self.next_probe_at = jitter(self.config.probe_interval);
        self.next_gossip_at = jitter(self.config.gossip_interval);
        self.next_push_pull_at = jitter(self.config.push_pull_interval);
        self.next_reconnect_at = jitter(self.config.reconnect_interval);
        self.next_reap_at = now.saturating_add(nanos(self.config.probe_interval));
    }

    /// This member as it announces itself.
    pub fn local(&self) -> &Member {
        &self.local
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Every other member this member knows (failed and left ones until reaped).
    pub fn members(&self) -> impl Iterator<Item = &Member> + '_ {
        self.table.iter()
    }

    /// One member by name (this member included).
    pub fn member(&self, name: &str) -> Option<&Member> {
        if name == self.local.name() {
            Some(&self.local)
        } else {
            self.table.get(name)
        }
    }

    /// How many other members are alive or suspect (as many as [`live`](Self::live)
    /// yields).
    pub fn live_members(&self) -> usize {
        self.table.live()
    }

    /// The other members alive or suspect: the live view, without filtering
    /// [`members`](Self::members) by [`MemberState::is_live`].
    pub fn live(&self) -> impl Iterator<Item = &Member> + '_ {
        self.table.iter().filter(|m| m.state.is_live())
    }

    /// Lifeguard's local health score (0 is healthy).
    pub fn health_score(&self) -> u32 {
        self.awareness.score()
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// How many updates wait in the dissemination queue.
    pub fn pending_updates(&self) -> usize {
        self.broadcasts.len()
    }

    /// Whether [`leave`](Self::leave) was called.
    pub fn is_leaving(&self) -> bool {
        self.leaving
    }

    /// The keyring, to rotate keys at run time (`None` if packets are not sealed).
    pub fn keyring_mut(&mut self) -> Option<&mut Keyring> {
        self.codec.keyring_mut()
    }

    /// Leaves gracefully: the others will see [`Event::Leave`], not `Failed`. The leave
    /// is sent at once, in one small datagram each, to every member this one holds alive
    /// or suspect, and then gossiped like any update; a ping answered while leaving
    /// carries it too. Keep driving the member until [`leave_spread`](Self::leave_spread)
    /// (a few gossip intervals) before dropping it, so that a member that lost the direct
    /// datagram hears it by gossip.
    ///
    /// Why every member directly: gossip reaches the members that stay only through the
    /// members that heard the leave and relay it. When many members stop at once (a
    /// deploy, a scale-down, a test cluster torn down) the relays are stopping too, or
    /// already crashed while still held alive, so most leaves die out before they reach
    /// the members that stay, which then see the leavers fail after their suspicion
    /// timeout instead of leave. One datagram per member, once per leave, is cheap.
    pub fn leave(&mut self, now: u64) {
        self.start(now);
        if self.leaving {
            return;
        }
        self.leaving = true;
        self.round = None;
        self.local.state = MemberState::Left;
        self.local.state_since = now;
        let name = self.local.name().to_owned();
        let frame = self.leave_frame();
        self.broadcasts
            .enqueue(&name, crate::gossip::codec::frame_bytes(&frame));
        let mut body = Vec::with_capacity(64);
        begin_body(&mut body);
        encode_frame(&frame, &mut body);
        let live: Vec<SocketAddr> = self
            .table
            .iter()
            .filter(|m| m.state.is_live())
            .map(|m| m.gossip_addr())
            .collect();
        for to in live {
            self.push_transmit(to, None, &body, false);
        }
        self.gossip_round(now);
    }

    /// Whether this member left and its leave has been gossiped as many times as any
    /// update is (the [retransmit limit](Config::retransmit_limit)), after the direct
    /// datagrams [`leave`](Self::leave) sent to every member: from then on stopping the
    /// member loses nothing of the leave. `false` before `leave`.
    pub fn leave_spread(&self) -> bool {
        self.leaving && !self.broadcasts.contains(self.local.name())
    }

    /// This member's own death declaration: its leave.
    pub(crate) fn leave_frame(&self) -> Frame {
        Frame::Dead(Dead {
            incarnation: self.local.incarnation,
            name: self.local.name().to_owned(),
            from: self.local.name().to_owned(),
        })
    }

    /// Replaces this member's tags and spreads them (others see [`Event::Update`]).
    /// Fails, changing nothing, if they exceed [`Config::max_tags_bytes`].
    pub fn set_tags(
        &mut self,
        tags: BTreeMap<String, String>,
        now: u64,
    ) -> Result<(), ConfigError> {
        self.start(now);
        let next = self.local.identity.clone().with_tags(tags);
        next.validate(self.config.max_tags_bytes)?;
        self.local.identity.set_tags(next.tags().clone());
        self.announce();
        Ok(())
    }

    /// Replaces this member's service address and spreads it.
    pub fn set_service_addr(&mut self, addr: Option<SocketAddr>, now: u64) {
        self.start(now);
        self.local.identity.set_service_addr(addr);
        self.announce();
    }

    fn announce(&mut self) {
        if self.leaving {
            return;
        }
        self.local.incarnation = self.local.incarnation.saturating_add(1);
        let me = self.local.clone();
        self.enqueue_alive(&me);
    }

    /// Handles one received datagram from `from`.
    pub fn handle_datagram(&mut self, from: SocketAddr, packet: &[u8], now: u64) {
        self.receive(from, packet, Transport::Datagram, now);
    }

    /// Handles one complete stream message from `from`: a request read from an inbound
    /// connection (`from` is that connection's peer address; the one
    /// [`Answer`](StreamKind::Answer) this call may queue goes back on it), or the
    /// answer read on the stream opened for a [`Request`](StreamKind::Request) transmit
    /// (`from` is that transmit's `to`).
    pub fn handle_stream(&mut self, from: SocketAddr, message: &[u8], now: u64) {
        self.receive(from, message, Transport::Stream, now);
    }

    fn receive(&mut self, from: SocketAddr, packet: &[u8], transport: Transport, now: u64) {
        self.start(now);
        let max = match transport {
            Transport::Datagram => self.config.max_packet_size,
            Transport::Stream => self.config.max_stream_size,
        };
        self.stats.packets_received += 1;
        self.stats.bytes_received += packet.len() as u64;
        if packet.len() > max {
            self.stats.drops.record(DropReason::Oversized);
            return;
        }
        let body = match self.codec.open(packet) {
            Ok(b) => b,
            Err(r) => {
                self.stats.drops.record(r);
                return;
            }
        };
        let (table, local) = (&self.table, &self.local);
        let decoded = decode_body_filtered(&body, |h| {
            if h.name == local.name() {
                h.incarnation < local.incarnation
            } else {
                table
                    .get(h.name)
                    .is_some_and(|m| h.incarnation <= m.incarnation)
            }
        });
        let decoded = match decoded {
            Ok(d) => d,
            Err(r) => {
                self.stats.drops.record(r);
                return;
            }
        };
        self.stats.skipped_frames += u64::from(decoded.skipped);
        // A push-pull answer carries our whole state anyway; only datagrams get a reply.
        self.stale_sender = (transport == Transport::Datagram).then_some(from);
        self.answer_to = (transport == Transport::Stream).then_some(from);
        for frame in decoded.frames {
            match frame {
                Frame::Ping(p) => self.on_ping(from, p),
                Frame::StreamPing(p) => self.on_stream_ping(p, transport),
                Frame::IndirectPing(p) => self.on_indirect_ping(from, p, now),
                Frame::Ack(a) => self.on_ack(a, transport),
                Frame::Nack(n) => self.on_nack(n),
                Frame::PushPull(p) => self.on_push_pull(from, p, transport, now),
                Frame::Alive(a) => self.apply_alive(a, now),
                Frame::Suspect(s) => self.apply_suspect(s, now),
                Frame::Dead(d) => self.apply_dead(d, now),
            }
        }
        self.stale_sender = None;
        self.answer_to = None;
        self.reply_to_stale(from);
    }

    /// When [`handle_timeout`](Self::handle_timeout) next has work (nanoseconds):
    /// `u64::MAX` when nothing is scheduled, 0 before the first input (so that a driver
    /// that sleeps until the deadline starts the member at once). Any input may move it
    /// earlier: read it again after each. See [timers](self#timers).
    pub fn next_deadline(&self) -> u64 {
        if !self.started {
            return 0;
        }
        let mut d = self
            .probe_deadline()
            .min(self.join_deadline())
            .min(self.next_gossip_at)
            .min(self.next_push_pull_at)
            .min(self.next_reconnect_at)
            .min(self.next_reap_at);
        for s in self.suspicions.values() {
            d = d.min(s.deadline());
        }
        d
    }

    /// Does every piece of work due at `now` (whose deadline is at or before it), once,
    /// and nothing else: an early call does nothing, a late one does the overdue work
    /// once and schedules the next from `now`. See [timers](self#timers).
    pub fn handle_timeout(&mut self, now: u64) {
        self.start(now);
        self.probe_timeouts(now);
        self.join_timeouts(now);
        if now >= self.next_probe_at {
            self.probe_tick(now);
        }
        if now >= self.next_gossip_at {
            self.next_gossip_at = now.saturating_add(nanos(self.config.gossip_interval));
            self.gossip_round(now);
        }
        if now >= self.next_push_pull_at {
            self.push_pull_tick(now);
        }
        if now >= self.next_reconnect_at {
            self.reconnect_tick(now);
        }
        if now >= self.next_reap_at {
            self.next_reap_at = next_after(now, nanos(self.config.probe_interval));
            self.reap(now);
        }
        if self.suspicions.values().any(|s| s.deadline() <= now) {
            let expired: Vec<(String, u64)> = self
                .suspicions
                .iter()
                .filter(|(_, s)| s.deadline() <= now)
                .map(|(n, s)| (n.clone(), s.incarnation))
                .collect();
            for (name, incarnation) in expired {
                self.suspicions.remove(&name);
                let from = self.local.name().to_owned();
                self.apply_dead(
                    Dead {
                        incarnation,
                        name,
                        from,
                    },
                    now,
                );
            }
        }
    }

    /// Takes the packets queued for sending.
    pub fn drain_transmits(&mut self) -> std::vec::Drain<'_, Transmit> {
        self.transmits.drain(..)
    }

    /// Takes the next membership event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Gossips queued updates to a few random members (live ones, and recently failed
    /// ones so that a wrongly failed member hears of it).
    fn gossip_round(&mut self, now: u64) {
        if self.broadcasts.len() == 0 {
            return;
        }
        let dead_for = nanos(self.config.gossip_to_the_dead_time);
        let targets = random_members(&self.table, &mut self.rng, self.config.gossip_nodes, |m| {
            m.state.is_live()
                || (m.state == MemberState::Dead && now.saturating_sub(m.state_since) < dead_for)
        });
        for i in targets {
            if self.broadcasts.len() == 0 {
                break;
            }
            let to = self.table.at(i).gossip_addr();
            self.send_datagram(to, &[], true);
        }
    }

    /// Sends `frames` to `to` in one datagram, filled up with queued updates when
    /// `piggyback` is set. A packet with nothing in it is not sent.
    pub(crate) fn send_datagram(&mut self, to: SocketAddr, frames: &[Frame], piggyback: bool) {
        self.send_frames(to, None, frames, piggyback);
    }

    /// Sends `frames` to `to` in one packet (a datagram, or a stream message of this
    /// kind), filled up with queued updates (to at most `max_packet_size` bytes on
    /// either transport) when `piggyback` is set. A packet with nothing in it is not
    /// sent.
    pub(crate) fn send_frames(
        &mut self,
        to: SocketAddr,
        stream: Option<StreamKind>,
        frames: &[Frame],
        piggyback: bool,
    ) {
        let mut body = Vec::with_capacity(256);
        begin_body(&mut body);
        for f in frames {
            encode_frame(f, &mut body);
        }
        if piggyback {
            let budget = self
                .config
                .max_packet_size
                .saturating_sub(self.codec.overhead() + body.len());
            let limit = self.config.retransmit_limit(self.table.live() + 1);
            self.broadcasts.fill(&mut body, budget, limit);
        }
        if body.len() > 1 {
            self.push_transmit(to, stream, &body, false);
        }
    }

    /// Takes the one answer the stream message being handled may get: where it goes,
    /// or `None` if it was already answered (counted). Only called for stream input.
    pub(crate) fn take_answer_to(&mut self) -> Option<SocketAddr> {
        let to = self.answer_to.take();
        if to.is_none() {
            self.stats.surplus_stream_requests += 1;
        }
        to
    }

    /// Queues `body`, sealed, as a datagram (`stream` is `None`) or a stream message.
    pub(crate) fn push_transmit(
        &mut self,
        to: SocketAddr,
        stream: Option<StreamKind>,
        body: &[u8],
        push_pull: bool,
    ) {
        let transport = if stream.is_some() {
            Transport::Stream
        } else {
            Transport::Datagram
        };
        let bytes = self.codec.seal(body);
        self.stats.packets_sent += 1;
        self.stats.bytes_sent += bytes.len() as u64;
        self.transmits.push(Transmit {
            to,
            transport,
            stream,
            bytes,
            push_pull,
        });
    }
}

#[cfg(test)]
mod driving_tests;
