//! The timeout's integration tests, one module per concern.

mod contract;
mod expiry;
