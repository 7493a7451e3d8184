//! Consistent hashing over a ring with virtual nodes.

use super::super::endpoint::EndpointId;
use super::{mix64, Candidates, PickRng, Picker};

/// Routes each request by its hash key to the first ready member clockwise on a hash
/// ring, so the same key keeps going to the same endpoint while the membership holds, and
/// a member joining or leaving moves only about `1/n` of the keys.
///
/// Every member owns `replicas × weight` points on the ring (virtual nodes), placed by
/// hashing its discovery key ([`Endpoint::key_hash`](super::Endpoint::key_hash)), so two
/// balancers over the same members agree on every key. A key whose owner is not ready
/// right now goes to the next ready member on the ring, and comes back when it is ready
/// again. Requests without a key (no [`HashKey`](super::super::HashKey) configured, or it
/// returned `None`) go to a random ready endpoint.
///
/// The ring is rebuilt when membership or discovered weights change; a pick is a binary
/// search, O(log(points)).
#[derive(Debug, Clone)]
pub struct ConsistentHash {
    replicas: u32,
    ring: Vec<(u64, EndpointId)>,
    epochs: Option<(u64, u64)>,
    weights: Vec<(EndpointId, u32)>,
    rng: PickRng,
}

impl ConsistentHash {
    /// 160 virtual nodes per unit of weight (as ketama does).
    pub fn new() -> Self {
        Self::with_replicas(160)
    }

    /// `replicas` virtual nodes per unit of weight (at least 1): more spread the keys
    /// more evenly at the cost of a larger ring.
    pub fn with_replicas(replicas: u32) -> Self {
        Self {
            replicas: replicas.max(1),
            ring: Vec::new(),
            epochs: None,
            weights: Vec::new(),
            rng: PickRng::seeded(0x5eed),
        }
    }

    fn rebuild(&mut self, candidates: &Candidates<'_>) {
        self.ring.clear();
        self.weights.clear();
        for e in candidates.members() {
            let points = self.replicas.saturating_mul(e.weight());
            let base = mix64(e.key_hash());
            for r in 0..points {
                self.ring.push((mix64(base ^ mix64(r as u64)), e.id()));
            }
            self.weights.push((e.id(), e.weight()));
        }
        self.ring.sort_unstable();
    }

    fn weights_changed(&self, candidates: &Candidates<'_>) -> bool {
        candidates
            .members()
            .zip(&self.weights)
            .any(|(e, &(id, w))| e.id() != id || e.weight() != w)
    }

    /// The ring position a key hashes to.
    fn point(key: u64) -> u64 {
        mix64(key)
    }
}

impl Default for ConsistentHash {
    fn default() -> Self {
        Self::new()
    }
}

impl Picker for ConsistentHash {
    fn pick(&mut self, candidates: &Candidates<'_>, key: Option<u64>) -> usize {
        let Some(key) = key else {
            return self.rng.below(candidates.len());
        };
        let epochs = (candidates.members_epoch(), candidates.weights_epoch());
        if self.epochs != Some(epochs) {
            // The weights epoch also moves on every slow-start step; only a change of
            // membership or of *discovered* weight moves points on the ring.
            let stale = self.epochs.map_or(true, |(members, _)| members != epochs.0)
                || self.weights_changed(candidates);
            if stale {
                self.rebuild(candidates);
            }
            self.epochs = Some(epochs);
        }
        if self.ring.is_empty() {
            return 0;
        }
        let point = Self::point(key);
        let start = self.ring.partition_point(|&(p, _)| p < point);
        let len = self.ring.len();
        for step in 0..len {
            let (_, id) = self.ring[(start + step) % len];
            if let Some(pos) = candidates.position(id) {
                return pos;
            }
        }
        0
    }
}
