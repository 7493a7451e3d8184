//! The wire format: envelope, version, frames; and every reason a packet is dropped.
//!
//! ```text
//! packet   = mode:u8  label_len:u8  label  (plain: body | sealed: nonce[12] ciphertext(body) tag[16])
//! body     = version:u8  frame*
//! frame    = kind:u8  len:varint(u32, LEB128)  payload[len]   (payload = postcard)
//! ```
//!
//! - `mode` is 0 for plain and 1 for sealed. When the member has a
//!   [`Keyring`], it seals everything it sends and accepts only sealed packets; the
//!   header (mode and label) is the associated data, so the cluster label is
//!   authenticated and two clusters sharing a key still cannot talk.
//! - **Compatibility.** `version` is the sender's protocol version ([`PROTOCOL_VERSION`]).
//!   A receiver accepts every version from 1 on: newer versions may only add frame kinds
//!   (which older receivers skip, counted in [`Stats::skipped_frames`](super::proto::Stats))
//!   or append fields at the end of a payload (which postcard leaves unread). Enums
//!   inside payloads (such as [`MemberState`](super::proto::MemberState)) are closed:
//!   a new variant needs a new frame kind, or older receivers drop the packet as
//!   malformed.
//! - Every length is checked before it is used: a malformed, truncated, oversized,
//!   unauthenticated or replayed packet is dropped whole (nothing in it is applied) and
//!   counted by [`DropReason`].
//! - Replays: sealed packets carry a random nonce; the receiver remembers the last
//!   [`Config::replay_window`](super::proto::Config::replay_window) nonces and drops a
//!   repeat. An older replay that slips past the window is harmless: every update is
//!   ordered by incarnation and every probe answer by sequence number, so re-applying an
//!   old packet changes nothing.

use std::borrow::Cow;
use std::collections::{HashSet, VecDeque};

use serde::Serialize;

use super::keyring::{Keyring, NONCE_LEN, TAG_LEN};
use super::proto::message::{kind, AliveHead, Frame};

/// The protocol version this build speaks.
pub(crate) const PROTOCOL_VERSION: u8 = 1;

const MODE_PLAIN: u8 = 0;
const MODE_SEALED: u8 = 1;

/// Why a received packet was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Larger than the configured maximum for its transport.
    Oversized,
    /// Shorter than its header or than a length it announced.
    Truncated,
    /// Not decodable: bad mode, version 0, bad payload, out-of-bounds fields.
    Malformed,
    /// Carries another cluster's label.
    WrongLabel,
    /// Plain, but this member requires sealed packets.
    Unencrypted,
    /// Sealed, but no installed key authenticates it (or this member has no keys).
    Unauthenticated,
    /// A sealed packet already received (same nonce).
    Replayed,
}

/// Dropped packets, counted by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DropCounts {
    /// See [`DropReason::Oversized`].
    pub oversized: u64,
    /// See [`DropReason::Truncated`].
    pub truncated: u64,
    /// See [`DropReason::Malformed`].
    pub malformed: u64,
    /// See [`DropReason::WrongLabel`].
    pub wrong_label: u64,
    /// See [`DropReason::Unencrypted`].
    pub unencrypted: u64,
    /// See [`DropReason::Unauthenticated`].
    pub unauthenticated: u64,
    /// See [`DropReason::Replayed`].
    pub replayed: u64,
}

impl DropCounts {
    /// Counts one drop.
    pub fn record(&mut self, reason: DropReason) {
        let c = match reason {
            DropReason::Oversized => &mut self.oversized,
            DropReason::Truncated => &mut self.truncated,
            DropReason::Malformed => &mut self.malformed,
            DropReason::WrongLabel => &mut self.wrong_label,
            DropReason::Unencrypted => &mut self.unencrypted,
            DropReason::Unauthenticated => &mut self.unauthenticated,
            DropReason::Replayed => &mut self.replayed,
        };
        *c += 1;
    }

    /// The drops for one reason.
    pub fn get(&self, reason: DropReason) -> u64 {
        match reason {
            DropReason::Oversized => self.oversized,
            DropReason::Truncated => self.truncated,
            DropReason::Malformed => self.malformed,
            DropReason::WrongLabel => self.wrong_label,
            DropReason::Unencrypted => self.unencrypted,
            DropReason::Unauthenticated => self.unauthenticated,
            DropReason::Replayed => self.replayed,
        }
    }

    /// All drops.
    pub fn total(&self) -> u64 {
        self.oversized
            + self.truncated
            + self.malformed
            + self.wrong_label
            + self.unencrypted
            + self.unauthenticated
            + self.replayed
    }
}

/// Seals and opens packets for one member: its cluster label, its keyring and its
/// replay window.
#[derive(Debug, Clone)]
pub struct Codec {
    label: Vec<u8>,
    keyring: Option<Keyring>,
    replay: ReplayWindow,
}

impl Codec {
    /// A codec for `label` (at most 255 bytes; longer labels are cut, so validate them
    /// first), sealing with `keyring` if given, remembering `replay_window` nonces.
    pub fn new(label: &str, keyring: Option<Keyring>, replay_window: usize) -> Self {
        let mut label = label.as_bytes().to_vec();
        label.truncate(255);
        Self {
            label,
            keyring,
            replay: ReplayWindow::new(replay_window),
        }
    }

    /// The keyring, to rotate keys at run time.
    pub fn keyring_mut(&mut self) -> Option<&mut Keyring> {
        self.keyring.as_mut()
    }

    /// Bytes the envelope adds around a body.
    pub fn overhead(&self) -> usize {
        2 + self.label.len()
            + if self.keyring.is_some() {
                NONCE_LEN + TAG_LEN
            } else {
                0
            }
    }

    /// Wraps a body (version byte and frames) into a packet.
    pub fn seal(&self, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.overhead() + body.len());
        let mode = if self.keyring.is_some() {
            MODE_SEALED
        } else {
            MODE_PLAIN
        };
        out.push(mode);
        out.push(self.label.len() as u8);
        out.extend_from_slice(&self.label);
        match &self.keyring {
            None => out.extend_from_slice(body),
            Some(ring) => {
                let header_len = out.len();
                let mut nonce = [0u8; NONCE_LEN];
                rand::Rng::fill(&mut rand::rng(), &mut nonce[..]);
                out.extend_from_slice(&nonce);
                out.extend_from_slice(body);
                let (header, rest) = out.split_at_mut(header_len);
                let tag = ring.seal(&nonce, header, &mut rest[NONCE_LEN..]);
                out.extend_from_slice(&tag);
            }
        }
        out
    }

    /// Unwraps a packet into its body, or says why it is dropped.
    pub fn open<'a>(&mut self, packet: &'a [u8]) -> Result<Cow<'a, [u8]>, DropReason> {
        let (&mode, rest) = packet.split_first().ok_or(DropReason::Truncated)?;
        let (&label_len, rest) = rest.split_first().ok_or(DropReason::Truncated)?;
        let label_len = label_len as usize;
        if rest.len() < label_len {
            return Err(DropReason::Truncated);
        }
        let (label, payload) = rest.split_at(label_len);
        let header = &packet[..2 + label_len];
        if mode != MODE_PLAIN && mode != MODE_SEALED {
            return Err(DropReason::Malformed);
        }
        if label != self.label.as_slice() {
            return Err(DropReason::WrongLabel);
        }
        match (mode, &self.keyring) {
            (MODE_PLAIN, None) => Ok(Cow::Borrowed(payload)),
            (MODE_PLAIN, Some(_)) => Err(DropReason::Unencrypted),
            (_, None) => Err(DropReason::Unauthenticated),
            (_, Some(ring)) => {
                if payload.len() < NONCE_LEN + TAG_LEN {
                    return Err(DropReason::Truncated);
                }
                let (nonce, sealed) = payload.split_at(NONCE_LEN);
                let (cipher, tag) = sealed.split_at(sealed.len() - TAG_LEN);
                let nonce: [u8; NONCE_LEN] = nonce.try_into().expect("split at NONCE_LEN");
                let tag: [u8; TAG_LEN] = tag.try_into().expect("split at TAG_LEN");
                let mut body = cipher.to_vec();
                if !ring.open(&nonce, header, &mut body, &tag) {
                    return Err(DropReason::Unauthenticated);
                }
                if !self.replay.insert(nonce) {
                    return Err(DropReason::Replayed);
                }
                Ok(Cow::Owned(body))
            }
        }
    }
}

/// The last nonces seen, oldest forgotten first.
#[derive(Debug, Clone)]
struct ReplayWindow {
    seen: HashSet<[u8; NONCE_LEN]>,
    order: VecDeque<[u8; NONCE_LEN]>,
    cap: usize,
}

impl ReplayWindow {
    fn new(cap: usize) -> Self {
        Self {
            seen: HashSet::new(),
            order: VecDeque::new(),
            cap,
        }
    }

    /// Remembers a nonce; false if it was already remembered.
    fn insert(&mut self, nonce: [u8; NONCE_LEN]) -> bool {
        if self.cap == 0 {
            return true;
        }
        if !self.seen.insert(nonce) {
            return false;
        }
        self.order.push_back(nonce);
        if self.order.len() > self.cap {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        true
    }
}

/// Appends one frame of type `kind` whose payload is `payload` serialized.
pub(crate) fn put<T: Serialize + ?Sized>(kind: u8, payload: &T, out: &mut Vec<u8>) {
    let bytes = postcard::to_allocvec(payload).expect("postcard serializes into a Vec");
    out.push(kind);
    put_varint(bytes.len() as u32, out);
    out.extend_from_slice(&bytes);
}

/// Appends one frame (kind, length, payload) to `out`.
pub fn encode_frame(frame: &Frame, out: &mut Vec<u8>) {
    let k = frame.kind();
    match frame {
        Frame::Ping(p) | Frame::StreamPing(p) => put(k, p, out),
        Frame::IndirectPing(p) => put(k, p, out),
        Frame::Ack(p) => put(k, p, out),
        Frame::Nack(p) => put(k, p, out),
        Frame::PushPull(p) => put(k, p, out),
        Frame::Alive(p) => put(k, p, out),
        Frame::Suspect(p) => put(k, p, out),
        Frame::Dead(p) => put(k, p, out),
    }
}

/// A frame encoded on its own (for the dissemination queue).
pub(crate) fn frame_bytes(frame: &Frame) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(frame, &mut out);
    out
}

/// Starts a body: the version byte.
pub fn begin_body(out: &mut Vec<u8>) {
    out.push(PROTOCOL_VERSION);
}

fn put_varint(mut v: u32, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(bytes: &[u8]) -> Result<(u32, usize), DropReason> {
    let mut v: u64 = 0;
    for (i, &b) in bytes.iter().enumerate().take(5) {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return u32::try_from(v)
                .map(|v| (v, i + 1))
                .map_err(|_| DropReason::Malformed);
        }
    }
    if bytes.len() < 5 {
        Err(DropReason::Truncated)
    } else {
        Err(DropReason::Malformed)
    }
}

/// A decoded body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decoded {
    /// The frames this build understands, in order.
    pub frames: Vec<Frame>,
    /// Frames of kinds this build does not know (skipped).
    pub skipped: u32,
}

/// One raw frame: its kind and payload.
struct RawFrame<'a> {
    kind: u8,
    payload: &'a [u8],
}

fn raw_frames(body: &[u8]) -> Result<Vec<RawFrame<'_>>, DropReason> {
    let (&version, mut rest) = body.split_first().ok_or(DropReason::Truncated)?;
    if version == 0 {
        return Err(DropReason::Malformed);
    }
    let mut frames = Vec::new();
    while let Some((&kind, after)) = rest.split_first() {
        let (len, used) = get_varint(after)?;
        let after = &after[used..];
        let len = len as usize;
        if after.len() < len {
            return Err(DropReason::Truncated);
        }
        frames.push(RawFrame {
            kind,
            payload: &after[..len],
        });
        rest = &after[len..];
    }
    Ok(frames)
}

/// Decodes a body: every frame is checked before any is returned, so a packet is either
/// applied whole or dropped whole. (The core decodes with `decode_body_filtered`; this
/// is for the tests and the fuzz targets.)
#[cfg(any(test, feature = "test-util", feature = "fuzzing"))]
pub fn decode_body(body: &[u8]) -> Result<Decoded, DropReason> {
    decode_body_filtered(body, |_| false)
}

/// Like [`decode_body`], but alive updates for which `stale` returns true (given their
/// incarnation and name, read without allocating) are checked and left out.
pub(crate) fn decode_body_filtered(
    body: &[u8],
    mut stale: impl FnMut(&AliveHead<'_>) -> bool,
) -> Result<Decoded, DropReason> {
    fn de<'a, T: serde::Deserialize<'a>>(p: &'a [u8]) -> Result<T, DropReason> {
        postcard::from_bytes(p).map_err(|e| match e {
            postcard::Error::DeserializeUnexpectedEnd => DropReason::Truncated,
            _ => DropReason::Malformed,
        })
    }
    let raw = raw_frames(body)?;
    let mut out = Decoded {
        frames: Vec::with_capacity(raw.len()),
        skipped: 0,
    };
    for RawFrame { kind, payload } in raw {
        let frame = match kind {
            kind::PING => Frame::Ping(de(payload)?),
            kind::STREAM_PING => Frame::StreamPing(de(payload)?),
            kind::INDIRECT_PING => Frame::IndirectPing(de(payload)?),
            kind::ACK => Frame::Ack(de(payload)?),
            kind::NACK => Frame::Nack(de(payload)?),
            kind::PUSH_PULL => Frame::PushPull(de(payload)?),
            kind::ALIVE => {
                let head: AliveHead<'_> = de(payload)?;
                if stale(&head) {
                    if head.name.is_empty() || head.name.len() > super::proto::MAX_NAME_LEN {
                        return Err(DropReason::Malformed);
                    }
                    continue;
                }
                Frame::Alive(de(payload)?)
            }
            kind::SUSPECT => Frame::Suspect(de(payload)?),
            kind::DEAD => Frame::Dead(de(payload)?),
            _ => {
                out.skipped += 1;
                continue;
            }
        };
        if !frame.wire_valid() {
            return Err(DropReason::Malformed);
        }
        out.frames.push(frame);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gossip::proto::message::{Ack, Alive, Dead, Ping};
    use crate::gossip::proto::Identity;

    fn body(frames: &[Frame]) -> Vec<u8> {
        let mut b = Vec::new();
        begin_body(&mut b);
        for f in frames {
            encode_frame(f, &mut b);
        }
        b
    }

    fn ping() -> Frame {
        Frame::Ping(Ping {
            seq: 7,
            target: "b".into(),
        })
    }

    #[test]
    fn frames_round_trip() {
        let alive = Frame::Alive(Alive {
            incarnation: 3,
            identity: Identity::new("a", "10.0.0.1:1".parse().unwrap()).with_tag("zone", "z1"),
        });
        let frames = vec![ping(), alive, Frame::Ack(Ack { seq: 9 })];
        let d = decode_body(&body(&frames)).unwrap();
        assert_eq!(d.frames, frames);
        assert_eq!(d.skipped, 0);
    }

    #[test]
    fn unknown_frame_kinds_are_skipped_not_fatal() {
        let mut b = body(&[ping()]);
        b.extend_from_slice(&[200, 3, 1, 2, 3]);
        encode_frame(&Frame::Ack(Ack { seq: 1 }), &mut b);
        let d = decode_body(&b).unwrap();
        assert_eq!(d.frames.len(), 2);
        assert_eq!(d.skipped, 1);
    }

    #[test]
    fn a_newer_version_with_appended_fields_is_still_read() {
        // Version 9 appends a field to Ack's payload; version 1 reads the prefix.
        let b = vec![9, kind::ACK, 3, 5, 0xAA, 0xBB];
        let d = decode_body(&b).unwrap();
        assert_eq!(d.frames, vec![Frame::Ack(Ack { seq: 5 })]);
    }

    #[test]
    fn truncated_and_malformed_bodies_are_dropped_whole() {
        let b = body(&[ping(), Frame::Ack(Ack { seq: 1 })]);
        for cut in 1..b.len() {
            let r = decode_body(&b[..cut]);
            assert!(r.is_err() || r.unwrap().frames.len() < 2, "cut {cut}");
        }
        assert_eq!(decode_body(&[]), Err(DropReason::Truncated));
        assert_eq!(decode_body(&[0]), Err(DropReason::Malformed));
        assert_eq!(
            decode_body(&[1, kind::PING, 9, 1]),
            Err(DropReason::Truncated)
        );
        let bad_name = Frame::Dead(Dead {
            incarnation: 1,
            name: String::new(),
            from: "x".into(),
        });
        assert_eq!(decode_body(&body(&[bad_name])), Err(DropReason::Malformed));
    }

    #[test]
    fn sealed_packets_need_a_key_and_the_same_label() {
        let mut a = Codec::new("prod", Some(Keyring::new([1; 32])), 16);
        let pkt = a.seal(&body(&[ping()]));
        assert!(a.open(&pkt).is_ok());
        assert_eq!(a.open(&pkt), Err(DropReason::Replayed));
        let mut wrong_key = Codec::new("prod", Some(Keyring::new([2; 32])), 16);
        assert_eq!(wrong_key.open(&pkt), Err(DropReason::Unauthenticated));
        let mut no_key = Codec::new("prod", None, 16);
        assert_eq!(no_key.open(&pkt), Err(DropReason::Unauthenticated));
        let mut other_label = Codec::new("staging", Some(Keyring::new([1; 32])), 16);
        assert_eq!(other_label.open(&pkt), Err(DropReason::WrongLabel));
        let plain = Codec::new("prod", None, 16).seal(&body(&[ping()]));
        assert_eq!(a.open(&plain), Err(DropReason::Unencrypted));
        let mut flipped = a.seal(&body(&[ping()]));
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert_eq!(a.open(&flipped), Err(DropReason::Unauthenticated));
        // Forging the label in the header breaks authentication.
        let mut forged = Codec::new("prod", Some(Keyring::new([1; 32])), 16).seal(&[1]);
        forged[2] = b'q';
        let mut q = Codec::new("qrod", Some(Keyring::new([1; 32])), 16);
        assert_eq!(q.open(&forged), Err(DropReason::Unauthenticated));
    }

    #[test]
    fn varint_round_trips_and_rejects_overlong() {
        for v in [0u32, 1, 127, 128, 300, 1 << 20, u32::MAX] {
            let mut b = Vec::new();
            put_varint(v, &mut b);
            assert_eq!(get_varint(&b), Ok((v, b.len())));
        }
        assert_eq!(get_varint(&[0xff; 5]), Err(DropReason::Malformed));
        assert_eq!(get_varint(&[0xff; 2]), Err(DropReason::Truncated));
    }
}
