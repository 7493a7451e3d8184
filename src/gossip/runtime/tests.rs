//! A driver that ends by itself, made to die deterministically by the faults injected
//! through `RunningMember::faults`: the member must say it stopped, and why.

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;
use tokio::net::TcpStream;

use super::*;
use crate::gossip::proto::Config;

/// Long enough for any step of a loopback member on a loaded machine; a test waits for
/// what must happen, this only bounds a hang.
const CAP: Duration = Duration::from_secs(30);

async fn start(name: &str, seeds: &[SocketAddr]) -> Membership {
    Membership::start(
        MembershipConfig::new(name, "127.0.0.1:0".parse().unwrap())
            .protocol(Config::local())
            .seeds(seeds.iter().copied()),
    )
    .await
    .unwrap()
}

/// Waits until `m` says it stopped (its view watcher fires when the driver ends).
async fn until_stopped(m: &Membership) {
    let mut changes = m.watch_changes();
    tokio::time::timeout(CAP, async {
        while !m.is_stopped() {
            changes.changed().await.unwrap_or(());
        }
    })
    .await
    .expect("the member stopped");
}

/// A pair joined; `a` watched by an event stream and a discovery source.
struct Watched {
    a: Membership,
    b: Membership,
    events: EventStream,
    receiver: EventStream,
    discover:
        crate::gossip::discover::GossipDiscover<fn(SocketAddr, &Member) -> SocketAddr, SocketAddr>,
}

async fn watched_pair() -> Watched {
    let a = start("a", &[]).await;
    let b = start("b", &[a.gossip_addr()]).await;
    let events = a.events();
    let receiver = a.subscribe();
    let discover = a.discover((|addr, _| addr) as fn(SocketAddr, &Member) -> SocketAddr);
    Watched {
        a,
        b,
        events,
        receiver,
        discover,
    }
}

/// Everything that must show a driver that ended by itself with `expected`.
async fn assert_failed(mut w: Watched, expected: &DriverError) {
    until_stopped(&w.a).await;
    assert_eq!(w.a.stats().driver, DriverStatus::Failed);
    assert_eq!(w.a.driver_error().as_ref(), Some(expected));
    // Streams end rather than wait forever.
    let next = tokio::time::timeout(CAP, w.events.next()).await;
    assert!(matches!(next, Ok(None)), "the event stream ended");
    let recv = tokio::time::timeout(CAP, w.receiver.next()).await;
    assert!(matches!(recv, Ok(None)), "the receiver closed");
    let change = tokio::time::timeout(CAP, w.discover.next()).await;
    assert!(matches!(change, Ok(None)), "the discovery source ended");
    // The view is the last one, frozen; commands refuse.
    assert!(w.a.member("b").is_some());
    assert_eq!(w.a.set_service_addr(None), Err(Stopped));
    assert!(!w.a.leave().await, "a stopped member cannot leave");
    // Every clone, every call gets the failure from shutdown.
    let clone = w.a.clone();
    assert_eq!(w.a.shutdown().await.as_ref().err(), Some(expected));
    assert_eq!(clone.shutdown().await.as_ref().err(), Some(expected));
    assert_eq!(w.a.stats().driver, DriverStatus::Failed);
    w.b.kill();
}

#[tokio::test]
async fn a_panicking_driver_stops_the_member_and_shutdown_returns_the_panic() {
    let w = watched_pair().await;
    assert_eq!(w.a.stats().driver, DriverStatus::Running);
    w.a.shared
        .faults
        .panic_driver
        .store(true, Ordering::Relaxed);
    w.a.shared.wake.notify_one();
    let expected = DriverError::Panicked("injected driver fault".into());
    assert_failed(w, &expected).await;
}

#[tokio::test]
async fn a_listener_task_that_ends_stops_the_member_with_its_panic() {
    let w = watched_pair().await;
    w.a.shared
        .faults
        .panic_listener
        .store(true, Ordering::Relaxed);
    // The listener dies at the next connection it accepts.
    let _conn = TcpStream::connect(w.a.gossip_addr()).await.unwrap();
    let expected = DriverError::ListenerEnded(Some("injected listener fault".into()));
    assert_failed(w, &expected).await;
}

#[tokio::test]
async fn a_failed_driver_also_ends_background_retry_join() {
    // A seed that is down: the member runs alone and retries in the background.
    let down = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let a = Membership::start(
        MembershipConfig::new("a", "127.0.0.1:0".parse().unwrap())
            .protocol(Config::local())
            .seeds([down])
            .join_attempts(1)
            .retry_join(RetryJoin::forever()),
    )
    .await
    .unwrap();
    a.shared.faults.panic_driver.store(true, Ordering::Relaxed);
    a.shared.wake.notify_one();
    until_stopped(&a).await;
    // shutdown waits for the retry task too: it returns, with the panic.
    let shut = tokio::time::timeout(CAP, a.shutdown())
        .await
        .expect("returned");
    assert!(matches!(shut, Err(DriverError::Panicked(_))));
}

#[tokio::test]
async fn stopping_on_request_is_stopped_not_failed() {
    let a = start("a", &[]).await;
    let b = start("b", &[a.gossip_addr()]).await;
    assert_eq!(b.shutdown().await, Ok(()));
    assert_eq!(b.stats().driver, DriverStatus::Stopped);
    assert_eq!(b.driver_error(), None);
    a.kill();
    until_stopped(&a).await;
    assert_eq!(a.stats().driver, DriverStatus::Stopped);
    assert_eq!(a.shutdown().await, Ok(()));
}

#[cfg(feature = "tracing")]
mod traced {
    use std::sync::{Arc, Mutex};

    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Level, Metadata, Subscriber};

    use super::*;

    /// Collects the error events, their fields formatted.
    #[derive(Clone, Default)]
    struct Errors(Arc<Mutex<Vec<String>>>);

    struct Fields<'a>(&'a mut String);

    impl Visit for Fields<'_> {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            self.0.push_str(&format!("{}={:?} ", field.name(), value));
        }
    }

    impl Subscriber for Errors {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &Attributes<'_>) -> Id {
            Id::from_u64(1)
        }
        fn record(&self, _: &Id, _: &Record<'_>) {}
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, event: &tracing::Event<'_>) {
            if *event.metadata().level() == Level::ERROR {
                let mut line = String::new();
                event.record(&mut Fields(&mut line));
                self.0.lock().unwrap().push(line);
            }
        }
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
    }

    // Current-thread runtime: the driver runs on this thread, under this subscriber.
    #[tokio::test]
    async fn a_panicking_driver_is_logged_as_an_error() {
        let errors = Errors::default();
        let _guard = tracing::subscriber::set_default(errors.clone());
        let a = start("a", &[]).await;
        assert!(errors.0.lock().unwrap().is_empty());
        a.shared.faults.panic_driver.store(true, Ordering::Relaxed);
        a.shared.wake.notify_one();
        until_stopped(&a).await;
        let logged = errors.0.lock().unwrap().clone();
        assert_eq!(logged.len(), 1, "{logged:?}");
        assert!(
            logged[0].contains("injected driver fault") && logged[0].contains("member=\"a\""),
            "{logged:?}"
        );
    }
}
