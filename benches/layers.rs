//! Per-call overhead of palisade's layers against tower's built-ins, tower-resilience and
//! failsafe, side by side in one run.
//!
//! Run: `cargo bench --bench layers` (add `-- --quick` for a short run). Every variant
//! wraps the same always-ready inner service; one iteration is `ready()` + `call()` +
//! awaiting the response, polled in place with a no-op waker inside an entered tokio
//! runtime (so timers work) and no executor overhead. The `contended` group runs clones
//! of one service on every worker of a multi-thread runtime and reports time per call
//! (lower is better; flat or falling as workers are added means throughput holds).
//! At the end the run prints each variant's median as a ratio to the bare service and to
//! its peers. The `clock` group measures one clock read (a timed breaker call makes two).

use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{black_box, BenchmarkGroup, Criterion};
use tower::{Service, ServiceBuilder, ServiceExt};

mod common;
use common::{drive, median_ns, Echo};

/// failsafe has no tower layer; this is the thinnest adapter over its futures API.
#[derive(Clone)]
struct Failsafe<S, B> {
    inner: S,
    breaker: B,
}

impl<S, B> Service<u64> for Failsafe<S, B>
where
    S: Service<u64>,
    B: failsafe::futures::CircuitBreaker,
{
    type Response = S::Response;
    type Error = failsafe::Error<S::Error>;
    type Future = failsafe::futures::ResponseFuture<
        S::Future,
        B::FailurePolicy,
        B::Instrument,
        failsafe::Any,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(failsafe::Error::Inner)
    }

    fn call(&mut self, req: u64) -> Self::Future {
        self.breaker.call(self.inner.call(req))
    }
}

#[inline]
fn one_call<S>(svc: &mut S) -> u64
where
    S: Service<u64, Response = u64>,
    S::Error: std::fmt::Debug,
{
    drive(svc.ready()).expect("ready");
    drive(svc.call(black_box(7))).expect("call")
}

fn per_call<S>(g: &mut BenchmarkGroup<'_, WallTime>, name: &str, mut svc: S)
where
    S: Service<u64, Response = u64>,
    S::Error: std::fmt::Debug,
{
    g.bench_function(name, |b| b.iter(|| one_call(&mut svc)));
}

fn tr_breaker() -> tower_resilience::circuitbreaker::CircuitBreakerLayer {
    tower_resilience::circuitbreaker::CircuitBreakerLayer::builder()
        .failure_rate_threshold(0.5)
        .build()
        .expect("tower-resilience breaker config")
}

fn tr_bulkhead() -> tower_resilience::bulkhead::BulkheadLayer {
    tower_resilience::bulkhead::BulkheadLayer::builder()
        .max_concurrent_calls(1_000)
        .build()
        .expect("tower-resilience bulkhead config")
}

fn tr_timelimiter() -> tower_resilience::timelimiter::TimeLimiterLayer {
    tower_resilience::timelimiter::TimeLimiterLayer::builder()
        .timeout_duration(Duration::from_secs(1))
        .build()
}

fn palisade_timeout() -> palisade::timeout::TimeoutLayer {
    palisade::timeout::TimeoutConfig::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .expect("timeout config")
        .layer()
}

fn palisade_bulkhead() -> palisade::bulkhead::BulkheadLayer {
    palisade::bulkhead::BulkheadConfig::builder()
        .max_concurrent_calls(1_000)
        .build()
        .expect("bulkhead config")
        .layer()
}

/// The same bulkhead in queued mode (it never has to queue here: the fast path only).
fn palisade_bulkhead_queued() -> palisade::bulkhead::BulkheadLayer<palisade::bulkhead::Queued> {
    palisade::bulkhead::BulkheadConfig::builder()
        .max_concurrent_calls(1_000)
        .max_wait(Duration::from_secs(1))
        .build()
        .expect("bulkhead config")
        .layer()
}

fn palisade_breaker() -> palisade::breaker::CircuitBreakerLayer {
    palisade::breaker::BreakerConfig::builder()
        .build()
        .expect("breaker config")
        .layer()
}

/// A breaker that times every call (latency summary, slow-call rules): two clock reads
/// per call more than the default.
fn palisade_breaker_timed() -> palisade::breaker::CircuitBreakerLayer {
    palisade::breaker::BreakerConfig::builder()
        .record_latency(true)
        .build()
        .expect("breaker config")
        .layer()
}

/// The Hystrix preset over `Echo` (bulkhead wide enough never to reject here).
fn palisade_hystrix_service(
) -> impl Service<u64, Response = u64, Error = palisade::BoxError, Future: Send> + Clone + Send + 'static
{
    ServiceBuilder::new()
        .layer(
            palisade::preset::Hystrix::builder()
                .max_concurrent_requests(1_000)
                .build()
                .expect("hystrix config")
                .layer(),
        )
        .service(Echo)
}

/// The same three layers from tower-resilience: breaker outside bulkhead outside timeout.
fn tr_stack_service(
) -> impl Service<u64, Response = u64, Error: std::fmt::Debug, Future: Send> + Clone + Send + 'static
{
    ServiceBuilder::new()
        .layer(tr_breaker())
        .layer(tr_bulkhead())
        .layer(tr_timelimiter())
        .service(Echo)
}

fn layers(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let _entered = rt.enter();
    let mut g = c.benchmark_group("per_call");

    per_call(&mut g, "bare", Echo);

    // Timeouts.
    per_call(
        &mut g,
        "tower_timeout",
        tower::timeout::Timeout::new(Echo, Duration::from_secs(1)),
    );
    per_call(
        &mut g,
        "palisade_timeout",
        ServiceBuilder::new()
            .layer(palisade_timeout())
            .service(Echo),
    );
    per_call(
        &mut g,
        "tower_resilience_timelimiter",
        ServiceBuilder::new().layer(tr_timelimiter()).service(Echo),
    );

    // Bulkheads.
    per_call(
        &mut g,
        "tower_concurrency_limit",
        tower::limit::ConcurrencyLimit::new(Echo, 1_000),
    );
    per_call(
        &mut g,
        "palisade_bulkhead",
        ServiceBuilder::new()
            .layer(palisade_bulkhead())
            .service(Echo),
    );
    per_call(
        &mut g,
        "tower_resilience_bulkhead",
        ServiceBuilder::new().layer(tr_bulkhead()).service(Echo),
    );

    // Breakers, closed.
    per_call(
        &mut g,
        "failsafe_breaker",
        Failsafe {
            inner: Echo,
            breaker: failsafe::Config::new().build(),
        },
    );
    per_call(
        &mut g,
        "palisade_breaker",
        ServiceBuilder::new()
            .layer(palisade_breaker())
            .service(Echo),
    );
    per_call(
        &mut g,
        "palisade_breaker_timed",
        ServiceBuilder::new()
            .layer(palisade_breaker_timed())
            .service(Echo),
    );
    per_call(
        &mut g,
        "tower_resilience_breaker",
        ServiceBuilder::new().layer(tr_breaker()).service(Echo),
    );

    // Whole stacks: breaker outside bulkhead outside timeout, as Hystrix runs them.
    per_call(&mut g, "tower_resilience_stack", tr_stack_service());

    per_call(&mut g, "palisade_hystrix", palisade_hystrix_service());

    g.finish();
}

/// Time per call with `workers` tasks, one per worker thread, each calling its own clone
/// of one shared service.
fn contended_run<S>(svc: &S, workers: usize, iters: u64) -> Duration
where
    S: Service<u64, Response = u64> + Clone + Send + 'static,
    S::Error: std::fmt::Debug,
    S::Future: Send,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("runtime");
    let per_worker = iters.div_ceil(workers as u64);
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(workers + 1));
    let handles: Vec<_> = (0..workers)
        .map(|_| {
            let mut svc = svc.clone();
            let barrier = barrier.clone();
            rt.spawn(async move {
                // Park this worker until all are spawned, so they start together.
                tokio::task::block_in_place(|| {
                    barrier.wait();
                });
                let start = Instant::now();
                for _ in 0..per_worker {
                    black_box(
                        svc.ready()
                            .await
                            .expect("ready")
                            .call(7)
                            .await
                            .expect("call"),
                    );
                }
                start.elapsed()
            })
        })
        .collect();
    barrier.wait();
    // The workers start together; the slowest one's time is the wall time of the run.
    // (Timing from this thread would miss runs that end before it is scheduled again.)
    let wall = handles
        .into_iter()
        .map(|h| rt.block_on(h).expect("task"))
        .max()
        .unwrap_or_default();
    drop(rt);
    // Wall time for `iters` calls spread over the workers.
    wall.mul_f64(iters as f64 / (per_worker * workers as u64) as f64)
}

fn contended_variant<S>(c: &mut Criterion, name: &str, svc: S)
where
    S: Service<u64, Response = u64> + Clone + Send + 'static,
    S::Error: std::fmt::Debug,
    S::Future: Send,
{
    let mut g = c.benchmark_group(format!("contended/{name}"));
    for workers in [1usize, 2, 4] {
        g.bench_function(format!("{workers}_workers"), |b| {
            b.iter_custom(|iters| {
                // Short runs are dominated by start-up: run at least 10,000 calls and
                // scale the time back to `iters`.
                let n = iters.max(10_000);
                contended_run(&svc, workers, n).mul_f64(iters as f64 / n as f64)
            })
        });
    }
    g.finish();
}

fn contended(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let _entered = rt.enter();
    contended_variant(
        c,
        "palisade_breaker",
        ServiceBuilder::new()
            .layer(palisade_breaker())
            .service(Echo),
    );
    contended_variant(
        c,
        "palisade_breaker_timed",
        ServiceBuilder::new()
            .layer(palisade_breaker_timed())
            .service(Echo),
    );
    contended_variant(
        c,
        "failsafe_breaker",
        Failsafe {
            inner: Echo,
            breaker: failsafe::Config::new().build(),
        },
    );
    contended_variant(
        c,
        "tower_resilience_breaker",
        ServiceBuilder::new().layer(tr_breaker()).service(Echo),
    );
    contended_variant(
        c,
        "palisade_timeout",
        ServiceBuilder::new()
            .layer(palisade_timeout())
            .service(Echo),
    );
    contended_variant(
        c,
        "tower_timeout",
        tower::timeout::Timeout::new(Echo, Duration::from_secs(1)),
    );
    contended_variant(c, "palisade_hystrix", palisade_hystrix_service());
    contended_variant(c, "tower_resilience_stack", tr_stack_service());
    contended_variant(
        c,
        "palisade_bulkhead",
        ServiceBuilder::new()
            .layer(palisade_bulkhead())
            .service(Echo),
    );
    contended_variant(
        c,
        "palisade_bulkhead_queued",
        ServiceBuilder::new()
            .layer(palisade_bulkhead_queued())
            .service(Echo),
    );
    contended_variant(
        c,
        "tower_concurrency_limit",
        tower::limit::ConcurrencyLimit::new(Echo, 1_000),
    );
}

/// What one clock read costs: palisade's system clock (the counter read plus the
/// conversion to nanoseconds), quanta's raw counter read alone, and std's `Instant`
/// (the OS clock) for scale. A timed breaker call reads the clock twice.
fn clock(c: &mut Criterion) {
    let mut g = c.benchmark_group("clock");
    let palisade = palisade::clock::Clock::system();
    g.bench_function("palisade_system_now", |b| {
        b.iter(|| black_box(palisade.now()))
    });
    let quanta = quanta::Clock::new();
    g.bench_function("quanta_raw", |b| b.iter(|| black_box(quanta.raw())));
    g.bench_function("std_instant_now", |b| b.iter(|| black_box(Instant::now())));
    g.finish();
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    layers(&mut c, &rt);
    contended(&mut c, &rt);
    clock(&mut c);
    c.final_summary();
    print_ratios();
}

/// Prints, for each pair, our median against the peer's and the ratio (peer / ours:
/// above 1.0 means palisade is faster).
fn print_ratios() {
    const PAIRS: &[(&str, &str, &str)] = &[
        ("per_call", "palisade_timeout", "tower_timeout"),
        (
            "per_call",
            "palisade_timeout",
            "tower_resilience_timelimiter",
        ),
        ("per_call", "palisade_bulkhead", "tower_concurrency_limit"),
        ("per_call", "palisade_bulkhead", "tower_resilience_bulkhead"),
        ("per_call", "palisade_breaker", "failsafe_breaker"),
        ("per_call", "palisade_breaker", "tower_resilience_breaker"),
        ("per_call", "palisade_breaker_timed", "failsafe_breaker"),
        (
            "per_call",
            "palisade_breaker_timed",
            "tower_resilience_breaker",
        ),
        ("per_call", "palisade_hystrix", "tower_resilience_stack"),
        ("per_call", "bare", "palisade_breaker"),
        ("per_call", "bare", "palisade_breaker_timed"),
        ("per_call", "bare", "palisade_hystrix"),
    ];
    println!("\nmedians (ns per call) and ratios");
    for (group, a, b) in PAIRS {
        if let (Some(x), Some(y)) = (median_ns(group, a), median_ns(group, b)) {
            println!(
                "{group}: {a} {x:.1} ns, {b} {y:.1} ns, {b}/{a} = {:.2}x",
                y / x
            );
        }
    }
    println!("\ncontended: ns per call (wall) at 1, 2 and 4 workers");
    for variant in [
        "palisade_breaker",
        "palisade_breaker_timed",
        "failsafe_breaker",
        "tower_resilience_breaker",
        "palisade_timeout",
        "tower_timeout",
        "palisade_hystrix",
        "tower_resilience_stack",
        "palisade_bulkhead",
        "palisade_bulkhead_queued",
        "tower_concurrency_limit",
    ] {
        let group = format!("contended/{variant}");
        let row: Vec<String> = ["1_workers", "2_workers", "4_workers"]
            .iter()
            .map(|w| match median_ns(&group, w) {
                Some(ns) => format!("{ns:>8.1}"),
                None => format!("{:>8}", "-"),
            })
            .collect();
        println!("{variant:<26}{}", row.join(""));
    }
}
