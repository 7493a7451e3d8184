//! The closed path allocates nothing per call: admission, the inner call, completion
//! and recording, counted by a global allocator that tallies every allocation.

use std::task::{Context, Poll};

use futures::task::noop_waker;
use futures::FutureExt;
use palisade::breaker::{BreakerConfig, CircuitBreaker};
use tower::Service;

use crate::common;

#[derive(Debug)]
struct Boom;

impl std::fmt::Display for Boom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("boom")
    }
}

impl std::error::Error for Boom {}

#[test]
fn closed_path_allocates_nothing_per_call() {
    // Failures are counted too, but keep them below the trip conditions: the failure
    // path must not allocate either (a `Boom` is a zero-sized error, boxing it is free).
    let config = BreakerConfig::builder()
        .minimum_requests(u32::MAX)
        .build()
        .unwrap();
    let inner =
        tower::service_fn(|ok: bool| std::future::ready(if ok { Ok(1u32) } else { Err(Boom) }));
    let mut svc = CircuitBreaker::new(inner, &config);
    let waker = noop_waker();
    let mut cx = Context::from_waker(&waker);
    let mut run = |svc: &mut CircuitBreaker<_>, n: usize| {
        for i in 0..n {
            assert!(svc.poll_ready(&mut cx).is_ready());
            let ok = i % 4 != 0;
            match svc.call(ok).poll_unpin(&mut cx) {
                Poll::Ready(r) => assert_eq!(r.is_ok(), ok),
                Poll::Pending => unreachable!("the inner future is ready"),
            }
        }
    };
    run(&mut svc, 100); // warm-up: lazily initialised thread-locals, stripes
                        // Counted on this thread only: the test harness allocates on its own threads.
    let before = common::allocations();
    run(&mut svc, 10_000);
    let allocations = common::allocations() - before;
    assert_eq!(allocations, 0, "{allocations} allocations in 10 000 calls");
    assert_eq!(svc.handle().metrics().window.counts.failures, 2_525);
}
