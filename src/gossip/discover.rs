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
//!
//! ```
//! use palisade::balance::{Builder, PowerOfTwoChoices};
//! use palisade::gossip::proto::Config;
//! use palisade::gossip::runtime::{Membership, MembershipConfig};
//! use palisade::transport::{Connection, ConnectionConfig};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let me = Membership::start(
//!     MembershipConfig::new("client", "127.0.0.1:0".parse()?).protocol(Config::local()),
//! )
//! .await?;
//! // One persistent connection per member that announces `role=api`.
//! let discover = me
//!     .discover(|addr, _member| Connection::new(addr, ConnectionConfig::default()))
//!     .with_tag("role", "api");
//! let balance = Builder::new(PowerOfTwoChoices::new()).build_weighted(discover)?;
//! # drop(balance);
//! # me.kill();
//! # Ok(())
//! # }
//! ```

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

use crate::gossip::proto::{Member, MemberState};
use crate::gossip::runtime::driver::RunningMember;
use crate::gossip::runtime::Membership;
use crate::weighted::Weighted;

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
            rules: Rules {
                required: BTreeMap::new(),
                weight_tag: WEIGHT_TAG.to_owned(),
            },
            include_local: true,
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
    shared: Arc<RunningMember>,
    make_endpoint: F,
    rules: Rules,
    include_local: bool,
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
        self.rules.required.insert(key.into(), value.into());
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
        self.rules.weight_tag = tag.into();
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

    /// Compares the view with what was emitted and queues the difference.
    fn sync(&mut self) {
        let core = self.shared.core.lock();
        if core.stopped {
            self.ended = true;
            return;
        }
        let swim = &core.swim;
        let remote: Vec<&Member> = swim.members().collect();
        let local = Some(swim.local()).filter(|_| self.include_local);
        let plan = self.rules.plan(&self.emitted, &remote, local);
        for name in plan.removed {
            self.emitted.remove(&name);
            self.pending.push_back(Change::Remove(name));
        }
        for (m, e) in plan.inserted {
            self.emitted.insert(m.name().to_owned(), e);
            let service = (self.make_endpoint)(e.addr, m);
            self.pending.push_back(Change::Insert(
                m.name().to_owned(),
                Weighted::new(service, e.weight),
            ));
        }
    }
}

/// Which members are endpoints, and with what weight.
#[derive(Debug, Clone)]
struct Rules {
    required: BTreeMap<String, String>,
    weight_tag: String,
}

/// The changes that bring the emitted set to the view.
#[derive(Debug, Default)]
struct Plan<'a> {
    /// In name order.
    removed: Vec<String>,
    /// In name order; new members and changed addresses or weights.
    inserted: Vec<(&'a Member, Emitted)>,
}

impl Rules {
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

    /// The rules of the [module docs](self), applied to `remote` members and the
    /// `local` one (if it may be an endpoint).
    fn plan<'a>(
        &self,
        emitted: &HashMap<String, Emitted>,
        remote: &[&'a Member],
        local: Option<&'a Member>,
    ) -> Plan<'a> {
        let isolated = !remote.iter().any(|m| m.state().is_live())
            && remote.iter().any(|m| m.state() == MemberState::Dead);
        let mut wanted: BTreeMap<&str, (&Member, Emitted)> = BTreeMap::new();
        let mut states: HashMap<&str, MemberState> = HashMap::new();
        for &m in remote.iter().chain(local.iter()) {
            states.insert(m.name(), m.state());
            if let Some(e) = self.wants(m) {
                wanted.insert(m.name(), (m, e));
            }
        }
        let mut removed: Vec<String> = emitted
            .keys()
            .filter(|name| !wanted.contains_key(name.as_str()))
            // Isolated: keep failed (and reaped) members, drop the ones that left.
            .filter(|name| {
                !isolated || !matches!(states.get(name.as_str()), Some(MemberState::Dead) | None)
            })
            .cloned()
            .collect();
        removed.sort();
        let inserted = wanted
            .into_values()
            .filter(|(m, e)| emitted.get(m.name()) != Some(e))
            .collect();
        Plan { removed, inserted }
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
                // Mark the current version seen *before* reading the view, so that a
                // change made after this read wakes the next wait.
                if let Some(rx) = this.changes.as_mut() {
                    rx.borrow_and_update();
                }
                this.sync();
                continue;
            }
            if this.waiting.is_none() {
                let Some(mut rx) = this.changes.take() else {
                    return Poll::Ready(None);
                };
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
            .field("required", &self.rules.required)
            .field("include_local", &self.include_local)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gossip::proto::Identity;

    fn member(name: &str, state: MemberState, port: u16, tags: &[(&str, &str)]) -> Member {
        let mut identity = Identity::new(name, SocketAddr::from(([127, 0, 0, 1], 7000 + port)))
            .with_service_addr(SocketAddr::from(([127, 0, 0, 1], port)));
        for (k, v) in tags {
            identity = identity.with_tag(*k, *v);
        }
        Member {
            identity,
            incarnation: 1,
            state,
            state_since: 0,
        }
    }

    #[cfg(feature = "balance")]
    #[test]
    fn the_source_and_a_balancer_over_it_are_send() {
        fn send<T: Send>() {}
        type Make = fn(SocketAddr, &Member) -> crate::transport::Connection;
        type Source = GossipDiscover<Make, crate::transport::Connection>;
        send::<Source>();
        send::<crate::balance::Balance<Source, crate::balance::PowerOfTwoChoices>>();
        send::<Membership>();
        fn sync<T: Sync>() {}
        sync::<Membership>();
    }

    fn rules() -> Rules {
        Rules {
            required: BTreeMap::new(),
            weight_tag: WEIGHT_TAG.to_owned(),
        }
    }

    fn emitted(names: &[&str]) -> HashMap<String, Emitted> {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let port = 1 + i as u16;
                (
                    n.to_string(),
                    Emitted {
                        addr: SocketAddr::from(([127, 0, 0, 1], port)),
                        weight: 1,
                    },
                )
            })
            .collect()
    }

    fn names(plan: &Plan<'_>) -> (Vec<String>, Vec<String>) {
        (
            plan.removed.clone(),
            plan.inserted
                .iter()
                .map(|(m, e)| format!("{}w{}", m.name(), e.weight))
                .collect(),
        )
    }

    #[test]
    fn suspect_members_stay_and_failed_or_left_ones_go() {
        let a = member("a", MemberState::Suspect, 1, &[]);
        let b = member("b", MemberState::Dead, 2, &[]);
        let c = member("c", MemberState::Left, 3, &[]);
        let d = member("d", MemberState::Alive, 4, &[]);
        let plan = rules().plan(&emitted(&["a", "b", "c", "d"]), &[&a, &b, &c, &d], None);
        assert_eq!(names(&plan), (vec!["b".into(), "c".into()], vec![]));
    }

    #[test]
    fn isolation_keeps_failed_members_but_not_ones_that_left() {
        let a = member("a", MemberState::Dead, 1, &[]);
        let b = member("b", MemberState::Dead, 2, &[]);
        let c = member("c", MemberState::Left, 3, &[]);
        let plan = rules().plan(&emitted(&["a", "b", "c", "gone"]), &[&a, &b, &c], None);
        // Reaped ("gone") and failed stay; the leave is honoured.
        assert_eq!(names(&plan), (vec!["c".into()], vec![]));
        // One live member ends the isolation.
        let d = member("d", MemberState::Suspect, 4, &[]);
        let plan = rules().plan(&emitted(&["a", "b", "c", "gone"]), &[&a, &b, &c, &d], None);
        assert_eq!(
            names(&plan),
            (
                vec!["a".into(), "b".into(), "c".into(), "gone".into()],
                vec!["dw1".into()]
            )
        );
    }

    #[test]
    fn no_failed_member_is_not_isolation() {
        // Everyone left: the set empties.
        let a = member("a", MemberState::Left, 1, &[]);
        let plan = rules().plan(&emitted(&["a"]), &[&a], None);
        assert_eq!(plan.removed, vec!["a".to_owned()]);
    }

    #[test]
    fn weight_comes_from_the_tag_and_bad_values_mean_one() {
        let a = member("a", MemberState::Alive, 1, &[("weight", "7")]);
        let b = member("b", MemberState::Alive, 2, &[("weight", "x")]);
        let c = member("c", MemberState::Alive, 3, &[("weight", "0")]);
        let plan = rules().plan(&HashMap::new(), &[&a, &b, &c], None);
        assert_eq!(
            names(&plan).1,
            vec!["aw7".to_owned(), "bw1".into(), "cw1".into()]
        );
    }

    #[test]
    fn unchanged_members_emit_nothing_and_changed_ones_are_reinserted() {
        let a = member("a", MemberState::Alive, 1, &[("zone", "x")]);
        let b = member("b", MemberState::Alive, 2, &[("weight", "2")]);
        let plan = rules().plan(&emitted(&["a", "b"]), &[&a, &b], None);
        assert_eq!(names(&plan), (vec![], vec!["bw2".into()]));
    }

    #[test]
    fn required_tags_and_a_missing_service_address_filter_out() {
        let mut r = rules();
        r.required.insert("role".into(), "api".into());
        let a = member("a", MemberState::Alive, 1, &[("role", "api")]);
        let b = member("b", MemberState::Alive, 2, &[("role", "db")]);
        let mut c = member("c", MemberState::Alive, 3, &[("role", "api")]);
        c.identity.set_service_addr(None);
        let plan = r.plan(&emitted(&["a", "b", "c"]), &[&a, &b, &c], None);
        assert_eq!(names(&plan), (vec!["b".into(), "c".into()], vec![]));
    }

    #[test]
    fn the_local_member_counts_until_it_leaves() {
        let me = member("me", MemberState::Alive, 9, &[]);
        let plan = rules().plan(&HashMap::new(), &[], Some(&me));
        assert_eq!(names(&plan).1, vec!["mew1".to_owned()]);
        let left = member("me", MemberState::Left, 9, &[]);
        let mut e = HashMap::new();
        e.insert(
            "me".to_owned(),
            Emitted {
                addr: SocketAddr::from(([127, 0, 0, 1], 9)),
                weight: 1,
            },
        );
        assert_eq!(
            rules().plan(&e, &[], Some(&left)).removed,
            vec!["me".to_owned()]
        );
    }
}
