//! How the balancer learns that a pending endpoint may have become ready, without polling
//! every endpoint on every request.
//!
//! Each endpoint slot owns one [`Waker`] for its whole life, made once when the slot is
//! first created. The balancer polls an endpoint's `poll_ready` only with that waker.
//! When a pending endpoint wakes it, the slot number is pushed (once) onto a shared
//! [`WakeQueue`] and the task that last waited on the balancer is woken. The balancer's
//! next `poll_ready` drains the queue and polls exactly the woken endpoints. It is the
//! idea of `FuturesUnordered`, but with the per-endpoint task allocated once at insert
//! instead of once per request.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Wake, Waker};

use futures::task::AtomicWaker;
use parking_lot::Mutex;

/// Slots woken since the balancer last looked, and the balancer's own waker.
#[derive(Debug, Default)]
pub(crate) struct WakeQueue {
    any: AtomicBool,
    woken: Mutex<Vec<u32>>,
    parent: AtomicWaker,
}

impl WakeQueue {
    /// Whether any slot was woken since the last [`drain_into`](Self::drain_into).
    #[inline]
    pub(crate) fn has_woken(&self) -> bool {
        self.any.load(Ordering::Acquire)
    }

    /// Moves the woken slots into `out` (which should be empty), clearing the queue.
    /// Swaps buffers so that neither side allocates in steady state.
    pub(crate) fn drain_into(&self, out: &mut Vec<u32>) {
        let mut woken = self.woken.lock();
        self.any.store(false, Ordering::Release);
        std::mem::swap(&mut *woken, out);
    }

    /// Registers the task to wake when a slot is woken.
    pub(crate) fn register(&self, waker: &Waker) {
        self.parent.register(waker);
    }
}

/// The waker of one slot.
#[derive(Debug)]
pub(crate) struct SlotWaker {
    slot: u32,
    queued: AtomicBool,
    queue: Arc<WakeQueue>,
}

impl SlotWaker {
    /// Makes the waker for `slot`.
    pub(crate) fn new(slot: u32, queue: Arc<WakeQueue>) -> (Arc<SlotWaker>, Waker) {
        let inner = Arc::new(SlotWaker {
            slot,
            queued: AtomicBool::new(false),
            queue,
        });
        let waker = Waker::from(inner.clone());
        (inner, waker)
    }

    /// Called by the balancer when it takes this slot off the queue.
    #[inline]
    pub(crate) fn clear(&self) {
        self.queued.store(false, Ordering::Release);
    }
}

impl Wake for SlotWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.queued.swap(true, Ordering::AcqRel) {
            self.queue.woken.lock().push(self.slot);
            self.queue.any.store(true, Ordering::Release);
        }
        self.queue.parent.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_is_queued_once_until_cleared() {
        let q = Arc::new(WakeQueue::default());
        let (inner, waker) = SlotWaker::new(7, q.clone());
        assert!(!q.has_woken());
        waker.wake_by_ref();
        waker.wake_by_ref();
        assert!(q.has_woken());
        let mut out = Vec::new();
        q.drain_into(&mut out);
        assert_eq!(out, vec![7]);
        assert!(!q.has_woken());
        waker.wake_by_ref();
        let mut again = Vec::new();
        q.drain_into(&mut again);
        assert!(again.is_empty(), "not re-queued before clear");
        inner.clear();
        waker.wake_by_ref();
        q.drain_into(&mut again);
        assert_eq!(again, vec![7]);
    }
}
