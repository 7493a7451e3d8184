//! Whole-cluster behaviour on the simulator: seeded, virtual time, a few seconds each in
//! debug builds.
#![cfg(feature = "sim")]

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use palisade::gossip::sim::{fake_addr, MemberId, Network, Simulation};
use palisade::gossip::{Config, Event, Identity, Keyring, MemberState};

type Log = Rc<RefCell<Vec<(u64, MemberId, Event)>>>;

fn cluster(n: usize, cfg: &Config, net: Network, seed: u64) -> (Simulation, Vec<MemberId>, Log) {
    let mut sim = Simulation::new(seed, net);
    let ids = sim.add_members(n, cfg).unwrap();
    let log: Log = Rc::default();
    let l = log.clone();
    sim.set_observer(move |t, id, e| l.borrow_mut().push((t, id, e.clone())));
    for &id in &ids[1..] {
        sim.join(id, &[ids[0]]);
    }
    let done = sim.run_until_true(Duration::from_millis(100), Duration::from_secs(60), |s| {
        converged(s, &ids)
    });
    assert!(done.is_some(), "the cluster formed");
    log.borrow_mut().clear();
    (sim, ids, log)
}

fn converged(sim: &Simulation, ids: &[MemberId]) -> bool {
    ids.iter().all(|&i| {
        sim.swim(i)
            .is_some_and(|s| s.live_members() == ids.len() - 1)
    })
}

fn lan(seed: u64) -> Config {
    Config {
        seed: Some(seed),
        ..Config::lan()
    }
}

fn state_of(sim: &Simulation, viewer: MemberId, name: &str) -> Option<MemberState> {
    sim.swim(viewer)?.member(name).map(|m| m.state())
}

fn count(log: &Log, f: impl Fn(&Event) -> bool) -> usize {
    log.borrow().iter().filter(|(_, _, e)| f(e)).count()
}

#[test]
fn crashed_member_is_declared_dead_by_every_member_within_the_configured_bound() {
    let n = 16;
    let cfg = lan(1);
    let (mut sim, ids, log) = cluster(n, &cfg, Network::lan(), 11);
    let victim = ids[7];
    let name = sim.name(victim).to_owned();
    let crashed_at = sim.now();
    sim.crash(victim);
    // The bound the configuration implies: the victim is probed by someone within two
    // protocol periods; its suspicion lasts at most suspicion_max_timeout_mult times
    // the minimal timeout; the death then spreads in a few gossip intervals.
    let bound = cfg.probe_interval * 2
        + cfg.suspicion_min_timeout(n) * cfg.suspicion_max_timeout_mult
        + Duration::from_secs(2);
    sim.run_for(bound);
    for &id in ids.iter().filter(|&&i| i != victim) {
        assert_eq!(state_of(&sim, id, &name), Some(MemberState::Dead), "{id:?}");
    }
    let log = log.borrow();
    let failed: Vec<u64> = log
        .iter()
        .filter(|(_, _, e)| matches!(e, Event::Failed(m) if m.name() == name))
        .map(|(t, _, _)| t - crashed_at)
        .collect();
    assert_eq!(
        failed.len(),
        n - 1,
        "every other member reports Failed once"
    );
    assert!(failed.iter().all(|&t| t <= bound.as_nanos() as u64));
    assert!(
        log.iter().all(|(_, _, e)| e.member().name() == name),
        "nobody else was affected"
    );
}

#[test]
fn no_healthy_member_is_declared_dead_at_ten_percent_loss() {
    let (mut sim, _ids, log) = cluster(24, &lan(2), Network::lan(), 12);
    sim.set_network(Network::lan().with_loss(0.10));
    sim.run_for(Duration::from_secs(180));
    assert_eq!(count(&log, |e| matches!(e, Event::Failed(_))), 0);
    assert!(sim.stats().lost > 0, "the network did lose packets");
}

#[test]
fn crash_in_128_members_is_seen_by_all_within_8_seconds_at_one_percent_loss() {
    let n = 128;
    let (mut sim, ids, log) = cluster(n, &lan(3), Network::lan(), 13);
    sim.set_network(Network::lan().with_loss(0.01));
    sim.run_for(Duration::from_secs(5));
    for (k, &victim) in [ids[17], ids[90]].iter().enumerate() {
        log.borrow_mut().clear();
        let name = sim.name(victim).to_owned();
        sim.crash(victim);
        // Issue 4's target for the LAN preset: every other live member reports the
        // crash within 8 s.
        sim.run_for(Duration::from_secs(8));
        let failed = count(&log, |e| matches!(e, Event::Failed(m) if m.name() == name));
        assert_eq!(failed, n - 1 - k, "every live member saw crash {k} in 8 s");
        assert_eq!(
            count(&log, |e| matches!(e, Event::Failed(m) if m.name() != name)),
            0,
            "no one else was declared failed"
        );
        sim.run_for(Duration::from_secs(10));
    }
}

#[test]
fn members_probing_a_crashed_member_get_their_nacks_and_stay_healthy() {
    let (mut sim, ids, _log) = cluster(6, &lan(4), Network::lan(), 14);
    let victim = ids[2];
    let name = sim.name(victim).to_owned();
    sim.crash(victim);
    // Every failed probe of the victim asks three others, who answer with nacks within
    // the period: the prober learns that the problem is not its own, and Lifeguard
    // leaves its probe interval alone.
    let mut worst = 0;
    for _ in 0..200 {
        sim.run_for(Duration::from_millis(50));
        for &id in ids.iter().filter(|&&i| i != victim) {
            worst = worst.max(sim.swim(id).unwrap().health_score());
        }
    }
    assert_eq!(worst, 0, "no member blamed itself for the crash");
    for &id in ids.iter().filter(|&&i| i != victim) {
        assert_eq!(state_of(&sim, id, &name), Some(MemberState::Dead), "{id:?}");
    }
}

/// Issue 4's false-positive scenario, scaled down to run in debug builds: 10% loss and
/// slow members that handle each packet 0 to 2 s late (a fresh delay per packet).
fn failures_with_random_slow_members(
    n: usize,
    lifeguard: bool,
    tcp_fallback_ping: bool,
    secs: u64,
    seed: u64,
) -> (usize, usize) {
    let cfg = Config {
        lifeguard,
        tcp_fallback_ping,
        ..lan(seed)
    };
    let (mut sim, ids, log) = cluster(n, &cfg, Network::lan(), seed);
    let slow: Vec<MemberId> = ids.iter().copied().step_by(20).collect();
    for &id in &slow {
        sim.set_slow_between(id, Duration::ZERO, Duration::from_secs(2));
    }
    sim.set_network(Network::lan().with_loss(0.10));
    sim.run_for(Duration::from_secs(secs));
    let slow_names: Vec<String> = slow.iter().map(|&i| sim.name(i).to_owned()).collect();
    let on_slow = count(
        &log,
        |e| matches!(e, Event::Failed(m) if slow_names.iter().any(|s| s == m.name())),
    );
    (
        count(&log, |e| matches!(e, Event::Failed(_))) - on_slow,
        on_slow,
    )
}

#[test]
fn lifeguard_declares_no_timely_member_failed_among_randomly_slow_members() {
    let (on_timely, _on_slow) = failures_with_random_slow_members(40, true, true, 120, 5);
    assert_eq!(on_timely, 0);
}

/// The full scenario of issue 4 (128 members, 10 minutes, 5% slow members), Lifeguard on
/// and off over the same seeds; the example `gossip_sim -- fp` prints the table.
/// `cargo test --release --test gossip -- --ignored sim::`
#[test]
#[ignore = "128 members x 10 minutes, twice per seed: run in release mode"]
fn lifeguard_keeps_timely_members_alive_at_ten_percent_loss_with_slow_members() {
    // Lifeguard alone is compared with the TCP fallback ping off (the fallback saves most
    // rounds a slow member misses too, so with it on Lifeguard's own effect hides):
    // seeds 1 to 8 (release build), with Lifeguard no failure at all; without it, four of
    // the eight runs declared a timely member failed (three of them cluster-wide). The
    // default configuration (both on) declares nobody failed either.
    let mut off_total = 0;
    for seed in 1..=4 {
        let on = failures_with_random_slow_members(128, true, false, 600, seed);
        assert_eq!(on, (0, 0), "seed {seed}, Lifeguard on, fallback off");
        let (t, s) = failures_with_random_slow_members(128, false, false, 600, seed);
        off_total += t + s;
        let default = failures_with_random_slow_members(128, true, true, 600, seed);
        assert_eq!(default, (0, 0), "seed {seed}, Lifeguard and fallback on");
    }
    assert!(
        off_total >= 10,
        "without Lifeguard the same runs declare healthy members failed: {off_total}"
    );
}

#[test]
fn partition_heals_and_every_view_converges() {
    let cfg = Config {
        reconnect_interval: Duration::from_secs(5),
        ..lan(3)
    };
    let (mut sim, ids, _log) = cluster(12, &cfg, Network::lan(), 13);
    let (a, b) = ids.split_at(6);
    sim.partition(a, b);
    sim.run_for(Duration::from_secs(60));
    // Each side has declared the other side failed.
    for &x in a {
        for &y in b {
            assert_eq!(state_of(&sim, x, sim.name(y)), Some(MemberState::Dead));
        }
    }
    sim.heal();
    let healed = sim.run_until_true(Duration::from_millis(500), Duration::from_secs(120), |s| {
        converged(s, &ids)
    });
    assert!(
        healed.is_some(),
        "views converged after the partition healed"
    );
}

#[test]
fn one_way_partition_is_routed_around_by_indirect_probes() {
    let (mut sim, ids, log) = cluster(8, &lan(4), Network::lan(), 14);
    // m1 can no longer hear m2 (m2 still hears m1): their direct probes of each other
    // fail, the indirect ones through the other members succeed.
    sim.block(ids[2], ids[1]);
    sim.run_for(Duration::from_secs(120));
    assert!(converged(&sim, &ids));
    assert_eq!(count(&log, |e| matches!(e, Event::Failed(_))), 0);
    assert!(sim.stats().blocked > 0, "the partition did block packets");
}

#[test]
fn graceful_leave_is_seen_as_left_not_failed() {
    let (mut sim, ids, log) = cluster(10, &lan(5), Network::lan(), 15);
    let leaver = ids[4];
    let name = sim.name(leaver).to_owned();
    sim.leave(leaver);
    sim.run_for(Duration::from_secs(3));
    sim.crash(leaver);
    sim.run_for(Duration::from_secs(60));
    for &id in ids.iter().filter(|&&i| i != leaver) {
        assert_eq!(state_of(&sim, id, &name), Some(MemberState::Left));
    }
    assert_eq!(
        count(&log, |e| matches!(e, Event::Leave(m) if m.name() == name)),
        9
    );
    assert_eq!(count(&log, |e| matches!(e, Event::Failed(_))), 0);
}

#[test]
fn restarted_member_rejoins_with_a_newer_incarnation() {
    let cfg = lan(6);
    let (mut sim, ids, log) = cluster(10, &cfg, Network::lan(), 16);
    let m = ids[3];
    let name = sim.name(m).to_owned();
    sim.crash(m);
    sim.run_for(Duration::from_secs(60));
    let dead_inc = sim
        .swim(ids[0])
        .unwrap()
        .member(&name)
        .unwrap()
        .incarnation();
    assert_eq!(state_of(&sim, ids[0], &name), Some(MemberState::Dead));
    sim.restart(m, cfg.clone()).unwrap();
    sim.join(m, &[ids[0]]);
    let back = sim.run_until_true(Duration::from_millis(100), Duration::from_secs(30), |s| {
        converged(s, &ids)
    });
    assert!(
        back.is_some(),
        "the restarted member is alive in every view"
    );
    for &id in ids.iter().filter(|&&i| i != m) {
        let seen = sim.swim(id).unwrap().member(&name).unwrap();
        assert!(seen.incarnation() > dead_inc);
    }
    assert!(
        count(&log, |e| matches!(e, Event::Join(x) if x.name() == name)) >= 9,
        "every member saw it join again"
    );
}

#[test]
fn metadata_update_reaches_every_member() {
    let (mut sim, ids, log) = cluster(20, &lan(7), Network::lan().with_loss(0.05), 17);
    let name = sim.name(ids[9]).to_owned();
    let tags = BTreeMap::from([("weight".to_owned(), "7".to_owned())]);
    sim.with_swim(ids[9], |s, now| s.set_tags(tags, now))
        .unwrap()
        .unwrap();
    sim.run_for(Duration::from_secs(5));
    for &id in ids.iter().filter(|&&i| i != ids[9]) {
        let m = sim.swim(id).unwrap().member(&name).unwrap();
        assert_eq!(m.identity().tag("weight"), Some("7"), "{id:?}");
    }
    assert_eq!(
        count(&log, |e| matches!(e, Event::Update(m) if m.name() == name)),
        19
    );
}

#[test]
fn oversized_tags_are_rejected_and_nothing_changes() {
    let (mut sim, ids, _log) = cluster(3, &lan(8), Network::lan(), 18);
    let before = sim.swim(ids[0]).unwrap().local().clone();
    let tags = BTreeMap::from([("blob".to_owned(), "x".repeat(600))]);
    let err = sim
        .with_swim(ids[0], |s, now| s.set_tags(tags, now))
        .unwrap()
        .unwrap_err();
    assert_eq!(err.field(), "tags");
    assert_eq!(sim.swim(ids[0]).unwrap().local(), &before);
}

#[test]
fn member_with_the_wrong_key_never_gets_in() {
    let good = Config {
        keyring: Some(Keyring::new([1; 32])),
        ..lan(9)
    };
    let (mut sim, ids, _log) = cluster(6, &good, Network::lan(), 19);
    let bad_cfg = Config {
        keyring: Some(Keyring::new([2; 32])),
        ..lan(99)
    };
    let intruder = sim
        .add_member(Identity::new("intruder", fake_addr(100)), bad_cfg)
        .unwrap();
    sim.join(intruder, &[ids[0], ids[1]]);
    sim.run_for(Duration::from_secs(30));
    for &id in &ids {
        let s = sim.swim(id).unwrap();
        assert!(s.member("intruder").is_none());
        assert_eq!(s.live_members(), 5);
    }
    let dropped: u64 = ids
        .iter()
        .map(|&id| sim.swim(id).unwrap().stats().drops.unauthenticated)
        .sum();
    assert!(
        dropped >= 2,
        "the intruder's packets were dropped and counted"
    );
    assert_eq!(sim.swim(intruder).unwrap().live_members(), 0);
}

#[test]
fn keys_rotate_without_downtime() {
    let cfg = Config {
        keyring: Some(Keyring::new([1; 32])),
        ..lan(10)
    };
    let (mut sim, ids, log) = cluster(6, &cfg, Network::lan(), 20);
    for step in 0..3 {
        for &id in &ids {
            sim.with_swim(id, |s, _| {
                let ring = s.keyring_mut().unwrap();
                match step {
                    0 => ring.install([2; 32]),
                    1 => ring.use_key(&[2; 32]).unwrap(),
                    _ => ring.remove(&[1; 32]).unwrap(),
                }
            });
            sim.run_for(Duration::from_millis(300));
        }
        sim.run_for(Duration::from_secs(5));
    }
    sim.run_for(Duration::from_secs(30));
    assert!(converged(&sim, &ids));
    assert_eq!(count(&log, |e| matches!(e, Event::Failed(_))), 0);
}

#[test]
fn different_cluster_labels_keep_clusters_apart() {
    let mut sim = Simulation::new(21, Network::lan());
    let blue = Config {
        cluster_label: "blue".into(),
        ..lan(11)
    };
    let green = Config {
        cluster_label: "green".into(),
        ..lan(12)
    };
    let a = sim.add_members(3, &blue).unwrap();
    let b = sim.add_members(3, &green).unwrap();
    sim.join(a[1], &[a[0]]);
    sim.join(a[2], &[a[0]]);
    sim.join(b[0], &[a[0]]);
    sim.join(b[1], &[b[0]]);
    sim.join(b[2], &[b[0]]);
    sim.run_for(Duration::from_secs(20));
    for &id in a.iter().chain(&b) {
        assert_eq!(sim.swim(id).unwrap().live_members(), 2, "{id:?}");
    }
    assert!(sim.swim(a[0]).unwrap().stats().drops.wrong_label > 0);
}

#[test]
fn slow_member_that_is_suspected_refutes_and_stays_alive() {
    let (mut sim, ids, log) = cluster(12, &lan(13), Network::lan(), 22);
    // Slower than a protocol period: probes of it fail, and its own probes fail too
    // until Lifeguard stretches its timeouts.
    sim.set_slow(ids[5], Duration::from_millis(1500));
    sim.run_for(Duration::from_secs(30));
    sim.set_slow(ids[5], Duration::ZERO);
    sim.run_for(Duration::from_secs(20));
    let s = sim.swim(ids[5]).unwrap();
    assert!(s.stats().refutations > 0, "it was suspected and refuted");
    assert!(s.local().incarnation() > 0);
    assert!(converged(&sim, &ids));
    assert_eq!(count(&log, |e| matches!(e, Event::Failed(_))), 0);
}

#[test]
fn dead_members_are_reaped_after_the_reap_timeout() {
    let cfg = Config {
        reap_timeout: Duration::from_secs(30),
        ..lan(14)
    };
    let (mut sim, ids, log) = cluster(6, &cfg, Network::lan(), 23);
    let name = sim.name(ids[2]).to_owned();
    sim.crash(ids[2]);
    sim.run_for(Duration::from_secs(90));
    for &id in ids.iter().filter(|&&i| i != ids[2]) {
        assert!(sim.swim(id).unwrap().member(&name).is_none(), "{id:?}");
    }
    let reaped = count(
        &log,
        |e| matches!(e, Event::Reap(m) if m.name() == name && m.state() == MemberState::Dead),
    );
    assert_eq!(reaped, 5);
}

#[test]
fn simulation_is_reproducible_from_its_seed() {
    let run = || {
        let (mut sim, ids, _log) = cluster(8, &lan(15), Network::lan().with_loss(0.05), 24);
        sim.crash(ids[1]);
        sim.run_for(Duration::from_secs(20));
        (sim.stats().delivered, sim.stats().lost, sim.now())
    };
    assert_eq!(run(), run());
}

/// The big run, in release mode only:
/// `cargo test --release --test gossip -- --ignored sim::`
#[test]
#[ignore = "1,024 members: run in release mode"]
fn thousand_members_form_a_cluster_spread_updates_and_detect_a_crash() {
    let n = 1024;
    let mut sim = Simulation::new(31, Network::lan());
    let ids = sim.add_members(n, &lan(31)).unwrap();
    for &id in &ids[1..] {
        sim.run_for(Duration::from_micros(900));
        sim.join(id, &[ids[0]]);
    }
    let formed = sim.run_until_true(Duration::from_millis(200), Duration::from_secs(30), |s| {
        converged(s, &ids)
    });
    assert!(
        formed.is_some(),
        "every view complete within 30 s of a cold start"
    );
    sim.run_for(Duration::from_secs(60));

    let log: Log = Rc::default();
    let l = log.clone();
    sim.set_observer(move |t, id, e| l.borrow_mut().push((t, id, e.clone())));
    let who = ids[500];
    let name = sim.name(who).to_owned();
    let tags = BTreeMap::from([("zone".to_owned(), "b".to_owned())]);
    sim.with_swim(who, |s, now| s.set_tags(tags, now))
        .unwrap()
        .unwrap();
    sim.run_for(Duration::from_secs(1));
    let updated = count(&log, |e| matches!(e, Event::Update(m) if m.name() == name));
    assert!(
        updated >= 1022,
        "99.9% saw the update within 1 s: {updated}"
    );

    let victim = ids[700];
    let vname = sim.name(victim).to_owned();
    sim.crash(victim);
    let cfg = lan(0);
    let bound = cfg.probe_interval * 2
        + cfg.suspicion_min_timeout(n) * cfg.suspicion_max_timeout_mult
        + Duration::from_secs(2);
    sim.run_for(bound);
    let failed = count(&log, |e| matches!(e, Event::Failed(m) if m.name() == vname));
    assert_eq!(failed, n - 1);
    assert_eq!(
        count(&log, |e| matches!(e, Event::Failed(m) if m.name() != vname)),
        0
    );
}

/// `cargo test --release --test gossip -- --ignored sim::`
#[test]
#[ignore = "128 members, minutes of virtual time: run in release mode"]
fn even_split_of_128_members_heals_with_default_reconnection() {
    let n = 128;
    let (mut sim, ids, _log) = cluster(n, &lan(41), Network::lan().with_loss(0.01), 41);
    let (a, b) = ids.split_at(n / 2);
    sim.partition(a, b);
    sim.run_for(Duration::from_secs(120));
    for &id in &ids {
        assert_eq!(sim.swim(id).unwrap().live_members(), n / 2 - 1);
    }
    sim.heal();
    let healed = sim.run_until_true(Duration::from_secs(1), Duration::from_secs(300), |s| {
        converged(s, &ids)
    });
    assert!(
        healed.is_some(),
        "every view complete again after the split healed"
    );
}
