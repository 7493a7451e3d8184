//! SWIM gossip membership: the sans-IO core, the wire format, the simulator and the
//! runtime over loopback, one module per concern.

#[path = "../common/mod.rs"]
mod common;

mod cluster_e2e;
mod cluster_process;
mod codec;
mod proto;
mod proto_leave;
mod runtime_discover;
mod runtime_encrypted;
mod runtime_mass_leave;
mod runtime_membership;
mod runtime_retry_join;
mod runtime_tcp_fallback;
mod sim;
mod sim_mass_leave;
mod tcp_fallback;
