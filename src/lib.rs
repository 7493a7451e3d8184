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
//! | [`gossip`] | SWIM + Lifeguard membership: sans-IO core, wire format, keyring, simulator |
//!
//! [tower]: https://docs.rs/tower
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod classify;
pub mod clock;
pub mod error;
pub mod gossip;

pub use error::{BoxError, ConfigError};
