//! Anti-entropy: two members exchange their full state and merge it.
//!
//! Gossip is probabilistic; a member that missed an update (loss, a partition, a late
//! join) catches up here. A push-pull is one [`PushPull`] message each way over the
//! stream transport (TCP in a real runtime): the initiator sends its state, the
//! receiver merges it and answers with its own (built after the merge, so that any
//! refutation the merge caused is in the answer), and the initiator merges that.
//!
//! A merge gossips on everything it changes (memberlist's choice): a member that joins
//! through one seed learns the cluster from the seed's state and helps spread it, which
//! makes joins converge quickly when the members' views are still sparse, at the cost
//! of more traffic during a mass cold start. Suspicions a merge raises are gossiped too,
//! so that the accused hears of them and refutes.
//!
//! Three things start one: [`Swim::join`] (to each seed address), the periodic push-pull
//! with one random live member, and the periodic *reconnect* with one random failed
//! member (with probability failed / live, as in Serf), which is how two halves of a
//! healed partition find each other again.
//!
//! # Over datagrams
//! A push-pull that arrives in a datagram is answered in a datagram. Either side's
//! state is then cut to one datagram: the sender itself first, then the live members
//! that fit in `max_packet_size`, taken from a random place in its table so that
//! successive exchanges cover different members. That is how a member whose driver has
//! no streams ([`Config::datagram_only`](super::Config::datagram_only)) joins and
//! keeps in sync: the cut is what bounds the answer to one datagram, as an ack is
//! (an unauthenticated request of a few dozen bytes never draws more than one
//! `max_packet_size` answer). Such an exchange is never answered again, and an answer
//! from a join's seed completes the join as a stream answer does.

use super::config::nanos;
use std::net::SocketAddr;

use rand::Rng;
use serde::Serialize;

use super::message::{kind, Alive, Dead, PushPull, Suspect};
use super::probe::random_members;
use super::{Identity, Member, MemberState, StreamKind, Swim, Transport};
use crate::gossip::codec::{begin_body, put};

/// Bytes a push-pull frame adds around its records, at most: kind, length (a 5-byte
/// varint at most), the two flags and the record count (a varint of up to 5 bytes).
const PUSH_PULL_FRAME_OVERHEAD: usize = 1 + 5 + 2 + 5;

/// [`MemberRecord`](super::message::MemberRecord), borrowed.
#[derive(Serialize)]
struct RecordRef<'a> {
    identity: &'a Identity,
    incarnation: u64,
    state: MemberState,
}

/// [`PushPull`], borrowed.
#[derive(Serialize)]
struct PushPullRef<'a> {
    join: bool,
    reply: bool,
    members: Vec<RecordRef<'a>>,
}

fn record(m: &Member) -> RecordRef<'_> {
    RecordRef {
        identity: &m.identity,
        incarnation: m.incarnation,
        state: m.state,
    }
}

/// A message body holding one push-pull frame of these records.
fn push_pull_body(join: bool, reply: bool, members: Vec<RecordRef<'_>>) -> Vec<u8> {
    let state = PushPullRef {
        join,
        reply,
        members,
    };
    let mut body = Vec::new();
    begin_body(&mut body);
    put(kind::PUSH_PULL, &state, &mut body);
    body
}

impl Swim {
    /// Sends this member's full state to `to` over a stream (`stream` says whether it
    /// opens the exchange or answers one). False if it was not sent (too large).
    pub(crate) fn send_push_pull(
        &mut self,
        to: SocketAddr,
        join: bool,
        reply: bool,
        stream: StreamKind,
    ) -> bool {
        // Serialized from borrows: the same bytes as a `PushPull` of owned records,
        // without cloning every identity.
        let members: Vec<RecordRef<'_>> = std::iter::once(&self.local)
            .chain(self.table.iter())
            .map(record)
            .collect();
        let body = push_pull_body(join, reply, members);
        if body.len() + self.codec.overhead() > self.config.max_stream_size {
            self.stats.oversized_sends += 1;
            return false;
        }
        self.push_transmit(to, Some(stream), &body, true);
        true
    }

    /// Sends `to` this member's state cut to one datagram (see
    /// [over datagrams](self#over-datagrams)).
    pub(crate) fn send_datagram_push_pull(&mut self, to: SocketAddr, join: bool, reply: bool) {
        let budget = self
            .config
            .max_packet_size
            .saturating_sub(self.codec.overhead() + 1 + PUSH_PULL_FRAME_OVERHEAD);
        let n = self.table.len();
        let start = if n == 0 {
            0
        } else {
            rand::Rng::random_range(&mut self.rng, 0..n)
        };
        let mut used = 0;
        let mut members = Vec::new();
        let candidates = std::iter::once(&self.local).chain(
            (0..n)
                .map(|i| self.table.at((start + i) % n))
                .filter(|m| m.state.is_live()),
        );
        for m in candidates {
            let r = record(m);
            let size = postcard::to_allocvec(&r).map_or(usize::MAX, |b| b.len());
            if used + size > budget {
                // A record too large for any datagram is skipped; otherwise stop.
                if size > budget {
                    continue;
                }
                break;
            }
            used += size;
            members.push(r);
        }
        let body = push_pull_body(join, reply, members);
        self.push_transmit(to, None, &body, false);
    }

    /// Sends a push-pull that opens an exchange with `to`: over a stream, or in a
    /// datagram when this member's driver has no streams.
    pub(crate) fn open_push_pull(&mut self, to: SocketAddr, join: bool) -> bool {
        if self.config.datagram_only {
            self.send_datagram_push_pull(to, join, false);
            true
        } else {
            self.send_push_pull(to, join, false, StreamKind::Request)
        }
    }

    /// Merges a received state, then answers it (on the transport it came on) unless it
    /// is itself an answer.
    pub(crate) fn on_push_pull(
        &mut self,
        from: SocketAddr,
        pp: PushPull,
        transport: Transport,
        now: u64,
    ) {
        let reply = !pp.reply;
        if pp.reply {
            self.join_answered(from);
        }
        let me = self.local.name().to_owned();
        for r in pp.members {
            match r.state {
                MemberState::Alive => self.apply_alive(
                    Alive {
                        incarnation: r.incarnation,
                        identity: r.identity,
                    },
                    now,
                ),
                // Hearsay of a failure is a suspicion here: the member may refute.
                MemberState::Suspect | MemberState::Dead => self.apply_suspect(
                    Suspect {
                        incarnation: r.incarnation,
                        name: r.identity.name().to_owned(),
                        from: me.clone(),
                    },
                    now,
                ),
                MemberState::Left => {
                    let name = r.identity.name().to_owned();
                    self.apply_dead(
                        Dead {
                            incarnation: r.incarnation,
                            name: name.clone(),
                            from: name,
                        },
                        now,
                    )
                }
            }
        }
        if !reply {
            return;
        }
        match transport {
            Transport::Datagram => self.send_datagram_push_pull(from, false, true),
            Transport::Stream => {
                if let Some(to) = self.take_answer_to() {
                    self.send_push_pull(to, false, true, StreamKind::Answer);
                }
            }
        }
    }

    /// Periodic push-pull with one random live member.
    pub(crate) fn push_pull_tick(&mut self, now: u64) {
        let every = self.config.push_pull_interval_for(self.table.live() + 1);
        self.next_push_pull_at = next_after(now, nanos(every));
        if self.leaving {
            return;
        }
        let pick = random_members(&self.table, &mut self.rng, 1, |m| {
            m.state == MemberState::Alive
        });
        if let Some(&i) = pick.first() {
            let to = self.table.at(i).gossip_addr();
            self.open_push_pull(to, false);
        }
    }

    /// Periodic push-pull with one random failed member (not one that left).
    pub(crate) fn reconnect_tick(&mut self, now: u64) {
        self.next_reconnect_at = next_after(now, nanos(self.config.reconnect_interval));
        if self.leaving {
            return;
        }
        let failed = self
            .table
            .iter()
            .filter(|m| m.state == MemberState::Dead)
            .count();
        if failed == 0 {
            return;
        }
        // Serf's rule: try with probability failed / live, so the cluster makes about one
        // attempt per failed member per interval however large it is.
        let p = (failed as f64 / (self.table.live().max(1)) as f64).min(1.0);
        if !self.rng.random_bool(p) {
            return;
        }
        let pick = random_members(&self.table, &mut self.rng, 1, |m| {
            m.state == MemberState::Dead
        });
        if let Some(&i) = pick.first() {
            let to = self.table.at(i).gossip_addr();
            self.open_push_pull(to, false);
        }
    }
}

/// `now + every`, or never when `every` is zero (the mechanism is off).
pub(crate) fn next_after(now: u64, every: u64) -> u64 {
    if every == 0 {
        u64::MAX
    } else {
        now.saturating_add(every)
    }
}
