//! Every numeric knob of every public builder (the transport's aside) at its extremes:
//! 0, 1, max - 1 and max for integers; zero, 1 ns and `Duration::MAX` for durations; 0,
//! NaN, the infinities, negatives and the ends of the range for floats. A value is either
//! rejected by the builder with a `ConfigError` naming that knob, or accepted, and then a
//! short workload runs through what was built and must still work.
//!
//! Each case runs in a child process (this test binary run again with
//! `PALISADE_CONFIG_CASES` naming the cases), so that an abort (a huge allocation, a
//! capacity overflow) is caught as well as a panic. A child runs a batch of cases one after
//! the other and reports each on stdout (`START i`, then `RESULT i ...`); a child that
//! dies mid-batch is blamed for the case it had started, and the rest of its batch runs
//! again in a new child. A panic hook reports panics of any thread (a gossip driver task
//! included) against the running case.
//!
//! Run it with `cargo test --test config -- --nocapture` to see the table of
//! every case; `PALISADE_CONFIG_FILTER=gossip.member` runs only the knobs whose name
//! contains that. Children get `ulimit -v` (through `sh`, so Unix only) so that a
//! runaway allocation fails inside the child instead of swapping the machine.
//!
//! Workloads run on tokio's paused clock, except the gossip clusters, which run on
//! loopback in real time with a fast protocol configuration and bounds far above what
//! the configuration needs (they wait for an event, never for a fixed time).

#[path = "../common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::future::Future;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use palisade::balance::{
    Builder, ConsistentHash, LeastConnections, OutlierDetection, PowerOfTwoChoices, Random,
    RoundRobin, SlowStart, WeightedRoundRobin,
};
use palisade::breaker::{BreakerConfig, BreakerConfigBuilder, CircuitState};
use palisade::bulkhead::BulkheadConfig;
use palisade::clock::Clock;
use palisade::discover::{ChannelSet, FixedList};
use palisade::error::{BreakerOpen, BulkheadFull, Elapsed, NoEndpoints};
use palisade::gossip::proto::Config;
use palisade::gossip::runtime::{Membership, MembershipConfig, RetryJoin, StartError};
use palisade::gossip::sim::{Network, Simulation};
use palisade::gossip::MemberState;
use palisade::preset::Hystrix;
use palisade::timeout::TimeoutConfig;
use palisade::window::{Event, WindowConfig};
use palisade::{BoxError, ConfigError};
use tower::{service_fn, Layer, Service, ServiceExt};

const CASES_ENV: &str = "PALISADE_CONFIG_CASES";

/// A value given to a knob.
#[derive(Debug, Clone)]
enum V {
    U(u64),
    D(Duration),
    F(f64),
    S(String),
}

impl V {
    fn u32(&self) -> u32 {
        match self {
            V::U(n) => u32::try_from(*n).expect("a u32 knob got a u32 value"),
            _ => unreachable!("{self:?} is not an integer"),
        }
    }
    fn usize(&self) -> usize {
        match self {
            V::U(n) => usize::try_from(*n).expect("a usize knob got a usize value"),
            _ => unreachable!("{self:?} is not an integer"),
        }
    }
    fn d(&self) -> Duration {
        match self {
            V::D(d) => *d,
            _ => unreachable!("{self:?} is not a duration"),
        }
    }
    fn f(&self) -> f64 {
        match self {
            V::F(f) => *f,
            _ => unreachable!("{self:?} is not a float"),
        }
    }
    fn s(&self) -> String {
        match self {
            V::S(s) => s.clone(),
            _ => unreachable!("{self:?} is not a string"),
        }
    }
}

impl std::fmt::Display for V {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            V::U(n) if *n == u64::MAX => f.write_str("u64::MAX"),
            V::U(n) if *n == u64::MAX - 1 => f.write_str("u64::MAX-1"),
            V::U(n) if *n == u64::from(u32::MAX) => f.write_str("u32::MAX"),
            V::U(n) if *n == u64::from(u32::MAX) - 1 => f.write_str("u32::MAX-1"),
            V::U(n) => write!(f, "{n}"),
            V::D(d) if *d == Duration::MAX => f.write_str("Duration::MAX"),
            V::D(d) => write!(f, "{d:?}"),
            V::F(x) => write!(f, "{x}"),
            V::S(s) if s.len() > 12 => write!(f, "{} bytes", s.len()),
            V::S(s) => write!(f, "{s:?}"),
        }
    }
}

fn u32s() -> Vec<V> {
    [0, 1, u32::MAX - 1, u32::MAX]
        .map(|n| V::U(n.into()))
        .to_vec()
}

fn usizes() -> Vec<V> {
    [0, 1, usize::MAX - 1, usize::MAX]
        .map(|n| V::U(n as u64))
        .to_vec()
}

fn durations() -> Vec<V> {
    [Duration::ZERO, Duration::from_nanos(1), Duration::MAX]
        .map(V::D)
        .to_vec()
}

/// The floats every float knob gets, plus `ends` (the ends of its range and just past).
fn floats(ends: &[f64]) -> Vec<V> {
    let mut v = vec![0.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -1.0];
    v.extend_from_slice(ends);
    v.into_iter().map(V::F).collect()
}

/// What a case came to.
enum Verdict {
    Rejected(&'static str),
    Worked,
}

type Run = fn(&V) -> Result<Verdict, String>;

/// One knob of one builder.
struct Knob {
    /// `builder.knob`, for the table.
    name: &'static str,
    /// The field a `ConfigError` must name when the value is rejected. A constraint
    /// between two knobs may name either: `also` lists the other.
    field: &'static str,
    also: &'static [&'static str],
    values: Vec<V>,
    /// Whether the workload is a gossip cluster on loopback (slow: small batches).
    gossip: bool,
    run: Run,
}

fn knob(name: &'static str, field: &'static str, values: Vec<V>, run: Run) -> Knob {
    Knob {
        name,
        field,
        also: &[],
        values,
        gossip: false,
        run,
    }
}

fn rejected<T>(r: Result<T, ConfigError>) -> Result<T, Verdict> {
    r.map_err(|e| Verdict::Rejected(e.field()))
}

macro_rules! built {
    ($e:expr) => {
        match rejected($e) {
            Ok(v) => v,
            Err(verdict) => return Ok(verdict),
        }
    };
}

fn ensure(cond: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(what())
    }
}

/// Runs `f` on a fresh current-thread runtime whose clock is paused, bounded by a day of
/// virtual time (a hang auto-advances to it).
fn paused<T, F: Future<Output = Result<T, String>>>(f: F) -> Result<T, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap()
        .block_on(async {
            tokio::time::timeout(Duration::from_secs(86_400), f)
                .await
                .unwrap_or_else(|_| Err("workload hung for a virtual day".into()))
        })
}

/// Runs `f` on a fresh runtime in real time, bounded by a minute.
fn real<F: Future<Output = Result<(), String>>>(f: F) -> Result<(), String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            tokio::time::timeout(Duration::from_secs(60), f)
                .await
                .unwrap_or_else(|_| Err("workload hung for a minute".into()))
        })
}

// ---------------------------------------------------------------------------------------
// Breaker, window, bulkhead, timeout, Hystrix.

fn breaker_base() -> BreakerConfigBuilder {
    BreakerConfig::builder().clock(Clock::tokio())
}

/// Five successes on a fresh circuit, fifty failures, a virtual hour, ten successes:
/// every call is answered, the first five succeed, a failure is the inner error or an
/// open circuit's rejection, and an open circuit rejects with `BreakerOpen`.
fn breaker_workload(b: BreakerConfigBuilder) -> Result<Verdict, String> {
    let config = built!(b.build());
    paused(async move {
        let layer = config.layer();
        let handle = layer.handle();
        let mut events = handle.events();
        let mut svc = layer.layer(service_fn(|fail: bool| async move {
            if fail {
                Err::<(), BoxError>("boom".into())
            } else {
                Ok(())
            }
        }));
        for i in 0..5 {
            let r = svc
                .ready()
                .await
                .map_err(|e| e.to_string())?
                .call(false)
                .await;
            ensure(r.is_ok(), || {
                format!("success #{i} on a fresh circuit: {r:?}")
            })?;
        }
        for _ in 0..50 {
            let open = handle.state() == CircuitState::Open;
            let r = svc
                .ready()
                .await
                .map_err(|e| e.to_string())?
                .call(true)
                .await;
            let err = r.err().ok_or("a failing call succeeded")?;
            if open {
                ensure(err.is::<BreakerOpen>(), || {
                    format!("open circuit answered {err}")
                })?;
            }
        }
        tokio::time::sleep(Duration::from_secs(3600)).await;
        for _ in 0..10 {
            let r = svc
                .ready()
                .await
                .map_err(|e| e.to_string())?
                .call(false)
                .await;
            if let Err(e) = r {
                ensure(e.is::<BreakerOpen>(), || format!("success answered {e}"))?;
            }
        }
        while events.try_next().is_some() {}
        let _ = handle.metrics();
        Ok(())
    })?;
    Ok(Verdict::Worked)
}

fn window_workload(w: WindowConfig) -> Result<Verdict, String> {
    let window = built!(w.build());
    for (i, now) in [0, 1, 1_000_000_000, u64::MAX / 2, u64::MAX - 1, u64::MAX]
        .into_iter()
        .enumerate()
    {
        window.record(now, Event::Success, 1_000);
        window.record(now, Event::Failure, u64::MAX);
        let c = window.counts(now);
        ensure(c.total() >= 1, || {
            format!("step {i}: nothing counted at {now}: {c:?}")
        })?;
        let _ = window.snapshot(now);
    }
    Ok(Verdict::Worked)
}

/// The window's knobs, through `WindowConfig::build` (`standalone`) or through the
/// breaker, which names them all `window` (the reason names the window's field).
fn window_knobs(standalone: bool) -> Vec<Knob> {
    let mut lengths = durations();
    // The longest length a window accepts, divided into ten buckets.
    lengths.push(V::D(Duration::from_nanos(u64::MAX - u64::MAX % 10)));
    if standalone {
        return vec![
            // A length that ten buckets cannot divide is the buckets' fault as much.
            Knob {
                also: &["time.buckets"],
                ..knob("window.time.length", "time.length", lengths, |v| {
                    window_workload(WindowConfig::time(v.d(), 10))
                })
            },
            knob("window.time.buckets", "time.buckets", u32s(), |v| {
                window_workload(WindowConfig::time(Duration::from_secs(10), v.u32()))
            }),
            knob("window.count.size", "count.size", u32s(), |v| {
                window_workload(WindowConfig::count(v.u32()))
            }),
            knob("window.stripes", "stripes", u32s(), |v| {
                window_workload(WindowConfig::default().stripes(v.u32()))
            }),
            knob(
                "window.slow_call_threshold",
                "slow_call_threshold",
                durations(),
                |v| window_workload(WindowConfig::default().slow_call_threshold(v.d())),
            ),
        ];
    }
    vec![
        knob("breaker.window.time.length", "window", lengths, |v| {
            breaker_workload(breaker_base().window(WindowConfig::time(v.d(), 10)))
        }),
        knob("breaker.window.time.buckets", "window", u32s(), |v| {
            breaker_workload(
                breaker_base().window(WindowConfig::time(Duration::from_secs(10), v.u32())),
            )
        }),
        knob("breaker.window.count.size", "window", u32s(), |v| {
            breaker_workload(breaker_base().window(WindowConfig::count(v.u32())))
        }),
        knob("breaker.window.stripes", "window", u32s(), |v| {
            breaker_workload(breaker_base().window(WindowConfig::default().stripes(v.u32())))
        }),
        knob(
            "breaker.window.slow_call_threshold",
            "window",
            durations(),
            |v| {
                breaker_workload(
                    breaker_base().window(WindowConfig::default().slow_call_threshold(v.d())),
                )
            },
        ),
    ]
}

fn breaker_knobs() -> Vec<Knob> {
    vec![
        knob(
            "breaker.minimum_requests",
            "minimum_requests",
            u32s(),
            |v| breaker_workload(breaker_base().minimum_requests(v.u32())),
        ),
        knob(
            "breaker.error_percentage",
            "error_percentage",
            floats(&[100.0, 100.000_001, f64::MIN_POSITIVE]),
            |v| breaker_workload(breaker_base().error_percentage(v.f())),
        ),
        knob(
            "breaker.slow_call_percentage",
            "slow_call_percentage",
            floats(&[100.0, 100.000_001]),
            |v| {
                breaker_workload(
                    breaker_base()
                        .slow_call_threshold(Duration::from_millis(5))
                        .slow_call_percentage(v.f()),
                )
            },
        ),
        knob(
            "breaker.slow_call_threshold",
            "slow_call_threshold",
            durations(),
            |v| breaker_workload(breaker_base().slow_call_threshold(v.d())),
        ),
        knob(
            "breaker.consecutive_failures",
            "consecutive_failures",
            u32s(),
            |v| breaker_workload(breaker_base().consecutive_failures(v.u32())),
        ),
        knob("breaker.sleep_window", "sleep_window", durations(), |v| {
            breaker_workload(breaker_base().consecutive_failures(1).sleep_window(v.d()))
        }),
        knob(
            "breaker.exponential_backoff.base",
            "exponential_backoff",
            durations(),
            |v| {
                breaker_workload(
                    breaker_base()
                        .consecutive_failures(1)
                        .exponential_backoff(v.d(), Duration::MAX),
                )
            },
        ),
        knob(
            "breaker.exponential_backoff.max",
            "exponential_backoff",
            durations(),
            |v| {
                breaker_workload(
                    breaker_base()
                        .consecutive_failures(1)
                        .exponential_backoff(Duration::from_nanos(1), v.d()),
                )
            },
        ),
        Knob {
            run: |v| {
                breaker_workload(
                    breaker_base()
                        .consecutive_failures(1)
                        .exponential_backoff(Duration::from_millis(1), Duration::MAX)
                        .backoff_multiplier(v.f()),
                )
            },
            ..knob(
                "breaker.backoff_multiplier",
                "backoff_multiplier",
                floats(&[1.0, 0.999_999, f64::MAX]),
                |_| unreachable!(),
            )
        },
        knob(
            "breaker.backoff_jitter",
            "backoff_jitter",
            floats(&[1.0, 1.000_001, f64::MIN_POSITIVE]),
            |v| {
                breaker_workload(
                    breaker_base()
                        .consecutive_failures(1)
                        .exponential_backoff(Duration::from_millis(1), Duration::MAX)
                        .backoff_jitter(v.f()),
                )
            },
        ),
        knob(
            "breaker.half_open_probes",
            "half_open_probes",
            u32s(),
            |v| {
                breaker_workload(
                    breaker_base()
                        .consecutive_failures(1)
                        .half_open_probes(v.u32()),
                )
            },
        ),
        knob("breaker.probes_to_close", "probes_to_close", u32s(), |v| {
            breaker_workload(
                breaker_base()
                    .consecutive_failures(1)
                    .probes_to_close(v.u32()),
            )
        }),
        knob(
            "breaker.probe_max_wait",
            "probe_max_wait",
            durations(),
            |v| breaker_workload(breaker_base().consecutive_failures(1).probe_max_wait(v.d())),
        ),
        knob("breaker.event_buffer", "event_buffer", usizes(), |v| {
            breaker_workload(
                breaker_base()
                    .consecutive_failures(1)
                    .event_buffer(v.usize()),
            )
        }),
        knob(
            "breaker.jitter_seed",
            "jitter_seed",
            vec![V::U(0), V::U(1), V::U(u64::MAX - 1), V::U(u64::MAX)],
            |v| {
                let V::U(seed) = v else { unreachable!() };
                breaker_workload(
                    breaker_base()
                        .consecutive_failures(1)
                        .exponential_backoff(Duration::from_millis(1), Duration::from_secs(1))
                        .backoff_jitter(1.0)
                        .jitter_seed(*seed),
                )
            },
        ),
    ]
    .into_iter()
    .chain(window_knobs(false))
    .collect()
}

/// An inner service that takes 10 ms (virtual).
async fn ten_ms(x: u32) -> Result<u32, BoxError> {
    tokio::time::sleep(Duration::from_millis(10)).await;
    Ok(x)
}

/// Four calls at once through a bulkhead of `limit`: each is answered, at most `limit`
/// and at least one succeed at once, the others are `BulkheadFull`; with `queued`, a
/// call waits at most about `max_wait` (and all succeed when it is long).
fn bulkhead_workload(limit: usize, max_wait: Option<Duration>) -> Result<Verdict, String> {
    let results: Vec<Result<u32, BoxError>> = match max_wait {
        None => {
            let config = built!(BulkheadConfig::builder()
                .max_concurrent_calls(limit)
                .build());
            let layer = config.layer();
            let mut out = Vec::new();
            paused(async {
                let svc = layer.layer(service_fn(ten_ms));
                let calls = (0..4).map(|i| svc.clone().oneshot(i));
                out = futures::future::join_all(calls).await;
                Ok(())
            })?;
            out
        }
        Some(wait) => {
            let config = built!(BulkheadConfig::builder()
                .max_concurrent_calls(limit)
                .max_wait(wait)
                .build());
            let layer = config.layer();
            let mut out = Vec::new();
            paused(async {
                let svc = layer.layer(service_fn(ten_ms));
                let calls = (0..4).map(|i| svc.clone().oneshot(i));
                out = futures::future::join_all(calls).await;
                Ok(())
            })?;
            out
        }
    };
    let ok = results.iter().filter(|r| r.is_ok()).count();
    for r in &results {
        if let Err(e) = r {
            ensure(e.is::<BulkheadFull>(), || format!("bulkhead answered {e}"))?;
        }
    }
    ensure(ok >= 1, || "no call got through".into())?;
    let long_wait = max_wait.is_some_and(|w| w >= Duration::from_secs(1));
    if limit >= 4 || long_wait {
        ensure(ok == 4, || format!("{ok} of 4 calls got through"))?;
    } else if max_wait.is_none() {
        ensure(ok == limit, || {
            format!("{ok} calls got through a limit of {limit}")
        })?;
    }
    Ok(Verdict::Worked)
}

/// Ten calls of 10 ms under a default timeout of `default`, or `per_request` when the
/// override gives one: each succeeds when the timeout is longer, fails with `Elapsed`
/// when shorter.
fn timeout_workload(default: Duration, per_request: Option<Duration>) -> Result<Verdict, String> {
    let config = built!(TimeoutConfig::builder()
        .timeout(default)
        .per_request(move |_: &u32| per_request)
        .build());
    let t = per_request.unwrap_or(default);
    paused(async move {
        let mut svc = config.layer().layer(service_fn(ten_ms));
        for i in 0..10 {
            let r = svc.ready().await.map_err(|e| e.to_string())?.call(i).await;
            match r {
                Ok(_) => ensure(t > Duration::from_millis(10), || {
                    format!("a 10 ms call beat a timeout of {t:?}")
                })?,
                Err(e) => ensure(e.is::<Elapsed>() && t <= Duration::from_millis(10), || {
                    format!("timeout {t:?} answered {e}")
                })?,
            }
        }
        Ok(())
    })?;
    Ok(Verdict::Worked)
}

fn hystrix_workload(b: palisade::preset::HystrixBuilder) -> Result<Verdict, String> {
    let config = built!(b.breaker(|b| b.clock(Clock::tokio())).build());
    paused(async move {
        let layer = config.layer();
        let handle = layer.breaker();
        let mut svc = layer.layer(service_fn(|fail: bool| async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            if fail {
                Err::<(), BoxError>("boom".into())
            } else {
                Ok(())
            }
        }));
        for fail in [false; 5].into_iter().chain([true; 40]).chain([false; 10]) {
            let open = handle.state() == CircuitState::Open;
            let r = svc
                .ready()
                .await
                .map_err(|e| e.to_string())?
                .call(fail)
                .await;
            if let Err(e) = r {
                let known = e.is::<BreakerOpen>()
                    || e.is::<BulkheadFull>()
                    || e.is::<Elapsed>()
                    || e.to_string() == "boom";
                ensure(known, || format!("unexpected error {e}"))?;
                ensure(!open || e.is::<BreakerOpen>(), || {
                    format!("open answered {e}")
                })?;
            }
            if fail {
                continue;
            }
            tokio::time::sleep(Duration::from_secs(600)).await;
        }
        let _ = layer.bulkhead();
        Ok(())
    })?;
    Ok(Verdict::Worked)
}

fn layer_knobs() -> Vec<Knob> {
    let mut knobs = vec![
        knob(
            "bulkhead.max_concurrent_calls",
            "max_concurrent_calls",
            usizes(),
            |v| bulkhead_workload(v.usize(), None),
        ),
        knob(
            "bulkhead(queued).max_concurrent_calls",
            "max_concurrent_calls",
            usizes(),
            |v| bulkhead_workload(v.usize(), Some(Duration::from_secs(1))),
        ),
        knob("bulkhead.max_wait", "max_wait", durations(), |v| {
            bulkhead_workload(1, Some(v.d()))
        }),
        knob("timeout.timeout", "timeout", durations(), |v| {
            timeout_workload(v.d(), None)
        }),
        knob("timeout.per_request", "per_request", durations(), |v| {
            timeout_workload(Duration::from_secs(1), Some(v.d()))
        }),
        knob("hystrix.timeout", "timeout", durations(), |v| {
            hystrix_workload(Hystrix::builder().timeout(v.d()))
        }),
        knob(
            "hystrix.max_concurrent_requests",
            "max_concurrent_requests",
            usizes(),
            |v| hystrix_workload(Hystrix::builder().max_concurrent_requests(v.usize())),
        ),
        knob(
            "hystrix.request_volume_threshold",
            "request_volume_threshold",
            u32s(),
            |v| hystrix_workload(Hystrix::builder().request_volume_threshold(v.u32())),
        ),
        knob(
            "hystrix.error_percent_threshold",
            "error_percent_threshold",
            floats(&[100.0, 100.000_001]),
            |v| hystrix_workload(Hystrix::builder().error_percent_threshold(v.f())),
        ),
        knob("hystrix.sleep_window", "sleep_window", durations(), |v| {
            hystrix_workload(Hystrix::builder().sleep_window(v.d()))
        }),
        knob(
            "hystrix.metrics_window.length",
            "metrics_window",
            durations(),
            |v| hystrix_workload(Hystrix::builder().metrics_window(v.d(), 1)),
        ),
        knob(
            "hystrix.metrics_window.buckets",
            "metrics_window",
            u32s(),
            |v| {
                hystrix_workload(
                    Hystrix::builder().metrics_window(Duration::from_secs(10), v.u32()),
                )
            },
        ),
        knob(
            "hystrix.breaker.half_open_probes",
            "half_open_probes",
            u32s(),
            |v| hystrix_workload(Hystrix::builder().breaker(|b| b.half_open_probes(v.u32()))),
        ),
    ];
    knobs.extend(window_knobs(true));
    knobs
}

// ---------------------------------------------------------------------------------------
// Balance and discovery.

/// 60 calls over three endpoints, one of which always fails: every call is answered,
/// and at least half succeed (the two healthy endpoints, whatever the picker does).
async fn balance_calls<P, H>(builder: Builder<P, H>, weights: [u32; 3]) -> Result<Verdict, String>
where
    P: palisade::balance::Picker,
    H: palisade::balance::HashKey<u64>,
{
    let endpoint = |fail: bool| {
        service_fn(move |_: u64| async move {
            if fail {
                Err::<(), BoxError>("down".into())
            } else {
                Ok(())
            }
        })
    };
    let list = FixedList::builder()
        .endpoint("bad", endpoint(true), weights[0])
        .endpoint("a", endpoint(false), weights[1])
        .endpoint("b", endpoint(false), weights[2])
        .build()
        .map_err(|e| e.to_string())?;
    let mut balance = built!(builder.build_weighted(list));
    let mut ok = 0;
    for i in 0..60u64 {
        let r = balance
            .ready()
            .await
            .map_err(|e| e.to_string())?
            .call(i)
            .await;
        ok += usize::from(r.is_ok());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ensure(ok >= 30, || format!("{ok} of 60 calls succeeded"))?;
    Ok(Verdict::Worked)
}

fn balance_workload<P: palisade::balance::Picker + Send + 'static>(
    builder: Builder<P>,
) -> Result<Verdict, String> {
    paused(balance_calls(builder.clock(Clock::tokio()), [1, 1, 1]))
}

fn outlier_workload(b: palisade::balance::OutlierDetectionBuilder) -> Result<Verdict, String> {
    let detection = built!(b.build());
    balance_workload(Builder::new(RoundRobin::new()).outlier_detection(detection))
}

fn slow_start_workload(b: palisade::balance::SlowStartBuilder) -> Result<Verdict, String> {
    let slow = built!(b.build());
    balance_workload(Builder::new(WeightedRoundRobin::new()).slow_start(slow))
}

/// The same weight on every endpoint, through every weighted picker and the ring.
fn weight_workload(w: u32) -> Result<Verdict, String> {
    built!(FixedList::builder().endpoint("a", (), w).build());
    let weights = [w; 3];
    let tokio = Clock::tokio;
    paused(async move {
        balance_calls(Builder::new(RoundRobin::new()).clock(tokio()), weights).await?;
        balance_calls(
            Builder::new(WeightedRoundRobin::new()).clock(tokio()),
            weights,
        )
        .await?;
        balance_calls(
            Builder::new(Random::seeded(1).weighted()).clock(tokio()),
            weights,
        )
        .await?;
        balance_calls(
            Builder::new(LeastConnections::seeded(1).weighted()).clock(tokio()),
            weights,
        )
        .await?;
        balance_calls(
            Builder::new(PowerOfTwoChoices::seeded(1)).clock(tokio()),
            weights,
        )
        .await?;
        balance_calls(
            Builder::new(ConsistentHash::new())
                .clock(tokio())
                .hash_key(|r: &u64| *r),
            weights,
        )
        .await
    })
}

fn no_endpoint_workload(d: Duration) -> Result<Verdict, String> {
    let (set, _handle) = ChannelSet::<&str, tower::util::BoxService<u64, (), BoxError>>::new();
    let builder = Builder::new(RoundRobin::new())
        .clock(Clock::tokio())
        .no_endpoint_deadline(d);
    // The workload needs the balancer; a rejection comes from `build`.
    let mut balance = built!(builder.build_weighted(set));
    paused(async move {
        let started = tokio::time::Instant::now();
        let call = async { balance.ready().await?.call(1).await };
        match tokio::time::timeout(Duration::from_secs(3600), call).await {
            Ok(Err(e)) => {
                ensure(e.is::<NoEndpoints>(), || {
                    format!("empty balancer answered {e}")
                })?;
                ensure(started.elapsed() >= d, || {
                    format!("gave up after {:?}, before {d:?}", started.elapsed())
                })
            }
            Ok(Ok(())) => Err("an empty balancer answered".into()),
            // Still waiting after an hour: only right for a deadline past it.
            Err(_) => ensure(d > Duration::from_secs(3600), || {
                format!("no answer within an hour for a deadline of {d:?}")
            }),
        }
    })?;
    Ok(Verdict::Worked)
}

fn balance_knobs() -> Vec<Knob> {
    vec![
        knob(
            "balance.no_endpoint_deadline",
            "no_endpoint_deadline",
            durations(),
            |v| no_endpoint_workload(v.d()),
        ),
        knob("balance.latency_decay", "latency_decay", durations(), |v| {
            balance_workload(
                Builder::new(PowerOfTwoChoices::seeded(1).peak_ewma(Duration::from_millis(1)))
                    .latency_decay(v.d()),
            )
        }),
        knob(
            "balance.p2c.peak_ewma.default_rtt",
            "default_rtt",
            durations(),
            |v| balance_workload(Builder::new(PowerOfTwoChoices::seeded(1).peak_ewma(v.d()))),
        ),
        knob(
            "balance.consistent_hash.replicas",
            "replicas",
            u32s(),
            |v| {
                let builder = Builder::new(ConsistentHash::with_replicas(v.u32()))
                    .clock(Clock::tokio())
                    .hash_key(|r: &u64| *r);
                paused(balance_calls(builder, [1, 1, 1]))
            },
        ),
        knob(
            "discover.fixed_list.endpoint.weight",
            "endpoint",
            u32s(),
            |v| weight_workload(v.u32()),
        ),
        knob(
            "ejection.consecutive_failures",
            "consecutive_failures",
            u32s(),
            |v| outlier_workload(OutlierDetection::builder().consecutive_failures(v.u32())),
        ),
        knob("ejection.interval", "interval", durations(), |v| {
            outlier_workload(OutlierDetection::builder().interval(v.d()))
        }),
        knob(
            "ejection.base_ejection_time",
            "base_ejection_time",
            durations(),
            |v| {
                outlier_workload(
                    OutlierDetection::builder()
                        .consecutive_failures(1)
                        .max_ejection_percent(100)
                        .base_ejection_time(v.d())
                        .max_ejection_time(Duration::MAX),
                )
            },
        ),
        knob(
            "ejection.max_ejection_time",
            "max_ejection_time",
            durations(),
            |v| {
                outlier_workload(
                    OutlierDetection::builder()
                        .consecutive_failures(1)
                        .max_ejection_percent(100)
                        .base_ejection_time(Duration::from_nanos(1))
                        .max_ejection_time(v.d()),
                )
            },
        ),
        knob(
            "ejection.max_ejection_percent",
            "max_ejection_percent",
            u32s(),
            |v| {
                outlier_workload(
                    OutlierDetection::builder()
                        .consecutive_failures(1)
                        .max_ejection_percent(v.u32()),
                )
            },
        ),
        knob(
            "ejection.success_rate_minimum_hosts",
            "success_rate_minimum_hosts",
            usizes(),
            |v| {
                outlier_workload(
                    OutlierDetection::builder()
                        .interval(Duration::from_secs(1))
                        .success_rate_request_volume(1)
                        .success_rate_minimum_hosts(v.usize()),
                )
            },
        ),
        knob(
            "ejection.success_rate_request_volume",
            "success_rate_request_volume",
            u32s(),
            |v| {
                outlier_workload(
                    OutlierDetection::builder()
                        .interval(Duration::from_secs(1))
                        .success_rate_minimum_hosts(1)
                        .success_rate_request_volume(v.u32()),
                )
            },
        ),
        knob(
            "ejection.success_rate_stdev_factor",
            "success_rate_stdev_factor",
            floats(&[f64::MIN_POSITIVE, f64::MAX]),
            |v| {
                outlier_workload(
                    OutlierDetection::builder()
                        .interval(Duration::from_secs(1))
                        .success_rate_minimum_hosts(1)
                        .success_rate_request_volume(1)
                        .success_rate_stdev_factor(v.f()),
                )
            },
        ),
        knob(
            "ejection.panic_threshold_percent",
            "panic_threshold_percent",
            u32s(),
            |v| {
                outlier_workload(
                    OutlierDetection::builder()
                        .consecutive_failures(1)
                        .max_ejection_percent(100)
                        .panic_threshold_percent(v.u32()),
                )
            },
        ),
        knob("slow_start.window", "window", durations(), |v| {
            slow_start_workload(SlowStart::builder().window(v.d()))
        }),
        knob(
            "slow_start.aggression",
            "aggression",
            floats(&[f64::MIN_POSITIVE, f64::MAX, 1.0]),
            |v| slow_start_workload(SlowStart::builder().aggression(v.f())),
        ),
        knob(
            "slow_start.min_weight_percent",
            "min_weight_percent",
            u32s(),
            |v| slow_start_workload(SlowStart::builder().min_weight_percent(v.u32())),
        ),
    ]
}

// ---------------------------------------------------------------------------------------
// Gossip: the protocol in the simulator (40 members, past every scaling step) and a
// three-member cluster on loopback.

/// 34 simulated members (past the scaling steps at 10 and 32 members) join one seed,
/// run, one crashes, one leaves: nothing panics and the seed knows most of the others.
fn sim_workload(config: &Config) -> Result<(), String> {
    let mut sim = Simulation::new(1, Network::lan());
    let config = Config {
        seed: Some(config.seed.unwrap_or(3)),
        ..config.clone()
    };
    let ids = sim.add_members(34, &config).map_err(|e| e.to_string())?;
    for &id in &ids[1..] {
        sim.join(id, &[ids[0]]);
    }
    sim.run_for(Duration::from_secs(3));
    let live = sim.swim(ids[0]).map_or(0, |s| s.live_members());
    ensure(live >= 20, || {
        format!("the seed knows {live} of 33 members")
    })?;
    sim.crash(ids[5]);
    sim.leave(ids[6]);
    sim.run_for(Duration::from_secs(5));
    Ok(())
}

/// Five simulated members on `network` for a virtual minute: nothing panics, and on a
/// network that delivers (loss below a half, delays below a second) they form.
fn sim_network_workload(network: Network) -> Result<Verdict, String> {
    let mut sim = Simulation::new(1, network);
    let config = Config {
        seed: Some(5),
        ..common::fast_gossip()
    };
    let ids = sim.add_members(5, &config).map_err(|e| e.to_string())?;
    for &id in &ids[1..] {
        sim.join(id, &[ids[0]]);
    }
    sim.set_slow_between(ids[1], network.min_delay, network.max_delay);
    sim.run_for(Duration::from_secs(60));
    let delivers = network.loss.is_nan()
        || network.loss < 0.5 && network.max_delay.max(network.min_delay) < Duration::from_secs(1);
    let live = sim.swim(ids[0]).map_or(0, |s| s.live_members());
    ensure(!delivers || live == 4, || {
        format!("the seed knows {live} of 4")
    })?;
    Ok(Verdict::Worked)
}

fn sim_knobs() -> Vec<Knob> {
    vec![
        knob(
            "gossip.sim.network.loss",
            "loss",
            floats(&[1.0, 1.000_001, f64::MIN_POSITIVE]),
            |v| sim_network_workload(Network::lan().with_loss(v.f())),
        ),
        knob(
            "gossip.sim.network.min_delay",
            "min_delay",
            durations(),
            |v| {
                sim_network_workload(Network {
                    min_delay: v.d(),
                    ..Network::lan()
                })
            },
        ),
        knob(
            "gossip.sim.network.max_delay",
            "max_delay",
            durations(),
            |v| {
                sim_network_workload(Network {
                    max_delay: v.d(),
                    ..Network::lan()
                })
            },
        ),
    ]
}

/// The state `observer` holds of `name`, if any.
fn state_of(observer: &Membership, name: &str) -> Option<MemberState> {
    observer.member(name).map(|m| m.state())
}

async fn eventually(
    what: &str,
    cap: Duration,
    mut cond: impl FnMut() -> bool,
) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + cap;
    while !cond() {
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("{what}: not within {cap:?}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Three members on loopback: `a`, then `b` and `c` joining through `a`. All three see
/// each other alive; `c` leaves gracefully and `a` and `b` see it gone (left, or failed
/// when the leave could not be sent); a subscriber of `a` saw the joins.
async fn cluster(make: impl Fn(&str) -> MembershipConfig) -> Result<Verdict, String> {
    let start = |config: MembershipConfig| async move {
        match Membership::start(config).await {
            Ok(m) => Ok(Ok(m)),
            Err(StartError::Config(e)) => Ok(Err(Verdict::Rejected(e.field()))),
            Err(e) => Err(format!("start: {e}")),
        }
    };
    let a = match start(make("a")).await? {
        Ok(m) => m,
        Err(v) => return Ok(v),
    };
    let mut events = a.subscribe();
    let seed = a.gossip_addr();
    let b = start(make("b").seeds([seed]))
        .await?
        .map_err(|_| "b rejected what a accepted")?;
    let c = start(make("c").seeds([seed]))
        .await?
        .map_err(|_| "c rejected what a accepted")?;
    let all = [&a, &b, &c];
    eventually(
        "all three see each other alive",
        Duration::from_secs(20),
        || all.iter().all(|m| m.live_members() == 2),
    )
    .await?;
    // A subscriber that fell behind (a small event capacity) is told so, then goes on.
    let mut received = 0;
    loop {
        match events.try_recv() {
            Ok(_) => received += 1,
            Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => {}
            Err(_) => break,
        }
    }
    ensure(received >= 1, || "a's subscriber received no event".into())?;
    // A leave is bounded by its timeout; a huge one still returns once acknowledged.
    let _ = tokio::time::timeout(Duration::from_secs(20), c.leave()).await;
    c.shutdown()
        .await
        .map_err(|e| format!("c's driver failed: {e}"))?;
    // Gone: left, or failed when the leave could not be sent, or already forgotten (a
    // short reap timeout).
    let name = c.local().name().to_owned();
    eventually("a and b see c gone", Duration::from_secs(30), || {
        [&a, &b].iter().all(|m| {
            matches!(
                state_of(m, &name),
                None | Some(MemberState::Left | MemberState::Dead)
            )
        })
    })
    .await?;
    ensure(!a.is_stopped() && !b.is_stopped(), || {
        "a member stopped".into()
    })?;
    for m in [a, b] {
        m.shutdown()
            .await
            .map_err(|e| format!("a driver failed: {e}"))?;
    }
    Ok(Verdict::Worked)
}

fn membership(name: &str) -> MembershipConfig {
    MembershipConfig::new(name, "127.0.0.1:0".parse::<SocketAddr>().unwrap())
        .protocol(common::fast_gossip())
        .join_attempts(3)
        .join_backoff(Duration::from_millis(50), Duration::from_millis(500))
        .leave_timeout(Duration::from_secs(2))
}

/// The protocol `config` in the simulator, then on loopback.
fn protocol_workload(config: Config) -> Result<Verdict, String> {
    built!(config.validate());
    sim_workload(&config)?;
    let mut verdict = Ok(Verdict::Worked);
    real(async {
        verdict = cluster(|name| membership(name).protocol(config.clone())).await;
        Ok(())
    })?;
    verdict
}

fn membership_workload(make: fn(&str) -> MembershipConfig) -> Result<Verdict, String> {
    let mut verdict = Ok(Verdict::Worked);
    real(async {
        verdict = cluster(make).await;
        Ok(())
    })?;
    verdict
}

fn gossip_knob(name: &'static str, field: &'static str, values: Vec<V>, run: Run) -> Knob {
    Knob {
        gossip: true,
        ..knob(name, field, values, run)
    }
}

/// The value the child is running, for the `fn` pointers below that cannot capture it.
static VALUE: Mutex<Option<V>> = Mutex::new(None);

fn value() -> V {
    VALUE.lock().unwrap().clone().expect("a case is running")
}

fn gossip_knobs() -> Vec<Knob> {
    macro_rules! proto {
        ($field:ident, $values:expr, $v:ident => $e:expr) => {
            gossip_knob(
                concat!("gossip.proto.", stringify!($field)),
                stringify!($field),
                $values,
                |$v| {
                    protocol_workload(Config {
                        $field: $e,
                        ..common::fast_gossip()
                    })
                },
            )
        };
    }
    macro_rules! member {
        ($name:expr, $field:expr, $values:expr, $body:expr) => {
            gossip_knob($name, $field, $values, |_| membership_workload($body))
        };
    }
    let mut knobs = vec![
        Knob {
            also: &["probe_timeout"],
            ..proto!(probe_interval, durations(), v => v.d())
        },
        proto!(probe_timeout, durations(), v => v.d()),
        proto!(indirect_checks, usizes(), v => v.usize()),
        proto!(suspicion_mult, u32s(), v => v.u32()),
        proto!(suspicion_max_timeout_mult, u32s(), v => v.u32()),
        proto!(awareness_max_multiplier, u32s(), v => v.u32()),
        proto!(gossip_interval, durations(), v => v.d()),
        proto!(gossip_nodes, usizes(), v => v.usize()),
        proto!(gossip_to_the_dead_time, durations(), v => v.d()),
        proto!(retransmit_mult, u32s(), v => v.u32()),
        proto!(push_pull_interval, durations(), v => v.d()),
        proto!(reconnect_interval, durations(), v => v.d()),
        proto!(reap_timeout, durations(), v => v.d()),
        proto!(max_packet_size, usizes(), v => v.usize()),
        proto!(max_stream_size, usizes(), v => v.usize()),
        proto!(max_tags_bytes, usizes(), v => v.usize()),
        proto!(replay_window, usizes(), v => v.usize()),
        proto!(
            cluster_label,
            vec![V::S(String::new()), V::S("x".repeat(255)), V::S("x".repeat(256))],
            v => v.s()
        ),
        member!(
            "gossip.member.name",
            "name",
            vec![
                V::S(String::new()),
                V::S("x".into()),
                V::S("x".repeat(1 << 20)),
            ],
            |name| {
                // Every member gets the value as a prefix of its own name, so that they
                // stay distinct.
                let V::S(prefix) = value() else {
                    unreachable!()
                };
                let name = if prefix.is_empty() {
                    prefix
                } else {
                    format!("{prefix}{name}")
                };
                membership(&name)
            }
        ),
        member!(
            "gossip.member.join_attempts",
            "join_attempts",
            u32s(),
            |name| { membership(name).join_attempts(value().u32()) }
        ),
        member!(
            "gossip.member.join_backoff.initial",
            "join_backoff",
            durations(),
            |name| { membership(name).join_backoff(value().d(), Duration::MAX) }
        ),
        member!(
            "gossip.member.join_backoff.max",
            "join_backoff",
            durations(),
            |name| { membership(name).join_backoff(Duration::from_millis(50), value().d()) }
        ),
        member!(
            "gossip.member.stream_timeout",
            "stream_timeout",
            durations(),
            |name| { membership(name).stream_timeout(value().d()) }
        ),
        member!(
            "gossip.member.max_inbound_streams",
            "max_inbound_streams",
            usizes(),
            |name| { membership(name).max_inbound_streams(value().usize()) }
        ),
        member!(
            "gossip.member.leave_timeout",
            "leave_timeout",
            durations(),
            |name| { membership(name).leave_timeout(value().d()) }
        ),
        member!(
            "gossip.member.event_capacity",
            "event_capacity",
            usizes(),
            |name| { membership(name).event_capacity(value().usize()) }
        ),
        member!(
            "gossip.member.retry_join.max_interval",
            "retry_join.max_interval",
            durations(),
            |name| retrying(name, RetryJoin::forever().max_interval(value().d()))
        ),
        member!(
            "gossip.member.retry_join.max_attempts",
            "retry_join.max_attempts",
            u32s(),
            |name| retrying(name, RetryJoin::forever().max_attempts(value().u32()))
        ),
        member!(
            "gossip.member.retry_join.isolation_timeout",
            "retry_join.isolation_timeout",
            durations(),
            |name| retrying(name, RetryJoin::forever().isolation_timeout(value().d()))
        ),
    ];
    // `max_stream_size` must be at least `max_packet_size`, and the tags bound depends
    // on the packet size: either field may be named.
    for k in &mut knobs {
        match k.field {
            "max_packet_size" => k.also = &["max_stream_size", "max_tags_bytes"],
            "max_stream_size" => k.also = &["max_packet_size"],
            _ => {}
        }
    }
    knobs
}

/// A member that retries joining with `policy`: `a` (the first, with no seed of its
/// own) joins through a closed port, so that its retrying runs.
fn retrying(name: &str, policy: RetryJoin) -> MembershipConfig {
    let config = membership(name).retry_join(policy);
    if name == "a" {
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        config.seeds([closed]).join_attempts(1)
    } else {
        config
    }
}

// ---------------------------------------------------------------------------------------
// The harness.

struct Case {
    knob: usize,
    value: V,
}

fn table() -> (Vec<Knob>, Vec<Case>) {
    let mut knobs = breaker_knobs();
    knobs.extend(layer_knobs());
    knobs.extend(balance_knobs());
    knobs.extend(sim_knobs());
    knobs.extend(gossip_knobs());
    let cases = knobs
        .iter()
        .enumerate()
        .flat_map(|(k, knob)| {
            knob.values.iter().map(move |v| Case {
                knob: k,
                value: v.clone(),
            })
        })
        .collect();
    (knobs, cases)
}

static PANICKED: AtomicBool = AtomicBool::new(false);
/// How many cases the child has started: the watchdog's view of progress.
static STARTED: AtomicUsize = AtomicUsize::new(0);

/// The longest one case may take in a child (wall clock) before it counts as hung: the
/// slowest workload, a gossip cluster, waits at most about a minute for its events.
const CASE_LIMIT: Duration = Duration::from_secs(120);

/// The most memory a child may map: far above what any workload needs, and far below
/// the machine's, so that a runaway allocation fails (and aborts the child) instead of
/// swapping the machine.
const CHILD_MEMORY_KIB: u64 = 4 << 20;

/// Runs the cases named by the environment, when started as a child; a no-op otherwise.
#[test]
fn config_extremes_child() {
    let Ok(list) = std::env::var(CASES_ENV) else {
        return;
    };
    let (knobs, cases) = table();
    std::panic::set_hook(Box::new(|info| {
        PANICKED.store(true, Ordering::SeqCst);
        let msg = info.to_string().replace('\n', " ");
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "PANIC {msg}");
        let _ = out.flush();
    }));
    for i in list.split(',').map(|s| s.parse::<usize>().unwrap()) {
        let started = STARTED.fetch_add(1, Ordering::SeqCst) + 1;
        std::thread::spawn(move || {
            std::thread::sleep(CASE_LIMIT);
            if STARTED.load(Ordering::SeqCst) == started {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "RESULT {i} FAILED hung for {CASE_LIMIT:?}");
                let _ = out.flush();
                std::process::exit(3);
            }
        });
        let case = &cases[i];
        let knob = &knobs[case.knob];
        {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "START {i}");
            let _ = out.flush();
        }
        PANICKED.store(false, Ordering::SeqCst);
        *VALUE.lock().unwrap() = Some(case.value.clone());
        let result = std::panic::catch_unwind(|| (knob.run)(&case.value));
        let line = match result {
            _ if PANICKED.load(Ordering::SeqCst) => "FAILED panicked".to_string(),
            Ok(Ok(Verdict::Worked)) => "ACCEPTED".to_string(),
            Ok(Ok(Verdict::Rejected(field))) => format!("REJECTED {field}"),
            Ok(Err(msg)) => format!("FAILED {}", msg.replace('\n', " ")),
            Err(_) => "FAILED panicked".to_string(),
        };
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "RESULT {i} {line}");
        let _ = out.flush();
    }
}

#[derive(Debug, Clone)]
enum Outcome {
    Accepted,
    Rejected(String),
    Failed(String),
}

/// Runs `batch` in children until every case has a result; a child that dies is blamed
/// for the case it was running.
fn run_batch(mut batch: Vec<usize>, results: &Mutex<BTreeMap<usize, Outcome>>) {
    let exe = std::env::current_exe().unwrap();
    while !batch.is_empty() {
        let list = batch
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "ulimit -v {CHILD_MEMORY_KIB} && exec \"$0\" \"$@\""
            ))
            .arg(&exe)
            .args([
                "--exact",
                "config_extremes_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CASES_ENV, list)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("re-run the test binary");
        let stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let err_tail = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
            s
        });
        let mut running: Option<usize> = None;
        let mut progressed = false;
        let mut case_started = std::time::Instant::now();
        let mut panic_msg = String::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // libtest may print its own prefix on the line first.
            let at = ["START ", "PANIC ", "RESULT "]
                .iter()
                .filter_map(|tag| line.find(tag))
                .min();
            let Some(at) = at else { continue };
            let line = &line[at..];
            if let Some(i) = line.strip_prefix("START ") {
                running = Some(i.parse().unwrap());
                progressed = true;
                case_started = std::time::Instant::now();
                panic_msg.clear();
            } else if let Some(msg) = line.strip_prefix("PANIC ") {
                panic_msg = msg.to_string();
            } else if let Some(rest) = line.strip_prefix("RESULT ") {
                let (i, verdict) = rest.split_once(' ').unwrap();
                let i: usize = i.parse().unwrap();
                let outcome = if let Some(f) = verdict.strip_prefix("REJECTED ") {
                    Outcome::Rejected(f.to_string())
                } else if verdict == "ACCEPTED" {
                    Outcome::Accepted
                } else {
                    let why = verdict.trim_start_matches("FAILED ");
                    Outcome::Failed(if panic_msg.is_empty() {
                        why.to_string()
                    } else {
                        format!("{why}: {panic_msg}")
                    })
                };
                eprintln!("case {i}: {outcome:?} in {:?}", case_started.elapsed());
                results.lock().unwrap().insert(i, outcome);
                batch.retain(|&c| c != i);
                running = None;
            }
        }
        let status = child.wait().unwrap();
        let stderr = err_tail.join().unwrap();
        if let Some(i) = running {
            // The abort's message, not the backtrace after it.
            let tail: String = stderr
                .lines()
                .find(|l| l.contains("memory allocation") || l.contains("panicked"))
                .or_else(|| stderr.lines().rfind(|l| !l.trim().is_empty()))
                .unwrap_or("")
                .chars()
                .take(200)
                .collect();
            let why = if panic_msg.is_empty() {
                tail
            } else {
                panic_msg.clone()
            };
            results
                .lock()
                .unwrap()
                .insert(i, Outcome::Failed(format!("child died ({status}): {why}")));
            batch.retain(|&c| c != i);
        } else if !batch.is_empty() && !progressed {
            // The child exited without starting the rest: blame the first.
            let i = batch.remove(0);
            results.lock().unwrap().insert(
                i,
                Outcome::Failed(format!("child exited ({status}) before the case")),
            );
        }
    }
}

#[test]
fn every_accepted_extreme_value_works_and_every_rejection_names_its_knob() {
    if std::env::var(CASES_ENV).is_ok() {
        return;
    }
    let (knobs, cases) = table();
    // Quick cases in large batches; gossip clusters (real time) in small ones, many at
    // once, since they mostly wait.
    let mut batches: Vec<Vec<usize>> = Vec::new();
    // `PALISADE_CONFIG_FILTER=gossip.member` runs the knobs whose name contains it.
    let filter = std::env::var("PALISADE_CONFIG_FILTER").unwrap_or_default();
    let (gossip, quick): (Vec<usize>, Vec<usize>) = (0..cases.len())
        .filter(|&i| knobs[cases[i].knob].name.contains(filter.as_str()))
        .partition(|&i| knobs[cases[i].knob].gossip);
    batches.extend(quick.chunks(25).map(<[usize]>::to_vec));
    batches.extend(gossip.chunks(2).map(<[usize]>::to_vec));
    let results = Mutex::new(BTreeMap::new());
    let queue = Mutex::new(batches);
    let parallel = 8;
    std::thread::scope(|s| {
        for _ in 0..parallel {
            s.spawn(|| loop {
                let Some(batch) = queue.lock().unwrap().pop() else {
                    break;
                };
                run_batch(batch, &results);
            });
        }
    });
    let results = results.into_inner().unwrap();

    let mut failures = Vec::new();
    let (mut accepted, mut rejected) = (0, 0);
    println!("{:<48} {:<22} outcome", "knob", "value");
    for (i, case) in cases.iter().enumerate() {
        let knob = &knobs[case.knob];
        let Some(outcome) = results.get(&i).cloned() else {
            continue;
        };
        let shown = match &outcome {
            Outcome::Accepted => {
                accepted += 1;
                "accepted, works".to_string()
            }
            Outcome::Rejected(f) if f == knob.field || knob.also.contains(&f.as_str()) => {
                rejected += 1;
                format!("rejected ({f})")
            }
            Outcome::Rejected(f) => {
                failures.push(format!(
                    "{} = {}: rejected naming `{f}`, not `{}`",
                    knob.name, case.value, knob.field
                ));
                format!("REJECTED NAMING {f}")
            }
            Outcome::Failed(why) => {
                failures.push(format!("{} = {}: {why}", knob.name, case.value));
                format!("FAILED: {why}")
            }
        };
        println!("{:<48} {:<22} {shown}", knob.name, case.value.to_string());
    }
    println!(
        "{} cases over {} knobs: {accepted} accepted and working, {rejected} rejected, {} failed",
        results.len(),
        knobs
            .iter()
            .filter(|k| k.name.contains(filter.as_str()))
            .count(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
