//! The balancer's integration tests, one module per concern.

#[path = "../common/mod.rs"]
mod common;

mod alloc;
mod breaker_events;
mod churn;
mod contract;
mod ejection;
mod health;
mod health_gate;
mod pickers;
mod readiness;

// The counting allocator (a global allocator is per binary, so every test here runs
// under it): it counts per thread and each test runs on its own thread, so a test that
// compares counts sees only its own allocations.
#[global_allocator]
static GLOBAL: common::Counting = common::Counting;
