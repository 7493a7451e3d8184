//! Gossip membership: SWIM with Lifeguard, authenticated and encrypted, sans-IO.
//!
//! A cluster of members keeps, at every member, a view of who is in the cluster, where
//! they are (gossip and service addresses) and what they announce (tags), and tells
//! the application when that changes ([`Event`]: `Join`, `Leave`, `Failed`, `Update`,
//! `Reap`, in Serf's vocabulary).
//!
//! - [`proto`]: the protocol state machine ([`Swim`]): no sockets, no clock, no tokio.
//!   Packets, timer ticks and an explicit `now` go in; packets to send and events come
//!   out. One file per mechanism: probing, suspicion, local health awareness,
//!   dissemination, push-pull, member state, configuration presets.
//! - `codec` (crate-private): the versioned wire format (unknown frame kinds are
//!   skipped, so newer members talk to older ones) and the reasons a packet is dropped,
//!   each counted ([`DropReason`](proto::DropReason)).
//! - [`keyring`]: shared keys for authenticated encryption (ChaCha20-Poly1305) of every
//!   packet, rotatable without downtime; the cluster label is authenticated with it.
//! - `sim` (feature `sim`): a deterministic simulator running many members on a virtual
//!   clock with seeded loss, delay, reordering, partitions (one-way too), crashes and
//!   slow members, for testing a configuration before running it.
//!
//! The protocol is hashicorp/memberlist's, message for message where it matters:
//! shuffled round-robin probes with indirect probes; incarnation numbers with
//! alive / suspect / dead precedence and refutation; piggybacked, transmit-limited
//! dissemination; Lifeguard's local health awareness, confirmation-shortened
//! suspicions and buddy system; periodic push-pull anti-entropy; Serf's reconnection
//! to failed members and reaping.
//!
//! - [`runtime`]: the tokio driver ([`Membership`]): the UDP socket, the TCP listener
//!   for joins and push-pull, the timers; joining with retries, graceful leave, events
//!   and counters through a cloneable handle.
//! - [`discover`]: the view as a `tower::discover::Discover` source of balancer
//!   endpoints ([`GossipDiscover`]).

// The wire format is no public API; its `pub` items are reachable only through
// `test_util` (feature `test-util`), for the packet-level tests in tests/.
#[cfg_attr(not(feature = "test-util"), allow(unreachable_pub))]
pub(crate) mod codec;
pub mod discover;
pub mod keyring;
pub mod proto;
pub mod runtime;
#[cfg(feature = "sim")]
pub mod sim;
#[cfg(feature = "test-util")]
#[doc(hidden)]
pub mod test_util;

pub use discover::GossipDiscover;
pub use keyring::Keyring;
pub use proto::{
    Config, Event, Identity, JoinStatus, Member, MemberState, StreamKind, Swim, Transmit, Transport,
};
pub use runtime::{Membership, MembershipConfig};
