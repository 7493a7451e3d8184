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
//! | [`bulkhead`] | a cap on concurrent calls: fail fast, or queue FIFO for a bounded wait |
//! | [`timeout`] | a deadline per call, with an optional per-request override |
//!
//! [tower]: https://docs.rs/tower
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod bulkhead;
pub mod classify;
pub mod clock;
pub mod error;
pub mod timeout;

pub use error::{BoxError, ConfigError};
