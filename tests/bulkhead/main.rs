//! The bulkhead's integration tests, one module per concern.

mod admission;
mod contract;
mod release;
mod shards;
