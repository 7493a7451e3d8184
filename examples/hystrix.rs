//! The classic hystrix-go configuration, expressed with palisade's Hystrix preset:
//!
//! ```go
//! hystrix.ConfigureCommand("my_command", hystrix.CommandConfig{
//!     Timeout:                1000,
//!     MaxConcurrentRequests:  100,
//!     RequestVolumeThreshold: 10,
//!     ErrorPercentThreshold:  50,
//!     SleepWindow:            5000,
//! })
//! ```
//!
//! The command wraps a service that is healthy for 2 s, fails every call for 4 s, then is
//! healthy again. The circuit opens once errors reach half the calls in its
//! 10 s window, rejects calls for the 5 s sleep window, lets one probe through, and
//! closes. The run prints each state change the moment it happens and a line per second
//! with what that second's calls got, then a summary per phase; it ends after 14 s.
//!
//! A *short-circuited* call is one the open breaker rejected at once with `BreakerOpen`,
//! without reaching the service: that is how the breaker protects a failing dependency.
//! Calls keep coming every 20 ms, so a 5 s sleep window short-circuits over 200 of
//! them, and some fall in the "recovered" phase: the dependency is healthy again from
//! 6 s, but the breaker only finds out when the sleep window ends and its probe succeeds.
//!
//! Run: `cargo run --example hystrix`

use std::sync::Arc;
use std::time::{Duration, Instant};

use palisade::breaker::{BreakerEvent, CircuitState};
use palisade::error::BreakerOpen;
use palisade::preset::Hystrix;
use palisade::BoxError;
use parking_lot::Mutex;
use tower::{service_fn, Service, ServiceExt};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Healthy,
    Failing,
    Recovered,
}

impl Phase {
    fn at(elapsed: Duration) -> Phase {
        match elapsed.as_secs() {
            0..=1 => Phase::Healthy,
            2..=5 => Phase::Failing,
            _ => Phase::Recovered,
        }
    }
}

/// Per phase: calls that reached the service's answer, failed, or were short-circuited.
#[derive(Debug, Default, Clone, Copy)]
struct PhaseCounts {
    ok: u64,
    failed: u64,
    short_circuited: u64,
}

/// What one call got.
#[derive(Debug, Clone, Copy)]
enum Got {
    Ok,
    Failed,
    ShortCircuited,
}

impl PhaseCounts {
    fn add(&mut self, got: Got) {
        match got {
            Got::Ok => self.ok += 1,
            Got::Failed => self.failed += 1,
            Got::ShortCircuited => self.short_circuited += 1,
        }
    }
}

fn report_second(second: u64, phase: Phase, c: PhaseCounts) {
    let service = match phase {
        Phase::Healthy => "service healthy",
        Phase::Failing => "service FAILING",
        Phase::Recovered => "service healthy again",
    };
    println!(
        "{second:>2}-{:<2}s  {service:<22} {:>3} ok  {:>3} failed  {:>3} short-circuited",
        second + 1,
        c.ok,
        c.failed,
        c.short_circuited
    );
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let started = Instant::now();
    let transitions = Arc::new(Mutex::new(Vec::new()));
    let log = transitions.clone();

    let command = Hystrix::builder()
        .timeout(Duration::from_millis(1000))
        .max_concurrent_requests(100)
        .request_volume_threshold(10)
        .error_percent_threshold(50.0)
        .sleep_window(Duration::from_millis(5000))
        .breaker(move |b| {
            b.on_event(move |e| {
                if let BreakerEvent::StateChanged { from, to, .. } = *e {
                    let at = started.elapsed();
                    println!("{:>5.2}s  breaker {from:?} -> {to:?}", at.as_secs_f64());
                    log.lock().push((at, from, to));
                }
            })
        })
        .build()?
        .layer();
    let breaker = command.breaker();

    let mut svc = tower::ServiceBuilder::new()
        .layer(command)
        .service(service_fn(move |n: u64| async move {
            tokio::time::sleep(Duration::from_millis(3)).await;
            match Phase::at(started.elapsed()) {
                Phase::Failing => Err::<u64, BoxError>("dependency unavailable".into()),
                _ => Ok(n),
            }
        }));

    println!("a call every 20 ms; the service is healthy for 2 s, then fails for 4 s");
    let mut counts = [PhaseCounts::default(); 3];
    let mut this_second = PhaseCounts::default();
    let mut second = 0;
    let mut n = 0u64;
    while started.elapsed() < Duration::from_secs(14) {
        let result = svc.ready().await?.call(n).await;
        let elapsed = started.elapsed();
        if elapsed.as_secs() > second {
            report_second(second, Phase::at(Duration::from_secs(second)), this_second);
            this_second = PhaseCounts::default();
            second = elapsed.as_secs();
        }
        // The phase the service was in when it answered.
        let got = match result {
            Ok(_) => Got::Ok,
            Err(e) if e.is::<BreakerOpen>() => Got::ShortCircuited,
            Err(_) => Got::Failed,
        };
        counts[Phase::at(elapsed) as usize].add(got);
        this_second.add(got);
        n += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    report_second(second, Phase::at(Duration::from_secs(second)), this_second);

    println!("\nstate changes:");
    for (at, from, to) in transitions.lock().iter() {
        println!("{:>5.2}s  {from:?} -> {to:?}", at.as_secs_f64());
    }
    println!(
        "\nper phase (short-circuited: rejected by the open breaker without calling the service):"
    );
    for (phase, c) in [Phase::Healthy, Phase::Failing, Phase::Recovered]
        .iter()
        .zip(counts)
    {
        println!(
            "{phase:<9?}  {:>4} ok  {:>4} failed  {:>4} short-circuited",
            c.ok, c.failed, c.short_circuited
        );
    }
    let total: u64 = counts
        .iter()
        .map(|c| c.ok + c.failed + c.short_circuited)
        .sum();
    println!(
        "{n} calls, {total} accounted for; final state {:?}",
        breaker.state()
    );
    assert_eq!(total, n);
    assert_eq!(breaker.state(), CircuitState::Closed);
    Ok(())
}
