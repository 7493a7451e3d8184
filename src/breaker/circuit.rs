//! The circuit's state machine, pure: no atomics, no clock, no tower.
//!
//! [`Circuit`] owns the logical state and decides every transition from explicit inputs
//! (the generation a call was admitted under, the time `now` in clock nanoseconds, the
//! trip reason the policy found). The shared shell (`shared.rs`) holds it under a mutex
//! that is taken only to transition, and mirrors its state in one atomic
//! [`PackedState`] that the call path reads.
//!
//! Two counters make stale results harmless:
//! - the **generation** moves on every transition; only a result admitted under the
//!   current generation may drive a transition (so a slow success cannot close a circuit
//!   that opened after it started, and a slow failure cannot trip a circuit that closed
//!   after it started);
//! - the **epoch** moves when the statistics are cleared (a close from half-open, a
//!   reset); a result admitted under an older epoch is not recorded at all, so the window
//!   only ever holds outcomes of its own period.

use std::fmt;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::SeedableRng;

use super::open_duration::OpenDuration;

/// The state of a circuit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum CircuitState {
    /// Calls pass through and are counted; the trip policy watches them.
    Closed = 0,
    /// Calls are rejected with [`BreakerOpen`](crate::error::BreakerOpen) until the open
    /// period ends; the next call after it moves the circuit to `HalfOpen`.
    Open,
    /// A limited number of probe calls pass; the rest are rejected. Enough successful
    /// probes close the circuit, one failed probe opens it again.
    HalfOpen,
    /// Forced open by the handle: every call is rejected until the handle releases it.
    ForcedOpen,
    /// Forced closed by the handle: every call passes and nothing is counted.
    ForcedClosed,
    /// Every call passes and is counted (statistics, events), but the circuit never
    /// trips: a dry run of the trip policy.
    MetricsOnly,
}

impl CircuitState {
    #[cfg(test)]
    const ALL: [CircuitState; 6] = [
        CircuitState::Closed,
        CircuitState::Open,
        CircuitState::HalfOpen,
        CircuitState::ForcedOpen,
        CircuitState::ForcedClosed,
        CircuitState::MetricsOnly,
    ];

    /// The state's code in a [`PackedState`]. Not the discriminant: the two states whose
    /// calls are admitted and counted freely, `Closed` and `MetricsOnly`, are 0 and 1, so
    /// the call path tells them from the rest with one mask (see
    /// [`PackedState::admits_counted`]).
    #[inline]
    fn code(self) -> u64 {
        match self {
            CircuitState::Closed => 0,
            CircuitState::MetricsOnly => 1,
            CircuitState::Open => 2,
            CircuitState::HalfOpen => 3,
            CircuitState::ForcedOpen => 4,
            CircuitState::ForcedClosed => 5,
        }
    }

    #[inline]
    fn from_code(code: u64) -> Self {
        // Only `PackedState::new` writes codes, always from a real state.
        match code {
            0 => CircuitState::Closed,
            1 => CircuitState::MetricsOnly,
            2 => CircuitState::Open,
            3 => CircuitState::HalfOpen,
            4 => CircuitState::ForcedOpen,
            _ => CircuitState::ForcedClosed,
        }
    }

    /// Whether calls in this state reach the inner service without a permit.
    pub fn admits_all(self) -> bool {
        matches!(
            self,
            CircuitState::Closed | CircuitState::ForcedClosed | CircuitState::MetricsOnly
        )
    }
}

impl fmt::Display for CircuitState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half-open",
            CircuitState::ForcedOpen => "forced-open",
            CircuitState::ForcedClosed => "forced-closed",
            CircuitState::MetricsOnly => "metrics-only",
        })
    }
}

/// Why a circuit changed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransitionReason {
    /// The error percentage reached its threshold with enough requests in the window.
    ErrorPercentage,
    /// The slow-call percentage reached its threshold with enough requests in the window.
    SlowCallPercentage,
    /// The configured number of failures happened in a row.
    ConsecutiveFailures,
    /// The open period ended (observed by the first call after it).
    OpenPeriodElapsed,
    /// Enough half-open probes succeeded.
    ProbesSucceeded,
    /// A half-open probe failed.
    ProbeFailed,
    /// The handle forced the state (`force_open`, `force_closed`, `metrics_only`).
    Forced,
    /// The handle reset the circuit to `Closed`, clearing its statistics.
    Reset,
}

impl fmt::Display for TransitionReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TransitionReason::ErrorPercentage => "error percentage reached its threshold",
            TransitionReason::SlowCallPercentage => "slow-call percentage reached its threshold",
            TransitionReason::ConsecutiveFailures => "too many consecutive failures",
            TransitionReason::OpenPeriodElapsed => "open period elapsed",
            TransitionReason::ProbesSucceeded => "half-open probes succeeded",
            TransitionReason::ProbeFailed => "a half-open probe failed",
            TransitionReason::Forced => "forced by the handle",
            TransitionReason::Reset => "reset by the handle",
        })
    }
}

/// State, epoch and generation packed in one `u64`, so the call path learns all three
/// with one atomic load.
///
/// Layout: bits 0..4 state, 4..24 epoch (wrapping), 24..64 generation (wrapping).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct PackedState(pub(crate) u64);

impl PackedState {
    const STATE_BITS: u32 = 4;
    const STATE_MASK: u64 = (1 << Self::STATE_BITS) - 1;
    const EPOCH_BITS: u32 = 20;
    const EPOCH_MASK: u64 = (1 << Self::EPOCH_BITS) - 1;
    const GEN_SHIFT: u32 = Self::STATE_BITS + Self::EPOCH_BITS;

    pub(crate) fn new(state: CircuitState, epoch: u64, generation: u64) -> Self {
        PackedState(
            state.code()
                | ((epoch & Self::EPOCH_MASK) << Self::STATE_BITS)
                | (generation << Self::GEN_SHIFT),
        )
    }

    #[inline]
    pub(crate) fn state(self) -> CircuitState {
        CircuitState::from_code(self.0 & Self::STATE_MASK)
    }

    /// Whether the state is `state`: one mask and one compare, without decoding the
    /// state (the call path asks this instead of matching on [`state`](Self::state)).
    #[inline]
    pub(crate) fn is(self, state: CircuitState) -> bool {
        self.0 & Self::STATE_MASK == state.code()
    }

    /// Whether the state is `Closed` or `MetricsOnly`: every call is admitted without a
    /// permit and counted. One mask and one test.
    #[inline]
    pub(crate) fn admits_counted(self) -> bool {
        self.0 & (Self::STATE_MASK & !1) == 0
    }

    #[inline]
    pub(crate) fn epoch(self) -> u64 {
        (self.0 >> Self::STATE_BITS) & Self::EPOCH_MASK
    }

    #[inline]
    pub(crate) fn generation(self) -> u64 {
        self.0 >> Self::GEN_SHIFT
    }
}

impl fmt::Debug for PackedState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PackedState")
            .field("state", &self.state())
            .field("epoch", &self.epoch())
            .field("generation", &self.generation())
            .finish()
    }
}

/// One state change, for the shell to apply: publish `word`, store `open_until`, clear
/// the probe permits or the statistics, emit the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Transition {
    pub(crate) from: CircuitState,
    pub(crate) to: CircuitState,
    pub(crate) reason: TransitionReason,
    pub(crate) word: PackedState,
    /// When `to` is `Open`: the clock reading at which the open period ends.
    pub(crate) open_until: u64,
    /// The statistics (window, consecutive failures) start over.
    pub(crate) clears_stats: bool,
}

/// The settings the state machine itself needs.
#[derive(Clone, Debug)]
pub(crate) struct CircuitSettings {
    pub(crate) open_duration: OpenDuration,
    pub(crate) probes_to_close: u32,
    pub(crate) jitter_seed: u64,
}

/// The circuit state machine. See the [module docs](self).
#[derive(Debug)]
pub(crate) struct Circuit {
    state: CircuitState,
    generation: u64,
    epoch: u64,
    open_until: u64,
    /// Trips since the circuit last closed: the backoff exponent.
    trips: u32,
    /// Trips since the circuit was built or reset.
    total_trips: u64,
    probe_successes: u32,
    settings: CircuitSettings,
    rng: SmallRng,
}

impl Circuit {
    pub(crate) fn new(settings: CircuitSettings) -> Self {
        let rng = SmallRng::seed_from_u64(settings.jitter_seed);
        Circuit {
            state: CircuitState::Closed,
            generation: 0,
            epoch: 0,
            open_until: 0,
            trips: 0,
            total_trips: 0,
            probe_successes: 0,
            settings,
            rng,
        }
    }

    pub(crate) fn state(&self) -> CircuitState {
        self.state
    }

    pub(crate) fn word(&self) -> PackedState {
        PackedState::new(self.state, self.epoch, self.generation)
    }

    /// Trips since the circuit last closed.
    pub(crate) fn trips(&self) -> u32 {
        self.trips
    }

    /// Trips since the circuit was built or reset.
    pub(crate) fn total_trips(&self) -> u64 {
        self.total_trips
    }

    /// When open: the clock reading at which the open period ends.
    pub(crate) fn open_until(&self) -> Option<u64> {
        (self.state == CircuitState::Open).then_some(self.open_until)
    }

    fn transition(
        &mut self,
        to: CircuitState,
        reason: TransitionReason,
        clears_stats: bool,
    ) -> Transition {
        let from = self.state;
        self.state = to;
        self.generation = self.generation.wrapping_add(1);
        if clears_stats {
            self.epoch = self.epoch.wrapping_add(1);
        }
        self.probe_successes = 0;
        Transition {
            from,
            to,
            reason,
            word: self.word(),
            open_until: self.open_until,
            clears_stats,
        }
    }

    fn open(&mut self, now: u64, reason: TransitionReason) -> Transition {
        self.trips = self.trips.saturating_add(1);
        self.total_trips = self.total_trips.saturating_add(1);
        let period = self
            .settings
            .open_duration
            .for_trip(self.trips, &mut self.rng);
        self.open_until = now.saturating_add(duration_nanos(period));
        self.transition(CircuitState::Open, reason, false)
    }

    /// The trip policy fired for a call admitted under `generation`: open, if the circuit
    /// is still closed under that generation.
    pub(crate) fn trip(
        &mut self,
        generation: u64,
        now: u64,
        reason: TransitionReason,
    ) -> Option<Transition> {
        (self.state == CircuitState::Closed && self.current(generation))
            .then(|| self.open(now, reason))
    }

    /// A call arrived at an open circuit at `now`: move to half-open if the open period
    /// (of this generation) is over.
    pub(crate) fn open_period_elapsed(&mut self, generation: u64, now: u64) -> Option<Transition> {
        (self.state == CircuitState::Open && self.current(generation) && now >= self.open_until)
            .then(|| {
                self.transition(
                    CircuitState::HalfOpen,
                    TransitionReason::OpenPeriodElapsed,
                    false,
                )
            })
    }

    /// A probe admitted under `generation` succeeded: close once enough have.
    pub(crate) fn probe_succeeded(&mut self, generation: u64) -> Option<Transition> {
        if self.state != CircuitState::HalfOpen || !self.current(generation) {
            return None;
        }
        self.probe_successes += 1;
        if self.probe_successes < self.settings.probes_to_close {
            return None;
        }
        self.trips = 0;
        Some(self.transition(
            CircuitState::Closed,
            TransitionReason::ProbesSucceeded,
            true,
        ))
    }

    /// A probe admitted under `generation` failed: open again, for longer.
    pub(crate) fn probe_failed(&mut self, generation: u64, now: u64) -> Option<Transition> {
        (self.state == CircuitState::HalfOpen && self.current(generation))
            .then(|| self.open(now, TransitionReason::ProbeFailed))
    }

    /// The handle forces `to` (`ForcedOpen`, `ForcedClosed` or `MetricsOnly`). Forcing the
    /// state the circuit is already in changes nothing.
    pub(crate) fn force(&mut self, to: CircuitState) -> Option<Transition> {
        debug_assert!(matches!(
            to,
            CircuitState::ForcedOpen | CircuitState::ForcedClosed | CircuitState::MetricsOnly
        ));
        (self.state != to).then(|| self.transition(to, TransitionReason::Forced, false))
    }

    /// The handle resets the circuit: closed, statistics cleared, backoff forgotten.
    pub(crate) fn reset(&mut self) -> Transition {
        self.trips = 0;
        self.total_trips = 0;
        self.transition(CircuitState::Closed, TransitionReason::Reset, true)
    }

    /// Whether `generation` (as read back from a [`PackedState`]) is the current one.
    fn current(&self, generation: u64) -> bool {
        generation == self.word().generation()
    }
}

pub(crate) fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    fn circuit(probes_to_close: u32) -> Circuit {
        Circuit::new(CircuitSettings {
            open_duration: OpenDuration::fixed(Duration::from_secs(5)),
            probes_to_close,
            jitter_seed: 7,
        })
    }

    #[test]
    fn word_round_trips_state_epoch_and_generation() {
        for state in CircuitState::ALL {
            let w = PackedState::new(state, 0xABCDE, (1 << 40) - 3);
            assert_eq!(w.state(), state);
            assert_eq!(w.epoch(), 0xABCDE);
            assert_eq!(w.generation(), (1 << 40) - 3);
            for other in CircuitState::ALL {
                assert_eq!(w.is(other), other == state);
            }
            assert_eq!(
                w.admits_counted(),
                matches!(state, CircuitState::Closed | CircuitState::MetricsOnly)
            );
        }
        // The epoch wraps within its field instead of spilling into the generation.
        let w = PackedState::new(CircuitState::Open, 1 << 20, 5);
        assert_eq!((w.epoch(), w.generation()), (0, 5));
    }

    #[test]
    fn trip_opens_only_a_closed_circuit_of_the_same_generation() {
        let mut c = circuit(1);
        let g = c.word().generation();
        assert!(c
            .trip(g + 1, 0, TransitionReason::ErrorPercentage)
            .is_none());
        let t = c.trip(g, 10, TransitionReason::ErrorPercentage).unwrap();
        assert_eq!((t.from, t.to), (CircuitState::Closed, CircuitState::Open));
        assert_eq!(t.open_until, 10 + 5 * SEC);
        assert!(!t.clears_stats);
        assert_eq!(c.trips(), 1);
        // A second verdict from the same (now stale) generation changes nothing.
        assert!(c.trip(g, 11, TransitionReason::ErrorPercentage).is_none());
    }

    #[test]
    fn open_period_elapses_at_its_end_and_not_before() {
        let mut c = circuit(1);
        let t = c.trip(0, 0, TransitionReason::ConsecutiveFailures).unwrap();
        let g = t.word.generation();
        assert!(c.open_period_elapsed(g, 5 * SEC - 1).is_none());
        let t = c.open_period_elapsed(g, 5 * SEC).unwrap();
        assert_eq!(t.to, CircuitState::HalfOpen);
        assert_eq!(t.reason, TransitionReason::OpenPeriodElapsed);
    }

    #[test]
    fn probes_close_after_the_configured_number_and_clear_stats() {
        let mut c = circuit(2);
        c.trip(0, 0, TransitionReason::ErrorPercentage).unwrap();
        let g = c
            .open_period_elapsed(c.word().generation(), 5 * SEC)
            .unwrap();
        let g = g.word.generation();
        let epoch = c.word().epoch();
        assert!(c.probe_succeeded(g).is_none());
        let t = c.probe_succeeded(g).unwrap();
        assert_eq!(t.to, CircuitState::Closed);
        assert!(t.clears_stats);
        assert_eq!(t.word.epoch(), epoch + 1);
        assert_eq!(c.trips(), 0);
    }

    #[test]
    fn failed_probe_reopens_and_counts_another_trip() {
        let mut c = circuit(1);
        c.trip(0, 0, TransitionReason::ErrorPercentage).unwrap();
        let g = c
            .open_period_elapsed(c.word().generation(), 5 * SEC)
            .unwrap()
            .word
            .generation();
        let t = c.probe_failed(g, 6 * SEC).unwrap();
        assert_eq!((t.from, t.to), (CircuitState::HalfOpen, CircuitState::Open));
        assert_eq!(t.open_until, 11 * SEC);
        assert_eq!((c.trips(), c.total_trips()), (2, 2));
        // A late result of the probe's generation is ignored.
        assert!(c.probe_succeeded(g).is_none());
    }

    #[test]
    fn forcing_and_reset_move_the_generation() {
        let mut c = circuit(1);
        let g0 = c.word().generation();
        let t = c.force(CircuitState::ForcedOpen).unwrap();
        assert_ne!(t.word.generation(), g0);
        assert!(c.force(CircuitState::ForcedOpen).is_none());
        assert!(c
            .trip(t.word.generation(), 0, TransitionReason::ErrorPercentage)
            .is_none());
        let t = c.reset();
        assert_eq!(
            (t.from, t.to),
            (CircuitState::ForcedOpen, CircuitState::Closed)
        );
        assert!(t.clears_stats);
        assert_eq!(c.state(), CircuitState::Closed);
    }

    mod model {
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Op {
            Trip { stale: bool },
            Elapse { after: u64, stale: bool },
            ProbeOk { stale: bool },
            ProbeFailed { stale: bool },
            Force(CircuitState),
            Reset,
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                any::<bool>().prop_map(|stale| Op::Trip { stale }),
                (0..10 * SEC, any::<bool>()).prop_map(|(after, stale)| Op::Elapse { after, stale }),
                any::<bool>().prop_map(|stale| Op::ProbeOk { stale }),
                any::<bool>().prop_map(|stale| Op::ProbeFailed { stale }),
                prop_oneof![
                    Just(CircuitState::ForcedOpen),
                    Just(CircuitState::ForcedClosed),
                    Just(CircuitState::MetricsOnly)
                ]
                .prop_map(Op::Force),
                Just(Op::Reset),
            ]
        }

        proptest! {
            #[test]
            fn transitions_follow_the_rules(ops in proptest::collection::vec(op(), 1..60)) {
                let mut c = circuit(2);
                let mut now = 0u64;
                for op in ops {
                    let before = c.word();
                    let gen = before.generation();
                    let g = |stale: bool| if stale { gen.wrapping_sub(1) } else { gen };
                    let t = match op {
                        Op::Trip { stale } => c.trip(g(stale), now, TransitionReason::ErrorPercentage),
                        Op::Elapse { after, stale } => {
                            now += after;
                            c.open_period_elapsed(g(stale), now)
                        }
                        Op::ProbeOk { stale } => c.probe_succeeded(g(stale)),
                        Op::ProbeFailed { stale } => c.probe_failed(g(stale), now),
                        Op::Force(to) => c.force(to),
                        Op::Reset => Some(c.reset()),
                    };
                    let stale = matches!(
                        op,
                        Op::Trip { stale: true }
                            | Op::Elapse { stale: true, .. }
                            | Op::ProbeOk { stale: true }
                            | Op::ProbeFailed { stale: true }
                    );
                    match t {
                        None => prop_assert_eq!(c.word(), before, "no transition, no change"),
                        Some(t) => {
                            prop_assert!(!stale, "a stale generation moved the circuit: {:?}", op);
                            prop_assert_eq!(t.from, before.state());
                            prop_assert_eq!(t.word, c.word());
                            prop_assert_eq!(t.word.generation(), (gen + 1) & ((1 << 40) - 1));
                            prop_assert_eq!(
                                t.word.epoch() != before.epoch(),
                                t.clears_stats
                            );
                            let legal = matches!(
                                (t.from, t.to, t.reason),
                                (CircuitState::Closed, CircuitState::Open, _)
                                    | (CircuitState::Open, CircuitState::HalfOpen, TransitionReason::OpenPeriodElapsed)
                                    | (CircuitState::HalfOpen, CircuitState::Open, TransitionReason::ProbeFailed)
                                    | (CircuitState::HalfOpen, CircuitState::Closed, TransitionReason::ProbesSucceeded)
                                    | (_, CircuitState::Closed, TransitionReason::Reset)
                                    | (_, CircuitState::ForcedOpen | CircuitState::ForcedClosed | CircuitState::MetricsOnly, TransitionReason::Forced)
                            );
                            prop_assert!(legal, "illegal transition {:?}", t);
                            if t.to == CircuitState::Open {
                                prop_assert_eq!(t.open_until, now + 5 * SEC);
                                prop_assert!(c.trips() >= 1);
                            }
                            if t.to == CircuitState::Closed {
                                prop_assert_eq!(c.trips(), 0);
                            }
                        }
                    }
                }
            }
        }
    }
}
