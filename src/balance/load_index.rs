//! The ready endpoints ordered by load, for least-connections picking in O(log n).
//!
//! An indexed binary min-heap over the ready slots, keyed by `(score, tag)`: the score
//! is the in-flight count (or `(in flight + 1) / effective weight`), the tag a random
//! number drawn whenever the slot's score is set, which breaks ties at random. The top
//! is the pick; every change of a slot's load or readiness is one O(log n) sift.
//!
//! In-flight counts go up in the balancer's `call` (which updates the heap at once) and
//! down in response futures, anywhere. A future that ends pushes its slot onto a
//! [`CompletionQueue`] (once, until the balancer looks: a flag per endpoint) and the
//! balancer drains it before each pick, re-reading those slots' counts. The queue is a
//! bounded lock-free ring; if it ever fills, the next pick re-reads every ready slot.
//! No lock, no allocation per request.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};

const NONE: u32 = u32::MAX;

/// Slots whose in-flight count went down, pushed by response futures (many producers)
/// and drained by the balancer (one consumer).
///
/// A ring of cells, each holding a sequence number (upper 32 bits) and a slot (lower 32
/// bits), as in Vyukov's bounded queue: a producer claims a position with a
/// compare-and-swap on the tail and publishes the cell by writing its next sequence
/// number; the consumer takes a cell whose sequence says it is published and frees it
/// for the producer one lap later.
#[derive(Debug)]
pub(crate) struct CompletionQueue {
    cells: Box<[AtomicU64]>,
    mask: usize,
    tail: AtomicUsize,
    head: AtomicUsize,
    overflowed: AtomicBool,
}

impl CompletionQueue {
    /// A queue of `capacity` entries (a power of two).
    pub(crate) fn new(capacity: usize) -> Self {
        debug_assert!(capacity.is_power_of_two());
        Self {
            cells: (0..capacity)
                .map(|i| AtomicU64::new((i as u64) << 32))
                .collect(),
            mask: capacity - 1,
            tail: AtomicUsize::new(0),
            head: AtomicUsize::new(0),
            overflowed: AtomicBool::new(false),
        }
    }

    /// Pushes `slot`; when the queue is full, records the overflow instead.
    pub(crate) fn push(&self, slot: u32) {
        let mut pos = self.tail.load(Ordering::Relaxed);
        loop {
            let cell = &self.cells[pos & self.mask];
            let seq = (cell.load(Ordering::Acquire) >> 32) as u32;
            let lag = seq.wrapping_sub(pos as u32) as i32;
            if lag == 0 {
                match self.tail.compare_exchange_weak(
                    pos,
                    pos.wrapping_add(1),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        let next = (pos as u32).wrapping_add(1) as u64;
                        cell.store((next << 32) | slot as u64, Ordering::Release);
                        return;
                    }
                    Err(now) => pos = now,
                }
            } else if lag < 0 {
                // Full: the consumer has not freed this cell from the previous lap.
                self.overflowed.store(true, Ordering::Release);
                return;
            } else {
                pos = self.tail.load(Ordering::Relaxed);
            }
        }
    }

    /// Takes the oldest published slot. Only the balancer (one consumer) calls this.
    pub(crate) fn pop(&self) -> Option<u32> {
        let pos = self.head.load(Ordering::Relaxed);
        let cell = &self.cells[pos & self.mask];
        let value = cell.load(Ordering::Acquire);
        if (value >> 32) as u32 != (pos as u32).wrapping_add(1) {
            return None;
        }
        let free = (pos as u32).wrapping_add(self.cells.len() as u32) as u64;
        cell.store(free << 32, Ordering::Release);
        self.head.store(pos.wrapping_add(1), Ordering::Relaxed);
        Some(value as u32)
    }

    /// Whether a push found the queue full since the last call.
    pub(crate) fn take_overflow(&self) -> bool {
        self.overflowed.swap(false, Ordering::AcqRel)
    }
}

/// The indexed min-heap of ready slots by load. See the [module docs](self).
#[derive(Debug)]
pub(crate) struct LoadHeap {
    per_weight: bool,
    heap: Vec<u32>,
    /// Per slot: its position in `heap`, or `NONE`.
    pos: Vec<u32>,
    /// Per slot: its score and tie-breaking tag.
    keys: Vec<(f64, u64)>,
    rng: SmallRng,
}

impl LoadHeap {
    pub(crate) fn new(per_weight: bool, seed: u64) -> Self {
        Self {
            per_weight,
            heap: Vec::new(),
            pos: Vec::new(),
            keys: Vec::new(),
            rng: SmallRng::seed_from_u64(seed),
        }
    }

    /// The score of a slot with `in_flight` requests and `effective_weight`.
    #[inline]
    pub(crate) fn score(&self, in_flight: usize, effective_weight: f64) -> f64 {
        if self.per_weight {
            (in_flight + 1) as f64 / effective_weight
        } else {
            in_flight as f64
        }
    }

    /// Whether scores depend on weights (so a weight change means a rebuild).
    pub(crate) fn per_weight(&self) -> bool {
        self.per_weight
    }

    /// The least-loaded ready slot.
    #[inline]
    pub(crate) fn top(&self) -> Option<u32> {
        self.heap.first().copied()
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }

    #[inline]
    fn less(&self, a: u32, b: u32) -> bool {
        let (ka, kb) = (self.keys[a as usize], self.keys[b as usize]);
        ka.0 < kb.0 || (ka.0 == kb.0 && ka.1 < kb.1)
    }

    fn ensure(&mut self, slot: u32) {
        let need = slot as usize + 1;
        if self.pos.len() < need {
            self.pos.resize(need, NONE);
            self.keys.resize(need, (0.0, 0));
        }
    }

    /// Adds `slot` with `score`, or updates its score if it is in the heap.
    pub(crate) fn set(&mut self, slot: u32, score: f64) {
        self.ensure(slot);
        let i = slot as usize;
        let tag = self.rng.next_u64();
        let old = self.keys[i];
        self.keys[i] = (score, tag);
        match self.pos[i] {
            NONE => {
                self.pos[i] = self.heap.len() as u32;
                self.heap.push(slot);
                self.sift_up(self.heap.len() - 1);
            }
            at => {
                let at = at as usize;
                if score < old.0 || (score == old.0 && tag < old.1) {
                    self.sift_up(at);
                } else {
                    self.sift_down(at);
                }
            }
        }
    }

    /// Updates the score of `slot` if it is in the heap.
    #[inline]
    pub(crate) fn update(&mut self, slot: u32, score: f64) {
        if self.contains(slot) {
            self.set(slot, score);
        }
    }

    #[inline]
    pub(crate) fn contains(&self, slot: u32) -> bool {
        self.pos.get(slot as usize).is_some_and(|&p| p != NONE)
    }

    /// Takes `slot` out, if it is in.
    pub(crate) fn remove(&mut self, slot: u32) {
        let Some(&at) = self.pos.get(slot as usize) else {
            return;
        };
        if at == NONE {
            return;
        }
        let at = at as usize;
        self.pos[slot as usize] = NONE;
        let last = self
            .heap
            .pop()
            .expect("a slot with a position is in the heap");
        if at < self.heap.len() {
            self.heap[at] = last;
            self.pos[last as usize] = at as u32;
            self.sift_down(at);
            self.sift_up(self.pos[last as usize] as usize);
        }
    }

    fn sift_up(&mut self, mut at: usize) {
        while at > 0 {
            let parent = (at - 1) / 2;
            if !self.less(self.heap[at], self.heap[parent]) {
                break;
            }
            self.swap(at, parent);
            at = parent;
        }
    }

    fn sift_down(&mut self, mut at: usize) {
        let n = self.heap.len();
        loop {
            let (l, r) = (2 * at + 1, 2 * at + 2);
            let mut least = at;
            if l < n && self.less(self.heap[l], self.heap[least]) {
                least = l;
            }
            if r < n && self.less(self.heap[r], self.heap[least]) {
                least = r;
            }
            if least == at {
                return;
            }
            self.swap(at, least);
            at = least;
        }
    }

    fn swap(&mut self, a: usize, b: usize) {
        self.heap.swap(a, b);
        self.pos[self.heap[a] as usize] = a as u32;
        self.pos[self.heap[b] as usize] = b as u32;
    }

    #[cfg(test)]
    fn check(&self) {
        for (at, &slot) in self.heap.iter().enumerate() {
            assert_eq!(self.pos[slot as usize] as usize, at);
            if at > 0 {
                assert!(!self.less(slot, self.heap[(at - 1) / 2]));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn queue_delivers_in_order_and_reports_overflow() {
        let q = CompletionQueue::new(4);
        for s in 0..4 {
            q.push(s);
        }
        q.push(9);
        assert!(q.take_overflow());
        assert!(!q.take_overflow());
        assert_eq!(
            (0..5).map(|_| q.pop()).collect::<Vec<_>>(),
            [Some(0), Some(1), Some(2), Some(3), None]
        );
        // Laps around the ring.
        for round in 0..10u32 {
            q.push(round);
            q.push(round + 100);
            assert_eq!(q.pop(), Some(round));
            assert_eq!(q.pop(), Some(round + 100));
        }
        assert!(!q.take_overflow());
    }

    #[test]
    fn queue_loses_nothing_between_racing_producers_unless_it_says_so() {
        use std::sync::Arc;
        let q = Arc::new(CompletionQueue::new(1 << 16));
        let threads: Vec<_> = (0..4u32)
            .map(|t| {
                let q = q.clone();
                std::thread::spawn(move || {
                    for i in 0..5_000u32 {
                        q.push(t * 10_000 + i);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let mut seen = Vec::new();
        while let Some(s) = q.pop() {
            seen.push(s);
        }
        assert!(!q.take_overflow());
        seen.sort_unstable();
        let want: Vec<u32> = (0..4u32)
            .flat_map(|t| (0..5_000).map(move |i| t * 10_000 + i))
            .collect();
        assert_eq!(seen, want);
    }

    proptest! {
        #[test]
        fn heap_top_is_always_a_least_loaded_slot(
            ops in prop::collection::vec((0..40u32, 0..6u32, 0..3u8), 1..300)
        ) {
            let mut heap = LoadHeap::new(false, 1);
            let mut model: std::collections::HashMap<u32, u32> = Default::default();
            for (slot, load, op) in ops {
                match op {
                    0 => { heap.remove(slot); model.remove(&slot); }
                    _ => { heap.set(slot, load as f64); model.insert(slot, load); }
                }
                heap.check();
                prop_assert_eq!(heap.len(), model.len());
                match heap.top() {
                    None => prop_assert!(model.is_empty()),
                    Some(top) => {
                        let min = model.values().min().copied().unwrap();
                        prop_assert_eq!(model[&top], min);
                    }
                }
            }
        }
    }
}
