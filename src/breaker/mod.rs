//! A circuit breaker: stop calling a dependency that keeps failing, give it time, probe
//! it, and resume when it answers again.
//!
//! ```
//! use palisade::breaker::{BreakerConfig, CircuitState};
//! use palisade::error::BreakerOpen;
//! use std::time::Duration;
//! use tower::{Service, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), palisade::BoxError> {
//! let config = BreakerConfig::builder()
//!     .consecutive_failures(3)
//!     .sleep_window(Duration::from_secs(30))
//!     .build()?;
//! let layer = config.layer();
//! let handle = layer.handle();
//! let mut svc = tower::ServiceBuilder::new()
//!     .layer(layer)
//!     .service_fn(|_: ()| async { Err::<(), _>(std::io::Error::other("down")) });
//!
//! for _ in 0..3 {
//!     assert!(svc.ready().await?.call(()).await.is_err());
//! }
//! assert_eq!(handle.state(), CircuitState::Open);
//! let err = svc.ready().await?.call(()).await.unwrap_err();
//! let open = err.downcast_ref::<BreakerOpen>().unwrap();
//! assert!(open.retry_after().unwrap() <= Duration::from_secs(30));
//! # Ok(())
//! # }
//! ```
//!
//! # States
//! - **Closed**: calls pass and are counted in a [rolling window](crate::window). The trip
//!   conditions ([error percentage](BreakerConfigBuilder::error_percentage) over a
//!   [minimum volume](BreakerConfigBuilder::minimum_requests),
//!   [slow-call percentage](BreakerConfigBuilder::slow_call_percentage),
//!   [consecutive failures](BreakerConfigBuilder::consecutive_failures); any of them
//!   trips) hold whenever the window shows them: see
//!   [when the trip rule is checked](self#when-the-trip-rule-is-checked).
//! - **Open**: every call is rejected for the open period (the
//!   [sleep window](BreakerConfigBuilder::sleep_window), or an
//!   [exponential backoff](BreakerConfigBuilder::exponential_backoff) over repeated
//!   trips, or [your function](BreakerConfigBuilder::open_duration) of the trip count).
//!   No timer runs: the first call after the period moves the circuit to half-open.
//! - **HalfOpen**: at most [`half_open_probes`](BreakerConfigBuilder::half_open_probes)
//!   calls run at once, however many callers race; the rest are rejected.
//!   [`probes_to_close`](BreakerConfigBuilder::probes_to_close) successful probes close
//!   the circuit (clearing its statistics and its backoff); one failed probe opens it
//!   again, for a longer period if backing off. A probe that is dropped gives its permit
//!   back; a probe that overstays [`probe_max_wait`](BreakerConfigBuilder::probe_max_wait)
//!   loses it to the next caller and its late result is ignored.
//! - **ForcedOpen**, **ForcedClosed**, **MetricsOnly**: set by the [`BreakerHandle`]
//!   until [`reset`](BreakerHandle::reset). Forced closed admits all and counts nothing;
//!   metrics-only admits all, counts all, and never trips.
//!
//! # The service contract
//! - `poll_ready` forwards to the inner service and never fails because the circuit is
//!   open: tower reads a `poll_ready` error as a dead service.
//! - `call` on a rejecting circuit does **not** call the inner service; its future is
//!   ready at once with a [`BreakerOpen`](crate::error::BreakerOpen) (boxed) whose
//!   [`retry_after`](crate::error::BreakerOpen::retry_after) says when the next probe is
//!   admitted (`Some(ZERO)` when half-open with every permit taken, `None` when forced
//!   open). The capacity `poll_ready` reserved in the inner service stays reserved for
//!   the next call, as tower specifies. The rejection is counted as a short circuit.
//! - The result is classified by the [`Classify`](crate::classify::Classify) given to the
//!   builder (default: `Err` is a failure) before the error is boxed. A failure whose
//!   boxed error is an [`Elapsed`](crate::error::Elapsed) counts as a timeout, a
//!   [`BulkheadFull`](crate::error::BulkheadFull) as a bulkhead rejection: both are
//!   errors. [`Outcome::Ignored`](crate::classify::Outcome::Ignored) counts nothing.
//! - Dropping the response future counts nothing and releases its probe permit.
//! - A panic in the inner future counts as a failure: see [panics](self#panics).
//! - Results are tied to the state they were admitted under: a result that arrives after
//!   the circuit changed state cannot change it again (so a slow success cannot close a
//!   circuit that opened after it started), and one that arrives after the statistics
//!   were cleared is not counted at all.
//! - Clones of the service, and every service made by one [`CircuitBreakerLayer`], share
//!   one circuit; [`BreakerConfig::layer`] makes a new circuit each time.
//! - The future is `Send` when the inner future and the classifier are, and `'static`
//!   when they are.
//!
//! # Panics
//! A call whose inner future panics in `poll` is a failure: it is counted as an
//! [`Event::Failure`](crate::window::Event::Failure) in the window (the classifier has no
//! result to look at), extends the run of consecutive failures and is checked against
//! the trip rule like any failure; a panicking half-open probe is a failed probe, so the
//! circuit opens again and the permit is not held. This is recorded while the panic
//! unwinds through the response future's `poll`, before it reaches the caller (tokio's
//! task, a `catch_unwind`), and the panic then goes on unchanged. A panic raised by code
//! that recording runs (an event callback) is caught and dropped there, since a second
//! panic during unwinding would abort the process. The same holds for the
//! [`CircuitGate`] and the balancer's [endpoint
//! breakers](crate::balance::Builder::endpoint_breaker). A panicking classifier, by
//! contrast, counts nothing (the call's outcome is unknown) and gives a probe permit back.
//!
//! # When the trip rule is checked
//! The rule: a closed circuit whose window holds at least `minimum_requests` calls with
//! the error (or slow-call) percentage at its threshold, or whose last
//! `consecutive_failures` calls failed, is open. It holds after every completed call,
//! whatever the order of outcomes: ten failures then ten successes open a circuit with a
//! volume of 20 at 50 % on the twentieth call, as ten successes then ten failures do.
//! The conditions are checked, on the window as of the call's completion:
//! - after every failure, timeout, bulkhead rejection and [panic](self#panics);
//! - after every slow success, when a slow-call percentage is set;
//! - after a success, only when it is one that can make a condition hold, which is
//!   when, at the previous check (that did not trip),
//!   - the window was below `minimum_requests` and the errors (or slow calls) in it
//!     would reach their percentage at that volume: every success checks until the
//!     volume is reached, since the one that reaches it may trip;
//!   - or the window held errors (or slow calls) and a bucket of the time window has
//!     rolled over since: calls that left the window may leave a higher share behind,
//!     so the first success filed in a later bucket checks;
//!   - or a failure has been recorded since (the first success after failures checks).
//!
//! Any other success lowers both percentages and ends a run of failures, so it cannot
//! make a condition hold and is not checked: a circuit that sees no error never reads
//! its window on the call path. The checks are exact for calls completed one at a time.
//! Calls completing at
//! the same instant on several threads may each be judged without the others' outcomes,
//! so a window that shows the rule only for that instant can be missed; the next check
//! (at the latest on the next failure, or the first success of the next bucket) judges
//! the window with all of them.
//!
//! # Readiness form: [`CircuitGate`]
//! In front of one endpoint of a load balancer, rejecting from `call` is the wrong
//! answer: the request should go to another endpoint. [`CircuitGate`] (from
//! [`BreakerConfig::gate`] or, one circuit per service, [`BreakerConfig::gate_layer`])
//! is the same circuit shown as readiness: `poll_ready` is `Pending` while the circuit
//! is open (or forced open) and arms a tokio timer for the end of the open period; in
//! half-open it is `Ready` only when it could take a probe permit, which it holds for the
//! next `call` and gives back if dropped first; closed, it forwards to the inner service.
//! While the gate waits, the circuit also wakes its task on every transition and
//! whenever a probe permit comes back. It still never fails `poll_ready` because the circuit is open, and
//! it records outcomes exactly as the breaker does. The balancer gives every endpoint one
//! through [`Builder::endpoint_breaker`](crate::balance::Builder::endpoint_breaker).
//! The breaker itself is unchanged: its call path does not know gates exist.
//!
//! # Statistics
//! The window ([`BreakerConfigBuilder::window`], 10 s in 10 buckets by default) counts
//! successes, failures, timeouts, bulkhead rejections, slow calls and latency of the calls
//! the circuit admitted, and the calls it rejected as short circuits (in a time window
//! only: in a count window they would push real outcomes out). It is cleared when the
//! circuit closes from half-open and on [`reset`](BreakerHandle::reset), so a closed
//! circuit judges only what happened since it closed. [`BreakerHandle::metrics`] reads
//! it, with the consecutive-failure count and the trip counts.
//!
//! # Cost
//! On a closed circuit an untimed call (the default, see
//! [`record_latency`](BreakerConfigBuilder::record_latency)) costs one atomic load to
//! admit; one more load, one clock read (see [`clock`](crate::clock)), one record into the window (an atomic swap that takes the
//! thread's cell, then plain stores) and two loads from one cache line (the run of
//! failures, and the clock reading from which successes check the trip rule) to
//! complete. A timed call reads the clock itself at admission and at completion instead
//! (what a read costs: `cargo bench --bench layers -- clock/`). The response future holds
//! a reference count on the circuit (an `Arc`, so a dropped breaker's memory goes with
//! its last call; `shared.rs` has the measurements behind that choice). No lock, no
//! allocation, and, as long as each thread calls its own clone, no write to a cache line
//! that another thread writes on success but the reference count's. Locks are taken only
//! to change state (and to deliver events when somebody listens).
//!
//! # Events
//! Transitions and rejections go to the [`on_event`](BreakerConfigBuilder::on_event)
//! callback and to every [`EventStream`] from [`BreakerHandle::events`]; see
//! [`events`] for ordering and lag. With the `tracing` feature, transitions are also
//! logged at `INFO` and rejections at `TRACE`.

mod circuit;
mod config;
pub mod events;
mod future;
pub(crate) mod gate;
mod handle;
mod layer;
mod open_duration;
mod policy;
mod probe;
mod service;
mod shared;

pub use circuit::{CircuitState, TransitionReason};
pub use config::{BreakerConfig, BreakerConfigBuilder, MAX_HALF_OPEN_PROBES};
pub use events::{BreakerEvent, EventStream};
pub use future::ResponseFuture;
pub use gate::{CircuitGate, CircuitGateLayer};
pub use handle::{BreakerHandle, BreakerMetrics};
pub use layer::CircuitBreakerLayer;
pub use service::CircuitBreaker;
