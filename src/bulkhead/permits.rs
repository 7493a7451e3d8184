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
//! service clone's [`Site`] is given a shard round-robin when it is made, so threads that
//! call their own clones admit and release on their own lines.
//!
//! - **Fast path** ([`Permits::try_acquire_at`]): take one permit from the own shard's
//!   stock (one compare-and-swap), then read the pool: if the pool is in debt, the permit
//!   was not really free and goes back to the pool. Releasing puts the permit in the own
//!   shard's stock (one `fetch_add`) and reads `waiting`. In the steady state neither
//!   writes a shared line. No lock, no allocation (beyond the `Arc` reference the permit
//!   keeps to its site).
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
//! models in the unit tests built with `--cfg palisade_loom`. The `loom` test module then
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
//! (a few seconds once built; `LOOM_MAX_PREEMPTIONS=3` explores about a hundred times more
//! executions, in about three minutes).

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;
use std::task::{Context, Waker};

use crate::sync::{self, AtomicI64, AtomicU64, AtomicUsize, CachePadded, Mutex};

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
    /// One stock of free permits per shard, each on its own cache line. Each [`Site`]
    /// holds its own shard's `Arc` too, so the fast path reaches its line directly.
    shards: Box<[Arc<Stock>]>,
    /// `shards.len() - 1` (the length is a power of two).
    shard_mask: usize,
    /// `log2(shards.len())`.
    shard_shift: u32,
    /// The next shard to give a new [`Site`]: apart, so making clones does not disturb
    /// the line the fast path reads `shards` from.
    next_shard: CachePadded<AtomicUsize>,
    /// Read on every admission and release, written only on the slow paths.
    central: CachePadded<Central>,
    /// Written by every rejection: apart, so an overload does not slow admissions.
    rejected: CachePadded<AtomicU64>,
    queue: CachePadded<Mutex<WaitQueue>>,
}

struct Central {
    /// Free permits in no shard; negative while a lowered capacity is in debt.
    pool: AtomicI64,
    /// Moves of permits between a stock and the pool: started (high 32 bits), and in
    /// progress (low 32 bits). Every increase of the pool is such a move.
    moves: AtomicU64,
    capacity: AtomicUsize,
    /// Length of `queue`, readable without the lock.
    waiting: AtomicUsize,
}

/// One shard's stock: a permit count (low 32 bits) and a change counter (high 32 bits).
type Stock = CachePadded<AtomicU64>;

struct WaitQueue {
    next_id: u64,
    /// Sorted by `id` (pushed at the back with increasing ids, removed anywhere).
    waiters: VecDeque<Waiter>,
}

struct Waiter {
    id: u64,
    waker: Option<Waker>,
}

impl WaitQueue {
    fn position(&self, id: u64) -> Option<usize> {
        self.waiters.binary_search_by_key(&id, |w| w.id).ok()
    }
}

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

/// How long the slow path keeps scanning while other threads change the shards.
#[derive(Clone, Copy, Debug)]
enum Patience {
    /// At most this many scans, spinning briefly between them: a call's own attempt, which
    /// must not stall the caller.
    Scans(u32),
    /// Until a scan is consistent, yielding the thread after a few: admission under the
    /// queue's lock, where the shards settle (see the module docs).
    UntilConsistent,
}

impl Patience {
    fn allows(self, round: u32) -> bool {
        match self {
            Patience::Scans(n) => round < n,
            Patience::UntilConsistent => true,
        }
    }

    /// Waits a little before scan number `round` (from 1).
    fn back_off(self, round: u32) {
        match self {
            Patience::UntilConsistent if round >= SPIN_ROUNDS => sync::yield_now(),
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
            central: CachePadded::new(Central {
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
        if self.central.pool.load(SeqCst) >= 0 {
            return true;
        }
        self.repay(1);
        false
    }

    /// Takes one permit from the pool, if it has one.
    fn take_from_pool(&self) -> bool {
        let pool = &self.central.pool;
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
        self.central.moves.fetch_add(MOVE_STARTED | 1, SeqCst);
        self.central.pool.fetch_add(n as i64, SeqCst);
        self.central.moves.fetch_sub(1, SeqCst);
    }

    /// Moves all but `keep` of `stock` to the pool.
    fn spill(&self, stock: &AtomicU64, keep: u64) {
        self.central.moves.fetch_add(MOVE_STARTED | 1, SeqCst);
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
            self.central.pool.fetch_add(moved as i64, SeqCst);
        }
        self.central.moves.fetch_sub(1, SeqCst);
    }

    /// Empties every stock into the pool while the pool is in debt.
    fn pay_debt_from_stocks(&self) {
        for stock in self.shards.iter() {
            if self.central.pool.load(SeqCst) >= 0 {
                return;
            }
            if count(stock.load(SeqCst)) != 0 {
                self.spill(stock, 0);
            }
        }
    }

    /// The slow path: one permit from the pool or any shard, starting at `home`. Returns
    /// `false` only after a consistent scan found no free permit, or when `patience` ran
    /// out on inconsistent ones (see the module docs).
    #[cold]
    fn take_anywhere(&self, home: usize, patience: Patience) -> bool {
        let shards = self.shards.len();
        let mut seen = [0u64; MAX_SHARDS];
        let mut round = 0;
        while patience.allows(round) {
            if round > 0 {
                patience.back_off(round);
            }
            round = round.saturating_add(1);
            // Stocked permits are owed to a lowered capacity: pay first (these are moves,
            // so before reading `moves`), then take what is left in the pool.
            self.pay_debt_from_stocks();
            let moves = self.central.moves.load(SeqCst);
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
            if settled && stable && self.central.moves.load(SeqCst) == moves {
                return false;
            }
        }
        false
    }

    /// Takes one permit for a call of `site`'s clone: own stock first, then anywhere.
    #[inline]
    fn take_at(&self, site: &Site, patience: Patience) -> bool {
        self.take_from_stock(&site.stock) || self.take_anywhere(site.shard, patience)
    }

    /// The fail-fast path of a service clone: a permit if one is free anywhere.
    #[inline]
    pub(crate) fn try_acquire_at(site: &Arc<Site>) -> Option<Permit> {
        if site
            .permits
            .take_at(site, Patience::Scans(FAIL_FAST_ROUNDS))
        {
            Some(Permit {
                site: Arc::clone(site),
            })
        } else {
            None
        }
    }

    /// Like [`try_acquire_at`](Self::try_acquire_at), but never overtakes a queued waiter.
    /// A `None` sends the caller to [`enqueue`](Self::enqueue), which scans again under
    /// the lock, so one scan is enough here.
    #[inline]
    pub(crate) fn try_acquire_fair_at(site: &Arc<Site>) -> Option<Permit> {
        let permits = &site.permits;
        if permits.central.waiting.load(SeqCst) != 0 {
            return None;
        }
        if permits.take_at(site, Patience::Scans(1)) {
            Some(Permit {
                site: Arc::clone(site),
            })
        } else {
            None
        }
    }

    /// Joins the back of the queue, or is admitted at once if nobody is ahead and a permit
    /// is free.
    pub(crate) fn enqueue(site: &Arc<Site>) -> Result<Permit, QueueTicket> {
        let permits = &site.permits;
        let mut wake = WakeList::default();
        let admitted = {
            let mut queue = permits.queue.lock();
            // Serve those already waiting first: a permit may have been freed between the
            // caller's fast-path attempt and this lock.
            permits.admit_locked(&mut queue, &mut wake);
            if queue.waiters.is_empty()
                && permits.take_anywhere(site.shard, Patience::Scans(ENQUEUE_ROUNDS))
            {
                None
            } else {
                let id = queue.next_id;
                queue.next_id += 1;
                queue.waiters.push_back(Waiter { id, waker: None });
                permits.central.waiting.fetch_add(1, SeqCst);
                // Scan again after publishing `waiting`: a release that read `waiting == 0`
                // before our increment left its permit in a stock or the pool for us.
                permits.admit_locked(&mut queue, &mut wake);
                // Admitted by that scan: the permit is ours already.
                queue.position(id).map(|_| id)
            }
        };
        wake.wake_all();
        match admitted {
            None => Ok(Permit {
                site: Arc::clone(site),
            }),
            Some(id) => Err(QueueTicket {
                site: Some(Arc::clone(site)),
                id,
            }),
        }
    }

    /// Admits waiters from the head of the queue while permits are free anywhere. The
    /// caller holds the queue lock; wakers are collected to be woken after it is released.
    fn admit_locked(&self, queue: &mut WaitQueue, wake: &mut WakeList) {
        while !queue.waiters.is_empty() && self.take_anywhere(0, Patience::UntilConsistent) {
            if let Some(waiter) = queue.waiters.pop_front() {
                self.central.waiting.fetch_sub(1, SeqCst);
                if let Some(waker) = waiter.waker {
                    wake.push(waker);
                }
            }
        }
    }

    /// After returning a permit: if anyone waits, admits from the head.
    #[inline]
    fn serve_queue(&self) {
        if self.central.waiting.load(SeqCst) != 0 {
            self.admit_waiters();
        }
    }

    #[cold]
    fn admit_waiters(&self) {
        let mut wake = WakeList::default();
        {
            let mut queue = self.queue.lock();
            self.admit_locked(&mut queue, &mut wake);
        }
        wake.wake_all();
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
        let share = (self.central.capacity.load(SeqCst) >> self.shard_shift) as u64;
        share.clamp(1, MAX_STOCK / 2) * 2
    }

    /// Removes waiter `id` from the queue; `false` if it was no longer there (admitted).
    fn remove_waiter(&self, id: u64) -> bool {
        let mut queue = self.queue.lock();
        match queue.position(id) {
            Some(at) => {
                queue.waiters.remove(at);
                self.central.waiting.fetch_sub(1, SeqCst);
                true
            }
            None => false,
        }
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
        let free = self.central.pool.load(SeqCst) + stocked;
        let capacity = self.central.capacity.load(SeqCst) as i64;
        (capacity - free).max(0) as usize
    }

    pub(crate) fn capacity(&self) -> usize {
        self.central.capacity.load(SeqCst)
    }

    pub(crate) fn waiting(&self) -> usize {
        self.central.waiting.load(SeqCst)
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
            let previous = self.central.capacity.swap(capacity, SeqCst);
            self.central.moves.fetch_add(MOVE_STARTED | 1, SeqCst);
            self.central
                .pool
                .fetch_add(capacity as i64 - previous as i64, SeqCst);
            self.central.moves.fetch_sub(1, SeqCst);
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

    /// The shard count (tests pick sites on distinct shards with it).
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

/// One service clone's own reference to the shared [`Permits`], and its shard. Admitted
/// calls hold a clone of this `Arc` rather than of the shared one: each service clone's
/// reference count lives on its own cache line, as does its shard's stock.
pub(crate) struct Site {
    pub(crate) permits: Arc<Permits>,
    /// Index of this site's shard in `permits.shards`.
    shard: usize,
    /// That shard's stock.
    stock: Arc<Stock>,
}

impl Site {
    /// A site on the next shard, round-robin.
    pub(crate) fn new(permits: Arc<Permits>) -> Arc<Site> {
        let shard = permits.next_shard.fetch_add(1, SeqCst) & permits.shard_mask;
        let stock = Arc::clone(&permits.shards[shard]);
        Arc::new(Site {
            permits,
            shard,
            stock,
        })
    }
}

/// One admitted call. Dropping it (on completion, cancellation or unwinding) returns the
/// permit to its site's shard, and hands a permit to the head waiter if there is one.
pub(crate) struct Permit {
    site: Arc<Site>,
}

impl Drop for Permit {
    #[inline]
    fn drop(&mut self) {
        self.site.permits.release(&self.site.stock);
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("shard", &self.site.shard)
            .finish()
    }
}

/// A place in the wait queue. Dropping it leaves the queue, or, if a permit was already
/// handed to it, passes that permit on.
pub(crate) struct QueueTicket {
    /// `None` once the ticket has been turned into a permit or cancelled.
    site: Option<Arc<Site>>,
    id: u64,
}

impl QueueTicket {
    /// The permit, if the ticket has been admitted; otherwise registers `cx`'s waker to be
    /// woken on admission.
    pub(crate) fn poll_admitted(&mut self, cx: &Context<'_>) -> Option<Permit> {
        let site = self.site.as_ref()?;
        {
            let mut queue = site.permits.queue.lock();
            if let Some(at) = queue.position(self.id) {
                let slot = &mut queue.waiters[at].waker;
                match slot {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => *slot = Some(cx.waker().clone()),
                }
                return None;
            }
        }
        self.site.take().map(|site| Permit { site })
    }

    /// Gives up waiting (the maximum wait elapsed) and counts the rejection. If a permit
    /// was handed over in the meantime, returns it instead: the call is admitted after all.
    pub(crate) fn give_up(&mut self, waited: std::time::Duration) -> Option<Permit> {
        let site = self.site.take()?;
        if site.permits.remove_waiter(self.id) {
            site.permits.record_rejection(waited);
            None
        } else {
            Some(Permit { site })
        }
    }
}

impl Drop for QueueTicket {
    fn drop(&mut self) {
        if let Some(site) = self.site.take() {
            if !site.permits.remove_waiter(self.id) {
                // Admitted but never used: dropping the permit passes it on.
                drop(Permit { site });
            }
        }
    }
}

impl fmt::Debug for QueueTicket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueTicket").field("id", &self.id).finish()
    }
}

/// Wakers to wake once the queue lock is released: usually one, so the first is kept inline.
#[derive(Default)]
struct WakeList {
    first: Option<Waker>,
    rest: Vec<Waker>,
}

impl WakeList {
    fn push(&mut self, waker: Waker) {
        if self.first.is_none() {
            self.first = Some(waker);
        } else {
            self.rest.push(waker);
        }
    }

    fn wake_all(self) {
        if let Some(w) = self.first {
            w.wake();
        }
        self.rest.into_iter().for_each(Waker::wake);
    }
}

// Built on the real primitives: under `palisade_loom` the atomics only work inside a loom
// model, and the `loom` module below checks the same properties exhaustively instead.
#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use super::*;
    use futures::task::noop_waker;
    use std::time::Duration;

    /// `n` sites on consecutive shards.
    fn sites(p: &Arc<Permits>, n: usize) -> Vec<Arc<Site>> {
        (0..n).map(|_| Site::new(Arc::clone(p))).collect()
    }

    fn one_site(capacity: usize) -> (Arc<Permits>, Arc<Site>) {
        let p = Permits::with_shards(capacity, 4);
        let site = Site::new(Arc::clone(&p));
        (p, site)
    }

    fn stock(p: &Permits, site: &Site) -> u64 {
        count(p.shards[site.shard].load(SeqCst))
    }

    #[test]
    fn sites_are_spread_round_robin_over_a_power_of_two_of_shards() {
        let p = Permits::with_shards(4, 3);
        assert_eq!(p.shard_count(), 4);
        let s = sites(&p, 5);
        let shards: Vec<usize> = s.iter().map(|s| s.shard).collect();
        assert_eq!(shards, [0, 1, 2, 3, 0]);
        assert!(Permits::new(1).shard_count() <= MAX_SHARDS);
    }

    #[test]
    fn try_acquire_stops_at_capacity_and_release_frees() {
        let (p, site) = one_site(2);
        let a = Permits::try_acquire_at(&site).unwrap();
        let _b = Permits::try_acquire_at(&site).unwrap();
        assert!(Permits::try_acquire_at(&site).is_none());
        assert_eq!(p.in_use(), 2);
        drop(a);
        assert_eq!(p.in_use(), 1);
        assert!(Permits::try_acquire_at(&site).is_some());
    }

    #[test]
    fn a_permit_stocked_on_one_shard_is_taken_by_a_clone_on_another() {
        let p = Permits::with_shards(2, 4);
        let s = sites(&p, 2);
        let (a, b) = (&s[0], &s[1]);
        drop(Permits::try_acquire_at(a).unwrap());
        assert_eq!(stock(&p, a), 1, "the released permit stays on A's shard");
        assert_eq!(p.in_use(), 0);
        let first = Permits::try_acquire_at(b).expect("B takes the pool's permit");
        let second = Permits::try_acquire_at(b).expect("B steals the one A stocked");
        assert_eq!(stock(&p, a), 0);
        assert_eq!(p.in_use(), 2);
        assert!(Permits::try_acquire_at(b).is_none());
        assert!(Permits::try_acquire_at(a).is_none());
        drop((first, second));
        assert_eq!(p.in_use(), 0);
        assert_eq!(
            stock(&p, b),
            2,
            "released permits go to the releasing clone's shard"
        );
    }

    #[test]
    fn stealing_empties_every_other_stock_before_rejecting() {
        let p = Permits::with_shards(4, 4);
        let s = sites(&p, 4);
        for site in &s {
            drop(Permits::try_acquire_at(site).unwrap());
            assert_eq!(stock(&p, site), 1);
        }
        let held: Vec<Permit> = (0..4)
            .map(|_| Permits::try_acquire_at(&s[0]).expect("a permit is stocked somewhere"))
            .collect();
        assert!(s.iter().all(|site| stock(&p, site) == 0));
        assert!(Permits::try_acquire_at(&s[0]).is_none());
        assert_eq!(p.in_use(), 4);
        drop(held);
        assert_eq!(p.in_use(), 0);
    }

    #[test]
    fn a_stock_beyond_twice_its_fair_share_spills_to_the_pool() {
        let p = Permits::with_shards(16, 4);
        let s = sites(&p, 2);
        let held: Vec<Permit> = (0..16)
            .map(|_| Permits::try_acquire_at(&s[0]).unwrap())
            .collect();
        drop(held);
        // Fair share 16 / 4 = 4: the stock is kept at or below 8.
        assert!(stock(&p, &s[0]) <= 8, "stock {}", stock(&p, &s[0]));
        assert!(p.central.pool.load(SeqCst) >= 8);
        assert_eq!(p.in_use(), 0);
        // The other clone takes the spilled permits from the pool, then steals the rest.
        let all: Vec<Permit> = (0..16)
            .map(|_| Permits::try_acquire_at(&s[1]).unwrap())
            .collect();
        assert!(Permits::try_acquire_at(&s[1]).is_none());
        drop(all);
    }

    #[test]
    fn shrinking_pays_the_debt_from_stocks_and_admits_nothing_above_the_new_capacity() {
        let p = Permits::with_shards(4, 4);
        let s = sites(&p, 2);
        let (a, b) = (&s[0], &s[1]);
        drop(vec![
            Permits::try_acquire_at(a).unwrap(),
            Permits::try_acquire_at(a).unwrap(),
        ]);
        assert_eq!(stock(&p, a), 2);
        let mut held = vec![
            Permits::try_acquire_at(b).unwrap(),
            Permits::try_acquire_at(b).unwrap(),
        ];
        p.set_capacity(2);
        assert_eq!(stock(&p, a), 0, "idle stock paid the debt");
        assert_eq!(p.in_use(), 2);
        assert!(Permits::try_acquire_at(a).is_none());
        held.pop();
        assert_eq!(p.in_use(), 1);
        held.push(Permits::try_acquire_at(a).expect("one below the new capacity"));
        assert!(Permits::try_acquire_at(a).is_none());
        assert!(Permits::try_acquire_at(b).is_none());
        drop(held);
        assert_eq!(p.in_use(), 0);
    }

    #[test]
    fn a_permit_stocked_while_the_pool_is_in_debt_pays_the_debt_instead_of_admitting() {
        let (p, site) = one_site(3);
        let mut held: Vec<Permit> = (0..3)
            .map(|_| Permits::try_acquire_at(&site).unwrap())
            .collect();
        p.set_capacity(1);
        assert_eq!(p.in_use(), 3);
        held.pop();
        assert_eq!(stock(&p, &site), 1);
        assert_eq!(p.in_use(), 2);
        assert!(
            Permits::try_acquire_at(&site).is_none(),
            "2 held, capacity 1"
        );
        assert_eq!(p.in_use(), 2);
        held.pop();
        assert!(
            Permits::try_acquire_at(&site).is_none(),
            "1 held, capacity 1"
        );
        assert_eq!(p.in_use(), 1);
        held.pop();
        assert_eq!(p.in_use(), 0);
        let one = Permits::try_acquire_at(&site).expect("below the capacity again");
        assert!(Permits::try_acquire_at(&site).is_none());
        drop(one);
    }

    #[test]
    fn a_move_in_flight_defers_rejections_but_not_admissions() {
        let p = Permits::with_shards(2, 4);
        let s = sites(&p, 2);
        drop(Permits::try_acquire_at(&s[0]).unwrap());
        // Another thread is, say, halfway through spilling a stock to the pool.
        p.central.moves.fetch_add(MOVE_STARTED | 1, SeqCst);
        let a = Permits::try_acquire_at(&s[1]).expect("from the pool");
        let b = Permits::try_acquire_at(&s[1]).expect("stolen from shard 0");
        // No consistent scan is possible while the move is in flight: the fail-fast call
        // rejects once its patience runs out.
        assert!(!p.take_anywhere(1, Patience::Scans(3)));
        p.central.moves.fetch_sub(1, SeqCst);
        assert!(!p.take_anywhere(1, Patience::UntilConsistent));
        drop((a, b));
        assert_eq!(p.in_use(), 0);
    }

    #[test]
    fn release_hands_permit_to_head_waiter_in_fifo_order() {
        let (p, site) = one_site(1);
        let held = Permits::try_acquire_at(&site).unwrap();
        let mut first = Permits::enqueue(&site).unwrap_err();
        let mut second = Permits::enqueue(&site).unwrap_err();
        assert_eq!(p.waiting(), 2);
        // A fair arrival does not overtake the queue.
        assert!(Permits::try_acquire_fair_at(&site).is_none());

        let waker = noop_waker();
        let cx = Context::from_waker(&waker);
        assert!(first.poll_admitted(&cx).is_none());
        drop(held);
        assert_eq!(p.in_use(), 1, "the freed permit went to the head waiter");
        assert_eq!(p.waiting(), 1);
        assert!(second.poll_admitted(&cx).is_none());
        let permit = first.poll_admitted(&cx).expect("head admitted");
        drop(permit);
        assert!(second.poll_admitted(&cx).is_some());
    }

    #[test]
    fn a_waiter_is_admitted_with_a_permit_stocked_on_another_shard() {
        let p = Permits::with_shards(2, 4);
        let s = sites(&p, 2);
        let a = Permits::try_acquire_at(&s[0]).unwrap();
        let b = Permits::try_acquire_at(&s[0]).unwrap();
        let mut waiter = Permits::enqueue(&s[1]).unwrap_err();
        drop(a); // released on shard 0 while someone waits: goes to the waiter
        assert_eq!(stock(&p, &s[0]), 0);
        let waker = noop_waker();
        let permit = waiter
            .poll_admitted(&Context::from_waker(&waker))
            .expect("admitted");
        drop(b);
        // Nobody waits: the permit is stocked, and a new arrival on another shard finds it.
        assert_eq!(stock(&p, &s[0]), 1);
        let again = Permits::enqueue(&s[1]).expect("admitted at once from shard 0's stock");
        drop((permit, again));
        assert_eq!(p.in_use(), 0);
    }

    #[test]
    fn dropping_an_admitted_ticket_passes_the_permit_on() {
        let (p, site) = one_site(1);
        let held = Permits::try_acquire_at(&site).unwrap();
        let first = Permits::enqueue(&site).unwrap_err();
        let mut second = Permits::enqueue(&site).unwrap_err();
        drop(held); // admits `first`, which never polls again
        drop(first); // passes it to `second`
        let waker = noop_waker();
        assert!(second.poll_admitted(&Context::from_waker(&waker)).is_some());
        assert_eq!(p.waiting(), 0);
    }

    #[test]
    fn giving_up_a_queued_ticket_leaves_the_queue_and_counts_a_rejection() {
        let (p, site) = one_site(1);
        let _held = Permits::try_acquire_at(&site).unwrap();
        let mut t = Permits::enqueue(&site).unwrap_err();
        assert!(t.give_up(Duration::from_millis(1)).is_none());
        assert_eq!(p.waiting(), 0);
        assert_eq!(p.rejected(), 1);
        assert_eq!(p.in_use(), 1);
    }

    #[test]
    fn giving_up_after_admission_returns_the_permit_instead_of_rejecting() {
        let (p, site) = one_site(1);
        let held = Permits::try_acquire_at(&site).unwrap();
        let mut t = Permits::enqueue(&site).unwrap_err();
        drop(held);
        let permit = t
            .give_up(Duration::ZERO)
            .expect("admitted before giving up");
        assert_eq!(p.rejected(), 0);
        assert_eq!(p.in_use(), 1);
        drop(permit);
        assert_eq!(p.in_use(), 0);
    }

    #[test]
    fn enqueue_admits_at_once_when_nobody_waits_and_a_permit_is_free() {
        let (p, site) = one_site(1);
        let admitted = Permits::enqueue(&site);
        assert!(admitted.is_ok());
        assert_eq!(p.in_use(), 1);
        drop(admitted);
        assert_eq!(p.in_use(), 0);
    }

    #[test]
    fn growing_capacity_admits_waiters_and_shrinking_waits_for_releases() {
        let (p, site) = one_site(1);
        let a = Permits::try_acquire_at(&site).unwrap();
        let mut w = Permits::enqueue(&site).unwrap_err();
        p.set_capacity(2);
        let waker = noop_waker();
        let b = w.poll_admitted(&Context::from_waker(&waker)).unwrap();
        p.set_capacity(1);
        assert_eq!(p.in_use(), 2);
        drop(a);
        assert!(
            Permits::try_acquire_at(&site).is_none(),
            "still at the new capacity"
        );
        drop(b);
        assert!(Permits::try_acquire_at(&site).is_some());
    }

    mod model {
        //! The permits against a plain FIFO model, over random sequences of operations by
        //! clones on different shards: the exactness rule (admit iff below capacity) must
        //! hold wherever the free permits are stocked.

        use super::*;
        use futures::task::{waker, ArcWake};
        use proptest::prelude::*;
        use std::collections::HashSet;
        use std::sync::atomic::AtomicBool;

        #[derive(Debug, Clone)]
        enum Op {
            Acquire(usize),
            AcquireFailFast(usize),
            Enqueue(usize),
            Release(usize),
            Poll(usize),
            GiveUp(usize),
            DropTicket(usize),
            SetCapacity(usize),
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                1 => any::<usize>().prop_map(Op::Acquire),
                1 => any::<usize>().prop_map(Op::AcquireFailFast),
                3 => any::<usize>().prop_map(Op::Enqueue),
                3 => any::<usize>().prop_map(Op::Release),
                2 => any::<usize>().prop_map(Op::Poll),
                1 => any::<usize>().prop_map(Op::GiveUp),
                1 => any::<usize>().prop_map(Op::DropTicket),
                1 => (1usize..6).prop_map(Op::SetCapacity),
            ]
        }

        struct Flag(AtomicBool);

        impl ArcWake for Flag {
            fn wake_by_ref(arc_self: &Arc<Self>) {
                arc_self.0.store(true, SeqCst);
            }
        }

        struct Model {
            capacity: usize,
            in_use: usize,
            rejected: u64,
            queue: VecDeque<u64>,
            admitted: HashSet<u64>,
        }

        impl Model {
            fn admit(&mut self) {
                while self.in_use < self.capacity {
                    let Some(id) = self.queue.pop_front() else {
                        break;
                    };
                    self.admitted.insert(id);
                    self.in_use += 1;
                }
            }
        }

        struct Waiting {
            id: u64,
            ticket: QueueTicket,
            flag: Arc<Flag>,
            registered: bool,
        }

        proptest! {
            #[test]
            fn permits_follow_the_fifo_model(
                capacity in 1usize..5,
                shards in 1usize..5,
                ops in proptest::collection::vec(op(), 1..100),
            ) {
                let p = Permits::with_shards(capacity, shards);
                let clones = sites(&p, 3);
                let mut m = Model {
                    capacity,
                    in_use: 0,
                    rejected: 0,
                    queue: VecDeque::new(),
                    admitted: HashSet::new(),
                };
                let mut held: Vec<Permit> = Vec::new();
                let mut waiting: Vec<Waiting> = Vec::new();
                let mut next_id = 0u64;

                for op in ops {
                    match op {
                        Op::Acquire(c) => {
                            let expect = m.queue.is_empty() && m.in_use < m.capacity;
                            let got = Permits::try_acquire_fair_at(&clones[c % 3]);
                            prop_assert_eq!(got.is_some(), expect);
                            if let Some(permit) = got {
                                m.in_use += 1;
                                held.push(permit);
                            }
                        }
                        Op::AcquireFailFast(c) => {
                            let got = Permits::try_acquire_at(&clones[c % 3]);
                            prop_assert_eq!(got.is_some(), m.in_use < m.capacity);
                            if let Some(permit) = got {
                                m.in_use += 1;
                                held.push(permit);
                            }
                        }
                        Op::Enqueue(c) => match Permits::enqueue(&clones[c % 3]) {
                            Ok(permit) => {
                                prop_assert!(m.queue.is_empty() && m.in_use < m.capacity);
                                m.in_use += 1;
                                held.push(permit);
                            }
                            Err(ticket) => {
                                prop_assert!(!(m.queue.is_empty() && m.in_use < m.capacity));
                                m.queue.push_back(next_id);
                                waiting.push(Waiting {
                                    id: next_id,
                                    ticket,
                                    flag: Arc::new(Flag(AtomicBool::new(false))),
                                    registered: false,
                                });
                                next_id += 1;
                            }
                        },
                        Op::Release(i) if !held.is_empty() => {
                            drop(held.swap_remove(i % held.len()));
                            m.in_use -= 1;
                            m.admit();
                        }
                        Op::Poll(i) if !waiting.is_empty() => {
                            let at = i % waiting.len();
                            let w = &mut waiting[at];
                            let wk = waker(w.flag.clone());
                            let got = w.ticket.poll_admitted(&Context::from_waker(&wk));
                            prop_assert_eq!(got.is_some(), m.admitted.contains(&w.id));
                            match got {
                                Some(permit) => {
                                    m.admitted.remove(&w.id);
                                    held.push(permit);
                                    waiting.swap_remove(at);
                                }
                                None => w.registered = true,
                            }
                        }
                        Op::GiveUp(i) if !waiting.is_empty() => {
                            let mut w = waiting.swap_remove(i % waiting.len());
                            let got = w.ticket.give_up(Duration::ZERO);
                            if m.admitted.remove(&w.id) {
                                prop_assert!(got.is_some());
                                held.extend(got);
                            } else {
                                prop_assert!(got.is_none());
                                m.queue.retain(|&id| id != w.id);
                                m.rejected += 1;
                            }
                        }
                        Op::DropTicket(i) if !waiting.is_empty() => {
                            let w = waiting.swap_remove(i % waiting.len());
                            drop(w.ticket);
                            if m.admitted.remove(&w.id) {
                                m.in_use -= 1;
                                m.admit();
                            } else {
                                m.queue.retain(|&id| id != w.id);
                            }
                        }
                        Op::SetCapacity(n) => {
                            p.set_capacity(n);
                            m.capacity = n;
                            m.admit();
                        }
                        _ => {}
                    }
                    prop_assert_eq!(p.in_use(), m.in_use);
                    prop_assert_eq!(p.waiting(), m.queue.len());
                    prop_assert_eq!(p.rejected(), m.rejected);
                    for w in &waiting {
                        if w.registered && m.admitted.contains(&w.id) {
                            prop_assert!(w.flag.0.load(SeqCst), "admitted waiter {} was not woken", w.id);
                        }
                    }
                }
                drop(waiting);
                drop(held);
                prop_assert_eq!(p.in_use(), 0);
                prop_assert_eq!(p.waiting(), 0);
            }
        }
    }

    mod threads {
        //! Many threads acquiring, releasing and cancelling on their own clones of a small
        //! bulkhead: the limit holds at every instant, and quiescent states are exact.

        use super::*;
        use rand::rngs::SmallRng;
        use rand::{Rng, SeedableRng};
        use std::sync::Barrier;

        const THREADS: usize = 4;

        /// Counts permits held, independently of `Permits`, and records the maximum.
        #[derive(Default)]
        struct Held {
            now: AtomicUsize,
            max: AtomicUsize,
        }

        impl Held {
            fn enter(&self) {
                let now = self.now.fetch_add(1, SeqCst) + 1;
                self.max.fetch_max(now, SeqCst);
            }

            fn leave(&self) {
                self.now.fetch_sub(1, SeqCst);
            }
        }

        fn hammer(capacity: usize, shards: usize, queued: bool, seed: u64) {
            let p = Permits::with_shards(capacity, shards);
            let held = Arc::new(Held::default());
            let barrier = Arc::new(Barrier::new(THREADS));
            let failures = Arc::new(Mutex::new(Vec::<String>::new()));
            let rounds = 40;
            let handles: Vec<_> = (0..THREADS)
                .map(|t| {
                    let site = Site::new(Arc::clone(&p));
                    let (p, held, barrier) =
                        (Arc::clone(&p), Arc::clone(&held), Arc::clone(&barrier));
                    let failures = Arc::clone(&failures);
                    std::thread::spawn(move || {
                        let mut rng = SmallRng::seed_from_u64(seed ^ (t as u64) << 32);
                        let waker = noop_waker();
                        let cx = Context::from_waker(&waker);
                        let mut mine: Vec<Permit> = Vec::new();
                        let mut tickets: Vec<QueueTicket> = Vec::new();
                        for round in 0..rounds {
                            for _ in 0..500 {
                                match rng.random_range(0..6) {
                                    0 | 1 => {
                                        let got = if queued {
                                            match Permits::try_acquire_fair_at(&site) {
                                                Some(permit) => Some(permit),
                                                None => match Permits::enqueue(&site) {
                                                    Ok(permit) => Some(permit),
                                                    Err(ticket) => {
                                                        tickets.push(ticket);
                                                        None
                                                    }
                                                },
                                            }
                                        } else {
                                            Permits::try_acquire_at(&site)
                                        };
                                        if let Some(permit) = got {
                                            held.enter();
                                            mine.push(permit);
                                        }
                                    }
                                    2 | 3 if !mine.is_empty() => {
                                        let at = rng.random_range(0..mine.len());
                                        held.leave();
                                        drop(mine.swap_remove(at));
                                    }
                                    4 if !tickets.is_empty() => {
                                        let at = rng.random_range(0..tickets.len());
                                        if let Some(permit) = tickets[at].poll_admitted(&cx) {
                                            held.enter();
                                            mine.push(permit);
                                            drop(tickets.swap_remove(at));
                                        }
                                    }
                                    5 if !tickets.is_empty() => {
                                        // Cancel: leaves the queue or passes the permit on.
                                        let at = rng.random_range(0..tickets.len());
                                        drop(tickets.swap_remove(at));
                                    }
                                    _ => {}
                                }
                            }
                            // Quiescent check: everyone stops; thread 0 checks the books.
                            let keep = rng.random_range(0..=mine.len());
                            while mine.len() > keep {
                                held.leave();
                                mine.pop();
                            }
                            barrier.wait();
                            // Nothing is released now: collect the tickets admitted so far.
                            let mut at = 0;
                            while at < tickets.len() {
                                if let Some(permit) = tickets[at].poll_admitted(&cx) {
                                    held.enter();
                                    mine.push(permit);
                                    drop(tickets.swap_remove(at));
                                } else {
                                    at += 1;
                                }
                            }
                            barrier.wait();
                            if t == 0 {
                                // Failures are recorded, not asserted: a panic here would
                                // leave the other threads waiting at the barrier forever.
                                let fail = |what: String| {
                                    failures.lock().push(format!("round {round}: {what}"))
                                };
                                let now = held.now.load(SeqCst);
                                let in_use = p.in_use();
                                if in_use != now {
                                    fail(format!("{in_use} in use, {now} held"));
                                }
                                if p.waiting() != 0 && in_use != capacity {
                                    fail(format!(
                                        "a waiter waits while {in_use} of {capacity} are in use"
                                    ));
                                }
                                if in_use < capacity
                                    && p.waiting() == 0
                                    && Permits::try_acquire_at(&site).is_none()
                                {
                                    fail(format!("{in_use} of {capacity} in use, yet rejected"));
                                }
                            }
                            barrier.wait();
                        }
                        drop(tickets);
                        for permit in mine {
                            held.leave();
                            drop(permit);
                        }
                    })
                })
                .collect();
            for h in handles {
                h.join().expect("thread");
            }
            assert_eq!(failures.lock().as_slice(), &[] as &[String]);
            assert!(
                held.max.load(SeqCst) <= capacity,
                "max held {}",
                held.max.load(SeqCst)
            );
            assert_eq!(held.now.load(SeqCst), 0);
            assert_eq!(p.in_use(), 0);
            assert_eq!(p.waiting(), 0);
            // Every permit is back and reachable from one clone.
            let site = Site::new(Arc::clone(&p));
            let all: Vec<Permit> = (0..capacity)
                .map(|_| Permits::try_acquire_at(&site).expect("all permits back"))
                .collect();
            assert!(Permits::try_acquire_at(&site).is_none());
            drop(all);
        }

        #[test]
        fn fail_fast_threads_never_exceed_the_capacity_and_return_every_permit() {
            for (capacity, seed) in [(1, 1), (2, 2), (3, 3), (5, 4)] {
                hammer(capacity, 4, false, seed);
            }
        }

        #[test]
        fn queued_threads_never_exceed_the_capacity_and_leave_no_permit_idle_while_waiting() {
            for (capacity, seed) in [(1, 11), (2, 12), (3, 13)] {
                hammer(capacity, 4, true, seed);
            }
        }
    }
}

/// Model checking with [loom](https://docs.rs/loom): every interleaving (up to loom's
/// preemption bound) of a few threads on their own shards, over small capacities. Run with
///
/// ```text
/// RUSTFLAGS="--cfg palisade_loom" LOOM_MAX_PREEMPTIONS=2 \
///     cargo test --release --target-dir target/loom --lib bulkhead::permits::loom
/// ```
///
/// (a separate target directory, so the normal build's cache is kept). Under the cfg the
/// permits' atomics and mutex are loom's (see `bulkhead::sync`); without
/// `LOOM_MAX_PREEMPTIONS` these tests use a bound of 2.
///
/// The tests' own bookkeeping reads loom atomics with read-modify-writes (`fetch_add(0)`),
/// which always see the latest value: loom lets a `SeqCst` load read a stale value that a
/// real `SeqCst` load could not, and the checks must not fail on such executions.
#[cfg(all(test, palisade_loom))]
mod loom {
    use super::*;
    use ::loom::sync::atomic::{AtomicBool, AtomicUsize as ModelUsize};
    use ::loom::thread;
    use futures::task::{waker, ArcWake};

    /// Runs `test` in every interleaving loom explores.
    fn check(test: impl Fn() + Sync + Send + 'static) {
        let mut builder = ::loom::model::Builder::new();
        if builder.preemption_bound.is_none() {
            builder.preemption_bound = Some(2);
        }
        // A call that meets a move in flight backs off by yielding, a branch each time.
        if std::env::var_os("LOOM_MAX_BRANCHES").is_none() {
            builder.max_branches = 20_000;
        }
        builder.check(test);
    }

    /// The latest value of a test atomic (a read-modify-write: see the module docs).
    fn latest(a: &ModelUsize) -> usize {
        a.fetch_add(0, SeqCst)
    }

    /// Permits held, counted by the test (from just after an admission to just before its
    /// release, so never more than the real number): asserts it never exceeds `limit`.
    struct Held(ModelUsize);

    impl Held {
        fn new() -> Arc<Held> {
            Arc::new(Held(ModelUsize::new(0)))
        }

        fn enter(&self, limit: usize) {
            let now = self.0.fetch_add(1, SeqCst) + 1;
            assert!(now <= limit, "{now} permits held, limit {limit}");
        }

        fn leave(&self) {
            self.0.fetch_sub(1, SeqCst);
        }
    }

    /// `n` sites, each on its own shard.
    fn sites(p: &Arc<Permits>, n: usize) -> Vec<Arc<Site>> {
        assert!(p.shard_count() >= n);
        (0..n).map(|_| Site::new(Arc::clone(p))).collect()
    }

    /// After the threads are done: nothing held, nobody waiting, and exactly `capacity`
    /// permits to be had from one site.
    fn assert_all_back(p: &Arc<Permits>, capacity: usize) {
        assert_eq!(p.in_use(), 0);
        assert_eq!(p.waiting(), 0);
        let site = Site::new(Arc::clone(p));
        let all: Vec<Permit> = (0..capacity)
            .map(|_| Permits::try_acquire_at(&site).expect("every permit is back"))
            .collect();
        assert!(
            Permits::try_acquire_at(&site).is_none(),
            "more than the capacity"
        );
        drop(all);
    }

    /// Each of `threads` threads, on its own shard, acquires and releases `rounds` times.
    /// With at least as many permits as threads no acquisition may fail (each thread holds
    /// at most one at a time, so a permit is always free).
    fn own_shards(capacity: usize, threads: usize, rounds: usize) {
        check(move || {
            let p = Permits::with_shards(capacity, threads);
            let held = Held::new();
            let handles: Vec<_> = sites(&p, threads)
                .into_iter()
                .map(|site| {
                    let held = Arc::clone(&held);
                    thread::spawn(move || {
                        for _ in 0..rounds {
                            match Permits::try_acquire_at(&site) {
                                Some(permit) => {
                                    held.enter(capacity);
                                    held.leave();
                                    drop(permit);
                                }
                                None => assert!(capacity < threads, "rejected with a permit free"),
                            }
                        }
                    })
                })
                .collect();
            handles.into_iter().for_each(|h| h.join().expect("thread"));
            assert_all_back(&p, capacity);
        });
    }

    #[test]
    fn two_threads_capacity_one_never_hold_more_and_return_every_permit() {
        own_shards(1, 2, 2);
    }

    #[test]
    fn two_threads_capacity_two_are_never_rejected_and_return_every_permit() {
        own_shards(2, 2, 2);
    }

    #[test]
    fn three_threads_capacity_one_never_hold_more_and_return_every_permit() {
        own_shards(1, 3, 1);
    }

    #[test]
    fn three_threads_capacity_two_never_hold_more_and_return_every_permit() {
        own_shards(2, 3, 1);
    }

    /// A stock above its limit spills to the pool while the other thread steals from it.
    #[test]
    fn spilling_a_stock_races_with_stealing_and_loses_no_permit() {
        check(|| {
            // Capacity 3 over 4 shards: a stock may keep 2 permits.
            let p = Permits::with_shards(3, 4);
            let s = sites(&p, 2);
            let held = Held::new();
            // All three permits end up stocked on shard 0, to be spilled on the next release.
            let three: Vec<Permit> = (0..3)
                .map(|_| Permits::try_acquire_at(&s[0]).expect("free"))
                .collect();
            let mut three = three.into_iter();
            drop(three.next());
            drop(three.next());
            let last = three.next().expect("third");
            let releaser = {
                let held = Arc::clone(&held);
                thread::spawn(move || {
                    held.enter(3);
                    held.leave();
                    drop(last); // three in the stock: spills one
                })
            };
            let site = Arc::clone(&s[1]);
            let stealer = {
                let held = Arc::clone(&held);
                thread::spawn(move || {
                    let permit = Permits::try_acquire_at(&site).expect("two are always free");
                    held.enter(3);
                    held.leave();
                    drop(permit);
                })
            };
            releaser.join().expect("releaser");
            stealer.join().expect("stealer");
            assert_all_back(&p, 3);
        });
    }

    /// One fail-fast call of one of two threads, where the capacity never goes below 1, so
    /// a rejection is right only while the other thread holds a permit: publishes its
    /// phase (1 before acquiring, 2 once its permit is back), asserts at most `limit` held,
    /// and returns whether it was admitted.
    fn take_once(
        site: &Arc<Site>,
        me: &ModelUsize,
        other: &ModelUsize,
        held: &Held,
        limit: usize,
    ) -> bool {
        me.fetch_add(1, SeqCst);
        let before = latest(other);
        let got = Permits::try_acquire_at(site);
        let after = latest(other);
        let admitted = got.is_some();
        match got {
            Some(permit) => {
                held.enter(limit);
                held.leave();
                drop(permit);
            }
            // The other thread held the permit at some instant of the call: so it had not
            // given it back when the call began, and had begun taking it when it ended.
            None => assert!(
                before < 2 && after >= 1,
                "rejected while the other thread was {before} before and {after} after"
            ),
        }
        me.fetch_add(1, SeqCst);
        admitted
    }

    /// Capacity 1, two threads on their own shards, the permit starting in the pool or in
    /// either stock: a rejection is only ever returned while the other thread held it.
    #[test]
    fn a_fail_fast_rejection_means_the_other_held_the_only_permit() {
        for start in [None, Some(0), Some(1)] {
            check(move || {
                let p = Permits::with_shards(1, 2);
                let s = sites(&p, 2);
                if let Some(shard) = start {
                    // Leave the permit in that shard's stock (stealing is then needed).
                    drop(Permits::try_acquire_at(&s[shard]).expect("free"));
                }
                let phases = Arc::new([ModelUsize::new(0), ModelUsize::new(0)]);
                let held = Held::new();
                let handles: Vec<_> = (0..2)
                    .map(|me| {
                        let (site, phases, held) =
                            (Arc::clone(&s[me]), Arc::clone(&phases), Arc::clone(&held));
                        thread::spawn(move || {
                            take_once(&site, &phases[me], &phases[1 - me], &held, 1)
                        })
                    })
                    .collect();
                let admitted: Vec<bool> = handles
                    .into_iter()
                    .map(|h| h.join().expect("thread"))
                    .collect();
                assert!(admitted.contains(&true), "both rejected, nobody held it");
                assert_all_back(&p, 1);
            });
        }
    }

    /// A waker that raises a flag.
    struct Flag(AtomicBool);

    impl ArcWake for Flag {
        fn wake_by_ref(flag: &Arc<Self>) {
            flag.0.store(true, SeqCst);
        }
    }

    /// A waiting call from `site`, as the bulkhead's service makes it: the fair fast path,
    /// else the queue, then a first poll registering `flag`'s waker. Returns the permit if
    /// admitted by then, else the ticket.
    fn wait_for_permit(site: &Arc<Site>, flag: &Arc<Flag>) -> Result<Permit, QueueTicket> {
        if let Some(permit) = Permits::try_acquire_fair_at(site) {
            return Ok(permit);
        }
        let mut ticket = match Permits::enqueue(site) {
            Ok(permit) => return Ok(permit),
            Err(ticket) => ticket,
        };
        let waker = waker(Arc::clone(flag));
        match ticket.poll_admitted(&Context::from_waker(&waker)) {
            Some(permit) => Ok(permit),
            None => Err(ticket),
        }
    }

    /// A ticket left waiting must be admitted and its waker woken once the permit is back.
    fn assert_admitted_and_woken(mut ticket: QueueTicket, flag: &Flag) -> Permit {
        assert!(
            flag.0.load(SeqCst),
            "lost wake-up: the waiter was never woken"
        );
        let waker = futures::task::noop_waker();
        ticket
            .poll_admitted(&Context::from_waker(&waker))
            .expect("woken but not admitted")
    }

    /// Capacity 1: one thread releases the only permit (from its own shard) while another,
    /// on another shard, starts waiting for it. However they interleave, the waiter ends
    /// up admitted, and woken if it had gone to sleep.
    #[test]
    fn a_waiter_racing_a_release_is_always_admitted_and_woken() {
        check(|| {
            let p = Permits::with_shards(1, 2);
            let s = sites(&p, 2);
            let permit = Permits::try_acquire_at(&s[0]).expect("free");
            let releaser = thread::spawn(move || drop(permit));
            let flag = Arc::new(Flag(AtomicBool::new(false)));
            let waiter = {
                let (site, flag) = (Arc::clone(&s[1]), Arc::clone(&flag));
                thread::spawn(move || wait_for_permit(&site, &flag))
            };
            releaser.join().expect("releaser");
            let permit = match waiter.join().expect("waiter") {
                Ok(permit) => permit,
                Err(ticket) => assert_admitted_and_woken(ticket, &flag),
            };
            assert_eq!(p.in_use(), 1);
            assert_eq!(p.waiting(), 0);
            drop(permit);
            assert_all_back(&p, 1);
        });
    }

    /// Capacity 1, free: one thread takes the permit and gives it back (fail-fast, on its
    /// own shard) while another starts waiting for it. The waiter is never left waiting
    /// with the permit free: admitted at once, or admitted and woken by the release.
    #[test]
    fn a_waiter_racing_an_acquire_and_release_is_never_left_waiting() {
        check(|| {
            let p = Permits::with_shards(1, 2);
            let s = sites(&p, 2);
            let churner = {
                let site = Arc::clone(&s[0]);
                thread::spawn(move || drop(Permits::try_acquire_at(&site)))
            };
            let flag = Arc::new(Flag(AtomicBool::new(false)));
            let waiter = {
                let (site, flag) = (Arc::clone(&s[1]), Arc::clone(&flag));
                thread::spawn(move || wait_for_permit(&site, &flag))
            };
            churner.join().expect("churner");
            let permit = match waiter.join().expect("waiter") {
                Ok(permit) => permit,
                Err(ticket) => assert_admitted_and_woken(ticket, &flag),
            };
            assert_eq!((p.in_use(), p.waiting()), (1, 0));
            drop(permit);
            assert_all_back(&p, 1);
        });
    }

    /// Capacity 1: two waiters on their own shards race one release. Exactly one is
    /// admitted (and woken if asleep); the other still waits, in line, with the permit
    /// held, and is admitted when the first is done.
    #[test]
    fn two_waiters_racing_a_release_admit_exactly_one() {
        check(|| {
            let p = Permits::with_shards(1, 4);
            let s = sites(&p, 3);
            let permit = Permits::try_acquire_at(&s[0]).expect("free");
            let releaser = thread::spawn(move || drop(permit));
            let flags: Vec<Arc<Flag>> = (0..2)
                .map(|_| Arc::new(Flag(AtomicBool::new(false))))
                .collect();
            let waiters: Vec<_> = (0..2)
                .map(|i| {
                    let (site, flag) = (Arc::clone(&s[i + 1]), Arc::clone(&flags[i]));
                    thread::spawn(move || wait_for_permit(&site, &flag))
                })
                .collect();
            releaser.join().expect("releaser");
            let outcomes: Vec<_> = waiters
                .into_iter()
                .map(|w| w.join().expect("waiter"))
                .collect();
            assert_eq!(p.in_use(), 1);
            assert_eq!(p.waiting(), 1, "exactly one still waits");
            let mut permits = Vec::new();
            let mut tickets = Vec::new();
            for (i, outcome) in outcomes.into_iter().enumerate() {
                match outcome {
                    Ok(permit) => permits.push(permit),
                    Err(mut ticket) => {
                        let waker = waker(Arc::clone(&flags[i]));
                        match ticket.poll_admitted(&Context::from_waker(&waker)) {
                            Some(permit) => {
                                assert!(flags[i].0.load(SeqCst), "admitted asleep, not woken");
                                permits.push(permit);
                            }
                            None => tickets.push((i, ticket)),
                        }
                    }
                }
            }
            assert_eq!((permits.len(), tickets.len()), (1, 1));
            drop(permits);
            let (i, ticket) = tickets.pop().expect("one waits");
            drop(assert_admitted_and_woken(ticket, &flags[i]));
            assert_all_back(&p, 1);
        });
    }

    /// Capacity 1: a waiter cancels (drops its ticket) while the permit is released. The
    /// permit is neither lost nor left with the cancelled ticket.
    #[test]
    fn a_cancelled_waiter_racing_a_release_loses_no_permit() {
        check(|| {
            let p = Permits::with_shards(1, 2);
            let s = sites(&p, 2);
            let permit = Permits::try_acquire_at(&s[0]).expect("free");
            let ticket = Permits::enqueue(&s[1]).expect_err("the permit is held");
            let releaser = thread::spawn(move || drop(permit));
            let canceller = thread::spawn(move || drop(ticket));
            releaser.join().expect("releaser");
            canceller.join().expect("canceller");
            assert_all_back(&p, 1);
        });
    }

    /// Capacity 2 with both permits stocked on the two threads' shards, lowered to 1 while
    /// both threads acquire and release: never more than 2 held, never more than 1 by
    /// acquisitions that began after the change returned, and a rejection only while the
    /// other thread held a permit (the permits moved to pay the debt are in transit, not
    /// gone). Afterwards exactly 1 permit.
    #[test]
    fn lowering_the_capacity_under_acquires_never_exceeds_either_capacity() {
        check(|| {
            let p = Permits::with_shards(2, 2);
            let s = sites(&p, 2);
            // One permit stocked on each shard: the debt is paid from the stocks.
            let both: Vec<Permit> = s
                .iter()
                .map(|site| Permits::try_acquire_at(site).expect("free"))
                .collect();
            drop(both);
            let held = Held::new();
            let lowered = Arc::new(ModelUsize::new(0));
            let phases = Arc::new([ModelUsize::new(0), ModelUsize::new(0)]);
            let handles: Vec<_> = (0..2)
                .map(|me| {
                    let (site, held, lowered, phases) = (
                        Arc::clone(&s[me]),
                        Arc::clone(&held),
                        Arc::clone(&lowered),
                        Arc::clone(&phases),
                    );
                    thread::spawn(move || {
                        let limit = if latest(&lowered) == 1 { 1 } else { 2 };
                        take_once(&site, &phases[me], &phases[1 - me], &held, limit);
                    })
                })
                .collect();
            p.set_capacity(1);
            lowered.fetch_add(1, SeqCst);
            handles.into_iter().for_each(|h| h.join().expect("thread"));
            assert_eq!(p.capacity(), 1);
            assert_all_back(&p, 1);
        });
    }

    /// Capacity 2 lowered to 1 while both permits are held: the debt outlives the change.
    /// One holder releases while a new call tries its luck, on the releaser's shard (its
    /// stock) or on a third one (stealing): the released permit pays the debt, and the new
    /// call is refused whatever the interleaving, since the other holder still holds the
    /// one permit the capacity allows.
    #[test]
    fn a_permit_released_into_a_debt_pays_it_and_admits_nobody() {
        for caller in [0, 2] {
            check(move || {
                let p = Permits::with_shards(2, 4);
                let s = sites(&p, 3);
                let first = Permits::try_acquire_at(&s[0]).expect("free");
                let second = Permits::try_acquire_at(&s[1]).expect("free");
                p.set_capacity(1);
                let releaser = thread::spawn(move || drop(first));
                let site = Arc::clone(&s[caller]);
                let newcomer = thread::spawn(move || Permits::try_acquire_at(&site).is_none());
                releaser.join().expect("releaser");
                assert!(
                    newcomer.join().expect("newcomer"),
                    "admitted above the capacity"
                );
                assert_eq!(p.in_use(), 1);
                drop(second);
                assert_all_back(&p, 1);
            });
        }
    }

    /// Capacity 2, both permits held, one waiter asleep. One holder releases while the
    /// capacity is lowered to 1: the waiter is admitted by the release only if that came
    /// first (2 held, the old capacity), and otherwise waits, the released permit paying
    /// the debt; once the other holder releases too, it is admitted and woken either way.
    #[test]
    fn a_waiter_racing_a_release_and_a_lowering_is_admitted_once_there_is_room() {
        check(|| {
            let p = Permits::with_shards(2, 4);
            let s = sites(&p, 3);
            let first = Permits::try_acquire_at(&s[0]).expect("free");
            let second = Permits::try_acquire_at(&s[1]).expect("free");
            let flag = Arc::new(Flag(AtomicBool::new(false)));
            let mut ticket = Permits::enqueue(&s[2]).expect_err("both permits are held");
            assert!(ticket
                .poll_admitted(&Context::from_waker(&waker(Arc::clone(&flag))))
                .is_none());
            let releaser = thread::spawn(move || drop(first));
            let lowerer = {
                let p = Arc::clone(&p);
                thread::spawn(move || p.set_capacity(1))
            };
            releaser.join().expect("releaser");
            lowerer.join().expect("lowerer");
            let in_use = p.in_use();
            let early = ticket.poll_admitted(&Context::from_waker(&waker(Arc::clone(&flag))));
            match &early {
                Some(_) => assert_eq!(in_use, 2, "admitted, with the other holder"),
                None => assert_eq!((in_use, p.waiting()), (1, 1), "waits at capacity 1"),
            }
            drop(second);
            let permit = match early {
                Some(permit) => {
                    assert_eq!(p.in_use(), 1);
                    permit
                }
                None => assert_admitted_and_woken(ticket, &flag),
            };
            drop(permit);
            assert_all_back(&p, 1);
        });
    }

    /// Capacity 1, held by one thread while another waits: raising the capacity to 2 while
    /// the holder releases admits the waiter; afterwards exactly 2 permits.
    #[test]
    fn raising_the_capacity_under_a_release_admits_the_waiter() {
        check(|| {
            let p = Permits::with_shards(1, 2);
            let s = sites(&p, 2);
            let permit = Permits::try_acquire_at(&s[0]).expect("free");
            let flag = Arc::new(Flag(AtomicBool::new(false)));
            let ticket = {
                let waker = waker(Arc::clone(&flag));
                let mut ticket = Permits::enqueue(&s[1]).expect_err("the permit is held");
                assert!(ticket.poll_admitted(&Context::from_waker(&waker)).is_none());
                ticket
            };
            let held = Held::new();
            let releaser = {
                let held = Arc::clone(&held);
                thread::spawn(move || {
                    held.enter(2);
                    held.leave();
                    drop(permit);
                })
            };
            let raiser = {
                let p = Arc::clone(&p);
                thread::spawn(move || p.set_capacity(2))
            };
            releaser.join().expect("releaser");
            raiser.join().expect("raiser");
            drop(assert_admitted_and_woken(ticket, &flag));
            assert_all_back(&p, 2);
        });
    }
}
