//! Heap allocations per request through the balancer, counted with a counting global
//! allocator: none in steady state, whatever the picker, with per-endpoint breakers on.

use palisade::balance::{
    Balance, Builder, LeastConnections, PowerOfTwoChoices, RoundRobin, WeightedRoundRobin,
};
use palisade::breaker::BreakerConfig;
use palisade::discover::FixedList;
use tower::{Service, ServiceExt};

use crate::common;
use common::{allocations, drive, Echo};

/// Allocations per request, averaged over 2,000 requests after a warm-up of 2,000 (so
/// every endpoint has been called and every internal buffer has grown).
fn per_request<S>(mut svc: S) -> f64
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
    run(2_000);
    let before = allocations();
    run(2_000);
    (allocations() - before) as f64 / 2_000.0
}

fn endpoints() -> FixedList<usize, Echo> {
    FixedList::unweighted((0..500).map(|i| (i, Echo)))
}

#[test]
fn balancer_allocates_nothing_per_request() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _entered = rt.enter();
    let counts = [
        (
            "round robin",
            per_request(Balance::new(endpoints(), RoundRobin::new())),
        ),
        (
            "weighted round robin",
            per_request(Balance::new(endpoints(), WeightedRoundRobin::new())),
        ),
        (
            "p2c",
            per_request(Balance::new(endpoints(), PowerOfTwoChoices::seeded(1))),
        ),
        (
            "least connections",
            per_request(Balance::new(endpoints(), LeastConnections::seeded(1))),
        ),
        (
            "weighted least connections",
            per_request(Balance::new(
                endpoints(),
                LeastConnections::seeded(1).weighted(),
            )),
        ),
        (
            "least connections + endpoint breakers",
            per_request(
                Builder::new(LeastConnections::seeded(1))
                    .endpoint_breaker(BreakerConfig::default())
                    .build(endpoints())
                    .unwrap(),
            ),
        ),
    ];
    for (name, n) in counts {
        assert_eq!(n, 0.0, "{name} allocates {n} times per request");
    }
}
