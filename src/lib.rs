//! # palisade
//!
//! Resilience middleware for [tower]: reusable [`Layer`](tower_layer::Layer)s that keep a
//! service healthy when its dependencies are not.
//!
//! | room | what it is | feature |
//! |---|---|---|
//! | [`error`] | the typed rejections every layer shares | always |
//! | [`classify`] | what a call's result counts as | always |
//! | [`clock`] | the monotonic clock the counting layers read | `clock` |
//! | [`backoff`] | capped exponential backoff with jitter: the breaker's open periods, reconnects, join rounds | `breaker`, `transport` or `gossip` |
//! | [`transport`] | persistent connections: a pipelined request/response protocol over TCP | `transport` |
//! | [`window`] | rolling-window statistics: counts and latency of recent calls | `window` |
//! | [`breaker`] | the circuit breaker: trip, reject, probe, close; or, as a readiness gate, make an endpoint unready while open | `breaker` |
//! | [`bulkhead`] | a cap on concurrent calls: fail fast, or queue FIFO for a bounded wait | `bulkhead` |
//! | [`preset`] | the Hystrix command: breaker over bulkhead over timeout, with Hystrix's knobs | `preset` |
//! | [`timeout`] | a deadline per call, with an optional per-request override | `timeout` |
//! | [`balance`] | a load balancer over a changing endpoint set, with pluggable pickers and per-endpoint circuit breakers | `balance` |
//! | [`discover`] | simple endpoint sources: a fixed list, a channel-fed set | `discover` |
//! | [`gossip`] | SWIM + Lifeguard membership: sans-IO core, wire format, keyring, simulator, tokio runtime, discovery source | `gossip` |
//!
//! ## Cargo features
//!
//! The default set is every room (all but `tracing` and `fuzzing`), so
//! `palisade = "0.1"` builds everything above. A user who wants fewer rooms turns the
//! default off and names them, e.g. the resilience layers alone, which need no network,
//! serialization or cryptography crate:
//!
//! ```toml
//! palisade = { version = "0.1", default-features = false, features = ["preset"] }
//! ```
//!
//! A feature turns on the features it needs (listed under "needs").
//!
//! | feature | enables | needs | pulls in |
//! |---|---|---|---|
//! | `clock` | [`clock`] | | quanta; tokio (`time`) |
//! | `window` | [`window`] | `clock` | |
//! | `breaker` | [`breaker`] | `window` | tower-layer, tower-service, futures (no default features), parking_lot, pin-project-lite, rand (`small_rng` only) |
//! | `bulkhead` | [`bulkhead`] | `clock` | tower-layer, tower-service, parking_lot, pin-project-lite |
//! | `timeout` | [`timeout`] | `clock` | tower-layer, tower-service, pin-project-lite |
//! | `preset` | [`preset`] | `breaker`, `bulkhead`, `timeout` | |
//! | `balance` | [`balance`] | `breaker` | tower (`discover`), xxhash-rust, rand's thread-local generator |
//! | `discover` | [`discover`] | | tower (`discover`), tokio (`sync`), futures |
//! | `transport` | [`transport`] | | tokio (`net`, `io-util`, `rt`, `macros`), tokio-util, bytes, futures, rand's thread-local generator |
//! | `gossip` | [`gossip`] | `transport` | serde, postcard, chacha20poly1305, tokio (`net`, `rt`, `macros`), tower (`discover`) |
//! | `tracing` | state transitions and rejections as [`tracing`](https://docs.rs/tracing) events, in every room that is on | | tracing |
//! | `fuzzing` | entry points for the cargo-fuzz targets in `fuzz/` (hidden, not public API) | `gossip`, `transport` | tokio (`test-util`), tower (`limit`, `util`) |
//!
//! [tower]: https://docs.rs/tower
#![warn(missing_docs)]
#![deny(unreachable_pub)]
#![forbid(unsafe_code)]

#[cfg(any(feature = "breaker", feature = "transport", feature = "gossip"))]
pub mod backoff;
#[cfg(feature = "balance")]
pub mod balance;
#[cfg(feature = "breaker")]
pub mod breaker;
#[cfg(feature = "bulkhead")]
pub mod bulkhead;
pub mod classify;
#[cfg(feature = "clock")]
pub mod clock;
#[cfg(feature = "discover")]
pub mod discover;
pub mod error;
// Length-prefixed framing shared by the transport and gossip's TCP exchanges.
#[cfg(any(feature = "transport", feature = "gossip"))]
mod framing;
#[cfg(feature = "gossip")]
pub mod gossip;
#[cfg(feature = "preset")]
pub mod preset;
#[cfg(any(feature = "window", feature = "breaker", feature = "bulkhead"))]
// The facade's atomics, lock and hints serve the bulkhead (and the loom models).
#[cfg_attr(not(feature = "bulkhead"), allow(unused_imports))]
mod sync;
#[cfg(feature = "timeout")]
pub mod timeout;
#[cfg(feature = "transport")]
pub mod transport;
#[cfg(any(feature = "balance", feature = "discover", feature = "gossip"))]
mod weighted;
#[cfg(feature = "window")]
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
