//! A graceful leave in the sans-IO core: who is told, and when the leave counts as
//! spread.
#![cfg(feature = "test-util")]

use std::collections::BTreeSet;

use palisade::gossip::test_util::{Alive, Dead, Frame, Ping};
use palisade::gossip::{Config, Identity, MemberState, Swim, Transport};

use crate::common;
use common::swim::{addr, frames, name, packet, run};

const S: u64 = 1_000_000_000;

fn member(i: u8) -> Swim {
    let cfg = Config {
        seed: Some(u64::from(i)),
        ..Config::local()
    };
    Swim::new(Identity::new(name(i), addr(i)), cfg, 0).unwrap()
}

/// `s` knows members `ids` as alive, and has sent and published nothing yet.
fn know(s: &mut Swim, ids: impl IntoIterator<Item = u8>) {
    let fs: Vec<Frame> = ids
        .into_iter()
        .map(|i| {
            Frame::Alive(Alive {
                incarnation: 0,
                identity: Identity::new(name(i), addr(i)),
            })
        })
        .collect();
    s.handle_datagram(addr(250), &packet(&fs), 0);
    while s.poll_event().is_some() {}
    s.drain_transmits().for_each(drop);
}

fn leave_of(i: u8) -> Frame {
    Frame::Dead(Dead {
        incarnation: 0,
        name: name(i),
        from: name(i),
    })
}

#[test]
fn leave_is_sent_at_once_to_every_live_member_not_only_to_the_gossip_targets() {
    let mut a = member(1);
    know(&mut a, 2..=41);
    // One of them is already known to have left: it is not told again.
    a.handle_datagram(addr(250), &packet(&[leave_of(41)]), 0);
    a.drain_transmits().for_each(drop);
    a.leave(S);
    let told: BTreeSet<_> = a
        .drain_transmits()
        .filter(|t| t.transport == Transport::Datagram && frames(t).contains(&leave_of(1)))
        .map(|t| t.to)
        .collect();
    let live: BTreeSet<_> = (2..=40).map(addr).collect();
    assert_eq!(
        told, live,
        "every live member, and no one else, hears the leave"
    );
}

#[test]
fn a_leaving_member_answers_a_ping_with_its_leave() {
    let mut a = member(1);
    know(&mut a, 2..=10);
    a.leave(S);
    // Long enough for the leave to have been gossiped its full count and dropped from
    // the queue: the answer carries it all the same.
    run(&mut a, S, 30 * S);
    assert!(a.leave_spread());
    let ping = Frame::Ping(Ping {
        seq: 7,
        target: name(1),
    });
    a.handle_datagram(addr(5), &packet(&[ping]), 30 * S);
    let answer: Vec<Frame> = a.drain_transmits().flat_map(|t| frames(&t)).collect();
    assert!(answer
        .iter()
        .any(|f| matches!(f, Frame::Ack(ack) if ack.seq == 7)));
    assert!(
        answer.contains(&leave_of(1)),
        "the ack says it left: {answer:?}"
    );
}

#[test]
fn leave_is_spread_once_gossiped_its_retransmit_count_whatever_else_is_queued() {
    let mut a = member(1);
    know(&mut a, 2..=30);
    assert!(!a.leave_spread(), "not before leaving");
    a.leave(S);
    assert!(!a.leave_spread(), "gossiped only once so far");
    // Fill the queue with news about others that keeps arriving (a cluster in churn).
    let mut now = S;
    let mut spread_at = None;
    for round in 0..100u64 {
        now += Config::local().gossip_interval.as_nanos() as u64;
        let i = 31 + (round % 200) as u8;
        let news = Frame::Alive(Alive {
            incarnation: round,
            identity: Identity::new(name(i), addr(i)),
        });
        a.handle_datagram(addr(2), &packet(&[news]), now);
        run(&mut a, now, now);
        if a.leave_spread() && spread_at.is_none() {
            spread_at = Some(round);
        }
    }
    assert!(a.pending_updates() > 0, "the queue never drained");
    assert!(
        spread_at.is_some(),
        "the leave counted as spread all the same"
    );
    assert_eq!(a.local().state(), MemberState::Left);
}
