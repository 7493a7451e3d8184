//! A flaky in-process service behind the Hystrix preset.
//!
//! Four callers send requests for 13 seconds to a service that is healthy, then has an
//! outage (most calls fail, some hang), then recovers. The breaker trips during the
//! outage, rejects calls without touching the service, probes after its sleep window and
//! closes once the service answers again. Each state transition is printed as it happens,
//! plus a one-line snapshot per second and a final account of every request.
//!
//! Run: `cargo run --example quickstart`

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use palisade::breaker::{BreakerEvent, CircuitState};
use palisade::error::{BreakerOpen, BulkheadFull, Elapsed};
use palisade::preset::Hystrix;
use palisade::BoxError;
use tower::{service_fn, Service, ServiceExt};

const RUN_FOR: Duration = Duration::from_secs(13);
const OUTAGE: std::ops::Range<f64> = 3.0..9.0;

/// A cheap deterministic hash: the same request id always behaves the same way.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x
}

/// The dependency: 2 % errors when healthy; during the outage 80 % errors and 10 % of
/// calls hang for two seconds.
async fn flaky(started: Instant, id: u64) -> Result<u64, BoxError> {
    let roll = mix(id) % 100;
    let in_outage = OUTAGE.contains(&started.elapsed().as_secs_f64());
    tokio::time::sleep(Duration::from_millis(2 + mix(id ^ 7) % 8)).await;
    if in_outage && roll < 10 {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    if (in_outage && roll < 80) || roll < 2 {
        return Err(format!("request {id} failed").into());
    }
    Ok(id)
}

#[derive(Default)]
struct Tally {
    sent: AtomicU64,
    ok: AtomicU64,
    failed: AtomicU64,
    timed_out: AtomicU64,
    bulkhead_full: AtomicU64,
    short_circuited: AtomicU64,
}

impl Tally {
    fn count(&self, result: &Result<u64, BoxError>) {
        let slot = match result {
            Ok(_) => &self.ok,
            Err(e) if e.is::<BreakerOpen>() => &self.short_circuited,
            Err(e) if e.is::<Elapsed>() => &self.timed_out,
            Err(e) if e.is::<BulkheadFull>() => &self.bulkhead_full,
            Err(_) => &self.failed,
        };
        slot.fetch_add(1, Ordering::Relaxed);
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let started = Instant::now();
    let layer = Hystrix::builder()
        .timeout(Duration::from_millis(250))
        .max_concurrent_requests(20)
        .request_volume_threshold(20)
        .error_percent_threshold(50.0)
        .sleep_window(Duration::from_millis(1500))
        .metrics_window(Duration::from_secs(2), 10)
        .breaker(move |b| {
            b.on_event(move |event| {
                if let BreakerEvent::StateChanged { from, to, reason } = event {
                    println!(
                        "{:>5.1}s  transition {from:?} -> {to:?} ({reason:?})",
                        started.elapsed().as_secs_f64()
                    );
                }
            })
        })
        .build()?
        .layer();
    let breaker = layer.breaker();
    let svc = tower::ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(move |id: u64| flaky(started, id)));

    println!(
        "4 callers for {} s; the dependency is healthy (2 % errors) until {:.0} s",
        RUN_FOR.as_secs(),
        OUTAGE.start
    );
    // Say when the outage starts and ends, at the moment it does.
    let announcer = tokio::spawn(async move {
        let at =
            |secs: f64| tokio::time::sleep_until((started + Duration::from_secs_f64(secs)).into());
        at(OUTAGE.start).await;
        println!(
            "{:>5.1}s  OUTAGE STARTS: 80 % of calls fail and 10 % hang for 2 s (the 250 ms timeout cuts them)",
            started.elapsed().as_secs_f64()
        );
        at(OUTAGE.end).await;
        println!(
            "{:>5.1}s  OUTAGE ENDS: the dependency is healthy again; the breaker finds out at its next probe",
            started.elapsed().as_secs_f64()
        );
    });

    let tally = Arc::new(Tally::default());
    let next_id = Arc::new(AtomicU64::new(0));
    let callers: Vec<_> = (0..4)
        .map(|_| {
            let mut svc = svc.clone();
            let tally = tally.clone();
            let next_id = next_id.clone();
            tokio::spawn(async move {
                while started.elapsed() < RUN_FOR {
                    let id = next_id.fetch_add(1, Ordering::Relaxed);
                    tally.sent.fetch_add(1, Ordering::Relaxed);
                    let result = match svc.ready().await {
                        Ok(ready) => ready.call(id).await,
                        Err(e) => Err(e),
                    };
                    tally.count(&result);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        })
        .collect();

    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    while started.elapsed() < RUN_FOR {
        tick.tick().await;
        let m = breaker.metrics();
        let c = m.window.counts;
        println!(
            "{:>5.1}s  {:<8} window: {:>4} ok {:>4} failed {:>3} timeouts {:>3} full \
             {:>4} short-circuited  errors {:>5.1} %  p50 {:>6.1?} p99 {:>6.1?}",
            started.elapsed().as_secs_f64(),
            format!("{:?}", m.state),
            c.successes,
            c.failures,
            c.timeouts,
            c.rejections,
            c.short_circuits,
            c.error_percentage(),
            m.window.latency.p50,
            m.window.latency.p99,
        );
    }
    for caller in callers {
        caller.await?;
    }
    announcer.await?;

    let t = &tally;
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let accounted = load(&t.ok)
        + load(&t.failed)
        + load(&t.timed_out)
        + load(&t.bulkhead_full)
        + load(&t.short_circuited);
    println!(
        "\n{} requests: {} ok, {} failed, {} timed out, {} bulkhead full, {} short-circuited \
         ({} accounted for); final state {:?}",
        load(&t.sent),
        load(&t.ok),
        load(&t.failed),
        load(&t.timed_out),
        load(&t.bulkhead_full),
        load(&t.short_circuited),
        accounted,
        breaker.state(),
    );
    assert_eq!(accounted, load(&t.sent), "every request is accounted for");
    assert_eq!(
        breaker.state(),
        CircuitState::Closed,
        "the service recovered"
    );
    Ok(())
}
