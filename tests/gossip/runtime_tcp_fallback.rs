//! The TCP fallback ping over real loopback sockets: a runtime member keeps a peer whose
//! UDP is dead (its socket is bound but never read, like a firewall dropping UDP) alive
//! through TCP, and declares it failed when the fallback is off. The peer is a sans-IO
//! core driven by hand over TCP only, speaking the runtime's stream framing (a
//! big-endian `u32` length, then the sealed message, the answer on the same connection).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade::gossip::proto::{Config, Identity, MemberState, Swim, Transmit, Transport};
use palisade::gossip::runtime::{Membership, MembershipConfig};
use palisade::gossip::{Event, Keyring};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::time::Instant;

use crate::common;
use common::{eventually, PATIENCE};

fn protocol(fallback: bool) -> Config {
    Config {
        probe_interval: Duration::from_millis(200),
        probe_timeout: Duration::from_millis(100),
        gossip_interval: Duration::from_millis(50),
        // A lone suspicion lasts 0.4 to 1.2 s: short, so that without the fallback the
        // peer fails quickly, yet several periods, so that one TCP answer delayed past
        // its period on a loaded machine is refuted (on the next stream ping, which
        // carries the suspicion) before it turns into a failure.
        suspicion_mult: 2,
        suspicion_max_timeout_mult: 3,
        // The probe is the only contact: no push-pull to rescue a suspected member.
        push_pull_interval: Duration::ZERO,
        reconnect_interval: Duration::ZERO,
        tcp_fallback_ping: fallback,
        keyring: Some(Keyring::new([7; 32])),
        seed: Some(3),
        ..Config::local()
    }
}

async fn write_message(s: &mut TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    s.write_all(&(bytes.len() as u32).to_be_bytes()).await?;
    s.write_all(bytes).await?;
    s.flush().await
}

async fn read_message(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await?;
    let mut buf = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).await?;
    Ok(buf)
}

/// A member reachable over TCP only: joins `seed`, then answers stream messages with its
/// core. Its UDP socket is bound (so the prober gets no ICMP error) and never read.
struct TcpOnlyMember {
    addr: SocketAddr,
    _udp: UdpSocket,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TcpOnlyMember {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn tcp_only_member(name: &str, cfg: Config, seed: SocketAddr) -> TcpOnlyMember {
    let (udp, listener) = loop {
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        if let Ok(l) = TcpListener::bind(udp.local_addr().unwrap()).await {
            break (udp, l);
        }
    };
    let addr = udp.local_addr().unwrap();
    let epoch = Instant::now();
    let now = move || epoch.elapsed().as_nanos() as u64;
    let swim = Arc::new(Mutex::new(
        Swim::new(Identity::new(name, addr), cfg, now()).unwrap(),
    ));
    // Join: the push-pull to the seed, over TCP.
    let join: Vec<_> = {
        let mut s = swim.lock().unwrap();
        s.join(&[seed], now());
        s.drain_transmits()
            .filter(|t| t.transport == Transport::Stream)
            .collect()
    };
    for t in join {
        let mut c = TcpStream::connect(t.to).await.unwrap();
        write_message(&mut c, &t.bytes).await.unwrap();
        let answer = read_message(&mut c).await.unwrap();
        swim.lock().unwrap().handle_stream(t.to, &answer, now());
    }
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut c, peer)) = listener.accept().await else {
                continue;
            };
            let Ok(Ok(msg)) =
                tokio::time::timeout(Duration::from_secs(1), read_message(&mut c)).await
            else {
                continue;
            };
            let answer = answer_stream(&swim, peer, &msg, now());
            if let Some(a) = answer {
                let _ = write_message(&mut c, &a.bytes).await;
            }
        }
    });
    TcpOnlyMember {
        addr,
        _udp: udp,
        task,
    }
}

/// Hands a stream message to the core; its answer to the peer, if any.
fn answer_stream(swim: &Mutex<Swim>, peer: SocketAddr, msg: &[u8], now: u64) -> Option<Transmit> {
    let mut s = swim.lock().unwrap();
    s.handle_stream(peer, msg, now);
    let answer = s
        .drain_transmits()
        .find(|t| t.transport == Transport::Stream && t.to == peer);
    answer
}

async fn start(fallback: bool) -> (Membership, TcpOnlyMember) {
    let a = Membership::start(
        MembershipConfig::new("a", "127.0.0.1:0".parse().unwrap())
            .protocol(protocol(fallback))
            .stream_timeout(Duration::from_secs(1)),
    )
    .await
    .unwrap();
    let b = tcp_only_member("b", protocol(fallback), a.gossip_addr()).await;
    let a2 = a.clone();
    assert!(
        eventually(PATIENCE, || a2.live_members() == 1).await,
        "b joined over TCP"
    );
    (a, b)
}

#[tokio::test]
async fn member_reachable_only_over_tcp_is_kept_alive_by_the_fallback() {
    let (a, b) = start(true).await;
    let mut events = a.subscribe();
    // Fifteen probe periods: without the fallback b would be failed well within this
    // (see the next test).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let seen = a.member("b").expect("b known");
    assert_eq!(seen.gossip_addr(), b.addr);
    assert_eq!(seen.state(), MemberState::Alive);
    while let Some(e) = events.try_next() {
        assert!(!matches!(e, Event::Failed(_)), "{e:?}");
    }
    let stats = a.stats();
    eprintln!(
        "in 3 s: {} fallback pings, {} rounds saved",
        stats.protocol.tcp_fallback_pings, stats.tcp_fallback_saves
    );
    assert!(stats.tcp_fallback_saves >= 5, "{stats:?}");
    assert_eq!(stats.tcp_fallback_saves, stats.protocol.tcp_fallback_saves);
    assert_eq!(
        stats.protocol.drops.total(),
        0,
        "sealed both ways, all accepted"
    );
    drop(b);
}

#[tokio::test]
async fn without_the_fallback_a_member_reachable_only_over_tcp_is_declared_failed() {
    let (a, b) = start(false).await;
    let a2 = a.clone();
    assert!(
        eventually(PATIENCE, || a2
            .member("b")
            .is_some_and(|m| m.state() == MemberState::Dead))
        .await,
        "b declared failed"
    );
    assert_eq!(a.stats().tcp_fallback_saves, 0);
    drop(b);
}
