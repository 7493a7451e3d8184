//! Model checking with [loom](https://docs.rs/loom): every interleaving (up to loom's
//! preemption bound) of a few threads on their own shards, over small capacities. Run with
//!
//! ```text
//! RUSTFLAGS="--cfg palisade_loom" LOOM_MAX_PREEMPTIONS=2 \
//!     cargo test --release --target-dir target/loom --lib bulkhead::permits::loom
//! ```
//!
//! (a separate target directory, so the normal build's cache is kept). Under the cfg the
//! permits' atomics and mutex are loom's (see `crate::sync`); without
//! `LOOM_MAX_PREEMPTIONS` these tests use a bound of 2.
//!
//! The tests' own bookkeeping reads loom atomics with read-modify-writes (`fetch_add(0)`),
//! which always see the latest value: loom lets a `SeqCst` load read a stale value that a
//! real `SeqCst` load could not, and the checks must not fail on such executions.

use super::*;
use ::loom::sync::atomic::{AtomicBool, AtomicUsize as ModelUsize};
use ::loom::thread;
use futures::task::{waker, ArcWake};
use std::task::Context;

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

/// `n` homes, each on its own shard.
fn homes(p: &Arc<Permits>, n: usize) -> Vec<Arc<HomeShard>> {
    assert!(p.shard_count() >= n);
    (0..n).map(|_| HomeShard::new(Arc::clone(p))).collect()
}

/// After the threads are done: nothing held, nobody waiting, and exactly `capacity`
/// permits to be had from one home.
fn assert_all_back(p: &Arc<Permits>, capacity: usize) {
    assert_eq!(p.in_use(), 0);
    assert_eq!(p.waiting(), 0);
    let home = HomeShard::new(Arc::clone(p));
    let all: Vec<Permit> = (0..capacity)
        .map(|_| Permits::try_acquire_at(&home).expect("every permit is back"))
        .collect();
    assert!(
        Permits::try_acquire_at(&home).is_none(),
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
        let handles: Vec<_> = homes(&p, threads)
            .into_iter()
            .map(|home| {
                let held = Arc::clone(&held);
                thread::spawn(move || {
                    for _ in 0..rounds {
                        match Permits::try_acquire_at(&home) {
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
        let s = homes(&p, 2);
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
        let home = Arc::clone(&s[1]);
        let stealer = {
            let held = Arc::clone(&held);
            thread::spawn(move || {
                let permit = Permits::try_acquire_at(&home).expect("two are always free");
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
    home: &Arc<HomeShard>,
    me: &ModelUsize,
    other: &ModelUsize,
    held: &Held,
    limit: usize,
) -> bool {
    me.fetch_add(1, SeqCst);
    let before = latest(other);
    let got = Permits::try_acquire_at(home);
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
            let s = homes(&p, 2);
            if let Some(shard) = start {
                // Leave the permit in that shard's stock (stealing is then needed).
                drop(Permits::try_acquire_at(&s[shard]).expect("free"));
            }
            let phases = Arc::new([ModelUsize::new(0), ModelUsize::new(0)]);
            let held = Held::new();
            let handles: Vec<_> = (0..2)
                .map(|me| {
                    let (home, phases, held) =
                        (Arc::clone(&s[me]), Arc::clone(&phases), Arc::clone(&held));
                    thread::spawn(move || take_once(&home, &phases[me], &phases[1 - me], &held, 1))
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

/// A waiting call from `home`, as the bulkhead's service makes it: the fair fast path,
/// else the queue, then a first poll registering `flag`'s waker. Returns the permit if
/// admitted by then, else the ticket.
fn wait_for_permit(home: &Arc<HomeShard>, flag: &Arc<Flag>) -> Result<Permit, QueueTicket> {
    if let Some(permit) = Permits::try_acquire_fair_at(home) {
        return Ok(permit);
    }
    let mut ticket = match Permits::enqueue(home) {
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
        let s = homes(&p, 2);
        let permit = Permits::try_acquire_at(&s[0]).expect("free");
        let releaser = thread::spawn(move || drop(permit));
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let waiter = {
            let (home, flag) = (Arc::clone(&s[1]), Arc::clone(&flag));
            thread::spawn(move || wait_for_permit(&home, &flag))
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
        let s = homes(&p, 2);
        let churner = {
            let home = Arc::clone(&s[0]);
            thread::spawn(move || drop(Permits::try_acquire_at(&home)))
        };
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let waiter = {
            let (home, flag) = (Arc::clone(&s[1]), Arc::clone(&flag));
            thread::spawn(move || wait_for_permit(&home, &flag))
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
        let s = homes(&p, 3);
        let permit = Permits::try_acquire_at(&s[0]).expect("free");
        let releaser = thread::spawn(move || drop(permit));
        let flags: Vec<Arc<Flag>> = (0..2)
            .map(|_| Arc::new(Flag(AtomicBool::new(false))))
            .collect();
        let waiters: Vec<_> = (0..2)
            .map(|i| {
                let (home, flag) = (Arc::clone(&s[i + 1]), Arc::clone(&flags[i]));
                thread::spawn(move || wait_for_permit(&home, &flag))
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
        let s = homes(&p, 2);
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
        let s = homes(&p, 2);
        // One permit stocked on each shard: the debt is paid from the stocks.
        let both: Vec<Permit> = s
            .iter()
            .map(|home| Permits::try_acquire_at(home).expect("free"))
            .collect();
        drop(both);
        let held = Held::new();
        let lowered = Arc::new(ModelUsize::new(0));
        let phases = Arc::new([ModelUsize::new(0), ModelUsize::new(0)]);
        let handles: Vec<_> = (0..2)
            .map(|me| {
                let (home, held, lowered, phases) = (
                    Arc::clone(&s[me]),
                    Arc::clone(&held),
                    Arc::clone(&lowered),
                    Arc::clone(&phases),
                );
                thread::spawn(move || {
                    let limit = if latest(&lowered) == 1 { 1 } else { 2 };
                    take_once(&home, &phases[me], &phases[1 - me], &held, limit);
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
            let s = homes(&p, 3);
            let first = Permits::try_acquire_at(&s[0]).expect("free");
            let second = Permits::try_acquire_at(&s[1]).expect("free");
            p.set_capacity(1);
            let releaser = thread::spawn(move || drop(first));
            let home = Arc::clone(&s[caller]);
            let newcomer = thread::spawn(move || Permits::try_acquire_at(&home).is_none());
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
        let s = homes(&p, 3);
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
        let s = homes(&p, 2);
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
