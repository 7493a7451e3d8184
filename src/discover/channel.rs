//! A set of endpoints changed at runtime through a handle.

use std::convert::Infallible;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use tokio::sync::mpsc;
use tower::discover::Change;

use super::Weighted;

/// A discovery source fed by [`ChannelHandle`]s: each `insert` or `remove` on a handle
/// becomes one change, delivered in order, and a change sent before the balancer's next
/// `poll_ready` is applied by it (even when the task has used up tokio's cooperative
/// budget). The stream ends when every handle is dropped
/// (the balancer keeps the endpoints it has).
///
/// ```
/// use palisade::discover::ChannelSet;
///
/// let (set, handle) = ChannelSet::<&str, ()>::new();
/// handle.insert("a", (), 3).unwrap();
/// handle.insert("a", (), 1).unwrap(); // update: same key, new service and weight
/// handle.remove("a").unwrap();
/// # drop(set);
/// ```
pub struct ChannelSet<K, S> {
    rx: mpsc::UnboundedReceiver<Change<K, Weighted<S>>>,
}

/// Changes the endpoints of a [`ChannelSet`]. Cheap to clone; every clone feeds the same
/// set.
pub struct ChannelHandle<K, S> {
    tx: mpsc::UnboundedSender<Change<K, Weighted<S>>>,
}

impl<K, S> Clone for ChannelHandle<K, S> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
        }
    }
}

/// The [`ChannelSet`] (and so its balancer) was dropped; the change went nowhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Closed;

impl fmt::Display for Closed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the endpoint set was dropped")
    }
}

impl std::error::Error for Closed {}

impl<K, S> ChannelSet<K, S> {
    /// An empty set and its first handle.
    pub fn new() -> (Self, ChannelHandle<K, S>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (ChannelSet { rx }, ChannelHandle { tx })
    }
}

impl<K, S> ChannelHandle<K, S> {
    /// Adds an endpoint with a weight (0 counts as 1), or, for a key already present,
    /// replaces its service and weight (its statistics are kept).
    pub fn insert(&self, key: K, service: S, weight: u32) -> Result<(), Closed> {
        self.tx
            .send(Change::Insert(key, Weighted::new(service, weight)))
            .map_err(|_| Closed)
    }

    /// Removes the endpoint with this key, if present. Its requests in flight finish.
    pub fn remove(&self, key: K) -> Result<(), Closed> {
        self.tx.send(Change::Remove(key)).map_err(|_| Closed)
    }

    /// Whether the set was dropped.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

impl<K, S> Stream for ChannelSet<K, S> {
    type Item = Result<Change<K, Weighted<S>>, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        // `try_recv` first: it is not subject to tokio's cooperative budget, so a change
        // already sent is seen by the very next `poll_ready`, even in a busy task.
        match self.rx.try_recv() {
            Ok(change) => Poll::Ready(Some(Ok(change))),
            Err(mpsc::error::TryRecvError::Disconnected) => Poll::Ready(None),
            Err(mpsc::error::TryRecvError::Empty) => self.rx.poll_recv(cx).map(|c| c.map(Ok)),
        }
    }
}

impl<K, S> fmt::Debug for ChannelSet<K, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelSet").finish_non_exhaustive()
    }
}

impl<K, S> fmt::Debug for ChannelHandle<K, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelHandle")
            .field("closed", &self.is_closed())
            .finish()
    }
}
