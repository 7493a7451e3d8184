//! Failure detection: SWIM's probe, with Lifeguard's nacks and buddy system.
//!
//! Each protocol period this member pings one other member, taken in a shuffled round
//! robin (every live member once per round, in a fresh random order each round, new
//! members slotted in at a random place), so every member is probed within two rounds.
//! Without an ack within the probe timeout it asks `indirect_checks` random members to
//! ping the target for it (ping-req); each of them relays the ack, or a nack if the
//! target stays silent (Lifeguard). Without any ack by the end of the period the target
//! is suspected.
//!
//! Lifeguard touches every step: the period and timeout are stretched by the local
//! health score ([`awareness`](super::awareness)); a failed probe without the expected
//! nacks raises the score (this member is probably the slow one); a successful probe
//! lowers it; and a ping to a suspected member carries the suspicion itself (buddy
//! system), so the member learns of it at once and can refute.
//!
//! # TCP fallback
//! With [`Config::tcp_fallback_ping`](super::Config::tcp_fallback_ping) (on by
//! default, as in memberlist), the step that sends the indirect probes also sends the
//! target a [`StreamPing`](super::message::Frame::StreamPing) over the stream transport
//! (with the buddy system's suspicion in front when the target is suspected). The
//! target answers with an [`Ack`] on the same stream (filled up with queued updates, as
//! a datagram would be, so a member cut off from UDP still spreads its refutations);
//! an ack received through [`Swim::handle_stream`](super::Swim::handle_stream) before
//! the period ends closes the round exactly as a direct or relayed ack does, health
//! score included (memberlist counts such a round as a success too). So a member whose
//! datagrams are lost while its streams pass (a firewall dropping UDP, a one-way UDP
//! partition) is not suspected. Such a round is counted in
//! [`Stats::tcp_fallback_saves`](super::Stats::tcp_fallback_saves): a round only the
//! fallback saved means UDP is broken somewhere, and an operator should hear of it. A
//! crashed member answers neither way, so its detection is unchanged: the round still
//! ends, and the target is suspected, at the end of the period. The fallback adds one
//! stream exchange per round that reaches its indirect step, nothing to rounds whose
//! direct ping is answered. A member of an older build skips the unknown frame and does
//! not answer; the round then ends as it would without the fallback.

use super::config::nanos;
use std::net::SocketAddr;

use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::Rng;

use super::message::{Ack, Frame, IndirectPing, Nack, Ping, Suspect};
use super::state::Table;
use super::{Member, MemberState, StreamKind, Swim, Transport};

/// At most this many indirect probes are relayed at once; further requests are refused
/// (a bound on what a flood of ping-reqs can make this member hold).
const MAX_RELAYS: usize = 1024;

/// How long a relay waits for the target's ack before sending a nack, in nanoseconds:
/// 80% of the time the requester leaves for indirect probes (its probe timeout, or the
/// rest of its period after the timeout if that is shorter, as with the WAN preset's
/// 3 s in 5 s), so that the nack arrives before the requester gives up. The requester
/// asks for indirect probes one probe timeout into its period and gives up at the end
/// of the period; a nack sent after a full probe timeout would arrive just after that
/// (the presets' timeouts are half the period or more), never count, and make every
/// failed probe look like the requester's own fault. The relay assumes the requester
/// runs the same configuration and is healthy, as the protocol does everywhere.
pub(crate) fn nack_after(config: &super::Config) -> u64 {
    let timeout = nanos(config.probe_timeout);
    let rest = (nanos(config.probe_interval)).saturating_sub(timeout);
    timeout.min(rest) / 5 * 4
}

/// The shuffled round-robin order of probe targets.
#[derive(Debug, Clone, Default)]
pub(crate) struct ProbeSchedule {
    order: Vec<String>,
    cursor: usize,
}

impl ProbeSchedule {
    /// Slots a new member in at a random place among those not yet probed this round.
    pub(crate) fn insert(&mut self, name: &str, rng: &mut SmallRng) {
        self.order.push(name.to_owned());
        let last = self.order.len() - 1;
        let at = rng.random_range(self.cursor..=last);
        self.order.swap(at, last);
    }

    /// The next live member to probe, starting a new shuffled round when one ends.
    pub(crate) fn next(&mut self, table: &Table, rng: &mut SmallRng) -> Option<String> {
        for _ in 0..2 {
            while self.cursor < self.order.len() {
                let name = &self.order[self.cursor];
                self.cursor += 1;
                if table.get(name).is_some_and(|m| m.state.is_live()) {
                    return Some(name.clone());
                }
            }
            self.order.clear();
            self.order.extend(
                table
                    .iter()
                    .filter(|m| m.state.is_live())
                    .map(|m| m.name().to_owned()),
            );
            self.order.shuffle(rng);
            self.cursor = 0;
            if self.order.is_empty() {
                return None;
            }
        }
        None
    }
}

/// The probe of the current period.
#[derive(Debug, Clone)]
pub(crate) struct ProbeRound {
    pub(crate) seq: u32,
    pub(crate) target: String,
    pub(crate) addr: SocketAddr,
    pub(crate) indirect_at: u64,
    pub(crate) end_at: u64,
    pub(crate) indirect_sent: bool,
    pub(crate) expected_nacks: u32,
    pub(crate) nacks: u32,
}

/// A ping made on another member's behalf.
#[derive(Debug, Clone)]
pub(crate) struct Relay {
    pub(crate) seq: u32,
    pub(crate) requester: SocketAddr,
    pub(crate) requester_seq: u32,
    pub(crate) nack: bool,
    pub(crate) deadline: u64,
}

/// Up to `k` distinct random members accepted by `filter` (a bounded number of tries,
/// like memberlist's `kRandomNodes`).
pub(crate) fn random_members(
    table: &Table,
    rng: &mut SmallRng,
    k: usize,
    mut filter: impl FnMut(&Member) -> bool,
) -> Vec<usize> {
    let n = table.len();
    // `k` comes from the configuration (up to `usize::MAX`); at most `n` can be picked.
    let mut out = Vec::with_capacity(k.min(n));
    if n == 0 || k == 0 {
        return out;
    }
    for _ in 0..3 * n {
        if out.len() >= k {
            break;
        }
        let i = rng.random_range(0..n);
        if !out.contains(&i) && filter(table.at(i)) {
            out.push(i);
        }
    }
    out
}

impl Swim {
    fn next_seq(&mut self) -> u32 {
        self.next_seq = self.next_seq.wrapping_add(1);
        self.next_seq
    }

    /// Starts a protocol period: pings the next member.
    pub(crate) fn probe_tick(&mut self, now: u64) {
        let period = self.awareness.scale(self.config.probe_interval);
        self.next_probe_at = now.saturating_add(period);
        if self.leaving {
            return;
        }
        if self.round.is_some() {
            // The period shrank (health improved) before the last round ended.
            self.end_round(now);
        }
        let Some(target) = self.schedule.next(&self.table, &mut self.rng) else {
            return;
        };
        let m = self
            .table
            .get(&target)
            .expect("schedule yields known members");
        let (addr, incarnation, suspected) = (
            m.gossip_addr(),
            m.incarnation,
            m.state == MemberState::Suspect,
        );
        let seq = self.next_seq();
        let timeout = self.awareness.scale(self.config.probe_timeout);
        let mut frames = Vec::with_capacity(2);
        if suspected && self.config.lifeguard {
            // Buddy system: tell the suspect directly. Before the ping, so that the
            // refutation it causes rides on the ack.
            frames.push(Frame::Suspect(Suspect {
                incarnation,
                name: target.clone(),
                from: self.local.name().to_owned(),
            }));
        }
        frames.push(Frame::Ping(Ping {
            seq,
            target: target.clone(),
        }));
        self.round = Some(ProbeRound {
            seq,
            target,
            addr,
            indirect_at: now.saturating_add(timeout),
            end_at: now.saturating_add(period),
            indirect_sent: false,
            expected_nacks: 0,
            nacks: 0,
        });
        self.send_datagram(addr, &frames, true);
    }

    /// Fires the due steps of the current probe and of relayed probes.
    pub(crate) fn probe_timeouts(&mut self, now: u64) {
        if let Some(r) = &self.round {
            if now >= r.end_at {
                self.end_round(now);
            } else if !r.indirect_sent && now >= r.indirect_at {
                self.indirect_probe();
            }
        }
        if self.relays.iter().any(|r| r.deadline <= now) {
            let (due, keep): (Vec<Relay>, Vec<Relay>) =
                self.relays.drain(..).partition(|r| r.deadline <= now);
            self.relays = keep;
            for r in due.into_iter().filter(|r| r.nack) {
                self.send_datagram(
                    r.requester,
                    &[Frame::Nack(Nack {
                        seq: r.requester_seq,
                    })],
                    true,
                );
            }
        }
    }

    /// The earliest deadline of the probe machinery.
    pub(crate) fn probe_deadline(&self) -> u64 {
        let mut d = self.next_probe_at;
        if let Some(r) = &self.round {
            d = d.min(r.end_at);
            if !r.indirect_sent {
                d = d.min(r.indirect_at);
            }
        }
        self.relays.iter().fold(d, |d, r| d.min(r.deadline))
    }

    fn indirect_probe(&mut self) {
        let Some(r) = self.round.as_ref() else {
            return;
        };
        let (seq, target, addr) = (r.seq, r.target.clone(), r.addr);
        let helpers = random_members(
            &self.table,
            &mut self.rng,
            self.config.indirect_checks,
            |m| m.state == MemberState::Alive && m.name() != target,
        );
        let nack = self.config.lifeguard;
        let helper_addrs: Vec<SocketAddr> = helpers
            .iter()
            .map(|&i| self.table.at(i).gossip_addr())
            .collect();
        for to in &helper_addrs {
            let frame = Frame::IndirectPing(IndirectPing {
                seq,
                target: target.clone(),
                target_addr: addr,
                nack,
            });
            self.send_datagram(*to, &[frame], true);
        }
        if let Some(r) = self.round.as_mut() {
            r.indirect_sent = true;
            r.expected_nacks = if nack { helper_addrs.len() as u32 } else { 0 };
        }
        // A driver without streams could not carry the fallback.
        if self.config.tcp_fallback_ping && !self.config.datagram_only {
            self.stream_probe(seq, target, addr);
        }
    }

    /// The TCP fallback: pings the target of the round over the stream transport.
    fn stream_probe(&mut self, seq: u32, target: String, addr: SocketAddr) {
        let mut frames = Vec::with_capacity(2);
        if self.config.lifeguard {
            if let Some(m) = self
                .table
                .get(&target)
                .filter(|m| m.state == MemberState::Suspect)
            {
                // Buddy system, as on the direct ping: a member cut off from datagrams
                // learns here that it is suspected, and its refutation rides on the ack.
                frames.push(Frame::Suspect(Suspect {
                    incarnation: m.incarnation,
                    name: target.clone(),
                    from: self.local.name().to_owned(),
                }));
            }
        }
        frames.push(Frame::StreamPing(Ping { seq, target }));
        self.stats.tcp_fallback_pings += 1;
        self.send_frames(addr, Some(StreamKind::Request), &frames, false);
    }

    /// Closes the period's probe without an ack: adjust health, suspect the target.
    fn end_round(&mut self, now: u64) {
        let Some(r) = self.round.take() else {
            return;
        };
        let delta = if r.expected_nacks > 0 {
            i64::from(r.expected_nacks.saturating_sub(r.nacks))
        } else {
            1
        };
        self.awareness.apply(delta);
        if let Some(m) = self.table.get(&r.target) {
            if m.state.is_live() {
                let s = Suspect {
                    incarnation: m.incarnation,
                    name: r.target,
                    from: self.local.name().to_owned(),
                };
                self.apply_suspect(s, now);
            }
        }
    }

    pub(crate) fn on_ping(&mut self, from: SocketAddr, p: Ping) {
        if p.target != self.local.name() {
            self.stats.misdirected += 1;
            return;
        }
        let ack = Frame::Ack(Ack { seq: p.seq });
        if self.leaving {
            // Whoever still probes a leaving member missed its leave: the answer says it.
            let leave = self.leave_frame();
            self.send_datagram(from, &[ack, leave], true);
        } else {
            self.send_datagram(from, &[ack], true);
        }
    }

    /// A TCP fallback ping: answered with an ack on the stream it came on. One that
    /// arrives in a datagram is ignored (only streams carry it).
    pub(crate) fn on_stream_ping(&mut self, p: Ping, transport: Transport) {
        if transport != Transport::Stream {
            return;
        }
        if p.target != self.local.name() {
            self.stats.misdirected += 1;
            return;
        }
        let Some(to) = self.take_answer_to() else {
            return;
        };
        self.send_frames(
            to,
            Some(StreamKind::Answer),
            &[Frame::Ack(Ack { seq: p.seq })],
            true,
        );
    }

    pub(crate) fn on_indirect_ping(&mut self, from: SocketAddr, p: IndirectPing, now: u64) {
        if self.relays.len() >= MAX_RELAYS || p.target == self.local.name() {
            return;
        }
        let seq = self.next_seq();
        self.relays.push(Relay {
            seq,
            requester: from,
            requester_seq: p.seq,
            nack: p.nack,
            deadline: now.saturating_add(nack_after(&self.config)),
        });
        let ping = Frame::Ping(Ping {
            seq,
            target: p.target,
        });
        self.send_datagram(p.target_addr, &[ping], true);
    }

    pub(crate) fn on_ack(&mut self, a: Ack, transport: Transport) {
        if self.round.as_ref().is_some_and(|r| r.seq == a.seq) {
            // The first ack closes the round; a later one no longer matches. One that
            // came over a stream is the TCP fallback's: UDP failed both ways of probing.
            if transport == Transport::Stream {
                self.stats.tcp_fallback_saves += 1;
            }
            self.round = None;
            self.awareness.apply(-1);
            return;
        }
        if transport == Transport::Stream {
            // Relays ping over datagrams only; a stream ack answers no relay.
            return;
        }
        if let Some(i) = self.relays.iter().position(|r| r.seq == a.seq) {
            let r = self.relays.swap_remove(i);
            let ack = Frame::Ack(Ack {
                seq: r.requester_seq,
            });
            self.send_datagram(r.requester, &[ack], true);
        }
    }

    pub(crate) fn on_nack(&mut self, n: Nack) {
        if let Some(r) = self.round.as_mut() {
            if r.seq == n.seq {
                r.nacks += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gossip::proto::Config;

    #[test]
    fn relays_nack_before_the_requester_gives_up_in_every_preset() {
        for cfg in [Config::lan(), Config::wan(), Config::local()] {
            let timeout = cfg.probe_timeout.as_nanos() as u64;
            let period = cfg.probe_interval.as_nanos() as u64;
            let nack = nack_after(&cfg);
            // Indirect probes leave at `timeout`; the nack must be back before `period`
            // with a margin of a tenth of the indirect window for the round trips.
            assert!(nack > 0);
            assert!(
                timeout + nack + (period - timeout) / 10 <= period,
                "{cfg:?}"
            );
        }
        assert_eq!(nack_after(&Config::lan()), 200_000_000);
        assert_eq!(nack_after(&Config::wan()), 1_600_000_000);
    }
}
