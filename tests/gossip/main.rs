//! SWIM gossip membership: the sans-IO core, the wire format, the simulator and the
//! runtime over loopback, one module per concern.

#[path = "../common/mod.rs"]
mod common;

#[cfg(all(feature = "balance", feature = "discover", feature = "transport"))]
mod cluster_e2e;
mod cluster_process;
#[cfg(feature = "test-util")]
mod codec;
#[cfg(all(feature = "sim", feature = "test-util"))]
mod proto;
#[cfg(feature = "test-util")]
mod proto_leave;
mod runtime_discover;
mod runtime_encrypted;
mod runtime_mass_leave;
mod runtime_membership;
mod runtime_retry_join;
mod runtime_tcp_fallback;
#[cfg(feature = "sim")]
mod sim;
#[cfg(feature = "sim")]
mod sim_mass_leave;
#[cfg(all(feature = "sim", feature = "test-util"))]
mod tcp_fallback;
