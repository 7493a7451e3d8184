//! The gossip view as a discovery source, over real loopback sockets: inserts with
//! weights, updates, removals on failure and leave, tag filters, and the isolation rule.

use std::net::SocketAddr;
use std::time::Duration;

use futures::StreamExt;
use palisade::gossip::proto::{Member, MemberState};
use palisade::gossip::runtime::{Membership, MembershipConfig};
use palisade::gossip::GossipDiscover;
use tower::discover::Change;

use crate::common;
use common::{eventually, PATIENCE};

fn config(name: &str) -> MembershipConfig {
    MembershipConfig::new(name, "127.0.0.1:0".parse().unwrap())
        .protocol(common::fast_gossip())
        .leave_timeout(Duration::from_secs(2))
}

fn svc(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

type Source = GossipDiscover<fn(SocketAddr, &Member) -> SocketAddr, SocketAddr>;

fn source(m: &Membership) -> Source {
    m.discover((|addr, _m| addr) as fn(SocketAddr, &Member) -> SocketAddr)
}

/// Collects changes until none arrives for `quiet`, at most `within` in all.
async fn changes(d: &mut Source, quiet: Duration, within: Duration) -> Vec<String> {
    let mut out = Vec::new();
    let end = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < end {
        match tokio::time::timeout(quiet, d.next()).await {
            Ok(Some(Ok(Change::Insert(k, w)))) => {
                out.push(format!("+{k}@{}w{}", w.get_ref().port(), w.weight()))
            }
            Ok(Some(Ok(Change::Remove(k)))) => out.push(format!("-{k}")),
            Ok(Some(Err(e))) => match e {},
            Ok(None) => {
                out.push("end".into());
                break;
            }
            Err(_) => break,
        }
    }
    out
}

/// Waits until `want` has arrived (in any order, among other changes).
async fn expect(d: &mut Source, want: &[&str], within: Duration) -> Vec<String> {
    let mut got = Vec::new();
    let end = tokio::time::Instant::now() + within;
    while !want.iter().all(|w| got.iter().any(|g| g == w)) {
        let left = end.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, d.next()).await {
            Ok(Some(Ok(Change::Insert(k, w)))) => {
                got.push(format!("+{k}@{}w{}", w.get_ref().port(), w.weight()))
            }
            Ok(Some(Ok(Change::Remove(k)))) => got.push(format!("-{k}")),
            Ok(Some(Err(e))) => match e {},
            Ok(None) | Err(_) => panic!("wanted {want:?}, got {got:?}"),
        }
    }
    got
}

#[tokio::test]
async fn alive_members_with_a_service_address_become_weighted_endpoints() {
    let client = Membership::start(config("client")).await.unwrap();
    let seed = client.gossip_addr();
    let s1 = Membership::start(config("s1").service_addr(svc(1001)).seeds([seed]))
        .await
        .unwrap();
    let s2 = Membership::start(
        config("s2")
            .service_addr(svc(1002))
            .tag("weight", "3")
            .seeds([seed]),
    )
    .await
    .unwrap();
    // No service address: a member, not an endpoint.
    let quiet = Membership::start(config("quiet").seeds([seed]))
        .await
        .unwrap();
    let mut d = source(&client);
    let got = expect(&mut d, &["+s1@1001w1", "+s2@1002w3"], PATIENCE).await;
    assert!(
        !got.iter()
            .any(|c| c.contains("quiet") || c.contains("client")),
        "{got:?}"
    );
    assert_eq!(d.len(), 2);
    for m in [&client, &s1, &s2, &quiet] {
        m.kill();
    }
}

#[tokio::test]
async fn a_weight_or_address_change_reinserts_and_other_tags_do_not() {
    let client = Membership::start(config("client")).await.unwrap();
    let s1 = Membership::start(
        config("s1")
            .service_addr(svc(1001))
            .seeds([client.gossip_addr()]),
    )
    .await
    .unwrap();
    let mut d = source(&client);
    expect(&mut d, &["+s1@1001w1"], PATIENCE).await;
    s1.set_tags([("weight".to_owned(), "4".to_owned())].into())
        .unwrap();
    expect(&mut d, &["+s1@1001w4"], PATIENCE).await;
    s1.set_service_addr(Some(svc(2002))).unwrap();
    expect(&mut d, &["+s1@2002w4"], PATIENCE).await;
    s1.set_tags(
        [
            ("weight".to_owned(), "4".to_owned()),
            ("zone".to_owned(), "b".to_owned()),
        ]
        .into(),
    )
    .unwrap();
    let c2 = client.clone();
    assert!(
        eventually(PATIENCE, || c2
            .member("s1")
            .is_some_and(|m| m.tags().contains_key("zone")))
        .await
    );
    let after = changes(&mut d, Duration::from_millis(300), Duration::from_secs(1)).await;
    assert!(after.is_empty(), "{after:?}");
    client.kill();
    s1.kill();
}

#[tokio::test]
async fn failed_and_left_members_are_removed_from_the_set() {
    let client = Membership::start(config("client")).await.unwrap();
    let seed = client.gossip_addr();
    let mut servers = Vec::new();
    for i in 1..=3u16 {
        servers.push(
            Membership::start(
                config(&format!("s{i}"))
                    .service_addr(svc(1000 + i))
                    .seeds([seed]),
            )
            .await
            .unwrap(),
        );
    }
    let mut d = source(&client);
    expect(
        &mut d,
        &["+s1@1001w1", "+s2@1002w1", "+s3@1003w1"],
        PATIENCE,
    )
    .await;
    servers[0].kill();
    // It goes once declared failed (not while only suspect: see the unit tests); how
    // soon is the simulator's claim (gossip_sim.rs), so the wait is only capped.
    let got = expect(&mut d, &["-s1"], PATIENCE).await;
    assert_eq!(
        client.member("s1").unwrap().state(),
        MemberState::Dead,
        "{got:?}"
    );
    servers[1].shutdown().await.unwrap();
    expect(&mut d, &["-s2"], PATIENCE).await;
    assert_eq!(client.member("s2").unwrap().state(), MemberState::Left);
    assert_eq!(d.len(), 1);
    client.kill();
    servers[2].kill();
}

#[tokio::test]
async fn a_required_tag_filters_members_in_and_out() {
    let client = Membership::start(config("client")).await.unwrap();
    let seed = client.gossip_addr();
    let a = Membership::start(
        config("a")
            .service_addr(svc(1001))
            .tag("role", "api")
            .seeds([seed]),
    )
    .await
    .unwrap();
    let b = Membership::start(
        config("b")
            .service_addr(svc(1002))
            .tag("role", "db")
            .seeds([seed]),
    )
    .await
    .unwrap();
    let mut d = source(&client).with_tag("role", "api");
    let got = expect(&mut d, &["+a@1001w1"], PATIENCE).await;
    assert!(!got.iter().any(|c| c.contains("+b")));
    a.set_tags([("role".to_owned(), "db".to_owned())].into())
        .unwrap();
    expect(&mut d, &["-a"], PATIENCE).await;
    for m in [&client, &a, &b] {
        m.kill();
    }
}

#[tokio::test]
async fn an_isolated_member_keeps_the_last_set_until_someone_is_alive_again() {
    let client = Membership::start(config("client")).await.unwrap();
    let seed = client.gossip_addr();
    let s1 = Membership::start(config("s1").service_addr(svc(1001)).seeds([seed]))
        .await
        .unwrap();
    let s2 = Membership::start(config("s2").service_addr(svc(1002)).seeds([seed]))
        .await
        .unwrap();
    let mut d = source(&client);
    expect(&mut d, &["+s1@1001w1", "+s2@1002w1"], PATIENCE).await;
    // Everyone else "fails" at once: from the client's side this looks like isolation.
    s1.kill();
    s2.kill();
    let c = client.clone();
    assert!(
        eventually(PATIENCE, || {
            c.member("s1").unwrap().state() == MemberState::Dead
                && c.member("s2").unwrap().state() == MemberState::Dead
        })
        .await
    );
    let during = changes(&mut d, Duration::from_millis(300), Duration::from_secs(1)).await;
    assert!(during.is_empty(), "removed while isolated: {during:?}");
    assert_eq!(d.len(), 2);
    // Someone alive again: the set is recomputed, the failed ones go.
    let s3 = Membership::start(config("s3").service_addr(svc(1003)).seeds([seed]))
        .await
        .unwrap();
    expect(&mut d, &["-s1", "-s2", "+s3@1003w1"], PATIENCE).await;
    assert_eq!(d.len(), 1);
    client.kill();
    s3.kill();
}

#[tokio::test]
async fn the_local_member_is_an_endpoint_until_it_leaves_and_the_stream_ends_when_it_stops() {
    let me = Membership::start(config("me").service_addr(svc(1001)))
        .await
        .unwrap();
    let mut d = source(&me);
    expect(&mut d, &["+me@1001w1"], PATIENCE).await;
    let mut without = source(&me).include_local(false);
    assert!(changes(
        &mut without,
        Duration::from_millis(100),
        Duration::from_millis(200)
    )
    .await
    .is_empty());
    me.leave().await;
    expect(&mut d, &["-me"], PATIENCE).await;
    me.shutdown().await.unwrap();
    let end = changes(&mut d, PATIENCE, PATIENCE).await;
    assert_eq!(end, vec!["end".to_owned()]);
}
