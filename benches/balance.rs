//! Per-request overhead of palisade's balancer with each picker, against
//! `tower::balance::p2c::Balance` over `tower::load::PendingRequests`, at 10, 100, 1,000
//! and 10,000 endpoints, side by side in one run.
//!
//! Run: `cargo bench --bench balance` (add `-- --quick` for a short run). Every endpoint
//! is the same always-ready service that answers at once; one iteration is `ready()` +
//! `call()` + awaiting the response, polled in place with a no-op waker inside an
//! entered tokio runtime (no executor overhead). The breaker variants give every
//! endpoint its own circuit (`Builder::endpoint_breaker`), with the default window and
//! with a small one. At the end the run prints each
//! variant's median per size, as a ratio to palisade's round robin and to tower's p2c.

use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{black_box, BenchmarkGroup, Criterion};
use palisade::balance::{
    Balance, Builder, ConsistentHash, LeastConnections, PowerOfTwoChoices, Random, RoundRobin,
    WeightedRoundRobin,
};
use palisade::breaker::BreakerConfig;
use palisade::discover::FixedList;
use palisade::window::WindowConfig;
use tower::{Service, ServiceExt};

mod common;
use common::{drive, median_ns, Echo};

fn per_request<S>(g: &mut BenchmarkGroup<'_, WallTime>, name: &str, mut svc: S)
where
    S: Service<u64, Response = u64>,
    S::Error: std::fmt::Debug,
{
    // Settle discovery (the balancer takes in at most 1,024 changes per poll) and the
    // first poll of every endpoint outside the measurement.
    for i in 0..64 {
        drive(svc.ready()).expect("ready");
        drive(svc.call(i)).expect("call");
    }
    let mut n = 0u64;
    g.bench_function(name, |b| {
        b.iter(|| {
            n = n.wrapping_add(1);
            drive(svc.ready()).expect("ready");
            drive(svc.call(black_box(n))).expect("call")
        })
    });
}

fn unweighted(n: usize) -> FixedList<usize, Echo> {
    FixedList::unweighted((0..n).map(|i| (i, Echo)))
}

fn weighted(n: usize) -> FixedList<usize, Echo> {
    (0..n)
        .fold(FixedList::builder(), |b, i| {
            b.endpoint(i, Echo, 1 + (i % 4) as u32)
        })
        .build()
        .expect("weights")
}

const SIZES: [usize; 4] = [10, 100, 1_000, 10_000];

const VARIANTS: [&str; 10] = [
    "round_robin",
    "weighted_round_robin",
    "p2c_in_flight",
    "p2c_peak_ewma",
    "least_connections",
    "random",
    "consistent_hash",
    "round_robin_endpoint_breakers",
    "round_robin_small_window_breakers",
    "tower_p2c_pending_requests",
];

/// The index of tower's p2c in `VARIANTS`.
const TOWER: usize = VARIANTS.len() - 1;

fn group_name(n: usize) -> String {
    format!("balance_{n}")
}

fn balance(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let _entered = rt.enter();
    for n in SIZES {
        let mut g = c.benchmark_group(group_name(n));
        per_request(
            &mut g,
            VARIANTS[0],
            Balance::new(unweighted(n), RoundRobin::new()),
        );
        per_request(
            &mut g,
            VARIANTS[1],
            Builder::new(WeightedRoundRobin::new())
                .build_weighted(weighted(n))
                .expect("build"),
        );
        per_request(
            &mut g,
            VARIANTS[2],
            Balance::new(unweighted(n), PowerOfTwoChoices::seeded(1)),
        );
        per_request(
            &mut g,
            VARIANTS[3],
            Balance::new(
                unweighted(n),
                PowerOfTwoChoices::seeded(1).peak_ewma(Duration::from_millis(1)),
            ),
        );
        per_request(
            &mut g,
            VARIANTS[4],
            Balance::new(unweighted(n), LeastConnections::seeded(1)),
        );
        per_request(
            &mut g,
            VARIANTS[5],
            Balance::new(unweighted(n), Random::seeded(1)),
        );
        per_request(
            &mut g,
            VARIANTS[6],
            Builder::new(ConsistentHash::new())
                .hash_key(|k: &u64| *k)
                .build(unweighted(n))
                .expect("build"),
        );
        per_request(
            &mut g,
            VARIANTS[7],
            Builder::new(RoundRobin::new())
                .endpoint_breaker(BreakerConfig::default())
                .build(unweighted(n))
                .expect("build"),
        );
        // The same with a small per-endpoint window (about 2 KiB per circuit instead of
        // about 23 KiB), as the builder's docs advise for large sets.
        per_request(
            &mut g,
            VARIANTS[8],
            Builder::new(RoundRobin::new())
                .endpoint_breaker(
                    BreakerConfig::builder()
                        .window(WindowConfig::count(20).stripes(1))
                        .build()
                        .expect("breaker"),
                )
                .build(unweighted(n))
                .expect("build"),
        );
        let services: Vec<_> = (0..n)
            .map(|_| {
                tower::load::PendingRequests::new(Echo, tower::load::CompleteOnResponse::default())
            })
            .collect();
        per_request(
            &mut g,
            VARIANTS[TOWER],
            tower::balance::p2c::Balance::new(tower::discover::ServiceList::new(services)),
        );
        g.finish();
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .configure_from_args();
    balance(&mut c, &rt);
    c.final_summary();
    print_table();
}

/// Prints each variant's median per size, and its ratio to palisade's round robin and to
/// tower's p2c (below 1.0: cheaper than that reference).
fn print_table() {
    println!("\nmedian ns per request (ratio to round_robin | ratio to tower p2c)");
    print!("{:<32}", "variant");
    for n in SIZES {
        print!("{:>26}", format!("{n} endpoints"));
    }
    println!();
    for variant in VARIANTS {
        print!("{variant:<32}");
        for n in SIZES {
            let g = group_name(n);
            let cell = match (
                median_ns(&g, variant),
                median_ns(&g, VARIANTS[0]),
                median_ns(&g, VARIANTS[TOWER]),
            ) {
                (Some(x), Some(rr), Some(tower)) => {
                    format!("{x:.0} ({:.2}x | {:.2}x)", x / rr, x / tower)
                }
                (Some(x), _, _) => format!("{x:.0}"),
                _ => "-".to_string(),
            };
            print!("{cell:>26}");
        }
        println!();
    }
}
