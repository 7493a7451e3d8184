//! Who a member is ([`Identity`]) and what this member believes about it ([`Member`]).
//!
//! An identity is the member's unique name, the address it gossips on, an optional
//! service address (where clients reach the service it runs) and a small map of string
//! tags (weight, zone, version, ...). Tags are bounded in size so that an alive update
//! always fits a packet; [`Identity::validate`] enforces the bounds and the state
//! machine validates every identity it is given or receives.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::error::ConfigError;

/// The longest member name accepted, in bytes (locally and on the wire).
pub const MAX_NAME_LEN: usize = 128;

/// The most tag bytes (keys plus values) ever accepted from the wire, whatever the local
/// [`Config::max_tags_bytes`](super::Config::max_tags_bytes) says.
pub const MAX_WIRE_TAGS_BYTES: usize = 4096;

/// A member's identity: name, addresses and tags. Two members of one cluster must not
/// share a name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    // The name stays the first field: the decoder reads `(incarnation, name)` from the
    // front of an alive update without decoding the rest.
    name: String,
    gossip_addr: SocketAddr,
    service_addr: Option<SocketAddr>,
    tags: BTreeMap<String, String>,
}

impl Identity {
    /// An identity with no service address and no tags.
    pub fn new(name: impl Into<String>, gossip_addr: SocketAddr) -> Self {
        Self {
            name: name.into(),
            gossip_addr,
            service_addr: None,
            tags: BTreeMap::new(),
        }
    }

    /// Sets the address clients use to reach the service this member runs.
    pub fn with_service_addr(mut self, addr: SocketAddr) -> Self {
        self.service_addr = Some(addr);
        self
    }

    /// Adds (or replaces) one tag.
    pub fn with_tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.tags.insert(key.into(), value.into());
        self
    }

    /// Replaces all tags.
    pub fn with_tags(mut self, tags: BTreeMap<String, String>) -> Self {
        self.tags = tags;
        self
    }

    /// The member's unique name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The address the member gossips on.
    pub fn gossip_addr(&self) -> SocketAddr {
        self.gossip_addr
    }

    /// The address of the service the member runs, if it announced one.
    pub fn service_addr(&self) -> Option<SocketAddr> {
        self.service_addr
    }

    /// The member's tags.
    pub fn tags(&self) -> &BTreeMap<String, String> {
        &self.tags
    }

    /// One tag's value.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags.get(key).map(String::as_str)
    }

    pub(crate) fn set_tags(&mut self, tags: BTreeMap<String, String>) {
        self.tags = tags;
    }

    pub(crate) fn set_service_addr(&mut self, addr: Option<SocketAddr>) {
        self.service_addr = addr;
    }

    /// The bytes the tags occupy (keys plus values).
    pub fn tags_bytes(&self) -> usize {
        self.tags.iter().map(|(k, v)| k.len() + v.len()).sum()
    }

    /// Checks the bounds: a non-empty name of at most [`MAX_NAME_LEN`] bytes (field
    /// `name`) and at most `max_tags_bytes` bytes of tags (field `tags`).
    pub fn validate(&self, max_tags_bytes: usize) -> Result<(), ConfigError> {
        if self.name.is_empty() {
            return Err(ConfigError::new("name", "must not be empty"));
        }
        if self.name.len() > MAX_NAME_LEN {
            return Err(ConfigError::new(
                "name",
                format!("must be at most {MAX_NAME_LEN} bytes"),
            ));
        }
        let bytes = self.tags_bytes();
        if bytes > max_tags_bytes {
            return Err(ConfigError::new(
                "tags",
                format!("take {bytes} bytes; at most {max_tags_bytes} are allowed"),
            ));
        }
        Ok(())
    }

    /// Whether an identity received from the wire is within the hard wire bounds.
    pub(crate) fn wire_valid(&self) -> bool {
        !self.name.is_empty()
            && self.name.len() <= MAX_NAME_LEN
            && self.tags_bytes() <= MAX_WIRE_TAGS_BYTES
    }
}

/// What this member believes about another member's liveness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MemberState {
    /// Answering probes (or not yet suspected).
    Alive,
    /// Missed a probe; declared dead unless it refutes before its suspicion times out.
    Suspect,
    /// Declared failed: a suspicion timed out without a refutation.
    Dead,
    /// Left gracefully.
    Left,
}

impl MemberState {
    /// Alive or suspect: still counted as a member and still probed.
    pub fn is_live(self) -> bool {
        matches!(self, MemberState::Alive | MemberState::Suspect)
    }
}

/// A snapshot of one member as this member sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub(crate) identity: Identity,
    pub(crate) incarnation: u64,
    pub(crate) state: MemberState,
    pub(crate) state_since: u64,
}

impl Member {
    /// The member's identity.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The member's name.
    pub fn name(&self) -> &str {
        &self.identity.name
    }

    /// The member's gossip address.
    pub fn gossip_addr(&self) -> SocketAddr {
        self.identity.gossip_addr
    }

    /// The member's service address, if it announced one.
    pub fn service_addr(&self) -> Option<SocketAddr> {
        self.identity.service_addr
    }

    /// The member's tags.
    pub fn tags(&self) -> &BTreeMap<String, String> {
        &self.identity.tags
    }

    /// The incarnation this state belongs to. Only the member itself raises it (to
    /// refute a suspicion, update its tags or rejoin).
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// The believed state.
    pub fn state(&self) -> MemberState {
        self.state
    }

    /// When (in the caller's nanoseconds) this member entered its current state.
    pub fn state_since(&self) -> u64 {
        self.state_since
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr() -> SocketAddr {
        "10.0.0.1:7946".parse().unwrap()
    }

    #[test]
    fn validate_names_the_offending_field() {
        assert_eq!(
            Identity::new("", addr()).validate(512).unwrap_err().field(),
            "name"
        );
        let long = "x".repeat(MAX_NAME_LEN + 1);
        assert_eq!(
            Identity::new(long, addr())
                .validate(512)
                .unwrap_err()
                .field(),
            "name"
        );
        let big = Identity::new("a", addr()).with_tag("k", "v".repeat(600));
        assert_eq!(big.validate(512).unwrap_err().field(), "tags");
        assert!(Identity::new("a", addr())
            .with_tag("zone", "eu-1")
            .validate(512)
            .is_ok());
    }
}
