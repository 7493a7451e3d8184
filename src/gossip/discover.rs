//! Gossip membership as a discovery source: alive members become balancer endpoints.
//!
//! [`Membership::discover`] returns a [`GossipDiscover`], a
//! `Stream<Item = Result<Change<String, Weighted<S>>, Infallible>>` (so a
//! `tower::discover::Discover`) keyed by member name, for
//! [`Builder::build_weighted`](crate::balance::Builder::build_weighted). It works on the
//! view, not on the event log: whenever the view may have changed it compares the
//! members that should be endpoints with the ones it already emitted, and emits the
//! difference. A slow balancer therefore never misses a change (there is no event
//! queue to overflow), and a burst of changes to one member collapses into one.
//!
//! # The rules
//! - **Insert** a member that is *alive or suspect*, announces a service address, and
//!   carries every required tag ([`with_tag`](GossipDiscover::with_tag)). The endpoint
//!   is `make_endpoint(service_addr, &member)`, weighted by the member's `weight` tag
//!   (an unsigned integer; missing, invalid or zero means 1; see
//!   [`weight_tag`](GossipDiscover::weight_tag)).
//! - **Suspect members stay in**: suspicion is the debounce. A member that is only
//!   slow to answer a probe keeps its endpoint, and the balancer's own readiness
//!   (connection state, breakers, ejection) routes around it meanwhile.
//! - **Re-insert** a member whose service address or weight changed (an
//!   [`Event::Update`](crate::gossip::Event::Update), or a restart under the same
//!   name): the balancer replaces the endpoint's service and keeps its statistics.
//!   Other tag changes do not touch the endpoint.
//! - **Remove** a member that failed, left, was reaped, lost its service address or a
//!   required tag.
//! - **Isolation keeps the last set.** When no other member is alive or suspect but at
//!   least one is failed, this member is more likely cut off (its own network is down,
//!   or it is paused) than watching everyone crash at once. Then failed members are not
//!   removed: the balancer keeps the last known set and its per-endpoint health decides,
//!   rather than being emptied by one local fault. Members that *left* are still
//!   removed (a leave is explicit). As soon as one other member is alive again the set
//!   is recomputed normally. The cost: in a cluster of two, the survivor keeps the
//!   crashed peer's endpoint (which its connection then reports as not ready).
//! - The local member is an endpoint too when it announces a service address (turn it
//!   off with [`include_local`](GossipDiscover::include_local)), until it leaves.
//! - When the member stops, the stream ends; the balancer keeps the endpoints it has.
//!
//! Changes come in name order, removals before inserts.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::Stream;
use tokio::sync::watch;
use tower::discover::Change;

use crate::balance::Weighted;
use crate::gossip::proto::{Member, MemberState};
use crate::gossip::runtime::driver::Shared;
use crate::gossip::runtime::Membership;

/// The default name of the tag that carries an endpoint's weight.
pub const WEIGHT_TAG: &str = "weight";

impl Membership {
    /// A discovery source of this member's view (see the [module docs](crate::gossip::discover)):
    /// every alive or suspect member with a service address becomes an endpoint
    /// `make_endpoint(service_addr, &member)`, keyed by its name.
    ///
    /// The source does not keep the member running: when every [`Membership`] handle is
    /// dropped the member stops and the stream ends.
    pub fn discover<F, S>(&self, make_endpoint: F) -> GossipDiscover<F, S>
    where
        F: FnMut(SocketAddr, &Member) -> S,
    {
        GossipDiscover {
            shared: Arc::clone(self.shared()),
            make_endpoint,
            required: BTreeMap::new(),
            include_local: true,
            weight_tag: WEIGHT_TAG.to_owned(),
            emitted: HashMap::new(),
            pending: VecDeque::new(),
            changes: Some(self.watch_changes()),
            waiting: None,
            synced: false,
            ended: false,
        }
    }
}

/// What was last emitted for a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Emitted {
    addr: SocketAddr,
    weight: u32,
}

type Waiting = Pin<Box<dyn Future<Output = (watch::Receiver<u64>, bool)> + Send>>;

/// A discovery source fed by gossip membership. See the [module docs](self).
pub struct GossipDiscover<F, S> {
    shared: Arc<Shared>,
    make_endpoint: F,
    required: BTreeMap<String, String>,
    include_local: bool,
    weight_tag: String,
    emitted: HashMap<String, Emitted>,
    pending: VecDeque<Change<String, Weighted<S>>>,
    changes: Option<watch::Receiver<u64>>,
    waiting: Option<Waiting>,
    synced: bool,
    ended: bool,
}

// Nothing is structurally pinned: the waiting future is boxed.
impl<F, S> Unpin for GossipDiscover<F, S> {}

impl<F, S> GossipDiscover<F, S>
where
    F: FnMut(SocketAddr, &Member) -> S,
{
    /// Only members whose tag `key` equals `value` are endpoints (all such filters must
    /// match). A member whose tags stop matching is removed.
    pub fn with_tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.required.insert(key.into(), value.into());
        self
    }

    /// Whether the local member is an endpoint when it announces a service address
    /// (default `true`).
    pub fn include_local(mut self, include: bool) -> Self {
        self.include_local = include;
        self
    }

    /// The tag read as the endpoint weight (default [`WEIGHT_TAG`]).
    pub fn weight_tag(mut self, tag: impl Into<String>) -> Self {
        self.weight_tag = tag.into();
        self
    }

    /// How many endpoints the source has inserted and not removed.
    pub fn len(&self) -> usize {
        self.emitted.len()
    }

    /// Whether the source currently has no endpoints.
    pub fn is_empty(&self) -> bool {
        self.emitted.is_empty()
    }

    fn wants(&self, m: &Member) -> Option<Emitted> {
        if !m.state().is_live() {
            return None;
        }
        let addr = m.service_addr()?;
        let tags = m.tags();
        if self
            .required
            .iter()
            .any(|(k, v)| tags.get(k).map(String::as_str) != Some(v.as_str()))
        {
            return None;
        }
        let weight = tags
            .get(&self.weight_tag)
            .and_then(|w| w.parse::<u32>().ok())
            .unwrap_or(1)
            .max(1);
        Some(Emitted { addr, weight })
    }

    /// Compares the view with what was emitted and queues the difference.
    fn sync(&mut self) {
        let core = self.shared.core.lock();
        if core.stopped {
            self.ended = true;
            return;
        }
        let swim = &core.swim;
        let mut members: Vec<&Member> = swim.members().collect();
        let local = swim.local();
        if self.include_local && local.state() == MemberState::Alive {
            members.push(local);
        }
        let isolated =
            swim.live_members() == 0 && swim.members().any(|m| m.state() == MemberState::Dead);
        let mut wanted: BTreeMap<&str, (Emitted, &Member)> = BTreeMap::new();
        let mut states: HashMap<&str, MemberState> = HashMap::new();
        for m in members {
            states.insert(m.name(), m.state());
            if let Some(e) = self.wants(m) {
                wanted.insert(m.name(), (e, m));
            }
        }
        let mut gone: Vec<String> = self
            .emitted
            .keys()
            .filter(|name| !wanted.contains_key(name.as_str()))
            .filter(|name| {
                // Isolated: keep failed (and reaped) members, drop the ones that left.
                !isolated || !matches!(states.get(name.as_str()), Some(MemberState::Dead) | None)
            })
            .cloned()
            .collect();
        gone.sort();
        for name in gone {
            self.emitted.remove(&name);
            self.pending.push_back(Change::Remove(name));
        }
        for (name, (e, m)) in wanted {
            if self.emitted.get(name) == Some(&e) {
                continue;
            }
            self.emitted.insert(name.to_owned(), e);
            let service = (self.make_endpoint)(e.addr, m);
            self.pending.push_back(Change::Insert(
                name.to_owned(),
                Weighted::new(service, e.weight),
            ));
        }
    }
}

impl<F, S> Stream for GossipDiscover<F, S>
where
    F: FnMut(SocketAddr, &Member) -> S,
{
    type Item = Result<Change<String, Weighted<S>>, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(change) = this.pending.pop_front() {
                return Poll::Ready(Some(Ok(change)));
            }
            if this.ended {
                return Poll::Ready(None);
            }
            if !this.synced {
                this.synced = true;
                this.sync();
                continue;
            }
            if this.waiting.is_none() {
                let Some(mut rx) = this.changes.take() else {
                    return Poll::Ready(None);
                };
                rx.borrow_and_update();
                this.waiting = Some(Box::pin(async move {
                    let open = rx.changed().await.is_ok();
                    (rx, open)
                }));
            }
            let Some(waiting) = this.waiting.as_mut() else {
                return Poll::Ready(None);
            };
            match waiting.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready((rx, open)) => {
                    this.waiting = None;
                    if open {
                        this.changes = Some(rx);
                    }
                    this.synced = false;
                }
            }
        }
    }
}

impl<F, S> fmt::Debug for GossipDiscover<F, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GossipDiscover")
            .field("endpoints", &self.emitted.len())
            .field("required", &self.required)
            .field("include_local", &self.include_local)
            .finish_non_exhaustive()
    }
}
