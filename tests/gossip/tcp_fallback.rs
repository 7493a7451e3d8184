//! The TCP fallback ping (`Config::tcp_fallback_ping`): the core by hand, the wire
//! format, and whole clusters on the simulator with UDP broken for one member.
#![cfg(all(feature = "test-util", feature = "sim"))]

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use palisade::gossip::sim::{MemberId, Network, Simulation};
use palisade::gossip::test_util::{decode_body, encode_frame, Codec, DropReason};
use palisade::gossip::test_util::{kind, Ack, Frame, Ping, Suspect};
use palisade::gossip::{Config, Event, Identity, MemberState, Swim, Transmit, Transport};

use crate::common;
use common::swim::{addr, body, frames, name, packet, run};

const S: u64 = 1_000_000_000;

fn member_with(i: u8, fallback: bool) -> Swim {
    let cfg = Config {
        seed: Some(u64::from(i)),
        tcp_fallback_ping: fallback,
        ..Config::lan()
    };
    Swim::new(Identity::new(name(i), addr(i)), cfg, 0).unwrap()
}

/// Teaches `s` about member `i` (alive, incarnation 0), so that it probes only `i`.
fn know(s: &mut Swim, i: u8) {
    let alive = Frame::Alive(palisade::gossip::test_util::Alive {
        incarnation: 0,
        identity: Identity::new(name(i), addr(i)),
    });
    s.handle_datagram(addr(200), &packet(&[alive]), 0);
    while s.poll_event().is_some() {}
    s.drain_transmits().for_each(drop);
}

fn stream_ping(t: &Transmit) -> Option<Ping> {
    frames(t).into_iter().find_map(|f| match f {
        Frame::StreamPing(p) => Some(p),
        _ => None,
    })
}

/// The first probe of n2 by `a` (which knows only n2) and the round's transmits: the
/// datagram ping, and (with the fallback on) the stream ping at the probe timeout.
fn first_round(a: &mut Swim) -> (u64, Vec<(u64, Transmit)>) {
    let mut now = 0;
    loop {
        let sent = run(a, now, now + S / 2);
        if let Some(&(at, _)) = sent.iter().find(|(_, t)| {
            t.transport == Transport::Datagram
                && frames(t)
                    .iter()
                    .any(|f| matches!(f, Frame::Ping(p) if p.target == "n2"))
        }) {
            // Everything up to the probe timeout (the stream ping leaves then).
            let timeout = Config::lan().probe_timeout.as_nanos() as u64;
            let mut round = sent;
            round.extend(run(a, now + S / 2, at + timeout));
            return (at, round);
        }
        now += S / 2;
        assert!(now < 10 * S, "n2 was never probed");
    }
}

#[test]
fn the_fallback_is_on_in_every_preset_like_memberlist() {
    for cfg in [
        Config::default(),
        Config::lan(),
        Config::wan(),
        Config::local(),
    ] {
        assert!(cfg.tcp_fallback_ping);
    }
}

#[test]
fn unanswered_direct_ping_is_followed_by_a_stream_ping_at_the_probe_timeout() {
    let mut a = member_with(1, true);
    know(&mut a, 2);
    let (probed_at, round) = first_round(&mut a);
    let streams: Vec<&(u64, Transmit)> = round
        .iter()
        .filter(|(_, t)| t.transport == Transport::Stream && stream_ping(t).is_some())
        .collect();
    assert_eq!(streams.len(), 1, "one stream ping per round");
    let (at, t) = streams[0];
    assert_eq!(t.to, addr(2));
    assert_eq!(
        *at,
        probed_at + Config::lan().probe_timeout.as_nanos() as u64
    );
    assert_eq!(stream_ping(t).unwrap().target, "n2");
    assert_eq!(a.stats().tcp_fallback_pings, 1);
}

#[test]
fn with_the_fallback_off_no_stream_ping_is_sent_and_the_target_is_suspected() {
    let mut a = member_with(1, false);
    know(&mut a, 2);
    let (probed_at, round) = first_round(&mut a);
    assert!(round
        .iter()
        .all(|(_, t)| t.transport == Transport::Datagram));
    let more = run(&mut a, probed_at, probed_at + S / 2);
    assert!(more.iter().all(|(_, t)| stream_ping(t).is_none()));
    assert_eq!(a.member("n2").unwrap().state(), MemberState::Suspect);
    assert_eq!(a.stats().tcp_fallback_pings, 0);
    assert_eq!(a.stats().tcp_fallback_saves, 0);
}

#[test]
fn stream_ping_is_answered_with_an_ack_on_the_stream_only_when_it_came_on_one() {
    let mut b = member_with(2, true);
    let ping = packet(&[Frame::StreamPing(Ping {
        seq: 41,
        target: "n2".into(),
    })]);
    // The runtime hands a stream message over with the peer's TCP address as `from`.
    let peer: SocketAddr = "10.0.0.1:53211".parse().unwrap();
    b.handle_stream(peer, &ping, S);
    let out: Vec<Transmit> = b.drain_transmits().collect();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].to, peer, "answered on the same connection");
    assert_eq!(out[0].transport, Transport::Stream);
    assert!(frames(&out[0]).contains(&Frame::Ack(Ack { seq: 41 })));
    // In a datagram it is ignored: only streams carry it.
    b.handle_datagram(addr(1), &ping, S);
    assert_eq!(b.drain_transmits().count(), 0);
    // Addressed to another name (an address reused): not answered, counted.
    let stray = packet(&[Frame::StreamPing(Ping {
        seq: 42,
        target: "someone-else".into(),
    })]);
    b.handle_stream(peer, &stray, S);
    assert_eq!(b.drain_transmits().count(), 0);
    assert_eq!(b.stats().misdirected, 1);
}

/// Plays one round in which every datagram between a and b is lost but streams pass.
fn round_saved_over_the_stream(a: &mut Swim, b: &mut Swim) -> (u64, u32) {
    let (probed_at, round) = first_round(a);
    let (at, t) = round
        .iter()
        .find(|(_, t)| stream_ping(t).is_some())
        .expect("a stream ping");
    b.handle_stream(addr(1), &t.bytes, at + S / 1000);
    let answers: Vec<Transmit> = b.drain_transmits().collect();
    assert_eq!(answers.len(), 1);
    a.handle_stream(addr(2), &answers[0].bytes, at + 2 * S / 1000);
    (probed_at, stream_ping(t).unwrap().seq)
}

#[test]
fn a_stream_ack_closes_the_round_like_any_ack_and_is_counted_as_a_save() {
    let mut a = member_with(1, true);
    let mut b = member_with(2, true);
    know(&mut a, 2);
    let (probed_at, seq) = round_saved_over_the_stream(&mut a, &mut b);
    assert_eq!(a.stats().tcp_fallback_saves, 1);
    // Up to the end of the period: the round was closed by the ack, so no suspicion.
    run(&mut a, probed_at, probed_at + S / 2 - 1);
    assert_eq!(a.member("n2").unwrap().state(), MemberState::Alive);
    assert_eq!(a.health_score(), 0, "a saved round counts as a success");
    // A late duplicate of the ack matches no round and counts nothing more.
    let dup = packet(&[Frame::Ack(Ack { seq })]);
    a.handle_stream(addr(2), &dup, probed_at + S / 2 - 1);
    assert_eq!(a.stats().tcp_fallback_saves, 1);
}

#[test]
fn a_suspected_target_hears_of_it_on_the_stream_ping_and_refutes_on_the_ack() {
    let mut a = member_with(1, true);
    let mut b = member_with(2, true);
    know(&mut a, 2);
    let s = Frame::Suspect(Suspect {
        incarnation: 0,
        name: "n2".into(),
        from: "n9".into(),
    });
    a.handle_datagram(addr(9), &packet(&[s]), 0);
    a.drain_transmits().for_each(drop);
    assert_eq!(a.member("n2").unwrap().state(), MemberState::Suspect);
    let (_, round) = first_round(&mut a);
    let (at, t) = round
        .iter()
        .find(|(_, t)| stream_ping(t).is_some())
        .unwrap();
    assert!(
        frames(t)
            .iter()
            .any(|f| matches!(f, Frame::Suspect(s) if s.name == "n2")),
        "buddy system on the stream ping"
    );
    b.handle_stream(addr(1), &t.bytes, *at);
    let answer: Vec<Transmit> = b.drain_transmits().collect();
    assert_eq!(answer.len(), 1);
    assert!(
        frames(&answer[0]).iter().any(
            |f| matches!(f, Frame::Alive(al) if al.identity.name() == "n2" && al.incarnation == 1)
        ),
        "the refutation rides on the ack"
    );
    a.handle_stream(addr(2), &answer[0].bytes, *at + 1);
    let n2 = a.member("n2").unwrap();
    assert_eq!((n2.state(), n2.incarnation()), (MemberState::Alive, 1));
    assert_eq!(a.stats().tcp_fallback_saves, 1);
}

#[test]
fn stream_ping_round_trips_and_malformed_ones_are_dropped_whole() {
    let f = Frame::StreamPing(Ping {
        seq: u32::MAX,
        target: "n2".into(),
    });
    assert_eq!(f.kind(), kind::STREAM_PING);
    let b = body(&[f.clone(), Frame::Ack(Ack { seq: 3 })]);
    let d = decode_body(&b).unwrap();
    assert_eq!(d.frames, vec![f.clone(), Frame::Ack(Ack { seq: 3 })]);
    assert_eq!(d.skipped, 0);
    // Same payload as a ping, only the kind differs.
    let ping = body(&[Frame::Ping(Ping {
        seq: u32::MAX,
        target: "n2".into(),
    })]);
    let only = body(&[f]);
    assert_eq!(only[1], kind::STREAM_PING);
    assert_eq!(only[2..], ping[2..]);
    // Every cut is dropped (or leaves fewer frames), never misread.
    for cut in 1..b.len() {
        let r = decode_body(&b[..cut]);
        assert!(r.is_err() || r.unwrap().frames.len() < 2, "cut {cut}");
    }
    let empty = body(&[Frame::StreamPing(Ping {
        seq: 1,
        target: String::new(),
    })]);
    assert_eq!(decode_body(&empty), Err(DropReason::Malformed));
    let long = body(&[Frame::StreamPing(Ping {
        seq: 1,
        target: "x".repeat(1000),
    })]);
    assert_eq!(decode_body(&long), Err(DropReason::Malformed));
    assert_eq!(
        decode_body(&[1, kind::STREAM_PING, 5, 1]),
        Err(DropReason::Truncated)
    );
}

#[test]
fn a_decoder_that_does_not_know_a_kind_skips_a_stream_ping_shaped_frame() {
    // What a member of an older build sees: a frame of a kind it does not know, with a
    // ping's payload, between frames it knows. It skips it and applies the rest.
    let ping = body(&[Frame::Ping(Ping {
        seq: 9,
        target: "n2".into(),
    })]);
    let unknown_kind = 15; // unassigned in this build, as STREAM_PING is in older ones
    let mut b = body(&[Frame::Ack(Ack { seq: 1 })]);
    b.push(unknown_kind);
    b.extend_from_slice(&ping[2..]);
    encode_frame(&Frame::Ack(Ack { seq: 2 }), &mut b);
    let d = decode_body(&b).unwrap();
    assert_eq!(
        d.frames,
        vec![Frame::Ack(Ack { seq: 1 }), Frame::Ack(Ack { seq: 2 })]
    );
    assert_eq!(d.skipped, 1);
    // And a member skips it whole: nothing answered, the skip counted.
    let mut old = member_with(2, true);
    let mut pkt = body(&[]);
    pkt.push(unknown_kind);
    pkt.extend_from_slice(&ping[2..]);
    old.handle_stream(addr(1), &Codec::new("", None, 0).seal(&pkt), 0);
    assert_eq!(old.drain_transmits().count(), 0);
    assert_eq!(old.stats().skipped_frames, 1);
}

// ---------------------------------------------------------------------------------
// Whole clusters on the simulator.

type Log = Rc<RefCell<Vec<(u64, MemberId, Event)>>>;

fn cluster(n: usize, fallback: bool, seed: u64) -> (Simulation, Vec<MemberId>, Log) {
    let cfg = Config {
        seed: Some(seed),
        tcp_fallback_ping: fallback,
        ..Config::lan()
    };
    let mut sim = Simulation::new(seed, Network::lan());
    let ids = sim.add_members(n, &cfg).unwrap();
    let log: Log = Rc::default();
    let l = log.clone();
    sim.set_observer(move |t, id, e| l.borrow_mut().push((t, id, e.clone())));
    for &id in &ids[1..] {
        sim.join(id, &[ids[0]]);
    }
    let done = sim.run_until_true(Duration::from_millis(100), Duration::from_secs(60), |s| {
        ids.iter()
            .all(|&i| s.swim(i).is_some_and(|s| s.live_members() == n - 1))
    });
    assert!(done.is_some(), "the cluster formed");
    log.borrow_mut().clear();
    (sim, ids, log)
}

fn failed_of(log: &Log, name: &str) -> usize {
    log.borrow()
        .iter()
        .filter(|(_, _, e)| matches!(e, Event::Failed(m) if m.name() == name))
        .count()
}

fn saves(sim: &Simulation, ids: &[MemberId]) -> u64 {
    ids.iter()
        .filter_map(|&i| sim.swim(i))
        .map(|s| s.stats().tcp_fallback_saves)
        .sum()
}

/// Cuts member 3's datagrams (both ways, or only what it sends) for 60 s.
fn udp_broken_for_one(fallback: bool, both_ways: bool, seed: u64) -> (usize, usize, u64) {
    let n = 8;
    let (mut sim, ids, log) = cluster(n, fallback, seed);
    let b = ids[3];
    let bname = sim.name(b).to_owned();
    if both_ways {
        sim.isolate_datagrams(b);
    } else {
        for &o in ids.iter().filter(|&&o| o != b) {
            sim.block_datagrams(b, o);
        }
    }
    sim.run_for(Duration::from_secs(60));
    eprintln!(
        "fallback {fallback}, both ways {both_ways}: {} rounds saved, {} Failed about b",
        saves(&sim, &ids),
        failed_of(&log, &bname)
    );
    let all_failed = log
        .borrow()
        .iter()
        .filter(|(_, _, e)| matches!(e, Event::Failed(_)))
        .count();
    (failed_of(&log, &bname), all_failed, saves(&sim, &ids))
}

#[test]
fn member_with_udp_dropped_both_ways_stays_alive_thanks_to_the_fallback() {
    let (b_failed, all_failed, saved) = udp_broken_for_one(true, true, 31);
    assert_eq!(b_failed, 0, "nobody declared the UDP-less member failed");
    assert_eq!(all_failed, 0, "and it declared nobody failed");
    // Each of the 7 others probes it about once per 8 periods, and it probes each of
    // them: well over a hundred saved rounds in 60 s.
    assert!(saved > 100, "saved rounds counted: {saved}");
}

#[test]
fn member_whose_outgoing_udp_is_dropped_stays_alive_thanks_to_the_fallback() {
    let (b_failed, all_failed, saved) = udp_broken_for_one(true, false, 32);
    assert_eq!(b_failed, 0);
    assert_eq!(all_failed, 0);
    assert!(saved > 100, "saved rounds counted: {saved}");
}

#[test]
fn without_the_fallback_a_member_with_udp_dropped_is_declared_failed() {
    let (b_failed, _, saved) = udp_broken_for_one(false, true, 31);
    assert!(b_failed > 0, "the UDP-less member was declared failed");
    assert_eq!(saved, 0);
    let (b_failed, _, _) = udp_broken_for_one(false, false, 32);
    assert!(b_failed > 0, "also when only its outgoing UDP is dropped");
}

/// Virtual seconds from a crash until the last other member declared it failed.
fn crash_detection(fallback: bool, seed: u64) -> (f64, u64) {
    let n = 16;
    let (mut sim, ids, log) = cluster(n, fallback, seed);
    let victim = ids[7];
    let name = sim.name(victim).to_owned();
    let at = sim.now();
    sim.crash(victim);
    sim.run_for(Duration::from_secs(20));
    let times: Vec<u64> = log
        .borrow()
        .iter()
        .filter(|(_, _, e)| matches!(e, Event::Failed(m) if m.name() == name))
        .map(|(t, _, _)| t - at)
        .collect();
    assert_eq!(times.len(), n - 1, "every other member saw the crash");
    assert_eq!(saves(&sim, &ids), 0, "a crashed member saves no round");
    let last = *times.iter().max().unwrap();
    (last as f64 / S as f64, sim.stats().stream_bytes_sent)
}

#[test]
fn crashed_member_is_declared_failed_as_fast_with_the_fallback_as_without() {
    let cfg = Config::lan();
    let n = 16;
    // The bound of the crash test in gossip_sim.rs: probed within two periods, the
    // longest suspicion, then a few gossip intervals to spread.
    let bound = (cfg.probe_interval * 2
        + cfg.suspicion_min_timeout(n) * cfg.suspicion_max_timeout_mult
        + Duration::from_secs(2))
    .as_secs_f64();
    let mut on = Vec::new();
    let mut off = Vec::new();
    for seed in 40..46 {
        let (t_on, _) = crash_detection(true, seed);
        let (t_off, _) = crash_detection(false, seed);
        assert!(t_on <= bound, "seed {seed}: {t_on} s > {bound} s");
        assert!(t_off <= bound, "seed {seed}: {t_off} s > {bound} s");
        on.push(t_on);
        off.push(t_off);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    };
    let (m_on, m_off) = (median(&mut on), median(&mut off));
    eprintln!(
        "last member saw the crash after (median of 6): on {m_on:.2} s {on:?}, off {m_off:.2} s {off:?}"
    );
    // Nothing in the timeout structure changes: the round still ends at the end of the
    // period. Runs differ only by the random draws the extra stream messages consume.
    assert!(
        m_on <= m_off + cfg.probe_interval.as_secs_f64(),
        "on {m_on} s vs off {m_off} s"
    );
}
