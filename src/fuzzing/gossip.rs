//! The gossip edges: the codec, a running member's datagram and stream handlers, and the
//! runtime's stream framing.
//!
//! The member under test ("me") is built the same way for every input: it knows two
//! peers from a gossiped update and has sent its first probe, so acks, nacks and
//! indirect probes meet a probe round in flight. The input comes from the first peer's
//! address. With a keyring, the fuzzer cannot forge a sealed packet, so the keyed targets
//! deliver each input twice: as received (it must be dropped unless it authenticates,
//! checked with the cipher directly, not through the codec under test), and sealed with
//! the key as an authenticated peer would send it, which reaches the body decoder.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{ChaCha20Poly1305, KeyInit, Nonce, Tag};

use super::ready;
use crate::gossip::codec::{
    begin_body, decode_body, decode_body_filtered, encode_frame, Codec, DropReason,
};
use crate::gossip::keyring::{NONCE_LEN, TAG_LEN};
use crate::gossip::proto::message::{Alive, Frame, Ping};
use crate::gossip::proto::{
    Config, Identity, MemberState, Stats, StreamKind, Swim, Transmit, Transport,
};
use crate::gossip::runtime::stream::{read_message, write_message, ReadError};
use crate::gossip::Keyring;

/// The member under test.
pub(crate) const ME: SocketAddr = addr(1);
/// The peer every input comes from.
pub(crate) const PEER: SocketAddr = addr(2);
/// The other peer the member knows.
pub(crate) const OTHER: SocketAddr = addr(3);
/// The keyed targets' key and cluster label.
pub(crate) const KEY: [u8; 32] = [0x5a; 32];
pub(crate) const LABEL: &str = "fuzz";
/// The framing target's bound on a message (the runtime uses `max_stream_size`; a
/// smaller one keeps each run cheap and reaches the same code).
pub(crate) const FRAMING_MAX: usize = 65_536;
/// After an input, the member's timers run at each of its next few deadlines (probe
/// timeouts, indirect probes, gossip), then in jumps that double from 250 ms (about a
/// minute in all: suspicions expire, push-pull and reaping come due). A late
/// `handle_timeout` is what a loaded runtime does, and stepping each deadline of a
/// minute would cost most of each run.
const EXACT_TIMER_STEPS: usize = 8;
const FIRST_JUMP_NS: u64 = 250_000_000;
const TIMER_JUMPS: u32 = 8;
/// The most timer steps while the member under test is set up.
const SETUP_STEPS: usize = 64;

const fn addr(i: u8) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, i), 7946))
}

/// Whether the member seals its packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sealing {
    Plain,
    Keyed,
}

impl Sealing {
    fn config(self) -> Config {
        let (keyring, cluster_label) = match self {
            Sealing::Plain => (None, String::new()),
            Sealing::Keyed => (Some(Keyring::new(KEY)), LABEL.to_owned()),
        };
        Config {
            keyring,
            cluster_label,
            seed: Some(7),
            ..Config::lan()
        }
    }

    /// A peer's codec: what it seals, the member opens.
    pub(crate) fn codec(self) -> Codec {
        let c = self.config();
        Codec::new(&c.cluster_label, c.keyring, 0)
    }
}

/// `frames` as one body.
pub(crate) fn body(frames: &[Frame]) -> Vec<u8> {
    let mut b = Vec::new();
    begin_body(&mut b);
    for f in frames {
        encode_frame(f, &mut b);
    }
    b
}

pub(crate) fn alive(name: &str, at: SocketAddr, incarnation: u64) -> Frame {
    Frame::Alive(Alive {
        incarnation,
        identity: Identity::new(name, at).with_tag("zone", "a"),
    })
}

/// The member under test, at time `now`, with `probe` out (if its first probe round
/// sent one).
pub(crate) struct Running {
    pub(crate) swim: Swim,
    pub(crate) now: u64,
    pub(crate) probe: Option<Ping>,
    sealing: Sealing,
}

pub(crate) fn running(sealing: Sealing) -> Running {
    let me = Identity::new("me", ME).with_tag("role", "fuzz");
    let mut swim = Swim::new(me, sealing.config(), 0).expect("a valid configuration");
    let peers = body(&[alive("peer", PEER, 3), alive("other", OTHER, 1)]);
    swim.handle_datagram(PEER, &sealing.codec().seal(&peers), 0);
    assert_eq!(swim.live_members(), 2, "the member learns its two peers");
    let mut now = 0;
    let mut probe = None;
    for _ in 0..SETUP_STEPS {
        now = swim.next_deadline().max(now);
        swim.handle_timeout(now);
        for t in swim.drain_transmits().collect::<Vec<_>>() {
            for f in opened(sealing, &t) {
                if let Frame::Ping(p) = f {
                    probe = Some(p);
                }
            }
        }
        if probe.is_some() {
            break;
        }
    }
    while swim.poll_event().is_some() {}
    Running {
        swim,
        now,
        probe,
        sealing,
    }
}

/// The frames of a packet the member sent; it must be one its peers can open.
fn opened(sealing: Sealing, t: &Transmit) -> Vec<Frame> {
    let body = sealing
        .codec()
        .open(&t.bytes)
        .unwrap_or_else(|r| panic!("the member sent a packet its peers drop ({r:?})"));
    let d = decode_body(&body)
        .unwrap_or_else(|r| panic!("the member sent a body its peers drop ({r:?})"));
    assert!(!d.frames.is_empty(), "the member sent an empty packet");
    d.frames
}

/// What a dropped packet must leave unchanged.
#[derive(Debug, PartialEq)]
struct View {
    local: (Identity, u64, MemberState),
    members: Vec<(Identity, u64, MemberState, u64)>,
    next_deadline: u64,
    pending_updates: usize,
    health: u32,
}

fn view(s: &Swim) -> View {
    let l = s.local();
    let mut members: Vec<_> = s
        .members()
        .map(|m| {
            (
                m.identity().clone(),
                m.incarnation(),
                m.state(),
                m.state_since(),
            )
        })
        .collect();
    members.sort_by(|a, b| a.0.name().cmp(b.0.name()));
    View {
        local: (l.identity().clone(), l.incarnation(), l.state()),
        members,
        next_deadline: s.next_deadline(),
        pending_updates: s.pending_updates(),
        health: s.health_score(),
    }
}

impl Running {
    /// Hands `packet` to the member on `transport` and checks everything that must hold
    /// after it, then runs the timers it set. Returns why it was dropped, if it was, and
    /// what the member sent in answer.
    fn deliver(
        &mut self,
        transport: Transport,
        packet: &[u8],
    ) -> (Option<DropReason>, Vec<Transmit>) {
        self.now += 1_000_000;
        let before = view(&self.swim);
        let stats = *self.swim.stats();
        match transport {
            Transport::Datagram => self.swim.handle_datagram(PEER, packet, self.now),
            Transport::Stream => self.swim.handle_stream(PEER, packet, self.now),
        }
        let after = *self.swim.stats();
        let dropped = drop_reason(&stats, &after);
        let mut expected = stats;
        expected.packets_received += 1;
        expected.bytes_received += packet.len() as u64;
        if let Some(r) = dropped {
            expected.drops.record(r);
            assert_eq!(
                after, expected,
                "a drop counts once and changes nothing else"
            );
            assert_eq!(
                view(&self.swim),
                before,
                "a dropped packet changes the view"
            );
            assert_eq!(
                self.swim.drain_transmits().count(),
                0,
                "a dropped packet is answered"
            );
            assert!(
                self.swim.poll_event().is_none(),
                "a dropped packet raises an event"
            );
        } else {
            assert_eq!(after.packets_received, expected.packets_received);
            assert_eq!(after.bytes_received, expected.bytes_received);
            assert_eq!(after.drops, stats.drops);
            self.check_accepted(transport, packet);
        }
        let local = self.swim.local();
        assert!(
            local.incarnation() >= before.local.1,
            "only this member raises its own incarnation, and only upwards"
        );
        let sent = self.check();
        let answers: Vec<&Transmit> = sent
            .iter()
            .filter(|t| t.stream == Some(StreamKind::Answer))
            .collect();
        let most = usize::from(transport == Transport::Stream);
        assert!(answers.len() <= most, "{} answers", answers.len());
        assert!(
            answers.iter().all(|t| t.to == PEER),
            "an answer to another peer"
        );
        self.run_timers();
        (dropped, sent)
    }

    /// What only the format allows is accepted.
    fn check_accepted(&self, transport: Transport, packet: &[u8]) {
        let max = match transport {
            Transport::Datagram => self.swim.config().max_packet_size,
            Transport::Stream => self.swim.config().max_stream_size,
        };
        assert!(
            packet.len() <= max,
            "accepted a packet over its transport's bound"
        );
        match self.sealing {
            Sealing::Plain => assert!(
                packet.len() >= 3 && packet[0] == 0 && packet[1] == 0 && packet[2] != 0,
                "accepted a packet that is not plain, unlabelled and versioned"
            ),
            Sealing::Keyed => assert!(
                authentic(packet),
                "accepted a packet the key does not authenticate"
            ),
        }
    }

    /// The member's state is consistent and what it sends is valid; returns what it sent.
    fn check(&mut self) -> Vec<Transmit> {
        let s = &self.swim;
        let local = s.local();
        assert_eq!(
            local.state(),
            MemberState::Alive,
            "input made a running member leave"
        );
        let live = s.members().filter(|m| m.state().is_live()).count();
        assert_eq!(s.live_members(), live, "the live count matches the states");
        let mut names: Vec<&str> = s.members().map(|m| m.name()).collect();
        assert!(!names.contains(&local.name()), "the member lists itself");
        names.sort_unstable();
        let n = names.len();
        names.dedup();
        assert_eq!(names.len(), n, "a name is listed twice");
        assert!(
            s.members().all(|m| m.identity().wire_valid()),
            "an invalid identity is kept"
        );
        let max_packet = s.config().max_packet_size;
        let max_stream = s.config().max_stream_size;
        let sealing = self.sealing;
        let sent: Vec<Transmit> = self.swim.drain_transmits().collect();
        for t in &sent {
            assert_eq!(
                t.stream.is_some(),
                t.transport == Transport::Stream,
                "a stream mark on a datagram, or a stream without one"
            );
            match t.transport {
                Transport::Datagram => assert!(
                    t.bytes.len() <= max_packet,
                    "a datagram of {} bytes exceeds max_packet_size",
                    t.bytes.len()
                ),
                Transport::Stream => assert!(t.bytes.len() <= max_stream),
            }
            opened(sealing, t);
        }
        let me = self.swim.local().name().to_owned();
        while let Some(e) = self.swim.poll_event() {
            assert_ne!(e.member().name(), me, "an event about the member itself");
        }
        sent
    }

    /// Runs the timers the input may have set (see [`EXACT_TIMER_STEPS`]): each step
    /// leaves nothing due.
    fn run_timers(&mut self) {
        let exact = (0..EXACT_TIMER_STEPS).map(|_| None);
        let jumps = (0..TIMER_JUMPS).map(|k| Some(FIRST_JUMP_NS << k));
        for jump in exact.chain(jumps) {
            let at = match jump {
                // Nothing scheduled: nothing to run.
                None if self.swim.next_deadline() == u64::MAX => break,
                None => self.swim.next_deadline().max(self.now),
                Some(j) => self.now.saturating_add(j),
            };
            self.now = at;
            self.swim.handle_timeout(at);
            assert!(
                self.swim.next_deadline() > at,
                "handle_timeout({at}) left work due at {}",
                self.swim.next_deadline()
            );
            self.check();
        }
    }
}

/// The one reason whose count rose by one, or `None` if none rose; panics on anything
/// else.
fn drop_reason(before: &Stats, after: &Stats) -> Option<DropReason> {
    const REASONS: [DropReason; 7] = [
        DropReason::Oversized,
        DropReason::Truncated,
        DropReason::Malformed,
        DropReason::WrongLabel,
        DropReason::Unencrypted,
        DropReason::Unauthenticated,
        DropReason::Replayed,
    ];
    let risen: Vec<_> = REASONS
        .into_iter()
        .filter(|&r| after.drops.get(r) != before.drops.get(r))
        .collect();
    match risen[..] {
        [] => None,
        [r] => {
            assert_eq!(
                after.drops.get(r),
                before.drops.get(r) + 1,
                "{r:?} counted twice"
            );
            Some(r)
        }
        _ => panic!("one packet counted as dropped for {risen:?}"),
    }
}

/// Whether `packet` is sealed with [`KEY`] under [`LABEL`], checked with the cipher
/// directly rather than through the codec under test.
fn authentic(packet: &[u8]) -> bool {
    let header_len = 2 + LABEL.len();
    if packet.len() < header_len + NONCE_LEN + TAG_LEN
        || packet[0] != 1
        || usize::from(packet[1]) != LABEL.len()
        || &packet[2..header_len] != LABEL.as_bytes()
    {
        return false;
    }
    let (header, rest) = packet.split_at(header_len);
    let (nonce, rest) = rest.split_at(NONCE_LEN);
    let (cipher, tag) = rest.split_at(rest.len() - TAG_LEN);
    let mut buf = cipher.to_vec();
    ChaCha20Poly1305::new(&KEY.into())
        .decrypt_in_place_detached(
            Nonce::from_slice(nonce),
            header,
            &mut buf,
            Tag::from_slice(tag),
        )
        .is_ok()
}

/// The gossip codec on its own: the envelope (plain and sealed) and the body decoder.
pub fn gossip_codec(data: &[u8]) {
    // A plain envelope is `mode label_len label body`: opening and sealing again gives
    // back the very bytes.
    let plain = Codec::new("", None, 0);
    if let Ok(body) = plain.clone().open(data) {
        assert_eq!(
            plain.seal(&body),
            data,
            "plain open then seal changes the packet"
        );
        body_round_trips(&body);
    }
    let mut keyed = Sealing::Keyed.codec();
    if keyed.open(data).is_ok() {
        assert!(
            authentic(data),
            "the codec opened a packet the key does not authenticate"
        );
    }
    let sealed = keyed.seal(data);
    assert_eq!(sealed.len(), data.len() + keyed.overhead());
    assert_eq!(
        keyed.open(&sealed).as_deref(),
        Ok(data),
        "seal then open changes the body"
    );
    body_round_trips(data);
}

/// A decoded body encodes to one that decodes to the same frames (unknown frames and
/// unread payload tails are dropped on the way, so the bytes may differ), and leaving
/// alive updates out as stale keeps every other frame.
fn body_round_trips(data: &[u8]) {
    let Ok(d) = decode_body(data) else {
        return;
    };
    let again = decode_body(&body(&d.frames)).expect("a re-encoded body decodes");
    assert_eq!(
        again.frames, d.frames,
        "frames change through encode and decode"
    );
    assert_eq!(again.skipped, 0);
    let filtered =
        decode_body_filtered(data, |_| true).expect("a decodable body with stale alives");
    let others: Vec<_> = d
        .frames
        .into_iter()
        .filter(|f| !matches!(f, Frame::Alive(_)))
        .collect();
    assert_eq!(
        filtered.frames, others,
        "a stale alive changes the other frames"
    );
}

/// A UDP packet from a peer into a running member without a keyring.
pub fn gossip_datagram(data: &[u8]) {
    running(Sealing::Plain).deliver(Transport::Datagram, data);
}

/// A UDP packet from a peer into a running member with a keyring: as received, then
/// sealed with the key.
pub fn gossip_datagram_keyed(data: &[u8]) {
    keyed(Transport::Datagram, data);
}

/// A stream message (push-pull, join, stream ping) from a peer into a running member
/// without a keyring.
pub fn gossip_stream(data: &[u8]) {
    running(Sealing::Plain).deliver(Transport::Stream, data);
}

/// A stream message from a peer into a running member with a keyring: as received, then
/// sealed with the key.
pub fn gossip_stream_keyed(data: &[u8]) {
    keyed(Transport::Stream, data);
}

fn keyed(transport: Transport, data: &[u8]) {
    let mut member = running(Sealing::Keyed);
    member.deliver(transport, data);
    let sealed = Sealing::Keyed.codec().seal(data);
    if let (Some(r), _) = member.deliver(transport, &sealed) {
        assert!(
            matches!(
                r,
                DropReason::Truncated | DropReason::Malformed | DropReason::Oversized
            ),
            "an authentic packet was dropped as {r:?}"
        );
    }
}

/// The runtime's stream reader (a big-endian `u32` length, then the message) over the
/// bytes a peer sent on a connection, then the message into a running member, whose
/// answer is framed back the same way.
pub fn gossip_stream_framing(data: &[u8]) {
    let read = ready(read_message(&mut &data[..], FRAMING_MAX));
    let Some(len) = data.get(..4) else {
        // No byte is a clean close; part of a length prefix is a truncated message.
        assert!(
            if data.is_empty() {
                matches!(read, Err(ReadError::Closed))
            } else {
                matches!(read, Err(ReadError::Io))
            },
            "{read:?} from {} bytes",
            data.len()
        );
        return;
    };
    let len = u32::from_be_bytes(len.try_into().expect("4 bytes")) as usize;
    let arrived = data.len() - 4;
    let message = match read {
        Ok(m) => m,
        Err(ReadError::Oversized) => {
            assert!(
                len > FRAMING_MAX,
                "a {len}-byte message refused as oversized"
            );
            return;
        }
        Err(ReadError::Io) => {
            assert!(
                len <= FRAMING_MAX && arrived < len,
                "a complete message failed"
            );
            return;
        }
        Err(ReadError::Closed) => panic!("closed after a length was read"),
    };
    assert!(
        len <= FRAMING_MAX && arrived >= len,
        "read a message that is not all there"
    );
    assert_eq!(
        message,
        &data[4..4 + len],
        "the message is the bytes after the length"
    );
    let mut framed = Vec::new();
    ready(write_message(&mut framed, &message)).expect("writes to memory");
    assert_eq!(
        framed,
        &data[..4 + len],
        "framing the message again changes it"
    );

    let mut member = running(Sealing::Plain);
    let max = member.swim.config().max_stream_size;
    let (_, sent) = member.deliver(Transport::Stream, &message);
    for t in sent {
        if t.transport == Transport::Stream && t.to == PEER {
            let mut wire = Vec::new();
            ready(write_message(&mut wire, &t.bytes)).expect("writes to memory");
            let back = ready(read_message(&mut &wire[..], max));
            assert_eq!(
                back.ok().as_deref(),
                Some(&t.bytes[..]),
                "the answer reads back"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuzzing::seed_corpus;

    #[test]
    fn the_member_under_test_has_a_probe_in_flight() {
        for sealing in [Sealing::Plain, Sealing::Keyed] {
            let r = running(sealing);
            assert!(r.probe.is_some(), "{sealing:?}");
            assert_eq!(r.swim.live_members(), 2);
        }
    }

    #[test]
    fn the_gossip_seeds_reach_past_the_envelope() {
        // Seeds that a member drops would start the fuzzer at the envelope again.
        for seed in seed_corpus() {
            let (sealing, transport) = match seed.target {
                "gossip_datagram" => (Sealing::Plain, Transport::Datagram),
                "gossip_stream" => (Sealing::Plain, Transport::Stream),
                "gossip_datagram_keyed" => (Sealing::Keyed, Transport::Datagram),
                "gossip_stream_keyed" => (Sealing::Keyed, Transport::Stream),
                _ => continue,
            };
            let packet = if seed.name.starts_with("seed-body-") {
                sealing.codec().seal(&seed.bytes)
            } else {
                seed.bytes.clone()
            };
            let (dropped, _) = running(sealing).deliver(transport, &packet);
            assert_eq!(dropped, None, "{}/{}", seed.target, seed.name);
        }
    }
}
