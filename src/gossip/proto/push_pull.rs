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

use super::config::nanos;
use std::net::SocketAddr;

use rand::Rng;
use serde::Serialize;

use super::message::{kind, Alive, Dead, PushPull, Suspect};
use super::probe::random_members;
use super::{Identity, MemberState, Swim, Transport};
use crate::gossip::codec::{begin_body, put};

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

impl Swim {
    /// Sends this member's full state to `to`.
    pub(crate) fn send_push_pull(&mut self, to: SocketAddr, join: bool, reply: bool) {
        // Serialized from borrows: the same bytes as a `PushPull` of owned records,
        // without cloning every identity.
        let members: Vec<RecordRef<'_>> = std::iter::once(&self.local)
            .chain(self.table.iter())
            .map(|m| RecordRef {
                identity: &m.identity,
                incarnation: m.incarnation,
                state: m.state,
            })
            .collect();
        let state = PushPullRef {
            join,
            reply,
            members,
        };
        let mut body = Vec::new();
        begin_body(&mut body);
        put(kind::PUSH_PULL, &state, &mut body);
        if body.len() + self.codec.overhead() > self.config.max_stream_size {
            self.stats.oversized_sends += 1;
            return;
        }
        self.push_transmit(to, Transport::Stream, &body, true);
    }

    /// Merges a received state, then answers it unless it is itself an answer.
    pub(crate) fn on_push_pull(&mut self, from: SocketAddr, pp: PushPull, now: u64) {
        let reply = !pp.reply;
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
        if reply {
            self.send_push_pull(from, false, true);
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
            self.send_push_pull(to, false, false);
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
            self.send_push_pull(to, false, false);
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
