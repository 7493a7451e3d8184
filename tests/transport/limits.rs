//! What a hostile or broken peer can make `serve` hold, and for how long: the connection
//! cap, the idle and frame timeouts, the frame length, the shared budget of partially
//! read frames, protocol violations; each refusal closes one connection and is counted.
//!
//! Most tests drive one connection over `tokio::io::duplex` with tokio's paused clock, so
//! every timeout is exact and nothing depends on the machine's speed. The connection cap
//! needs real sockets and uses real time, with waits bounded by a generous cap.

use std::time::Duration;

use bytes::Bytes;
use palisade::transport::{
    Connection, ConnectionConfig, ServeConfig, ServeConfigBuilder, ServeStats, Server,
};
use palisade::BoxError;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tower::{service_fn, Service, ServiceBuilder, ServiceExt};

const LIMIT: Duration = Duration::from_secs(20);

type Echo = tower::util::ServiceFn<fn(Bytes) -> futures::future::Ready<Result<Bytes, BoxError>>>;

fn echo() -> Echo {
    service_fn(|req: Bytes| futures::future::ready(Ok(req)))
}

/// A request frame as the client writes it: length, id, kind 0, payload.
fn request(id: u64, payload: &[u8]) -> Vec<u8> {
    frame(id, 0, payload)
}

fn frame(id: u64, kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = ((9 + payload.len()) as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&id.to_be_bytes());
    out.push(kind);
    out.extend_from_slice(payload);
    out
}

/// Reads one response frame: (id, kind, payload).
async fn response(io: &mut DuplexStream) -> (u64, u8, Vec<u8>) {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await.unwrap();
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    io.read_exact(&mut body).await.unwrap();
    let id = u64::from_be_bytes(body[..8].try_into().unwrap());
    (id, body[8], body[9..].to_vec())
}

/// Whether the server closed its end: a read returns end of stream.
async fn closed(io: &mut DuplexStream) -> bool {
    let mut buf = [0u8; 64];
    loop {
        match io.read(&mut buf).await {
            Ok(0) | Err(_) => return true,
            Ok(_) => continue,
        }
    }
}

/// One connection over an in-memory pipe of `buffer` bytes each way, served by `server`.
fn connect<S>(server: &Server<S>, buffer: usize) -> DuplexStream
where
    S: Service<Bytes, Response = Bytes> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    let (client, server_end) = tokio::io::duplex(buffer);
    tokio::spawn(server.serve_connection(server_end));
    client
}

fn echo_server(config: ServeConfigBuilder) -> Server<Echo> {
    Server::new(echo(), config.build().unwrap())
}

fn config() -> ServeConfigBuilder {
    ServeConfig::builder()
        .idle_timeout(Duration::from_secs(3600))
        .frame_timeout(Duration::from_secs(3600))
}

/// Lets every task run until all wait on the clock or on a peer (the paused clock
/// advances only then).
async fn settle() {
    tokio::time::sleep(Duration::from_millis(1)).await;
}

/// The refusal counters that are not zero, by name.
fn refusals(stats: ServeStats) -> Vec<(&'static str, u64)> {
    [
        ("connections_refused", stats.connections_refused),
        ("idle_timeouts", stats.idle_timeouts),
        ("frame_timeouts", stats.frame_timeouts),
        ("oversized_frames", stats.oversized_frames),
        ("over_memory_budget", stats.over_memory_budget),
        ("protocol_violations", stats.protocol_violations),
    ]
    .into_iter()
    .filter(|(_, n)| *n > 0)
    .collect()
}

#[tokio::test(start_paused = true)]
async fn an_idle_connection_is_closed_after_the_idle_timeout_and_activity_restarts_it() {
    let server = echo_server(config().idle_timeout(Duration::from_secs(10)));
    let mut client = connect(&server, 4096);
    tokio::time::sleep(Duration::from_secs(9)).await;
    assert_eq!(
        server.stats().connections_open,
        1,
        "closed before its idle timeout"
    );

    client.write_all(&request(1, b"ping")).await.unwrap();
    assert_eq!(response(&mut client).await, (1, 1, b"ping".to_vec()));
    tokio::time::sleep(Duration::from_secs(9)).await;
    assert_eq!(
        server.stats().connections_open,
        1,
        "the request restarted the clock"
    );

    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(closed(&mut client).await);
    let stats = server.stats();
    assert_eq!(stats.connections_open, 0);
    assert_eq!(stats.idle_timeouts, 1);
    assert_eq!(stats.refusals(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_frame_dribbled_in_is_closed_after_the_frame_timeout_however_steady() {
    let server = echo_server(config().frame_timeout(Duration::from_secs(5)));
    let mut client = connect(&server, 4096);
    let frame = request(7, &[b'x'; 100]);
    // One byte a second: always progressing, never finishing (slowloris).
    for byte in &frame[..4] {
        client.write_all(&[*byte]).await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(
        server.stats().connections_open,
        1,
        "closed before its frame timeout"
    );
    client.write_all(&frame[4..10]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(closed(&mut client).await);
    let stats = server.stats();
    assert_eq!(refusals(stats), [("frame_timeouts", 1)]);
    assert_eq!(
        stats.partial_frame_bytes, 0,
        "the partial frame's bytes are returned"
    );
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_never_reads_its_responses_is_closed_after_the_frame_timeout() {
    let server = echo_server(config().frame_timeout(Duration::from_secs(5)));
    // 256 bytes of pipe: a 10 KiB response cannot be written while nobody reads.
    let mut client = connect(&server, 256);
    client
        .write_all(&request(1, &[7u8; 10 * 1024]))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(server.stats().connections_open, 1);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(server.stats().connections_open, 0);
    assert_eq!(refusals(server.stats()), [("frame_timeouts", 1)]);
}

#[tokio::test(start_paused = true)]
async fn a_frame_announcing_more_than_max_frame_len_is_refused_before_its_body() {
    let server = echo_server(config().max_frame_len(64));
    let mut ok = connect(&server, 4096);
    ok.write_all(&request(1, &[1u8; 55])).await.unwrap(); // exactly 64
    assert_eq!(response(&mut ok).await.0, 1);

    let mut bad = connect(&server, 4096);
    bad.write_all(&65u32.to_be_bytes()).await.unwrap();
    assert!(closed(&mut bad).await);
    assert_eq!(refusals(server.stats()), [("oversized_frames", 1)]);
}

#[tokio::test(start_paused = true)]
async fn frames_that_are_not_requests_are_protocol_violations() {
    let server = echo_server(config());
    let mut short = connect(&server, 4096);
    short.write_all(&[0, 0, 0, 3, 1, 2, 3]).await.unwrap();
    assert!(closed(&mut short).await);
    let mut response_kind = connect(&server, 4096);
    response_kind.write_all(&frame(1, 1, b"hi")).await.unwrap();
    assert!(closed(&mut response_kind).await);
    let mut unknown_kind = connect(&server, 4096);
    unknown_kind.write_all(&frame(1, 9, b"hi")).await.unwrap();
    assert!(closed(&mut unknown_kind).await);
    assert_eq!(refusals(server.stats()), [("protocol_violations", 3)]);
}

#[tokio::test(start_paused = true)]
async fn frames_past_the_shared_budget_are_refused_while_small_requests_are_served() {
    let budget = 64 * 1024;
    let server = echo_server(config().max_partial_frame_bytes(budget));
    // Two peers announce 1 MiB frames and send 48 KiB of each: the first holds about
    // 44 KiB of the budget (its first 4 KiB are free), the second cannot get as much.
    let part = 48 * 1024;
    let mut holders = Vec::new();
    for id in 0..2 {
        let mut c = connect(&server, 1 << 20);
        let f = request(id, &vec![0u8; 1 << 20]);
        c.write_all(&f[..part]).await.unwrap();
        settle().await;
        holders.push(c);
    }
    let stats = server.stats();
    assert_eq!(
        stats.over_memory_budget, 1,
        "the second frame overdraws the budget"
    );
    assert!(stats.partial_frame_bytes <= budget, "{stats:?}");
    assert!(closed(&mut holders[1]).await);

    // A small request needs no budget: served while the budget is spent.
    let mut small = connect(&server, 4096);
    small.write_all(&request(9, &[5u8; 1000])).await.unwrap();
    assert_eq!(response(&mut small).await.0, 9);

    // The holder leaves: its charge comes back.
    drop(holders);
    settle().await;
    assert_eq!(server.stats().partial_frame_bytes, 0);
    assert_eq!(refusals(server.stats()), [("over_memory_budget", 1)]);
}

#[tokio::test(start_paused = true)]
async fn while_the_service_is_not_ready_the_server_stops_reading_and_keeps_answering() {
    let slow = ServiceBuilder::new()
        .concurrency_limit(1)
        .service(service_fn(|req: Bytes| async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            Ok::<_, BoxError>(req)
        }));
    let server = Server::new(slow, config().build().unwrap());
    let mut client = connect(&server, 4096);
    let mut wire = Vec::new();
    for id in 0..3 {
        wire.extend_from_slice(&request(id, &[id as u8]));
    }
    client.write_all(&wire).await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    // The first is being served (it holds the permit), the second waits for readiness,
    // the third is not read.
    assert_eq!(server.stats().requests, 2);
    for id in 0..3 {
        assert_eq!(response(&mut client).await, (id, 1, vec![id as u8]));
    }
    assert_eq!(server.stats().responses, 3);
}

#[tokio::test(start_paused = true)]
async fn at_most_max_concurrent_per_connection_requests_of_a_connection_are_in_flight() {
    let slow = service_fn(|req: Bytes| async move {
        tokio::time::sleep(Duration::from_millis(10)).await;
        Ok::<_, BoxError>(req)
    });
    let server = Server::new(
        slow,
        config().max_concurrent_per_connection(2).build().unwrap(),
    );
    let mut client = connect(&server, 4096);
    let wire: Vec<u8> = (0..5).flat_map(|id| request(id, b"x")).collect();
    client.write_all(&wire).await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(server.stats().requests, 2, "read past the limit");
    let mut answered: Vec<u64> = Vec::new();
    for _ in 0..5 {
        answered.push(response(&mut client).await.0);
    }
    answered.sort_unstable();
    assert_eq!(answered, [0, 1, 2, 3, 4]);
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_finishes_sending_gets_every_answer_before_the_close() {
    let server = echo_server(config());
    let mut client = connect(&server, 1 << 16);
    let mut wire = Vec::new();
    for id in 0..50 {
        wire.extend_from_slice(&request(id, b"x"));
    }
    client.write_all(&wire).await.unwrap();
    client.shutdown().await.unwrap();
    for id in 0..50 {
        assert_eq!(response(&mut client).await.0, id);
    }
    assert!(closed(&mut client).await);
    assert_eq!(server.stats().refusals(), 0);
}

#[tokio::test]
async fn connections_beyond_max_connections_are_closed_at_accept_and_counted() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = echo_server(config().max_connections(4));
    let handle = server.handle();
    let _running = tokio::spawn(server.run(listener));

    // A well-behaved client takes one slot and is answered throughout.
    let conn = Connection::new(addr, ConnectionConfig::default());
    assert_eq!(
        &conn
            .clone()
            .oneshot(Bytes::from_static(b"a"))
            .await
            .unwrap()[..],
        b"a"
    );
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    assert!(common_eventually(|| handle.stats().connections_open == 4).await);

    let mut refused = Vec::new();
    for _ in 0..5 {
        refused.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    for s in &mut refused {
        let mut buf = [0u8; 8];
        let n = tokio::time::timeout(LIMIT, s.read(&mut buf))
            .await
            .unwrap()
            .unwrap_or(0);
        assert_eq!(n, 0, "a connection over the cap was served");
    }
    let stats = handle.stats();
    assert_eq!(stats.connections_refused, 5);
    assert_eq!(stats.connections_accepted, 4);
    assert_eq!(
        &conn
            .clone()
            .oneshot(Bytes::from_static(b"b"))
            .await
            .unwrap()[..],
        b"b"
    );

    // A slot freed is a slot to take.
    drop(idle.pop());
    assert!(common_eventually(|| handle.stats().connections_open == 3).await);
    let mut again = tokio::net::TcpStream::connect(addr).await.unwrap();
    assert!(common_eventually(|| handle.stats().connections_accepted == 5).await);
    again.write_all(&request(1, b"hi")).await.unwrap();
    let mut reply = vec![0u8; 4 + 9 + 2];
    tokio::time::timeout(LIMIT, again.read_exact(&mut reply))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&reply[13..], b"hi");
    assert_eq!(handle.stats().refusals(), 5);
}

async fn common_eventually(mut cond: impl FnMut() -> bool) -> bool {
    tokio::time::timeout(LIMIT, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .is_ok()
}
