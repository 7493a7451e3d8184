//! The dissemination queue: updates waiting to piggyback on outgoing packets.
//!
//! Every update is sent a limited number of times (`retransmit_mult * ceil(log10(n+1))`,
//! see [`Config::retransmit_limit`](super::Config::retransmit_limit)); the updates sent
//! fewest times go first (the most recently queued or sent first among equals), so
//! fresh news spreads fastest. One member has at most one update queued: a newer update
//! about a member replaces the older one, whatever their kinds. Updates are stored
//! encoded, so filling a packet is a copy.
//!
//! The queue is a slab of entries plus one stack per transmission count; filling a
//! packet pops from the lowest stacks and pushes what it sent one stack up, so a packet
//! costs O(updates in it) with no reordering of a sorted map.

use std::collections::HashMap;

#[derive(Debug, Clone)]
struct Entry {
    name: String,
    frame: Vec<u8>,
    transmits: u32,
    id: u64,
}

/// The transmit-limited queue.
#[derive(Debug, Clone, Default)]
pub(crate) struct BroadcastQueue {
    slots: Vec<Option<Entry>>,
    free: Vec<usize>,
    by_name: HashMap<String, usize>,
    /// `stacks[t]`: (slot, id) of the entries sent `t` times, newest on top. A record
    /// whose slot now holds another id is stale and skipped.
    stacks: Vec<Vec<(usize, u64)>>,
    /// Records in all stacks, stale ones included.
    records: usize,
    len: usize,
    next_id: u64,
}

impl BroadcastQueue {
    /// Queues an encoded update about `name`, replacing any older one.
    pub(crate) fn enqueue(&mut self, name: &str, frame: Vec<u8>) {
        self.next_id += 1;
        let id = self.next_id;
        let slot = match self.by_name.get(name) {
            Some(&slot) => {
                let e = self.slots[slot].as_mut().expect("indexed slots are full");
                e.frame = frame;
                e.transmits = 0;
                e.id = id;
                slot
            }
            None => {
                let entry = Entry {
                    name: name.to_owned(),
                    frame,
                    transmits: 0,
                    id,
                };
                let slot = match self.free.pop() {
                    Some(slot) => {
                        self.slots[slot] = Some(entry);
                        slot
                    }
                    None => {
                        self.slots.push(Some(entry));
                        self.slots.len() - 1
                    }
                };
                self.by_name.insert(name.to_owned(), slot);
                self.len += 1;
                slot
            }
        };
        if self.stacks.is_empty() {
            self.stacks.push(Vec::new());
        }
        self.stacks[0].push((slot, id));
        self.records += 1;
        if self.records > 4 * self.len + 1024 {
            self.compact();
        }
    }

    /// Drops stale stack records (left behind by replaced updates) so that memory
    /// follows the live entries however many updates are queued.
    fn compact(&mut self) {
        let slots = &self.slots;
        let mut records = 0;
        for stack in &mut self.stacks {
            stack.retain(|&(slot, id)| slots[slot].as_ref().is_some_and(|e| e.id == id));
            records += stack.len();
        }
        self.records = records;
    }

    #[cfg(test)]
    fn records(&self) -> usize {
        self.records
    }

    /// Whether an update about `name` waits.
    pub(crate) fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// How many updates wait.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    fn live(&self, slot: usize, id: u64) -> Option<&Entry> {
        self.slots[slot].as_ref().filter(|e| e.id == id)
    }

    /// Appends queued updates to `out` while they fit in `budget` bytes, counts a
    /// transmission for each and drops those sent `limit` times. Returns how many were
    /// appended.
    pub(crate) fn fill(&mut self, out: &mut Vec<u8>, mut budget: usize, limit: u32) -> usize {
        // Smallest useful frame; below this, stop looking.
        const MIN_FRAME: usize = 8;
        // Bound the scan when big updates do not fit, so a packet costs O(1).
        const MAX_SCAN: usize = 64;
        let mut sent: Vec<(usize, u64)> = Vec::new();
        let mut skipped: Vec<(usize, u64)> = Vec::new();
        let mut scanned = 0;
        'stacks: for t in 0..self.stacks.len() {
            skipped.clear();
            while let Some(&(slot, id)) = self.stacks[t].last() {
                if budget < MIN_FRAME || scanned >= MAX_SCAN {
                    break;
                }
                self.stacks[t].pop();
                self.records -= 1;
                let Some(e) = self.live(slot, id) else {
                    continue; // replaced by a newer update
                };
                scanned += 1;
                if e.frame.len() <= budget {
                    budget -= e.frame.len();
                    out.extend_from_slice(&e.frame);
                    sent.push((slot, id));
                } else {
                    skipped.push((slot, id));
                }
            }
            // Put back what did not fit, in its order.
            while let Some(r) = skipped.pop() {
                self.stacks[t].push(r);
                self.records += 1;
            }
            if budget < MIN_FRAME || scanned >= MAX_SCAN {
                break 'stacks;
            }
        }
        let count = sent.len();
        for (slot, id) in sent {
            let e = self.slots[slot].as_mut().expect("just sent");
            e.transmits += 1;
            let t = e.transmits;
            if t >= limit {
                let e = self.slots[slot].take().expect("just sent");
                self.by_name.remove(&e.name);
                self.free.push(slot);
                self.len -= 1;
            } else {
                let t = t as usize;
                if self.stacks.len() <= t {
                    self.stacks.resize_with(t + 1, Vec::new);
                }
                self.stacks[t].push((slot, id));
                self.records += 1;
            }
        }
        count
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
    fn replaced_updates_do_not_pile_up() {
        let mut q = BroadcastQueue::default();
        for i in 0..100_000u32 {
            q.enqueue("a", i.to_le_bytes().to_vec());
        }
        assert_eq!(q.len(), 1);
        assert!(q.records() <= 4 + 1024 + 1);
        let mut out = Vec::new();
        assert_eq!(q.fill(&mut out, 100, 1), 1);
        assert_eq!(out, 99_999u32.to_le_bytes());
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
