//! Gossip membership: SWIM with Lifeguard, authenticated and encrypted, sans-IO.
//!
//! - [`proto`]: the protocol state machine ([`Swim`]): no sockets, no clock, no tokio.
//! - [`codec`]: the versioned wire format, and why a packet is dropped.
//! - [`keyring`]: shared keys for authenticated encryption, rotatable without downtime.
//! - [`sim`]: a deterministic simulator running many members on a virtual clock with
//!   seeded loss, delay, partitions, crashes and slow members, for testing a
//!   configuration before running it.

pub mod codec;
pub mod keyring;
pub mod proto;
pub mod sim;

pub use keyring::Keyring;
pub use proto::{Config, Event, Identity, Member, MemberState, Swim, Transmit, Transport};
