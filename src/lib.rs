//! # palisade
//!
//! Resilience middleware for [tower]: reusable [`Layer`](tower_layer::Layer)s that keep a
//! service healthy when its dependencies are not.
//!
//! | room | what it is |
//! |---|---|
//! | [`error`] | the typed rejections every layer shares |
//! | [`classify`] | what a call's result counts as |
//! | [`clock`] | the monotonic clock the counting layers read |
//! | [`backoff`] | capped exponential backoff with jitter: the breaker's open periods, reconnects, join rounds |
//! | [`transport`] | persistent connections: a pipelined request/response protocol over TCP |
//! | [`window`] | rolling-window statistics: counts and latency of recent calls |
//! | [`breaker`] | the circuit breaker: trip, reject, probe, close; or, as a readiness gate, make an endpoint unready while open |
//! | [`bulkhead`] | a cap on concurrent calls: fail fast, or queue FIFO for a bounded wait |
//! | [`preset`] | the Hystrix command: breaker over bulkhead over timeout, with Hystrix's knobs |
//! | [`timeout`] | a deadline per call, with an optional per-request override |
//! | [`balance`] | a load balancer over a changing endpoint set, with pluggable pickers and per-endpoint circuit breakers |
//! | [`discover`] | simple endpoint sources: a fixed list, a channel-fed set |
//! | [`gossip`] | SWIM + Lifeguard membership: sans-IO core, wire format, keyring, simulator, tokio runtime, discovery source |
//!
//! [tower]: https://docs.rs/tower
#![warn(missing_docs)]
#![deny(unreachable_pub)]
#![forbid(unsafe_code)]

pub mod backoff;
pub mod balance;
pub mod breaker;
pub mod bulkhead;
pub mod classify;
pub mod clock;
pub mod discover;
pub mod error;
pub mod gossip;
pub mod preset;
pub mod timeout;
pub mod transport;
pub mod window;

// Entry points for the fuzz targets in `fuzz/`; not part of the public API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;

pub use error::{BoxError, ConfigError};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
