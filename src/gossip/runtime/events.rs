//! The membership events of one member, as palisade delivers events everywhere: a
//! [`Stream`] with a bounded buffer that loses its *oldest* events when its reader falls
//! behind, and counts them ([`EventStream::dropped`]), like the breaker's
//! [`EventStream`](crate::breaker::EventStream).
//!
//! Under it is one `tokio::sync::broadcast` channel per member (its capacity is
//! [`event_capacity`](super::MembershipConfig::event_capacity)): a reader that falls
//! further behind is moved past what it missed, and that count is what `dropped` adds
//! up. Nothing ever waits for a slow reader, and the view
//! ([`Membership::members`](super::Membership::members)) is always complete.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use futures::Stream;
use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};

use crate::gossip::proto::Event;

type Receiving =
    Pin<Box<dyn Future<Output = (Result<Event, RecvError>, broadcast::Receiver<Event>)> + Send>>;

enum State {
    /// Nothing in flight: the receiver is here.
    Idle(broadcast::Receiver<Event>),
    /// A `poll_next` found nothing and waits; the receiver is inside the future.
    Waiting(Receiving),
    /// The member stopped and every buffered event was read.
    Ended,
}

/// A [`Stream`] of one member's [`Event`]s from the moment it was made, from
/// [`Membership::subscribe`](super::Membership::subscribe). A reader that falls more
/// than [`event_capacity`](super::MembershipConfig::event_capacity) events behind loses
/// the oldest and goes on with the rest; [`dropped`](Self::dropped) counts what it lost.
/// Once the member stops, the stream yields the events it had not read, then ends
/// (`None`). Dropping it unsubscribes it.
pub struct EventStream {
    state: State,
    dropped: u64,
    /// The waker of the last `poll_next`, so that `try_next` can look into a wait in
    /// flight without taking the wake-up away from the task that waits.
    waker: Option<Waker>,
}

impl EventStream {
    pub(crate) fn new(receiver: Option<broadcast::Receiver<Event>>) -> Self {
        EventStream {
            state: receiver.map_or(State::Ended, State::Idle),
            dropped: 0,
            waker: None,
        }
    }

    /// How many events this stream lost because it fell more than its buffer behind.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Takes the next buffered event without waiting: `None` when none is buffered now
    /// (or the stream ended).
    pub fn try_next(&mut self) -> Option<Event> {
        if let State::Waiting(wait) = &mut self.state {
            let waker = self.waker.clone().unwrap_or_else(|| Waker::noop().clone());
            match wait.as_mut().poll(&mut Context::from_waker(&waker)) {
                Poll::Pending => return None,
                Poll::Ready((got, receiver)) => {
                    self.state = State::Idle(receiver);
                    match got {
                        Ok(event) => return Some(event),
                        Err(RecvError::Lagged(n)) => self.dropped += n,
                        Err(RecvError::Closed) => {
                            self.state = State::Ended;
                            return None;
                        }
                    }
                }
            }
        }
        let State::Idle(receiver) = &mut self.state else {
            return None;
        };
        loop {
            match receiver.try_recv() {
                Ok(event) => return Some(event),
                Err(TryRecvError::Lagged(n)) => self.dropped += n,
                Err(TryRecvError::Empty) => return None,
                Err(TryRecvError::Closed) => {
                    self.state = State::Ended;
                    return None;
                }
            }
        }
    }
}

impl Stream for EventStream {
    type Item = Event;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        let this = self.get_mut();
        loop {
            match std::mem::replace(&mut this.state, State::Ended) {
                State::Ended => return Poll::Ready(None),
                State::Idle(mut receiver) => {
                    // The events already buffered need no future.
                    match receiver.try_recv() {
                        Ok(event) => {
                            this.state = State::Idle(receiver);
                            return Poll::Ready(Some(event));
                        }
                        Err(TryRecvError::Lagged(n)) => {
                            this.dropped += n;
                            this.state = State::Idle(receiver);
                        }
                        Err(TryRecvError::Closed) => return Poll::Ready(None),
                        Err(TryRecvError::Empty) => {
                            this.state = State::Waiting(Box::pin(async move {
                                let got = receiver.recv().await;
                                (got, receiver)
                            }));
                        }
                    }
                }
                State::Waiting(mut wait) => {
                    if !this.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                        this.waker = Some(cx.waker().clone());
                    }
                    match wait.as_mut().poll(cx) {
                        Poll::Pending => {
                            this.state = State::Waiting(wait);
                            return Poll::Pending;
                        }
                        Poll::Ready((got, receiver)) => {
                            this.state = State::Idle(receiver);
                            match got {
                                Ok(event) => return Poll::Ready(Some(event)),
                                Err(RecvError::Lagged(n)) => this.dropped += n,
                                Err(RecvError::Closed) => {
                                    this.state = State::Ended;
                                    return Poll::Ready(None);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

impl fmt::Debug for EventStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Idle(_) => "idle",
            State::Waiting(_) => "waiting",
            State::Ended => "ended",
        };
        f.debug_struct("EventStream")
            .field("state", &state)
            .field("dropped", &self.dropped)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gossip::proto::{Event, Identity, Member, MemberState};
    use futures::StreamExt;

    fn join(i: u8) -> Event {
        Event::Join(Member {
            identity: Identity::new(format!("m{i}"), ([10, 0, 0, i], 7946).into()),
            incarnation: 0,
            state: MemberState::Alive,
            state_since: 0,
        })
    }

    fn name(e: &Event) -> &str {
        e.member().name()
    }

    #[test]
    fn a_slow_reader_loses_the_oldest_events_and_counts_them() {
        let (tx, rx) = broadcast::channel(2);
        let mut s = EventStream::new(Some(rx));
        for i in 0..5 {
            tx.send(join(i)).unwrap();
        }
        assert_eq!(s.try_next().as_ref().map(name), Some("m3"));
        assert_eq!(s.dropped(), 3);
        assert_eq!(s.try_next().as_ref().map(name), Some("m4"));
        assert!(s.try_next().is_none());
    }

    #[tokio::test]
    async fn a_waiting_stream_is_woken_and_counts_lag_while_it_waited() {
        let (tx, rx) = broadcast::channel(2);
        let mut s = EventStream::new(Some(rx));
        let reader = tokio::spawn(async move {
            let first = s.next().await.map(|e| name(&e).to_owned());
            (first, s)
        });
        tokio::task::yield_now().await;
        for i in 0..3 {
            tx.send(join(i)).unwrap();
        }
        let (first, mut s) = reader.await.unwrap();
        // Three sent into a buffer of two while the reader waited: m0 was lost.
        assert_eq!(first.as_deref(), Some("m1"));
        assert_eq!(s.dropped(), 1);
        assert_eq!(s.next().await.as_ref().map(name), Some("m2"));
    }

    #[tokio::test]
    async fn try_next_sees_an_event_that_arrived_during_a_wait_in_flight() {
        let (tx, rx) = broadcast::channel(4);
        let mut s = EventStream::new(Some(rx));
        // Start a wait, then give up on it: the wait stays in flight inside the stream.
        let waited = tokio::time::timeout(std::time::Duration::ZERO, s.next()).await;
        assert!(waited.is_err(), "nothing was sent yet");
        tx.send(join(7)).unwrap();
        assert_eq!(s.try_next().as_ref().map(name), Some("m7"));
        assert!(s.try_next().is_none());
    }

    #[tokio::test]
    async fn the_stream_yields_what_is_buffered_then_ends_when_the_sender_goes() {
        let (tx, rx) = broadcast::channel(4);
        let mut s = EventStream::new(Some(rx));
        tx.send(join(1)).unwrap();
        drop(tx);
        assert_eq!(s.next().await.as_ref().map(name), Some("m1"));
        assert!(s.next().await.is_none());
        assert!(s.try_next().is_none());
        let mut never = EventStream::new(None);
        assert!(never.next().await.is_none());
    }
}
