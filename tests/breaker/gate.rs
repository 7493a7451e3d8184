//! `CircuitGate`: the circuit breaker as readiness, standalone.

use std::io;
use std::time::Duration;

use palisade::breaker::{BreakerConfig, CircuitGate, CircuitState};
use palisade::clock::Clock;
use tokio_test::{assert_pending, assert_ready_ok, task};
use tower::{service_fn, Service, ServiceExt};

fn config(probes: u32) -> BreakerConfig {
    BreakerConfig::builder()
        .clock(Clock::tokio())
        .consecutive_failures(1)
        .without_error_percentage()
        .sleep_window(Duration::from_secs(5))
        .half_open_probes(probes)
        .probes_to_close(probes)
        .build()
        .unwrap()
}

fn failing() -> impl Service<(), Response = (), Error = io::Error, Future: Send> + Send {
    service_fn(|_: ()| async { Err::<(), _>(io::Error::other("down")) })
}

#[tokio::test(start_paused = true)]
async fn gate_is_pending_while_open_and_wakes_its_task_when_the_period_ends() {
    let mut gate = CircuitGate::new(failing(), &config(1));
    assert!(gate.ready().await.unwrap().call(()).await.is_err());
    assert_eq!(gate.handle().state(), CircuitState::Open);
    let mut ready = task::spawn(());
    assert_pending!(ready.enter(|cx, _| gate.poll_ready(cx)));
    tokio::time::advance(Duration::from_millis(4_999)).await;
    assert!(!ready.is_woken());
    tokio::time::advance(Duration::from_millis(1)).await;
    assert!(
        ready.is_woken(),
        "the gate's timer fires at the end of the open period"
    );
    assert_ready_ok!(ready.enter(|cx, _| gate.poll_ready(cx)));
    assert_eq!(gate.handle().state(), CircuitState::HalfOpen);
    assert_eq!(
        gate.handle().metrics().probes_in_flight,
        1,
        "the permit is held"
    );
}

#[tokio::test(start_paused = true)]
async fn dropped_gate_gives_its_held_probe_permit_back() {
    let config = config(1);
    let mut gate = CircuitGate::new(failing(), &config);
    let _ = gate.ready().await.unwrap().call(()).await;
    tokio::time::advance(Duration::from_secs(5)).await;
    gate.ready().await.unwrap();
    let handle = gate.handle();
    assert_eq!(handle.metrics().probes_in_flight, 1);
    drop(gate);
    assert_eq!(handle.metrics().probes_in_flight, 0);
    assert!(handle.is_call_permitted());
}

#[tokio::test(start_paused = true)]
async fn half_open_gate_with_every_permit_taken_waits_for_the_probe_to_finish() {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let rx = std::sync::Arc::new(parking_lot::Mutex::new(Some(rx)));
    let fail = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let f2 = fail.clone();
    let svc = service_fn(move |_: ()| {
        let fail = f2.load(std::sync::atomic::Ordering::SeqCst);
        let rx = if fail { None } else { rx.lock().take() };
        async move {
            if fail {
                return Err(io::Error::other("down"));
            }
            if let Some(rx) = rx {
                let _ = rx.await;
            }
            Ok(())
        }
    });
    let mut gate = CircuitGate::new(svc, &config(1));
    let _ = gate.ready().await.unwrap().call(()).await;
    fail.store(false, std::sync::atomic::Ordering::SeqCst);
    tokio::time::advance(Duration::from_secs(5)).await;
    let probe = tokio::spawn(gate.ready().await.unwrap().call(()));
    let mut ready = task::spawn(());
    assert_pending!(ready.enter(|cx, _| gate.poll_ready(cx)));
    tx.send(()).unwrap();
    probe.await.unwrap().unwrap();
    assert!(ready.is_woken(), "the circuit's transition woke the gate");
    assert_eq!(gate.handle().state(), CircuitState::Closed);
    assert_ready_ok!(ready.enter(|cx, _| gate.poll_ready(cx)));
}

#[tokio::test]
async fn gate_layer_gives_each_service_its_own_circuit() {
    use tower::Layer;
    let layer = config(1).gate_layer();
    let mut a = layer.layer(failing());
    let b = layer.layer(failing());
    let _ = a.ready().await.unwrap().call(()).await;
    assert_eq!(a.handle().state(), CircuitState::Open);
    assert_eq!(b.handle().state(), CircuitState::Closed);
}
