//! Persistent connections over loopback, one module per concern.

#[path = "../common/mod.rs"]
mod common;

mod backpressure;
mod client_stalls;
mod config_knobs;
mod connection;
mod contract;
mod limits;
mod memory;
