//! [`CircuitGate`]: the circuit breaker as *readiness*, for one endpoint behind a load
//! balancer.
//!
//! [`CircuitBreaker`](super::CircuitBreaker) keeps `poll_ready` honest for standalone
//! use and rejects from `call`. In front of one endpoint of a balancer that is the
//! wrong answer: the request should go to another endpoint, not fail. A gate therefore
//! says "not ready" instead:
//!
//! - **Closed** (and forced closed, metrics only): `poll_ready` forwards to the inner
//!   service; `call` admits exactly as the breaker does.
//! - **Open**: `poll_ready` is `Pending` and arms a tokio timer for the end of the open
//!   period, so the task is woken then (a balancer passes a waker per endpoint, so only
//!   this endpoint is polled again).
//! - **HalfOpen**: `poll_ready` is `Ready` only if it could take a probe permit, which it
//!   holds for the next `call` (and gives back if the gate is dropped first). With every
//!   permit taken it is `Pending` until a permit comes back or expires.
//! - **ForcedOpen**: `Pending` until the handle changes the state.
//!
//! While it waits, the gate's task is also registered with the circuit, which wakes it
//! on every transition and whenever a probe permit is given back.
//!
//! `poll_ready` never fails because the circuit is open. Outcomes are classified and
//! recorded exactly as by the breaker (same classifier, generations, window, events).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};
use tower_layer::Layer;
use tower_service::Service;

use super::config::BreakerConfig;
use super::future::{count_panic, window_event, ResponseFuture};
use super::handle::BreakerHandle;
use super::shared::{Admission, GateCheck, OwnedCircuit, SharedCircuit};
use crate::classify::{ErrIsFailure, Outcome};
use crate::error::{BoxError, BreakerOpen};

/// How many timer firings one `poll_ready` follows before it settles for a short retry
/// (only reached when the circuit's clock and tokio's timer disagree).
const TIMER_ROUNDS: usize = 4;

/// The readiness state of one gate: the circuit, the probe permit held for the next
/// call, and the timer for the end of the open period. Shared by [`CircuitGate`] and
/// the balancer's per-endpoint breakers.
pub(crate) struct GateCore {
    shared: Arc<OwnedCircuit>,
    reserved: Option<Admission>,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl GateCore {
    pub(crate) fn new<C>(config: &BreakerConfig<C>) -> Self {
        GateCore {
            shared: OwnedCircuit::new(SharedCircuit::new(config)),
            reserved: None,
            sleep: None,
        }
    }

    pub(crate) fn shared(&self) -> &Arc<OwnedCircuit> {
        &self.shared
    }

    pub(crate) fn handle(&self) -> BreakerHandle {
        BreakerHandle::new(self.shared.clone())
    }

    /// `Ready` when the next call would be admitted; `Pending` (with a wake-up arranged)
    /// while it would be rejected.
    pub(crate) fn poll_admissible(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if let Some(admission) = &self.reserved {
            if self.shared.is_current(admission) {
                return Poll::Ready(());
            }
            self.release_reserved();
        }
        // The task is registered only once the circuit says "wait", and the circuit is
        // checked again after that, so a transition in between is not missed; a
        // closed circuit costs no registration.
        let mut registered = false;
        for _ in 0..=TIMER_ROUNDS {
            let until = match self.shared.check_gate() {
                GateCheck::Pass => return Poll::Ready(()),
                GateCheck::Probe(admission) => {
                    self.reserved = Some(admission);
                    return Poll::Ready(());
                }
                _ if !registered => {
                    self.shared.register_gate_waker(cx.waker());
                    registered = true;
                    continue;
                }
                GateCheck::WaitForChange => return Poll::Pending,
                GateCheck::WaitUntil(until) => until,
            };
            let deadline = self.shared.clock().to_tokio_instant(until);
            if self.sleep_until(deadline).poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
        let retry = Instant::now() + Duration::from_millis(1);
        let _ = self.sleep_until(retry).poll(cx);
        Poll::Pending
    }

    fn sleep_until(&mut self, deadline: Instant) -> Pin<&mut Sleep> {
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if sleep.deadline() != deadline {
            sleep.as_mut().reset(deadline);
        }
        sleep.as_mut()
    }

    /// The admission of a call made now: the probe permit held since `poll_ready` if its
    /// half-open period is still current, or a fresh admission as the breaker makes it.
    #[inline]
    pub(crate) fn admit(&mut self) -> Result<Admission, BreakerOpen> {
        if let Some(admission) = self.reserved.take() {
            if let Some(admission) = self.shared.confirm_probe(admission) {
                return Ok(admission);
            }
        }
        self.shared.admit()
    }

    /// [`admit`](Self::admit), packaged with the circuit for a balancer's response
    /// future.
    #[inline]
    #[cfg_attr(not(feature = "balance"), allow(dead_code))] // the balancer's
    pub(crate) fn admit_call(&mut self) -> Result<GateCall, BreakerOpen> {
        self.admit().map(|admission| GateCall {
            circuit: self.shared.circuit(),
            admission,
        })
    }

    fn release_reserved(&mut self) {
        if let Some(mut admission) = self.reserved.take() {
            self.shared.abandon(&mut admission);
        }
    }
}

impl Drop for GateCore {
    fn drop(&mut self) {
        self.release_reserved();
    }
}

impl fmt::Debug for GateCore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GateCore")
            .field("state", &self.shared.state())
            .field("holds_probe", &self.reserved.is_some())
            .finish_non_exhaustive()
    }
}

/// One admitted call through a gate, as a balancer's response future carries it:
/// finished with its classified outcome, or dropped (which gives its probe permit back
/// and counts nothing).
pub(crate) struct GateCall {
    circuit: Arc<SharedCircuit>,
    admission: Admission,
}

#[cfg_attr(not(feature = "balance"), allow(dead_code))] // only the balancer's future carries one
impl GateCall {
    /// Records the call's result, classified as `outcome`, exactly as the breaker does.
    pub(crate) fn finish<T>(mut self, outcome: Outcome, result: &Result<T, BoxError>) {
        let admission = self.admission;
        // The permit travels with `admission`; the drop below finds none left.
        self.admission.take_probe();
        let event = window_event(outcome, result);
        if let Some(c) = self.circuit.live() {
            c.complete(admission, event);
        }
    }

    /// Records a call whose inner future panicked as a failure (a failed probe, if it
    /// is one), exactly as the breaker does. Safe to call while the panic unwinds.
    pub(crate) fn panicked(mut self) {
        let admission = self.admission;
        self.admission.take_probe();
        count_panic(&self.circuit, admission);
    }
}

impl Drop for GateCall {
    fn drop(&mut self) {
        if let Some(c) = self.circuit.live().filter(|_| self.admission.holds_probe()) {
            c.abandon(&mut self.admission);
        }
    }
}

impl fmt::Debug for GateCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GateCall").finish_non_exhaustive()
    }
}

/// Splits the classifier off a configuration, for owners that classify with it
/// themselves (the balancer).
#[cfg_attr(not(feature = "balance"), allow(dead_code))]
pub(crate) fn split_classifier<C>(config: BreakerConfig<C>) -> (BreakerConfig<()>, C) {
    let rest = BreakerConfig {
        clock: config.clock,
        window: config.window,
        policy: config.policy,
        slow_call_threshold: config.slow_call_threshold,
        open_duration: config.open_duration,
        half_open_probes: config.half_open_probes,
        probes_to_close: config.probes_to_close,
        probe_max_wait: config.probe_max_wait,
        jitter_seed: config.jitter_seed,
        event_buffer: config.event_buffer,
        on_event: config.on_event,
        record_latency: config.record_latency,
        classify: (),
    };
    (rest, config.classify)
}

/// A circuit breaker that shows an open circuit as **not ready** instead of rejecting
/// calls: the form to put in front of one endpoint of a load balancer. See the
/// [module docs](super#readiness-form-circuitgate) for the states.
///
/// ```
/// use palisade::breaker::{BreakerConfig, CircuitGate, CircuitState};
/// use palisade::clock::Clock;
/// use std::time::Duration;
/// use tower::{Service, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), palisade::BoxError> {
/// let config = BreakerConfig::builder()
///     .clock(Clock::tokio()) // follows tokio's paused clock in this example
///     .consecutive_failures(2)
///     .sleep_window(Duration::from_secs(5))
///     .build()?;
/// let mut gate = CircuitGate::new(
///     tower::service_fn(|_: ()| async { Err::<(), _>(std::io::Error::other("down")) }),
///     &config,
/// );
/// for _ in 0..2 {
///     assert!(gate.ready().await?.call(()).await.is_err());
/// }
/// assert_eq!(gate.handle().state(), CircuitState::Open);
/// // Not ready while open: `ready()` waits for the end of the open period.
/// let started = tokio::time::Instant::now();
/// gate.ready().await?;
/// assert_eq!(started.elapsed(), Duration::from_secs(5));
/// assert_eq!(gate.handle().state(), CircuitState::HalfOpen);
/// # Ok(())
/// # }
/// ```
///
/// # Contract
/// - `poll_ready` never fails because the circuit is open; it is `Pending` and arranges
///   its own wake-up (a tokio timer for the open period, so a tokio runtime with time
///   enabled is needed once the circuit opens). The timer is set from the circuit's
///   [clock](super::BreakerConfigBuilder::clock); with tokio's paused clock in tests,
///   use [`Clock::tokio`](crate::clock::Clock::tokio) so the two agree.
/// - In half-open a `Ready` holds a probe permit for the next `call`; dropping the gate
///   gives it back. A `call` made without `poll_ready`, or after the state changed,
///   is admitted (or rejected with [`BreakerOpen`]) exactly as by
///   [`CircuitBreaker`](super::CircuitBreaker).
/// - The response future is the breaker's [`ResponseFuture`].
/// - Not `Clone`: a gate is one endpoint's readiness, with one task to wake and one
///   permit to hold. Each gate has its own circuit; read it through
///   [`handle`](Self::handle).
pub struct CircuitGate<S, C = ErrIsFailure> {
    inner: S,
    core: GateCore,
    classify: C,
}

impl<S, C: Clone> CircuitGate<S, C> {
    /// Wraps `inner` in a gate with a new circuit configured by `config`.
    pub fn new(inner: S, config: &BreakerConfig<C>) -> Self {
        CircuitGate {
            inner,
            core: GateCore::new(config),
            classify: config.classify.clone(),
        }
    }
}

impl<S, C> CircuitGate<S, C> {
    /// The handle of this gate's circuit.
    pub fn handle(&self) -> BreakerHandle {
        self.core.handle()
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, unwrapped (a probe permit the gate held is given back).
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, C, Req> Service<Req> for CircuitGate<S, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: crate::classify::Classify<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    /// `Pending` while the circuit would reject a call; otherwise forwards to the inner
    /// service.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if self.core.poll_admissible(cx).is_pending() {
            return Poll::Pending;
        }
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        match self.core.admit() {
            Ok(admission) => ResponseFuture::called(
                self.inner.call(req),
                admission,
                self.core.shared().circuit(),
                self.classify.clone(),
            ),
            Err(open) => ResponseFuture::rejected(open),
        }
    }
}

impl<S: fmt::Debug, C> fmt::Debug for CircuitGate<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitGate")
            .field("inner", &self.inner)
            .field("core", &self.core)
            .finish_non_exhaustive()
    }
}

/// Wraps each service in its own [`CircuitGate`]: unlike
/// [`CircuitBreakerLayer`](super::CircuitBreakerLayer), **every service it makes gets a
/// new circuit**, which is what a layer applied to every endpoint of a discovery source
/// (see [`discover::Layered`](crate::discover::Layered)) needs. Made by
/// [`BreakerConfig::gate_layer`]. For per-endpoint breakers whose circuits survive an
/// endpoint update and can be inspected by key, prefer
/// [`balance::Builder::endpoint_breaker`](crate::balance::Builder::endpoint_breaker).
#[derive(Clone)]
pub struct CircuitGateLayer<C = ErrIsFailure> {
    config: BreakerConfig<C>,
}

impl<S, C: Clone> Layer<S> for CircuitGateLayer<C> {
    type Service = CircuitGate<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitGate::new(inner, &self.config)
    }
}

impl<C> fmt::Debug for CircuitGateLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitGateLayer").finish_non_exhaustive()
    }
}

impl<C: Clone> BreakerConfig<C> {
    /// A layer that wraps each service in a [`CircuitGate`] with a circuit of its own.
    pub fn gate_layer(&self) -> CircuitGateLayer<C> {
        CircuitGateLayer {
            config: self.clone(),
        }
    }

    /// Wraps `inner` in a [`CircuitGate`] with a new circuit.
    pub fn gate<S>(&self, inner: S) -> CircuitGate<S, C> {
        CircuitGate::new(inner, self)
    }
}
