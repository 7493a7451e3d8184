//! Test-only access to the gossip wire format (feature `test-util`), for the packet-level
//! tests in tests/ that build frames by hand and read what a member sent. Not public API:
//! hidden from the docs, and free to change in any release.

pub use super::codec::{begin_body, decode_body, encode_frame, Codec, Decoded};
pub use super::proto::message::{
    kind, Ack, Alive, Dead, Frame, IndirectPing, MemberRecord, Nack, Ping, PushPull, Suspect,
};
pub use super::proto::DropReason;
