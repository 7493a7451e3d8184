//! The permits a bulkhead hands out: an exact counting semaphore whose free permits are
//! spread over per-core shards, with a strictly FIFO wait queue.
//!
//! # Where the free permits are
//!
//! A permit is always in exactly one place: **held** by a call, in the **stock** of one
//! shard, in the shared **pool**, or briefly **in transit** while a thread moves some from
//! a stock to the pool (a *move*). So `pool + Σ stock + held + in transit == capacity`, where
//! the pool alone may go negative: lowering the capacity subtracts from it (a debt that
//! released permits pay off). Each shard is one atomic word on its own 128-byte cache line
//! (a permit count in the low 32 bits, a change counter in the high 32 bits), and every
//! service clone's [`HomeShard`] is given a shard round-robin when it is made, so threads that
//! call their own clones admit and release on their own lines.
//!
//! - **Fast path** ([`Permits::try_acquire_at`]): take one permit from the own shard's
//!   stock (one compare-and-swap), then read the pool: if the pool is in debt, the permit
//!   was not really free and goes back to the pool. Releasing puts the permit in the own
//!   shard's stock (one `fetch_add`) and reads `waiting`. In the steady state neither
//!   writes a shared line. No lock, no allocation (beyond the `Arc` reference the permit
//!   keeps to its home).
//! - **Slow path**, when the own stock is empty: take one permit from the pool, else steal
//!   one from another shard's stock. A stock that grows beyond twice its fair share
//!   (`capacity / shards`) spills the excess back to the pool.
//! - **Rejection is exact**: a call is refused only after a *consistent* scan, a double
//!   collect of every shard word with no change in between (the change counters rule out
//!   an A-B-A), with the pool empty and no move in progress or started meanwhile (moves
//!   are counted in `moves`: started in the high 32 bits, in progress in the low ones).
//!   Between the two collects there was then an instant with no free permit anywhere,
//!   which is when the rejection takes effect. If other calls keep changing the shards,
//!   the scan retries after a short spin; a fail-fast call gives up after
//!   [`FAIL_FAST_ROUNDS`] inconsistent scans (about 200 spin-loop hints in all: tens of
//!   microseconds at worst), each of which saw other calls take or return permits
//!   meanwhile. So a spurious rejection needs the bulkhead to be churning at or near its
//!   capacity for all of them, or a thread descheduled in the middle of a move for that
//!   long, or 2³² changes of one shard between two reads of one scan. A fail-fast call
//!   never blocks or yields.
//! - **Never more than `capacity` held**: every take decrements a count that is positive
//!   (pool or stock), and a permit taken from a stock is kept only if the pool was not in
//!   debt afterwards; with the pool at or above zero, `held <= capacity` follows from the
//!   conservation above. (A call admitted while [`Permits::set_capacity`] lowers the
//!   capacity counts against the old one: the change takes effect when the pool is
//!   adjusted.)
//!
//! # The queue
//!
//! - [`Permits::try_acquire_fair_at`] is the fast path but refuses while anyone is queued,
//!   so a new arrival cannot overtake a waiter.
//! - [`Permits::enqueue`] is the waiting slow path: under a `parking_lot` lock it either
//!   admits the caller (nobody ahead, a permit free anywhere) or appends it to the queue
//!   and returns a [`QueueTicket`].
//! - While anyone waits, every release (and every other return of a permit) takes the lock
//!   and admits waiters from the head, taking permits from the pool and draining the
//!   stocks, so stocks never hoard permits while a waiter waits.
//!
//! A waiter is identified by a monotonically increasing id; the queue stays sorted by id,
//! so a waiter finds itself by binary search. A ticket whose id is no longer queued was
//! admitted (the only other way out of the queue is the ticket's own cancellation), and
//! the permit it was handed is already counted as held.
//!
//! # No lost wake-ups
//!
//! A waiter, under the lock, pushes itself, increments `waiting`, then scans for a permit
//! until it either takes one for the head or completes a consistent scan that found none.
//! A release first puts the permit back (a read-modify-write on a stock, and maybe a move
//! to the pool) and then reads `waiting`; all of these are `SeqCst`. (The other moves to
//! the pool, paying a capacity debt, are made by a caller that goes on to take a permit
//! itself and, in queued mode, to scan under the lock if it finds none.) In
//! the single order of `SeqCst` operations, either the releaser's read of `waiting` comes
//! after the waiter's increment, and the releaser takes the lock after the waiter drops it
//! and admits from the head; or it comes before, so the permit was back before the waiter's
//! scan began, and the scan either takes it or proves that someone else held it at an
//! instant after the waiter was queued. In both cases no permit sits idle while the waiter
//! waits. The scan under the lock runs until it is consistent (it does not give up as the
//! fail-fast scan does): once `waiting` is non-zero, fair arrivals go to the lock (except
//! those that read `waiting` before it changed, one take each) and releasers block on it
//! after one return each, so the shards stop changing.
//!
//! Admitted waiters' wakers are woken after the lock is released.
//!
//! # Model checking
//!
//! The atomics, the queue's mutex and the spin and yield hints come from the crate's
//! `sync` facade (`src/sync/`): `std` and `parking_lot` in every normal build, loom's
//! models in the unit tests built with `--cfg palisade_loom`. The `loom` test module
//! (`permits/loom.rs`) then
//! checks the properties above over every interleaving of two or three threads on their
//! own shards (up to loom's preemption bound): never more than the capacity held, a
//! fail-fast rejection only while the other thread held the permit, no lost wake-up
//! (a waiter racing a release, two waiters racing one), no permit lost to a cancellation,
//! and capacity changes racing acquisitions, releases and waiters. Run them with
//!
//! ```text
//! RUSTFLAGS="--cfg palisade_loom" LOOM_MAX_PREEMPTIONS=2 \
//!     cargo test --release --target-dir target/loom --lib bulkhead::permits::loom
//! ```
//!
//! (or `--lib loom` for every model in the crate; a few seconds once built; `LOOM_MAX_PREEMPTIONS=3` explores about a hundred times more
//! executions, in about three minutes).

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;

use crate::sync::{self, AtomicI64, AtomicU64, AtomicUsize, CachePadded, Mutex};

mod queue;

pub(crate) use queue::QueueTicket;
use queue::{WaitQueue, WakeList};

/// At most this many shards, whatever the machine.
const MAX_SHARDS: usize = 64;
/// Inconsistent scans after which a fail-fast call is rejected anyway.
const FAIL_FAST_ROUNDS: u32 = 16;
/// Inconsistent scans before a would-be waiter publishes itself and scans again.
const ENQUEUE_ROUNDS: u32 = 64;
/// Scans that are retried after a busy spin before a patient scan yields the thread.
const SPIN_ROUNDS: u32 = 8;
/// One change in a shard word's change counter (the high 32 bits).
const CHANGE: u64 = 1 << 32;
/// The permit count in a shard word (the low 32 bits).
const COUNT: u64 = CHANGE - 1;
/// One started move in `moves` (high 32 bits; the low 32 count the moves in progress).
const MOVE_STARTED: u64 = 1 << 32;
/// The moves in progress in `moves`.
const MOVES_IN_PROGRESS: u64 = MOVE_STARTED - 1;
/// A shard keeps at most this many permits (so its count stays far from 2³²).
const MAX_STOCK: u64 = 1 << 30;
/// Capacities above this are treated as this (so the pool's arithmetic cannot overflow).
const MAX_CAPACITY: usize = 1 << 62;

/// The shared state of one bulkhead: every clone of the service, every service of one
/// layer and every handle point at the same `Permits`.
pub(crate) struct Permits {
    /// One stock of free permits per shard, each on its own cache line. Each [`HomeShard`]
    /// holds its own shard's `Arc` too, so the fast path reaches its line directly.
    shards: Box<[Arc<ShardCounter>]>,
    /// `shards.len() - 1` (the length is a power of two).
    shard_mask: usize,
    /// `log2(shards.len())`.
    shard_shift: u32,
    /// The next shard to give a new [`HomeShard`]: apart, so making clones does not disturb
    /// the line the fast path reads `shards` from.
    next_shard: CachePadded<AtomicUsize>,
    /// Read on every admission and release, written only on the slow paths.
    shared: CachePadded<SharedPool>,
    /// Written by every rejection: apart, so an overload does not slow admissions.
    rejected: CachePadded<AtomicU64>,
    queue: CachePadded<Mutex<WaitQueue>>,
}

/// The state every shard shares: the pool of free permits in no shard, the moves into it,
/// the capacity and the queue's length.
struct SharedPool {
    /// Free permits in no shard; negative while a lowered capacity is in debt.
    pool: AtomicI64,
    /// Moves of permits between a stock and the pool: started (high 32 bits), and in
    /// progress (low 32 bits). Every increase of the pool is such a move.
    moves: AtomicU64,
    capacity: AtomicUsize,
    /// Length of `queue`, readable without the lock.
    waiting: AtomicUsize,
}

/// One shard's permit counter, its stock of free permits: a permit count (low 32 bits) and
/// a change counter (high 32 bits).
type ShardCounter = CachePadded<AtomicU64>;

/// Shards for this machine: twice its parallelism (threads often outnumber cores), as a
/// power of two, at most [`MAX_SHARDS`].
fn default_shards() -> usize {
    (sync::available_parallelism() * 2)
        .next_power_of_two()
        .min(MAX_SHARDS)
}

#[inline]
fn count(word: u64) -> u64 {
    word & COUNT
}

/// The slow path's scan policy: how long it keeps scanning while other threads change the
/// shards.
#[derive(Clone, Copy, Debug)]
enum ScanPolicy {
    /// At most this many scans, spinning briefly between them: a call's own attempt, which
    /// must not stall the caller.
    AtMost(u32),
    /// Until a scan is consistent, yielding the thread after a few: admission under the
    /// queue's lock, where the shards settle (see the module docs).
    UntilConsistent,
}

impl ScanPolicy {
    fn allows(self, round: u32) -> bool {
        match self {
            ScanPolicy::AtMost(n) => round < n,
            ScanPolicy::UntilConsistent => true,
        }
    }

    /// Waits a little before scan number `round` (from 1).
    fn back_off(self, round: u32) {
        match self {
            ScanPolicy::UntilConsistent if round >= SPIN_ROUNDS => sync::yield_now(),
            _ => (0..1u32 << round.min(4)).for_each(|_| sync::spin_loop()),
        }
    }
}

impl Permits {
    pub(crate) fn new(capacity: usize) -> Arc<Self> {
        Self::with_shards(capacity, default_shards())
    }

    /// `shards` is rounded up to a power of two and capped at [`MAX_SHARDS`].
    pub(crate) fn with_shards(capacity: usize, shards: usize) -> Arc<Self> {
        let shards = shards.clamp(1, MAX_SHARDS).next_power_of_two();
        let capacity = capacity.min(MAX_CAPACITY);
        Arc::new(Permits {
            shards: (0..shards)
                .map(|_| Arc::new(CachePadded::new(AtomicU64::new(0))))
                .collect(),
            shard_mask: shards - 1,
            shard_shift: shards.trailing_zeros(),
            next_shard: CachePadded::new(AtomicUsize::new(0)),
            shared: CachePadded::new(SharedPool {
                pool: AtomicI64::new(capacity as i64),
                moves: AtomicU64::new(0),
                capacity: AtomicUsize::new(capacity),
                waiting: AtomicUsize::new(0),
            }),
            rejected: CachePadded::new(AtomicU64::new(0)),
            queue: CachePadded::new(Mutex::new(WaitQueue {
                next_id: 0,
                waiters: VecDeque::new(),
            })),
        })
    }

    /// Takes one permit from `stock`, if it has one.
    #[inline]
    fn take_from_stock(&self, stock: &AtomicU64) -> bool {
        let mut word = stock.load(SeqCst);
        while count(word) != 0 {
            match stock.compare_exchange_weak(word, word.wrapping_add(CHANGE) - 1, SeqCst, SeqCst) {
                Ok(_) => return self.keep_unless_in_debt(),
                Err(actual) => word = actual,
            }
        }
        false
    }

    /// After taking a permit from a stock: keeps it if the pool is not in debt; otherwise
    /// it was owed to a lowered capacity, and goes to the pool.
    #[inline]
    fn keep_unless_in_debt(&self) -> bool {
        if self.shared.pool.load(SeqCst) >= 0 {
            return true;
        }
        self.repay(1);
        false
    }

    /// Takes one permit from the pool, if it has one.
    fn take_from_pool(&self) -> bool {
        let pool = &self.shared.pool;
        let mut free = pool.load(SeqCst);
        while free > 0 {
            match pool.compare_exchange_weak(free, free - 1, SeqCst, SeqCst) {
                Ok(_) => return true,
                Err(actual) => free = actual,
            }
        }
        false
    }

    /// Puts `n` permits taken from a stock (and so in transit) into the pool. It does not
    /// serve the queue (it may run under the queue's lock): its callers go on to take a
    /// permit themselves or to scan under the lock.
    fn repay(&self, n: u64) {
        self.shared.moves.fetch_add(MOVE_STARTED | 1, SeqCst);
        self.shared.pool.fetch_add(n as i64, SeqCst);
        self.shared.moves.fetch_sub(1, SeqCst);
    }

    /// Moves all but `keep` of `stock` to the pool.
    fn spill(&self, stock: &AtomicU64, keep: u64) {
        self.shared.moves.fetch_add(MOVE_STARTED | 1, SeqCst);
        let mut word = stock.load(SeqCst);
        let mut moved = 0;
        while count(word) > keep {
            let excess = count(word) - keep;
            match stock.compare_exchange_weak(
                word,
                word.wrapping_add(CHANGE) - excess,
                SeqCst,
                SeqCst,
            ) {
                Ok(_) => {
                    moved = excess;
                    break;
                }
                Err(actual) => word = actual,
            }
        }
        if moved != 0 {
            self.shared.pool.fetch_add(moved as i64, SeqCst);
        }
        self.shared.moves.fetch_sub(1, SeqCst);
    }

    /// Empties every stock into the pool while the pool is in debt.
    fn pay_debt_from_stocks(&self) {
        for stock in self.shards.iter() {
            if self.shared.pool.load(SeqCst) >= 0 {
                return;
            }
            if count(stock.load(SeqCst)) != 0 {
                self.spill(stock, 0);
            }
        }
    }

    /// The slow path: one permit from the pool or any shard, starting at `home`. Returns
    /// `false` only after a consistent scan found no free permit, or when `policy` ran
    /// out on inconsistent ones (see the module docs).
    #[cold]
    fn take_anywhere(&self, home: usize, policy: ScanPolicy) -> bool {
        let shards = self.shards.len();
        let mut seen = [0u64; MAX_SHARDS];
        let mut round = 0;
        while policy.allows(round) {
            if round > 0 {
                policy.back_off(round);
            }
            round = round.saturating_add(1);
            // Stocked permits are owed to a lowered capacity: pay first (these are moves,
            // so before reading `moves`), then take what is left in the pool.
            self.pay_debt_from_stocks();
            let moves = self.shared.moves.load(SeqCst);
            if self.take_from_pool() {
                return true;
            }
            let mut changed = false;
            for i in 0..shards {
                let shard = (home + i) & self.shard_mask;
                let word = self.shards[shard].load(SeqCst);
                if count(word) != 0 {
                    if self.take_from_stock(&self.shards[shard]) {
                        return true;
                    }
                    changed = true;
                    break;
                }
                seen[shard] = word;
            }
            if changed {
                continue;
            }
            // A rejection needs no move in flight when the scan began (permits in transit
            // are free but invisible), none started since, and no shard changed.
            let settled = moves & MOVES_IN_PROGRESS == 0;
            let stable = (0..shards).all(|shard| self.shards[shard].load(SeqCst) == seen[shard]);
            if settled && stable && self.shared.moves.load(SeqCst) == moves {
                return false;
            }
        }
        false
    }

    /// Takes one permit for a call of `home`'s clone: own stock first, then anywhere.
    #[inline]
    fn take_at(&self, home: &HomeShard, policy: ScanPolicy) -> bool {
        self.take_from_stock(&home.stock) || self.take_anywhere(home.shard, policy)
    }

    /// The fail-fast path of a service clone: a permit if one is free anywhere.
    #[inline]
    pub(crate) fn try_acquire_at(home: &Arc<HomeShard>) -> Option<Permit> {
        if home
            .permits
            .take_at(home, ScanPolicy::AtMost(FAIL_FAST_ROUNDS))
        {
            Some(Permit {
                home: Arc::clone(home),
            })
        } else {
            None
        }
    }

    /// Like [`try_acquire_at`](Self::try_acquire_at), but never overtakes a queued waiter.
    /// A `None` sends the caller to [`enqueue`](Self::enqueue), which scans again under
    /// the lock, so one scan is enough here.
    #[inline]
    pub(crate) fn try_acquire_fair_at(home: &Arc<HomeShard>) -> Option<Permit> {
        let permits = &home.permits;
        if permits.shared.waiting.load(SeqCst) != 0 {
            return None;
        }
        if permits.take_at(home, ScanPolicy::AtMost(1)) {
            Some(Permit {
                home: Arc::clone(home),
            })
        } else {
            None
        }
    }

    /// Returns a permit to `stock`.
    #[inline]
    fn release(&self, stock: &AtomicU64) {
        let before = stock.fetch_add(CHANGE + 1, SeqCst);
        let limit = self.stock_limit();
        if count(before) + 1 > limit {
            self.spill(stock, limit / 2);
        }
        self.serve_queue();
    }

    /// How many permits a shard may stock: twice its fair share.
    #[inline]
    fn stock_limit(&self) -> u64 {
        let share = (self.shared.capacity.load(SeqCst) >> self.shard_shift) as u64;
        share.clamp(1, MAX_STOCK / 2) * 2
    }

    /// Counts a rejection (after waiting `waited`; zero when failing fast).
    pub(crate) fn record_rejection(&self, waited: std::time::Duration) {
        self.rejected.fetch_add(1, SeqCst);
        #[cfg(feature = "tracing")]
        tracing::debug!(
            target: "palisade::bulkhead",
            ?waited,
            capacity = self.capacity(),
            "bulkhead full: call rejected"
        );
        #[cfg(not(feature = "tracing"))]
        let _ = waited;
    }

    /// Permits held: the capacity minus the free ones (pool and stocks). Permits in transit
    /// between a stock and the pool count as held for that instant.
    pub(crate) fn in_use(&self) -> usize {
        let stocked: i64 = self
            .shards
            .iter()
            .map(|stock| count(stock.load(SeqCst)) as i64)
            .sum();
        let free = self.shared.pool.load(SeqCst) + stocked;
        let capacity = self.shared.capacity.load(SeqCst) as i64;
        (capacity - free).max(0) as usize
    }

    pub(crate) fn capacity(&self) -> usize {
        self.shared.capacity.load(SeqCst)
    }

    pub(crate) fn waiting(&self) -> usize {
        self.shared.waiting.load(SeqCst)
    }

    pub(crate) fn rejected(&self) -> u64 {
        self.rejected.load(SeqCst)
    }

    /// Changes the capacity. Growing admits waiters at once; shrinking takes effect as
    /// permits are released (held permits are never revoked): the difference is a debt of
    /// the pool, paid at once from the stocks and then by releases.
    pub(crate) fn set_capacity(&self, capacity: usize) {
        let capacity = capacity.min(MAX_CAPACITY);
        let mut wake = WakeList::default();
        let _previous = {
            let mut queue = self.queue.lock();
            let previous = self.shared.capacity.swap(capacity, SeqCst);
            self.shared.moves.fetch_add(MOVE_STARTED | 1, SeqCst);
            self.shared
                .pool
                .fetch_add(capacity as i64 - previous as i64, SeqCst);
            self.shared.moves.fetch_sub(1, SeqCst);
            self.pay_debt_from_stocks();
            self.admit_locked(&mut queue, &mut wake);
            previous
        };
        wake.wake_all();
        #[cfg(feature = "tracing")]
        tracing::info!(
            target: "palisade::bulkhead",
            previous = _previous,
            capacity,
            "bulkhead capacity changed"
        );
    }

    /// The shard count (tests pick homes on distinct shards with it).
    #[cfg(test)]
    fn shard_count(&self) -> usize {
        self.shards.len()
    }
}

impl fmt::Debug for Permits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permits")
            .field("in_use", &self.in_use())
            .field("capacity", &self.capacity())
            .field("waiting", &self.waiting())
            .field("rejected", &self.rejected())
            .field("shards", &self.shards.len())
            .finish()
    }
}

/// One service clone's home shard: its own reference to the shared [`Permits`], and the
/// shard it admits and releases on (given round-robin). Admitted
/// calls hold a clone of this `Arc` rather than of the shared one: each service clone's
/// reference count lives on its own cache line, as does its shard's stock.
pub(crate) struct HomeShard {
    pub(crate) permits: Arc<Permits>,
    /// Index of this home's shard in `permits.shards`.
    shard: usize,
    /// That shard's stock.
    stock: Arc<ShardCounter>,
}

impl HomeShard {
    /// A home on the next shard, round-robin.
    pub(crate) fn new(permits: Arc<Permits>) -> Arc<HomeShard> {
        let shard = permits.next_shard.fetch_add(1, SeqCst) & permits.shard_mask;
        let stock = Arc::clone(&permits.shards[shard]);
        Arc::new(HomeShard {
            permits,
            shard,
            stock,
        })
    }
}

/// One admitted call. Dropping it (on completion, cancellation or unwinding) returns the
/// permit to its home's shard, and hands a permit to the head waiter if there is one.
pub(crate) struct Permit {
    home: Arc<HomeShard>,
}

impl Drop for Permit {
    #[inline]
    fn drop(&mut self) {
        self.home.permits.release(&self.home.stock);
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("shard", &self.home.shard)
            .finish()
    }
}

#[cfg(all(test, not(palisade_loom)))]
mod tests;

#[cfg(all(test, palisade_loom))]
mod loom;
