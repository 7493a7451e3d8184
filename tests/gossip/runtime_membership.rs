//! The tokio runtime over real loopback sockets: joining, leaving, crashing, metadata,
//! errors. Every wait is bounded; assertions are on conditions reached within bounds.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use futures::StreamExt;
use palisade::gossip::proto::{Config, MemberState};
use palisade::gossip::runtime::{Membership, MembershipConfig, StartError};
use palisade::gossip::Event;

use crate::common;
use common::{eventually, state_of, ReservedAddr, PATIENCE};

fn config(name: &str) -> MembershipConfig {
    MembershipConfig::new(name, "127.0.0.1:0".parse().unwrap())
        .protocol(common::fast_gossip())
        .join_backoff(Duration::from_millis(50), Duration::from_millis(200))
        .stream_timeout(Duration::from_secs(1))
        .leave_timeout(Duration::from_secs(2))
}

async fn cluster(n: usize) -> Vec<Membership> {
    let seed = Membership::start(config("m0")).await.unwrap();
    let addr = seed.gossip_addr();
    let mut all = vec![seed];
    for i in 1..n {
        all.push(
            Membership::start(config(&format!("m{i}")).seeds([addr]))
                .await
                .unwrap(),
        );
    }
    let all2 = all.clone();
    assert!(
        eventually(PATIENCE, || all2.iter().all(|m| m.live_members() == n - 1)).await,
        "cluster of {n} did not converge"
    );
    all
}

#[tokio::test]
async fn members_joining_through_one_seed_converge_to_the_full_view() {
    let all = cluster(4).await;
    for m in &all {
        assert_eq!(m.members().len(), 3);
        assert!(m.members().iter().all(|o| o.state() == MemberState::Alive));
    }
    for m in &all {
        m.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn start_waits_for_the_seed_answer_so_the_view_is_complete_on_return() {
    let a = Membership::start(config("a")).await.unwrap();
    let b = Membership::start(config("b").seeds([a.gossip_addr()]))
        .await
        .unwrap();
    // No waiting: the join exchange already merged a's state.
    assert_eq!(state_of(&b, "a"), Some(MemberState::Alive));
    b.kill();
    a.kill();
}

#[tokio::test]
async fn graceful_shutdown_is_seen_as_leave_and_acknowledged() {
    let all = cluster(3).await;
    let mut events = all[0].subscribe();
    assert!(all[2].leave().await, "leave was not acknowledged");
    all[2].shutdown().await.unwrap();
    assert!(all[2].is_stopped());
    let got = tokio::time::timeout(PATIENCE, async {
        loop {
            match events.next().await {
                Some(Event::Leave(m)) if m.name() == "m2" => return true,
                Some(Event::Failed(m)) if m.name() == "m2" => return false,
                Some(_) => continue,
                None => return false,
            }
        }
    })
    .await;
    assert_eq!(got, Ok(true));
    let m1 = all[1].clone();
    assert!(eventually(PATIENCE, || state_of(&m1, "m2") == Some(MemberState::Left)).await);
    all[0].shutdown().await.unwrap();
    all[1].shutdown().await.unwrap();
}

#[tokio::test]
async fn killed_member_is_reported_failed_by_the_others() {
    let all = cluster(3).await;
    all[1].kill();
    let (a, c) = (all[0].clone(), all[2].clone());
    // Within probe interval x 3 + 6 x 3 x 200 ms of suspicion on an idle machine; the
    // cap is PATIENCE, as that bound is pinned on virtual time by the simulator
    // (gossip_sim.rs: crashed_member_is_declared_dead_by_every_member_within_the_configured_bound).
    assert!(
        eventually(PATIENCE, || state_of(&a, "m1") == Some(MemberState::Dead)
            && state_of(&c, "m1") == Some(MemberState::Dead))
        .await,
        "m1 not failed: {:?} {:?}",
        state_of(&a, "m1"),
        state_of(&c, "m1")
    );
    a.kill();
    c.kill();
}

#[tokio::test]
async fn dropping_every_handle_stops_the_member_like_a_crash() {
    let all = cluster(2).await;
    let a = all[0].clone();
    let mut all = all;
    drop(all.pop()); // the only handle of m1
    assert!(eventually(PATIENCE, || state_of(&a, "m1") == Some(MemberState::Dead)).await);
    a.kill();
}

#[tokio::test]
async fn tags_and_service_address_changes_reach_the_others_as_updates() {
    let all = cluster(2).await;
    let mut events = all[0].events();
    let mut tags = BTreeMap::new();
    tags.insert("weight".to_owned(), "5".to_owned());
    all[1].set_tags(tags).unwrap();
    let svc: SocketAddr = "127.0.0.1:9999".parse().unwrap();
    all[1].set_service_addr(Some(svc)).unwrap();
    let a = all[0].clone();
    assert!(
        eventually(PATIENCE, || a.member("m1").is_some_and(|m| m
            .tags()
            .get("weight")
            .map(String::as_str)
            == Some("5")
            && m.service_addr() == Some(svc)))
        .await
    );
    let first = tokio::time::timeout(PATIENCE, events.next()).await.unwrap();
    assert!(matches!(first, Some(Event::Update(m)) if m.name() == "m1"));
    for m in &all {
        m.kill();
    }
}

#[tokio::test]
async fn oversized_tags_are_rejected_and_nothing_changes() {
    let a = Membership::start(config("a")).await.unwrap();
    let mut tags = BTreeMap::new();
    tags.insert("big".to_owned(), "x".repeat(4096));
    assert!(a.set_tags(tags).is_err());
    assert!(a.local().tags().is_empty());
    a.kill();
}

#[tokio::test]
async fn a_taken_address_is_a_bind_error() {
    let a = Membership::start(config("a")).await.unwrap();
    let taken = a.gossip_addr();
    let err = Membership::start(MembershipConfig::new("b", taken).protocol(common::fast_gossip()))
        .await
        .unwrap_err();
    match err {
        StartError::Bind { addr, source } => {
            assert_eq!(addr, taken);
            assert_eq!(source.kind(), std::io::ErrorKind::AddrInUse);
        }
        other => panic!("expected a bind error, got {other}"),
    }
    a.kill();
}

#[tokio::test]
async fn a_non_local_address_is_a_bind_error() {
    // TEST-NET-1 (RFC 5737) is never assigned to this host.
    let err = Membership::start(
        MembershipConfig::new("a", "192.0.2.1:0".parse().unwrap()).protocol(common::fast_gossip()),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, StartError::Bind { .. }), "{err}");
}

#[tokio::test]
async fn invalid_configuration_names_the_setter() {
    let err = Membership::start(config("a").join_attempts(0))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StartError::Config(e) if e.field() == "join_attempts"),
        "{err}"
    );
    let err = Membership::start(MembershipConfig::new("a", "0.0.0.0:0".parse().unwrap()))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StartError::Config(e) if e.field() == "advertise_addr"),
        "{err}"
    );
}

// On the paused clock: no seed ever answers, so every round ends by a failure whatever
// the machine's load (refused, or the stream timeout), and the time the rounds take is
// the configuration's, exactly.
#[tokio::test(start_paused = true)]
async fn join_gives_up_after_the_configured_attempts_when_no_seed_answers() {
    // A bound but silent TCP port: connections are accepted by the kernel backlog but
    // never answered, and a closed port refuses at once; try both.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = ReservedAddr::new();
    let stream_timeout = Duration::from_millis(200);
    let started = tokio::time::Instant::now();
    let err = Membership::start(
        config("a")
            .stream_timeout(stream_timeout)
            .join_attempts(3)
            .seeds([silent.local_addr().unwrap(), closed.addr()]),
    )
    .await
    .unwrap_err();
    match err {
        StartError::Join(e) => {
            assert_eq!(e.attempts, 3);
            assert_eq!(e.seeds.len(), 2);
        }
        other => panic!("expected a join error, got {other}"),
    }
    // Each round waits out the silent seed's stream timeout; between them, the backoffs
    // of attempts 0 and 1 (`config`'s join_backoff from 50 ms: at most 50 and 100 ms).
    let took = started.elapsed();
    assert!(
        took >= stream_timeout * 3 && took <= stream_timeout * 3 + Duration::from_millis(150),
        "{took:?}"
    );
}

#[tokio::test]
async fn join_retries_until_a_late_seed_appears() {
    // Reserve a port, and start the seed there after a delay.
    let reserved = ReservedAddr::new();
    let addr = reserved.addr();
    let late = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let addr = reserved.release();
        Membership::start(MembershipConfig::new("seed", addr).protocol(common::fast_gossip())).await
    });
    let b = Membership::start(
        config("b")
            .join_attempts(10)
            .join_backoff(Duration::from_millis(100), Duration::from_millis(200))
            .seeds([addr]),
    )
    .await
    .expect("joined once the seed came up");
    let seed = late.await.unwrap().expect("seed port still free");
    assert_eq!(state_of(&b, "seed"), Some(MemberState::Alive));
    b.kill();
    seed.kill();
}

#[tokio::test]
async fn counters_show_traffic_both_ways() {
    let all = cluster(2).await;
    let a = all[0].clone();
    assert!(
        eventually(PATIENCE, || {
            let s = a.stats();
            s.protocol.packets_sent > 3 && s.protocol.packets_received > 3
        })
        .await
    );
    let s = a.stats();
    assert_eq!(s.dropped(), 0);
    assert!(s.streams_accepted >= 1, "{s:?}");
    for m in &all {
        m.kill();
    }
}

#[tokio::test]
async fn hostile_datagrams_and_streams_are_counted_and_change_nothing() {
    let a = Membership::start(config("a").max_inbound_streams(1))
        .await
        .unwrap();
    let addr = a.gossip_addr();
    let raw = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    // Oversized (over max_packet_size), and garbage.
    raw.send_to(&vec![0u8; 4000], addr).await.unwrap();
    raw.send_to(b"\xffgarbage", addr).await.unwrap();
    raw.send_to(b"", addr).await.unwrap();
    // A stream announcing more than max_stream_size: refused before reading it.
    use tokio::io::AsyncWriteExt;
    let mut big = tokio::net::TcpStream::connect(addr).await.unwrap();
    big.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    let a2 = a.clone();
    assert!(
        eventually(PATIENCE, || {
            let s = a2.stats();
            s.protocol.drops.oversized >= 1 && s.dropped() >= 4 && s.streams_oversized == 1
        })
        .await,
        "{:?}",
        a.stats()
    );
    // One idle connection holds the only inbound slot: the next one is refused.
    let _idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _second = tokio::net::TcpStream::connect(addr).await.unwrap();
    assert!(eventually(PATIENCE, || a2.stats().streams_refused >= 1).await);
    assert!(a.members().is_empty());
    // Still healthy: a real member joins (the idle connection times out first).
    let b = Membership::start(config("b").join_attempts(10).seeds([addr]))
        .await
        .unwrap();
    assert_eq!(b.live_members(), 1);
    a.kill();
    b.kill();
}

#[tokio::test]
async fn keys_rotate_at_run_time_through_the_handle() {
    use palisade::gossip::Keyring;
    let keyed = |name: &str, key: [u8; 32]| {
        config(name).protocol(Config {
            keyring: Some(Keyring::new(key)),
            ..common::fast_gossip()
        })
    };
    let a = Membership::start(keyed("a", [1; 32])).await.unwrap();
    let b = Membership::start(keyed("b", [1; 32]).seeds([a.gossip_addr()]))
        .await
        .unwrap();
    // Install the new key everywhere, promote it everywhere, drop the old one.
    for m in [&a, &b] {
        m.with_keyring(|r| r.install([2; 32])).unwrap();
    }
    for m in [&a, &b] {
        m.with_keyring(|r| r.use_key(&[2; 32])).unwrap().unwrap();
    }
    for m in [&a, &b] {
        m.with_keyring(|r| r.remove(&[1; 32])).unwrap().unwrap();
    }
    // A member with only the new key joins the rotated pair.
    let c = Membership::start(keyed("c", [2; 32]).seeds([a.gossip_addr()]))
        .await
        .unwrap();
    let all = [a.clone(), b.clone(), c.clone()];
    assert!(eventually(PATIENCE, || all.iter().all(|m| m.live_members() == 2)).await);
    assert_eq!(a.stats().protocol.drops.unauthenticated, 0);
    let plain = Membership::start(config("plain")).await.unwrap();
    assert!(plain.with_keyring(|r| r.len()).is_none());
    for m in all.iter().chain([&plain]) {
        m.kill();
    }
}

#[tokio::test]
async fn event_subscriptions_end_when_the_member_stops() {
    let a = Membership::start(config("a")).await.unwrap();
    let mut rx = a.subscribe();
    let mut stream = a.events();
    a.shutdown().await.unwrap();
    assert!(matches!(
        tokio::time::timeout(PATIENCE, rx.next()).await,
        Ok(None)
    ));
    assert_eq!(
        tokio::time::timeout(PATIENCE, stream.next()).await,
        Ok(None)
    );
    // Subscribing afterwards gives a closed receiver, and commands say it stopped.
    assert!(a.subscribe().next().await.is_none());
    assert!(a.set_service_addr(None).is_err());
    assert!(!a.leave().await);
}

#[tokio::test]
async fn a_failed_start_frees_its_address_before_returning() {
    let addr = ReservedAddr::new().release();
    let closed = ReservedAddr::new();
    let err = Membership::start(
        MembershipConfig::new("a", addr)
            .protocol(common::fast_gossip())
            .join_attempts(1)
            .seeds([closed.addr()]),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, StartError::Join(_)));
    // The same fixed address binds again at once.
    let again = Membership::start(MembershipConfig::new("a", addr).protocol(common::fast_gossip()))
        .await
        .unwrap();
    assert_eq!(again.gossip_addr(), addr);
    again.kill();
}
