//! The permits a bulkhead hands out: a counting semaphore with a strictly FIFO wait queue.
//!
//! - [`Permits::try_acquire`] is the fail-fast hot path: one compare-and-swap loop on
//!   `in_use`, no lock, no allocation (beyond the `Arc` reference the permit keeps).
//! - [`Permits::try_acquire_fair`] is the same, but refuses while anyone is queued, so a
//!   new arrival cannot overtake a waiter.
//! - [`Permits::enqueue`] is the waiting slow path: under a `parking_lot` lock it either
//!   admits the caller (nobody ahead, a permit free) or appends it to the queue and returns
//!   a [`QueueTicket`].
//! - Releasing a permit decrements `in_use` and, if anyone is queued, takes the lock and
//!   admits waiters from the head while permits are free. Because fair arrivals queue
//!   whenever the queue is non-empty, a freed permit goes to the head waiter, never to a
//!   later arrival.
//!
//! A waiter is identified by a monotonically increasing id; the queue stays sorted by id,
//! so a waiter finds itself by binary search. A ticket whose id is no longer queued was
//! admitted (the only other way out of the queue is the ticket's own cancellation), and
//! `in_use` already counts its permit.
//!
//! No lost wake-ups: a waiter increments `waiting` and then reads `in_use`; a releaser
//! decrements `in_use` and then reads `waiting` (all `SeqCst`). Either the releaser sees the
//! waiter and admits it, or the waiter sees the freed permit and takes it.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::task::{Context, Waker};

use parking_lot::Mutex;

/// The shared state of one bulkhead: every clone of the service, every service of one
/// layer and every handle point at the same `Permits`.
pub(crate) struct Permits {
    /// Written by every admission and release: alone on its cache line, so reading the
    /// capacity or the queue length does not pull it away from the core that writes it.
    in_use: CacheLine<AtomicUsize>,
    capacity: AtomicUsize,
    /// Length of `queue`, readable without the lock.
    waiting: AtomicUsize,
    rejected: AtomicU64,
    queue: Mutex<WaitQueue>,
}

/// Aligns its content to a cache line (128 bytes: adjacent-line prefetchers pair lines).
#[repr(align(128))]
struct CacheLine<T>(T);

impl<T> std::ops::Deref for CacheLine<T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        &self.0
    }
}

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

impl Permits {
    pub(crate) fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Permits {
            in_use: CacheLine(AtomicUsize::new(0)),
            capacity: AtomicUsize::new(capacity),
            waiting: AtomicUsize::new(0),
            rejected: AtomicU64::new(0),
            queue: Mutex::new(WaitQueue {
                next_id: 0,
                waiters: VecDeque::new(),
            }),
        })
    }

    /// Takes one permit if `in_use < capacity`, ignoring the queue.
    #[inline]
    fn try_take(&self) -> bool {
        let capacity = self.capacity.load(SeqCst);
        let mut in_use = self.in_use.load(SeqCst);
        loop {
            if in_use >= capacity {
                return false;
            }
            match self
                .in_use
                .compare_exchange_weak(in_use, in_use + 1, SeqCst, SeqCst)
            {
                Ok(_) => return true,
                Err(actual) => in_use = actual,
            }
        }
    }

    /// A permit if one is free now, holding the shared `Permits` (tests use this; the
    /// services use [`try_acquire_at`](Self::try_acquire_at)).
    #[cfg(test)]
    pub(crate) fn try_acquire(self: &Arc<Self>) -> Option<Permit> {
        if self.try_take() {
            Some(Permit {
                owner: Owner::Shared(Arc::clone(self)),
            })
        } else {
            None
        }
    }

    /// The fail-fast path of a service clone: the permit holds the clone's [`Site`], not
    /// the shared `Permits`, so threads calling their own clones do not contend on one
    /// reference count.
    #[inline]
    pub(crate) fn try_acquire_at(site: &Arc<Site>) -> Option<Permit> {
        if site.permits.try_take() {
            Some(Permit {
                owner: Owner::Site(Arc::clone(site)),
            })
        } else {
            None
        }
    }

    /// Like [`try_acquire_at`](Self::try_acquire_at), but never overtakes a queued waiter.
    #[inline]
    pub(crate) fn try_acquire_fair_at(site: &Arc<Site>) -> Option<Permit> {
        if site.permits.waiting.load(SeqCst) != 0 {
            return None;
        }
        Self::try_acquire_at(site)
    }

    /// Like [`try_acquire`](Self::try_acquire), but never overtakes a queued waiter.
    #[cfg(test)]
    pub(crate) fn try_acquire_fair(self: &Arc<Self>) -> Option<Permit> {
        if self.waiting.load(SeqCst) != 0 {
            return None;
        }
        self.try_acquire()
    }

    /// Joins the back of the queue, or is admitted at once if nobody is ahead and a permit
    /// is free.
    pub(crate) fn enqueue(self: &Arc<Self>) -> Result<Permit, QueueTicket> {
        let mut wake = WakeList::default();
        let admitted = {
            let mut queue = self.queue.lock();
            // Serve those already waiting first: a permit may have been freed between the
            // caller's fast-path attempt and this lock.
            self.admit_locked(&mut queue, &mut wake);
            if queue.waiters.is_empty() && self.try_take() {
                None
            } else {
                let id = queue.next_id;
                queue.next_id += 1;
                queue.waiters.push_back(Waiter { id, waker: None });
                self.waiting.fetch_add(1, SeqCst);
                // Re-check after publishing `waiting`: a release that read `waiting == 0`
                // before our increment left its permit in `in_use` for us to find here.
                self.admit_locked(&mut queue, &mut wake);
                // Admitted by that re-check: the permit is ours already.
                queue.position(id).map(|_| id)
            }
        };
        wake.wake_all();
        match admitted {
            None => Ok(Permit {
                owner: Owner::Shared(Arc::clone(self)),
            }),
            Some(id) => Err(QueueTicket {
                permits: Some(Arc::clone(self)),
                id,
            }),
        }
    }

    /// Admits waiters from the head of the queue while permits are free. The caller holds
    /// the queue lock; wakers are collected to be woken after it is released.
    fn admit_locked(&self, queue: &mut WaitQueue, wake: &mut WakeList) {
        while !queue.waiters.is_empty() && self.try_take() {
            if let Some(waiter) = queue.waiters.pop_front() {
                self.waiting.fetch_sub(1, SeqCst);
                if let Some(waker) = waiter.waker {
                    wake.push(waker);
                }
            }
        }
    }

    fn admit_waiters(&self) {
        let mut wake = WakeList::default();
        {
            let mut queue = self.queue.lock();
            self.admit_locked(&mut queue, &mut wake);
        }
        wake.wake_all();
    }

    #[inline]
    fn release(&self) {
        self.in_use.fetch_sub(1, SeqCst);
        if self.waiting.load(SeqCst) != 0 {
            self.admit_waiters();
        }
    }

    /// Removes waiter `id` from the queue; `false` if it was no longer there (admitted).
    fn remove_waiter(&self, id: u64) -> bool {
        let mut queue = self.queue.lock();
        match queue.position(id) {
            Some(at) => {
                queue.waiters.remove(at);
                self.waiting.fetch_sub(1, SeqCst);
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

    pub(crate) fn in_use(&self) -> usize {
        self.in_use.load(SeqCst)
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity.load(SeqCst)
    }

    pub(crate) fn waiting(&self) -> usize {
        self.waiting.load(SeqCst)
    }

    pub(crate) fn rejected(&self) -> u64 {
        self.rejected.load(SeqCst)
    }

    /// Changes the capacity. Growing admits waiters at once; shrinking takes effect as
    /// permits are released (held permits are never revoked).
    pub(crate) fn set_capacity(&self, capacity: usize) {
        let _previous = self.capacity.swap(capacity, SeqCst);
        #[cfg(feature = "tracing")]
        tracing::info!(
            target: "palisade::bulkhead",
            previous = _previous,
            capacity,
            "bulkhead capacity changed"
        );
        if self.waiting.load(SeqCst) != 0 {
            self.admit_waiters();
        }
    }
}

impl fmt::Debug for Permits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permits")
            .field("in_use", &self.in_use())
            .field("capacity", &self.capacity())
            .field("waiting", &self.waiting())
            .field("rejected", &self.rejected())
            .finish()
    }
}

/// One service clone's own reference to the shared [`Permits`]. Admitted calls hold a
/// clone of this `Arc` rather than of the shared one: each service clone's reference count
/// lives on its own cache line.
pub(crate) struct Site {
    pub(crate) permits: Arc<Permits>,
}

impl Site {
    pub(crate) fn new(permits: Arc<Permits>) -> Arc<Site> {
        Arc::new(Site { permits })
    }
}

/// Who an admitted call's permit keeps alive.
enum Owner {
    /// The shared permits (queued admissions, handed over under the queue's lock).
    Shared(Arc<Permits>),
    /// A service clone's site (the fast path).
    Site(Arc<Site>),
}

/// One admitted call. Dropping it (on completion, cancellation or unwinding) returns the
/// permit, handing it to the head waiter if there is one.
pub(crate) struct Permit {
    owner: Owner,
}

impl Drop for Permit {
    #[inline]
    fn drop(&mut self) {
        match &self.owner {
            Owner::Shared(permits) => permits.release(),
            Owner::Site(site) => site.permits.release(),
        }
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Permit")
    }
}

/// A place in the wait queue. Dropping it leaves the queue, or, if a permit was already
/// handed to it, passes that permit on.
pub(crate) struct QueueTicket {
    /// `None` once the ticket has been turned into a permit or cancelled.
    permits: Option<Arc<Permits>>,
    id: u64,
}

impl QueueTicket {
    /// The permit, if the ticket has been admitted; otherwise registers `cx`'s waker to be
    /// woken on admission.
    pub(crate) fn poll_admitted(&mut self, cx: &Context<'_>) -> Option<Permit> {
        let permits = self.permits.as_ref()?;
        {
            let mut queue = permits.queue.lock();
            if let Some(at) = queue.position(self.id) {
                let slot = &mut queue.waiters[at].waker;
                match slot {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => *slot = Some(cx.waker().clone()),
                }
                return None;
            }
        }
        self.permits.take().map(|permits| Permit {
            owner: Owner::Shared(permits),
        })
    }

    /// Gives up waiting (the maximum wait elapsed) and counts the rejection. If a permit
    /// was handed over in the meantime, returns it instead: the call is admitted after all.
    pub(crate) fn give_up(&mut self, waited: std::time::Duration) -> Option<Permit> {
        let permits = self.permits.take()?;
        if permits.remove_waiter(self.id) {
            permits.record_rejection(waited);
            None
        } else {
            Some(Permit {
                owner: Owner::Shared(permits),
            })
        }
    }
}

impl Drop for QueueTicket {
    fn drop(&mut self) {
        if let Some(permits) = self.permits.take() {
            if !permits.remove_waiter(self.id) {
                // Admitted but never used: dropping the permit passes it on.
                drop(Permit {
                    owner: Owner::Shared(permits),
                });
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

#[cfg(test)]
mod tests {
    use super::*;
    use futures::task::noop_waker;
    use std::time::Duration;

    fn cx_waker() -> Waker {
        noop_waker()
    }

    #[test]
    fn try_acquire_stops_at_capacity_and_release_frees() {
        let p = Permits::new(2);
        let a = p.try_acquire().unwrap();
        let _b = p.try_acquire().unwrap();
        assert!(p.try_acquire().is_none());
        assert_eq!(p.in_use(), 2);
        drop(a);
        assert_eq!(p.in_use(), 1);
        assert!(p.try_acquire().is_some());
    }

    #[test]
    fn release_hands_permit_to_head_waiter_in_fifo_order() {
        let p = Permits::new(1);
        let held = p.try_acquire().unwrap();
        let mut first = p.enqueue().unwrap_err();
        let mut second = p.enqueue().unwrap_err();
        assert_eq!(p.waiting(), 2);
        // A fair arrival does not overtake the queue.
        assert!(p.try_acquire_fair().is_none());

        let waker = cx_waker();
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
    fn dropping_an_admitted_ticket_passes_the_permit_on() {
        let p = Permits::new(1);
        let held = p.try_acquire().unwrap();
        let first = p.enqueue().unwrap_err();
        let mut second = p.enqueue().unwrap_err();
        drop(held); // admits `first`, which never polls again
        drop(first); // passes it to `second`
        let waker = cx_waker();
        assert!(second.poll_admitted(&Context::from_waker(&waker)).is_some());
        assert_eq!(p.waiting(), 0);
    }

    #[test]
    fn giving_up_a_queued_ticket_leaves_the_queue_and_counts_a_rejection() {
        let p = Permits::new(1);
        let _held = p.try_acquire().unwrap();
        let mut t = p.enqueue().unwrap_err();
        assert!(t.give_up(Duration::from_millis(1)).is_none());
        assert_eq!(p.waiting(), 0);
        assert_eq!(p.rejected(), 1);
        assert_eq!(p.in_use(), 1);
    }

    #[test]
    fn giving_up_after_admission_returns_the_permit_instead_of_rejecting() {
        let p = Permits::new(1);
        let held = p.try_acquire().unwrap();
        let mut t = p.enqueue().unwrap_err();
        drop(held);
        let permit = t
            .give_up(std::time::Duration::ZERO)
            .expect("admitted before giving up");
        assert_eq!(p.rejected(), 0);
        assert_eq!(p.in_use(), 1);
        drop(permit);
        assert_eq!(p.in_use(), 0);
    }

    #[test]
    fn enqueue_admits_at_once_when_nobody_waits_and_a_permit_is_free() {
        let p = Permits::new(1);
        let admitted = p.enqueue();
        assert!(admitted.is_ok());
        assert_eq!(p.in_use(), 1);
        drop(admitted);
        assert_eq!(p.in_use(), 0);
    }

    #[test]
    fn growing_capacity_admits_waiters_and_shrinking_waits_for_releases() {
        let p = Permits::new(1);
        let a = p.try_acquire().unwrap();
        let mut w = p.enqueue().unwrap_err();
        p.set_capacity(2);
        let waker = cx_waker();
        let b = w.poll_admitted(&Context::from_waker(&waker)).unwrap();
        p.set_capacity(1);
        assert_eq!(p.in_use(), 2);
        drop(a);
        assert!(p.try_acquire().is_none(), "still at the new capacity");
        drop(b);
        assert!(p.try_acquire().is_some());
    }

    mod model {
        //! The permits against a plain FIFO model, over random sequences of operations.

        use super::*;
        use futures::task::{waker, ArcWake};
        use proptest::prelude::*;
        use std::collections::HashSet;
        use std::sync::atomic::AtomicBool;

        #[derive(Debug, Clone)]
        enum Op {
            Acquire,
            Enqueue,
            Release(usize),
            Poll(usize),
            GiveUp(usize),
            DropTicket(usize),
            SetCapacity(usize),
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                1 => Just(Op::Acquire),
                3 => Just(Op::Enqueue),
                3 => any::<usize>().prop_map(Op::Release),
                2 => any::<usize>().prop_map(Op::Poll),
                1 => any::<usize>().prop_map(Op::GiveUp),
                1 => any::<usize>().prop_map(Op::DropTicket),
                1 => (1usize..5).prop_map(Op::SetCapacity),
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
                capacity in 1usize..4,
                ops in proptest::collection::vec(op(), 1..80),
            ) {
                let p = Permits::new(capacity);
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
                        Op::Acquire => {
                            let expect = m.queue.is_empty() && m.in_use < m.capacity;
                            let got = p.try_acquire_fair();
                            prop_assert_eq!(got.is_some(), expect);
                            if let Some(permit) = got {
                                m.in_use += 1;
                                held.push(permit);
                            }
                        }
                        Op::Enqueue => match p.enqueue() {
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
}
