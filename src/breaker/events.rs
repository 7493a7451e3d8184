//! What a circuit tells the outside: state transitions and rejections, in order, to a
//! callback registered on the builder and to any number of [`EventStream`]s.
//!
//! # Order and reentrancy
//! Events are queued in the order they happen (transitions under the transition lock) and
//! delivered by whichever thread holds the delivery turn, one at a time, callback first,
//! then every stream. A callback may call back into the
//! [`BreakerHandle`](super::BreakerHandle) (say, `force_open` on a transition): the event
//! that call makes is queued and delivered right after the current one, never nested and
//! never deadlocking. Callbacks run on the thread that made or found the event (a caller
//! of the service, or the handle's user), so they must be quick.
//!
//! # Lag
//! Each stream buffers at most `event_buffer` events (default 64). A stream that falls
//! further behind loses its *oldest* events, never the newest, and counts them:
//! [`EventStream::dropped`]. Nothing ever waits for a slow stream. A stream ends (yields
//! `None`) once its buffered events are read and the circuit is gone (every service,
//! layer and handle sharing it dropped).
//!
//! # Cost
//! When there is neither a callback nor a live stream, no event is built: a rejection
//! costs no lock. With a listener, each rejection takes two short
//! uncontended-in-practice locks to queue and deliver its event. A balancer's endpoint
//! circuits also forward to the balancer's keyed listeners (see
//! [`balance::events`](crate::balance::events)); that forward counts as a listener only
//! while one of those exists.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::task::AtomicWaker;
use futures::Stream;
use parking_lot::Mutex;

use super::circuit::{CircuitState, TransitionReason};

/// One thing a circuit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerEvent {
    /// The circuit moved from one state to another (or was reset in place: `from == to`).
    StateChanged {
        /// The state before.
        from: CircuitState,
        /// The state after.
        to: CircuitState,
        /// Why.
        reason: TransitionReason,
    },
    /// A call was rejected without reaching the inner service.
    Rejected {
        /// The state that rejected it (`Open`, `HalfOpen` or `ForcedOpen`).
        state: CircuitState,
        /// When the circuit next admits a probe, as told to the caller.
        retry_after: Option<Duration>,
    },
}

/// The user's callback registered with `on_event`.
pub(crate) type UserCallback = Arc<dyn Fn(&BreakerEvent) + Send + Sync>;

/// Somewhere else a circuit's events go, asked first whether anyone is there (so that a
/// circuit builds no event for a forward nobody listens to). The balancer forwards its
/// endpoints' events, keyed, through one of these.
pub(crate) trait EventSink: Send + Sync {
    /// Whether [`deliver`](Self::deliver) would reach anyone now.
    fn is_listened(&self) -> bool;
    /// Takes one event (on the thread delivering it, in the circuit's order).
    fn deliver(&self, event: &BreakerEvent);
}

/// What a circuit calls with each event: the user's `on_event` callback and, for a
/// circuit owned by a balancer, a forward to the balancer's listeners.
#[derive(Clone)]
pub(crate) struct EventCallback {
    user: Option<UserCallback>,
    forward: Option<Arc<dyn EventSink>>,
}

impl EventCallback {
    /// The user's callback alone.
    pub(crate) fn user(f: UserCallback) -> Self {
        EventCallback {
            user: Some(f),
            forward: None,
        }
    }

    /// `callback` (the user's, if any) followed by `forward`.
    #[cfg_attr(not(feature = "balance"), allow(dead_code))] // the balancer's forward
    pub(crate) fn forwarding(
        callback: Option<&EventCallback>,
        forward: Arc<dyn EventSink>,
    ) -> Self {
        EventCallback {
            user: callback.and_then(|c| c.user.clone()),
            forward: Some(forward),
        }
    }

    #[inline]
    fn is_listened(&self) -> bool {
        self.user.is_some() || self.forward.as_ref().is_some_and(|f| f.is_listened())
    }

    fn call(&self, event: &BreakerEvent) {
        if let Some(user) = &self.user {
            user(event);
        }
        if let Some(forward) = &self.forward {
            forward.deliver(event);
        }
    }
}

struct StreamQueue<T> {
    events: VecDeque<T>,
    dropped: u64,
    closed: bool,
}

struct StreamShared<T> {
    queue: Mutex<StreamQueue<T>>,
    waker: AtomicWaker,
}

impl<T> StreamShared<T> {
    fn close(&self) {
        self.queue.lock().closed = true;
        self.waker.wake();
    }
}

/// The streams of one source of events: each gets every event pushed from its
/// subscription on, in a buffer of at most `capacity` that drops its oldest. Shared by a
/// circuit's [`EventHub`] and the balancer's keyed endpoint events.
pub(crate) struct Fanout<T> {
    capacity: usize,
    streams: Mutex<Vec<Arc<StreamShared<T>>>>,
    live_streams: Arc<AtomicUsize>,
}

impl<T: Clone> Fanout<T> {
    pub(crate) fn new(capacity: usize) -> Self {
        Fanout {
            capacity: capacity.max(1),
            streams: Mutex::new(Vec::new()),
            live_streams: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Whether some subscription is alive.
    #[inline]
    pub(crate) fn is_listened(&self) -> bool {
        self.live_streams.load(Ordering::Relaxed) > 0
    }

    /// How many subscriptions are alive.
    pub(crate) fn live(&self) -> usize {
        self.live_streams.load(Ordering::Relaxed)
    }

    /// A new subscription, seeing events from now on.
    pub(crate) fn subscribe(&self) -> Subscription<T> {
        let shared = Arc::new(StreamShared {
            queue: Mutex::new(StreamQueue {
                events: VecDeque::new(),
                dropped: 0,
                closed: false,
            }),
            waker: AtomicWaker::new(),
        });
        let mut streams = self.streams.lock();
        streams.retain(|s| Arc::strong_count(s) > 1);
        streams.push(shared.clone());
        self.live_streams.fetch_add(1, Ordering::Relaxed);
        Subscription {
            shared,
            live_streams: self.live_streams.clone(),
        }
    }

    /// Appends `event` to every open subscription, dropping the oldest of a full one.
    pub(crate) fn push(&self, event: &T) {
        let streams = self.streams.lock();
        for s in streams.iter() {
            let mut q = s.queue.lock();
            if q.closed {
                continue;
            }
            if q.events.len() == self.capacity {
                q.events.pop_front();
                q.dropped += 1;
            }
            q.events.push_back(event.clone());
            drop(q);
            s.waker.wake();
        }
    }
}

impl<T> Fanout<T> {
    /// Ends every subscription once its buffered events are read.
    pub(crate) fn close(&self) {
        for s in self.streams.lock().iter() {
            s.close();
        }
    }
}

impl<T> Drop for Fanout<T> {
    fn drop(&mut self) {
        for s in self.streams.get_mut().iter() {
            s.close();
        }
    }
}

/// The reading end of a [`Fanout`]: the machinery of [`EventStream`] for any item.
pub(crate) struct Subscription<T> {
    shared: Arc<StreamShared<T>>,
    live_streams: Arc<AtomicUsize>,
}

impl<T> Subscription<T> {
    pub(crate) fn dropped(&self) -> u64 {
        self.shared.queue.lock().dropped
    }

    pub(crate) fn try_next(&mut self) -> Option<T> {
        self.shared.queue.lock().events.pop_front()
    }

    pub(crate) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let poll_queue = |shared: &StreamShared<T>| {
            let mut q = shared.queue.lock();
            match q.events.pop_front() {
                Some(e) => Poll::Ready(Some(e)),
                None if q.closed => Poll::Ready(None),
                None => Poll::Pending,
            }
        };
        if let Poll::Ready(r) = poll_queue(&self.shared) {
            return Poll::Ready(r);
        }
        self.shared.waker.register(cx.waker());
        // An event may have arrived between the first look and the registration.
        poll_queue(&self.shared)
    }
}

impl<T> Drop for Subscription<T> {
    fn drop(&mut self) {
        self.shared.queue.lock().closed = true;
        self.live_streams.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<T> fmt::Debug for Subscription<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let q = self.shared.queue.lock();
        f.debug_struct("Subscription")
            .field("buffered", &q.events.len())
            .field("dropped", &q.dropped)
            .field("closed", &q.closed)
            .finish()
    }
}

/// The event fan-out of one circuit. See the [module docs](self).
pub(crate) struct EventHub {
    callback: Option<EventCallback>,
    streams: Fanout<BreakerEvent>,
    pending: Mutex<VecDeque<BreakerEvent>>,
    delivering: Mutex<()>,
}

impl EventHub {
    pub(crate) fn new(callback: Option<EventCallback>, capacity: usize) -> Self {
        EventHub {
            callback,
            streams: Fanout::new(capacity),
            pending: Mutex::new(VecDeque::new()),
            delivering: Mutex::new(()),
        }
    }

    /// Whether anyone would see an event (so whether to build one).
    #[inline]
    pub(crate) fn is_listened(&self) -> bool {
        self.streams.is_listened()
            || self
                .callback
                .as_ref()
                .is_some_and(EventCallback::is_listened)
    }

    /// A new stream, seeing events from now on.
    pub(crate) fn subscribe(&self) -> EventStream {
        EventStream {
            inner: self.streams.subscribe(),
        }
    }

    /// Queues an event without delivering it (called under the transition lock, so
    /// transitions queue in the order they happen). Call [`flush`](Self::flush) after
    /// releasing that lock.
    pub(crate) fn queue(&self, event: BreakerEvent) {
        if self.is_listened() {
            self.pending.lock().push_back(event);
        }
    }

    /// Queues and delivers an event.
    pub(crate) fn emit(&self, event: BreakerEvent) {
        if self.is_listened() {
            self.pending.lock().push_back(event);
            self.flush();
        }
    }

    /// Delivers queued events, unless another thread (or an outer frame of this one)
    /// holds the delivery turn, in which case that one delivers them.
    pub(crate) fn flush(&self) {
        loop {
            let Some(turn) = self.delivering.try_lock() else {
                return;
            };
            loop {
                let next = self.pending.lock().pop_front();
                let Some(event) = next else { break };
                self.deliver(&event);
            }
            drop(turn);
            // An event queued between our last pop and the unlock found the turn taken;
            // take it again rather than strand that event.
            if self.pending.lock().is_empty() {
                return;
            }
        }
    }

    fn deliver(&self, event: &BreakerEvent) {
        if let Some(cb) = &self.callback {
            cb.call(event);
        }
        self.streams.push(event);
    }

    /// Ends every stream (the circuit was retired: nothing more will happen to it).
    pub(crate) fn close(&self) {
        self.streams.close();
    }
}

impl fmt::Debug for EventHub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventHub")
            .field("callback", &self.callback.is_some())
            .field("capacity", &self.streams.capacity)
            .field("live_streams", &self.streams.live())
            .finish()
    }
}

/// A [`Stream`] of a circuit's [`BreakerEvent`]s, from
/// [`BreakerHandle::events`](super::BreakerHandle::events). See the
/// [module docs](self) for ordering and lag.
pub struct EventStream {
    inner: Subscription<BreakerEvent>,
}

impl EventStream {
    /// How many events this stream lost because it fell more than its buffer behind.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped()
    }

    /// Takes the next buffered event without waiting.
    pub fn try_next(&mut self) -> Option<BreakerEvent> {
        self.inner.try_next()
    }
}

impl Stream for EventStream {
    type Item = BreakerEvent;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<BreakerEvent>> {
        self.get_mut().inner.poll_next(cx)
    }
}

impl fmt::Debug for EventStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let q = self.inner.shared.queue.lock();
        f.debug_struct("EventStream")
            .field("buffered", &q.events.len())
            .field("dropped", &q.dropped)
            .field("closed", &q.closed)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn rejected(ms: u64) -> BreakerEvent {
        BreakerEvent::Rejected {
            state: CircuitState::Open,
            retry_after: Some(Duration::from_millis(ms)),
        }
    }

    #[test]
    fn unlistened_hub_builds_nothing() {
        let hub = EventHub::new(None, 4);
        assert!(!hub.is_listened());
        let s = hub.subscribe();
        assert!(hub.is_listened());
        drop(s);
        assert!(!hub.is_listened());
    }

    #[test]
    fn slow_stream_loses_the_oldest_and_counts_them() {
        let hub = EventHub::new(None, 2);
        let mut s = hub.subscribe();
        for ms in 0..5 {
            hub.emit(rejected(ms));
        }
        assert_eq!(s.dropped(), 3);
        assert_eq!(s.try_next(), Some(rejected(3)));
        assert_eq!(s.try_next(), Some(rejected(4)));
        assert_eq!(s.try_next(), None);
    }

    #[tokio::test]
    async fn stream_ends_after_the_hub_is_gone() {
        let hub = EventHub::new(None, 8);
        let mut s = hub.subscribe();
        hub.emit(rejected(1));
        drop(hub);
        assert_eq!(s.next().await, Some(rejected(1)));
        assert_eq!(s.next().await, None);
    }

    #[test]
    fn callback_reentering_the_hub_is_delivered_after_not_inside() {
        use std::sync::OnceLock;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let hub_slot: Arc<OnceLock<Arc<EventHub>>> = Arc::new(OnceLock::new());
        let cb: EventCallback = EventCallback::user({
            let (seen, hub_slot) = (seen.clone(), hub_slot.clone());
            Arc::new(move |e: &BreakerEvent| {
                seen.lock().push(*e);
                if *e == rejected(1) {
                    // Reentrant emit: must not deadlock, must come after event 1.
                    hub_slot.get().unwrap().emit(rejected(2));
                    seen.lock().push(rejected(99));
                }
            })
        });
        let hub = Arc::new(EventHub::new(Some(cb), 8));
        hub_slot.set(hub.clone()).unwrap();
        hub.emit(rejected(1));
        assert_eq!(*seen.lock(), [rejected(1), rejected(99), rejected(2)]);
    }
}
