//! Load balancing over a changing set of endpoints.
//!
//! [`Balance`] is a tower [`Service`](tower_service::Service) over any
//! [`Discover`](tower::discover::Discover) source: endpoints arrive and leave as
//! `Change::Insert` / `Change::Remove`, and each request goes to one ready endpoint chosen
//! by a [`Picker`]. Build it with [`Builder`], wrap a source with [`BalanceLayer`], or make
//! one per target with [`MakeBalance`].
//!
//! ```
//! use palisade::balance::{Balance, RoundRobin};
//! use palisade::discover::FixedList;
//! use tower::{service_fn, Service, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), palisade::BoxError> {
//! let echo = |name: &'static str| service_fn(move |_: ()| async move { Ok::<_, std::io::Error>(name) });
//! let list = FixedList::unweighted([("a", echo("a")), ("b", echo("b"))]);
//! let mut balance = Balance::new(list, RoundRobin::new());
//! assert_eq!(balance.ready().await?.call(()).await?, "a");
//! assert_eq!(balance.ready().await?.call(()).await?, "b");
//! # Ok(())
//! # }
//! ```
//!
//! # The contract
//!
//! - **`poll_ready`** takes every pending change from the discovery source, polls the
//!   endpoints that need it (just inserted, just called, or woken after being pending),
//!   and is `Ready` as soon as one endpoint is ready. It never polls all endpoints per
//!   request: each endpoint is polled with its own waker, allocated once, and only the
//!   ones that woke are polled again.
//! - **`call`** asks the picker for one of the ready endpoints and sends the request to
//!   it. The pick and the send happen in the same `call`, so no index survives between
//!   `poll_ready` and `call` and a request can never go to an endpoint other than the one
//!   picked, nor to a removed one (compare tower issue #856).
//! - **No endpoint.** When no endpoint is ready (none discovered, all pending, all ejected
//!   outside panic), `poll_ready` is `Pending` for at most the
//!   [`no_endpoint_deadline`](Builder::no_endpoint_deadline), re-polling discovery and
//!   endpoints as they wake it, with no new request needed. If the deadline passes,
//!   `poll_ready` returns `Ready(Ok(()))` and the next `call`'s future fails with
//!   [`NoEndpoints`](crate::error::NoEndpoints). It never waits forever (tower issue
//!   #824), and it never returns the rejection from `poll_ready`, which would mean the
//!   balancer itself is dead. The wait runs from the first `poll_ready` that found no
//!   ready endpoint: a caller that abandons a wait and comes back after the deadline,
//!   with still no endpoint ready, fails at once. Waiting uses tokio's timer, so it needs
//!   a tokio runtime with time enabled (a zero deadline never waits).
//! - **Errors.** An endpoint whose `poll_ready` fails is removed and counted
//!   ([`Balance::removed_on_error`]); requests already in flight on it finish normally.
//!   An error from the discovery source *is* returned from `poll_ready`: the balancer
//!   can no longer track its endpoints.
//! - **Inserts replace.** An `Insert` for a key already present replaces the endpoint's
//!   service and weight but keeps its statistics and ejection history; this is how a
//!   source updates a weight at runtime.
//! - **Drop.** Dropping a response future ends its in-flight count at once. Dropping the
//!   balancer drops its endpoints; their in-flight requests are unaffected.
//! - `Balance` is not `Clone`; use `tower::buffer::Buffer` to share it. Its futures are
//!   `Send` when the endpoint futures are. A `call` without a successful `poll_ready`
//!   does not panic: its future fails with `NoEndpoints`.
//!
//! # Weights, health and ejection
//!
//! An endpoint's weight comes from its source ([`Builder::build_weighted`] for
//! [`Weighted`] endpoints, or any [`Weigher`]). [`SlowStart`] ramps a new endpoint's
//! effective weight up over a window. [`OutlierDetection`] ejects endpoints that fail in
//! a row or whose success rate is far below the set's, for a time that grows with each
//! ejection, never more than a set percentage at once, and ignored in panic.
//!
//! Per-endpoint health shows up as **readiness**: an endpoint whose `poll_ready` is
//! `Pending` is skipped and polled again when it wakes its waker (each endpoint has its
//! own).
//!
//! # Per-endpoint circuit breakers
//!
//! [`Builder::endpoint_breaker`] gives every endpoint its own circuit breaker in its
//! readiness form ([`CircuitGate`](crate::breaker::CircuitGate) semantics):
//!
//! - an endpoint whose circuit is **open** is not ready, so it is not picked: requests go
//!   to the other endpoints instead of failing with
//!   [`BreakerOpen`](crate::error::BreakerOpen). Its timer wakes the balancer when the
//!   open period ends (a request waiting on an all-open set is then served);
//! - **half-open**, it is ready only while it can take a probe permit, so exactly
//!   [`half_open_probes`](crate::breaker::BreakerConfigBuilder::half_open_probes)
//!   requests reach it at once; enough good probes close it and it takes its share again;
//! - an endpoint reserved by an earlier `poll_ready` whose circuit opens meanwhile
//!   (requests in flight on it failed) is caught at `call`: its circuit rejects, the
//!   balancer takes it out of the ready list and picks again among the other ready
//!   endpoints. A request fails with `BreakerOpen` only when every ready endpoint's
//!   circuit rejected it;
//! - one circuit per endpoint: made on `Insert`, kept when an `Insert` replaces the key,
//!   dropped on `Remove`; [`Balance::endpoint_breaker`] returns its
//!   [`BreakerHandle`](crate::breaker::BreakerHandle). Outcomes are classified by the
//!   breaker configuration's classifier (which becomes the balancer's) and recorded as
//!   the breaker records them;
//! - **events with the endpoint's key**: every circuit reports its
//!   [`BreakerEvent`](crate::breaker::BreakerEvent)s (transitions, rejections) to the
//!   configuration's `on_event` and to its handle's streams, which do not say which
//!   endpoint it is; [`Builder::on_endpoint_event`] and [`Balance::on_endpoint_event`]
//!   (callbacks) and [`Balance::endpoint_events`] (a stream of `(key, event)`) get them
//!   keyed, for the current members and every endpoint discovered later, and nothing
//!   more from a removed one (see [`events`]);
//! - endpoints kept out by their circuits count against outlier detection's
//!   [ejection cap](OutlierDetectionBuilder::max_ejection_percent): ejections and open
//!   breakers together stay within it (the balancer never overrides a circuit, so
//!   circuits alone may exceed it).
//!
//! Any other per-endpoint middleware plugs in the same way, as a layer around each
//! endpoint (see [`discover::Layered`](crate::discover::Layered)); a gate from
//! [`BreakerConfig::gate_layer`](crate::breaker::BreakerConfig::gate_layer) works there
//! too, without the per-key handles and update semantics.

mod ejection;
mod endpoint;
pub mod events;
mod future;
mod hash;
mod key;
mod layer;
mod load_index;
pub mod picker;
mod readiness;
mod service;
mod set;
mod slow_start;

pub use crate::weighted::Weighted;
pub use ejection::{OutlierDetection, OutlierDetectionBuilder};
pub use endpoint::EndpointId;
pub use events::{EndpointEventCallback, EndpointEventStream, NoEndpointEvents};
pub use future::ResponseFuture;
pub use hash::stable_hash;
pub use key::{HashKey, NoKey};
pub use layer::{BalanceLayer, MakeBalance, MakeBalanceLayer, MakeFuture, WeightedBalanceLayer};
pub use picker::{
    Candidates, ConsistentHash, Cost, Endpoint, LeastConnections, LoadIndex, Picker,
    PowerOfTwoChoices, Random, RoundRobin, WeightedRoundRobin,
};
pub use service::{Balance, Builder, Weigher};
pub use slow_start::{SlowStart, SlowStartBuilder};

/// A duration in nanoseconds, saturating at `u64::MAX` (about 584 years).
pub(crate) fn nanos(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
