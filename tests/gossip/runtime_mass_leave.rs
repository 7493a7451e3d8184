//! Many members leaving at once on loopback: every member that stays sees every leaver
//! as `Left`. A leave is the only way to `Left` (failure detection gives `Failed`), so a
//! lost leave shows however long the test waits.

use crate::common;

use std::net::SocketAddr;
use std::time::Duration;

use futures::StreamExt;
use palisade::gossip::proto::{Config, MemberState};
use palisade::gossip::runtime::{Membership, MembershipConfig};
use tokio::time::Instant;

/// The leave timeout of every member (the scenario).
const LEAVE_TIMEOUT: Duration = Duration::from_millis(500);

async fn start(name: String, seeds: &[SocketAddr]) -> Membership {
    Membership::start(
        MembershipConfig::new(name, "127.0.0.1:0".parse().unwrap())
            .protocol(Config::local())
            .leave_timeout(LEAVE_TIMEOUT)
            // Joins are not under test: a loaded machine may need more rounds.
            .join_attempts(20)
            .seeds(seeds.iter().copied()),
    )
    .await
    .unwrap()
}

/// Starts `names` through the first one, then has each fetch the seed's full state once
/// more, so every view is complete without waiting for gossip; asserts it is. Starts
/// `parallel` members at a time.
async fn cluster(names: Vec<String>, parallel: usize) -> Vec<Membership> {
    let mut names = names.into_iter();
    let first = start(names.next().unwrap(), &[]).await;
    let seed = [first.gossip_addr()];
    let rest: Vec<Membership> = futures::stream::iter(names)
        .map(|n| start(n, &seed))
        .buffered(parallel)
        .collect()
        .await;
    let mut all = vec![first];
    all.extend(rest);
    futures::stream::iter(&all[1..])
        .for_each_concurrent(parallel, |m| async move {
            m.join(&seed).await.unwrap();
        })
        .await;
    let n = all.len();
    let formed = common::eventually(Duration::from_secs(60), || {
        all.iter().all(|m| m.live_members() == n - 1)
    })
    .await;
    assert!(formed, "the cluster of {n} formed");
    all
}

/// How many (stayer, leaver) pairs are not `Left` yet.
fn not_left(stayers: &[Membership], leavers: &[String]) -> usize {
    stayers
        .iter()
        .map(|s| {
            leavers
                .iter()
                .filter(|n| common::state_of(s, n) != Some(MemberState::Left))
                .count()
        })
        .sum()
}

/// Makes every leaver leave at once (`shutdown`: leave, then stop); returns the names,
/// the instant the leaves began, and the tasks that end when each leaver stopped.
fn leave_at_once(
    leavers: Vec<Membership>,
) -> (Vec<String>, Instant, Vec<tokio::task::JoinHandle<()>>) {
    let names = leavers
        .iter()
        .map(|m| m.local().name().to_owned())
        .collect();
    let began = Instant::now();
    let stopping = leavers
        .into_iter()
        .map(|m| tokio::spawn(async move { m.shutdown().await.unwrap() }))
        .collect();
    (names, began, stopping)
}

/// Waits for every leaver to have stopped: each `shutdown` returns within its leave
/// timeout plus scheduling; the cap only bounds a hang.
async fn all_stopped(stopping: Vec<tokio::task::JoinHandle<()>>) {
    let all = futures::future::join_all(stopping);
    for stopped in tokio::time::timeout(Duration::from_secs(60), all)
        .await
        .expect("every leaver stopped")
    {
        stopped.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_members_leaving_at_once_are_seen_left_by_every_stayer_within_2s_of_stopping() {
    let names = (0..10)
        .map(|i| format!("stay-{i:02}"))
        .chain((0..100).map(|i| format!("leave-{i:03}")))
        .collect();
    let mut all = cluster(names, 8).await;
    let leavers = all.split_off(10);
    let stayers = all;
    let (names, began, stopping) = leave_at_once(leavers);
    // The bound runs from the moment every leaver is gone, so that how long a loaded
    // machine takes to run 100 leaves (each up to its leave timeout) is not counted.
    all_stopped(stopping).await;
    let stopped = began.elapsed();
    let all_left =
        common::eventually(Duration::from_secs(2), || not_left(&stayers, &names) == 0).await;
    eprintln!(
        "leavers all stopped after {stopped:?}; every stayer saw all 100 leave: {all_left}, \
         {:?} after the leaves began",
        began.elapsed()
    );
    assert!(
        all_left,
        "{} (stayer, leaver) pairs not Left 2 s after the leavers stopped",
        not_left(&stayers, &names)
    );
}

/// The scenario, at full size (300 members and their sockets in one process, so
/// ignored: `cargo test --test gossip -- --ignored runtime_mass_leave::`). Half the members
/// leave, the other half are killed at the same moment, one observer stays. The killed
/// ones stay live at the observer until its suspicion timeout (that is failure detection
/// at work); every one that left must be `Left`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn half_of_300_members_leaving_while_half_are_killed_are_seen_left_by_an_observer() {
    let names = std::iter::once("observer".to_owned())
        .chain((0..300).map(|i| format!("m{i:03}")))
        .collect();
    let mut all = cluster(names, 1).await;
    let members = all.split_off(1);
    let observer = all;
    let mut leavers = Vec::new();
    let mut killed = Vec::new();
    for (i, m) in members.into_iter().enumerate() {
        if i % 2 == 0 {
            leavers.push(m);
        } else {
            killed.push(m);
        }
    }
    for m in &killed {
        m.kill();
    }
    let (names, began, stopping) = leave_at_once(leavers);
    all_stopped(stopping).await;
    let stopped = began.elapsed();
    let all_left =
        common::eventually(Duration::from_secs(2), || not_left(&observer, &names) == 0).await;
    eprintln!(
        "leavers all stopped after {stopped:?}; the observer saw all 150 leave: {all_left}, \
         {:?} after the leaves began; live there: {}",
        began.elapsed(),
        observer[0].live_members()
    );
    assert!(
        all_left,
        "{} of 150 leavers not Left at the observer 2 s after they stopped",
        not_left(&observer, &names)
    );
}
