//! The circuit breaker's integration tests, one module per concern.

#[path = "../common/mod.rs"]
mod common;

mod alloc;
mod config;
mod contract;
mod gate;
mod gate_contract;
#[cfg(all(feature = "balance", feature = "discover", feature = "preset"))]
mod panics;
#[cfg(feature = "preset")]
mod record_latency;
mod scenarios;
mod stale_results;
mod stress;
mod trip_rule;

// The counting allocator (a global allocator is per binary, so every test here runs
// under it): it counts per thread and each test runs on its own thread, so a test that
// compares counts sees only its own allocations.
#[global_allocator]
static GLOBAL: common::Counting = common::Counting;
