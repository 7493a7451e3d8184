//! Heap allocations per call through every palisade layer, counted with a counting global
//! allocator. palisade's layers must allocate nothing per call in steady state; the peers'
//! counts are printed for comparison (`cargo test --test allocations -- --nocapture`).

use std::time::Duration;

use tower::{Service, ServiceBuilder, ServiceExt};

use crate::common;
use common::{allocations, drive, Echo};

/// Allocations per call, averaged over 1,000 calls after a warm-up of 100.
fn per_call<S>(mut svc: S) -> f64
where
    S: Service<u64, Response = u64>,
    S::Error: std::fmt::Debug,
{
    let mut run = |n: u64| {
        for i in 0..n {
            drive(svc.ready()).expect("ready");
            assert_eq!(drive(svc.call(i)).expect("call"), i);
        }
    };
    run(100);
    let before = allocations();
    run(1_000);
    (allocations() - before) as f64 / 1_000.0
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn counting_allocator_sees_allocations() {
    let before = allocations();
    let v = std::hint::black_box(vec![1u8; 64]);
    assert!(allocations() > before);
    drop(v);
}

#[test]
fn palisade_layers_allocate_nothing_per_call() {
    let rt = runtime();
    let _entered = rt.enter();
    let timeout = palisade::timeout::TimeoutConfig::builder()
        .build()
        .unwrap()
        .layer();
    let bulkhead = palisade::bulkhead::BulkheadConfig::builder()
        .max_concurrent_calls(4)
        .build()
        .unwrap()
        .layer();
    let queued = palisade::bulkhead::BulkheadConfig::builder()
        .max_concurrent_calls(4)
        .max_wait(Duration::from_secs(1))
        .build()
        .unwrap()
        .layer();
    let breaker = palisade::breaker::BreakerConfig::builder()
        .build()
        .unwrap()
        .layer();
    let timed = palisade::breaker::BreakerConfig::builder()
        .record_latency(true)
        .build()
        .unwrap()
        .layer();
    let hystrix = palisade::preset::Hystrix::builder()
        .build()
        .unwrap()
        .layer();

    let counts = [
        (
            "timeout",
            per_call(ServiceBuilder::new().layer(timeout).service(Echo)),
        ),
        (
            "bulkhead",
            per_call(ServiceBuilder::new().layer(bulkhead).service(Echo)),
        ),
        (
            "queued bulkhead",
            per_call(ServiceBuilder::new().layer(queued).service(Echo)),
        ),
        (
            "breaker",
            per_call(ServiceBuilder::new().layer(breaker).service(Echo)),
        ),
        (
            "timed breaker",
            per_call(ServiceBuilder::new().layer(timed).service(Echo)),
        ),
        (
            "hystrix",
            per_call(ServiceBuilder::new().layer(hystrix).service(Echo)),
        ),
    ];
    for (name, n) in counts {
        assert_eq!(n, 0.0, "{name} allocates {n} times per call");
    }
}

#[test]
fn peers_allocations_per_call_for_comparison() {
    let rt = runtime();
    let _entered = rt.enter();
    let stack = ServiceBuilder::new()
        .layer(
            tower_resilience::circuitbreaker::CircuitBreakerLayer::builder()
                .failure_rate_threshold(0.5)
                .build()
                .expect("breaker"),
        )
        .layer(
            tower_resilience::bulkhead::BulkheadLayer::builder()
                .max_concurrent_calls(1_000)
                .build()
                .expect("bulkhead"),
        )
        .layer(
            tower_resilience::timelimiter::TimeLimiterLayer::builder()
                .timeout_duration(Duration::from_secs(1))
                .build(),
        )
        .service(Echo);
    let tr = per_call(stack);
    let tower_timeout = per_call(tower::timeout::Timeout::new(Echo, Duration::from_secs(1)));
    println!("allocations per call: tower-resilience stack {tr}, tower timeout {tower_timeout}");
    // The peer stack boxes its futures: the counter must see that, or it counts nothing.
    assert!(tr >= 1.0);
}
