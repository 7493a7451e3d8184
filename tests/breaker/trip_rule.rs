//! The trip rule holds whenever the window shows it, whatever the order of outcomes:
//! after every completed call, a closed circuit whose window has the volume and the
//! percentage is open (see the breaker's module docs, "When the trip rule is checked").
//! Everything runs on a manual clock, one call at a time.

use std::time::Duration;

use futures::executor::block_on;
use palisade::breaker::{
    BreakerConfig, BreakerConfigBuilder, BreakerHandle, CircuitBreaker, CircuitState,
    TransitionReason,
};
use palisade::clock::{Clock, ManualClock};
use palisade::error::{BoxError, BreakerOpen};
use palisade::window::{Counts, WindowConfig};
use proptest::prelude::*;
use tower::util::BoxService;
use tower::{Service, ServiceExt};

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

/// What the backend does with one request: take this long on the manual clock, then
/// succeed (`true`) or fail.
#[derive(Debug, Clone, Copy)]
struct Step {
    takes: Duration,
    ok: bool,
}

const OK: Step = Step {
    takes: Duration::ZERO,
    ok: true,
};
const FAIL: Step = Step {
    takes: Duration::ZERO,
    ok: false,
};

/// The inner service: each request takes its time on the manual clock, then answers.
type Backend = BoxService<Step, (), BoxError>;

fn backend(hand: ManualClock) -> Backend {
    BoxService::new(tower::service_fn(move |step: Step| {
        let hand = hand.clone();
        async move {
            hand.advance(step.takes);
            if step.ok {
                Ok(())
            } else {
                Err(BoxError::from("down"))
            }
        }
    }))
}

struct Rig {
    svc: CircuitBreaker<Backend>,
    handle: BreakerHandle,
    hand: ManualClock,
}

impl Rig {
    fn new(builder: BreakerConfigBuilder) -> Rig {
        let (clock, hand) = Clock::manual();
        let config = builder.clock(clock).sleep_window(5 * SEC).build().unwrap();
        let svc = CircuitBreaker::new(backend(hand.clone()), &config);
        let handle = svc.handle();
        Rig { svc, handle, hand }
    }

    /// One call; `Err` only when the circuit rejected it.
    fn call(&mut self, step: Step) -> Result<(), BreakerOpen> {
        let result = block_on(async { self.svc.ready().await?.call(step).await });
        match result {
            Ok(()) => Ok(()),
            Err(e) => match e.downcast_ref::<BreakerOpen>() {
                Some(open) => Err(*open),
                None => Ok(()),
            },
        }
    }

    fn calls(&mut self, steps: &[Step]) {
        for (i, &step) in steps.iter().enumerate() {
            assert_eq!(self.state(), CircuitState::Closed, "before call {}", i + 1);
            self.call(step).expect("a closed circuit admits the call");
        }
    }

    fn state(&self) -> CircuitState {
        self.handle.state()
    }

    fn counts(&self) -> Counts {
        self.handle.metrics().window.counts
    }
}

fn hystrix_rule() -> BreakerConfigBuilder {
    BreakerConfig::builder()
        .minimum_requests(20)
        .error_percentage(50.0)
}

fn repeat(step: Step, n: usize) -> Vec<Step> {
    vec![step; n]
}

/// The scenario: the window holds 20 calls at 50.0 % errors after the last
/// success, so the circuit opens then, and the 21st call is rejected.
#[test]
fn ten_failures_then_ten_successes_open_at_the_twentieth_call_and_reject_the_next() {
    let mut rig = Rig::new(hystrix_rule());
    rig.calls(&repeat(FAIL, 10));
    rig.calls(&repeat(OK, 9));
    assert_eq!(
        rig.state(),
        CircuitState::Closed,
        "19 calls: below the volume"
    );
    rig.call(OK).unwrap();
    let counts = rig.counts();
    assert_eq!((counts.total(), counts.error_percentage()), (20, 50.0));
    assert_eq!(rig.state(), CircuitState::Open);
    assert!(rig.call(OK).is_err(), "the 21st call is rejected");
    assert_eq!(
        rig.handle.metrics().total_trips,
        1,
        "one trip, by the error percentage"
    );
}

#[test]
fn ten_successes_then_ten_failures_open_at_the_twentieth_call() {
    let mut rig = Rig::new(hystrix_rule());
    rig.calls(&repeat(OK, 10));
    rig.calls(&repeat(FAIL, 9));
    assert_eq!(rig.state(), CircuitState::Closed);
    rig.call(FAIL).unwrap();
    assert_eq!(rig.state(), CircuitState::Open);
}

#[test]
fn interleaved_outcomes_open_at_the_call_that_reaches_the_volume_whichever_it_is() {
    for first_ok in [true, false] {
        let mut rig = Rig::new(hystrix_rule());
        let steps: Vec<Step> = (0..20)
            .map(|i| if (i % 2 == 0) == first_ok { OK } else { FAIL })
            .collect();
        rig.calls(&steps[..19]);
        assert_eq!(rig.state(), CircuitState::Closed);
        rig.call(steps[19]).unwrap();
        assert_eq!(rig.state(), CircuitState::Open, "first_ok = {first_ok}");
    }
}

#[test]
fn successes_past_the_volume_do_not_open_a_circuit_below_the_percentage() {
    let mut rig = Rig::new(hystrix_rule());
    rig.calls(&repeat(FAIL, 9));
    rig.calls(&repeat(OK, 11));
    rig.calls(&repeat(OK, 30));
    assert_eq!(rig.state(), CircuitState::Closed, "9 of 20 is 45 %");
}

/// Successes that roll out of a time window leave a higher error percentage behind:
/// the next success, which lowers it a little, still finds it over the threshold.
#[test]
fn a_success_after_older_successes_rolled_out_of_the_window_opens_the_circuit() {
    let mut rig = Rig::new(hystrix_rule().window(WindowConfig::time(10 * SEC, 10)));
    rig.calls(&repeat(OK, 30));
    rig.hand.advance(5 * SEC);
    rig.calls(&repeat(FAIL, 20));
    assert_eq!(rig.state(), CircuitState::Closed, "20 of 50 is 40 %");
    // At 10.5 s the first bucket (the 30 successes) is out of the window.
    rig.hand.advance(5 * SEC + 500 * MS);
    rig.call(OK).unwrap();
    let counts = rig.counts();
    assert_eq!((counts.total(), counts.errors()), (21, 20));
    assert_eq!(rig.state(), CircuitState::Open);
}

#[test]
fn a_count_window_opens_on_the_success_that_reaches_the_volume() {
    let mut rig = Rig::new(hystrix_rule().window(WindowConfig::count(20)));
    rig.calls(&repeat(FAIL, 10));
    rig.calls(&repeat(OK, 9));
    assert_eq!(rig.state(), CircuitState::Closed);
    rig.call(OK).unwrap();
    assert_eq!(rig.state(), CircuitState::Open);
}

/// A fast success can complete a slow-call trip: it brings the volume, and the slow
/// calls before it are half of the window.
#[test]
fn fast_successes_after_slow_ones_open_on_the_slow_call_rate_at_the_volume() {
    let mut rig = Rig::new(
        BreakerConfig::builder()
            .without_error_percentage()
            .minimum_requests(4)
            .slow_call_threshold(100 * MS)
            .slow_call_percentage(50.0),
    );
    let slow = Step {
        takes: 200 * MS,
        ok: true,
    };
    let fast = Step {
        takes: MS,
        ok: true,
    };
    rig.calls(&[slow, slow, fast]);
    assert_eq!(
        rig.state(),
        CircuitState::Closed,
        "3 calls: below the volume"
    );
    rig.call(fast).unwrap();
    assert_eq!(rig.counts().slow_calls, 2);
    assert_eq!(rig.state(), CircuitState::Open);
    assert_eq!(
        rig.handle.metrics().total_trips,
        1,
        "tripped once, by the slow-call rate"
    );
}

#[test]
fn the_trip_reason_of_a_success_completed_trip_is_the_percentage() {
    let reasons = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = reasons.clone();
    let mut rig = Rig::new(hystrix_rule().on_event(move |e| {
        if let palisade::breaker::BreakerEvent::StateChanged { reason, .. } = e {
            seen.lock().unwrap().push(*reason);
        }
    }));
    rig.calls(&repeat(FAIL, 10));
    rig.calls(&repeat(OK, 10));
    assert_eq!(
        *reasons.lock().unwrap(),
        [TransitionReason::ErrorPercentage]
    );
}

// The naive model: after every recorded call, if the window's volume reaches the
// minimum and a percentage reaches its threshold, the circuit is open. The window's
// counts are computed here from the list of calls, independently of the library.

const WIDTH: Duration = Duration::from_secs(1);
const BUCKETS: u32 = 4;
const SLOW: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy)]
enum Op {
    /// A call: its outcome and whether it is slow.
    Call { ok: bool, slow: bool },
    /// Time passes between calls.
    Wait(Duration),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (any::<bool>(), prop::bool::weighted(0.2)).prop_map(|(ok, slow)| Op::Call { ok, slow }),
        1 => (0u64..2_500).prop_map(|ms| Op::Wait(Duration::from_millis(ms))),
    ]
}

/// The calls the naive model remembers: when each ended, whether it failed, whether it
/// was slow.
#[derive(Default)]
struct Model {
    calls: Vec<(Duration, bool, bool)>,
    count_window: Option<usize>,
}

impl Model {
    /// (total, errors, slow) in the window read at `now`.
    fn window(&self, now: Duration) -> (u64, u64, u64) {
        let live: Vec<_> = match self.count_window {
            Some(size) => self.calls.iter().rev().take(size).collect(),
            None => {
                let epoch = |t: Duration| t.as_nanos() / WIDTH.as_nanos();
                let newest = self.calls.iter().map(|c| epoch(c.0)).max().unwrap_or(0);
                let end = epoch(now).max(newest);
                self.calls
                    .iter()
                    .filter(|c| epoch(c.0) <= end && epoch(c.0) + u128::from(BUCKETS) > end)
                    .collect()
            }
        };
        let errors = live.iter().filter(|c| c.1).count() as u64;
        let slow = live.iter().filter(|c| c.2).count() as u64;
        (live.len() as u64, errors, slow)
    }
}

fn trips(min: u64, error_pct: f64, slow_pct: f64, (total, errors, slow): (u64, u64, u64)) -> bool {
    let reached = |part: u64, pct: f64| part > 0 && part as f64 * 100.0 >= pct * total as f64;
    total >= min && total > 0 && (reached(errors, error_pct) || reached(slow, slow_pct))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn after_every_call_the_circuit_is_open_exactly_when_the_window_shows_the_rule(
        min in 1u32..12,
        error_pct in prop::sample::select(vec![10.0, 34.0, 50.0, 75.0, 100.0]),
        slow_pct in prop::sample::select(vec![25.0, 50.0, 100.0]),
        count_window in prop::option::of(4u32..16),
        ops in prop::collection::vec(op(), 1..150),
    ) {
        let window = match count_window {
            Some(size) => WindowConfig::count(size),
            None => WindowConfig::time(WIDTH * BUCKETS, BUCKETS),
        };
        let mut rig = Rig::new(
            BreakerConfig::builder()
                .window(window)
                .minimum_requests(min)
                .error_percentage(error_pct)
                .slow_call_threshold(SLOW)
                .slow_call_percentage(slow_pct),
        );
        let mut model = Model { count_window: count_window.map(|s| s as usize), ..Model::default() };
        let mut now = Duration::ZERO;
        for op in ops {
            match op {
                Op::Wait(d) => {
                    rig.hand.advance(d);
                    now += d;
                }
                Op::Call { ok, slow } => {
                    let takes = if slow { SLOW } else { Duration::ZERO };
                    prop_assert_eq!(rig.state(), CircuitState::Closed);
                    let step = Step { takes, ok };
                    prop_assert!(rig.call(step).is_ok());
                    now += takes;
                    model.calls.push((now, !ok, slow));
                    let seen = model.window(now);
                    let want = trips(u64::from(min), error_pct, slow_pct, seen);
                    let c = rig.counts();
                    prop_assert_eq!((c.total(), c.errors(), c.slow_calls), seen, "the model's window");
                    let open = rig.state() == CircuitState::Open;
                    prop_assert_eq!(open, want, "window {:?}", seen);
                    if open {
                        // Start over: the reset clears the window.
                        rig.handle.reset();
                        model.calls.clear();
                    }
                }
            }
        }
    }
}
