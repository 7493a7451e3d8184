//! Many threads, each calling its own clone of one small bulkhead (so the clones sit on
//! different shards), starting, polling and cancelling calls at random. The inner service
//! counts the calls running inside it independently of the bulkhead and checks that they
//! never exceed the capacity; at quiescent moments the books must balance: an arrival is
//! admitted whenever a permit is free, no waiter waits while a permit is idle, and no
//! waiter was admitted without being woken. The capacity is changed, up and down, between
//! rounds.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Barrier, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use palisade::bulkhead::{BulkheadConfig, BulkheadHandle};
use palisade::error::BulkheadFull;
use palisade::BoxError;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tower::{Layer, Service};

const THREADS: usize = 4;
const ROUNDS: usize = 30;
const OPS_PER_ROUND: usize = 400;

/// What the inner service sees, shared by every clone.
#[derive(Default)]
struct Books {
    /// Calls inside the inner service now.
    running: AtomicUsize,
    /// The capacity in force this round (changed only between rounds).
    limit: AtomicUsize,
    /// Calls that found `running` above `limit` when they entered.
    over_limit: AtomicUsize,
    /// Every inner call ever made.
    calls: AtomicUsize,
}

/// One request: how many times its future stays pending (at least once in these tests, so
/// polling a call that was just admitted never releases its permit), and a flag set when
/// it starts.
struct Req {
    polls: u32,
    started: Arc<AtomicBool>,
}

#[derive(Clone)]
struct Inner(Arc<Books>);

impl Service<Req> for Inner {
    type Response = ();
    type Error = BoxError;
    type Future = Running;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Running {
        let books = &self.0;
        books.calls.fetch_add(1, SeqCst);
        req.started.store(true, SeqCst);
        let now = books.running.fetch_add(1, SeqCst) + 1;
        if now > books.limit.load(SeqCst) {
            books.over_limit.fetch_add(1, SeqCst);
        }
        Running {
            left: req.polls,
            books: Arc::clone(books),
            done: false,
        }
    }
}

/// The inner call: pending `left` more times, then done. It leaves the books when it
/// finishes (before the bulkhead returns the permit) or when it is dropped unfinished.
struct Running {
    left: u32,
    books: Arc<Books>,
    done: bool,
}

impl Future for Running {
    type Output = Result<(), BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.left == 0 {
            if !self.done {
                self.done = true;
                self.books.running.fetch_sub(1, SeqCst);
            }
            return Poll::Ready(Ok(()));
        }
        self.left -= 1;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if !self.done {
            self.books.running.fetch_sub(1, SeqCst);
        }
    }
}

/// A waker that records that it was woken.
#[derive(Default)]
struct Woken(AtomicBool);

impl Wake for Woken {
    fn wake(self: Arc<Self>) {
        self.0.store(true, SeqCst);
    }
}

struct Call<F> {
    future: Pin<Box<F>>,
    started: Arc<AtomicBool>,
    woken: Arc<Woken>,
}

impl<F: Future<Output = Result<(), BoxError>>> Call<F> {
    /// Polls once; `Some` when finished (`Ok(true)` if admitted, `Ok(false)` if rejected).
    fn poll(&mut self) -> Option<bool> {
        self.woken.0.store(false, SeqCst);
        let waker = Waker::from(Arc::clone(&self.woken));
        match self.future.as_mut().poll(&mut Context::from_waker(&waker)) {
            Poll::Pending => None,
            Poll::Ready(Ok(())) => Some(true),
            Poll::Ready(Err(e)) => {
                assert!(e.is::<BulkheadFull>(), "unexpected error {e}");
                Some(false)
            }
        }
    }
}

fn start<S>(svc: &mut S, polls: u32) -> Call<S::Future>
where
    S: Service<Req, Response = (), Error = BoxError>,
{
    let started = Arc::new(AtomicBool::new(false));
    let future = Box::pin(svc.call(Req {
        polls,
        started: Arc::clone(&started),
    }));
    Call {
        future,
        started,
        woken: Arc::new(Woken::default()),
    }
}

/// Runs the threads over clones of `svc`.
fn hammer<S>(svc: S, handle: BulkheadHandle, books: Arc<Books>, seed: u64)
where
    S: Service<Req, Response = (), Error = BoxError> + Clone + Send + 'static,
    S::Future: Send,
{
    // Queued calls arm a tokio timer (an hour: it never fires here), so they need a runtime.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let barrier = Arc::new(Barrier::new(THREADS));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let mut svc = svc.clone();
            let (handle, books, barrier) =
                (handle.clone(), Arc::clone(&books), Arc::clone(&barrier));
            let rt = rt.handle().clone();
            let failures = Arc::clone(&failures);
            std::thread::spawn(move || {
                let _rt = rt.enter();
                let mut rng = SmallRng::seed_from_u64(seed.wrapping_add(t as u64));
                let mut calls: Vec<Call<S::Future>> = Vec::new();
                for round in 0..ROUNDS {
                    for _ in 0..OPS_PER_ROUND {
                        match rng.random_range(0..8) {
                            0..=2 => {
                                let mut call = start(&mut svc, rng.random_range(1..4));
                                if call.poll().is_none() {
                                    calls.push(call);
                                }
                            }
                            3..=6 if !calls.is_empty() => {
                                let at = rng.random_range(0..calls.len());
                                if calls[at].poll().is_some() {
                                    calls.swap_remove(at);
                                }
                            }
                            7 if !calls.is_empty() => {
                                // Cancellation, at whatever point the call is.
                                let at = rng.random_range(0..calls.len());
                                calls.swap_remove(at);
                            }
                            _ => {}
                        }
                    }
                    // Quiesce: cancel some calls, then nobody releases anything.
                    let keep = rng.random_range(0..=calls.len());
                    calls.truncate(keep);
                    barrier.wait();
                    // Failures are recorded, not asserted, between barriers: a panic would leave
                    // the other threads waiting at the barrier forever.
                    // No release happens now, so no admission either. A waiter that was not
                    // woken must still be waiting: polling it must not start it. One that was
                    // woken was admitted: polling it starts it (its first poll is pending), so
                    // no admitted call waits to start when the capacity changes below.
                    for call in calls.iter_mut() {
                        if !call.started.load(SeqCst) {
                            let woken = call.woken.0.load(SeqCst);
                            let finished = call.poll().is_some();
                            if finished || call.started.load(SeqCst) != woken {
                                failures.lock().expect("failures").push(format!(
                                    "round {round}: woken {woken}, then started {}, finished {finished}",
                                    call.started.load(SeqCst)
                                ));
                            }
                        }
                    }
                    barrier.wait();
                    if t == 0 {
                        let fail = |what: String| {
                            failures
                                .lock()
                                .expect("failures")
                                .push(format!("round {round}: {what}"))
                        };
                        let capacity = handle.capacity();
                        let in_use = handle.in_use();
                        let running = books.running.load(SeqCst);
                        // Every admitted call has started: the permits held are exactly
                        // the calls running.
                        if running != in_use {
                            fail(format!("{running} running, {in_use} in use"));
                        }
                        if handle.waiting() != 0 {
                            if in_use < capacity {
                                fail(format!(
                                    "{} waiting while {in_use} of {capacity} in use",
                                    handle.waiting()
                                ));
                            }
                        } else if in_use < capacity {
                            let before = books.calls.load(SeqCst);
                            let extra = start(&mut svc, 1);
                            if books.calls.load(SeqCst) != before + 1 {
                                fail(format!("{in_use} of {capacity} in use, yet not admitted"));
                            }
                            drop(extra);
                        }
                        // Next round's capacity, up or down; a new limit is in force for new
                        // admissions at once (calls already running may exceed a lower one).
                        let next = rng.random_range(1..=4);
                        books.limit.store(next.max(capacity), SeqCst);
                        handle.set_capacity(next).expect("capacity");
                        books.limit.store(next, SeqCst);
                    }
                    barrier.wait();
                }
                drop(calls);
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("a thread panicked");
    }
    assert_eq!(*failures.lock().expect("failures"), Vec::<String>::new());
    assert_eq!(
        books.over_limit.load(SeqCst),
        0,
        "calls ran above the capacity"
    );
    assert_eq!(books.running.load(SeqCst), 0);
    assert_eq!(handle.in_use(), 0, "a permit leaked");
    assert_eq!(handle.waiting(), 0);
}

fn books(capacity: usize) -> Arc<Books> {
    let books = Arc::new(Books::default());
    books.limit.store(capacity, SeqCst);
    books
}

#[test]
fn fail_fast_clones_on_many_threads_never_exceed_the_capacity_and_leak_nothing() {
    for seed in 0..4 {
        let capacity = 1 + seed as usize % 3;
        let layer = BulkheadConfig::builder()
            .max_concurrent_calls(capacity)
            .build()
            .unwrap()
            .layer();
        let handle = layer.handle();
        let books = books(capacity);
        let svc = layer.layer(Inner(Arc::clone(&books)));
        hammer(svc.clone(), handle.clone(), books, seed);
        // Every permit is back and reachable from one clone, wherever it was stocked.
        let mut one = svc.clone();
        let cap = handle.capacity();
        let all: Vec<_> = (0..cap).map(|_| start(&mut one, 1)).collect();
        assert_eq!(handle.in_use(), cap);
        assert_eq!(start(&mut one, 1).poll(), Some(false));
        drop(all);
        assert_eq!(handle.in_use(), 0);
    }
}

#[test]
fn queued_clones_on_many_threads_never_exceed_the_capacity_and_lose_no_wake_up() {
    for seed in 10..14 {
        let capacity = 1 + seed as usize % 3;
        let layer = BulkheadConfig::builder()
            .max_concurrent_calls(capacity)
            .max_wait(Duration::from_secs(3600))
            .build()
            .unwrap()
            .layer();
        let handle = layer.handle();
        let books = books(capacity);
        let svc = layer.layer(Inner(Arc::clone(&books)));
        hammer(svc, handle, books, seed);
    }
}
