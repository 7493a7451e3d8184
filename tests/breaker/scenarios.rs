//! Black-box scenarios of the circuit breaker, on a manual clock: every instant is
//! chosen by the test.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::StreamExt;
use palisade::breaker::{
    BreakerConfig, BreakerConfigBuilder, BreakerEvent, BreakerHandle, CircuitBreaker, CircuitState,
    TransitionReason,
};
use palisade::classify::Outcome;
use palisade::clock::{Clock, ManualClock};
use palisade::error::{BoxError, BreakerOpen, BulkheadFull, Elapsed};
use tokio::sync::oneshot;
use tower::{Service, ServiceExt};

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct Boom;

impl std::fmt::Display for Boom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("boom")
    }
}

impl std::error::Error for Boom {}

/// What the backend does with one request.
enum Step {
    Ok,
    Fail,
    /// Takes this long on the manual clock, then succeeds (`true`) or fails.
    Take(Duration, bool),
    /// Waits for the test to answer.
    Hold(oneshot::Receiver<bool>),
    /// Fails with this error.
    Error(BoxError),
}

/// The inner service: counts its calls and does what each request says.
#[derive(Clone)]
struct Backend {
    hand: ManualClock,
    calls: Arc<AtomicUsize>,
}

impl Service<Step> for Backend {
    type Response = ();
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, step: Step) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let hand = self.hand.clone();
        Box::pin(async move {
            let ok = match step {
                Step::Ok => true,
                Step::Fail => false,
                Step::Take(d, ok) => {
                    hand.advance(d);
                    ok
                }
                Step::Hold(rx) => rx.await.unwrap_or(false),
                Step::Error(e) => return Err(e),
            };
            if ok {
                Ok(())
            } else {
                Err(Boom.into())
            }
        })
    }
}

struct Rig {
    svc: CircuitBreaker<Backend>,
    handle: BreakerHandle,
    hand: ManualClock,
    calls: Arc<AtomicUsize>,
}

impl Rig {
    fn new(builder: BreakerConfigBuilder) -> Rig {
        let (clock, hand) = Clock::manual();
        let config = builder.clock(clock).jitter_seed(42).build().unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let backend = Backend {
            hand: hand.clone(),
            calls: calls.clone(),
        };
        let svc = CircuitBreaker::new(backend, &config);
        let handle = svc.handle();
        Rig {
            svc,
            handle,
            hand,
            calls,
        }
    }

    async fn call(&mut self, step: Step) -> Result<(), BoxError> {
        self.svc.ready().await?.call(step).await
    }

    async fn calls(&mut self, n: usize, ok: bool) {
        for _ in 0..n {
            let r = self.call(if ok { Step::Ok } else { Step::Fail }).await;
            assert_eq!(r.is_ok(), ok, "expected the backend's answer, got {r:?}");
        }
    }

    /// A call that the circuit must reject; returns the rejection.
    async fn rejected(&mut self) -> BreakerOpen {
        let before = self.calls.load(Ordering::SeqCst);
        let err = self.call(Step::Ok).await.unwrap_err();
        assert_eq!(
            self.calls.load(Ordering::SeqCst),
            before,
            "a rejected call must not reach the inner service"
        );
        *err.downcast_ref::<BreakerOpen>()
            .unwrap_or_else(|| panic!("expected BreakerOpen, got {err}"))
    }

    fn state(&self) -> CircuitState {
        self.handle.state()
    }

    fn inner_calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

fn consecutive(n: u32) -> BreakerConfigBuilder {
    BreakerConfig::builder()
        .without_error_percentage()
        .consecutive_failures(n)
        .sleep_window(5 * SEC)
}

/// Trips the rig's circuit through `n` consecutive failures.
async fn trip(rig: &mut Rig, n: usize) {
    rig.calls(n, false).await;
    assert_eq!(rig.state(), CircuitState::Open);
}

#[tokio::test]
async fn trips_at_the_request_volume_and_not_one_call_earlier() {
    let mut rig = Rig::new(
        BreakerConfig::builder()
            .minimum_requests(20)
            .error_percentage(50.0),
    );
    rig.calls(19, false).await;
    assert_eq!(
        rig.state(),
        CircuitState::Closed,
        "19 calls are below the volume"
    );
    rig.calls(1, false).await;
    assert_eq!(rig.state(), CircuitState::Open);
    assert_eq!(rig.inner_calls(), 20);
}

#[tokio::test]
async fn trips_at_the_error_percentage_and_not_one_call_earlier() {
    let mut rig = Rig::new(
        BreakerConfig::builder()
            .minimum_requests(10)
            .error_percentage(50.0),
    );
    rig.calls(20, true).await;
    rig.calls(19, false).await;
    assert_eq!(rig.state(), CircuitState::Closed, "19 of 39 is below 50 %");
    rig.calls(1, false).await;
    assert_eq!(rig.state(), CircuitState::Open, "20 of 40 is 50 %");
    let mut events = Vec::new();
    let mut stream = rig.handle.events();
    rig.hand.advance(5 * SEC);
    rig.call(Step::Ok).await.unwrap();
    while let Some(e) = stream.try_next() {
        events.push(e);
    }
    assert_eq!(
        events,
        [
            BreakerEvent::StateChanged {
                from: CircuitState::Open,
                to: CircuitState::HalfOpen,
                reason: TransitionReason::OpenPeriodElapsed
            },
            BreakerEvent::StateChanged {
                from: CircuitState::HalfOpen,
                to: CircuitState::Closed,
                reason: TransitionReason::ProbesSucceeded
            },
        ]
    );
}

#[tokio::test]
async fn timeouts_and_bulkhead_rejections_below_count_as_errors_of_their_kind() {
    let mut rig = Rig::new(
        BreakerConfig::builder()
            .minimum_requests(4)
            .error_percentage(75.0),
    );
    rig.call(Step::Ok).await.unwrap();
    let e = rig
        .call(Step::Error(Elapsed::new(SEC).into()))
        .await
        .unwrap_err();
    assert!(e.is::<Elapsed>(), "the inner error passes through");
    rig.call(Step::Error(BulkheadFull::new().into()))
        .await
        .unwrap_err();
    let counts = rig.handle.metrics().window.counts;
    assert_eq!(
        (counts.successes, counts.timeouts, counts.rejections),
        (1, 1, 1)
    );
    assert_eq!(rig.state(), CircuitState::Closed);
    rig.calls(1, false).await;
    assert_eq!(
        rig.state(),
        CircuitState::Open,
        "3 errors of 4 calls reach 75 %"
    );
}

fn slow_calls(minimum: u32) -> BreakerConfigBuilder {
    BreakerConfig::builder()
        .without_error_percentage()
        .minimum_requests(minimum)
        .slow_call_threshold(100 * MS)
        .slow_call_percentage(50.0)
}

#[tokio::test]
async fn slow_calls_trip_at_the_volume_and_not_one_call_earlier() {
    let mut rig = Rig::new(slow_calls(4));
    rig.call(Step::Take(10 * MS, true)).await.unwrap();
    rig.call(Step::Take(99 * MS, true)).await.unwrap();
    rig.call(Step::Take(100 * MS, true)).await.unwrap(); // slow: at the threshold
    assert_eq!(
        rig.state(),
        CircuitState::Closed,
        "3 calls are below the volume"
    );
    rig.call(Step::Take(250 * MS, true)).await.unwrap();
    assert_eq!(rig.state(), CircuitState::Open, "2 slow of 4 is 50 %");
    assert_eq!(rig.handle.metrics().window.counts.slow_calls, 2);
}

#[tokio::test]
async fn slow_calls_trip_at_their_percentage_and_not_one_call_earlier() {
    let mut rig = Rig::new(slow_calls(4));
    for _ in 0..4 {
        rig.call(Step::Take(MS, true)).await.unwrap();
    }
    for _ in 0..3 {
        rig.call(Step::Take(SEC, true)).await.unwrap();
    }
    assert_eq!(
        rig.state(),
        CircuitState::Closed,
        "3 slow of 7 is below 50 %"
    );
    rig.call(Step::Take(SEC, true)).await.unwrap();
    assert_eq!(rig.state(), CircuitState::Open, "4 slow of 8 is 50 %");
}

#[tokio::test]
async fn consecutive_failures_trip_and_a_success_starts_the_run_over() {
    let mut rig = Rig::new(consecutive(3));
    rig.calls(2, false).await;
    rig.calls(1, true).await;
    rig.calls(2, false).await;
    assert_eq!(rig.state(), CircuitState::Closed);
    assert_eq!(rig.handle.metrics().consecutive_failures, 2);
    rig.calls(1, false).await;
    assert_eq!(rig.state(), CircuitState::Open);
}

#[tokio::test]
async fn open_breaker_rejects_without_calling_inner_and_tells_when_to_retry() {
    let mut rig = Rig::new(consecutive(1));
    trip(&mut rig, 1).await;
    rig.hand.advance(2 * SEC);
    let open = rig.rejected().await;
    assert_eq!(open.retry_after(), Some(3 * SEC));
    assert!(!open.is_forced());
    rig.hand.advance(3 * SEC - Duration::from_nanos(1));
    assert_eq!(
        rig.rejected().await.retry_after(),
        Some(Duration::from_nanos(1))
    );
    let m = rig.handle.metrics();
    assert_eq!(m.window.counts.short_circuits, 2);
    assert_eq!(m.retry_after, Some(Duration::from_nanos(1)));
    assert_eq!(rig.inner_calls(), 1);
}

#[tokio::test]
async fn half_open_admits_exactly_n_of_100_concurrent_callers() {
    let mut rig = Rig::new(consecutive(1).half_open_probes(3).probes_to_close(3));
    trip(&mut rig, 1).await;
    rig.hand.advance(5 * SEC);
    let before = rig.inner_calls();
    let mut answers = Vec::new();
    let mut pending = Vec::new();
    let mut rejected = 0;
    // 100 calls made before any completes.
    for _ in 0..100 {
        let (tx, rx) = oneshot::channel();
        let fut = rig.svc.ready().await.unwrap().call(Step::Hold(rx));
        answers.push(tx);
        pending.push(fut);
    }
    assert_eq!(
        rig.inner_calls() - before,
        3,
        "exactly 3 probes reach the inner service"
    );
    assert_eq!(rig.state(), CircuitState::HalfOpen);
    assert_eq!(rig.handle.metrics().probes_in_flight, 3);
    for tx in answers {
        let _ = tx.send(true);
    }
    for fut in pending {
        if let Err(e) = fut.await {
            let open = e.downcast_ref::<BreakerOpen>().unwrap();
            assert_eq!(open.retry_after(), Some(Duration::ZERO));
            rejected += 1;
        }
    }
    assert_eq!(rejected, 97);
    assert_eq!(
        rig.state(),
        CircuitState::Closed,
        "3 successful probes close it"
    );
}

#[tokio::test]
async fn is_call_permitted_tells_without_admitting() {
    let mut rig = Rig::new(consecutive(1));
    assert!(rig.handle.is_call_permitted());
    trip(&mut rig, 1).await;
    assert!(!rig.handle.is_call_permitted());
    rig.hand.advance(5 * SEC);
    assert!(
        rig.handle.is_call_permitted(),
        "the next call would be a probe"
    );
    assert_eq!(rig.state(), CircuitState::Open, "asking changes nothing");
    let (_tx, rx) = oneshot::channel();
    let _probe = rig.svc.ready().await.unwrap().call(Step::Hold(rx));
    assert!(!rig.handle.is_call_permitted(), "the only permit is taken");
    rig.handle.force_open();
    assert!(!rig.handle.is_call_permitted());
    rig.handle.metrics_only();
    assert!(rig.handle.is_call_permitted());
}

#[tokio::test]
async fn successful_probes_close_and_clear_the_statistics() {
    let mut rig = Rig::new(consecutive(2).probes_to_close(2));
    trip(&mut rig, 2).await;
    rig.hand.advance(5 * SEC);
    rig.calls(1, true).await;
    assert_eq!(rig.state(), CircuitState::HalfOpen, "one probe of two");
    rig.calls(1, true).await;
    assert_eq!(rig.state(), CircuitState::Closed);
    let m = rig.handle.metrics();
    assert_eq!(m.window.counts.failures, 0, "the statistics start over");
    assert_eq!((m.trips, m.total_trips), (0, 1));
}

#[tokio::test]
async fn failed_probe_reopens_the_circuit() {
    let mut rig = Rig::new(consecutive(1));
    trip(&mut rig, 1).await;
    rig.hand.advance(5 * SEC);
    rig.calls(1, false).await;
    assert_eq!(rig.state(), CircuitState::Open);
    assert_eq!(rig.rejected().await.retry_after(), Some(5 * SEC));
    assert_eq!(rig.handle.metrics().trips, 2);
}

#[tokio::test]
async fn open_period_backs_off_exponentially_up_to_the_cap_and_resets_on_close() {
    let mut rig = Rig::new(consecutive(1).exponential_backoff(SEC, 8 * SEC));
    trip(&mut rig, 1).await;
    let mut periods = Vec::new();
    for _ in 0..5 {
        let period = rig.rejected().await.retry_after().unwrap();
        periods.push(period.as_secs());
        rig.hand.advance(period);
        rig.calls(1, false).await; // the probe fails
    }
    assert_eq!(periods, [1, 2, 4, 8, 8]);
    rig.hand.advance(8 * SEC);
    rig.calls(1, true).await;
    assert_eq!(rig.state(), CircuitState::Closed);
    trip(&mut rig, 1).await;
    assert_eq!(
        rig.rejected().await.retry_after(),
        Some(SEC),
        "a close resets the backoff"
    );
}

#[tokio::test]
async fn backoff_jitter_stays_within_its_bounds() {
    let mut rig = Rig::new(
        consecutive(1)
            .exponential_backoff(SEC, 16 * SEC)
            .backoff_multiplier(2.0)
            .backoff_jitter(0.5),
    );
    trip(&mut rig, 1).await;
    let mut distinct = std::collections::BTreeSet::new();
    for trips in 1..=6u32 {
        let nominal = SEC * 2u32.pow(trips - 1).min(16);
        let period = rig.rejected().await.retry_after().unwrap();
        assert!(
            period <= nominal && period >= nominal / 2,
            "{period:?} vs {nominal:?}"
        );
        distinct.insert(period.as_nanos() * 16 / nominal.as_nanos());
        rig.hand.advance(period);
        rig.calls(1, false).await;
    }
    assert!(distinct.len() > 1, "jitter draws differ");
}

#[tokio::test]
async fn custom_open_duration_gets_the_trip_count() {
    let mut rig = Rig::new(consecutive(1).open_duration(|trips| 100 * MS * trips));
    trip(&mut rig, 1).await;
    assert_eq!(rig.rejected().await.retry_after(), Some(100 * MS));
    rig.hand.advance(100 * MS);
    rig.calls(1, false).await;
    assert_eq!(rig.rejected().await.retry_after(), Some(200 * MS));
}

#[tokio::test]
async fn dropped_probe_does_not_wedge_the_breaker() {
    let mut rig = Rig::new(consecutive(1));
    trip(&mut rig, 1).await;
    rig.hand.advance(5 * SEC);
    let (_tx, rx) = oneshot::channel();
    let probe = rig.svc.ready().await.unwrap().call(Step::Hold(rx));
    assert_eq!(rig.rejected().await.retry_after(), Some(Duration::ZERO));
    drop(probe);
    rig.calls(1, true).await; // admitted as the new probe
    assert_eq!(rig.state(), CircuitState::Closed);
}

#[tokio::test]
async fn probe_exceeding_max_wait_frees_its_permit_and_its_late_result_is_ignored() {
    let mut rig = Rig::new(consecutive(1).probe_max_wait(2 * SEC));
    trip(&mut rig, 1).await;
    rig.hand.advance(5 * SEC);
    let (hung_tx, rx) = oneshot::channel();
    let hung = rig.svc.ready().await.unwrap().call(Step::Hold(rx));
    rig.hand.advance(2 * SEC - Duration::from_nanos(1));
    rig.rejected().await;
    rig.hand.advance(Duration::from_nanos(1));
    let (next_tx, rx) = oneshot::channel();
    let next = rig.svc.ready().await.unwrap().call(Step::Hold(rx));
    assert_eq!(
        rig.inner_calls(),
        3,
        "the next caller took the expired permit"
    );
    // The hung probe fails late: it no longer counts.
    hung_tx.send(false).unwrap();
    assert!(hung.await.is_err());
    assert_eq!(rig.state(), CircuitState::HalfOpen);
    next_tx.send(true).unwrap();
    next.await.unwrap();
    assert_eq!(rig.state(), CircuitState::Closed);
}

#[tokio::test]
async fn slow_success_cannot_close_a_circuit_that_opened_after_it_started() {
    let mut rig = Rig::new(consecutive(1));
    let (slow_tx, rx) = oneshot::channel();
    let slow = rig.svc.ready().await.unwrap().call(Step::Hold(rx));
    trip(&mut rig, 1).await;
    rig.hand.advance(5 * SEC);
    let (probe_tx, rx) = oneshot::channel();
    let probe = rig.svc.ready().await.unwrap().call(Step::Hold(rx));
    slow_tx.send(true).unwrap();
    slow.await.unwrap();
    assert_eq!(
        rig.state(),
        CircuitState::HalfOpen,
        "the stale success is ignored"
    );
    probe_tx.send(false).unwrap();
    probe.await.unwrap_err();
    assert_eq!(rig.state(), CircuitState::Open);
}

#[tokio::test]
async fn failure_admitted_before_a_reset_is_neither_counted_nor_trips() {
    let mut rig = Rig::new(consecutive(1));
    let (tx, rx) = oneshot::channel();
    let stale = rig.svc.ready().await.unwrap().call(Step::Hold(rx));
    rig.handle.reset();
    tx.send(false).unwrap();
    stale.await.unwrap_err();
    assert_eq!(rig.state(), CircuitState::Closed);
    assert_eq!(rig.handle.metrics().window.counts.failures, 0);
}

#[tokio::test]
async fn forced_open_rejects_everything_without_a_retry_time() {
    let mut rig = Rig::new(BreakerConfig::builder());
    rig.handle.force_open();
    let open = rig.rejected().await;
    assert!(open.is_forced());
    assert_eq!(open.retry_after(), None);
    rig.hand.advance(3600 * SEC);
    assert!(
        rig.rejected().await.is_forced(),
        "no open period ends a forced open"
    );
    rig.handle.reset();
    rig.calls(1, true).await;
}

#[tokio::test]
async fn forced_closed_admits_everything_and_counts_nothing() {
    let mut rig = Rig::new(consecutive(1));
    rig.handle.force_closed();
    rig.calls(50, false).await;
    assert_eq!(rig.state(), CircuitState::ForcedClosed);
    assert_eq!(rig.handle.metrics().window.counts.total(), 0);
}

#[tokio::test]
async fn metrics_only_never_rejects_but_records() {
    let mut rig = Rig::new(consecutive(3).minimum_requests(1).error_percentage(1.0));
    rig.handle.metrics_only();
    rig.calls(50, false).await;
    rig.calls(5, true).await;
    let m = rig.handle.metrics();
    assert_eq!(m.state, CircuitState::MetricsOnly);
    assert_eq!(
        (m.window.counts.failures, m.window.counts.successes),
        (50, 5)
    );
    assert_eq!(m.total_trips, 0);
    assert_eq!(rig.inner_calls(), 55);
}

#[tokio::test]
async fn reset_closes_and_clears_statistics_and_backoff() {
    let mut rig = Rig::new(consecutive(1).exponential_backoff(SEC, 60 * SEC));
    trip(&mut rig, 1).await;
    rig.hand.advance(SEC);
    rig.calls(1, false).await; // a failed probe: trips = 2
    rig.handle.reset();
    let m = rig.handle.metrics();
    assert_eq!(m.state, CircuitState::Closed);
    assert_eq!(m.window.counts, Default::default());
    assert_eq!((m.trips, m.total_trips, m.consecutive_failures), (0, 0, 0));
    trip(&mut rig, 1).await;
    assert_eq!(rig.rejected().await.retry_after(), Some(SEC));
}

#[tokio::test]
async fn events_arrive_in_order_through_the_callback_and_the_stream() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let mut rig = Rig::new(consecutive(1).on_event(move |e| log.lock().unwrap().push(*e)));
    let mut stream = rig.handle.events();
    trip(&mut rig, 1).await;
    rig.rejected().await;
    rig.hand.advance(5 * SEC);
    rig.calls(1, true).await;
    rig.handle.force_open();
    rig.handle.reset();
    let expected = vec![
        BreakerEvent::StateChanged {
            from: CircuitState::Closed,
            to: CircuitState::Open,
            reason: TransitionReason::ConsecutiveFailures,
        },
        BreakerEvent::Rejected {
            state: CircuitState::Open,
            retry_after: Some(5 * SEC),
        },
        BreakerEvent::StateChanged {
            from: CircuitState::Open,
            to: CircuitState::HalfOpen,
            reason: TransitionReason::OpenPeriodElapsed,
        },
        BreakerEvent::StateChanged {
            from: CircuitState::HalfOpen,
            to: CircuitState::Closed,
            reason: TransitionReason::ProbesSucceeded,
        },
        BreakerEvent::StateChanged {
            from: CircuitState::Closed,
            to: CircuitState::ForcedOpen,
            reason: TransitionReason::Forced,
        },
        BreakerEvent::StateChanged {
            from: CircuitState::ForcedOpen,
            to: CircuitState::Closed,
            reason: TransitionReason::Reset,
        },
    ];
    assert_eq!(*seen.lock().unwrap(), expected);
    let streamed: Vec<_> = (&mut stream).take(expected.len()).collect().await;
    assert_eq!(streamed, expected);
    assert_eq!(stream.dropped(), 0);
}

#[tokio::test]
async fn callback_may_steer_the_breaker_it_observes() {
    let handle_slot: Arc<std::sync::OnceLock<BreakerHandle>> = Arc::default();
    let slot = handle_slot.clone();
    let mut rig = Rig::new(consecutive(1).on_event(move |e| {
        if let BreakerEvent::StateChanged {
            to: CircuitState::Open,
            ..
        } = e
        {
            // Escalate every trip to a forced open: reentrant, must not deadlock.
            slot.get().unwrap().force_open();
        }
    }));
    handle_slot.set(rig.handle.clone()).unwrap();
    trip_to(&mut rig, CircuitState::ForcedOpen).await;
}

async fn trip_to(rig: &mut Rig, state: CircuitState) {
    rig.calls(1, false).await;
    assert_eq!(rig.state(), state);
}

/// An HTTP-like backend for the classifier test: the request is the status it answers.
fn status_service(
    calls: Arc<AtomicUsize>,
) -> impl Service<u16, Response = u16, Error = Boom, Future = std::future::Ready<Result<u16, Boom>>>
       + Clone {
    tower::service_fn(move |status: u16| {
        calls.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Ok(status))
    })
}

#[tokio::test]
async fn custom_classifier_ignores_client_errors_and_fails_server_errors() {
    let (clock, _hand) = Clock::manual();
    let calls = Arc::new(AtomicUsize::new(0));
    let config = BreakerConfig::builder()
        .clock(clock)
        .without_error_percentage()
        .consecutive_failures(3)
        .classify(|r: &Result<u16, Boom>| match r {
            Ok(s) if *s >= 500 => Outcome::Failure,
            Ok(s) if *s >= 400 => Outcome::Ignored,
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Failure,
        })
        .build()
        .unwrap();
    let mut svc = CircuitBreaker::new(status_service(calls.clone()), &config);
    let handle = svc.handle();
    for _ in 0..100 {
        assert_eq!(svc.ready().await.unwrap().call(404).await.unwrap(), 404);
    }
    assert_eq!(
        handle.metrics().window.counts.total(),
        0,
        "4xx is not counted"
    );
    for _ in 0..2 {
        svc.ready().await.unwrap().call(503).await.unwrap();
        svc.ready().await.unwrap().call(404).await.unwrap();
    }
    assert_eq!(handle.state(), CircuitState::Closed);
    assert_eq!(
        handle.metrics().consecutive_failures,
        2,
        "ignored calls break no run"
    );
    svc.ready().await.unwrap().call(503).await.unwrap();
    assert_eq!(handle.state(), CircuitState::Open);
    let err = svc.ready().await.unwrap().call(200).await.unwrap_err();
    assert!(err.is::<BreakerOpen>());
    assert_eq!(calls.load(Ordering::SeqCst), 105);
}

#[tokio::test(start_paused = true)]
async fn tokio_clock_on_a_paused_runtime_drives_the_open_period() {
    let config = BreakerConfig::builder()
        .clock(Clock::tokio())
        .without_error_percentage()
        .consecutive_failures(1)
        .sleep_window(10 * SEC)
        .build()
        .unwrap();
    let mut svc = CircuitBreaker::new(
        tower::service_fn(|ok: bool| async move {
            tokio::time::sleep(100 * MS).await;
            if ok {
                Ok(())
            } else {
                Err(Boom)
            }
        }),
        &config,
    );
    let handle = svc.handle();
    svc.ready().await.unwrap().call(false).await.unwrap_err();
    assert_eq!(handle.state(), CircuitState::Open);
    tokio::time::advance(4 * SEC).await;
    let err = svc.ready().await.unwrap().call(true).await.unwrap_err();
    assert_eq!(
        err.downcast_ref::<BreakerOpen>().unwrap().retry_after(),
        Some(6 * SEC)
    );
    tokio::time::advance(6 * SEC).await;
    svc.ready().await.unwrap().call(true).await.unwrap();
    assert_eq!(handle.state(), CircuitState::Closed);
    assert_eq!(handle.metrics().window.latency.count, 0, "cleared on close");
}

#[tokio::test]
async fn lagging_event_stream_keeps_the_newest_and_counts_what_it_lost() {
    let mut rig = Rig::new(consecutive(1).event_buffer(4));
    let mut stream = rig.handle.events();
    trip(&mut rig, 1).await;
    for _ in 0..10 {
        rig.rejected().await;
    }
    assert_eq!(stream.dropped(), 7, "11 events into a buffer of 4");
    let kept: Vec<_> = std::iter::from_fn(|| stream.try_next()).collect();
    assert_eq!(kept.len(), 4);
    assert!(kept.iter().all(|e| matches!(
        e,
        BreakerEvent::Rejected {
            state: CircuitState::Open,
            ..
        }
    )));
    // The stream keeps going after a lag.
    rig.handle.reset();
    assert!(matches!(
        stream.next().await,
        Some(BreakerEvent::StateChanged {
            reason: TransitionReason::Reset,
            ..
        })
    ));
}
