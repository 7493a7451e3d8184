//! The presets' integration tests.

mod hystrix;
