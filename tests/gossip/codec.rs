//! Hostile input: arbitrary, truncated, mutated and oversized packets never panic and
//! never change a member's view.
#![cfg(feature = "test-util")]

use std::net::SocketAddr;

use palisade::gossip::test_util::{begin_body, decode_body, encode_frame, Codec, DropReason};
use palisade::gossip::test_util::{Alive, Frame, Ping, Suspect};
use palisade::gossip::{Config, Identity, Keyring, Swim};
use proptest::prelude::*;

fn addr(i: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, i], 7946))
}

fn swim(keyring: Option<Keyring>) -> Swim {
    let cfg = Config {
        keyring,
        seed: Some(3),
        ..Config::lan()
    };
    let mut s = Swim::new(Identity::new("me", addr(1)), cfg.clone(), 0).unwrap();
    // Teach it one member, with a valid packet from a peer with the same settings.
    let mut body = Vec::new();
    begin_body(&mut body);
    encode_frame(
        &Frame::Alive(Alive {
            incarnation: 4,
            identity: Identity::new("peer", addr(2)).with_tag("zone", "a"),
        }),
        &mut body,
    );
    let pkt = Codec::new("", cfg.keyring.clone(), 0).seal(&body);
    s.handle_datagram(addr(2), &pkt, 0);
    assert_eq!(s.live_members(), 1);
    s
}

fn valid_body() -> Vec<u8> {
    let mut body = Vec::new();
    begin_body(&mut body);
    encode_frame(
        &Frame::Ping(Ping {
            seq: 9,
            target: "me".into(),
        }),
        &mut body,
    );
    encode_frame(
        &Frame::Suspect(Suspect {
            incarnation: 4,
            name: "peer".into(),
            from: "x".into(),
        }),
        &mut body,
    );
    body
}

fn view(s: &Swim) -> Vec<(String, u64, palisade::gossip::MemberState)> {
    s.members()
        .map(|m| (m.name().to_owned(), m.incarnation(), m.state()))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn decoder_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = decode_body(&bytes);
        let _ = Codec::new("", None, 8).open(&bytes);
        let _ = Codec::new("lbl", Some(Keyring::new([1; 32])), 8).open(&bytes);
    }

    #[test]
    fn keyed_member_ignores_arbitrary_bytes_and_counts_them(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let mut s = swim(Some(Keyring::new([1; 32])));
        let before = view(&s);
        s.handle_datagram(addr(9), &bytes, 1);
        s.handle_stream(addr(9), &bytes, 1);
        prop_assert_eq!(view(&s), before);
        prop_assert_eq!(s.stats().drops.total(), 2);
        prop_assert_eq!(s.drain_transmits().count(), 0);
    }

    #[test]
    fn plain_member_survives_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let mut s = swim(None);
        s.handle_datagram(addr(9), &bytes, 1);
        s.handle_timeout(s.next_deadline());
    }

    #[test]
    fn mutated_sealed_packets_are_dropped_whole(at in 0usize..200, bit in 0u8..8) {
        let ring = Keyring::new([1; 32]);
        let mut s = swim(Some(ring.clone()));
        let mut pkt = Codec::new("", Some(ring), 0).seal(&valid_body());
        let at = at % pkt.len();
        pkt[at] ^= 1 << bit;
        let before = view(&s);
        s.handle_datagram(addr(9), &pkt, 1);
        prop_assert_eq!(view(&s), before, "a tampered packet changes nothing");
        prop_assert_eq!(s.stats().drops.total(), 1);
    }

    #[test]
    fn truncated_packets_apply_nothing(cut in 0usize..64) {
        let mut s = swim(None);
        let pkt = Codec::new("", None, 0).seal(&valid_body());
        let cut = cut % pkt.len();
        let before = view(&s);
        s.handle_datagram(addr(9), &pkt[..cut], 1);
        prop_assert_eq!(view(&s), before);
    }
}

#[test]
fn each_drop_reason_is_counted_separately() {
    let ring = Keyring::new([1; 32]);
    let mut s = swim(Some(ring.clone()));
    let sealed = Codec::new("", Some(ring.clone()), 0).seal(&valid_body());
    s.handle_datagram(addr(9), &sealed, 1);
    s.handle_datagram(addr(9), &sealed, 1);
    s.handle_datagram(addr(9), &sealed[..sealed.len() / 2], 1);
    s.handle_datagram(addr(9), &[], 1);
    s.handle_datagram(addr(9), &vec![1; 5000], 1);
    s.handle_datagram(
        addr(9),
        &Codec::new("other", Some(ring.clone()), 0).seal(&valid_body()),
        1,
    );
    s.handle_datagram(addr(9), &Codec::new("", None, 0).seal(&valid_body()), 1);
    s.handle_datagram(
        addr(9),
        &Codec::new("", Some(Keyring::new([2; 32])), 0).seal(&valid_body()),
        1,
    );
    s.handle_datagram(addr(9), &[7, 0, 1], 1);
    // A sealed body that is garbage inside.
    s.handle_datagram(
        addr(9),
        &Codec::new("", Some(ring), 0).seal(&[1, 3, 6, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]),
        1,
    );
    let d = s.stats().drops;
    assert_eq!(d.get(DropReason::Replayed), 1);
    assert_eq!(
        d.get(DropReason::Truncated),
        2,
        "half a packet, an empty one"
    );
    assert_eq!(d.get(DropReason::Oversized), 1);
    assert_eq!(d.get(DropReason::WrongLabel), 1);
    assert_eq!(d.get(DropReason::Unencrypted), 1);
    assert_eq!(d.get(DropReason::Unauthenticated), 1);
    assert_eq!(
        d.get(DropReason::Malformed),
        2,
        "bad mode byte, bad payload"
    );
    assert_eq!(d.total(), 9);
}

#[derive(Debug, Clone)]
enum Input {
    Alive(u8, u64),
    Suspect(u8, u64, u8),
    Dead(u8, u64, u8),
    Tick(u32),
}

fn input() -> impl Strategy<Value = Input> {
    prop_oneof![
        (0u8..6, 0u64..4).prop_map(|(m, i)| Input::Alive(m, i)),
        (0u8..6, 0u64..4, 0u8..6).prop_map(|(m, i, f)| Input::Suspect(m, i, f)),
        (0u8..6, 0u64..4, 0u8..6).prop_map(|(m, i, f)| Input::Dead(m, i, f)),
        (0u32..20_000).prop_map(Input::Tick),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any sequence of (valid, possibly contradictory) updates and timer ticks keeps the
    /// member table consistent: the live count matches the states, deadlines move
    /// forward, and only this member raises its own incarnation.
    #[test]
    fn any_update_sequence_keeps_the_view_consistent(inputs in proptest::collection::vec(input(), 1..80)) {
        use palisade::gossip::test_util::Dead;
        let cfg = Config { seed: Some(1), reap_timeout: std::time::Duration::from_secs(20), ..Config::lan() };
        // Member 0 is "me".
        let mut s = Swim::new(Identity::new("m0", addr(1)), cfg, 0).unwrap();
        let mut now = 0u64;
        let name = |m: u8| format!("m{m}");
        for inp in inputs {
            let frame = match inp {
                Input::Alive(m, i) => Frame::Alive(Alive { incarnation: i, identity: Identity::new(name(m), addr(m + 1)) }),
                Input::Suspect(m, i, f) => Frame::Suspect(Suspect { incarnation: i, name: name(m), from: name(f) }),
                Input::Dead(m, i, f) => Frame::Dead(Dead { incarnation: i, name: name(m), from: name(f) }),
                Input::Tick(ms) => {
                    now += u64::from(ms) * 1_000_000;
                    while s.next_deadline() <= now {
                        let d = s.next_deadline();
                        s.handle_timeout(d);
                        prop_assert!(s.next_deadline() > d);
                    }
                    s.drain_transmits().for_each(drop);
                    continue;
                }
            };
            let mut body = Vec::new();
            begin_body(&mut body);
            encode_frame(&frame, &mut body);
            s.handle_datagram(addr(9), &Codec::new("", None, 0).seal(&body), now);
            s.drain_transmits().for_each(drop);
            let live = s.members().filter(|m| m.state().is_live()).count();
            prop_assert_eq!(s.live_members(), live);
            prop_assert!(s.members().all(|m| m.name() != "m0"), "never lists itself");
            prop_assert_eq!(s.local().state(), palisade::gossip::MemberState::Alive);
        }
        while s.poll_event().is_some() {}
    }
}
