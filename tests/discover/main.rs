//! The discovery sources' integration tests.

mod sources;
