//! Built on the real primitives: under `palisade_loom` the atomics only work inside a loom
//! model, and the `loom` module beside this one checks the same properties exhaustively instead.

use super::*;
use futures::task::noop_waker;
use std::task::Context;
use std::time::Duration;

/// `n` homes on consecutive shards.
fn homes(p: &Arc<Permits>, n: usize) -> Vec<Arc<HomeShard>> {
    (0..n).map(|_| HomeShard::new(Arc::clone(p))).collect()
}

fn one_home(capacity: usize) -> (Arc<Permits>, Arc<HomeShard>) {
    let p = Permits::with_shards(capacity, 4);
    let home = HomeShard::new(Arc::clone(&p));
    (p, home)
}

fn stock(p: &Permits, home: &HomeShard) -> u64 {
    count(p.shards[home.shard].load(SeqCst))
}

#[test]
fn home_shards_are_spread_round_robin_over_a_power_of_two_of_shards() {
    let p = Permits::with_shards(4, 3);
    assert_eq!(p.shard_count(), 4);
    let s = homes(&p, 5);
    let shards: Vec<usize> = s.iter().map(|s| s.shard).collect();
    assert_eq!(shards, [0, 1, 2, 3, 0]);
    assert!(Permits::new(1).shard_count() <= MAX_SHARDS);
}

#[test]
fn try_acquire_stops_at_capacity_and_release_frees() {
    let (p, home) = one_home(2);
    let a = Permits::try_acquire_at(&home).unwrap();
    let _b = Permits::try_acquire_at(&home).unwrap();
    assert!(Permits::try_acquire_at(&home).is_none());
    assert_eq!(p.in_use(), 2);
    drop(a);
    assert_eq!(p.in_use(), 1);
    assert!(Permits::try_acquire_at(&home).is_some());
}

#[test]
fn a_permit_stocked_on_one_shard_is_taken_by_a_clone_on_another() {
    let p = Permits::with_shards(2, 4);
    let s = homes(&p, 2);
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
    let s = homes(&p, 4);
    for home in &s {
        drop(Permits::try_acquire_at(home).unwrap());
        assert_eq!(stock(&p, home), 1);
    }
    let held: Vec<Permit> = (0..4)
        .map(|_| Permits::try_acquire_at(&s[0]).expect("a permit is stocked somewhere"))
        .collect();
    assert!(s.iter().all(|home| stock(&p, home) == 0));
    assert!(Permits::try_acquire_at(&s[0]).is_none());
    assert_eq!(p.in_use(), 4);
    drop(held);
    assert_eq!(p.in_use(), 0);
}

#[test]
fn a_stock_beyond_twice_its_fair_share_spills_to_the_pool() {
    let p = Permits::with_shards(16, 4);
    let s = homes(&p, 2);
    let held: Vec<Permit> = (0..16)
        .map(|_| Permits::try_acquire_at(&s[0]).unwrap())
        .collect();
    drop(held);
    // Fair share 16 / 4 = 4: the stock is kept at or below 8.
    assert!(stock(&p, &s[0]) <= 8, "stock {}", stock(&p, &s[0]));
    assert!(p.shared.pool.load(SeqCst) >= 8);
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
    let s = homes(&p, 2);
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
    let (p, home) = one_home(3);
    let mut held: Vec<Permit> = (0..3)
        .map(|_| Permits::try_acquire_at(&home).unwrap())
        .collect();
    p.set_capacity(1);
    assert_eq!(p.in_use(), 3);
    held.pop();
    assert_eq!(stock(&p, &home), 1);
    assert_eq!(p.in_use(), 2);
    assert!(
        Permits::try_acquire_at(&home).is_none(),
        "2 held, capacity 1"
    );
    assert_eq!(p.in_use(), 2);
    held.pop();
    assert!(
        Permits::try_acquire_at(&home).is_none(),
        "1 held, capacity 1"
    );
    assert_eq!(p.in_use(), 1);
    held.pop();
    assert_eq!(p.in_use(), 0);
    let one = Permits::try_acquire_at(&home).expect("below the capacity again");
    assert!(Permits::try_acquire_at(&home).is_none());
    drop(one);
}

#[test]
fn a_move_in_flight_defers_rejections_but_not_admissions() {
    let p = Permits::with_shards(2, 4);
    let s = homes(&p, 2);
    drop(Permits::try_acquire_at(&s[0]).unwrap());
    // Another thread is, say, halfway through spilling a stock to the pool.
    p.shared.moves.fetch_add(MOVE_STARTED | 1, SeqCst);
    let a = Permits::try_acquire_at(&s[1]).expect("from the pool");
    let b = Permits::try_acquire_at(&s[1]).expect("stolen from shard 0");
    // No consistent scan is possible while the move is in flight: the fail-fast call
    // rejects once its policy runs out.
    assert!(!p.take_anywhere(1, ScanPolicy::AtMost(3)));
    p.shared.moves.fetch_sub(1, SeqCst);
    assert!(!p.take_anywhere(1, ScanPolicy::UntilConsistent));
    drop((a, b));
    assert_eq!(p.in_use(), 0);
}

#[test]
fn release_hands_permit_to_head_waiter_in_fifo_order() {
    let (p, home) = one_home(1);
    let held = Permits::try_acquire_at(&home).unwrap();
    let mut first = Permits::enqueue(&home).unwrap_err();
    let mut second = Permits::enqueue(&home).unwrap_err();
    assert_eq!(p.waiting(), 2);
    // A fair arrival does not overtake the queue.
    assert!(Permits::try_acquire_fair_at(&home).is_none());

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
    let s = homes(&p, 2);
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
    let (p, home) = one_home(1);
    let held = Permits::try_acquire_at(&home).unwrap();
    let first = Permits::enqueue(&home).unwrap_err();
    let mut second = Permits::enqueue(&home).unwrap_err();
    drop(held); // admits `first`, which never polls again
    drop(first); // passes it to `second`
    let waker = noop_waker();
    assert!(second.poll_admitted(&Context::from_waker(&waker)).is_some());
    assert_eq!(p.waiting(), 0);
}

#[test]
fn giving_up_a_queued_ticket_leaves_the_queue_and_counts_a_rejection() {
    let (p, home) = one_home(1);
    let _held = Permits::try_acquire_at(&home).unwrap();
    let mut t = Permits::enqueue(&home).unwrap_err();
    assert!(t.give_up(Duration::from_millis(1)).is_none());
    assert_eq!(p.waiting(), 0);
    assert_eq!(p.rejected(), 1);
    assert_eq!(p.in_use(), 1);
}

#[test]
fn giving_up_after_admission_returns_the_permit_instead_of_rejecting() {
    let (p, home) = one_home(1);
    let held = Permits::try_acquire_at(&home).unwrap();
    let mut t = Permits::enqueue(&home).unwrap_err();
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
    let (p, home) = one_home(1);
    let admitted = Permits::enqueue(&home);
    assert!(admitted.is_ok());
    assert_eq!(p.in_use(), 1);
    drop(admitted);
    assert_eq!(p.in_use(), 0);
}

#[test]
fn growing_capacity_admits_waiters_and_shrinking_waits_for_releases() {
    let (p, home) = one_home(1);
    let a = Permits::try_acquire_at(&home).unwrap();
    let mut w = Permits::enqueue(&home).unwrap_err();
    p.set_capacity(2);
    let waker = noop_waker();
    let b = w.poll_admitted(&Context::from_waker(&waker)).unwrap();
    p.set_capacity(1);
    assert_eq!(p.in_use(), 2);
    drop(a);
    assert!(
        Permits::try_acquire_at(&home).is_none(),
        "still at the new capacity"
    );
    drop(b);
    assert!(Permits::try_acquire_at(&home).is_some());
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
            let clones = homes(&p, 3);
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
                let home = HomeShard::new(Arc::clone(&p));
                let (p, held, barrier) = (Arc::clone(&p), Arc::clone(&held), Arc::clone(&barrier));
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
                                        match Permits::try_acquire_fair_at(&home) {
                                            Some(permit) => Some(permit),
                                            None => match Permits::enqueue(&home) {
                                                Ok(permit) => Some(permit),
                                                Err(ticket) => {
                                                    tickets.push(ticket);
                                                    None
                                                }
                                            },
                                        }
                                    } else {
                                        Permits::try_acquire_at(&home)
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
                                && Permits::try_acquire_at(&home).is_none()
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
        let home = HomeShard::new(Arc::clone(&p));
        let all: Vec<Permit> = (0..capacity)
            .map(|_| Permits::try_acquire_at(&home).expect("all permits back"))
            .collect();
        assert!(Permits::try_acquire_at(&home).is_none());
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
