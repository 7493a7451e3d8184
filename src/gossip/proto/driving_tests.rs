//! The core as a driver of its own sees it: request and answer marks, stream failures
//! and join status, datagram-only joins, early and late timer calls, the start of the
//! schedule, the live view.

use std::net::SocketAddr;

use super::message::{Alive, Frame, Ping, PushPull, Suspect};
use super::{Config, Event, Identity, JoinStatus, StreamKind, Swim, Transmit, Transport};
use crate::gossip::codec::{begin_body, decode_body, encode_frame, Codec};
#[cfg(feature = "sim")]
use {
    super::MemberState,
    crate::gossip::sim::{Network, Simulation},
    std::time::Duration,
};

const S: u64 = 1_000_000_000;

fn addr(i: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, i], 7946))
}

fn config(i: u8) -> Config {
    Config {
        seed: Some(u64::from(i)),
        ..Config::lan()
    }
}

fn datagram_only(i: u8) -> Config {
    Config {
        datagram_only: true,
        ..config(i)
    }
}

fn member(i: u8, cfg: Config) -> Swim {
    Swim::new(Identity::new(format!("n{i}"), addr(i)), cfg, 0).unwrap()
}

fn packet(frames: &[Frame]) -> Vec<u8> {
    let mut b = Vec::new();
    begin_body(&mut b);
    for f in frames {
        encode_frame(f, &mut b);
    }
    Codec::new("", None, 0).seal(&b)
}

fn frames(t: &Transmit) -> Vec<Frame> {
    let mut codec = Codec::new("", None, 0);
    decode_body(&codec.open(&t.bytes).unwrap()).unwrap().frames
}

fn alive(i: u8) -> Frame {
    Frame::Alive(Alive {
        incarnation: 0,
        identity: Identity::new(format!("n{i}"), addr(i)),
    })
}

/// Teaches `s` about members `ids` at time `now`, and forgets what that queued.
fn know(s: &mut Swim, ids: &[u8], now: u64) {
    let fs: Vec<Frame> = ids.iter().map(|&i| alive(i)).collect();
    for chunk in fs.chunks(10) {
        s.handle_datagram(addr(250), &packet(chunk), now);
    }
    while s.poll_event().is_some() {}
    s.drain_transmits().for_each(drop);
}

fn drain(s: &mut Swim) -> Vec<Transmit> {
    s.drain_transmits().collect()
}

fn pings(ts: &[Transmit]) -> usize {
    ts.iter()
        .filter(|t| frames(t).iter().any(|f| matches!(f, Frame::Ping(_))))
        .count()
}

#[test]
fn stream_requests_and_answers_are_marked_and_an_answer_completes_the_join() {
    let mut a = member(1, config(1));
    let mut b = member(2, config(2));
    a.join(&[addr(2)], 0);
    assert_eq!(a.join_status(), JoinStatus::Pending { waiting: 1 });
    let out = drain(&mut a);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].transport, Transport::Stream);
    assert_eq!(
        out[0].stream,
        Some(StreamKind::Request),
        "open a new stream"
    );
    // b reads it from an inbound connection whose peer address is ephemeral.
    let peer: SocketAddr = "10.0.0.1:50123".parse().unwrap();
    b.handle_stream(peer, &out[0].bytes, S);
    let answer = drain(&mut b);
    assert_eq!(answer.len(), 1);
    assert_eq!(answer[0].stream, Some(StreamKind::Answer), "answer on it");
    assert_eq!(answer[0].to, peer);
    a.handle_stream(addr(2), &answer[0].bytes, 2 * S);
    assert_eq!(a.join_status(), JoinStatus::Joined { answered: 1 });
    assert!(drain(&mut a)
        .iter()
        .all(|t| t.stream != Some(StreamKind::Answer)));
    // Datagrams carry no stream mark.
    let probes = {
        let mut now = 2 * S;
        let mut sent = Vec::new();
        while sent.is_empty() {
            now = a.next_deadline().max(now);
            a.handle_timeout(now);
            sent = drain(&mut a);
        }
        sent
    };
    assert!(probes
        .iter()
        .all(|t| t.transport == Transport::Datagram && t.stream.is_none()));
}

#[test]
fn a_stream_message_gets_one_answer_however_many_requests_it_carries() {
    let mut b = member(2, config(2));
    let two = packet(&[
        Frame::PushPull(PushPull {
            join: true,
            reply: false,
            members: Vec::new(),
        }),
        Frame::StreamPing(Ping {
            seq: 5,
            target: "n2".into(),
        }),
    ]);
    let peer: SocketAddr = "10.0.0.1:50124".parse().unwrap();
    b.handle_stream(peer, &two, S);
    let out = drain(&mut b);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].stream, Some(StreamKind::Answer));
    assert_eq!(b.stats().surplus_stream_requests, 1);
}

#[test]
fn a_join_whose_streams_all_fail_is_reported_failed_and_a_late_answer_still_counts() {
    let mut a = member(1, config(1));
    let mut b = member(2, config(2));
    assert_eq!(a.join_status(), JoinStatus::Idle);
    a.join(&[addr(2), addr(3), addr(1)], 0);
    let out = drain(&mut a);
    assert_eq!(out.len(), 2, "its own address is skipped");
    assert_eq!(a.join_status(), JoinStatus::Pending { waiting: 2 });
    a.stream_failed(addr(3), S);
    assert_eq!(a.join_status(), JoinStatus::Pending { waiting: 1 });
    a.stream_failed(addr(2), S);
    assert_eq!(a.join_status(), JoinStatus::Failed { seeds: 2 });
    assert_eq!(a.stats().stream_failures, 2);
    assert_eq!(a.live_members(), 0);
    // The request to n2 was delivered after all; its answer arrives late.
    let to_b = out.iter().find(|t| t.to == addr(2)).unwrap();
    b.handle_stream(addr(1), &to_b.bytes, S);
    let answer = drain(&mut b);
    a.handle_stream(addr(2), &answer[0].bytes, 2 * S);
    assert_eq!(a.join_status(), JoinStatus::Joined { answered: 1 });
    // A failure reported for an address that is no seed changes no status.
    a.stream_failed(addr(9), 3 * S);
    assert_eq!(a.join_status(), JoinStatus::Joined { answered: 1 });
    assert_eq!(a.stats().stream_failures, 3);
}

#[test]
fn a_datagram_only_member_joins_by_datagram_and_the_answer_fits_one_datagram() {
    let mut seed = member(1, config(1));
    // The seed knows many members with tags: its whole state cannot fit a datagram.
    let many: Vec<Frame> = (3..=240u8)
        .map(|i| {
            Frame::Alive(Alive {
                incarnation: 0,
                identity: Identity::new(format!("n{i}"), addr(i)).with_tag("zone", "eu-west-1a"),
            })
        })
        .collect();
    for chunk in many.chunks(10) {
        seed.handle_datagram(addr(250), &packet(chunk), 0);
    }
    while seed.poll_event().is_some() {}
    drain(&mut seed);
    let mut joiner = member(2, datagram_only(2));
    joiner.join(&[addr(1)], 0);
    let out = drain(&mut joiner);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].transport, Transport::Datagram);
    seed.handle_datagram(addr(2), &out[0].bytes, S);
    assert!(seed.member("n2").is_some(), "the seed learned the joiner");
    let answer: Vec<Transmit> = drain(&mut seed)
        .into_iter()
        .filter(|t| t.to == addr(2))
        .collect();
    assert_eq!(answer.len(), 1);
    assert_eq!(answer[0].transport, Transport::Datagram);
    assert!(answer[0].bytes.len() <= Config::lan().max_packet_size);
    joiner.handle_datagram(addr(1), &answer[0].bytes, 2 * S);
    assert_eq!(joiner.join_status(), JoinStatus::Joined { answered: 1 });
    let learned = joiner.live_members();
    assert!(
        learned > 10 && learned < 239,
        "part of the cluster, as much as fits: {learned}"
    );
    assert!(joiner.member("n1").is_some(), "the seed itself comes first");
    // An answer is not answered again.
    assert!(drain(&mut joiner)
        .iter()
        .all(|t| t.to != addr(1) || !frames(t).iter().any(|f| matches!(f, Frame::PushPull(_)))));
}

#[test]
fn a_datagram_join_to_a_silent_seed_is_retried_then_reported_failed() {
    let mut a = member(1, datagram_only(1));
    a.join(&[addr(2)], 0);
    let mut tries = drain(&mut a).len();
    let mut now = 0;
    while now < 10 * S {
        now = a.next_deadline().max(now + 1);
        a.handle_timeout(now);
        tries += drain(&mut a)
            .iter()
            .filter(|t| {
                t.to == addr(2) && frames(t).iter().any(|f| matches!(f, Frame::PushPull(_)))
            })
            .count();
        if matches!(a.join_status(), JoinStatus::Failed { .. }) {
            break;
        }
    }
    assert_eq!(a.join_status(), JoinStatus::Failed { seeds: 1 });
    assert_eq!(tries, 3);
    let probe = Config::lan().probe_interval.as_nanos() as u64;
    assert_eq!(now, 3 * probe, "three tries one probe interval apart");
}

#[cfg(feature = "sim")]
#[test]
fn datagram_only_members_form_a_cluster_without_a_stream_and_detect_a_crash() {
    let cfg = Config {
        seed: Some(3),
        datagram_only: true,
        ..Config::lan()
    };
    let mut sim = Simulation::new(3, Network::lan());
    let ids = sim.add_members(12, &cfg).unwrap();
    for &id in &ids[1..] {
        sim.join(id, &[ids[0]]);
    }
    let formed = sim.run_until_true(Duration::from_millis(100), Duration::from_secs(60), |s| {
        ids.iter()
            .all(|&i| s.swim(i).is_some_and(|m| m.live_members() == 11))
    });
    assert!(formed.is_some(), "every member learned every other");
    for &id in &ids[1..] {
        assert!(matches!(
            sim.swim(id).unwrap().join_status(),
            JoinStatus::Joined { .. }
        ));
    }
    sim.crash(ids[5]);
    let name = sim.name(ids[5]).to_owned();
    let seen = sim.run_until_true(Duration::from_millis(100), Duration::from_secs(60), |s| {
        ids.iter().filter(|&&i| i != ids[5]).all(|&i| {
            s.swim(i)
                .and_then(|m| m.member(&name))
                .is_some_and(|m| m.state() == MemberState::Dead)
        })
    });
    assert!(seen.is_some(), "the crash was detected");
    assert_eq!(sim.stats().stream_bytes_sent, 0, "not one stream message");
}

#[test]
fn an_early_timeout_call_does_nothing() {
    let mut a = member(1, config(1));
    know(&mut a, &[2, 3, 4], 0);
    let due = a.next_deadline();
    assert!(due > 0);
    let before = *a.stats();
    a.handle_timeout(due - 1);
    assert!(drain(&mut a).is_empty());
    assert!(a.poll_event().is_none());
    assert_eq!(a.next_deadline(), due, "the schedule did not move");
    assert_eq!(*a.stats(), before);
}

#[test]
fn a_late_timeout_call_does_the_overdue_work_once_and_schedules_from_then() {
    let mut a = member(1, config(1));
    know(&mut a, &[2, 3, 4, 5], 0);
    // A driver that stalled for a minute: 120 probe periods were missed.
    let late = 60 * S;
    a.handle_timeout(late);
    let out = drain(&mut a);
    assert_eq!(pings(&out), 1, "one probe, not one per missed period");
    assert!(a.next_deadline() > late);
    assert!(a.next_deadline() <= late + Config::lan().probe_interval.as_nanos() as u64);
}

#[test]
fn a_member_built_long_before_its_first_input_schedules_from_that_input() {
    let mut a = member(1, config(1));
    assert_eq!(a.next_deadline(), 0, "nothing scheduled yet: start at once");
    let first = 100 * S;
    know(&mut a, &[2, 3, 4, 5], first);
    let d = a.next_deadline();
    assert!(d >= first, "{d} is before the first input");
    // The first period's work keeps its random offsets: no burst at the first call.
    a.handle_timeout(first);
    assert!(
        drain(&mut a).is_empty(),
        "nothing was due at the first input"
    );
    let period = Config::lan().probe_interval.as_nanos() as u64;
    let mut now = first;
    let mut probes = 0;
    while now < first + period {
        now = a.next_deadline().max(now + 1);
        if now >= first + period {
            break;
        }
        a.handle_timeout(now);
        probes += pings(&drain(&mut a));
    }
    assert!(
        probes <= 1,
        "at most one probe in the first period: {probes}"
    );
}

#[test]
fn live_yields_the_alive_and_suspect_members_only() {
    let mut a = member(1, config(1));
    know(&mut a, &[2, 3, 4], 0);
    let accuse = |name: &str, dead: bool| {
        if dead {
            Frame::Dead(super::message::Dead {
                incarnation: 0,
                name: name.into(),
                from: "n9".into(),
            })
        } else {
            Frame::Suspect(Suspect {
                incarnation: 0,
                name: name.into(),
                from: "n9".into(),
            })
        }
    };
    a.handle_datagram(
        addr(9),
        &packet(&[accuse("n3", false), accuse("n4", true)]),
        S,
    );
    assert!(matches!(a.poll_event(), Some(Event::Failed(m)) if m.name() == "n4"));
    let mut live: Vec<&str> = a.live().map(|m| m.name()).collect();
    live.sort_unstable();
    assert_eq!(live, ["n2", "n3"]);
    assert_eq!(a.live().count(), a.live_members());
    assert_eq!(a.members().count(), 3);
}

#[test]
fn the_tokio_runtime_rejects_a_datagram_only_protocol() {
    use crate::gossip::runtime::MembershipConfig;
    let c = MembershipConfig::new("a", "127.0.0.1:0".parse().unwrap()).protocol(datagram_only(1));
    assert_eq!(c.validate().unwrap_err().field(), "protocol.datagram_only");
}
