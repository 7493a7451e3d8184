//! The ready endpoints ordered by load, for least-connections picking without a scan.
//!
//! - By in-flight count ([`LoadBuckets`]): one bucket of slots per count and a pointer
//!   to the lowest non-empty one. The pick is a uniformly random member of that bucket,
//!   so ties are broken exactly at random; a change of a slot's count moves it between
//!   two buckets in O(1) (moving the pointer up past empty buckets when the lowest one
//!   empties costs at most the number of counts skipped, in practice one).
//! - By in-flight count per unit of weight ([`LoadHeap`]): an indexed binary min-heap
//!   keyed by `(score, tag)`, the tag a random number drawn whenever the slot's score is
//!   set, which breaks ties. The top is the pick; every change is one O(log n) sift.
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
    #[inline]
    pub(crate) fn take_overflow(&self) -> bool {
        // Load first: a swap on every pick would be a locked instruction for nothing.
        self.overflowed.load(Ordering::Acquire) && self.overflowed.swap(false, Ordering::AcqRel)
    }
}

/// The ordering a picker asked for: buckets by count, or a heap by count per weight.
#[derive(Debug)]
pub(crate) enum LoadOrder {
    Count(LoadBuckets),
    PerWeight(LoadHeap),
}

impl LoadOrder {
    pub(crate) fn new(per_weight: bool, seed: u64) -> Self {
        if per_weight {
            LoadOrder::PerWeight(LoadHeap::new(seed))
        } else {
            LoadOrder::Count(LoadBuckets::new(seed))
        }
    }

    /// Whether the order depends on weights (so a weight change means a rescore).
    pub(crate) fn per_weight(&self) -> bool {
        matches!(self, LoadOrder::PerWeight(_))
    }

    /// Adds `slot`, or moves it, to its place for `in_flight` and `weight`.
    #[inline]
    pub(crate) fn set(&mut self, slot: u32, in_flight: usize, weight: f64) {
        match self {
            LoadOrder::Count(b) => b.set(slot, in_flight),
            LoadOrder::PerWeight(h) => h.set(slot, (in_flight + 1) as f64 / weight),
        }
    }

    /// [`set`](Self::set), only if `slot` is in.
    #[inline]
    pub(crate) fn update(&mut self, slot: u32, in_flight: usize, weight: f64) {
        let present = match self {
            LoadOrder::Count(b) => b.contains(slot),
            LoadOrder::PerWeight(h) => h.contains(slot),
        };
        if present {
            self.set(slot, in_flight, weight);
        }
    }

    #[inline]
    pub(crate) fn remove(&mut self, slot: u32) {
        match self {
            LoadOrder::Count(b) => b.remove(slot),
            LoadOrder::PerWeight(h) => h.remove(slot),
        }
    }

    /// A least-loaded slot (random among ties).
    #[inline]
    pub(crate) fn choose(&mut self) -> Option<u32> {
        match self {
            LoadOrder::Count(b) => b.choose(),
            LoadOrder::PerWeight(h) => h.top(),
        }
    }
}

/// Ready slots in buckets by in-flight count. See the [module docs](self).
#[derive(Debug)]
pub(crate) struct LoadBuckets {
    buckets: Vec<Vec<u32>>,
    /// Per slot: its bucket (`NONE`: absent) and its index in it.
    place: Vec<(u32, u32)>,
    /// The lowest non-empty bucket, when `len > 0`.
    min: usize,
    len: usize,
    rng: SmallRng,
}

impl LoadBuckets {
    pub(crate) fn new(seed: u64) -> Self {
        Self {
            buckets: Vec::new(),
            place: Vec::new(),
            min: 0,
            len: 0,
            rng: SmallRng::seed_from_u64(seed),
        }
    }

    #[inline]
    pub(crate) fn contains(&self, slot: u32) -> bool {
        self.place.get(slot as usize).is_some_and(|p| p.0 != NONE)
    }

    /// Takes `slot` out of its bucket; returns the bucket it was in.
    #[inline]
    fn take(&mut self, slot: u32) -> Option<usize> {
        let (bucket, index) = *self.place.get(slot as usize)?;
        if bucket == NONE {
            return None;
        }
        let b = &mut self.buckets[bucket as usize];
        b.swap_remove(index as usize);
        if let Some(&moved) = b.get(index as usize) {
            self.place[moved as usize].1 = index;
        }
        self.place[slot as usize].0 = NONE;
        self.len -= 1;
        Some(bucket as usize)
    }

    #[inline]
    pub(crate) fn set(&mut self, slot: u32, count: usize) {
        let count = count.min(u32::MAX as usize - 1);
        if let Some(&(bucket, _)) = self.place.get(slot as usize) {
            if bucket as usize == count {
                return;
            }
        } else {
            self.place.resize(slot as usize + 1, (NONE, 0));
        }
        self.take(slot);
        if self.buckets.len() <= count {
            self.buckets.resize_with(count + 1, Vec::new);
        }
        let b = &mut self.buckets[count];
        self.place[slot as usize] = (count as u32, b.len() as u32);
        b.push(slot);
        self.len += 1;
        if self.len == 1 || count < self.min {
            self.min = count;
        } else {
            self.settle_min();
        }
    }

    #[inline]
    pub(crate) fn remove(&mut self, slot: u32) {
        if self.take(slot).is_some() {
            self.settle_min();
        }
    }

    /// Moves `min` up past empty buckets.
    #[inline]
    fn settle_min(&mut self) {
        if self.len == 0 {
            self.min = 0;
            return;
        }
        while self.buckets[self.min].is_empty() {
            self.min += 1;
        }
    }

    /// A uniformly random slot of the lowest bucket.
    #[inline]
    pub(crate) fn choose(&mut self) -> Option<u32> {
        if self.len == 0 {
            return None;
        }
        let b = &self.buckets[self.min];
        let i = ((self.rng.next_u64() as u128 * b.len() as u128) >> 64) as usize;
        Some(b[i])
    }

    #[cfg(test)]
    fn check(&self) {
        let mut n = 0;
        for (count, b) in self.buckets.iter().enumerate() {
            for (i, &slot) in b.iter().enumerate() {
                assert_eq!(self.place[slot as usize], (count as u32, i as u32));
                n += 1;
            }
            if !b.is_empty() {
                assert!(self.min <= count);
            }
        }
        assert_eq!(n, self.len);
        if self.len > 0 {
            assert!(!self.buckets[self.min].is_empty());
        }
    }
}

/// The indexed min-heap of ready slots by load. See the [module docs](self).
#[derive(Debug)]
pub(crate) struct LoadHeap {
    heap: Vec<u32>,
    /// Per slot: its position in `heap`, or `NONE`.
    pos: Vec<u32>,
    /// Per slot: its score and tie-breaking tag.
    keys: Vec<(f64, u64)>,
    rng: SmallRng,
}

impl LoadHeap {
    pub(crate) fn new(seed: u64) -> Self {
        Self {
            heap: Vec::new(),
            pos: Vec::new(),
            keys: Vec::new(),
            rng: SmallRng::seed_from_u64(seed),
        }
    }

    /// The least-loaded ready slot.
    #[inline]
    pub(crate) fn top(&self) -> Option<u32> {
        self.heap.first().copied()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
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

    #[test]
    fn buckets_choose_uniformly_among_the_least_loaded() {
        let mut b = LoadBuckets::new(5);
        for slot in 0..4 {
            b.set(slot, 0);
        }
        b.set(4, 1);
        let mut hits = [0u32; 5];
        for _ in 0..40_000 {
            hits[b.choose().unwrap() as usize] += 1;
        }
        assert_eq!(hits[4], 0);
        for &h in &hits[..4] {
            assert!((9_000..11_000).contains(&h), "{hits:?}");
        }
    }

    #[test]
    fn queue_hands_over_everything_while_producers_and_consumer_race() {
        use std::sync::Arc;
        // Small enough to lap many times, large enough never to fill (the consumer keeps
        // up within a lap or the test would report an overflow).
        let q = Arc::new(CompletionQueue::new(1 << 16));
        let producers: Vec<_> = (0..2u32)
            .map(|t| {
                let q = q.clone();
                std::thread::spawn(move || {
                    for i in 0..20_000u32 {
                        q.push(t * 100_000 + i);
                    }
                })
            })
            .collect();
        let mut got = 0;
        let mut last = [None::<u32>; 2];
        while got < 40_000 {
            match q.pop() {
                Some(v) => {
                    // Each producer's values arrive in its order, once.
                    let t = (v / 100_000) as usize;
                    assert!(last[t].is_none_or(|l| l < v), "{v} after {last:?}");
                    last[t] = Some(v);
                    got += 1;
                }
                None => {
                    assert!(!q.take_overflow());
                    std::thread::yield_now();
                }
            }
        }
        for p in producers {
            p.join().unwrap();
        }
        assert_eq!(q.pop(), None);
        assert!(!q.take_overflow());
        assert_eq!(last, [Some(19_999), Some(119_999)]);
    }

    proptest! {
        #[test]
        fn buckets_choose_a_least_loaded_slot(
            ops in prop::collection::vec((0..40u32, 0..6usize, 0..3u8), 1..300)
        ) {
            let mut b = LoadBuckets::new(1);
            let mut model: std::collections::HashMap<u32, usize> = Default::default();
            for (slot, load, op) in ops {
                match op {
                    0 => { b.remove(slot); model.remove(&slot); }
                    _ => { b.set(slot, load); model.insert(slot, load); }
                }
                b.check();
                match b.choose() {
                    None => prop_assert!(model.is_empty()),
                    Some(top) => {
                        let min = model.values().min().copied().unwrap();
                        prop_assert_eq!(model[&top], min);
                    }
                }
            }
        }

        #[test]
        fn heap_top_is_always_a_least_loaded_slot(
            ops in prop::collection::vec((0..40u32, 0..6u32, 0..3u8), 1..300)
        ) {
            let mut heap = LoadHeap::new(1);
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
