//! The breaker's control panel: a cheap, cloneable [`BreakerHandle`] to read a circuit's
//! state and statistics, force it, reset it, and subscribe to its events.
//!
//! Every clone of a handle, like every clone of the services sharing the circuit, acts on
//! the same circuit. A handle keeps the circuit alive.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::circuit::CircuitState;
use super::events::EventStream;
use super::shared::OwnedCircuit;
use crate::window::Snapshot;

/// A circuit's statistics at one instant, from [`BreakerHandle::metrics`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BreakerMetrics {
    /// The state.
    pub state: CircuitState,
    /// The rolling window's counts and latency (since the circuit last closed from
    /// half-open, or was reset).
    pub window: Snapshot,
    /// Failures in a row, right now (kept while closed or metrics-only).
    pub consecutive_failures: u32,
    /// Trips since the circuit last closed (the backoff exponent).
    pub trips: u32,
    /// Trips since the circuit was built or reset.
    pub total_trips: u64,
    /// When open: how long until the next call becomes a probe. `Some(ZERO)` when the
    /// open period is over but no call has arrived yet to start the half-open period.
    pub retry_after: Option<Duration>,
    /// When half-open: probes in flight that have not overstayed `probe_max_wait`.
    pub probes_in_flight: u32,
}

/// Reads and steers one circuit. Get one from
/// [`CircuitBreakerLayer::handle`](super::CircuitBreakerLayer::handle) or
/// [`CircuitBreaker::handle`](super::CircuitBreaker::handle).
///
/// ```
/// use palisade::breaker::{BreakerConfig, CircuitState};
///
/// let layer = BreakerConfig::default().layer();
/// let handle = layer.handle();
/// handle.force_open();
/// assert_eq!(handle.state(), CircuitState::ForcedOpen);
/// handle.reset();
/// assert_eq!(handle.state(), CircuitState::Closed);
/// ```
#[derive(Clone)]
pub struct BreakerHandle {
    shared: Arc<OwnedCircuit>,
}

impl BreakerHandle {
    pub(crate) fn new(shared: Arc<OwnedCircuit>) -> Self {
        BreakerHandle { shared }
    }

    /// The current state. An open circuit whose open period is over still reads `Open`
    /// until the next call arrives and becomes a probe.
    pub fn state(&self) -> CircuitState {
        self.shared.state()
    }

    /// Whether a call made now would be admitted (closed; open with its period over, so
    /// the call would become a probe; half-open with a free permit). It admits nothing
    /// and changes nothing, and other callers may change the answer at once: a hint for
    /// routing (a balancer steering around open endpoints), not a reservation.
    pub fn is_call_permitted(&self) -> bool {
        self.shared.is_call_permitted()
    }

    /// The statistics now.
    pub fn metrics(&self) -> BreakerMetrics {
        self.shared.metrics()
    }

    /// Rejects every call until [`reset`](Self::reset) (or another force). Statistics are
    /// kept.
    pub fn force_open(&self) {
        self.shared.force(CircuitState::ForcedOpen);
    }

    /// Admits every call and counts nothing until [`reset`](Self::reset) (or another
    /// force).
    pub fn force_closed(&self) {
        self.shared.force(CircuitState::ForcedClosed);
    }

    /// Admits every call and keeps counting, but never trips: a dry run of the trip
    /// conditions, until [`reset`](Self::reset) (or a force).
    pub fn metrics_only(&self) {
        self.shared.force(CircuitState::MetricsOnly);
    }

    /// Back to `Closed` from any state, with the statistics cleared and the backoff
    /// forgotten. Results of calls admitted before the reset are ignored.
    pub fn reset(&self) {
        self.shared.reset();
    }

    /// A stream of the circuit's events from now on. See
    /// [`events`](super::events) for ordering and lag.
    pub fn events(&self) -> EventStream {
        self.shared.subscribe()
    }
}

impl fmt::Debug for BreakerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerHandle")
            .field("state", &self.state())
            .finish()
    }
}
