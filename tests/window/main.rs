//! The rolling window's integration tests, one module per concern.

mod config;
mod count;
mod model;
mod time;
