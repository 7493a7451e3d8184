//! The dissemination queue: updates waiting to piggyback on outgoing packets.
//!
//! Every update is sent a limited number of times (`retransmit_mult * ceil(log10(n+1))`,
//! see [`Config::retransmit_limit`](super::Config::retransmit_limit)); the updates sent
//! fewest times go first (newest first among equals), so fresh news spreads fastest.
//! One member has at most one update queued: a newer update about a member replaces the
//! older one, whatever their kinds. Updates are stored encoded, so filling a packet is a
//! copy.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};

type Key = (u32, Reverse<u64>);

/// The transmit-limited queue.
#[derive(Debug, Clone, Default)]
pub(crate) struct BroadcastQueue {
    entries: BTreeMap<Key, (String, Vec<u8>)>,
    by_name: HashMap<String, Key>,
    next_id: u64,
}

impl BroadcastQueue {
    /// Queues an encoded update about `name`, replacing any older one.
    pub(crate) fn enqueue(&mut self, name: &str, frame: Vec<u8>) {
        if let Some(old) = self.by_name.remove(name) {
            self.entries.remove(&old);
        }
        self.next_id += 1;
        let key = (0, Reverse(self.next_id));
        self.entries.insert(key, (name.to_owned(), frame));
        self.by_name.insert(name.to_owned(), key);
    }

    /// How many updates wait.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Appends queued updates to `out` while they fit in `budget` bytes, counts a
    /// transmission for each and drops those sent `limit` times. Returns how many were
    /// appended.
    pub(crate) fn fill(&mut self, out: &mut Vec<u8>, mut budget: usize, limit: u32) -> usize {
        // Smallest useful frame; below this, stop looking.
        const MIN_FRAME: usize = 8;
        // Bound the scan when big updates do not fit, so a packet costs O(1).
        const MAX_SCAN: usize = 64;
        let mut taken: Vec<Key> = Vec::new();
        for (key, (_, frame)) in self.entries.iter().take(MAX_SCAN) {
            if budget < MIN_FRAME {
                break;
            }
            if frame.len() <= budget {
                budget -= frame.len();
                out.extend_from_slice(frame);
                taken.push(*key);
            }
        }
        for key in &taken {
            let (name, frame) = self.entries.remove(key).expect("key just seen");
            let sent = key.0 + 1;
            if sent >= limit {
                self.by_name.remove(&name);
            } else {
                let next = (sent, key.1);
                if let Some(k) = self.by_name.get_mut(&name) {
                    *k = next;
                }
                self.entries.insert(next, (name, frame));
            }
        }
        taken.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newer_update_replaces_older_and_each_is_sent_limit_times() {
        let mut q = BroadcastQueue::default();
        q.enqueue("a", vec![1; 10]);
        q.enqueue("a", vec![2; 10]);
        assert_eq!(q.len(), 1);
        let mut out = Vec::new();
        for _ in 0..3 {
            assert_eq!(q.fill(&mut out, 100, 3), 1);
        }
        assert_eq!(out, vec![2; 30]);
        assert_eq!(q.fill(&mut out, 100, 3), 0);
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn fewest_transmitted_go_first_and_budget_is_respected() {
        let mut q = BroadcastQueue::default();
        q.enqueue("old", vec![1; 40]);
        let mut out = Vec::new();
        q.fill(&mut out, 100, 10);
        q.enqueue("new", vec![2; 40]);
        out.clear();
        assert_eq!(q.fill(&mut out, 50, 10), 1);
        assert_eq!(out, vec![2; 40], "the never-sent update goes first");
        out.clear();
        assert_eq!(q.fill(&mut out, 39, 10), 0, "nothing fits");
        assert!(out.is_empty());
    }
}
