//! Persistent connections over real loopback sockets. Waits are bounded by timeouts on
//! conditions, never fixed sleeps.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use palisade::transport::{
    serve, Connection, ConnectionConfig, ConnectionLost, Disconnected, RemoteError,
};
use palisade::BoxError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tower::{service_fn, Service, ServiceExt};

use crate::common;

use common::ReservedAddr;

pub(super) const LIMIT: Duration = Duration::from_secs(10);

pub(super) fn fast_reconnect() -> ConnectionConfig {
    ConnectionConfig::builder()
        .backoff_base(Duration::from_millis(5))
        .backoff_max(Duration::from_millis(50))
        .build()
        .unwrap()
}

/// Echoes the payload after a delay given by its first byte (in milliseconds), and fails
/// on an empty payload.
pub(super) async fn start_server() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(serve(listener, echo_service(), ConnectionConfig::default()));
    (addr, task)
}

fn echo_service(
) -> impl Service<Bytes, Response = Bytes, Error = BoxError, Future = impl Send + 'static>
       + Clone
       + Send
       + 'static {
    service_fn(|req: Bytes| async move {
        if req.is_empty() {
            return Err::<Bytes, BoxError>("empty request".into());
        }
        tokio::time::sleep(Duration::from_millis(req[0] as u64)).await;
        Ok(req)
    })
}

pub(super) async fn wait_until(mut cond: impl FnMut() -> bool) {
    tokio::time::timeout(LIMIT, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .expect("condition not reached in time");
}

#[tokio::test]
async fn pipelined_requests_on_one_connection_get_their_own_responses() {
    let (addr, _server) = start_server().await;
    let conn = Connection::new(addr, fast_reconnect());
    let calls = (0..200u32).map(|i| {
        // Later requests finish first: responses come back out of order.
        let payload = Bytes::from(vec![
            (20 - (i % 20)) as u8,
            (i % 256) as u8,
            (i / 256) as u8,
        ]);
        let conn = conn.clone();
        async move {
            let reply = conn.oneshot(payload.clone()).await.unwrap();
            assert_eq!(reply, payload);
        }
    });
    tokio::time::timeout(LIMIT, futures::future::join_all(calls))
        .await
        .unwrap();
    let stats = conn.stats();
    assert_eq!(stats.connects, 1);
    assert_eq!(stats.requests_sent, 200);
    assert_eq!(stats.responses, 200);
}

#[tokio::test]
async fn remote_errors_arrive_as_remote_error() {
    let (addr, _server) = start_server().await;
    let conn = Connection::new(addr, fast_reconnect());
    let err = conn.oneshot(Bytes::new()).await.unwrap_err();
    let remote = err.downcast_ref::<RemoteError>().expect("RemoteError");
    assert_eq!(remote.message(), "empty request");
}

#[tokio::test]
async fn not_ready_until_the_server_is_up_then_connects() {
    // A port held bound but not listening: connections to it are refused, and no
    // outgoing connection (this one's own included) can take it as its source port.
    let reserved = ReservedAddr::new();
    let addr = reserved.addr();
    let mut conn = Connection::new(addr, fast_reconnect());
    let not_ready = tokio::time::timeout(Duration::from_millis(100), conn.ready()).await;
    assert!(not_ready.is_err(), "ready without a server");
    wait_until(|| conn.stats().connect_failures >= 2).await;

    let listener = TcpListener::bind(reserved.release()).await.unwrap();
    let _server = tokio::spawn(serve(listener, echo_service(), ConnectionConfig::default()));
    let reply = tokio::time::timeout(LIMIT, async {
        conn.ready()
            .await
            .unwrap()
            .call(Bytes::from_static(b"\x00hi"))
            .await
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(&reply[..], b"\x00hi");
    assert!(conn.is_connected());
}

#[tokio::test]
async fn server_death_fails_in_flight_requests_and_reconnect_follows_restart() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(serve(listener, echo_service(), ConnectionConfig::default()));
    let mut conn = Connection::new(addr, fast_reconnect());
    conn.ready().await.unwrap();

    // A slow request is in flight when the server dies.
    let slow = conn.call(Bytes::from_static(b"\xffslow"));
    let in_flight = tokio::spawn(slow);
    wait_until(|| conn.stats().requests_sent == 1).await;
    server.abort();
    let err = tokio::time::timeout(LIMIT, in_flight)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert!(err.is::<ConnectionLost>(), "got {err}");
    wait_until(|| !conn.is_connected()).await;
    let not_ready = tokio::time::timeout(Duration::from_millis(50), conn.ready()).await;
    assert!(not_ready.is_err(), "ready while the server is down");

    let listener = TcpListener::bind(addr).await.unwrap();
    let _server = tokio::spawn(serve(listener, echo_service(), ConnectionConfig::default()));
    let reply = tokio::time::timeout(LIMIT, async {
        conn.ready()
            .await
            .unwrap()
            .call(Bytes::from_static(b"\x00back"))
            .await
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(&reply[..], b"\x00back");
    assert_eq!(conn.stats().lost, 1);
    assert!(conn.stats().connects >= 2);
}

#[tokio::test]
async fn oversized_request_fails_alone_and_the_connection_stays_up() {
    let (addr, _server) = start_server().await;
    let config = ConnectionConfig::builder()
        .max_frame_len(64)
        .build()
        .unwrap();
    let conn = Connection::new(addr, config);
    let err = conn
        .clone()
        .oneshot(Bytes::from(vec![0u8; 100]))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("max_frame_len"), "got {err}");
    let ok = conn
        .clone()
        .oneshot(Bytes::from_static(b"\x00ok"))
        .await
        .unwrap();
    assert_eq!(&ok[..], b"\x00ok");
    assert_eq!(conn.stats().connects, 1);
}

#[tokio::test]
async fn malformed_response_drops_the_connection_without_panic() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // A peer that answers any request with a frame of an unknown kind.
    let bad = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut len = [0u8; 4];
        s.read_exact(&mut len).await.unwrap();
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        s.read_exact(&mut body).await.unwrap();
        let mut reply = vec![0, 0, 0, 9];
        reply.extend_from_slice(&body[..8]);
        reply.push(0xEE);
        s.write_all(&reply).await.unwrap();
        // Keep the socket open: the client must close it on its own.
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest).await;
    });
    let conn = Connection::new(addr, fast_reconnect());
    let err = tokio::time::timeout(LIMIT, conn.clone().oneshot(Bytes::from_static(b"x")))
        .await
        .unwrap()
        .unwrap_err();
    assert!(err.is::<ConnectionLost>(), "got {err}");
    tokio::time::timeout(LIMIT, bad).await.unwrap().unwrap();
}

#[tokio::test]
async fn garbage_to_the_server_closes_only_that_connection() {
    let (addr, _server) = start_server().await;
    let mut raw = tokio::net::TcpStream::connect(addr).await.unwrap();
    // A frame claiming 4 GiB.
    raw.write_all(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3])
        .await
        .unwrap();
    let mut buf = Vec::new();
    let n = tokio::time::timeout(LIMIT, raw.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "server answered garbage");

    let conn = Connection::new(addr, fast_reconnect());
    let ok = conn.oneshot(Bytes::from_static(b"\x00fine")).await.unwrap();
    assert_eq!(&ok[..], b"\x00fine");
}

#[tokio::test]
async fn requests_made_while_disconnected_fail_fast_with_disconnected() {
    let reserved = ReservedAddr::new();
    let mut conn = Connection::new(reserved.addr(), fast_reconnect());
    // Calling without readiness is a contract breach; it must still fail cleanly.
    let err = conn.call(Bytes::from_static(b"x")).await.unwrap_err();
    assert!(err.is::<Disconnected>(), "got {err}");
}

#[tokio::test]
async fn dropping_every_handle_closes_the_socket() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let closed = Arc::new(AtomicUsize::new(0));
    let seen = closed.clone();
    let peer = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf).await;
        seen.fetch_add(1, Ordering::SeqCst);
    });
    let conn = Connection::new(addr, fast_reconnect());
    wait_until(|| conn.is_connected()).await;
    drop(conn);
    tokio::time::timeout(LIMIT, peer).await.unwrap().unwrap();
    assert_eq!(closed.load(Ordering::SeqCst), 1);
}
