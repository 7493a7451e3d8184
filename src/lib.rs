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
//! | [`balance`] | a load balancer over a changing endpoint set, with pluggable pickers |
//! | [`discover`] | simple endpoint sources: a fixed list, a channel-fed set |
//!
//! [tower]: https://docs.rs/tower
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod balance;
pub mod classify;
pub mod clock;
pub mod discover;
pub mod error;

pub use error::{BoxError, ConfigError};
