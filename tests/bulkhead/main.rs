//! The bulkhead's integration tests, one module per concern.

mod admission;
mod contract;
#[cfg(feature = "timeout")]
mod release;
mod shards;
