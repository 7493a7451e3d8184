//! A `Connection` against servers that stall or lie: one that accepts and never answers,
//! one that sends part of a frame and stops, one that answers with an id never sent. A
//! request with a deadline fails with `RequestTimeout` once it passes; a response to an
//! unknown id drops the connection as a protocol violation. Real loopback sockets and
//! real time: the deadlines are short, and every wait is bounded by a generous cap.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use palisade::transport::{Connection, ConnectionConfig, ConnectionLost, RequestTimeout};
use palisade::BoxError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tower::ServiceExt;

const LIMIT: Duration = Duration::from_secs(20);
const DEADLINE: Duration = Duration::from_millis(200);

fn with_deadline() -> ConnectionConfig {
    ConnectionConfig::builder()
        .request_timeout(DEADLINE)
        .backoff_base(Duration::from_millis(5))
        .backoff_max(Duration::from_millis(50))
        .build()
        .unwrap()
}

/// A peer that accepts one connection and hands it to `then`.
async fn peer<F, Fut>(then: F) -> SocketAddr
where
    F: FnOnce(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (s, _) = listener.accept().await.unwrap();
        then(s).await;
    });
    addr
}

/// Reads one request frame: (id, payload).
async fn read_request(s: &mut TcpStream) -> (u64, Vec<u8>) {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await.unwrap();
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).await.unwrap();
    (
        u64::from_be_bytes(body[..8].try_into().unwrap()),
        body[9..].to_vec(),
    )
}

fn response(id: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = ((9 + payload.len()) as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&id.to_be_bytes());
    out.push(1);
    out.extend_from_slice(payload);
    out
}

/// Keeps the socket open until the client closes it.
async fn hold(mut s: TcpStream) {
    let mut sink = Vec::new();
    let _ = s.read_to_end(&mut sink).await;
}

async fn call(conn: &Connection, payload: &'static [u8]) -> Result<Bytes, BoxError> {
    tokio::time::timeout(LIMIT, conn.clone().oneshot(Bytes::from_static(payload)))
        .await
        .expect("the call ended within the cap")
}

fn assert_timed_out(err: &BoxError) {
    let t = err
        .downcast_ref::<RequestTimeout>()
        .unwrap_or_else(|| panic!("got {err}"));
    assert_eq!(t.after(), DEADLINE);
}

#[tokio::test]
async fn a_server_that_accepts_and_never_answers_times_the_request_out() {
    let addr = peer(|mut s| async move {
        read_request(&mut s).await;
        hold(s).await;
    })
    .await;
    let conn = Connection::new(addr, with_deadline());
    let start = Instant::now();
    let err = call(&conn, b"hello?").await.unwrap_err();
    assert!(start.elapsed() >= DEADLINE);
    assert_timed_out(&err);
    let stats = conn.stats();
    assert_eq!(stats.timed_out, 1);
    assert!(stats.connected, "a slow server is not a broken connection");
}

#[tokio::test]
async fn a_server_that_stops_in_the_middle_of_a_frame_times_the_request_out() {
    let addr = peer(|mut s| async move {
        let (id, _) = read_request(&mut s).await;
        let frame = response(id, b"never finished");
        s.write_all(&frame[..frame.len() - 3]).await.unwrap();
        hold(s).await;
    })
    .await;
    let conn = Connection::new(addr, with_deadline());
    let err = call(&conn, b"hello?").await.unwrap_err();
    assert_timed_out(&err);
    assert_eq!(conn.stats().timed_out, 1);
}

#[tokio::test]
async fn a_response_to_an_id_never_sent_loses_the_connection_as_a_protocol_violation() {
    let addr = peer(|mut s| async move {
        let (id, _) = read_request(&mut s).await;
        s.write_all(&response(id + 1000, b"not yours"))
            .await
            .unwrap();
        hold(s).await;
    })
    .await;
    // No deadline: the violation alone must end the wait.
    let config = ConnectionConfig::builder()
        .backoff_base(Duration::from_millis(5))
        .build()
        .unwrap();
    let conn = Connection::new(addr, config);
    let err = call(&conn, b"hello?").await.unwrap_err();
    assert!(err.is::<ConnectionLost>(), "got {err}");
    let stats = conn.stats();
    assert_eq!(stats.protocol_violations, 1);
    assert_eq!(stats.lost, 1);
    assert_eq!(stats.disconnects, 1);
}

#[tokio::test]
async fn a_late_answer_to_a_timed_out_request_is_discarded_and_the_connection_kept() {
    let (late, send_late) = oneshot::channel::<()>();
    let addr = peer(|mut s| async move {
        let (first, _) = read_request(&mut s).await;
        // Answer the first only after its caller gave up, then serve the next one.
        send_late.await.unwrap();
        s.write_all(&response(first, b"too late")).await.unwrap();
        let (second, payload) = read_request(&mut s).await;
        s.write_all(&response(second, &payload)).await.unwrap();
        hold(s).await;
    })
    .await;
    let conn = Connection::new(addr, with_deadline());
    let err = call(&conn, b"first").await.unwrap_err();
    assert_timed_out(&err);
    late.send(()).unwrap();
    let reply = call(&conn, b"second").await.unwrap();
    assert_eq!(&reply[..], b"second");
    let stats = conn.stats();
    assert_eq!(stats.protocol_violations, 0);
    assert_eq!(stats.connects, 1);
    assert_eq!(stats.timed_out, 1);
}
