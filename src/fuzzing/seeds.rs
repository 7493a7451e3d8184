//! The seed corpus: real packets and frames from the real encoders, a few per target, so
//! a fuzzer starts from inputs that reach deep into each decoder instead of guessing the
//! envelope. `tests/fuzz_entry_points.rs` writes them to `fuzz/corpus/<target>/seed-*`
//! (see its `write_seed_corpus`) and runs them through every entry point.

use bytes::{Bytes, BytesMut};
use tokio_util::codec::{Encoder, LengthDelimitedCodec};

use super::gossip::{alive, body, running, Sealing, FRAMING_MAX, OTHER, PEER};
use super::ready;
use super::transport::{DELAY, FAIL};
use crate::gossip::proto::message::{
    Ack, Dead, Frame, IndirectPing, MemberRecord, Nack, Ping, PushPull, Suspect,
};
use crate::gossip::proto::{Identity, MemberState};
use crate::gossip::runtime::stream::write_message;
use crate::transport::frame::{Frame as Wire, Kind};

/// One input for one fuzz target.
#[derive(Debug, Clone)]
pub struct Seed {
    /// The target (a name in [`TARGETS`](super::TARGETS)).
    pub target: &'static str,
    /// The file name, `seed-` and what the input is.
    pub name: String,
    /// The input.
    pub bytes: Vec<u8>,
}

fn seed(target: &'static str, what: &str, bytes: Vec<u8>) -> Seed {
    Seed {
        target,
        name: format!("seed-{what}"),
        bytes,
    }
}

/// Datagram bodies a peer sends a running member: probes, answers to its probe in
/// flight, and every kind of update.
fn datagram_bodies() -> Vec<(&'static str, Vec<u8>)> {
    let probe_seq = running(Sealing::Plain).probe.map_or(0, |p| p.seq);
    let ping = |target: &str| Ping {
        seq: 11,
        target: target.into(),
    };
    let suspect = |name: &str, incarnation| Suspect {
        incarnation,
        name: name.into(),
        from: "peer".into(),
    };
    let dead = |name: &str, incarnation, from: &str| Dead {
        incarnation,
        name: name.into(),
        from: from.into(),
    };
    vec![
        ("ping", body(&[Frame::Ping(ping("me"))])),
        (
            "ack-with-updates",
            body(&[
                Frame::Ack(Ack { seq: probe_seq }),
                alive("peer", PEER, 4),
                alive("third", "10.0.0.4:7946".parse().expect("an address"), 1),
            ]),
        ),
        (
            "indirect-ping",
            body(&[Frame::IndirectPing(IndirectPing {
                seq: 12,
                target: "other".into(),
                target_addr: OTHER,
                nack: true,
            })]),
        ),
        ("nack", body(&[Frame::Nack(Nack { seq: probe_seq })])),
        (
            "suspect-me-and-other",
            body(&[
                Frame::Suspect(suspect("me", 0)),
                Frame::Suspect(suspect("other", 1)),
            ]),
        ),
        ("stale-suspect", body(&[Frame::Suspect(suspect("peer", 2))])),
        // The top of the incarnation range, where refuting overflowed (fixed).
        (
            "suspect-me-top-incarnation",
            body(&[Frame::Suspect(suspect("me", u64::MAX))]),
        ),
        (
            "dead-and-leave",
            body(&[
                Frame::Dead(dead("other", 1, "peer")),
                Frame::Dead(dead("peer", 3, "peer")),
            ]),
        ),
        ("stream-ping-on-udp", body(&[Frame::StreamPing(ping("me"))])),
        ("unknown-kind", {
            let mut b = body(&[Frame::Ack(Ack { seq: probe_seq })]);
            b.extend_from_slice(&[200, 3, 1, 2, 3]);
            b
        }),
    ]
}

/// Stream bodies: a join, a push-pull and its answer, a stream ping.
fn stream_bodies() -> Vec<(&'static str, Vec<u8>)> {
    let record = |name: &str, at, incarnation, state| MemberRecord {
        identity: Identity::new(name, at).with_tag("zone", "b"),
        incarnation,
        state,
    };
    let third = "10.0.0.4:7946".parse().expect("an address");
    let push_pull = |join, reply| {
        Frame::PushPull(PushPull {
            join,
            reply,
            members: vec![
                record("peer", PEER, 3, MemberState::Alive),
                record("other", OTHER, 2, MemberState::Dead),
                record("third", third, 1, MemberState::Suspect),
                record(
                    "gone",
                    "10.0.0.5:7946".parse().expect("an address"),
                    1,
                    MemberState::Left,
                ),
            ],
        })
    };
    vec![
        ("join", body(&[push_pull(true, false)])),
        ("push-pull", body(&[push_pull(false, false)])),
        ("push-pull-answer", body(&[push_pull(false, true)])),
        (
            "stream-ping",
            body(&[Frame::StreamPing(Ping {
                seq: 5,
                target: "me".into(),
            })]),
        ),
    ]
}

fn packets(
    target: &'static str,
    sealing: Sealing,
    bodies: &[(&'static str, Vec<u8>)],
    out: &mut Vec<Seed>,
) {
    let codec = sealing.codec();
    for (what, b) in bodies {
        out.push(seed(target, what, codec.seal(b)));
        if sealing == Sealing::Keyed {
            // The keyed targets also seal their input: bodies reach the decoder that way.
            out.push(seed(target, &format!("body-{what}"), b.clone()));
        }
    }
}

/// Every seed of every target.
pub fn seed_corpus() -> Vec<Seed> {
    let datagrams = datagram_bodies();
    let streams = stream_bodies();
    let mut out = Vec::new();
    packets("gossip_datagram", Sealing::Plain, &datagrams, &mut out);
    packets(
        "gossip_datagram_keyed",
        Sealing::Keyed,
        &datagrams,
        &mut out,
    );
    packets("gossip_stream", Sealing::Plain, &streams, &mut out);
    packets("gossip_stream_keyed", Sealing::Keyed, &streams, &mut out);
    for (what, b) in [&datagrams[1], &streams[0]] {
        out.push(seed("gossip_codec", what, Sealing::Plain.codec().seal(b)));
        out.push(seed(
            "gossip_codec",
            &format!("sealed-{what}"),
            Sealing::Keyed.codec().seal(b),
        ));
        out.push(seed("gossip_codec", &format!("body-{what}"), b.clone()));
    }
    for (what, b) in &streams {
        let mut framed = Vec::new();
        ready(write_message(&mut framed, &Sealing::Plain.codec().seal(b))).expect("in memory");
        assert!(framed.len() <= FRAMING_MAX + 4);
        out.push(seed("gossip_stream_framing", what, framed));
    }
    // A connection closed two bytes into the length prefix: a truncated message, not a
    // clean close (found by the fuzzer when gossip moved to the shared frame reader).
    out.push(seed("gossip_stream_framing", "cut-in-length", vec![0, 0]));

    let wire = |id, kind, payload: &[u8]| Wire {
        id,
        kind,
        payload: Bytes::copy_from_slice(payload),
    };
    for (what, f) in [
        ("request", wire(1, Kind::Request, b"hello")),
        ("response", wire(u64::MAX, Kind::Response, b"world")),
        ("error", wire(7, Kind::Error, b"boom")),
        ("empty-request", wire(0, Kind::Request, b"")),
    ] {
        out.push(seed("transport_frame", what, f.encode().to_vec()));
    }
    let framed = |frames: &[Wire]| {
        let mut codec = LengthDelimitedCodec::new();
        let mut buf = BytesMut::new();
        for f in frames {
            codec
                .encode(f.encode(), &mut buf)
                .expect("encodes into memory");
        }
        buf.to_vec()
    };
    let request = |id, payload: &[u8]| wire(id, Kind::Request, payload);
    out.push(seed(
        "transport_serve",
        "one-request",
        framed(&[request(1, b"ping")]),
    ));
    out.push(seed(
        "transport_serve",
        "pipelined",
        framed(&[
            request(1, &[DELAY, 1]),
            request(2, b"fast"),
            request(3, &[FAIL]),
            request(3, b"same id again"),
            request(4, b""),
        ]),
    ));
    let mut then_junk = framed(&[request(9, b"before junk")]);
    then_junk.extend_from_slice(&framed(&[wire(10, Kind::Response, b"not a request")]));
    out.push(seed("transport_serve", "request-then-response", then_junk));
    out
}
