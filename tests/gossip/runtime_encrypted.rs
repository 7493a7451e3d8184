//! An encrypted cluster on loopback: members with the wrong key (or none) never get in,
//! and what they send is counted as dropped.

use std::time::Duration;

use palisade::gossip::proto::Config;
use palisade::gossip::runtime::{Membership, MembershipConfig, StartError};
use palisade::gossip::Keyring;

use crate::common;
use common::{eventually, PATIENCE};

fn keyed(key: Option<[u8; 32]>) -> Config {
    Config {
        keyring: key.map(Keyring::new),
        ..common::fast_gossip()
    }
}

fn config(name: &str, key: Option<[u8; 32]>) -> MembershipConfig {
    MembershipConfig::new(name, "127.0.0.1:0".parse().unwrap())
        .protocol(keyed(key))
        .join_attempts(2)
        .join_backoff(Duration::from_millis(50), Duration::from_millis(100))
        .stream_timeout(Duration::from_millis(500))
}

const KEY: [u8; 32] = [7; 32];

#[tokio::test]
async fn members_with_the_wrong_key_or_none_never_appear_and_their_packets_are_dropped() {
    let a = Membership::start(config("a", Some(KEY))).await.unwrap();
    let seed = a.gossip_addr();
    let b = Membership::start(config("b", Some(KEY)).seeds([seed]))
        .await
        .unwrap();
    let c = Membership::start(config("c", Some(KEY)).seeds([seed]))
        .await
        .unwrap();
    let all = [a.clone(), b.clone(), c.clone()];
    assert!(eventually(PATIENCE, || all.iter().all(|m| m.live_members() == 2)).await);
    let before = a.stats().protocol.drops;

    // The wrong key: the seed cannot open its join, so it never answers.
    let wrong = Membership::start(config("intruder", Some([9; 32])).seeds([seed])).await;
    assert!(matches!(wrong, Err(StartError::Join(_))), "{wrong:?}");
    // No key at all.
    let plain = Membership::start(config("plain", None).seeds([seed])).await;
    assert!(matches!(plain, Err(StartError::Join(_))), "{plain:?}");
    // Datagrams too: an intruder that knows the address and sends probes in the clear or
    // sealed with another key.
    let intruder = Membership::start(config("intruder2", Some([9; 32])))
        .await
        .unwrap();
    let _ = intruder.join(&[seed]).await;
    let raw = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for _ in 0..5 {
        raw.send_to(b"\x01not a sealed packet", seed).await.unwrap();
    }

    let a2 = a.clone();
    assert!(
        eventually(PATIENCE, || {
            let d = a2.stats().protocol.drops;
            d.unauthenticated >= before.unauthenticated + 2 && d.total() >= before.total() + 8
        })
        .await,
        "drops: {:?}",
        a.stats().protocol.drops
    );
    // Give gossip time to spread anything that got in, then check every view.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for m in &all {
        assert_eq!(m.live_members(), 2, "{}", m.local().name());
        assert!(m
            .members()
            .iter()
            .all(|o| ["a", "b", "c"].contains(&o.name())));
    }
    assert_eq!(intruder.live_members(), 0);
    intruder.kill();
    for m in &all {
        m.kill();
    }
}
