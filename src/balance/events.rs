//! Endpoint breaker events with the endpoint's key attached.
//!
//! With [endpoint breakers](super::Builder::endpoint_breaker) on, each endpoint's circuit
//! reports its [`BreakerEvent`]s to the configuration's `on_event` callback and to its
//! own [`EventStream`](crate::breaker::EventStream)s, none of which says *which*
//! endpoint it came from. A balancer can also forward every endpoint's events, keyed by
//! the endpoint's discovery key, to callbacks
//! ([`Builder::on_endpoint_event`](super::Builder::on_endpoint_event) for every balancer
//! a builder, layer or make-service makes,
//! [`Balance::on_endpoint_event`](super::Balance::on_endpoint_event) for one) and to
//! [`EndpointEventStream`]s ([`Balance::endpoint_events`](super::Balance::endpoint_events)).
//!
//! # Membership
//! The forward covers the endpoints that are members when it is first asked for (at
//! build time with the builder's callback) and every endpoint inserted later. An
//! `Insert` that replaces a key's service keeps its circuit and its forward. Once a key is removed, nothing its old circuit does is
//! forwarded any more (a [`BreakerHandle`](crate::breaker::BreakerHandle) kept on it
//! still sees its events), so a key inserted again later is reported for its new
//! circuit only.
//!
//! # Order, lag, end
//! Each circuit's events arrive in the order that circuit produced them, its
//! configuration's own `on_event` callback first, then the keyed callbacks in the order
//! they were registered, then the streams; events of different endpoints interleave in
//! the order they were delivered. Callbacks run on the thread that caused the event (a
//! caller of the balancer, a response future completing, a handle's user) and must be
//! quick. Each stream buffers at most the breaker configuration's
//! [`event_buffer`](crate::breaker::BreakerConfigBuilder::event_buffer) events and, when
//! further behind, loses its *oldest* ones and counts them
//! ([`EndpointEventStream::dropped`]); nothing waits for a slow stream. A stream ends
//! (yields `None`) once its buffered events are read and the balancer is dropped; from
//! then on nothing is forwarded to the callbacks either, even from circuits that
//! handles keep alive.
//!
//! # Cost
//! Nothing per request. Events are only made on transitions and rejections, and a
//! circuit builds none while nobody listens anywhere (no keyed callback, no live keyed
//! stream, no `on_event`, no stream of its own): a rejection then takes no lock and
//! allocates nothing. With a listener, an event takes the circuit's delivery locks (as
//! for its own streams) and a clone of the key per keyed stream. Each endpoint inserted
//! with breakers on carries one small forward record, allocated at insert.

use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use futures::Stream;
use parking_lot::Mutex;

use crate::breaker::events::{EventSink, Fanout, Subscription};
use crate::breaker::BreakerEvent;

/// A keyed callback registered with [`Balance::on_endpoint_event`](super::Balance::on_endpoint_event).
pub(crate) type KeyedCallback<K> = Arc<dyn Fn(&K, &BreakerEvent) + Send + Sync>;

/// The balancer's keyed listeners, seen through the key type only (so that the set,
/// which does not require `K: Clone + Send + Sync`, can hold it).
pub(crate) trait KeyedEvents<K>: Send + Sync {
    /// The forward of the endpoint with key `key`.
    fn forward(self: Arc<Self>, key: &K) -> Box<dyn EventSink>;
    /// A new stream.
    fn subscribe(&self) -> EndpointEventStream<K>;
    /// Adds a callback, called after those already there.
    fn add_callback(&self, callback: KeyedCallback<K>);
    /// Ends every stream (the balancer is gone).
    fn close(&self);
}

/// Every endpoint's events, keyed: the callbacks and streams of one balancer.
pub(crate) struct EndpointEventHub<K> {
    /// Registered rarely, read per event: replaced whole on registration.
    callbacks: Mutex<Arc<[KeyedCallback<K>]>>,
    has_callbacks: AtomicBool,
    streams: Fanout<(K, BreakerEvent)>,
    /// The balancer is gone: circuits that handles keep alive report nothing more.
    closed: AtomicBool,
}

impl<K: Clone + Send + Sync + 'static> EndpointEventHub<K> {
    /// A hub whose streams buffer `capacity` events each.
    pub(crate) fn shared(capacity: usize) -> Arc<dyn KeyedEvents<K>> {
        Arc::new(EndpointEventHub {
            callbacks: Mutex::new(Arc::from(Vec::new())),
            has_callbacks: AtomicBool::new(false),
            streams: Fanout::new(capacity),
            closed: AtomicBool::new(false),
        })
    }

    #[inline]
    fn is_listened(&self) -> bool {
        (self.has_callbacks.load(Ordering::Acquire) || self.streams.is_listened())
            && !self.closed.load(Ordering::Acquire)
    }

    fn deliver(&self, key: &K, event: &BreakerEvent) {
        if self.closed.load(Ordering::Acquire) {
            return;
        }
        if self.has_callbacks.load(Ordering::Acquire) {
            // Called without the lock, so a callback may register another or reach
            // into other circuits.
            let callbacks = self.callbacks.lock().clone();
            for callback in callbacks.iter() {
                callback(key, event);
            }
        }
        if self.streams.is_listened() {
            self.streams.push(&(key.clone(), *event));
        }
    }
}

impl<K: Clone + Send + Sync + 'static> KeyedEvents<K> for EndpointEventHub<K> {
    fn forward(self: Arc<Self>, key: &K) -> Box<dyn EventSink> {
        Box::new(KeyedForward {
            key: key.clone(),
            hub: self,
        })
    }

    fn subscribe(&self) -> EndpointEventStream<K> {
        EndpointEventStream {
            inner: self.streams.subscribe(),
        }
    }

    fn add_callback(&self, callback: KeyedCallback<K>) {
        let mut callbacks = self.callbacks.lock();
        let mut all: Vec<KeyedCallback<K>> = callbacks.iter().cloned().collect();
        all.push(callback);
        *callbacks = Arc::from(all);
        self.has_callbacks.store(true, Ordering::Release);
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.streams.close();
    }
}

/// No keyed callback: the default of [`Builder`](super::Builder) until
/// [`on_endpoint_event`](super::Builder::on_endpoint_event) sets one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoEndpointEvents;

/// What [`Builder::on_endpoint_event`](super::Builder::on_endpoint_event) registered:
/// [`NoEndpointEvents`], or a callback `Fn(&K, &BreakerEvent) + Send + Sync + 'static`
/// (with `K: Clone + Send + Sync + 'static`) that every balancer the builder makes calls
/// with its endpoints' events. Sealed: implemented for those only.
pub trait EndpointEventCallback<K>: sealed::Install<K> {}

impl<K, T: sealed::Install<K>> EndpointEventCallback<K> for T {}

pub(crate) mod sealed {
    use super::{Arc, BreakerEvent, EndpointEventHub, KeyedEvents, NoEndpointEvents};

    /// A balancer's keyed events, as the builder's callback makes them.
    pub struct Installed<K>(pub(crate) Arc<dyn KeyedEvents<K>>);

    /// Makes a balancer's keyed events with the builder's callback in them.
    pub trait Install<K> {
        /// The keyed events, streams buffering `capacity` each; `None` for no callback.
        fn install(self, capacity: usize) -> Option<Installed<K>>;
    }

    impl<K> Install<K> for NoEndpointEvents {
        fn install(self, _: usize) -> Option<Installed<K>> {
            None
        }
    }

    impl<K, F> Install<K> for F
    where
        K: Clone + Send + Sync + 'static,
        F: Fn(&K, &BreakerEvent) + Send + Sync + 'static,
    {
        fn install(self, capacity: usize) -> Option<Installed<K>> {
            let events = EndpointEventHub::shared(capacity);
            events.add_callback(Arc::new(self));
            Some(Installed(events))
        }
    }
}

/// One endpoint's key and the hub it reports to.
struct KeyedForward<K> {
    key: K,
    hub: Arc<EndpointEventHub<K>>,
}

impl<K: Clone + Send + Sync + 'static> EventSink for KeyedForward<K> {
    #[inline]
    fn is_listened(&self) -> bool {
        self.hub.is_listened()
    }

    fn deliver(&self, event: &BreakerEvent) {
        self.hub.deliver(&self.key, event);
    }
}

/// Where one endpoint's circuit forwards its events: made with the circuit, bound to
/// the balancer's hub when someone first listens (or at once, if someone already does),
/// detached when the endpoint is removed.
#[derive(Default)]
pub(crate) struct EndpointForward {
    target: OnceLock<Box<dyn EventSink>>,
    detached: AtomicBool,
}

impl EndpointForward {
    /// Sends this endpoint's events to `target` from now on (once; later calls change
    /// nothing).
    pub(crate) fn bind(&self, target: Box<dyn EventSink>) {
        let _ = self.target.set(target);
    }

    /// Stops forwarding for good: the endpoint was removed.
    pub(crate) fn detach(&self) {
        self.detached.store(true, Ordering::Release);
    }
}

impl EventSink for EndpointForward {
    #[inline]
    fn is_listened(&self) -> bool {
        !self.detached.load(Ordering::Acquire) && self.target.get().is_some_and(|t| t.is_listened())
    }

    fn deliver(&self, event: &BreakerEvent) {
        if self.detached.load(Ordering::Acquire) {
            return;
        }
        if let Some(target) = self.target.get() {
            target.deliver(event);
        }
    }
}

impl fmt::Debug for EndpointForward {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EndpointForward")
            .field("bound", &self.target.get().is_some())
            .field("detached", &self.detached.load(Ordering::Relaxed))
            .finish()
    }
}

/// The set's hold on its hub: ends the streams when the balancer is dropped (the hub
/// itself may live on in circuits that handles keep alive).
pub(crate) struct HubOwner<K>(pub(crate) Arc<dyn KeyedEvents<K>>);

impl<K> Drop for HubOwner<K> {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// A [`Stream`] of `(key, event)`: the breaker events of every endpoint of a
/// [`Balance`](super::Balance), with the discovery key of the endpoint whose circuit
/// produced each. From [`Balance::endpoint_events`](super::Balance::endpoint_events);
/// see the [module docs](self) for membership, order and lag.
///
/// The stream yields `None` once the balancer is dropped and the buffered events are
/// read. Dropping the stream unsubscribes it.
pub struct EndpointEventStream<K> {
    inner: Subscription<(K, BreakerEvent)>,
}

impl<K> EndpointEventStream<K> {
    /// How many events this stream lost because it fell more than its buffer behind.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped()
    }

    /// Takes the next buffered event without waiting.
    pub fn try_next(&mut self) -> Option<(K, BreakerEvent)> {
        self.inner.try_next()
    }
}

impl<K> Stream for EndpointEventStream<K> {
    type Item = (K, BreakerEvent);

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().inner.poll_next(cx)
    }
}

impl<K> fmt::Debug for EndpointEventStream<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("EndpointEventStream")
            .field(&self.inner)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::breaker::events::{EventCallback, EventHub};
    use crate::breaker::CircuitState;

    fn rejected() -> BreakerEvent {
        BreakerEvent::Rejected {
            state: CircuitState::Open,
            retry_after: None,
        }
    }

    /// A circuit's hub forwarding to `forward`, with no callback or stream of its own.
    fn circuit_hub(forward: &Arc<EndpointForward>) -> EventHub {
        EventHub::new(Some(EventCallback::forwarding(None, forward.clone())), 8)
    }

    #[test]
    fn a_circuit_builds_events_only_while_a_keyed_listener_exists() {
        let forward = Arc::new(EndpointForward::default());
        let hub = circuit_hub(&forward);
        assert!(!hub.is_listened(), "unbound");

        let events = EndpointEventHub::<&str>::shared(4);
        forward.bind(events.clone().forward(&"a"));
        assert!(!hub.is_listened(), "bound, nobody listening");

        let mut stream = events.subscribe();
        assert!(hub.is_listened(), "a live stream");
        hub.emit(rejected());
        assert_eq!(stream.try_next(), Some(("a", rejected())));
        drop(stream);
        assert!(!hub.is_listened(), "the stream is gone");

        events.add_callback(Arc::new(|_: &&str, _: &BreakerEvent| {}));
        assert!(hub.is_listened(), "a callback");
        forward.detach();
        assert!(!hub.is_listened(), "detached: the endpoint was removed");
    }

    #[test]
    fn a_detached_forward_delivers_nothing() {
        let forward = Arc::new(EndpointForward::default());
        let hub = circuit_hub(&forward);
        let events = EndpointEventHub::<&str>::shared(4);
        forward.bind(events.clone().forward(&"a"));
        let mut stream = events.subscribe();
        forward.detach();
        hub.emit(rejected());
        // Delivered directly too (an event in flight when the endpoint was removed).
        forward.deliver(&rejected());
        assert_eq!(stream.try_next(), None);
    }

    #[test]
    fn a_forward_binds_once() {
        let forward = EndpointForward::default();
        let events = EndpointEventHub::<&str>::shared(4);
        let mut stream = events.subscribe();
        forward.bind(events.clone().forward(&"a"));
        forward.bind(events.clone().forward(&"b"));
        forward.deliver(&rejected());
        assert_eq!(stream.try_next(), Some(("a", rejected())));
        assert_eq!(stream.try_next(), None);
    }
}
