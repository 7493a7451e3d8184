//! Heap allocations per call through every palisade layer and its peers.

#[path = "../common/mod.rs"]
mod common;

mod per_call;

// The counting allocator (a global allocator is per binary, so every test here runs
// under it): it counts per thread and each test runs on its own thread, so a test that
// compares counts sees only its own allocations.
#[global_allocator]
static GLOBAL: common::Counting = common::Counting;
