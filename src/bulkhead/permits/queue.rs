//! The wait queue of the [permits](super): strictly FIFO, behind a `parking_lot` lock
//! (see "The queue" and "No lost wake-ups" in the parent module's docs).

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;
use std::task::{Context, Waker};

use super::{HomeShard, Permit, Permits, ScanPolicy, ENQUEUE_ROUNDS};

pub(super) struct WaitQueue {
    pub(super) next_id: u64,
    /// Sorted by `id` (pushed at the back with increasing ids, removed anywhere).
    pub(super) waiters: VecDeque<Waiter>,
}

pub(super) struct Waiter {
    id: u64,
    waker: Option<Waker>,
}

impl WaitQueue {
    fn position(&self, id: u64) -> Option<usize> {
        self.waiters.binary_search_by_key(&id, |w| w.id).ok()
    }
}

impl Permits {
    /// Joins the back of the queue, or is admitted at once if nobody is ahead and a permit
    /// is free.
    pub(crate) fn enqueue(home: &Arc<HomeShard>) -> Result<Permit, QueueTicket> {
        let permits = &home.permits;
        let mut wake = WakeList::default();
        let admitted = {
            let mut queue = permits.queue.lock();
            // Serve those already waiting first: a permit may have been freed between the
            // caller's fast-path attempt and this lock.
            permits.admit_locked(&mut queue, &mut wake);
            if queue.waiters.is_empty()
                && permits.take_anywhere(home.shard, ScanPolicy::AtMost(ENQUEUE_ROUNDS))
            {
                None
            } else {
                let id = queue.next_id;
                queue.next_id += 1;
                queue.waiters.push_back(Waiter { id, waker: None });
                permits.shared.waiting.fetch_add(1, SeqCst);
                // Scan again after publishing `waiting`: a release that read `waiting == 0`
                // before our increment left its permit in a stock or the pool for us.
                permits.admit_locked(&mut queue, &mut wake);
                // Admitted by that scan: the permit is ours already.
                queue.position(id).map(|_| id)
            }
        };
        wake.wake_all();
        match admitted {
            None => Ok(Permit {
                home: Arc::clone(home),
            }),
            Some(id) => Err(QueueTicket {
                home: Some(Arc::clone(home)),
                id,
            }),
        }
    }

    /// Admits waiters from the head of the queue while permits are free anywhere. The
    /// caller holds the queue lock; wakers are collected to be woken after it is released.
    pub(super) fn admit_locked(&self, queue: &mut WaitQueue, wake: &mut WakeList) {
        while !queue.waiters.is_empty() && self.take_anywhere(0, ScanPolicy::UntilConsistent) {
            if let Some(waiter) = queue.waiters.pop_front() {
                self.shared.waiting.fetch_sub(1, SeqCst);
                if let Some(waker) = waiter.waker {
                    wake.push(waker);
                }
            }
        }
    }

    /// After returning a permit: if anyone waits, admits from the head.
    #[inline]
    pub(super) fn serve_queue(&self) {
        if self.shared.waiting.load(SeqCst) != 0 {
            self.admit_waiters();
        }
    }

    #[cold]
    fn admit_waiters(&self) {
        let mut wake = WakeList::default();
        {
            let mut queue = self.queue.lock();
            self.admit_locked(&mut queue, &mut wake);
        }
        wake.wake_all();
    }

    /// Removes waiter `id` from the queue; `false` if it was no longer there (admitted).
    pub(super) fn remove_waiter(&self, id: u64) -> bool {
        let mut queue = self.queue.lock();
        match queue.position(id) {
            Some(at) => {
                queue.waiters.remove(at);
                self.shared.waiting.fetch_sub(1, SeqCst);
                true
            }
            None => false,
        }
    }
}

/// A place in the wait queue. Dropping it leaves the queue, or, if a permit was already
/// handed to it, passes that permit on.
pub(crate) struct QueueTicket {
    /// `None` once the ticket has been turned into a permit or cancelled.
    home: Option<Arc<HomeShard>>,
    id: u64,
}

impl QueueTicket {
    /// The permit, if the ticket has been admitted; otherwise registers `cx`'s waker to be
    /// woken on admission.
    pub(crate) fn poll_admitted(&mut self, cx: &Context<'_>) -> Option<Permit> {
        let home = self.home.as_ref()?;
        {
            let mut queue = home.permits.queue.lock();
            if let Some(at) = queue.position(self.id) {
                let slot = &mut queue.waiters[at].waker;
                match slot {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => *slot = Some(cx.waker().clone()),
                }
                return None;
            }
        }
        self.home.take().map(|home| Permit { home })
    }

    /// Gives up waiting (the maximum wait elapsed) and counts the rejection. If a permit
    /// was handed over in the meantime, returns it instead: the call is admitted after all.
    pub(crate) fn give_up(&mut self, waited: std::time::Duration) -> Option<Permit> {
        let home = self.home.take()?;
        if home.permits.remove_waiter(self.id) {
            home.permits.record_rejection(waited);
            None
        } else {
            Some(Permit { home })
        }
    }
}

impl Drop for QueueTicket {
    fn drop(&mut self) {
        if let Some(home) = self.home.take() {
            if !home.permits.remove_waiter(self.id) {
                // Admitted but never used: dropping the permit passes it on.
                drop(Permit { home });
            }
        }
    }
}

impl fmt::Debug for QueueTicket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueTicket").field("id", &self.id).finish()
    }
}

/// Wakers to wake once the queue lock is released: usually one, so the first is kept inline.
#[derive(Default)]
pub(super) struct WakeList {
    first: Option<Waker>,
    rest: Vec<Waker>,
}

impl WakeList {
    pub(super) fn push(&mut self, waker: Waker) {
        if self.first.is_none() {
            self.first = Some(waker);
        } else {
            self.rest.push(waker);
        }
    }

    pub(super) fn wake_all(self) {
        if let Some(w) = self.first {
            w.wake();
        }
        self.rest.into_iter().for_each(Waker::wake);
    }
}
