//! `serve` behind services with backpressure (a concurrency limit, a `Buffer`): while the
//! service is not ready the server keeps answering what is in flight, so every request
//! is answered. Over real loopback sockets; waits are bounded by a generous cap on the
//! whole run, never fixed sleeps.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use palisade::transport::{serve, Connection, ConnectionConfig};
use palisade::BoxError;
use tokio::net::TcpListener;
use tower::{service_fn, Service, ServiceBuilder, ServiceExt};

/// A cap for a whole scenario on a loaded 2-core machine: each takes well under a second
/// when the server works, and forever when it deadlocks.
const LIMIT: Duration = Duration::from_secs(60);

/// Echoes after yielding, so that calls overlap and the limit is felt.
async fn echo(req: Bytes) -> Result<Bytes, BoxError> {
    tokio::task::yield_now().await;
    Ok(req)
}

async fn start<S>(service: S) -> SocketAddr
where
    S: Service<Bytes, Response = Bytes> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(listener, service, ConnectionConfig::default()));
    addr
}

/// `n` requests at once on `conn`, each answered with its own payload.
async fn pipelined(conn: &Connection, tag: u32, n: u32) {
    let calls = (0..n).map(|i| {
        let conn = conn.clone();
        async move {
            let payload = Bytes::from([tag.to_be_bytes(), i.to_be_bytes()].concat());
            let reply = conn.oneshot(payload.clone()).await.expect("answered");
            assert_eq!(reply, payload);
        }
    });
    futures::future::join_all(calls).await;
}

async fn every_request_is_answered<S>(service: S)
where
    S: Service<Bytes, Response = Bytes> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    let addr = start(service).await;
    // 1,000 pipelined on one connection (the queue holds them all).
    let conn = Connection::new(addr, ConnectionConfig::default());
    tokio::time::timeout(LIMIT, pipelined(&conn, 0, 1000))
        .await
        .expect("1,000 pipelined requests answered");
    assert_eq!(conn.stats().responses, 1000);
    assert_eq!(conn.stats().connects, 1);

    // 100 connections at once, 10 pipelined requests each.
    let conns: Vec<Connection> = (0..100)
        .map(|_| Connection::new(addr, ConnectionConfig::default()))
        .collect();
    let all = conns
        .iter()
        .enumerate()
        .map(|(tag, c)| pipelined(c, tag as u32 + 1, 10));
    tokio::time::timeout(LIMIT, futures::future::join_all(all))
        .await
        .expect("100 connections answered");
    for c in &conns {
        assert_eq!(c.stats().responses, 10);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrency_limit_of_one_behind_serve_answers_every_pipelined_request() {
    let service = ServiceBuilder::new()
        .concurrency_limit(1)
        .service(service_fn(echo));
    every_request_is_answered(service).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buffer_of_one_behind_serve_answers_every_pipelined_request() {
    let service = ServiceBuilder::new().buffer(1).service(service_fn(echo));
    every_request_is_answered(service).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buffer_of_one_over_a_concurrency_limit_of_one_answers_every_pipelined_request() {
    let service = ServiceBuilder::new()
        .buffer(1)
        .concurrency_limit(1)
        .service(service_fn(echo));
    every_request_is_answered(service).await;
}
