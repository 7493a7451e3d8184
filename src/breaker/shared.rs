//! The circuit as every clone of a breaker service shares it: the lock-free call path
//! around the pure [`Circuit`].
//!
//! The call path reads one atomic [`PackedState`] (state, epoch, generation) and, when
//! closed, never takes a lock: admission is that load plus a clock read (raw ticks, none
//! when latency is not recorded); completion is a second load, compared once with the
//! admission's word, a clock read, one [`RollingWindow::record`] (a try-lock swap on the
//! thread's cell) and a load of the consecutive-failure counter (written only when it
//! changes) and of the clock reading from which successes check the trip rule, on the
//! same line. Stale results, probes, failures and slow calls leave the closed success
//! path through cold functions. The trip conditions are evaluated, from a window
//! sample, on every failure and slow call and on the successes
//! [`TripPolicy::success_check`] names (the rule is in the [breaker docs](super)), and
//! the mutex around the [`Circuit`] is taken only to transition.
//!
//! The open → half-open step is lazy: the first call after the open period ends makes
//! it. Half-open admission is a compare-and-swap on a probe slot
//! ([`HalfOpenProbes`]); an expired probe is reclaimed by the next caller, so nothing
//! needs a background task and the circuit can never stay wedged in half-open.
//!
//! # Why a response future holds an `Arc` of the circuit
//! Services, layers, gates and handles own the circuit through [`OwnedCircuit`]; each
//! response future holds a plain `Arc<SharedCircuit>` (one increment in `call`, one
//! decrement at completion). A per-thread *directory* (`breaker/directory.rs`, now
//! retired) used to save those two read-modify-writes: futures kept an id, looked up per thread in a process-wide
//! registry, at the price of that registry, a rescan of every thread's directory after
//! each retirement and a dropped breaker's memory lingering until every thread that had
//! used it completed another call. It was kept only if it clearly won (by more than
//! 10 %, consistently); it did not, so it was retired. Measured on a shared 2-core
//! machine (load 5 to 14 from other builds), the two builds alternated 8 times, each
//! into its own `CRITERION_HOME`:
//!
//! ```text
//! CRITERION_HOME=<dir> cargo bench --bench layers -- palisade_breaker
//! ```
//!
//! medians of the 8 runs' medians, ns per call (directory → `Arc`, ratio `Arc`/directory):
//!
//! | bench | directory | `Arc` | ratio |
//! |---|---|---|---|
//! | `contended/palisade_breaker`, 1 / 2 / 4 workers | 30.7 / 27.8 / 21.0 | 29.8 / 28.9 / 23.1 | 0.97 / 1.04 / 1.10 |
//! | `contended/palisade_breaker_timed`, 1 / 2 / 4 workers | 50.0 / 41.3 / 26.4 | 41.4 / 36.9 / 26.8 | 0.83 / 0.89 / 1.02 |
//! | `per_call/palisade_breaker` (6 more runs of that group alone) | 84.2 | 84.1 | 1.00 |
//! | `per_call/palisade_breaker_timed` (same) | 121.1 | 91.9 | 0.76 |
//!
//! No group shows the directory ahead by 10 % in both the untimed and the timed
//! breaker; the single 10 % (untimed, 4 workers on 2 cores) is within the spread of its
//! own runs (14.8 to 27.2 ns). Re-run the command on a quiet machine before reviving it.

use std::fmt;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Waker;
use std::time::Duration;

use futures::task::AtomicWaker;
use parking_lot::Mutex;

use super::circuit::{duration_nanos, Circuit, CircuitState, PackedState, Transition};
use super::config::BreakerConfig;
use super::events::{BreakerEvent, EventHub, EventStream};
use super::handle::BreakerMetrics;
use super::policy::{SuccessCheck, TripPolicy, TripSample};
use super::probe::{HalfOpenProbes, ProbePermit};
use crate::clock::Clock;
use crate::error::BreakerOpen;
use crate::sync::CachePadded;
use crate::window::{Event, RollingWindow, WindowKind};

/// What a call was admitted under, kept by its response future.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Admission {
    word: PackedState,
    /// The clock's [`ticks`](Clock::ticks) at admission, converted to nanoseconds only
    /// at completion, with the latency; [`UNTIMED`] for a call that is not timed, so
    /// that its latency comes out as zero without a branch.
    start_ticks: u64,
    /// The half-open probe permit, if the call is a probe and still holds it.
    probe: Option<ProbePermit>,
}

impl Admission {
    /// Whether the call is a probe still holding its permit.
    #[inline]
    pub(crate) fn holds_probe(&self) -> bool {
        self.probe.is_some()
    }

    /// Takes the probe permit out, so that it is released exactly once.
    pub(crate) fn take_probe(&mut self) -> Option<ProbePermit> {
        self.probe.take()
    }
}

/// One circuit, shared. See the [module docs](self).
#[derive(Debug)]
pub(crate) struct SharedCircuit {
    /// Read on every call; written only by transitions.
    word: CachePadded<AtomicU64>,
    /// Written on failures and by the checks that follow them; kept off the word's line
    /// so that failures do not slow admissions down.
    run: CachePadded<FailureRun>,
    /// Serialises the checks made on successes, so that the last one to say which
    /// successes check next is the last one that read the window.
    success_checks: Mutex<()>,
    /// When open: the clock reading at which the open period ends.
    open_until: AtomicU64,
    clock: Clock,
    window: RollingWindow,
    probes: HalfOpenProbes,
    policy: TripPolicy,
    /// Slow-call threshold in nanoseconds; `u64::MAX` when there is none.
    slow_nanos: u64,
    /// The latency at or above which a success checks the trip rule: the slow-call
    /// threshold when a slow-call percentage watches it, else `u64::MAX`.
    slow_check_nanos: u64,
    /// Whether calls are timed; when not, the clock is read only at completion and
    /// every latency is recorded as zero (the builder rejects slow-call settings then).
    record_latency: bool,
    /// Short circuits go into time windows; in a count window they would push real
    /// outcomes out, so they are left out of it.
    record_short_circuits: bool,
    /// Set when the last owner is gone (see [`OwnedCircuit`]).
    retired: AtomicBool,
    /// Written by transitions and `metrics()`: kept off the lines the call path reads.
    circuit: CachePadded<Mutex<Circuit>>,
    events: EventHub,
    /// The task of a readiness gate (`gate.rs`) waiting for this circuit to change:
    /// woken on every transition and whenever a probe permit is given back. Touched only
    /// off the closed call path.
    gate_waker: AtomicWaker,
}

/// What a closed success reads besides the window, on one line written only by failures
/// and by the checks that follow them: a run of successes only reads it.
#[derive(Debug)]
struct FailureRun {
    /// Failures in a row. A non-zero count also tells the next success to check the
    /// trip rule: the failures changed what successes can do.
    consecutive: AtomicU32,
    /// Successes filed at or after this clock reading check the trip rule: 0 for every
    /// success, `u64::MAX` for none (see [`TripPolicy::success_check`]).
    check_successes_from: AtomicU64,
}

/// [`FailureRun::check_successes_from`] for no success.
const NO_SUCCESS: u64 = u64::MAX;

/// What a readiness gate learns from [`SharedCircuit::check_gate`].
#[derive(Debug)]
pub(crate) enum GateCheck {
    /// The state admits every call: admit it in `call`, as the breaker does.
    Pass,
    /// Half-open, and this probe permit was taken for the gate's next call.
    Probe(Admission),
    /// Open until this clock reading, or half-open with every permit taken until the
    /// earliest one expires.
    WaitUntil(u64),
    /// Forced open: wait for the handle to change the state.
    WaitForChange,
}

/// The start of an untimed call: no reading is later, so its latency is zero.
const UNTIMED: u64 = u64::MAX;

/// How many state changes an admission rides through before it gives up and rejects.
const ADMISSION_ATTEMPTS: usize = 4;

impl SharedCircuit {
    pub(crate) fn new<C>(config: &BreakerConfig<C>) -> Self {
        let circuit = Circuit::new(config.circuit_settings());
        let word = circuit.word();
        SharedCircuit {
            word: CachePadded::new(AtomicU64::new(word.0)),
            run: CachePadded::new(FailureRun {
                consecutive: AtomicU32::new(0),
                check_successes_from: AtomicU64::new(NO_SUCCESS),
            }),
            success_checks: Mutex::new(()),
            open_until: AtomicU64::new(0),
            clock: config.clock.clone(),
            window: config.build_window(),
            probes: HalfOpenProbes::new(
                config.half_open_probes,
                duration_nanos(config.probe_max_wait),
            ),
            policy: config.policy,
            slow_nanos: config.slow_call_threshold.map_or(u64::MAX, duration_nanos),
            slow_check_nanos: match config.slow_call_threshold {
                Some(threshold) if config.policy.watches_slow_calls() => duration_nanos(threshold),
                _ => u64::MAX,
            },
            record_latency: config.record_latency,
            record_short_circuits: matches!(config.window.kind(), WindowKind::Time { .. }),
            retired: AtomicBool::new(false),
            circuit: CachePadded::new(Mutex::new(circuit)),
            events: EventHub::new(config.on_event.clone(), config.event_buffer),
            gate_waker: AtomicWaker::new(),
        }
    }

    /// The last owner is gone: ends the event streams. Calls still in flight find the
    /// circuit retired and count nothing.
    pub(crate) fn retire(&self) {
        self.retired.store(true, Ordering::Release);
        self.events.close();
    }

    /// The circuit, unless it is retired: a call that ends after the last owner is gone
    /// counts nothing (nobody can read the circuit any more).
    #[inline]
    pub(crate) fn live(&self) -> Option<&Self> {
        // Written once, at retirement: the line stays shared on every core.
        (!self.retired.load(Ordering::Relaxed)).then_some(self)
    }

    #[inline]
    fn load_word(&self) -> PackedState {
        PackedState(self.word.load(Ordering::Acquire))
    }

    /// Admits a call, or says why not and until when.
    #[inline]
    pub(crate) fn admit(&self) -> Result<Admission, BreakerOpen> {
        let word = self.load_word();
        // The closed path tests the state bits directly rather than decoding the state.
        if word.admits_counted() {
            return Ok(Admission {
                word,
                start_ticks: if self.record_latency {
                    self.clock.ticks()
                } else {
                    UNTIMED
                },
                probe: None,
            });
        }
        if word.is(CircuitState::ForcedClosed) {
            return Ok(Admission {
                word,
                start_ticks: UNTIMED,
                probe: None,
            });
        }
        self.admit_slow(word)
    }

    /// Admission in the states that may reject: open, half-open, forced open.
    #[cold]
    fn admit_slow(&self, mut word: PackedState) -> Result<Admission, BreakerOpen> {
        let mut ticks = self.clock.ticks();
        let mut now = self.clock.ticks_to_nanos(ticks);
        for _ in 0..ADMISSION_ATTEMPTS {
            match word.state() {
                CircuitState::Closed | CircuitState::MetricsOnly | CircuitState::ForcedClosed => {
                    return Ok(self.pass(word, ticks))
                }
                CircuitState::ForcedOpen => {
                    return Err(self.reject(CircuitState::ForcedOpen, now, BreakerOpen::forced()))
                }
                CircuitState::Open => {
                    let until = self.open_until.load(Ordering::Acquire);
                    if now < until {
                        let wait = Duration::from_nanos(until - now);
                        return Err(self.reject(CircuitState::Open, now, BreakerOpen::new(wait)));
                    }
                    self.transition(|c| c.open_period_elapsed(word.generation(), now));
                }
                CircuitState::HalfOpen => {
                    let Some(permit) = self.probes.try_acquire(now) else {
                        let all_taken = BreakerOpen::new(Duration::ZERO);
                        return Err(self.reject(CircuitState::HalfOpen, now, all_taken));
                    };
                    // The permit is only good for the half-open period it was taken in:
                    // check that the period did not end meanwhile.
                    if self.load_word() == word {
                        return Ok(Admission {
                            word,
                            start_ticks: ticks,
                            probe: Some(permit),
                        });
                    }
                    self.probes.release(permit);
                }
            }
            word = self.load_word();
            ticks = self.clock.ticks();
            now = self.clock.ticks_to_nanos(ticks);
        }
        if word.state().admits_all() {
            return Ok(self.pass(word, ticks));
        }
        // The state changed under this call on every attempt: an extreme race. Reject
        // rather than spin; the caller may retry at once.
        Err(self.reject(word.state(), now, BreakerOpen::new(Duration::ZERO)))
    }

    /// Admission in a state that admits every call.
    fn pass(&self, word: PackedState, ticks: u64) -> Admission {
        let timed = self.record_latency && word.state() != CircuitState::ForcedClosed;
        Admission {
            word,
            start_ticks: if timed { ticks } else { UNTIMED },
            probe: None,
        }
    }

    fn reject(&self, state: CircuitState, now: u64, error: BreakerOpen) -> BreakerOpen {
        if self.record_short_circuits {
            self.window.record(now, Event::ShortCircuited, 0);
        }
        if self.events.is_listened() {
            self.events.emit(BreakerEvent::Rejected {
                state,
                retry_after: error.retry_after(),
            });
        }
        #[cfg(feature = "tracing")]
        tracing::trace!(%state, retry_after = ?error.retry_after(), "circuit breaker rejected a call");
        error
    }

    /// A call admitted under `admission` was dropped before it finished: give its probe
    /// permit back (a cancelled call counts as nothing).
    #[inline]
    pub(crate) fn abandon(&self, admission: &mut Admission) {
        if let Some(permit) = admission.take_probe() {
            self.release_probe(permit);
        }
    }

    /// Gives a probe permit back and wakes a gate waiting for one. Returns whether the
    /// permit was still held.
    #[cold]
    fn release_probe(&self, permit: ProbePermit) -> bool {
        let held = self.probes.release(permit);
        self.gate_waker.wake();
        held
    }

    /// A call admitted under `admission` finished as `event` (`None`: ignored by the
    /// classifier).
    ///
    /// The straight line is a call admitted closed or metrics-only under the word still
    /// current: one word compare sends probes, forced-closed calls and stale results to
    /// [`complete_other`](Self::complete_other).
    #[inline]
    pub(crate) fn complete(&self, admission: Admission, event: Option<Event>) {
        let Some(event) = event else {
            return self.complete_ignored(admission);
        };
        let current = self.load_word();
        // Probes are admitted half-open, and forced-closed calls are not counted: neither
        // passes the second test.
        if current != admission.word || !admission.word.admits_counted() {
            return self.complete_other(admission, current, event);
        }
        let end_ticks = self.clock.ticks();
        // Zero for an untimed call (`UNTIMED` start).
        let latency = self.clock.nanos_between(admission.start_ticks, end_ticks);
        let end = self.clock.ticks_to_nanos(end_ticks);
        self.window.record(end, event, latency);
        if event != Event::Success {
            return self.count_failure(admission.word);
        }
        // Loads only, from one line: a run of successes that cannot trip the circuit
        // writes nothing and reads no window.
        let run = &self.run;
        if run.consecutive.load(Ordering::Relaxed) != 0
            || end >= run.check_successes_from.load(Ordering::Relaxed)
            || latency >= self.slow_check_nanos
        {
            self.check_success(admission.word);
        }
    }

    /// A failure (or timeout, or rejection below) was recorded under the current `word`:
    /// extends the run of failures and, closed, asks the trip policy.
    ///
    /// Reads the clock afresh: a trip starts the open period now.
    #[cold]
    fn count_failure(&self, word: PackedState) {
        // Release: the success that ends this run reads the window after it, and sees
        // this failure there.
        let consecutive = self.run.consecutive.fetch_add(1, Ordering::Release) + 1;
        if word.is(CircuitState::Closed) {
            self.evaluate(word, self.clock.now(), consecutive);
        }
    }

    /// A success was recorded under the current `word`, and it is one that may make the
    /// trip rule hold (slow, or named by the last check), or the first after failures:
    /// ends the run of failures and, closed, asks the trip policy, then says which
    /// successes must ask next.
    #[cold]
    fn check_success(&self, word: PackedState) {
        let run = &self.run;
        if run.consecutive.load(Ordering::Relaxed) != 0 {
            // Acquire: the failures of the run are in the window read below.
            run.consecutive.swap(0, Ordering::Acquire);
        }
        if !self.policy.reads_window() {
            // Consecutive failures only: a success just ends the run.
            return;
        }
        if !word.is(CircuitState::Closed) {
            // Metrics-only never trips. A close (from half-open or by a reset) starts
            // with an empty window, for which no success needs a check either.
            if run.check_successes_from.load(Ordering::Relaxed) != NO_SUCCESS {
                run.check_successes_from
                    .store(NO_SUCCESS, Ordering::Relaxed);
            }
            return;
        }
        let serial = self.success_checks.lock();
        let now = self.clock.now();
        let sample = self.sample(now, 0);
        if let Some(reason) = self.policy.verdict(&sample) {
            // Not under `serial`: the transition runs event callbacks, which may complete
            // calls of this circuit.
            drop(serial);
            self.transition(|c| c.trip(word.generation(), now, reason));
            return;
        }
        let from = match self.policy.success_check(&sample) {
            SuccessCheck::Every => 0,
            SuccessCheck::AfterRoll => self.window.next_roll(now),
            SuccessCheck::Never => NO_SUCCESS,
        };
        run.check_successes_from.store(from, Ordering::Relaxed);
    }

    /// [`complete`](Self::complete) for a call the classifier ignored: counts nothing,
    /// but a probe gives its permit back.
    #[cold]
    fn complete_ignored(&self, admission: Admission) {
        if let Some(permit) = admission.probe {
            self.complete_probe(admission, permit, None);
        }
    }

    /// [`complete`](Self::complete) off the straight line: a probe, a forced-closed
    /// call (counted nowhere), or a result admitted under a word that is no longer
    /// `current`. A result from an older epoch belongs to no statistics; one from an
    /// older generation of the same epoch is counted, too late to move the state.
    #[cold]
    fn complete_other(&self, admission: Admission, current: PackedState, event: Event) {
        if let Some(permit) = admission.probe {
            return self.complete_probe(admission, permit, Some(event));
        }
        if admission.word.is(CircuitState::ForcedClosed)
            || current.epoch() != admission.word.epoch()
        {
            return;
        }
        let end_ticks = self.clock.ticks();
        let latency = self.clock.nanos_between(admission.start_ticks, end_ticks);
        self.window
            .record(self.clock.ticks_to_nanos(end_ticks), event, latency);
    }

    /// [`complete`](Self::complete) for a half-open probe that still held `permit`.
    #[cold]
    fn complete_probe(&self, admission: Admission, permit: ProbePermit, event: Option<Event>) {
        // Give the permit back first: whether it was still ours decides whether the
        // probe's result counts.
        let counts = self.release_probe(permit);
        let Some(event) = event else { return };
        let end_ticks = self.clock.ticks();
        let current = self.load_word();
        if current.epoch() != admission.word.epoch() {
            // The statistics were cleared after this call started: it belongs to none.
            return;
        }
        let latency = if self.record_latency {
            self.clock.nanos_between(admission.start_ticks, end_ticks)
        } else {
            0
        };
        let end = self.clock.ticks_to_nanos(end_ticks);
        self.window.record(end, event, latency);
        if !counts
            || current.generation() != admission.word.generation()
            || !admission.word.is(CircuitState::HalfOpen)
        {
            // Counted, but too late (or not a probe of this period) to move the state.
            return;
        }
        let generation = admission.word.generation();
        let slow = latency >= self.slow_nanos;
        if event != Event::Success || (slow && self.policy.watches_slow_calls()) {
            self.transition(|c| c.probe_failed(generation, end));
        } else {
            self.transition(|c| c.probe_succeeded(generation));
        }
    }

    #[cold]
    fn evaluate(&self, word: PackedState, now: u64, consecutive_failures: u32) {
        // The run of failures alone may decide; only read the window when a percentage
        // has to be checked.
        let sample = if self.policy.run_trips(consecutive_failures) {
            TripSample {
                consecutive_failures,
                ..TripSample::default()
            }
        } else {
            self.sample(now, consecutive_failures)
        };
        if let Some(reason) = self.policy.verdict(&sample) {
            self.transition(|c| c.trip(word.generation(), now, reason));
        }
    }

    /// What the trip policy reads: the window at `now` (when a percentage is
    /// configured) and the run of failures.
    fn sample(&self, now: u64, consecutive_failures: u32) -> TripSample {
        let mut sample = TripSample {
            consecutive_failures,
            ..TripSample::default()
        };
        if self.policy.reads_window() {
            let counts = self.window.counts(now);
            sample.total = counts.total();
            sample.errors = counts.errors();
            sample.completed = counts.completed();
            sample.slow = counts.slow_calls;
        }
        sample
    }

    /// Runs one step of the state machine under the lock and applies its transition, if
    /// any: the side state first, the word last, so a caller that sees the new word also
    /// sees the rest.
    fn transition(&self, step: impl FnOnce(&mut Circuit) -> Option<Transition>) {
        let mut circuit = self.circuit.lock();
        let Some(t) = step(&mut circuit) else { return };
        match t.to {
            CircuitState::Open => self.open_until.store(t.open_until, Ordering::Release),
            CircuitState::HalfOpen => self.probes.clear(),
            _ => {}
        }
        if t.clears_stats {
            self.window.reset();
        }
        if t.clears_stats || t.to == CircuitState::Open {
            self.run.consecutive.store(0, Ordering::Relaxed);
        }
        self.word.store(t.word.0, Ordering::Release);
        self.events.queue(BreakerEvent::StateChanged {
            from: t.from,
            to: t.to,
            reason: t.reason,
        });
        #[cfg(feature = "tracing")]
        tracing::info!(from = %t.from, to = %t.to, reason = %t.reason, "circuit breaker changed state");
        drop(circuit);
        self.gate_waker.wake();
        self.events.flush();
    }

    /// For a readiness gate: whether a call could be admitted now, without counting a
    /// rejection. Moves an open circuit whose period is over to half-open, and in
    /// half-open takes a probe permit for the gate's next call.
    pub(crate) fn check_gate(&self) -> GateCheck {
        let mut word = self.load_word();
        for _ in 0..ADMISSION_ATTEMPTS {
            let now = self.clock.now();
            match word.state() {
                CircuitState::Closed | CircuitState::MetricsOnly | CircuitState::ForcedClosed => {
                    return GateCheck::Pass
                }
                CircuitState::ForcedOpen => return GateCheck::WaitForChange,
                CircuitState::Open => {
                    let until = self.open_until.load(Ordering::Acquire);
                    if now < until {
                        return GateCheck::WaitUntil(until);
                    }
                    self.transition(|c| c.open_period_elapsed(word.generation(), now));
                }
                CircuitState::HalfOpen => {
                    let Some(permit) = self.probes.try_acquire(now) else {
                        return match self.probes.earliest_expiry() {
                            Some(at) => GateCheck::WaitUntil(at),
                            // Released meanwhile: look again.
                            None => {
                                word = self.load_word();
                                continue;
                            }
                        };
                    };
                    if self.load_word() == word {
                        return GateCheck::Probe(Admission {
                            word,
                            start_ticks: self.clock.ticks(),
                            probe: Some(permit),
                        });
                    }
                    self.probes.release(permit);
                }
            }
            word = self.load_word();
        }
        // The state changed under the check on every attempt: look again at once.
        GateCheck::WaitUntil(0)
    }

    /// For a readiness gate: turns the probe admission the gate held into the admission
    /// of the call being made now, if its half-open period is still current (the start
    /// is stamped now, so the time the permit was held is not counted as latency).
    /// Otherwise gives the permit back and returns `None`.
    pub(crate) fn confirm_probe(&self, mut admission: Admission) -> Option<Admission> {
        if self.load_word() == admission.word {
            admission.start_ticks = self.clock.ticks();
            Some(admission)
        } else {
            self.abandon(&mut admission);
            None
        }
    }

    /// Whether `admission` was made under the circuit's current state (no transition
    /// since).
    pub(crate) fn is_current(&self, admission: &Admission) -> bool {
        self.load_word() == admission.word
    }

    /// Registers the task to wake when this circuit changes state or gives a probe
    /// permit back.
    pub(crate) fn register_gate_waker(&self, waker: &Waker) {
        self.gate_waker.register(waker);
    }

    pub(crate) fn clock(&self) -> &Clock {
        &self.clock
    }

    pub(crate) fn state(&self) -> CircuitState {
        self.load_word().state()
    }

    /// Whether a call made now would be admitted, without admitting it (no permit taken,
    /// no transition, nothing recorded).
    pub(crate) fn is_call_permitted(&self) -> bool {
        let word = self.load_word();
        match word.state() {
            CircuitState::Closed | CircuitState::ForcedClosed | CircuitState::MetricsOnly => true,
            CircuitState::ForcedOpen => false,
            CircuitState::Open => self.clock.now() >= self.open_until.load(Ordering::Acquire),
            CircuitState::HalfOpen => {
                let now = self.clock.now();
                self.probes.in_flight(now) < self.probes.permits()
            }
        }
    }

    pub(crate) fn force(&self, to: CircuitState) {
        self.transition(|c| c.force(to));
    }

    pub(crate) fn reset(&self) {
        self.transition(|c| Some(c.reset()));
    }

    pub(crate) fn subscribe(&self) -> EventStream {
        self.events.subscribe()
    }

    pub(crate) fn metrics(&self) -> BreakerMetrics {
        let now = self.clock.now();
        let (state, trips, total_trips, open_until) = {
            let c = self.circuit.lock();
            (c.state(), c.trips(), c.total_trips(), c.open_until())
        };
        BreakerMetrics {
            state,
            window: self.window.snapshot(now),
            consecutive_failures: self.run.consecutive.load(Ordering::Relaxed),
            trips,
            total_trips,
            retry_after: open_until.map(|until| Duration::from_nanos(until.saturating_sub(now))),
            probes_in_flight: if state == CircuitState::HalfOpen {
                self.probes.in_flight(now)
            } else {
                0
            },
        }
    }
}

/// An owner's share of a circuit: what services, layers, gates and handles hold.
/// Response futures hold the circuit itself (see the [module docs](self)); dropping the
/// last owner retires it: its event streams end and calls
/// still in flight count nothing. Its memory goes with the last future.
pub(crate) struct OwnedCircuit {
    circuit: Arc<SharedCircuit>,
}

impl OwnedCircuit {
    pub(crate) fn new(circuit: SharedCircuit) -> Arc<OwnedCircuit> {
        Arc::new(OwnedCircuit {
            circuit: Arc::new(circuit),
        })
    }

    /// The reference count a response future keeps.
    #[inline]
    pub(crate) fn circuit(&self) -> Arc<SharedCircuit> {
        self.circuit.clone()
    }
}

impl Deref for OwnedCircuit {
    type Target = SharedCircuit;

    #[inline]
    fn deref(&self) -> &SharedCircuit {
        &self.circuit
    }
}

impl Drop for OwnedCircuit {
    fn drop(&mut self) {
        self.circuit.retire();
    }
}

impl fmt::Debug for OwnedCircuit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedCircuit").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const SEC: Duration = Duration::from_secs(1);

    fn circuit(record_latency: bool) -> (SharedCircuit, crate::clock::ManualClock) {
        let (clock, hand) = Clock::manual();
        let config = BreakerConfig::builder()
            .clock(clock)
            .without_error_percentage()
            .consecutive_failures(1)
            .sleep_window(5 * SEC)
            .half_open_probes(1)
            .record_latency(record_latency)
            .build()
            .unwrap();
        (SharedCircuit::new(&config), hand)
    }

    #[test]
    fn a_call_ending_after_the_last_owner_is_gone_counts_nothing_and_frees_the_circuit() {
        let (c, _hand) = circuit(false);
        let owned = OwnedCircuit::new(c);
        // What a response future keeps.
        let held = owned.circuit();
        assert!(held.live().is_some());
        let weak = Arc::downgrade(&held);
        drop(owned);
        assert!(held.live().is_none(), "retired: the completion is dropped");
        drop(held);
        assert!(weak.upgrade().is_none(), "freed with the last future");
    }

    #[test]
    fn circuits_come_and_go_while_threads_complete_calls_and_each_counts_its_own() {
        let threads: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(|| {
                    for round in 0..200_u64 {
                        let owned =
                            OwnedCircuit::new(SharedCircuit::new(&BreakerConfig::default()));
                        let calls = 1 + round % 7;
                        for _ in 0..calls {
                            let admission = owned.admit().expect("closed");
                            let held = owned.circuit();
                            held.live()
                                .expect("live")
                                .complete(admission, Some(Event::Success));
                        }
                        let counts = owned.metrics().window.counts;
                        assert_eq!((counts.successes, counts.total()), (calls, calls));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    }

    #[test]
    fn probe_ignored_by_the_classifier_gives_its_permit_back() {
        let (c, hand) = circuit(true);
        c.complete(c.admit().unwrap(), Some(Event::Failure));
        assert_eq!(c.state(), CircuitState::Open);
        hand.advance(5 * SEC);
        let probe = c.admit().unwrap();
        assert_eq!(c.state(), CircuitState::HalfOpen);
        assert!(c.admit().is_err(), "the only permit is taken");
        c.complete(probe, None);
        let next = c.admit().expect("the permit was given back");
        c.complete(next, Some(Event::Success));
        assert_eq!(c.state(), CircuitState::Closed);
    }

    #[test]
    fn untimed_calls_record_zero_latency_and_timed_calls_their_own() {
        for record_latency in [false, true] {
            let (c, hand) = circuit(record_latency);
            let a = c.admit().unwrap();
            hand.advance(Duration::from_millis(3));
            c.complete(a, Some(Event::Success));
            let latency = c.metrics().window.latency;
            assert_eq!(latency.count, 1);
            let want = if record_latency { 3_000_000 } else { 0 };
            assert_eq!(latency.max, Duration::from_nanos(want), "{record_latency}");
        }
    }

    #[test]
    fn forced_closed_calls_and_results_of_a_cleared_epoch_are_not_counted() {
        let (c, _hand) = circuit(true);
        c.force(CircuitState::ForcedClosed);
        c.complete(c.admit().unwrap(), Some(Event::Failure));
        assert_eq!(c.state(), CircuitState::ForcedClosed);
        assert_eq!(c.metrics().window.counts.total(), 0);
        c.reset();
        let before_reset = c.admit().unwrap();
        c.reset();
        c.complete(before_reset, Some(Event::Success));
        assert_eq!(c.metrics().window.counts.total(), 0);
        c.complete(c.admit().unwrap(), Some(Event::Success));
        assert_eq!(c.metrics().window.counts.successes, 1);
    }
}
