//! A panicking inner future is a failure: counted in the window and by the trip rule,
//! a failed probe when it is one, through the breaker, the gate, the balancer's endpoint
//! breakers and the Hystrix preset. On tokio's paused clock; each call runs in its own
//! task, so the panic is caught by tokio as in a server.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use palisade::balance::{Builder, RoundRobin};
use palisade::breaker::{BreakerConfig, BreakerConfigBuilder, CircuitGate, CircuitState};
use palisade::clock::Clock;
use palisade::discover::ChannelSet;
use palisade::error::BreakerOpen;
use palisade::preset::Hystrix;
use palisade::BoxError;
use tower::{Layer, Service, ServiceExt};

const SEC: Duration = Duration::from_secs(1);
const PANIC: &str = "the inner future panicked";

/// Answers `Ok` to `false`; to `true` it fails, with an error or (`panics`) by
/// panicking, after one yield (so the panic comes from a later poll than the first).
#[derive(Clone, Copy)]
struct Backend {
    panics: bool,
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>;

impl Service<bool> for Backend {
    type Response = ();
    type Error = BoxError;
    type Future = BoxFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, fail: bool) -> BoxFuture {
        let panics = self.panics;
        Box::pin(async move {
            tokio::task::yield_now().await;
            match (fail, panics) {
                (false, _) => Ok(()),
                (true, false) => Err("down".into()),
                (true, true) => panic!("{PANIC}"),
            }
        })
    }
}

/// What became of one call.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Ok,
    /// An error or a panic from the inner service.
    Failed,
    Rejected,
}

/// Makes one call in a task of its own and says what became of it. A panic must be
/// the inner future's own, unwound to tokio.
async fn call<S, R>(svc: &mut S, req: R) -> Seen
where
    S: Service<R, Error = BoxError>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
{
    let future = svc.ready().await.unwrap().call(req);
    match tokio::spawn(future).await {
        Ok(Ok(_)) => Seen::Ok,
        Ok(Err(e)) if e.is::<BreakerOpen>() => Seen::Rejected,
        Ok(Err(_)) => Seen::Failed,
        Err(join) => {
            let payload = join.into_panic();
            let message = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied());
            assert_eq!(message, Some(PANIC), "the inner future's own panic goes on");
            Seen::Failed
        }
    }
}

fn builder() -> BreakerConfigBuilder {
    BreakerConfig::builder()
        .clock(Clock::tokio())
        .sleep_window(5 * SEC)
}

/// Hystrix's rule: 50 % errors over at least 20 calls.
fn volume_rule() -> BreakerConfig {
    builder()
        .minimum_requests(20)
        .error_percentage(50.0)
        .build()
        .unwrap()
}

fn consecutive(n: u32) -> BreakerConfigBuilder {
    builder().without_error_percentage().consecutive_failures(n)
}

/// The mix and more: runs the same sequence through a breaker whose inner
/// service fails with errors and one whose inner service panics instead, with time
/// passing so that the circuits open, probe (some probes fail) and close, and compares
/// them after every call.
#[tokio::test(start_paused = true)]
async fn n_panicking_calls_trip_the_breaker_exactly_as_n_errors_do() {
    let config = volume_rule();
    let mut erring = config.layer().layer(Backend { panics: false });
    let mut panicking = config.layer().layer(Backend { panics: true });
    let (e, p) = (erring.handle(), panicking.handle());
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut failed_calls = 0;
    for i in 0..600 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        // Failure rates of 25 % and 75 % in turns of 100 calls.
        let rate = if (i / 100) % 2 == 0 { 25 } else { 75 };
        let fail = x % 100 < rate;
        let seen = call(&mut erring, fail).await;
        assert_eq!(call(&mut panicking, fail).await, seen, "call {i}");
        failed_calls += usize::from(seen == Seen::Failed);
        let (em, pm) = (e.metrics(), p.metrics());
        assert_eq!(pm.state, em.state, "call {i}");
        assert_eq!(pm.window.counts, em.window.counts, "call {i}");
        assert_eq!(pm.consecutive_failures, em.consecutive_failures, "call {i}");
        assert_eq!(pm.total_trips, em.total_trips, "call {i}");
        tokio::time::advance(Duration::from_millis(100)).await;
    }
    let trips = p.metrics().total_trips;
    assert!(trips >= 5, "the sequence trips the circuit often: {trips}");
    assert!(failed_calls >= 100, "and panics often: {failed_calls}");
}

#[tokio::test(start_paused = true)]
async fn twenty_panicking_calls_open_a_hystrix_volume_circuit_at_the_twentieth() {
    let config = volume_rule();
    let mut svc = config.layer().layer(Backend { panics: true });
    let handle = svc.handle();
    for _ in 0..19 {
        assert_eq!(call(&mut svc, true).await, Seen::Failed);
    }
    assert_eq!(handle.metrics().window.counts.failures, 19);
    assert_eq!(handle.state(), CircuitState::Closed);
    assert_eq!(call(&mut svc, true).await, Seen::Failed);
    assert_eq!(handle.state(), CircuitState::Open);
    assert_eq!(call(&mut svc, false).await, Seen::Rejected);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_probe_reopens_the_circuit_and_gives_its_permit_back() {
    let config = consecutive(1).half_open_probes(1).build().unwrap();
    let mut svc = config.layer().layer(Backend { panics: true });
    let handle = svc.handle();
    assert_eq!(call(&mut svc, true).await, Seen::Failed);
    assert_eq!(handle.state(), CircuitState::Open);
    tokio::time::advance(5 * SEC).await;
    assert_eq!(call(&mut svc, true).await, Seen::Failed, "the probe panics");
    let m = handle.metrics();
    assert_eq!(m.state, CircuitState::Open, "a failed probe reopens");
    assert_eq!(m.total_trips, 2);
    assert_eq!(m.probes_in_flight, 0);
    tokio::time::advance(5 * SEC).await;
    assert_eq!(
        call(&mut svc, false).await,
        Seen::Ok,
        "the next probe is admitted"
    );
    assert_eq!(handle.state(), CircuitState::Closed);
}

/// The count runs while the panic unwinds; an event callback that panics then must not
/// turn the unwind into an abort, and the original panic reaches tokio.
#[tokio::test(start_paused = true)]
async fn an_event_callback_panicking_while_a_panic_is_counted_does_not_abort() {
    let config = consecutive(1)
        .on_event(|_| panic!("the callback panicked"))
        .build()
        .unwrap();
    let mut svc = config.layer().layer(Backend { panics: true });
    let handle = svc.handle();
    assert_eq!(call(&mut svc, true).await, Seen::Failed);
    assert_eq!(handle.state(), CircuitState::Open);
}

/// The call names its circuit by id: once every owner is gone, its panic counts
/// nowhere, not in a circuit that took the freed slot.
#[tokio::test(start_paused = true)]
async fn a_call_panicking_after_its_circuit_is_gone_counts_nowhere() {
    let go = std::sync::Arc::new(tokio::sync::Notify::new());
    let wait = go.clone();
    let inner = tower::service_fn(move |_: ()| {
        let wait = wait.clone();
        async move {
            wait.notified().await;
            panic!("{PANIC}");
            #[allow(unreachable_code)]
            Ok::<(), BoxError>(())
        }
    });
    let config = consecutive(1).build().unwrap();
    let mut svc = config.layer().layer(inner);
    let future = svc.ready().await.unwrap().call(());
    let task = tokio::spawn(future);
    tokio::task::yield_now().await;
    drop(svc);
    let mut next = config.layer().layer(Backend { panics: false });
    let next_handle = next.handle();
    go.notify_one();
    let payload = task.await.unwrap_err().into_panic();
    assert_eq!(
        payload.downcast_ref::<String>().map(String::as_str),
        Some(PANIC)
    );
    assert_eq!(next_handle.metrics().window.counts.total(), 0);
    assert_eq!(call(&mut next, false).await, Seen::Ok);
    assert_eq!(next_handle.metrics().window.counts.successes, 1);
}

#[tokio::test(start_paused = true)]
async fn a_gate_counts_panics_as_failures() {
    let config = consecutive(3).build().unwrap();
    let mut gate = CircuitGate::new(Backend { panics: true }, &config);
    for _ in 0..3 {
        assert_eq!(call(&mut gate, true).await, Seen::Failed);
    }
    assert_eq!(gate.handle().state(), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn a_balancer_endpoint_breaker_counts_panics_as_failures() {
    let config = consecutive(3).build().unwrap();
    let (set, endpoints) = ChannelSet::new();
    let mut balance = Builder::new(RoundRobin::new())
        .no_endpoint_deadline(SEC)
        .endpoint_breaker(config)
        .build_weighted(set)
        .unwrap();
    endpoints
        .insert("panics", Backend { panics: true }, 1)
        .unwrap();
    for _ in 0..3 {
        assert_eq!(call(&mut balance, true).await, Seen::Failed);
    }
    let breaker = balance.endpoint_breaker(&"panics").unwrap();
    assert_eq!(breaker.state(), CircuitState::Open);
}

/// Breaker over bulkhead over timeout: the bulkhead gives its permit back and the
/// breaker counts the failure, as Hystrix counts a command that threw.
#[tokio::test(start_paused = true)]
async fn the_hystrix_preset_counts_panics_and_frees_the_bulkhead() {
    let layer = Hystrix::builder()
        .max_concurrent_requests(2)
        .breaker(|b| b.clock(Clock::tokio()))
        .build()
        .unwrap()
        .layer();
    let (breaker, bulkhead) = (layer.breaker(), layer.bulkhead());
    let mut svc = tower::ServiceBuilder::new()
        .layer(layer)
        .service(Backend { panics: true });
    for _ in 0..19 {
        assert_eq!(call(&mut svc, true).await, Seen::Failed);
    }
    assert_eq!(bulkhead.in_use(), 0);
    assert_eq!(breaker.metrics().window.counts.failures, 19);
    assert_eq!(call(&mut svc, true).await, Seen::Failed);
    assert_eq!(breaker.state(), CircuitState::Open);
}
