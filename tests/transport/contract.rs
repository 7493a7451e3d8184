//! tower's contract, pinned for `transport::Connection`: `poll_ready` reserves the queue
//! slot that `call` uses and fails only once the connection's task is gone, a `call`
//! without readiness fails in its future, clones share the one connection, futures are
//! `Send + 'static`, and dropping a future abandons its request without harming the
//! connection.

use std::net::SocketAddr;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::task::noop_waker;
use palisade::transport::{Connection, ConnectionConfig, ConnectionLost, Disconnected};
use tower::{Service, ServiceExt};

use super::connection::{fast_reconnect, start_server, wait_until, LIMIT};

fn poll_ready(conn: &mut Connection) -> Poll<Result<(), palisade::BoxError>> {
    let waker = noop_waker();
    Service::<Bytes>::poll_ready(conn, &mut Context::from_waker(&waker))
}

async fn connected(addr: SocketAddr, config: ConnectionConfig) -> Connection {
    let conn = Connection::new(addr, config);
    wait_until(|| conn.is_connected()).await;
    conn
}

#[tokio::test]
async fn poll_ready_reserves_the_queue_slot_that_the_next_call_uses() {
    let (addr, _server) = start_server().await;
    let config = ConnectionConfig::builder().queue(1).build().unwrap();
    let mut a = connected(addr, config).await;
    let mut b = a.clone();
    assert!(matches!(poll_ready(&mut a), Poll::Ready(Ok(()))));
    assert!(
        poll_ready(&mut b).is_pending(),
        "a's reservation holds the only slot"
    );
    let reply = a.call(Bytes::from_static(&[0, 1]));
    tokio::time::timeout(LIMIT, b.ready())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply.await.unwrap(), Bytes::from_static(&[0, 1]));
}

#[tokio::test]
async fn call_without_poll_ready_fails_in_its_future_and_is_counted() {
    let (addr, _server) = start_server().await;
    let mut conn = connected(addr, ConnectionConfig::default()).await;
    let err = conn.call(Bytes::from_static(&[0])).await.unwrap_err();
    assert!(err.is::<Disconnected>(), "{err}");
    assert_eq!(conn.stats().refused, 1);
    assert_eq!(conn.stats().requests_sent, 0);
}

#[tokio::test]
async fn clones_share_one_connection_and_its_counters() {
    let (addr, _server) = start_server().await;
    let a = connected(addr, ConnectionConfig::default()).await;
    let mut b = a.clone();
    assert!(b.is_connected(), "the clone sees the connection at once");
    let reply = b.ready().await.unwrap().call(Bytes::from_static(&[0]));
    reply.await.unwrap();
    let stats = a.stats();
    assert_eq!((stats.connects, stats.responses), (1, 1));
}

#[tokio::test]
async fn response_futures_are_send_and_static_and_finish_on_another_task() {
    fn assert_send_static<T: Send + 'static>(_: &T) {}
    let (addr, _server) = start_server().await;
    let mut conn = connected(addr, ConnectionConfig::default()).await;
    let fut = conn
        .ready()
        .await
        .unwrap()
        .call(Bytes::from_static(&[0, 7]));
    assert_send_static(&fut);
    let reply = tokio::time::timeout(LIMIT, tokio::spawn(fut))
        .await
        .unwrap();
    assert_eq!(reply.unwrap().unwrap(), Bytes::from_static(&[0, 7]));
}

#[tokio::test]
async fn dropping_a_response_future_abandons_its_request_and_keeps_the_connection() {
    let (addr, _server) = start_server().await;
    let mut conn = connected(addr, fast_reconnect()).await;
    // The server answers this one after 20 ms, to a future that is gone by then.
    drop(conn.ready().await.unwrap().call(Bytes::from_static(&[20])));
    // Answered after 60 ms: by then the abandoned answer has come (and been discarded).
    let later = conn.ready().await.unwrap().call(Bytes::from_static(&[60]));
    assert_eq!(
        tokio::time::timeout(LIMIT, later).await.unwrap().unwrap(),
        Bytes::from_static(&[60])
    );
    let stats = conn.stats();
    assert_eq!(stats.protocol_violations, 0, "{stats:?}");
    assert_eq!((stats.connects, stats.disconnects), (1, 0), "{stats:?}");
}

/// Runs `Connection::new` on a runtime of its own and shuts that runtime down, which
/// drops the connection's task.
fn connection_whose_task_is_gone(addr: SocketAddr, wait_connected: bool) -> Connection {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let conn = rt.block_on(async {
        let conn = Connection::new(addr, fast_reconnect());
        if wait_connected {
            wait_until(|| conn.is_connected()).await;
        }
        conn
    });
    drop(rt);
    conn
}

#[test]
fn poll_ready_fails_once_the_connection_task_is_gone() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (addr, _server) = rt.block_on(start_server());
    let mut conn = connection_whose_task_is_gone(addr, true);
    let _guard = rt.enter();
    match poll_ready(&mut conn) {
        Poll::Ready(Err(e)) => assert!(e.is::<ConnectionLost>(), "{e}"),
        other => panic!("a dead connection must fail poll_ready, got {other:?}"),
    }
}

#[test]
fn poll_ready_fails_once_the_task_is_gone_even_if_it_never_connected() {
    // A port nobody listens on (bound, then released).
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut conn = connection_whose_task_is_gone(addr, false);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _guard = rt.enter();
    match poll_ready(&mut conn) {
        Poll::Ready(Err(e)) => assert!(e.is::<ConnectionLost>(), "{e}"),
        other => panic!("a dead connection must fail poll_ready, got {other:?}"),
    }
}

#[test]
fn a_caller_waiting_for_a_connection_is_woken_with_an_error_when_the_task_ends() {
    // A port nobody listens on: the connection never comes up, so the caller parks.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let task_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let conn = task_rt.block_on(async { Connection::new(addr, fast_reconnect()) });
    let caller_rt = tokio::runtime::Runtime::new().unwrap();
    let (parked_tx, parked_rx) = std::sync::mpsc::channel();
    let waiting = caller_rt.spawn(async move {
        let mut conn = conn;
        let mut first = true;
        std::future::poll_fn(|cx| {
            let poll = conn.poll_ready(cx);
            if first {
                first = false;
                parked_tx.send(poll.is_pending()).unwrap();
            }
            poll
        })
        .await
    });
    assert!(
        parked_rx.recv().unwrap(),
        "the caller must park while disconnected"
    );
    // The connection task's runtime goes away, and the task with it.
    drop(task_rt);
    let outcome = caller_rt
        .block_on(async { tokio::time::timeout(crate::common::PATIENCE, waiting).await })
        .expect("the parked caller was never woken")
        .unwrap();
    match outcome {
        Err(e) => assert!(e.is::<ConnectionLost>(), "{e}"),
        Ok(()) => panic!("a connection whose task is gone cannot be ready"),
    }
}
