//! How a [`Membership`](super::Membership) binds, joins, frames its streams and leaves.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::RetryJoin;
use crate::error::ConfigError;
use crate::gossip::proto::{Config, Identity};

/// The most events a subscriber may fall behind by
/// ([`event_capacity`](MembershipConfig::event_capacity)): the event channel allocates
/// that many slots up front, so the bound keeps it to a few megabytes.
pub const MAX_EVENT_CAPACITY: usize = 1 << 16;

/// A deadline far enough to mean "never" (30 years) for a timeout too long to add to
/// an `Instant`.
const FAR_FUTURE: Duration = Duration::from_secs(30 * 365 * 86_400);

/// The configuration of one member's runtime: its identity, where it listens, whom it
/// joins through, and the protocol [`Config`] it runs.
///
/// ```
/// use palisade::gossip::proto::Config;
/// use palisade::gossip::runtime::MembershipConfig;
///
/// let config = MembershipConfig::new("node-1", "127.0.0.1:0".parse().unwrap())
///     .seeds(["127.0.0.1:7946".parse().unwrap()])
///     .service_addr("127.0.0.1:8080".parse().unwrap())
///     .tag("weight", "2")
///     .protocol(Config::local());
/// # drop(config);
/// ```
#[derive(Debug, Clone)]
pub struct MembershipConfig {
    pub(crate) name: String,
    pub(crate) bind: SocketAddr,
    pub(crate) advertise: Option<SocketAddr>,
    pub(crate) service_addr: Option<SocketAddr>,
    pub(crate) tags: BTreeMap<String, String>,
    pub(crate) seeds: Vec<SocketAddr>,
    pub(crate) protocol: Config,
    pub(crate) join_attempts: u32,
    pub(crate) join_backoff: (Duration, Duration),
    pub(crate) stream_timeout: Duration,
    pub(crate) max_inbound_streams: usize,
    pub(crate) leave_timeout: Duration,
    pub(crate) event_capacity: usize,
    pub(crate) retry_join: Option<RetryJoin>,
}

impl MembershipConfig {
    /// A member named `name` (not empty, at most
    /// [`MAX_NAME_LEN`](crate::gossip::proto::MAX_NAME_LEN) bytes) listening (UDP and TCP,
    /// same port) on `bind`. Port 0 picks a free port at start. Defaults: no seeds (a cluster of one until someone joins it),
    /// the LAN protocol preset, 5 join attempts with backoff from 200 ms to 2 s, 2 s
    /// stream timeout, 64 concurrent inbound streams, 3 s leave timeout, 1,024 buffered
    /// events per subscriber.
    pub fn new(name: impl Into<String>, bind: SocketAddr) -> Self {
        Self {
            name: name.into(),
            bind,
            advertise: None,
            service_addr: None,
            tags: BTreeMap::new(),
            seeds: Vec::new(),
            protocol: Config::lan(),
            join_attempts: 5,
            join_backoff: (Duration::from_millis(200), Duration::from_secs(2)),
            stream_timeout: Duration::from_secs(2),
            max_inbound_streams: 64,
            leave_timeout: Duration::from_secs(3),
            event_capacity: 1024,
            retry_join: None,
        }
    }

    /// The gossip address other members reach this one at, when it differs from the
    /// bound address (binding `0.0.0.0`, NAT). Required when `bind` is unspecified.
    pub fn advertise_addr(mut self, addr: SocketAddr) -> Self {
        self.advertise = Some(addr);
        self
    }

    /// The address of the service this member offers, announced to the others (what a
    /// [`GossipDiscover`](crate::gossip::discover::GossipDiscover) connects to).
    pub fn service_addr(mut self, addr: SocketAddr) -> Self {
        self.service_addr = Some(addr);
        self
    }

    /// Adds a tag announced with this member (e.g. `weight`, `zone`).
    pub fn tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.tags.insert(key.into(), value.into());
        self
    }

    /// Gossip addresses of existing members to join through at start. Any one answering
    /// is enough; when none answers, joining is retried (see
    /// [`join_attempts`](Self::join_attempts)).
    pub fn seeds(mut self, seeds: impl IntoIterator<Item = SocketAddr>) -> Self {
        self.seeds = seeds.into_iter().collect();
        self
    }

    /// The protocol configuration (timings, keys, label). Default [`Config::lan`].
    pub fn protocol(mut self, config: Config) -> Self {
        self.protocol = config;
        self
    }

    /// How many rounds of join attempts (each to every seed at once) before
    /// [`Membership::start`](super::Membership::start) gives up, or with
    /// [`retry_join`](Self::retry_join) returns and goes on in the background. Default 5;
    /// from 1 to `u32::MAX`.
    pub fn join_attempts(mut self, attempts: u32) -> Self {
        self.join_attempts = attempts;
        self
    }

    /// Backoff between join rounds: jittered, doubling from `initial` up to `max`
    /// ([`Backoff::new`](crate::backoff::Backoff::new)). The
    /// background rounds of [`retry_join`](Self::retry_join) start from the same
    /// `initial` and are capped by [`RetryJoin::max_interval`] instead. Default 200 ms to
    /// 2 s; `initial` from 1 ns to `Duration::MAX`, `max` any (raised to `initial` if
    /// smaller; the waits saturate, so `Duration::MAX` waits forever).
    pub fn join_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.join_backoff = (initial, max);
        self
    }

    /// The bound on one stream exchange (connect, send, receive the answer), in each
    /// direction. Default 2 s; from [`MIN_INTERVAL`](crate::gossip::proto::config::MIN_INTERVAL)
    /// (1 ms) to `Duration::MAX` (no bound). A shorter bound than a loopback round trip
    /// can take would make every exchange (joins, push-pull, leaves) fail, so it is
    /// rejected.
    pub fn stream_timeout(mut self, timeout: Duration) -> Self {
        self.stream_timeout = timeout;
        self
    }

    /// The most inbound stream connections handled at once; more are closed at accept.
    /// Default 64; from 1 to `usize::MAX`, values above tokio's semaphore limit
    /// (`usize::MAX >> 3`) meaning no limit.
    pub fn max_inbound_streams(mut self, n: usize) -> Self {
        self.max_inbound_streams = n;
        self
    }

    /// How long a graceful [`leave`](super::Membership::leave) may take before the
    /// member stops anyway. Default 3 s; from zero (give up at once, the leave is still
    /// gossiped while the member runs) to `Duration::MAX` (wait for the acknowledgement).
    pub fn leave_timeout(mut self, timeout: Duration) -> Self {
        self.leave_timeout = timeout;
        self
    }

    /// How many events each [`subscribe`](super::Membership::subscribe)r may fall behind
    /// before it loses the oldest. Default 1,024; from 1 to [`MAX_EVENT_CAPACITY`] (the
    /// buffer is allocated up front).
    pub fn event_capacity(mut self, n: usize) -> Self {
        self.event_capacity = n;
        self
    }

    /// Keep joining in the background instead of failing (see [`RetryJoin`]): when no
    /// seed answers the [`join_attempts`](Self::join_attempts) at start,
    /// [`start`](super::Membership::start) returns `Ok` with the member running alone,
    /// and a background task retries the seeds until one answers; it retries again
    /// whenever the member later finds itself alone. Needs at least one seed. Off by
    /// default: without it, `start` fails with
    /// [`StartError::Join`](super::StartError::Join), which catches a mistyped seed at
    /// once.
    ///
    /// ```
    /// use palisade::gossip::proto::Config;
    /// use palisade::gossip::runtime::{Membership, MembershipConfig, RetryJoin};
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// // A seed that is not up yet (a closed port).
    /// let down = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    /// let m = Membership::start(
    ///     MembershipConfig::new("a", "127.0.0.1:0".parse()?)
    ///         .protocol(Config::local())
    ///         .seeds([down])
    ///         .join_attempts(1)
    ///         .retry_join(RetryJoin::forever().max_interval(Duration::from_secs(5))),
    /// )
    /// .await?; // Ok: running alone, retrying in the background
    /// assert_eq!(m.live_members(), 0);
    /// m.shutdown().await?; // also ends the retrying
    /// # Ok(())
    /// # }
    /// ```
    pub fn retry_join(mut self, policy: RetryJoin) -> Self {
        self.retry_join = Some(policy);
        self
    }

    /// The member's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Checks every field; the error names the setter of the first bad one (`name` and
    /// `tags` for the member's identity, the protocol's field for the protocol).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.protocol.validate()?;
        if self.protocol.datagram_only {
            // This runtime carries streams, and its joins wait on stream answers.
            return Err(ConfigError::new(
                "protocol.datagram_only",
                "is for drivers without streams; this runtime has TCP (leave it off)",
            ));
        }
        Identity::new(self.name.clone(), self.bind)
            .with_tags(self.tags.clone())
            .validate(self.protocol.max_tags_bytes)?;
        if self.bind.ip().is_unspecified() && self.advertise.is_none() {
            return Err(ConfigError::new(
                "advertise_addr",
                "required when binding an unspecified address (0.0.0.0 or ::)",
            ));
        }
        if let Some(a) = self.advertise {
            if a.ip().is_unspecified() || a.port() == 0 {
                return Err(ConfigError::new(
                    "advertise_addr",
                    "must be a specific address with a port",
                ));
            }
        }
        if self.join_attempts == 0 {
            return Err(ConfigError::new("join_attempts", "must be at least 1"));
        }
        if self.join_backoff.0.is_zero() {
            return Err(ConfigError::new("join_backoff", "initial must not be zero"));
        }
        if self.stream_timeout < crate::gossip::proto::config::MIN_INTERVAL {
            return Err(ConfigError::new("stream_timeout", "must be at least 1 ms"));
        }
        if self.max_inbound_streams == 0 {
            return Err(ConfigError::new(
                "max_inbound_streams",
                "must be at least 1",
            ));
        }
        if self.event_capacity == 0 {
            return Err(ConfigError::new("event_capacity", "must be at least 1"));
        }
        if self.event_capacity > MAX_EVENT_CAPACITY {
            return Err(ConfigError::new(
                "event_capacity",
                format!("must be at most {MAX_EVENT_CAPACITY}"),
            ));
        }
        if let Some(policy) = &self.retry_join {
            if self.seeds.is_empty() {
                return Err(ConfigError::new(
                    "retry_join",
                    "needs at least one seed to retry",
                ));
            }
            policy.validate()?;
        }
        Ok(())
    }

    /// The permits of the inbound-stream limit: tokio's semaphore takes at most
    /// `Semaphore::MAX_PERMITS`, which is as good as no limit.
    pub(crate) fn inbound_stream_permits(&self) -> usize {
        self.max_inbound_streams.min(Semaphore::MAX_PERMITS)
    }

    /// The capacity of the driver's queue of inbound stream messages: one per inbound
    /// stream and some for the outbound answers, within the channel's maximum.
    pub(crate) fn stream_queue_capacity(&self) -> usize {
        self.max_inbound_streams
            .saturating_add(64)
            .min(Semaphore::MAX_PERMITS)
    }

    /// When a leave started at `now` gives up: a leave timeout too long to add means
    /// never (in practice).
    pub(crate) fn leave_deadline(&self, now: Instant) -> Instant {
        now.checked_add(self.leave_timeout)
            .unwrap_or_else(|| now + FAR_FUTURE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(name: &str) -> MembershipConfig {
        MembershipConfig::new(name, "127.0.0.1:0".parse().unwrap())
    }

    #[test]
    fn validate_rejects_the_names_and_tags_that_start_would() {
        assert_eq!(config("").validate().unwrap_err().field(), "name");
        let long = "x".repeat(crate::gossip::proto::MAX_NAME_LEN + 1);
        assert_eq!(config(&long).validate().unwrap_err().field(), "name");
        let tags = config("a").tag("k", "v".repeat(600));
        assert_eq!(tags.validate().unwrap_err().field(), "tags");
        config("a").validate().unwrap();
    }

    #[test]
    fn event_capacity_is_bounded_by_what_the_channel_allocates() {
        let c = config("a").event_capacity(MAX_EVENT_CAPACITY);
        c.validate().unwrap();
        let c = config("a").event_capacity(MAX_EVENT_CAPACITY + 1);
        assert_eq!(c.validate().unwrap_err().field(), "event_capacity");
    }

    #[test]
    fn derived_bounds_saturate() {
        let c = config("a")
            .max_inbound_streams(usize::MAX)
            .leave_timeout(Duration::MAX);
        c.validate().unwrap();
        assert_eq!(c.inbound_stream_permits(), Semaphore::MAX_PERMITS);
        assert_eq!(c.stream_queue_capacity(), Semaphore::MAX_PERMITS);
        let now = Instant::now();
        assert!(c.leave_deadline(now) >= now + FAR_FUTURE);
        let c = config("a").leave_timeout(Duration::from_secs(3));
        assert_eq!(c.leave_deadline(now), now + Duration::from_secs(3));
        assert_eq!(c.stream_queue_capacity(), 64 + 64);
    }
}
