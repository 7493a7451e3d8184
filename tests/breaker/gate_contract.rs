//! tower's contract, pinned for `CircuitGate` (the breaker as readiness): `poll_ready` is
//! `Pending` while the circuit rejects and fails only with the inner service's own
//! error; a `call` the circuit rejects fails in its future; futures are `Send +
//! 'static`; dropping a future gives back what it held; each gate has its own circuit.

use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::Duration;

use palisade::breaker::{CircuitGate, CircuitState};
use palisade::error::BreakerOpen;
use tokio::sync::oneshot;
use tower::{Layer, Service, ServiceExt};

use super::contract::{assert_send_static, config, poll_ready, Boom, Inner};

#[tokio::test]
async fn gate_poll_ready_is_pending_while_open_and_fails_only_with_the_inner_error() {
    let inner = Inner::new();
    let (config, _) = config();
    let mut gate = CircuitGate::new(inner.clone(), &config);
    assert!(matches!(poll_ready(&mut gate), Poll::Ready(Ok(()))));
    inner.ready.store(false, Ordering::SeqCst);
    assert!(poll_ready(&mut gate).is_pending(), "the inner readiness");
    inner.ready.store(true, Ordering::SeqCst);
    gate.handle().force_open();
    assert!(
        poll_ready(&mut gate).is_pending(),
        "an open circuit is not ready, not an error"
    );
    gate.handle().reset();
    inner.dead.store(true, Ordering::SeqCst);
    match poll_ready(&mut gate) {
        Poll::Ready(Err(e)) => assert!(e.is::<Boom>(), "the inner error is boxed as is"),
        other => panic!("expected the inner error, got {other:?}"),
    }
}

#[tokio::test]
async fn gate_call_on_an_open_circuit_fails_in_its_future_without_calling_inner() {
    let inner = Inner::new();
    let (config, _) = config();
    let mut gate = CircuitGate::new(inner.clone(), &config);
    gate.handle().force_open();
    // A call made without readiness (a contract breach) must not panic either.
    let err = gate.call(None).await.unwrap_err();
    assert!(err.is::<BreakerOpen>(), "{err}");
    assert_eq!(inner.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn gate_response_futures_are_send_and_static_and_count_where_they_finish() {
    let (config, _) = config();
    let mut gate = CircuitGate::new(Inner::new(), &config);
    let fut = gate.ready().await.unwrap().call(None);
    assert_send_static(&fut);
    tokio::spawn(fut).await.unwrap().unwrap_err();
    assert_eq!(
        gate.handle().state(),
        CircuitState::Open,
        "the failure finished on another task trips the gate's circuit"
    );
}

#[tokio::test]
async fn dropping_an_unfinished_gate_call_counts_nothing_and_gives_its_probe_back() {
    let (config, hand) = config();
    let mut gate = CircuitGate::new(Inner::new(), &config);
    let handle = gate.handle();
    let (_tx, rx) = oneshot::channel();
    drop(gate.ready().await.unwrap().call(Some(rx)));
    assert_eq!(handle.metrics().window.counts.total(), 0);

    gate.ready().await.unwrap().call(None).await.unwrap_err();
    assert_eq!(handle.state(), CircuitState::Open);
    hand.advance(Duration::from_secs(1));
    let (_tx, rx) = oneshot::channel();
    let probe = gate.ready().await.unwrap().call(Some(rx));
    assert_eq!(handle.metrics().probes_in_flight, 1);
    drop(probe);
    assert_eq!(handle.metrics().probes_in_flight, 0);
    // The permit came back: the next probe is admitted, and its success closes.
    let (tx, rx) = oneshot::channel();
    let probe = gate.ready().await.unwrap().call(Some(rx));
    tx.send(true).unwrap();
    assert_eq!(probe.await.unwrap(), "ok");
    assert_eq!(handle.state(), CircuitState::Closed);
}

#[tokio::test]
async fn gates_of_one_gate_layer_each_have_their_own_circuit() {
    let (config, _) = config();
    let layer = config.gate_layer();
    let mut a = layer.layer(Inner::new());
    let mut b = layer.layer(Inner::new());
    a.ready().await.unwrap().call(None).await.unwrap_err();
    assert_eq!(a.handle().state(), CircuitState::Open);
    assert_eq!(b.handle().state(), CircuitState::Closed);
    assert!(matches!(poll_ready(&mut b), Poll::Ready(Ok(()))));
}
