//! Consistent hashing over a ring with virtual nodes.

use super::super::endpoint::EndpointId;
use super::{mix64, Candidates, PickRng, Picker};

/// Routes each request by its hash key to the first ready member clockwise on a hash
/// ring, so the same key keeps going to the same endpoint while the membership holds, and
/// a member joining or leaving moves only about `1/n` of the keys.
///
/// Every member owns `replicas × weight` points on the ring (virtual nodes), placed by
/// hashing its discovery key with the [`stable_hash`](super::super::stable_hash)
/// ([`Endpoint::key_hash`](super::Endpoint::key_hash)), so two balancers over the same
/// members agree on every key, in one process or in processes built apart. A key whose owner is not ready
/// right now goes to the next ready member on the ring, and comes back when it is ready
/// again. Requests without a key (no [`HashKey`](super::super::HashKey) configured, or it
/// returned `None`) go to a random ready endpoint.
///
/// The ring holds at most [`MAX_RING_POINTS`](Self::MAX_RING_POINTS) points (or one per
/// member, if there are more members): when `replicas × weight` summed over the members
/// exceeds it, every member's points are scaled down in proportion (each keeps at least
/// one), so any replica count and any weights work, at a bounded cost in memory (16
/// bytes a point) and rebuild time.
///
/// The ring is rebuilt when membership or discovered weights change. A pick jumps through
/// a bucket index to its point: O(1) expected, plus the walk past endpoints that are not
/// ready.
#[derive(Debug, Clone)]
pub struct ConsistentHash {
    replicas: u32,
    ring: Vec<(u64, EndpointId)>,
    /// `buckets[b]`: the first ring position whose point's top bits are `>= b`, so a
    /// lookup jumps close to its point instead of binary-searching a ring that can be
    /// megabytes long.
    buckets: Vec<u32>,
    shift: u32,
    epochs: Option<(u64, u64)>,
    weights: Vec<(EndpointId, u32)>,
    rng: PickRng,
}

impl ConsistentHash {
    /// The most points (virtual nodes) a ring holds, whatever the replica count and
    /// weights.
    pub const MAX_RING_POINTS: u64 = 1 << 20;

    /// 160 virtual nodes per unit of weight (as ketama does).
    pub fn new() -> Self {
        Self::with_replicas(160)
    }

    /// `replicas` virtual nodes per unit of weight: more spread the keys more evenly at
    /// the cost of a larger ring. From 1 to `u32::MAX` (0 counts as 1); the ring is
    /// capped at [`MAX_RING_POINTS`](Self::MAX_RING_POINTS) points in all.
    pub fn with_replicas(replicas: u32) -> Self {
        Self {
            replicas: replicas.max(1),
            ring: Vec::new(),
            buckets: Vec::new(),
            shift: 63,
            epochs: None,
            weights: Vec::new(),
            rng: PickRng::seeded(0x5eed),
        }
    }

    fn rebuild(&mut self, candidates: &Candidates<'_>) {
        self.ring.clear();
        self.weights.clear();
        // u128: replicas × weight summed over many members overflows u64.
        let wanted = |weight: u32| u128::from(self.replicas) * u128::from(weight);
        let total: u128 = candidates.members().map(|e| wanted(e.weight())).sum();
        let cap = u128::from(Self::MAX_RING_POINTS);
        for e in candidates.members() {
            let points = if total > cap {
                (wanted(e.weight()) * cap / total).max(1) as u64
            } else {
                wanted(e.weight()) as u64
            };
            let base = mix64(e.key_hash());
            for r in 0..points {
                self.ring.push((mix64(base ^ mix64(r)), e.id()));
            }
            self.weights.push((e.id(), e.weight()));
        }
        self.ring.sort_unstable();
        self.index();
    }

    fn index(&mut self) {
        let bits = (self.ring.len().max(2) as u64)
            .next_power_of_two()
            .trailing_zeros();
        self.shift = 64 - bits;
        let n = 1usize << bits;
        self.buckets.clear();
        self.buckets.reserve(n + 1);
        let mut i = 0usize;
        for b in 0..n as u64 {
            while i < self.ring.len() && (self.ring[i].0 >> self.shift) < b {
                i += 1;
            }
            self.buckets.push(i as u32);
        }
    }

    /// The first ring position whose point is `>= point` (may equal the ring's length).
    fn locate(&self, point: u64) -> usize {
        let mut i = self.buckets[(point >> self.shift) as usize] as usize;
        while i < self.ring.len() && self.ring[i].0 < point {
            i += 1;
        }
        i
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
            let stale = self.epochs.is_none_or(|(members, _)| members != epochs.0)
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
        let start = self.locate(point);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_index_finds_the_same_position_as_a_binary_search() {
        let mut ch = ConsistentHash::with_replicas(1);
        let id = EndpointId::new(0, 0);
        ch.ring = (0..1000u64).map(|i| (mix64(i), id)).collect();
        ch.ring.sort_unstable();
        ch.index();
        for k in 0..10_000u64 {
            let p = mix64(k ^ 0xabc);
            assert_eq!(ch.locate(p), ch.ring.partition_point(|&(q, _)| q < p));
        }
        assert_eq!(ch.locate(u64::MAX), ch.ring.len());
        assert_eq!(ch.locate(0), 0);
    }
}
