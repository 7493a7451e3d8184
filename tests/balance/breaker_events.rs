//! Endpoint breaker events with the endpoint's key (`Balance::endpoint_events`,
//! `Balance::on_endpoint_event`), on tokio's paused clock: which endpoint's circuit did
//! what, for the members at subscription time and those discovered later, nothing from
//! removed ones, bounded buffers, the breaker configuration's own `on_event` still
//! called, and no allocation per request or per rejection.

use std::future::{ready, Ready};
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::StreamExt;
use palisade::balance::{Balance, Builder, EndpointEventStream, RoundRobin};
use palisade::breaker::{BreakerConfig, BreakerEvent, CircuitState, TransitionReason};
use palisade::clock::Clock;
use palisade::discover::{ChannelHandle, ChannelSet};
use palisade::BoxError;
use parking_lot::Mutex;
use tower::{Service, ServiceExt};

use crate::common;

/// An endpoint that answers at once, with an error while `failing` is set.
#[derive(Clone, Default)]
struct Ep {
    failing: Arc<AtomicBool>,
}

impl Ep {
    fn failing() -> Self {
        let ep = Ep::default();
        ep.failing.store(true, Ordering::SeqCst);
        ep
    }
}

impl Service<()> for Ep {
    type Response = ();
    type Error = io::Error;
    type Future = Ready<Result<(), io::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: ()) -> Self::Future {
        if self.failing.load(Ordering::SeqCst) {
            ready(Err(io::Error::other("down")))
        } else {
            ready(Ok(()))
        }
    }
}

type Events = Arc<Mutex<Vec<BreakerEvent>>>;

/// Opens after 3 failures in a row for 5 s; records every event it sees (the user's
/// own `on_event`) in the returned log.
fn breaker(event_buffer: usize) -> (BreakerConfig, Events) {
    let seen: Events = Arc::default();
    let log = seen.clone();
    let config = BreakerConfig::builder()
        .clock(Clock::tokio())
        .consecutive_failures(3)
        .without_error_percentage()
        .sleep_window(Duration::from_secs(5))
        .event_buffer(event_buffer)
        .on_event(move |e| log.lock().push(*e))
        .build()
        .unwrap();
    (config, seen)
}

type Lb = Balance<ChannelSet<&'static str, Ep>, RoundRobin>;

fn balancer(event_buffer: usize) -> (Lb, ChannelHandle<&'static str, Ep>, Events) {
    let (set, handle) = ChannelSet::new();
    let (config, seen) = breaker(event_buffer);
    let balance = Builder::new(RoundRobin::new())
        .no_endpoint_deadline(Duration::from_secs(1))
        .endpoint_breaker(config)
        .build_weighted(set)
        .unwrap();
    (balance, handle, seen)
}

/// Sends `n` requests one after another; returns how many failed.
async fn send(balance: &mut Lb, n: usize) -> usize {
    let mut failed = 0;
    for _ in 0..n {
        let r: Result<(), BoxError> = balance.ready().await.unwrap().call(()).await;
        failed += usize::from(r.is_err());
    }
    failed
}

/// Applies pending discovery changes without sending a request.
async fn apply_changes(balance: &mut Lb) {
    futures::future::poll_fn(|cx| {
        let _ = Service::<()>::poll_ready(balance, cx);
        Poll::Ready(())
    })
    .await;
}

fn drain(stream: &mut EndpointEventStream<&'static str>) -> Vec<(&'static str, BreakerEvent)> {
    std::iter::from_fn(|| stream.try_next()).collect()
}

fn opened(reason: TransitionReason) -> BreakerEvent {
    BreakerEvent::StateChanged {
        from: CircuitState::Closed,
        to: CircuitState::Open,
        reason,
    }
}

#[tokio::test(start_paused = true)]
async fn only_the_failing_endpoint_is_reported_and_the_config_callback_still_fires() {
    let (mut balance, handle, seen) = balancer(64);
    handle.insert("a", Ep::default(), 1).unwrap();
    handle.insert("b", Ep::failing(), 1).unwrap();
    let mut stream = balance.endpoint_events();
    let called: Arc<Mutex<Vec<(&'static str, BreakerEvent)>>> = Arc::default();
    let log = called.clone();
    balance.on_endpoint_event(move |key, event| log.lock().push((*key, *event)));

    // Round robin: b takes every other request and fails; its third failure opens it.
    let failed = send(&mut balance, 6).await;
    assert_eq!(failed, 3);
    let b_open = ("b", opened(TransitionReason::ConsecutiveFailures));
    assert_eq!(drain(&mut stream), [b_open]);
    assert_eq!(*called.lock(), [b_open]);
    assert_eq!(
        *seen.lock(),
        [b_open.1],
        "the breaker configuration's own on_event is still called"
    );

    // With b open, requests go to a only: nothing more happens to either circuit.
    assert_eq!(send(&mut balance, 4).await, 0);
    assert_eq!(drain(&mut stream), []);

    // After the open period b takes a probe, fails it, and opens again: each step is
    // reported under b's key, and nothing ever under a's.
    tokio::time::advance(Duration::from_secs(5)).await;
    send(&mut balance, 4).await;
    let events = drain(&mut stream);
    assert!(events.iter().all(|(key, _)| *key == "b"), "{events:?}");
    assert_eq!(
        events,
        [
            (
                "b",
                BreakerEvent::StateChanged {
                    from: CircuitState::Open,
                    to: CircuitState::HalfOpen,
                    reason: TransitionReason::OpenPeriodElapsed,
                }
            ),
            (
                "b",
                BreakerEvent::StateChanged {
                    from: CircuitState::HalfOpen,
                    to: CircuitState::Open,
                    reason: TransitionReason::ProbeFailed,
                }
            ),
        ]
    );
    assert_eq!(*called.lock(), [&[b_open][..], &events[..]].concat());
    assert_eq!(
        *seen.lock(),
        [b_open.1, events[0].1, events[1].1],
        "the configuration's callback saw the same events, unkeyed"
    );
    assert_eq!(stream.dropped(), 0);
}

#[tokio::test(start_paused = true)]
async fn endpoints_discovered_after_the_subscription_are_reported_under_their_keys() {
    let (mut balance, handle, _) = balancer(64);
    // Subscribed before any endpoint exists.
    let mut early = balance.endpoint_events();
    handle.insert("a", Ep::default(), 1).unwrap();
    send(&mut balance, 2).await;
    // Subscribed after "a" joined: also sees later ones.
    let mut late = balance.endpoint_events();

    handle.insert("c", Ep::failing(), 1).unwrap();
    send(&mut balance, 6).await;
    let c_open = ("c", opened(TransitionReason::ConsecutiveFailures));
    assert_eq!(drain(&mut early), [c_open]);
    assert_eq!(drain(&mut late), [c_open]);

    // An endpoint that was there before the subscription is reported too.
    let a = balance.endpoint_breaker(&"a").unwrap();
    a.force_open();
    let forced = BreakerEvent::StateChanged {
        from: CircuitState::Closed,
        to: CircuitState::ForcedOpen,
        reason: TransitionReason::Forced,
    };
    assert_eq!(drain(&mut early), [("a", forced)]);
    assert_eq!(drain(&mut late), [("a", forced)]);
}

#[tokio::test(start_paused = true)]
async fn an_update_of_a_key_keeps_reporting_its_circuit() {
    let (mut balance, handle, _) = balancer(64);
    handle.insert("a", Ep::default(), 1).unwrap();
    apply_changes(&mut balance).await;
    let mut stream = balance.endpoint_events();
    // Same key, new (failing) service and weight: same circuit, same forward.
    handle.insert("a", Ep::failing(), 2).unwrap();
    assert_eq!(send(&mut balance, 3).await, 3);
    assert_eq!(
        drain(&mut stream),
        [("a", opened(TransitionReason::ConsecutiveFailures))]
    );
}

#[tokio::test(start_paused = true)]
async fn a_removed_endpoint_reports_nothing_more_even_when_its_key_returns() {
    let (mut balance, handle, _) = balancer(64);
    handle.insert("a", Ep::default(), 1).unwrap();
    handle.insert("b", Ep::default(), 1).unwrap();
    apply_changes(&mut balance).await;
    let mut stream = balance.endpoint_events();
    let old_b = balance.endpoint_breaker(&"b").unwrap();
    let mut old_b_own = old_b.events();

    handle.remove("b").unwrap();
    apply_changes(&mut balance).await;
    assert!(balance.endpoint_breaker(&"b").is_none());
    // The old circuit lives on through the handle and still produces events...
    for _ in 0..100 {
        old_b.force_open();
        old_b.reset();
    }
    assert_eq!(
        std::iter::from_fn(|| old_b_own.try_next()).count() as u64 + old_b_own.dropped(),
        200
    );
    // ...but none is reported under "b", and nothing piles up.
    assert_eq!(drain(&mut stream), []);
    assert_eq!(stream.dropped(), 0);

    // "b" comes back: its new circuit is reported, the old one still is not.
    handle.insert("b", Ep::failing(), 1).unwrap();
    send(&mut balance, 6).await;
    old_b.force_open();
    assert_eq!(
        drain(&mut stream),
        [("b", opened(TransitionReason::ConsecutiveFailures))]
    );
}

#[tokio::test(start_paused = true)]
async fn a_lagging_stream_keeps_the_newest_events_and_counts_the_rest() {
    let (mut balance, handle, _) = balancer(4);
    handle.insert("a", Ep::default(), 1).unwrap();
    apply_changes(&mut balance).await;
    let mut lagging = balance.endpoint_events();
    let a = balance.endpoint_breaker(&"a").unwrap();
    for _ in 0..50 {
        a.force_open();
        a.reset();
    }
    assert_eq!(lagging.dropped(), 96);
    let kept = drain(&mut lagging);
    assert_eq!(kept.len(), 4);
    assert_eq!(
        kept.last(),
        Some(&(
            "a",
            BreakerEvent::StateChanged {
                from: CircuitState::ForcedOpen,
                to: CircuitState::Closed,
                reason: TransitionReason::Reset,
            }
        ))
    );
}

#[tokio::test(start_paused = true)]
async fn the_stream_ends_and_callbacks_stop_when_the_balancer_is_dropped() {
    let (mut balance, handle, _) = balancer(64);
    handle.insert("a", Ep::default(), 1).unwrap();
    apply_changes(&mut balance).await;
    let mut stream = balance.endpoint_events();
    let called = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = called.clone();
    balance.on_endpoint_event(move |_, _| {
        count.fetch_add(1, Ordering::SeqCst);
    });
    let a = balance.endpoint_breaker(&"a").unwrap();
    a.force_open();
    drop(balance);
    a.reset();
    assert_eq!(
        called.load(Ordering::SeqCst),
        1,
        "nothing after the balancer's drop"
    );
    assert_eq!(
        stream.next().await,
        Some((
            "a",
            BreakerEvent::StateChanged {
                from: CircuitState::Closed,
                to: CircuitState::ForcedOpen,
                reason: TransitionReason::Forced,
            }
        ))
    );
    assert_eq!(stream.next().await, None);
}

#[tokio::test(start_paused = true)]
async fn a_stream_waiting_for_events_is_woken_by_one() {
    let (mut balance, handle, _) = balancer(64);
    handle.insert("a", Ep::default(), 1).unwrap();
    handle.insert("b", Ep::failing(), 1).unwrap();
    let mut stream = balance.endpoint_events();
    let waiter = tokio::spawn(async move { stream.next().await });
    tokio::task::yield_now().await;
    assert!(!waiter.is_finished());
    send(&mut balance, 6).await;
    assert_eq!(
        waiter.await.unwrap(),
        Some(("b", opened(TransitionReason::ConsecutiveFailures)))
    );
}

#[tokio::test(start_paused = true)]
async fn a_callback_may_steer_other_endpoints_without_deadlock() {
    let (mut balance, handle, _) = balancer(64);
    handle.insert("a", Ep::default(), 1).unwrap();
    handle.insert("b", Ep::failing(), 1).unwrap();
    apply_changes(&mut balance).await;
    // When b opens, force a open too (a transition of another circuit, delivered from
    // inside this callback).
    let a = balance.endpoint_breaker(&"a").unwrap();
    balance.on_endpoint_event(move |key, event| {
        if *key == "b"
            && matches!(
                event,
                BreakerEvent::StateChanged {
                    to: CircuitState::Open,
                    ..
                }
            )
        {
            a.force_open();
        }
    });
    let mut stream = balance.endpoint_events();
    send(&mut balance, 6).await;
    let events = drain(&mut stream);
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(events.contains(&("b", opened(TransitionReason::ConsecutiveFailures))));
    assert!(events.contains(&(
        "a",
        BreakerEvent::StateChanged {
            from: CircuitState::Closed,
            to: CircuitState::ForcedOpen,
            reason: TransitionReason::Forced,
        }
    )));
    assert_eq!(
        balance.endpoint_breaker(&"a").unwrap().state(),
        CircuitState::ForcedOpen
    );
}

#[tokio::test(start_paused = true)]
async fn without_endpoint_breakers_the_stream_yields_nothing_and_ends_with_the_balancer() {
    let (set, handle) = ChannelSet::new();
    let mut balance = Builder::new(RoundRobin::new()).build_weighted(set).unwrap();
    handle.insert("a", Ep::failing(), 1).unwrap();
    let mut stream = balance.endpoint_events();
    for _ in 0..5 {
        let _ = balance.ready().await.unwrap().call(()).await;
    }
    assert_eq!(stream.try_next(), None);
    drop(balance);
    assert_eq!(stream.next().await, None);
}

#[tokio::test(start_paused = true)]
async fn the_builder_callback_reaches_every_balancer_its_layer_makes() {
    use tower::Layer;

    let seen: Arc<Mutex<Vec<(&'static str, BreakerEvent)>>> = Arc::default();
    let log = seen.clone();
    let (config, config_seen) = breaker(64);
    let layer = Builder::new(RoundRobin::new())
        .endpoint_breaker(config)
        .on_endpoint_event(move |key: &&'static str, event: &BreakerEvent| {
            log.lock().push((*key, *event))
        })
        .into_layer()
        .unwrap()
        .weighted();
    let (set1, handle1) = ChannelSet::new();
    let (set2, handle2) = ChannelSet::new();
    let mut first: Lb = layer.layer(set1);
    let mut second: Lb = layer.layer(set2);
    handle1.insert("one", Ep::failing(), 1).unwrap();
    handle2.insert("two", Ep::failing(), 1).unwrap();
    // A stream asked for later shares the callback's forward.
    let mut stream = second.endpoint_events();
    assert_eq!(send(&mut first, 3).await, 3);
    assert_eq!(send(&mut second, 3).await, 3);

    let open = opened(TransitionReason::ConsecutiveFailures);
    assert_eq!(*seen.lock(), [("one", open), ("two", open)]);
    assert_eq!(drain(&mut stream), [("two", open)]);
    assert_eq!(*config_seen.lock(), [open, open]);
}

#[tokio::test(start_paused = true)]
async fn the_builder_callback_covers_endpoints_discovered_later_and_forgets_removed_ones() {
    let seen: Arc<Mutex<Vec<(&'static str, BreakerEvent)>>> = Arc::default();
    let log = seen.clone();
    let (set, handle) = ChannelSet::new();
    let (config, _) = breaker(64);
    let mut balance: Lb = Builder::new(RoundRobin::new())
        .no_endpoint_deadline(Duration::from_secs(1))
        .endpoint_breaker(config)
        .on_endpoint_event(move |key: &&'static str, event: &BreakerEvent| {
            log.lock().push((*key, *event))
        })
        .build_weighted(set)
        .unwrap();
    handle.insert("a", Ep::default(), 1).unwrap();
    send(&mut balance, 2).await;
    handle.insert("late", Ep::failing(), 1).unwrap();
    send(&mut balance, 6).await;
    let open = opened(TransitionReason::ConsecutiveFailures);
    assert_eq!(*seen.lock(), [("late", open)]);

    let late = balance.endpoint_breaker(&"late").unwrap();
    handle.remove("late").unwrap();
    apply_changes(&mut balance).await;
    late.reset();
    late.force_open();
    assert_eq!(
        *seen.lock(),
        [("late", open)],
        "nothing from a removed endpoint"
    );
}

/// Who listens to the keyed events in [`allocations_per_rejection_round`].
#[derive(Debug, Clone, Copy, PartialEq)]
enum Listener {
    /// Never asked for.
    Nobody,
    /// Asked for, then the stream dropped: every circuit's forward is bound to a hub
    /// that nobody listens to.
    Gone,
    /// A stream, read as it goes.
    Stream,
}

/// Allocations per round of: `ready`, force endpoint 1 open, `call` (which the round
/// robin tries on endpoint 1 in most rounds; its circuit rejects it and the balancer
/// sends it to endpoint 0), reset endpoint 1. Averaged over 1,000 rounds after 1,000 of
/// warm-up. Also returns the rejections the stream saw over all 2,000 rounds.
fn allocations_per_rejection_round(listener: Listener) -> (f64, usize) {
    use common::{allocations, drive, Echo};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _entered = rt.enter();
    let list = palisade::discover::FixedList::unweighted([(0usize, Echo), (1usize, Echo)]);
    let mut balance = Builder::new(RoundRobin::new())
        .endpoint_breaker(BreakerConfig::default())
        .build(list)
        .unwrap();
    let mut stream = match listener {
        Listener::Nobody => None,
        Listener::Gone => {
            drop(balance.endpoint_events());
            None
        }
        Listener::Stream => Some(balance.endpoint_events()),
    };
    drive(balance.ready()).unwrap();
    let one = balance.endpoint_breaker(&1).unwrap();
    let mut rejections = 0;
    let mut run = |n: u64| {
        for i in 0..n {
            drive(balance.ready()).unwrap();
            one.force_open();
            assert_eq!(drive(balance.call(i)).unwrap(), i);
            one.reset();
            if let Some(stream) = stream.as_mut() {
                while let Some((key, event)) = stream.try_next() {
                    assert_eq!(key, 1);
                    rejections += usize::from(matches!(event, BreakerEvent::Rejected { .. }));
                }
            }
        }
    };
    run(1_000);
    let before = allocations();
    run(1_000);
    let per_round = (allocations() - before) as f64 / 1_000.0;
    (per_round, rejections)
}

#[test]
fn keyed_events_allocate_nothing_per_request_or_rejection() {
    let (_, rejections) = allocations_per_rejection_round(Listener::Stream);
    assert!(
        rejections >= 1_000,
        "endpoint 1's circuit rejected a call in only {rejections} of 2,000 rounds"
    );
    for listener in [Listener::Nobody, Listener::Gone, Listener::Stream] {
        let (per_round, _) = allocations_per_rejection_round(listener);
        assert_eq!(per_round, 0.0, "{listener:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_from_calls_completing_on_other_threads_reach_a_shared_balancers_stream() {
    let (set, handle) = ChannelSet::new();
    let config = BreakerConfig::builder()
        .consecutive_failures(3)
        .without_error_percentage()
        // Long enough that the test never sees b half-open.
        .sleep_window(Duration::from_secs(600))
        .build()
        .unwrap();
    let mut balance: Lb = Builder::new(RoundRobin::new())
        .endpoint_breaker(config)
        .build_weighted(set)
        .unwrap();
    handle.insert("a", Ep::default(), 1).unwrap();
    handle.insert("b", Ep::failing(), 1).unwrap();
    let mut stream = balance.endpoint_events();
    let shared = tower::buffer::Buffer::new(balance, 64);
    let senders: Vec<_> = (0..4)
        .map(|_| {
            let mut svc = shared.clone();
            tokio::spawn(async move {
                for _ in 0..50 {
                    let _ = svc.ready().await.unwrap().call(()).await;
                }
            })
        })
        .collect();
    for sender in senders {
        sender.await.unwrap();
    }
    let first = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("b's circuit opened");
    assert_eq!(
        first,
        Some(("b", opened(TransitionReason::ConsecutiveFailures)))
    );
    // Anything after (rejections of calls that raced the opening) is b's too.
    drop(shared);
    while let Some((key, event)) = stream.try_next() {
        assert_eq!(key, "b", "{event:?}");
    }
}
