//! The [`Balance`] service and its [`Builder`].

use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};
use tower::discover::{Change, Discover};
use tower_service::Service;

use super::ejection::OutlierDetection;
use super::endpoint::EndpointId;
use super::events::{
    EndpointEventCallback, EndpointEventHub, EndpointEventStream, NoEndpointEvents,
};
use super::future::{ResponseFuture, Tracking};
use super::key::{HashKey, NoKey};
use super::picker::Picker;
use super::set::EndpointSet;
use super::slow_start::SlowStart;
use crate::breaker::gate::split_classifier;
use crate::breaker::{BreakerConfig, BreakerEvent, BreakerHandle};
use crate::classify::{Classify, ErrIsFailure};
use crate::clock::Clock;
use crate::error::{BoxError, ConfigError, NoEndpoints};
use crate::weighted::Weighted;

/// Changes taken from the discovery source per `poll_ready` before serving requests
/// again, so an endless stream of changes cannot starve callers.
const MAX_CHANGES_PER_POLL: usize = 1024;

/// Reads an endpoint's weight from its key and service when it is inserted.
pub type Weigher<K, S> = fn(&K, &S) -> u32;

fn unit_weight<K, S>(_: &K, _: &S) -> u32 {
    1
}

fn weight_of<K, S>(_: &K, service: &Weighted<S>) -> u32 {
    service.weight()
}

/// `now + d`, or about thirty years from now if that overflows.
fn far_or(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .unwrap_or_else(|| now + Duration::from_secs(30 * 365 * 86_400))
}

/// A load balancer over the endpoints of a [`Discover`] source. See the
/// [module docs](super) for the contract.
///
/// `Balance` is not `Clone`: it owns its endpoints and their readiness. Share one between
/// tasks with `tower::buffer::Buffer`.
pub struct Balance<D, P, H = NoKey, C = ErrIsFailure>
where
    D: Discover,
{
    discover: D,
    discover_done: bool,
    set: EndpointSet<D::Key, D::Service>,
    picker: P,
    key: H,
    classify: C,
    weigher: Weigher<D::Key, D::Service>,
    clock: Clock,
    track_latency: bool,
    track_outcomes: bool,
    no_endpoint_deadline: Duration,
    waiting_until: Option<Instant>,
    sleep: Option<Pin<Box<Sleep>>>,
    armed: bool,
    fail_next: bool,
}

impl<D, P> Balance<D, P>
where
    D: Discover,
    D::Key: Hash + Eq,
    P: Picker,
{
    /// A balancer with default settings and unit weights: see [`Builder`] for the rest.
    pub fn new(discover: D, picker: P) -> Self {
        Builder::new(picker)
            .build(discover)
            .expect("the default configuration is valid")
    }
}

impl<D, P, H, C> Balance<D, P, H, C>
where
    D: Discover,
    D::Key: Hash + Eq,
{
    /// How many endpoints are members (ready or not).
    pub fn len(&self) -> usize {
        self.set.member_count()
    }

    /// Whether there are no members.
    pub fn is_empty(&self) -> bool {
        self.set.member_count() == 0
    }

    /// How many endpoints are ready and pickable right now.
    pub fn ready_len(&self) -> usize {
        self.set.ready_len()
    }

    /// How many members are ejected by outlier detection.
    pub fn ejected_len(&self) -> usize {
        self.set.ejected_count()
    }

    /// Whether too few members are healthy, so ejections are ignored.
    pub fn in_panic(&self) -> bool {
        self.set.in_panic()
    }

    /// Endpoints removed because their `poll_ready` failed, since creation.
    pub fn removed_on_error(&self) -> u64 {
        self.set.counters().removed_on_error
    }

    /// Ejections by outlier detection, since creation.
    pub fn ejections(&self) -> u64 {
        self.set.counters().ejections
    }

    /// Requests in flight on current members (requests on removed endpoints are no
    /// longer counted here, but still finish normally).
    pub fn in_flight(&self) -> usize {
        self.set.in_flight()
    }

    /// The id of the member with discovery key `key`.
    pub fn endpoint_id(&self, key: &D::Key) -> Option<EndpointId> {
        self.set.id_of(key)
    }

    /// The circuit breaker of the member with discovery key `key`, when
    /// [endpoint breakers](Builder::endpoint_breaker) are on. The circuit lives as long
    /// as the key is a member (an update of the key keeps it); a handle kept after the
    /// removal reads a circuit the balancer no longer uses.
    pub fn endpoint_breaker(&self, key: &D::Key) -> Option<BreakerHandle> {
        self.set.breaker_of(key)
    }

    /// The circuit breaker of member `id`, when endpoint breakers are on.
    pub fn endpoint_breaker_by_id(&self, id: EndpointId) -> Option<BreakerHandle> {
        self.set.breaker_of_id(id)
    }

    /// A stream of every endpoint's [breaker events](BreakerEvent), each with the
    /// discovery key of the endpoint whose circuit produced it, when
    /// [endpoint breakers](Builder::endpoint_breaker) are on (otherwise it yields
    /// nothing and ends with the balancer).
    ///
    /// It covers the current members and every endpoint inserted later; a removed
    /// endpoint's circuit reports nothing more. Each stream buffers at most the breaker
    /// configuration's [`event_buffer`](crate::breaker::BreakerConfigBuilder::event_buffer)
    /// events and drops its oldest when further behind
    /// ([`dropped`](EndpointEventStream::dropped) counts them). It ends once the
    /// balancer is dropped. See [`events`](super::events) for order and cost: until
    /// something subscribes (or [registers a callback](Self::on_endpoint_event)) the
    /// balancer forwards nothing, and a subscriber costs nothing per request.
    ///
    /// Call it before sharing the balancer (say, behind `tower::buffer::Buffer`).
    ///
    /// ```
    /// use palisade::balance::{Builder, RoundRobin};
    /// use palisade::breaker::{BreakerConfig, BreakerEvent, CircuitState};
    /// use palisade::discover::FixedList;
    /// use tower::{service_fn, Service, ServiceExt};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), palisade::BoxError> {
    /// let endpoint = |ok: bool| {
    ///     service_fn(move |_: ()| async move {
    ///         if ok { Ok(()) } else { Err(std::io::Error::other("down")) }
    ///     })
    /// };
    /// let list = FixedList::unweighted([("a", endpoint(true)), ("b", endpoint(false))]);
    /// let mut balance = Builder::new(RoundRobin::new())
    ///     .endpoint_breaker(BreakerConfig::builder().consecutive_failures(1).build()?)
    ///     .build(list)?;
    /// let mut events = balance.endpoint_events();
    ///
    /// let _ = balance.ready().await?.call(()).await; // "a": fine
    /// let _ = balance.ready().await?.call(()).await; // "b": fails, its circuit opens
    /// let (key, event) = events.try_next().expect("b's circuit opened");
    /// assert_eq!(key, "b");
    /// assert!(matches!(
    ///     event,
    ///     BreakerEvent::StateChanged { from: CircuitState::Closed, to: CircuitState::Open, .. }
    /// ));
    /// assert_eq!(events.try_next(), None);
    /// # Ok(())
    /// # }
    /// ```
    pub fn endpoint_events(&mut self) -> EndpointEventStream<D::Key>
    where
        D::Key: Clone + Send + Sync + 'static,
    {
        self.set.keyed_events(EndpointEventHub::shared).subscribe()
    }

    /// Calls `f` with the key of the endpoint and the event, for every
    /// [breaker event](BreakerEvent) of every endpoint, when
    /// [endpoint breakers](Builder::endpoint_breaker) are on: the callback form of
    /// [`endpoint_events`](Self::endpoint_events), with the same coverage (current and
    /// later members, nothing from a removed one). Several callbacks may be registered;
    /// each event goes to the breaker configuration's own `on_event` first, then to
    /// these in the order they were registered, on the thread that caused it (so `f`
    /// must be quick). See [`events`](super::events).
    ///
    /// ```
    /// use palisade::balance::{Builder, RoundRobin};
    /// use palisade::breaker::{BreakerConfig, BreakerEvent, CircuitState};
    /// use palisade::discover::FixedList;
    /// use std::sync::{Arc, Mutex};
    /// use tower::{service_fn, Service, ServiceExt};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), palisade::BoxError> {
    /// let down = service_fn(|_: ()| async { Err::<(), _>(std::io::Error::other("down")) });
    /// let mut balance = Builder::new(RoundRobin::new())
    ///     .endpoint_breaker(BreakerConfig::builder().consecutive_failures(1).build()?)
    ///     .build(FixedList::unweighted([("db-1", down)]))?;
    /// let opened = Arc::new(Mutex::new(Vec::new()));
    /// let log = opened.clone();
    /// balance.on_endpoint_event(move |key: &&str, event: &BreakerEvent| {
    ///     if let BreakerEvent::StateChanged { to: CircuitState::Open, .. } = event {
    ///         log.lock().unwrap().push(key.to_string());
    ///     }
    /// });
    /// let _ = balance.ready().await?.call(()).await;
    /// assert_eq!(*opened.lock().unwrap(), ["db-1"]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn on_endpoint_event<F>(&mut self, f: F)
    where
        D::Key: Clone + Send + Sync + 'static,
        F: Fn(&D::Key, &BreakerEvent) + Send + Sync + 'static,
    {
        self.set
            .keyed_events(EndpointEventHub::shared)
            .add_callback(Arc::new(f));
    }

    /// Whether member `id` is currently ejected (`None` if it is not a member).
    pub fn is_ejected(&self, id: EndpointId) -> Option<bool> {
        self.set.meta(id).map(|m| m.ejection.is_ejected())
    }

    /// The effective weight of member `id` (after slow start).
    pub fn effective_weight(&self, id: EndpointId) -> Option<f64> {
        self.set.meta(id).map(|m| m.effective_weight)
    }

    /// The picker.
    pub fn picker(&self) -> &P {
        &self.picker
    }

    /// The picker, mutably (to change a picker's settings at runtime).
    pub fn picker_mut(&mut self) -> &mut P {
        &mut self.picker
    }

    /// Takes every pending change from the discovery source; returns an error if the
    /// source failed.
    fn poll_discover(&mut self, cx: &mut Context<'_>) -> Result<(), BoxError>
    where
        D: Unpin,
        D::Error: Into<BoxError>,
    {
        if self.discover_done {
            return Ok(());
        }
        for _ in 0..MAX_CHANGES_PER_POLL {
            match Pin::new(&mut self.discover).poll_discover(cx) {
                Poll::Pending => return Ok(()),
                Poll::Ready(None) => {
                    self.discover_done = true;
                    return Ok(());
                }
                Poll::Ready(Some(Err(e))) => return Err(e.into()),
                Poll::Ready(Some(Ok(Change::Insert(key, service)))) => {
                    let weight = (self.weigher)(&key, &service);
                    let key_hash = super::stable_hash(&key);
                    let now = self.clock.now();
                    self.set.upsert(key, key_hash, service, weight, now);
                }
                Poll::Ready(Some(Ok(Change::Remove(key)))) => self.set.remove_key(&key),
            }
        }
        // More changes are waiting: make sure we are polled again.
        cx.waker().wake_by_ref();
        Ok(())
    }
}

impl<D, P, H, C, Req> Service<Req> for Balance<D, P, H, C>
where
    D: Discover + Unpin,
    D::Key: Hash + Eq,
    D::Error: Into<BoxError>,
    D::Service: Service<Req>,
    <D::Service as Service<Req>>::Error: Into<BoxError>,
    P: Picker,
    H: HashKey<Req>,
    C: Classify<<D::Service as Service<Req>>::Response, <D::Service as Service<Req>>::Error>
        + Clone,
{
    type Response = <D::Service as Service<Req>>::Response;
    type Error = BoxError;
    type Future = ResponseFuture<<D::Service as Service<Req>>::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Bounded: each extra round needs a timer or a wake-up that fired, which changes
        // the state; the bound guards against a clock that disagrees with tokio's.
        for _ in 0..8 {
            self.poll_discover(cx)?;
            if self.set.updates_health() {
                let now = self.clock.now();
                if self.set.attention_raised() || now >= self.set.next_health_update() {
                    self.set.update_health(now);
                }
            }
            self.set.poll_endpoints::<Req>();
            if self.set.ready_len() > 0 {
                self.waiting_until = None;
                self.fail_next = false;
                self.armed = true;
                return Poll::Ready(Ok(()));
            }
            if self.fail_next {
                self.armed = true;
                return Poll::Ready(Ok(()));
            }
            let now = Instant::now();
            let deadline = *self
                .waiting_until
                .get_or_insert_with(|| far_or(now, self.no_endpoint_deadline));
            if now >= deadline {
                // Give up: poll_ready reports ready so that the caller's `call` gets the
                // typed NoEndpoints error; the next wait starts afresh.
                self.waiting_until = None;
                self.fail_next = true;
                self.armed = true;
                return Poll::Ready(Ok(()));
            }
            self.set.queue().register(cx.waker());
            if self.set.queue().has_woken() {
                continue;
            }
            let mut wake_at = deadline;
            if self.set.updates_health() {
                let next = self.set.next_health_update();
                if next != u64::MAX {
                    wake_at = wake_at.min(self.clock.to_tokio_instant(next).max(now));
                }
            }
            let sleep = self
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(wake_at)));
            if sleep.deadline() != wake_at {
                sleep.as_mut().reset(wake_at);
            }
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
        // The clock and tokio's timer disagree; try again shortly rather than spin.
        let retry = Instant::now() + Duration::from_millis(1);
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(retry)));
        sleep.as_mut().reset(retry);
        let _ = sleep.as_mut().poll(cx);
        Poll::Pending
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let armed = std::mem::take(&mut self.armed);
        if std::mem::take(&mut self.fail_next) || !armed || self.set.ready_len() == 0 {
            // Either the wait for an endpoint ran out, or `call` came without a
            // successful `poll_ready` (a contract breach that must not panic).
            return ResponseFuture::failed(NoEndpoints::new(self.set.member_count()));
        }
        let key = self.key.hash_key(&req);
        let now = self.track_latency.then(|| self.clock.now());
        // Each round that a circuit rejects takes its endpoint out of the ready list, so
        // this ends; the request fails only when every ready endpoint's circuit rejected.
        let (position, gate) = loop {
            self.set.refresh_load();
            let len = self.set.ready_len();
            let mut position = self
                .picker
                .pick(&self.set.candidates(&self.clock, now), key);
            if position >= len {
                position %= len;
            }
            match self.set.admit(position) {
                Ok(gate) => break (position, gate),
                Err(open) if self.set.ready_len() == 0 => {
                    return ResponseFuture::rejected(open);
                }
                Err(_) => {}
            }
        };
        let start = now.map(|now| (self.clock.clone(), now));
        let classify = (self.track_outcomes || gate.is_some()).then(|| self.classify.clone());
        let (service, stats) = self.set.begin_call(position);
        let future = service.call(req);
        ResponseFuture::called(
            future,
            Tracking::new(stats, classify, self.track_outcomes, gate, start),
        )
    }
}

impl<D, P, H, C> fmt::Debug for Balance<D, P, H, C>
where
    D: Discover,
    D::Key: Hash + Eq,
    P: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Balance")
            .field("members", &self.set.member_count())
            .field("ready", &self.set.ready_len())
            .field("ejected", &self.set.ejected_count())
            .field("picker", &self.picker)
            .finish_non_exhaustive()
    }
}

/// Configures a [`Balance`]. Every setter's name is the field a [`ConfigError`] reports.
///
/// ```
/// use std::time::Duration;
/// use palisade::balance::{Builder, PowerOfTwoChoices};
/// use palisade::discover::FixedList;
///
/// # fn main() -> Result<(), palisade::ConfigError> {
/// let svc = tower::service_fn(|x: u32| async move { Ok::<_, std::io::Error>(x) });
/// let endpoints = FixedList::builder()
///     .endpoint("a", svc.clone(), 3)
///     .endpoint("b", svc, 1)
///     .build()?;
/// let balance = Builder::new(PowerOfTwoChoices::new())
///     .no_endpoint_deadline(Duration::from_secs(2))
///     .build_weighted(endpoints)?;
/// # let _ = balance;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Builder<P, H = NoKey, C = ErrIsFailure, E = NoEndpointEvents> {
    picker: P,
    key: H,
    classify: C,
    no_endpoint_deadline: Duration,
    latency_decay: Duration,
    clock: Clock,
    outlier_detection: Option<OutlierDetection>,
    slow_start: Option<SlowStart>,
    endpoint_breaker: Option<BreakerConfig<()>>,
    on_endpoint_event: E,
}

impl<P: Picker> Builder<P> {
    /// A builder with `picker`, no hash key, errors counted as failures, a 10 s
    /// no-endpoint deadline, a 10 s latency decay, the system clock, no outlier detection
    /// and no slow start.
    pub fn new(picker: P) -> Self {
        Self {
            picker,
            key: NoKey,
            classify: ErrIsFailure,
            no_endpoint_deadline: Duration::from_secs(10),
            latency_decay: Duration::from_secs(10),
            clock: Clock::system(),
            outlier_detection: None,
            slow_start: None,
            endpoint_breaker: None,
            on_endpoint_event: NoEndpointEvents,
        }
    }
}

impl<P: Picker, H, C, E> Builder<P, H, C, E> {
    /// How long a request waits for some endpoint to become ready before it fails with
    /// [`NoEndpoints`] (default 10 s). Zero fails at once; `Duration::MAX` waits as long
    /// as it takes. While waiting, `poll_ready` is `Pending` and
    /// the balancer re-polls discovery and endpoints as they wake it.
    pub fn no_endpoint_deadline(mut self, d: Duration) -> Self {
        self.no_endpoint_deadline = d;
        self
    }

    /// The time constant of the peak-EWMA latency estimate (default 10 s). From 1 ns to
    /// `Duration::MAX`.
    pub fn latency_decay(mut self, d: Duration) -> Self {
        self.latency_decay = d;
        self
    }

    /// The clock for latency, ejection and slow start (the no-endpoint deadline uses
    /// tokio's timer).
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Turns on outlier ejection.
    pub fn outlier_detection(mut self, detection: OutlierDetection) -> Self {
        self.outlier_detection = Some(detection);
        self
    }

    /// Turns on slow start.
    pub fn slow_start(mut self, slow_start: SlowStart) -> Self {
        self.slow_start = Some(slow_start);
        self
    }

    /// Gives every endpoint its own circuit breaker, configured by `config`, in its
    /// [readiness form](crate::breaker::CircuitGate): an endpoint whose circuit is open
    /// is not ready, so it is not picked and the requests go to the other endpoints
    /// instead of failing; when the open period ends the endpoint is polled again (its
    /// timer wakes the balancer) and takes the half-open probes.
    ///
    /// - One circuit per endpoint: made when its key is inserted, kept when an insert
    ///   replaces the key's service, dropped when the key is removed. Read it with
    ///   [`Balance::endpoint_breaker`].
    /// - The configuration's classifier becomes the balancer's classifier (as if given
    ///   to [`classify`](Self::classify)): it decides what a failure is both for the
    ///   breakers and for outlier detection. Calling `classify` afterwards replaces it
    ///   for both.
    /// - A request fails with [`BreakerOpen`](crate::error::BreakerOpen) only if every
    ///   ready endpoint's circuit rejected it at `call` (each circuit opened after the
    ///   balancer polled its endpoint, because requests in flight on it failed);
    ///   otherwise the balancer picks again among the others.
    /// - Each endpoint's circuit has its own rolling window: with the default 10-bucket
    ///   time window that is about 23 KiB per endpoint on a 2-CPU machine (more with
    ///   more window stripes). For thousands of endpoints, give the configuration a
    ///   smaller [window](crate::breaker::BreakerConfigBuilder::window), e.g.
    ///   `WindowConfig::count(20).stripes(1)` (about 2 KiB).
    /// - Per request, an endpoint's breaker costs what a
    ///   [`CircuitBreaker`](crate::breaker::CircuitBreaker) costs (an admission and a
    ///   completion on its circuit, no lock, no allocation), but with thousands of
    ///   endpoints each request touches a circuit that is cold in cache: `benches/balance.rs`
    ///   measures about 0.1–0.3 µs added per request at 10 to 1,000 endpoints and
    ///   0.6–1.2 µs at 10,000.
    /// - Endpoints kept out by their breakers (open, half-open or forced open) count
    ///   against [outlier detection's](Self::outlier_detection) ejection cap.
    /// - The configuration's event callback, clock and seed are shared by every
    ///   endpoint's circuit. The callback is not told which endpoint an event is
    ///   about: for that, use [`Balance::endpoint_events`] or
    ///   [`Balance::on_endpoint_event`] (every endpoint, keyed), or subscribe to one
    ///   endpoint through its handle.
    pub fn endpoint_breaker<C2>(self, config: BreakerConfig<C2>) -> Builder<P, H, C2, E> {
        let (config, classify) = split_classifier(config);
        Builder {
            picker: self.picker,
            key: self.key,
            classify,
            no_endpoint_deadline: self.no_endpoint_deadline,
            latency_decay: self.latency_decay,
            clock: self.clock,
            outlier_detection: self.outlier_detection,
            slow_start: self.slow_start,
            endpoint_breaker: Some(config),
            on_endpoint_event: self.on_endpoint_event,
        }
    }

    /// Calls `f` with the discovery key of the endpoint and the event, for every
    /// [breaker event](BreakerEvent) of every endpoint of every balancer this builder
    /// makes, when [endpoint breakers](Self::endpoint_breaker) are on: the builder form of
    /// [`Balance::on_endpoint_event`], for balancers made by a layer or a make-service,
    /// which the caller never holds before they serve. Replaces a callback set earlier
    /// here (a balancer may add more with [`Balance::on_endpoint_event`]).
    ///
    /// It covers every endpoint the balancer ever has, not those of a removed key
    /// any more; each event goes to the breaker configuration's own `on_event` first,
    /// then to `f`, on the thread that caused it (so `f` must be quick). See
    /// [`events`](super::events). `K` is the discovery key, so the closure usually
    /// names its argument types.
    ///
    /// ```
    /// use palisade::balance::{Builder, RoundRobin};
    /// use palisade::breaker::{BreakerConfig, BreakerEvent, CircuitState};
    /// use palisade::discover::FixedList;
    /// use tower::{service_fn, Layer, Service, ServiceExt};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), palisade::BoxError> {
    /// let layer = Builder::new(RoundRobin::new())
    ///     .endpoint_breaker(BreakerConfig::builder().consecutive_failures(1).build()?)
    ///     .on_endpoint_event(|key: &&str, event: &BreakerEvent| {
    ///         if let BreakerEvent::StateChanged { to: CircuitState::Open, .. } = event {
    ///             println!("endpoint {key} is out");
    ///         }
    ///     })
    ///     .into_layer()?;
    /// let down = service_fn(|_: ()| async { Err::<(), _>(std::io::Error::other("down")) });
    /// let mut balance = layer.layer(FixedList::unweighted([("db-1", down)]));
    /// let _ = balance.ready().await?.call(()).await; // prints "endpoint db-1 is out"
    /// # Ok(())
    /// # }
    /// ```
    pub fn on_endpoint_event<K, F>(self, f: F) -> Builder<P, H, C, F>
    where
        K: Clone + Send + Sync + 'static,
        F: Fn(&K, &BreakerEvent) + Send + Sync + 'static,
    {
        Builder {
            picker: self.picker,
            key: self.key,
            classify: self.classify,
            no_endpoint_deadline: self.no_endpoint_deadline,
            latency_decay: self.latency_decay,
            clock: self.clock,
            outlier_detection: self.outlier_detection,
            slow_start: self.slow_start,
            endpoint_breaker: self.endpoint_breaker,
            on_endpoint_event: f,
        }
    }

    /// Extracts each request's hash key (for [`ConsistentHash`](super::ConsistentHash)).
    pub fn hash_key<H2>(self, key: H2) -> Builder<P, H2, C, E> {
        Builder {
            picker: self.picker,
            key,
            classify: self.classify,
            no_endpoint_deadline: self.no_endpoint_deadline,
            latency_decay: self.latency_decay,
            clock: self.clock,
            outlier_detection: self.outlier_detection,
            slow_start: self.slow_start,
            endpoint_breaker: self.endpoint_breaker,
            on_endpoint_event: self.on_endpoint_event,
        }
    }

    /// Classifies responses for outlier detection (default: every `Err` is a failure).
    pub fn classify<C2>(self, classify: C2) -> Builder<P, H, C2, E> {
        Builder {
            picker: self.picker,
            key: self.key,
            classify,
            no_endpoint_deadline: self.no_endpoint_deadline,
            latency_decay: self.latency_decay,
            clock: self.clock,
            outlier_detection: self.outlier_detection,
            slow_start: self.slow_start,
            endpoint_breaker: self.endpoint_breaker,
            on_endpoint_event: self.on_endpoint_event,
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.latency_decay.is_zero() {
            return Err(ConfigError::new(
                "latency_decay",
                "must be greater than zero",
            ));
        }
        Ok(())
    }

    /// Builds a balancer over `discover` in which every endpoint has weight 1.
    pub fn build<D>(self, discover: D) -> Result<Balance<D, P, H, C>, ConfigError>
    where
        D: Discover,
        D::Key: Hash + Eq,
        E: EndpointEventCallback<D::Key>,
    {
        self.build_with_weights(discover, unit_weight::<D::Key, D::Service>)
    }

    /// Builds a balancer that takes each endpoint's weight from its [`Weighted`]
    /// wrapper, as the [`discover`](crate::discover) sources produce.
    pub fn build_weighted<D, S>(self, discover: D) -> Result<Balance<D, P, H, C>, ConfigError>
    where
        D: Discover<Service = Weighted<S>>,
        D::Key: Hash + Eq,
        E: EndpointEventCallback<D::Key>,
    {
        self.build_with_weights(discover, weight_of::<D::Key, S>)
    }

    /// Builds a balancer that reads each endpoint's weight with `weigher` when it is
    /// inserted (again when an insert replaces it).
    pub fn build_with_weights<D>(
        self,
        discover: D,
        weigher: Weigher<D::Key, D::Service>,
    ) -> Result<Balance<D, P, H, C>, ConfigError>
    where
        D: Discover,
        D::Key: Hash + Eq,
        E: EndpointEventCallback<D::Key>,
    {
        self.validate()?;
        let now = self.clock.now();
        let track_outcomes = self.outlier_detection.is_some();
        let mut picker = self.picker;
        let track_latency = picker.uses_latency();
        let load_index = picker.load_index();
        let dense_in_flight = picker.uses_in_flight();
        let mut set = EndpointSet::new(
            self.outlier_detection,
            self.slow_start,
            self.endpoint_breaker,
            load_index,
            dense_in_flight,
            self.latency_decay.as_nanos() as f64,
            now,
        );
        if let Some(events) = self.on_endpoint_event.install(set.event_buffer()) {
            set.install_keyed_events(events.0);
        }
        Ok(Balance {
            discover,
            discover_done: false,
            set,
            picker,
            key: self.key,
            classify: self.classify,
            weigher,
            clock: self.clock,
            track_latency,
            track_outcomes,
            no_endpoint_deadline: self.no_endpoint_deadline,
            waiting_until: None,
            sleep: None,
            armed: false,
            fail_next: false,
        })
    }

    /// A [`Layer`](tower_layer::Layer) that wraps a discovery source in a balancer with
    /// this configuration (unit weights; see
    /// [`BalanceLayer::weighted`](super::BalanceLayer::weighted)).
    pub fn into_layer(self) -> Result<super::BalanceLayer<P, H, C, E>, ConfigError>
    where
        P: Clone,
        H: Clone,
        C: Clone,
        E: Clone,
    {
        self.validate()?;
        Ok(super::BalanceLayer::new(self))
    }
}

impl<P: fmt::Debug, H, C, E> fmt::Debug for Builder<P, H, C, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("picker", &self.picker)
            .field("no_endpoint_deadline", &self.no_endpoint_deadline)
            .field("latency_decay", &self.latency_decay)
            .field("outlier_detection", &self.outlier_detection)
            .field("slow_start", &self.slow_start)
            .field("endpoint_breaker", &self.endpoint_breaker.is_some())
            .finish_non_exhaustive()
    }
}
