//! Many members leaving at once, on the simulator: every member that stays sees every
//! leaver as `Left` (not alive, not failed), even when the leavers stop soon after
//! leaving and so cannot relay each other's leaves. Seeded, virtual time.
#![cfg(feature = "sim")]

use std::time::Duration;

use palisade::gossip::sim::{MemberId, Network, Simulation};
use palisade::gossip::{Config, MemberState};

/// A formed cluster of `n` members on `Config::local()` (the loopback preset).
fn cluster(n: usize, seed: u64) -> (Simulation, Vec<MemberId>) {
    let mut sim = Simulation::new(seed, Network::lan());
    let cfg = Config {
        seed: Some(seed),
        ..Config::local()
    };
    let ids = sim.add_members(n, &cfg).unwrap();
    for &id in &ids[1..] {
        sim.join(id, &[ids[0]]);
    }
    let formed = sim.run_until_true(Duration::from_millis(100), Duration::from_secs(120), |s| {
        ids.iter()
            .all(|&i| s.swim(i).is_some_and(|w| w.live_members() == n - 1))
    });
    assert!(formed.is_some(), "the cluster formed");
    (sim, ids)
}

/// How many of `leavers` some staying member does not see as `Left`, in total over the
/// `stayers`.
fn not_left(sim: &Simulation, stayers: &[MemberId], leavers: &[MemberId]) -> usize {
    stayers
        .iter()
        .map(|&s| {
            let swim = sim.swim(s).expect("stayers run");
            leavers
                .iter()
                .filter(|&&l| {
                    swim.member(sim.name(l)).map(|m| m.state()) != Some(MemberState::Left)
                })
                .count()
        })
        .sum()
}

/// Makes `leavers` leave at once, keeps them running for `linger` (a runtime's leave
/// timeout), then stops them; returns the virtual time until every stayer saw every
/// leaver as Left (`None` if that did not happen within `limit`).
fn leave_at_once(
    sim: &mut Simulation,
    stayers: &[MemberId],
    leavers: &[MemberId],
    linger: Duration,
    limit: Duration,
) -> Option<Duration> {
    for &l in leavers {
        sim.leave(l);
    }
    let start = sim.now();
    sim.run_for(linger);
    for &l in leavers {
        sim.crash(l);
    }
    sim.run_until_true(Duration::from_millis(10), limit, |s| {
        not_left(s, stayers, leavers) == 0
    })
    .map(|_| Duration::from_nanos(sim.now() - start))
}

#[test]
fn hundred_members_leaving_at_once_under_loss_are_all_seen_left_by_every_stayer() {
    let (mut sim, ids) = cluster(120, 1);
    // A lost direct datagram is made up for by gossip between the stayers.
    sim.set_network(Network::lan().with_loss(0.05));
    let (stayers, leavers) = ids.split_at(20);
    let took = leave_at_once(
        &mut sim,
        stayers,
        leavers,
        Duration::from_millis(500),
        Duration::from_millis(1500),
    );
    assert!(
        took.is_some(),
        "{} (stayer, leaver) pairs not Left 2 s after the leaves",
        not_left(&sim, stayers, leavers)
    );
}

#[test]
fn leaves_reach_a_lone_observer_while_as_many_members_crash() {
    // The loopback scenario: half the cluster leaves, the other half crashes at
    // the same moment, one observer stays. The leavers still hold the crashed members as
    // alive, so gossip relayed between leavers mostly goes to the crashed ones.
    let (mut sim, ids) = cluster(151, 5);
    let observer = &ids[..1];
    let (leavers, crashed): (Vec<MemberId>, Vec<MemberId>) =
        ids[1..].iter().partition(|id| id.0 % 2 == 0);
    for &c in &crashed {
        sim.crash(c);
    }
    let took = leave_at_once(
        &mut sim,
        observer,
        &leavers,
        Duration::from_millis(500),
        Duration::from_millis(1500),
    );
    assert!(
        took.is_some(),
        "{} of {} leavers not Left at the observer 2 s after the leaves",
        not_left(&sim, observer, &leavers),
        leavers.len()
    );
}
