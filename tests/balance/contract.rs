//! tower's contract, pinned for `Balance` where the other modules leave it implicit:
//! dropping a response future ends its in-flight count at once, dropping the balancer
//! lets its requests finish, and an endpoint circuit that opens between `poll_ready` and
//! `call` is caught at `call`, with the rejection in the future and `poll_ready` still
//! not failing.

use std::io;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::task::noop_waker;
use palisade::balance::{Builder, RoundRobin};
use palisade::breaker::{BreakerConfig, CircuitState};
use palisade::clock::Clock;
use palisade::discover::FixedList;
use palisade::error::BreakerOpen;
use tokio::sync::oneshot;
use tower::{Service, ServiceExt};

type Req = oneshot::Receiver<bool>;

/// An endpoint that answers with its name, or fails, as the request's sender says (a
/// dropped sender is a failure).
fn endpoint(
    name: &'static str,
) -> impl Service<Req, Response = &'static str, Error = io::Error, Future: Send> + Send {
    tower::service_fn(move |rx: Req| async move {
        match rx.await {
            Ok(true) => Ok(name),
            _ => Err(io::Error::other("failed")),
        }
    })
}

#[tokio::test]
async fn dropping_a_response_future_ends_its_in_flight_count_at_once() {
    let list = FixedList::unweighted([("a", endpoint("a")), ("b", endpoint("b"))]);
    let mut bal = Builder::new(RoundRobin::new()).build(list).unwrap();
    let (_keep_a, rx) = oneshot::channel();
    let first = bal.ready().await.unwrap().call(rx);
    let (tx, rx) = oneshot::channel();
    let second = bal.ready().await.unwrap().call(rx);
    assert_eq!(bal.in_flight(), 2);
    drop(first);
    assert_eq!(bal.in_flight(), 1, "the dropped call no longer counts");
    tx.send(true).unwrap();
    second.await.unwrap();
    assert_eq!(bal.in_flight(), 0);
}

#[tokio::test]
async fn dropping_the_balancer_lets_its_in_flight_requests_finish() {
    let list = FixedList::unweighted([("a", endpoint("a"))]);
    let mut bal = Builder::new(RoundRobin::new()).build(list).unwrap();
    let (tx, rx) = oneshot::channel();
    let in_flight = bal.ready().await.unwrap().call(rx);
    drop(bal);
    tx.send(true).unwrap();
    assert_eq!(in_flight.await.unwrap(), "a");
}

#[tokio::test(start_paused = true)]
async fn a_circuit_opened_after_poll_ready_rejects_in_the_future_and_poll_ready_never_fails() {
    let breaker = BreakerConfig::builder()
        .clock(Clock::tokio())
        .consecutive_failures(1)
        .without_error_percentage()
        .sleep_window(Duration::from_secs(5))
        .build()
        .unwrap();
    let list = FixedList::unweighted([("a", endpoint("a"))]);
    let mut bal = Builder::new(RoundRobin::new())
        .clock(Clock::tokio())
        .no_endpoint_deadline(Duration::from_secs(60))
        .endpoint_breaker(breaker)
        .build(list)
        .unwrap();
    bal.ready().await.unwrap();
    // The only endpoint's circuit opens after it was found ready.
    let circuit = bal.endpoint_breaker(&"a").unwrap();
    circuit.force_open();
    let (_tx, rx) = oneshot::channel();
    let err = bal.call(rx).await.unwrap_err();
    assert!(err.is::<BreakerOpen>(), "{err}");
    assert_eq!(bal.in_flight(), 0, "a rejected call holds nothing");
    // Not ready while the circuit is open, and not an error either.
    let waker = noop_waker();
    let mut cx = Context::from_waker(&waker);
    assert!(matches!(
        Service::<Req>::poll_ready(&mut bal, &mut cx),
        Poll::Pending
    ));
    circuit.reset();
    assert_eq!(circuit.state(), CircuitState::Closed);
    let (tx, rx) = oneshot::channel();
    tx.send(true).unwrap();
    assert_eq!(bal.ready().await.unwrap().call(rx).await.unwrap(), "a");
}

#[tokio::test]
async fn response_futures_finish_on_another_task() {
    fn assert_send_static<T: Send + 'static>(_: &T) {}
    let list = FixedList::unweighted([("a", endpoint("a"))]);
    let mut bal = Builder::new(RoundRobin::new()).build(list).unwrap();
    let (tx, rx) = oneshot::channel();
    let fut = bal.ready().await.unwrap().call(rx);
    assert_send_static(&fut);
    let task = tokio::spawn(fut);
    tx.send(true).unwrap();
    assert_eq!(task.await.unwrap().unwrap(), "a");
    assert_eq!(bal.in_flight(), 0, "counted off where it finished");
}
