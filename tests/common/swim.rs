//! Helpers for the tests that drive the sans-IO gossip core by hand: member addresses
//! and names by number, sealing frames into packets (no key, no label), opening what a
//! member sent, and stepping a member's timers.

use std::net::SocketAddr;

use palisade::gossip::test_util::Frame;
use palisade::gossip::test_util::{begin_body, decode_body, encode_frame, Codec};
use palisade::gossip::{Swim, Transmit};

/// Member `i`'s gossip address.
pub fn addr(i: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, i], 7946))
}

/// Member `i`'s name.
pub fn name(i: u8) -> String {
    format!("n{i}")
}

/// `frames` encoded as one message body.
pub fn body(frames: &[Frame]) -> Vec<u8> {
    let mut b = Vec::new();
    begin_body(&mut b);
    for f in frames {
        encode_frame(f, &mut b);
    }
    b
}

/// `frames` sealed into a packet as an unkeyed, unlabelled member sends it.
pub fn packet(frames: &[Frame]) -> Vec<u8> {
    Codec::new("", None, 0).seal(&body(frames))
}

/// The frames of what a member sent.
pub fn frames(t: &Transmit) -> Vec<Frame> {
    let mut codec = Codec::new("", None, 0);
    decode_body(&codec.open(&t.bytes).unwrap()).unwrap().frames
}

/// Steps `s`'s timers from `from` up to `until`, returning what it sent and when.
pub fn run(s: &mut Swim, from: u64, until: u64) -> Vec<(u64, Transmit)> {
    let mut out = Vec::new();
    let mut now = from;
    loop {
        let d = s.next_deadline().max(now);
        if d > until {
            return out;
        }
        now = d;
        s.handle_timeout(now);
        out.extend(s.drain_transmits().map(|t| (now, t)));
    }
}
