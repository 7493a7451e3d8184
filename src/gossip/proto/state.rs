//! The member table and the rules that order updates about a member.
//!
//! The rules are memberlist's (and the SWIM paper's), keyed on the incarnation number
//! that only the member itself raises:
//! - **alive** at incarnation `i` overrides any state with an incarnation below `i`;
//! - **suspect** at `i` overrides alive at `i` or below (and confirms a running
//!   suspicion, which shortens it);
//! - **dead** (or **left**, a dead declared by the member itself) at `i` overrides alive
//!   and suspect at `i` or below; nothing but a higher alive brings a member back.
//! - A member that hears itself suspected or declared dead *refutes*: it raises its
//!   incarnation above the accusation and gossips alive (and Lifeguard counts it against
//!   its own health). A restarted member that joins with a low incarnation refutes its
//!   old death the same way, so the new incarnation wins.
//!
//! Incarnations saturate at `u64::MAX` rather than wrap (a wrapped one would lose to
//! every stale update): an accusation at `u64::MAX` is answered with an alive at
//! `u64::MAX`, which does not override it, so such an accusation cannot be refuted. No
//! member raises its incarnation that far by itself (one step per refutation or update);
//! only a hostile peer sends one, and with a keyring only a peer holding the key. A
//! member at `u64::MAX` cannot spread later updates of itself either.
//!
//! In a full-state merge, a remote *dead* becomes a local *suspect* (memberlist's rule):
//! a member is not killed on hearsay from one peer, it is given the chance to refute.
//!
//! One addition to memberlist: an accusation (suspect or dead) *older* than an alive we
//! hold means someone missed the refutation, so we gossip the refutation again
//! (`correct_stale`), and, when the accusation came in a datagram from a live member,
//! we also send the refutation straight back to that member. The sender gossips the
//! stale accusation because it is still in its dissemination queue, which holds one
//! update per member and would have been replaced by the refutation had it arrived: the
//! sender is the one that missed it. Gossiping alone reaches it only by chance; in
//! simulation (128 members, 10% loss, 5% slow members, ten minutes, 500 ms probes) a
//! member that heard a suspicion just after the refutation had spread, and then missed
//! every copy of it, let its suspicion time out and declared a healthy member failed
//! about once in five runs; the direct reply removed those.

use super::config::nanos;
use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;

use super::message::{Alive, Dead, Frame, Suspect};
use super::suspicion::Suspicion;
use super::{Event, Member, MemberState, Swim};

/// At most this many refutations are sent back for one received datagram.
const MAX_STALE_REPLIES: usize = 4;
use crate::gossip::codec::frame_bytes;

/// A member name as a hash-map key, stored inline when short (most names are), so that
/// a lookup compares against bytes already in the map's bucket instead of following a
/// pointer. Receiving an update costs one lookup, so this is the hottest path of a
/// large cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
enum NameKey {
    Inline { len: u8, buf: [u8; INLINE_NAME] },
    Heap(Box<str>),
}

const INLINE_NAME: usize = 30;

impl NameKey {
    fn new(name: &str) -> Self {
        if name.len() <= INLINE_NAME {
            let mut buf = [0; INLINE_NAME];
            buf[..name.len()].copy_from_slice(name.as_bytes());
            NameKey::Inline {
                len: name.len() as u8,
                buf,
            }
        } else {
            NameKey::Heap(name.into())
        }
    }

    fn as_str(&self) -> &str {
        match self {
            NameKey::Inline { len, buf } => {
                std::str::from_utf8(&buf[..usize::from(*len)]).expect("copied from a str")
            }
            NameKey::Heap(s) => s,
        }
    }
}

impl Borrow<str> for NameKey {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl Hash for NameKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // The same hash as the borrowed `str`, as `Borrow` requires.
        self.as_str().hash(state);
    }
}

/// Every other member this member knows, in a vector (for uniform random picks) with a
/// name index.
#[derive(Debug, Clone, Default)]
pub(crate) struct Table {
    nodes: Vec<Member>,
    index: HashMap<NameKey, usize>,
    live: usize,
}

impl Table {
    pub(crate) fn get(&self, name: &str) -> Option<&Member> {
        self.index.get(name).map(|&i| &self.nodes[i])
    }

    pub(crate) fn get_mut(&mut self, name: &str) -> Option<&mut Member> {
        self.index.get(name).map(|&i| &mut self.nodes[i])
    }

    pub(crate) fn at(&self, i: usize) -> &Member {
        &self.nodes[i]
    }

    pub(crate) fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Members alive or suspect.
    pub(crate) fn live(&self) -> usize {
        self.live
    }

    pub(crate) fn iter(&self) -> std::slice::Iter<'_, Member> {
        self.nodes.iter()
    }

    pub(crate) fn insert(&mut self, member: Member) {
        if member.state.is_live() {
            self.live += 1;
        }
        self.index
            .insert(NameKey::new(member.identity.name()), self.nodes.len());
        self.nodes.push(member);
    }

    pub(crate) fn remove(&mut self, name: &str) -> Option<Member> {
        let i = self.index.remove(name)?;
        let m = self.nodes.swap_remove(i);
        if i < self.nodes.len() {
            let moved = NameKey::new(self.nodes[i].identity.name());
            self.index.insert(moved, i);
        }
        if m.state.is_live() {
            self.live -= 1;
        }
        Some(m)
    }

    /// Changes a member's state, keeping the live count.
    pub(crate) fn set_state(&mut self, name: &str, state: MemberState, now: u64) {
        let Some(&i) = self.index.get(name) else {
            return;
        };
        let m = &mut self.nodes[i];
        match (m.state.is_live(), state.is_live()) {
            (true, false) => self.live -= 1,
            (false, true) => self.live += 1,
            _ => {}
        }
        if m.state != state {
            m.state = state;
            m.state_since = now;
        }
    }
}

impl Swim {
    /// Applies an alive update (from gossip, a push-pull or a join); an accepted one is
    /// gossiped on.
    pub(crate) fn apply_alive(&mut self, a: Alive, now: u64) {
        let name = a.identity.name();
        if name == self.local.identity.name() {
            if self.leaving || a.incarnation < self.local.incarnation {
                return;
            }
            if a.incarnation == self.local.incarnation && a.identity == self.local.identity {
                return;
            }
            // Someone announces us with our incarnation or a newer one but not as we
            // are (an old life of ours, or stale tags): announce the truth, newer.
            self.refute(a.incarnation, false);
            return;
        }
        match self.table.get(name) {
            None => {
                let member = Member {
                    identity: a.identity,
                    incarnation: a.incarnation,
                    state: MemberState::Alive,
                    state_since: now,
                };
                self.schedule.insert(member.name(), &mut self.rng);
                self.enqueue_alive(&member);
                self.events.push_back(Event::Join(member.clone()));
                self.table.insert(member);
            }
            Some(m) => {
                if a.incarnation <= m.incarnation {
                    return;
                }
                if m.state.is_live() && a.identity.gossip_addr() != m.gossip_addr() {
                    // Two live members claim one name: keep the one we know until it
                    // fails (memberlist's conflict rule).
                    self.stats.conflicts += 1;
                    return;
                }
                let was = m.state;
                let changed = a.identity != m.identity;
                let name = name.to_owned();
                self.suspicions.remove(&name);
                self.table.set_state(&name, MemberState::Alive, now);
                let m = self.table.get_mut(&name).expect("present");
                m.identity = a.identity;
                m.incarnation = a.incarnation;
                let m = m.clone();
                self.enqueue_alive(&m);
                if !was.is_live() {
                    self.schedule.insert(&name, &mut self.rng);
                    self.events.push_back(Event::Join(m));
                } else if changed {
                    self.events.push_back(Event::Update(m));
                }
            }
        }
    }

    /// Applies a suspicion.
    pub(crate) fn apply_suspect(&mut self, s: Suspect, now: u64) {
        if s.name == self.local.identity.name() {
            if !self.leaving && s.incarnation >= self.local.incarnation {
                self.refute(s.incarnation, true);
            } else if !self.leaving {
                self.correct_stale(&s.name);
            }
            return;
        }
        let Some(m) = self.table.get(&s.name) else {
            return;
        };
        if s.incarnation < m.incarnation {
            self.correct_stale(&s.name);
            return;
        }
        if let Some(running) = self.suspicions.get_mut(&s.name) {
            if s.incarnation == running.incarnation {
                if running.confirm(&s.from) {
                    let name = s.name.clone();
                    self.broadcasts
                        .enqueue(&name, frame_bytes(&Frame::Suspect(s)));
                }
                return;
            }
        }
        if !m.state.is_live() {
            return;
        }
        let name = s.name.clone();
        let n = self.table.live() + 1;
        let min = nanos(self.config.suspicion_min_timeout(n));
        let (k, max) = if self.config.lifeguard {
            // Expect confirmations from the members able to make them, at most
            // suspicion_mult - 2 (memberlist's choice).
            let k = self.config.suspicion_mult.saturating_sub(2);
            let k = if (n as u32).saturating_sub(2) < k {
                0
            } else {
                k
            };
            (
                k,
                min.saturating_mul(u64::from(self.config.suspicion_max_timeout_mult)),
            )
        } else {
            (0, min)
        };
        self.suspicions.insert(
            name.clone(),
            Suspicion::new(s.incarnation, &s.from, k, min, max, now),
        );
        self.table.set_state(&name, MemberState::Suspect, now);
        self.table.get_mut(&name).expect("present").incarnation = s.incarnation;
        self.broadcasts
            .enqueue(&name, frame_bytes(&Frame::Suspect(s)));
    }

    /// Applies a death (or, when the member declares itself, a graceful leave).
    pub(crate) fn apply_dead(&mut self, d: Dead, now: u64) {
        if d.name == self.local.identity.name() {
            if !self.leaving && d.incarnation >= self.local.incarnation {
                self.refute(d.incarnation, true);
            } else if !self.leaving {
                self.correct_stale(&d.name);
            }
            return;
        }
        let Some(m) = self.table.get(&d.name) else {
            return;
        };
        if d.incarnation < m.incarnation {
            self.correct_stale(&d.name);
            return;
        }
        if !m.state.is_live() {
            return;
        }
        let left = d.from == d.name;
        let state = if left {
            MemberState::Left
        } else {
            MemberState::Dead
        };
        self.suspicions.remove(&d.name);
        self.table.set_state(&d.name, state, now);
        let m = self.table.get_mut(&d.name).expect("present");
        m.incarnation = d.incarnation;
        let m = m.clone();
        let name = d.name.clone();
        self.broadcasts.enqueue(&name, frame_bytes(&Frame::Dead(d)));
        self.events.push_back(if left {
            Event::Leave(m)
        } else {
            Event::Failed(m)
        });
    }

    /// An accusation older than what we know about `name` is still circulating: someone
    /// missed the refutation. Gossip the refutation (our newer alive) again, unless an
    /// update about `name` is already queued. Without this, a member that missed every
    /// copy of a refutation keeps the stale suspicion until it times out and declares a
    /// healthy member failed; with it, the stale accusation it gossips draws the
    /// refutation back to it.
    pub(crate) fn correct_stale(&mut self, name: &str) {
        let m = if name == self.local.identity.name() {
            self.local.clone()
        } else {
            match self.table.get(name) {
                Some(m) if m.state == MemberState::Alive => m.clone(),
                _ => return,
            }
        };
        if self.stale_sender.is_some() && self.stale_replies.len() < MAX_STALE_REPLIES {
            self.stale_replies.push(Frame::Alive(Alive {
                incarnation: m.incarnation,
                identity: m.identity.clone(),
            }));
        }
        if self.broadcasts.contains(name) {
            return;
        }
        self.stats.stale_corrections += 1;
        self.enqueue_alive(&m);
    }

    /// Sends the refutations gathered while applying a datagram from `from` back to it,
    /// one per datagram (an alive update always fits one), if `from` is a live member's
    /// gossip address: nobody else is sent anything, so a forged accusation cannot make
    /// this member send traffic to an arbitrary address.
    pub(crate) fn reply_to_stale(&mut self, from: SocketAddr) {
        if self.stale_replies.is_empty() {
            return;
        }
        let replies = std::mem::take(&mut self.stale_replies);
        if !self
            .table
            .iter()
            .any(|m| m.state.is_live() && m.gossip_addr() == from)
        {
            return;
        }
        for frame in &replies {
            self.stats.stale_replies += 1;
            self.send_datagram(from, std::slice::from_ref(frame), false);
        }
        // Keep the buffer's capacity for the next time.
        self.stale_replies = replies;
        self.stale_replies.clear();
    }

    /// Announces this member alive with an incarnation above `accused`.
    pub(crate) fn refute(&mut self, accused: u64, count_against_health: bool) {
        // Saturates: an accusation at `u64::MAX` cannot be outbid (module docs).
        self.local.incarnation = self.local.incarnation.max(accused).saturating_add(1);
        self.stats.refutations += 1;
        if count_against_health {
            self.awareness.apply(1);
        }
        let me = self.local.clone();
        self.enqueue_alive(&me);
    }

    pub(crate) fn enqueue_alive(&mut self, m: &Member) {
        let frame = Frame::Alive(Alive {
            incarnation: m.incarnation,
            identity: m.identity.clone(),
        });
        self.broadcasts.enqueue(m.name(), frame_bytes(&frame));
    }

    /// Forgets failed and left members older than the reap timeout.
    pub(crate) fn reap(&mut self, now: u64) {
        if self.table.live() == self.table.len() {
            return; // nobody failed or left: skip the scan
        }
        let after = nanos(self.config.reap_timeout);
        let expired: Vec<String> = self
            .table
            .iter()
            .filter(|m| !m.state.is_live() && now.saturating_sub(m.state_since) >= after)
            .map(|m| m.name().to_owned())
            .collect();
        for name in expired {
            if let Some(m) = self.table.remove(&name) {
                self.events.push_back(Event::Reap(m));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::hash_map::RandomState;
    use std::hash::BuildHasher;

    #[test]
    fn name_keys_hash_and_compare_like_their_str() {
        let rs = RandomState::new();
        for name in ["a", "node-0001", &"x".repeat(30), &"y".repeat(31), "zoné"] {
            let k = NameKey::new(name);
            assert_eq!(k.as_str(), name);
            assert_eq!(rs.hash_one(&k), rs.hash_one(name));
            let mut m = HashMap::new();
            m.insert(k, 1);
            assert_eq!(m.get(name), Some(&1));
        }
        assert_ne!(NameKey::new("ab"), NameKey::new("abc"));
    }
}
