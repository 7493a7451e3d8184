//! The messages members exchange.
//!
//! A packet carries a sequence of *frames*. A probe packet carries one [`Ping`] (or
//! [`Ack`], [`IndirectPing`], [`Nack`]) followed by as many membership updates
//! ([`Alive`], [`Suspect`], [`Dead`]) as fit: updates piggyback on the probes. A gossip
//! packet carries updates only. A [`PushPull`] carries a full state and travels over the
//! stream transport (no size limit but [`Config::max_stream_size`](super::Config::max_stream_size)).
//! A [`Frame::StreamPing`] (a [`Ping`] sent over the stream transport as the TCP
//! fallback of a failed probe, see [`probe`](super::probe)) is answered by an [`Ack`] on
//! the same stream.
//!
//! The byte layout and its compatibility rules are in [`codec`](crate::gossip::codec).

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::member::{Identity, MemberState, MAX_NAME_LEN};

/// Asks the receiver, by name, to answer with an [`Ack`] carrying the same `seq`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ping {
    /// Matches the answer to the probe.
    pub seq: u32,
    /// The name of the member the prober means to reach, so that a ping sent to a reused
    /// address is not answered by a stranger.
    pub target: String,
}

/// Asks the receiver to ping `target` on the sender's behalf and relay the ack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndirectPing {
    /// The requester's probe sequence number, echoed in the relayed [`Ack`] or [`Nack`].
    pub seq: u32,
    /// The probed member's name.
    pub target: String,
    /// The probed member's gossip address.
    pub target_addr: SocketAddr,
    /// Whether the requester wants a [`Nack`] when the target does not answer in time
    /// (Lifeguard: a missing nack tells the requester that *it* is the slow one).
    pub nack: bool,
}

/// The answer to a [`Ping`] (direct or relayed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// The probe's sequence number.
    pub seq: u32,
}

/// A relay's report that the target of an [`IndirectPing`] did not answer in time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nack {
    /// The requester's probe sequence number.
    pub seq: u32,
}

/// A member is alive with this identity at this incarnation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alive {
    /// The incarnation the identity belongs to.
    pub incarnation: u64,
    /// The member's identity (name first, see `AliveHead`).
    pub identity: Identity,
}

/// The first two fields of an [`Alive`], decoded without the rest (borrowed) so that a
/// stale update is dropped without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub(crate) struct AliveHead<'a> {
    /// The incarnation.
    pub(crate) incarnation: u64,
    /// The member's name.
    pub(crate) name: &'a str,
}

/// `from` suspects the member `name` at `incarnation`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suspect {
    /// The incarnation the suspicion is about.
    pub incarnation: u64,
    /// The suspected member.
    pub name: String,
    /// Who suspects it (independent suspicions shorten the timeout).
    pub from: String,
}

/// `from` declares `name` dead at `incarnation`; `from == name` means a graceful leave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dead {
    /// The incarnation the declaration is about.
    pub incarnation: u64,
    /// The dead (or leaving) member.
    pub name: String,
    /// Who declares it.
    pub from: String,
}

/// One member's state in a [`PushPull`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    /// The member's identity.
    pub identity: Identity,
    /// Its incarnation.
    pub incarnation: u64,
    /// The sender's belief about it.
    pub state: MemberState,
}

/// A full-state exchange (anti-entropy, and joining).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushPull {
    /// The sender is joining through the receiver.
    pub join: bool,
    /// This is the answer to a push-pull (not to be answered again).
    pub reply: bool,
    /// Every member the sender knows, itself included.
    pub members: Vec<MemberRecord>,
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A direct probe.
    Ping(Ping),
    /// A direct probe sent over the stream transport (the TCP fallback of a probe whose
    /// datagram ping went unanswered); answered by an [`Ack`] on the same stream. Only
    /// honoured when it arrives on a stream.
    StreamPing(Ping),
    /// A request to probe on the sender's behalf.
    IndirectPing(IndirectPing),
    /// An answer to a probe.
    Ack(Ack),
    /// A relay's negative answer.
    Nack(Nack),
    /// A full-state exchange.
    PushPull(PushPull),
    /// A member is alive.
    Alive(Alive),
    /// A member is suspected.
    Suspect(Suspect),
    /// A member is dead or left.
    Dead(Dead),
}

/// The type byte of each frame on the wire. Values are never reused; a decoder skips
/// types it does not know.
pub mod kind {
    /// [`Ping`](super::Ping).
    pub const PING: u8 = 1;
    /// [`IndirectPing`](super::IndirectPing).
    pub const INDIRECT_PING: u8 = 2;
    /// [`Ack`](super::Ack).
    pub const ACK: u8 = 3;
    /// [`Nack`](super::Nack).
    pub const NACK: u8 = 4;
    /// [`PushPull`](super::PushPull).
    pub const PUSH_PULL: u8 = 5;
    /// [`Frame::StreamPing`](super::Frame::StreamPing) (a [`Ping`](super::Ping) payload).
    /// New in this build: older members skip it, so a stream ping to one of them goes
    /// unanswered and the probe ends as it would without the fallback.
    pub const STREAM_PING: u8 = 6;
    /// [`Alive`](super::Alive).
    pub const ALIVE: u8 = 16;
    /// [`Suspect`](super::Suspect).
    pub const SUSPECT: u8 = 17;
    /// [`Dead`](super::Dead).
    pub const DEAD: u8 = 18;
}

impl Frame {
    /// The frame's type byte.
    pub fn kind(&self) -> u8 {
        match self {
            Frame::Ping(_) => kind::PING,
            Frame::StreamPing(_) => kind::STREAM_PING,
            Frame::IndirectPing(_) => kind::INDIRECT_PING,
            Frame::Ack(_) => kind::ACK,
            Frame::Nack(_) => kind::NACK,
            Frame::PushPull(_) => kind::PUSH_PULL,
            Frame::Alive(_) => kind::ALIVE,
            Frame::Suspect(_) => kind::SUSPECT,
            Frame::Dead(_) => kind::DEAD,
        }
    }

    /// Whether every name and identity in the frame is within the wire bounds.
    pub(crate) fn wire_valid(&self) -> bool {
        let name_ok = |n: &str| !n.is_empty() && n.len() <= MAX_NAME_LEN;
        match self {
            Frame::Ping(p) | Frame::StreamPing(p) => name_ok(&p.target),
            Frame::IndirectPing(p) => name_ok(&p.target),
            Frame::Ack(_) | Frame::Nack(_) => true,
            Frame::PushPull(p) => p.members.iter().all(|m| m.identity.wire_valid()),
            Frame::Alive(a) => a.identity.wire_valid(),
            Frame::Suspect(s) => name_ok(&s.name) && name_ok(&s.from),
            Frame::Dead(d) => name_ok(&d.name) && name_ok(&d.from),
        }
    }
}
