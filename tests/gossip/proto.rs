//! The sans-IO core driven by hand: exactly what it emits for what it is given.
#![cfg(feature = "test-util")]

use std::net::SocketAddr;
use std::time::Duration;

use palisade::gossip::test_util::{begin_body, encode_frame, Codec};
use palisade::gossip::test_util::{Alive, Dead, Frame, IndirectPing, Suspect};
use palisade::gossip::{Config, Event, Identity, Keyring, MemberState, Swim, Transmit, Transport};

use crate::common;
use common::swim::{addr, frames, name, packet, run};

const S: u64 = 1_000_000_000;

fn member(i: u8) -> Swim {
    let cfg = Config {
        seed: Some(u64::from(i)),
        ..Config::lan()
    };
    Swim::new(Identity::new(name(i), addr(i)), cfg, 0).unwrap()
}

fn alive(i: u8, incarnation: u64) -> Frame {
    Frame::Alive(Alive {
        incarnation,
        identity: Identity::new(name(i), addr(i)),
    })
}

fn events(s: &mut Swim) -> Vec<Event> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

/// Teaches `s` about members `ids` (alive, incarnation 0).
fn know(s: &mut Swim, ids: &[u8]) {
    let fs: Vec<Frame> = ids.iter().map(|&i| alive(i, 0)).collect();
    s.handle_datagram(addr(200), &packet(&fs), 0);
    events(s);
    s.drain_transmits().for_each(drop);
}

fn has_ping_to(t: &Transmit, target: &str) -> Option<u32> {
    frames(t).into_iter().find_map(|f| match f {
        Frame::Ping(p) if p.target == target => Some(p.seq),
        _ => None,
    })
}

#[test]
fn ping_is_answered_with_an_ack_carrying_its_sequence_number() {
    let mut a = member(1);
    let mut b = member(2);
    know(&mut a, &[2]);
    let sent = run(&mut a, 0, 2 * S);
    let (t, ping) = sent
        .iter()
        .find(|(_, t)| has_ping_to(t, "n2").is_some())
        .expect("a probed b");
    let seq = has_ping_to(ping, "n2").unwrap();
    b.handle_datagram(addr(1), &ping.bytes, *t);
    let answers: Vec<Transmit> = b.drain_transmits().collect();
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].to, addr(1));
    assert!(frames(&answers[0]).contains(&Frame::Ack(palisade::gossip::test_util::Ack { seq })));
    // A ping for another name (an address reused) is not answered.
    let stray = packet(&[Frame::Ping(palisade::gossip::test_util::Ping {
        seq: 1,
        target: "someone-else".into(),
    })]);
    b.handle_datagram(addr(1), &stray, *t);
    assert_eq!(b.drain_transmits().count(), 0);
    assert_eq!(b.stats().misdirected, 1);
}

#[test]
fn missed_ack_leads_to_indirect_pings_with_nack_requests_then_suspicion() {
    let mut a = member(1);
    know(&mut a, &[2, 3, 4, 5]);
    let sent = run(&mut a, 0, 20 * S);
    let probe = sent
        .iter()
        .find(|(_, t)| has_ping_to(t, "n2").is_some())
        .expect("b probed within a round");
    let probed_at = probe.0;
    let indirect: Vec<&(u64, Transmit)> = sent
        .iter()
        .filter(|(_, t)| {
            frames(t)
                .iter()
                .any(|f| matches!(f, Frame::IndirectPing(IndirectPing { target, nack: true, .. }) if target == "n2"))
        })
        .collect();
    assert_eq!(indirect.len(), 3, "indirect_checks = 3 helpers asked");
    for (t, tx) in &indirect {
        assert_eq!(
            *t,
            probed_at + Config::lan().probe_timeout.as_nanos() as u64,
            "after the probe timeout"
        );
        assert_ne!(tx.to, addr(2));
    }
    let state = a.member("n2").unwrap().state();
    assert!(matches!(state, MemberState::Suspect | MemberState::Dead));
    assert!(
        a.health_score() > 0,
        "missing nacks count against our own health"
    );
}

#[test]
fn relay_pings_the_target_and_nacks_when_it_stays_silent() {
    let mut c = member(3);
    let req = packet(&[Frame::IndirectPing(IndirectPing {
        seq: 77,
        target: name(2),
        target_addr: addr(2),
        nack: true,
    })]);
    c.handle_datagram(addr(1), &req, 0);
    let out: Vec<Transmit> = c.drain_transmits().collect();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].to, addr(2));
    let relayed = has_ping_to(&out[0], "n2").unwrap();
    // No ack from n2: after the probe timeout c nacks to n1.
    c.handle_timeout(S);
    let out: Vec<Transmit> = c.drain_transmits().collect();
    let nack = out
        .iter()
        .find(|t| t.to == addr(1))
        .expect("a nack to the requester");
    assert!(frames(nack).contains(&Frame::Nack(palisade::gossip::test_util::Nack { seq: 77 })));
    // An ack arriving in time is relayed instead.
    c.handle_datagram(addr(1), &req, 2 * S);
    let out: Vec<Transmit> = c.drain_transmits().collect();
    let seq = has_ping_to(&out[0], "n2").unwrap();
    assert_ne!(seq, relayed);
    c.handle_datagram(
        addr(2),
        &packet(&[Frame::Ack(palisade::gossip::test_util::Ack { seq })]),
        2 * S + 1,
    );
    let out: Vec<Transmit> = c.drain_transmits().collect();
    assert!(frames(&out[0]).contains(&Frame::Ack(palisade::gossip::test_util::Ack { seq: 77 })));
}

#[test]
fn member_hearing_itself_suspected_refutes_with_a_higher_incarnation() {
    let mut a = member(1);
    know(&mut a, &[2, 3]);
    let s = Frame::Suspect(Suspect {
        incarnation: 0,
        name: name(1),
        from: name(2),
    });
    a.handle_datagram(addr(2), &packet(&[s]), S);
    assert_eq!(a.local().incarnation(), 1);
    assert_eq!(a.stats().refutations, 1);
    assert_eq!(
        a.health_score(),
        1,
        "a refutation counts against our own health"
    );
    let sent = run(&mut a, S, 2 * S);
    assert!(sent.iter().any(|(_, t)| frames(t).contains(&alive(1, 1))));
    // A dead declaration is refuted the same way.
    let d = Frame::Dead(Dead {
        incarnation: 1,
        name: name(1),
        from: name(3),
    });
    a.handle_datagram(addr(3), &packet(&[d]), 3 * S);
    assert_eq!(a.local().incarnation(), 2);
    assert_eq!(a.local().state(), MemberState::Alive);
}

#[test]
fn updates_follow_incarnation_precedence() {
    let mut a = member(1);
    let feed = |a: &mut Swim, f: Frame| {
        a.handle_datagram(addr(9), &packet(&[f]), S);
        a.drain_transmits().for_each(drop);
        events(a)
    };
    let suspect = |inc| {
        Frame::Suspect(Suspect {
            incarnation: inc,
            name: name(2),
            from: name(3),
        })
    };
    let dead = |inc| {
        Frame::Dead(Dead {
            incarnation: inc,
            name: name(2),
            from: name(3),
        })
    };
    let state = |a: &Swim| a.member("n2").unwrap().state();
    assert!(matches!(&feed(&mut a, alive(2, 1))[..], [Event::Join(_)]));
    feed(&mut a, suspect(0));
    assert_eq!(
        state(&a),
        MemberState::Alive,
        "an older suspicion is ignored"
    );
    feed(&mut a, suspect(1));
    assert_eq!(state(&a), MemberState::Suspect);
    feed(&mut a, alive(2, 1));
    assert_eq!(
        state(&a),
        MemberState::Suspect,
        "alive must be newer to refute"
    );
    assert!(
        feed(&mut a, alive(2, 2)).is_empty(),
        "a refutation is not an event"
    );
    assert_eq!(state(&a), MemberState::Alive);
    feed(&mut a, dead(1));
    assert_eq!(state(&a), MemberState::Alive, "an older death is ignored");
    assert!(matches!(&feed(&mut a, dead(2))[..], [Event::Failed(_)]));
    assert!(
        feed(&mut a, alive(2, 2)).is_empty(),
        "the same incarnation cannot resurrect"
    );
    assert_eq!(state(&a), MemberState::Dead);
    assert!(matches!(&feed(&mut a, alive(2, 3))[..], [Event::Join(_)]));
    let leave = Frame::Dead(Dead {
        incarnation: 3,
        name: name(2),
        from: name(2),
    });
    assert!(
        matches!(&feed(&mut a, leave)[..], [Event::Leave(m)] if m.state() == MemberState::Left)
    );
}

#[test]
fn independent_confirmations_shorten_the_suspicion() {
    // Six members: k = suspicion_mult - 2 = 2 confirmations expected.
    let timeout_with = |confirmers: &[u8]| {
        let mut a = member(1);
        know(&mut a, &[2, 3, 4, 5, 6]);
        for &c in confirmers {
            let f = Frame::Suspect(Suspect {
                incarnation: 0,
                name: name(2),
                from: name(c),
            });
            a.handle_datagram(addr(c), &packet(&[f]), 0);
        }
        let mut now = 0;
        while a.member("n2").unwrap().state() != MemberState::Dead {
            now = a.next_deadline();
            a.handle_timeout(now);
            a.drain_transmits().for_each(drop);
        }
        now
    };
    let cfg = Config::lan();
    let min = cfg.suspicion_min_timeout(6).as_nanos() as u64;
    let lone = timeout_with(&[3]);
    let confirmed = timeout_with(&[3, 4, 5]);
    assert!(confirmed < lone, "{confirmed} < {lone}");
    assert!(confirmed <= min + S, "fully confirmed: about the minimum");
    assert!(lone > 2 * min, "a lone suspicion waits much longer");
}

#[test]
fn a_ping_to_a_suspect_carries_the_suspicion_buddy_system() {
    let mut a = member(1);
    know(&mut a, &[2]);
    let s = Frame::Suspect(Suspect {
        incarnation: 0,
        name: name(2),
        from: name(3),
    });
    a.handle_datagram(addr(3), &packet(&[s]), 0);
    let sent = run(&mut a, 0, 3 * S);
    let ping = sent
        .iter()
        .find(|(_, t)| has_ping_to(t, "n2").is_some())
        .expect("a probes its only member");
    assert!(frames(&ping.1)
        .iter()
        .any(|f| matches!(f, Frame::Suspect(s) if s.name == "n2")));
    // The suspect hears it with the ping and refutes at once.
    let mut b = member(2);
    b.handle_datagram(addr(1), &ping.1.bytes, ping.0);
    assert_eq!(b.local().incarnation(), 1);
}

#[test]
fn datagrams_stay_under_the_size_limit_with_many_updates_queued() {
    let mut a = member(1);
    let many: Vec<Frame> = (2..=250u8)
        .map(|i| {
            Frame::Alive(Alive {
                incarnation: 0,
                identity: Identity::new(name(i), addr(i))
                    .with_service_addr(addr(i))
                    .with_tag("zone", "eu-west-1a")
                    .with_tag("version", "1.2.3"),
            })
        })
        .collect();
    for chunk in many.chunks(10) {
        a.handle_datagram(addr(200), &packet(chunk), 0);
    }
    assert_eq!(a.live_members(), 249);
    let sent = run(&mut a, 0, 10 * S);
    let datagrams: Vec<&Transmit> = sent
        .iter()
        .map(|(_, t)| t)
        .filter(|t| t.transport == Transport::Datagram)
        .collect();
    assert!(datagrams.len() > 10);
    for t in &datagrams {
        assert!(t.bytes.len() <= 1400, "{}", t.bytes.len());
    }
    assert!(
        datagrams.iter().any(|t| t.bytes.len() > 1200),
        "packets are filled"
    );
}

#[test]
fn unknown_frames_from_a_newer_member_are_skipped() {
    let mut b = member(2);
    let mut body = vec![7u8]; // a future protocol version
    body.extend_from_slice(&[250, 2, 0xde, 0xad]);
    encode_frame(
        &Frame::Ping(palisade::gossip::test_util::Ping {
            seq: 5,
            target: name(2),
        }),
        &mut body,
    );
    let pkt = Codec::new("", None, 0).seal(&body);
    b.handle_datagram(addr(1), &pkt, 0);
    assert_eq!(b.stats().skipped_frames, 1);
    assert_eq!(
        b.drain_transmits().count(),
        1,
        "the ping was still answered"
    );
}

#[test]
fn replayed_sealed_packet_is_dropped_and_counted() {
    let ring = Keyring::new([5; 32]);
    let cfg = Config {
        keyring: Some(ring.clone()),
        seed: Some(1),
        ..Config::lan()
    };
    let mut b = Swim::new(Identity::new(name(2), addr(2)), cfg, 0).unwrap();
    let mut body = Vec::new();
    begin_body(&mut body);
    encode_frame(&alive(3, 0), &mut body);
    let pkt = Codec::new("", Some(ring), 16).seal(&body);
    b.handle_datagram(addr(1), &pkt, 0);
    b.handle_datagram(addr(1), &pkt, 1);
    assert_eq!(b.stats().drops.replayed, 1);
    assert_eq!(b.live_members(), 1);
    // Plain packets are refused by a keyed member.
    b.handle_datagram(addr(1), &packet(&[alive(4, 0)]), 2);
    assert_eq!(b.stats().drops.unencrypted, 1);
    assert!(b.member("n4").is_none());
}

#[test]
fn oversized_datagrams_are_dropped_before_decoding() {
    let mut b = member(2);
    b.handle_datagram(addr(1), &vec![0u8; 1401], 0);
    assert_eq!(b.stats().drops.oversized, 1);
}

#[test]
fn leave_sends_a_death_declared_by_the_member_itself() {
    let mut a = member(1);
    know(&mut a, &[2, 3, 4]);
    a.leave(S);
    assert_eq!(a.local().state(), MemberState::Left);
    let out: Vec<Transmit> = a.drain_transmits().collect();
    assert!(!out.is_empty(), "the leave goes out at once");
    let leave = Frame::Dead(Dead {
        incarnation: 0,
        name: name(1),
        from: name(1),
    });
    assert!(out.iter().all(|t| frames(t).contains(&leave)));
    // A leaving member does not refute its own death.
    a.handle_datagram(addr(2), &packet(&[leave]), 2 * S);
    assert_eq!(a.local().incarnation(), 0);
}

#[test]
fn invalid_configuration_is_rejected_naming_the_field() {
    let cfg = Config {
        probe_interval: Duration::ZERO,
        ..Config::lan()
    };
    let err = Swim::new(Identity::new("a", addr(1)), cfg, 0).unwrap_err();
    assert_eq!(err.field(), "probe_interval");
    let err = Swim::new(Identity::new("", addr(1)), Config::lan(), 0).unwrap_err();
    assert_eq!(err.field(), "name");
}

#[test]
fn after_handling_its_timeout_the_next_deadline_is_in_the_future() {
    // A runtime sleeps until next_deadline(); a deadline that stays in the past would
    // make it spin.
    let mut a = member(1);
    know(&mut a, &[2, 3, 4, 5, 6, 7, 8]);
    let s = Frame::Suspect(Suspect {
        incarnation: 0,
        name: name(3),
        from: name(4),
    });
    a.handle_datagram(addr(4), &packet(&[s]), 0);
    let mut now = 0;
    for _ in 0..2_000 {
        now = a.next_deadline().max(now);
        a.handle_timeout(now);
        a.drain_transmits().for_each(drop);
        assert!(
            a.next_deadline() > now,
            "deadline {} at {now}",
            a.next_deadline()
        );
    }
    assert!(now > 60 * S, "time moved on: {now}");
}

#[cfg(feature = "sim")]
#[test]
fn presets_form_a_cluster_and_detect_a_crash() {
    use palisade::gossip::sim::{Network, Simulation};
    for (preset, net) in [
        (Config::local(), Network::lan()),
        (Config::lan(), Network::lan()),
        (
            Config::wan(),
            Network {
                loss: 0.01,
                min_delay: Duration::from_millis(20),
                max_delay: Duration::from_millis(150),
            },
        ),
    ] {
        let cfg = Config {
            seed: Some(5),
            ..preset
        };
        let mut sim = Simulation::new(5, net);
        let ids = sim.add_members(8, &cfg).unwrap();
        for &id in &ids[1..] {
            sim.join(id, &[ids[0]]);
        }
        sim.run_for(Duration::from_secs(20));
        assert!(ids
            .iter()
            .all(|&i| sim.swim(i).unwrap().live_members() == 7));
        sim.crash(ids[2]);
        sim.run_for(Duration::from_secs(240));
        for &i in ids.iter().filter(|&&i| i != ids[2]) {
            let seen = sim
                .swim(i)
                .unwrap()
                .member(sim.name(ids[2]))
                .unwrap()
                .state();
            assert_eq!(seen, MemberState::Dead, "{:?}", cfg.probe_interval);
        }
    }
}

#[test]
fn a_stale_accusation_draws_the_refutation_back_out() {
    // No probes in this test (nobody would answer them): only gossip and accusations.
    let cfg = Config {
        seed: Some(1),
        probe_interval: Duration::from_secs(600),
        probe_timeout: Duration::from_secs(300),
        ..Config::lan()
    };
    let mut a = Swim::new(Identity::new(name(1), addr(1)), cfg, 0).unwrap();
    know(&mut a, &[3, 4]);
    a.handle_datagram(addr(9), &packet(&[alive(2, 3)]), 0);
    run(&mut a, 0, 5 * S); // drain the queue
    assert_eq!(a.pending_updates(), 0);
    // Someone still gossips a suspicion of n2 at incarnation 2: it missed n2's refutation.
    let stale = Frame::Suspect(Suspect {
        incarnation: 2,
        name: name(2),
        from: name(4),
    });
    a.handle_datagram(addr(4), &packet(&[stale]), 5 * S);
    assert_eq!(a.member("n2").unwrap().state(), MemberState::Alive);
    assert_eq!(a.stats().stale_corrections, 1);
    let sent = run(&mut a, 5 * S, 6 * S);
    assert!(sent.iter().any(|(_, t)| frames(t).contains(&alive(2, 3))));
    // The same about ourselves: we re-announce our current incarnation, unchanged.
    let refuted = Frame::Dead(Dead {
        incarnation: 0,
        name: name(1),
        from: name(3),
    });
    a.handle_datagram(addr(3), &packet(std::slice::from_ref(&refuted)), 6 * S);
    assert_eq!(a.local().incarnation(), 1);
    run(&mut a, 6 * S, 12 * S);
    a.handle_datagram(addr(3), &packet(&[refuted]), 12 * S);
    assert_eq!(
        a.local().incarnation(),
        1,
        "a stale accusation is not refuted again"
    );
    let sent = run(&mut a, 12 * S, 13 * S);
    assert!(sent.iter().any(|(_, t)| frames(t).contains(&alive(1, 1))));
}

#[test]
fn a_stale_accusation_in_a_datagram_is_answered_straight_to_its_live_sender() {
    let mut a = member(1);
    know(&mut a, &[3, 4]);
    a.handle_datagram(addr(9), &packet(&[alive(2, 3)]), 0);
    events(&mut a);
    a.drain_transmits().for_each(drop);
    let stale = |from: u8| {
        packet(&[Frame::Suspect(Suspect {
            incarnation: 2,
            name: name(2),
            from: name(from),
        })])
    };
    // n4 still gossips a suspicion of n2 at incarnation 2: it missed n2's alive at 3.
    a.handle_datagram(addr(4), &stale(4), S);
    let out: Vec<Transmit> = a.drain_transmits().collect();
    let reply = out
        .iter()
        .find(|t| t.to == addr(4))
        .expect("the refutation goes straight back to n4");
    assert_eq!(frames(reply), vec![alive(2, 3)]);
    assert_eq!(a.stats().stale_replies, 1);
    // The same about ourselves: a stale accusation of n1 is answered with our alive.
    let about_me = packet(&[Frame::Dead(Dead {
        incarnation: 0,
        name: name(1),
        from: name(3),
    })]);
    a.handle_datagram(addr(3), &about_me, 2 * S);
    let first = a.local().incarnation();
    a.drain_transmits().for_each(drop);
    a.handle_datagram(addr(3), &about_me, 3 * S);
    assert_eq!(a.local().incarnation(), first, "refuted once only");
    let out: Vec<Transmit> = a.drain_transmits().collect();
    assert!(out
        .iter()
        .any(|t| t.to == addr(3) && frames(t) == vec![alive(1, first)]));
    // From an address that is no live member's, nothing is sent back.
    let before = a.stats().stale_replies;
    a.handle_datagram(SocketAddr::from(([192, 0, 2, 1], 9)), &stale(4), 4 * S);
    assert!(a
        .drain_transmits()
        .all(|t| t.to != SocketAddr::from(([192, 0, 2, 1], 9))));
    assert_eq!(a.stats().stale_replies, before);
}

#[test]
fn an_accusation_at_the_highest_incarnation_is_refuted_without_overflow() {
    // Found by the gossip_datagram fuzz target: refuting an accusation at `u64::MAX`
    // overflowed (a panic in debug builds, an incarnation wrapped to 0 in release, which
    // every stale update then beats). The incarnation saturates instead.
    let mut a = member(1);
    know(&mut a, &[2]);
    let suspect = Frame::Suspect(Suspect {
        incarnation: u64::MAX,
        name: name(1),
        from: name(2),
    });
    a.handle_datagram(addr(2), &packet(&[suspect]), S);
    assert_eq!(a.local().incarnation(), u64::MAX, "saturated, not wrapped");
    assert_eq!(a.local().state(), MemberState::Alive);
    assert_eq!(a.stats().refutations, 1);
    // Its own updates at the top saturate too.
    a.set_tags([("zone".to_owned(), "b".to_owned())].into(), 2 * S)
        .unwrap();
    assert_eq!(a.local().identity().tag("zone"), Some("b"));
    assert_eq!(a.local().incarnation(), u64::MAX);
    // A death and an alive of another identity at the top are refuted the same way.
    let dead = Frame::Dead(Dead {
        incarnation: u64::MAX,
        name: name(1),
        from: name(2),
    });
    a.handle_datagram(addr(2), &packet(&[dead, alive(1, u64::MAX)]), 3 * S);
    assert_eq!(a.local().incarnation(), u64::MAX);
    assert_eq!(a.local().state(), MemberState::Alive);
    assert_eq!(a.stats().refutations, 3);
}
