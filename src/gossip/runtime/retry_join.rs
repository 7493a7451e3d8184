//! Retry-join: keep trying the seeds in the background until one answers, and again
//! whenever the member finds itself alone.
//!
//! With a [`RetryJoin`] policy in the [config](super::MembershipConfig::retry_join),
//! [`Membership::start`](super::Membership::start) makes its usual foreground join
//! rounds, and if no seed answered it returns `Ok` with the member running alone instead
//! of failing. One background task per member then:
//!
//! 1. **Retries** the seeds, one round at a time (each round is a full-state exchange
//!    with every seed at once, as in [`join`](super::Membership::join)), waiting a
//!    jittered, doubling backoff between rounds: from the initial
//!    [`join_backoff`](super::MembershipConfig::join_backoff) up to
//!    [`max_interval`](RetryJoin::max_interval). It stops retrying when a seed answers
//!    (the backoff starts over next time) or after
//!    [`max_attempts`](RetryJoin::max_attempts) rounds, if bounded; a bounded task that
//!    runs out gives up for good.
//! 2. **Watches** for isolation: once joined, if the view holds no other alive or
//!    suspect member for [`isolation_timeout`](RetryJoin::isolation_timeout) (every
//!    other member failed or left), it goes back to retrying. A member cut off from
//!    everyone thus finds the cluster again as soon as a seed is reachable, without
//!    relying on the core's occasional reconnects to failed members.
//!
//! At most one join round is in flight at a time. The task ends when the member leaves
//! or stops ([`shutdown`](super::Membership::shutdown) waits for it;
//! [`leave`](super::Membership::leave), [`kill`](super::Membership::kill) and dropping
//! the last handle end it at its next step). A background join shows up like any join: the members it brings in arrive as
//! [`Event::Join`](crate::gossip::Event::Join)s, and the
//! [stats](super::Membership::stats) count the rounds
//! ([`join_attempts`](super::MembershipStats::join_attempts)) and the successful
//! background ones ([`background_joins`](super::MembershipStats::background_joins)).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::driver::RunningMember;
use crate::backoff::Backoff;
use crate::error::ConfigError;

/// How a member keeps joining in the background (see [Joining](super#joining) in the
/// runtime docs): retry the seeds until one answers, and again whenever the member has
/// been alone for a while.
///
/// Defaults ([`forever`](Self::forever)): retry without bound, at most every 30 s
/// (Consul's `retry_interval`), and rejoin after 5 probe intervals alone.
///
/// ```
/// use std::time::Duration;
/// use palisade::gossip::runtime::{MembershipConfig, RetryJoin};
///
/// let config = MembershipConfig::new("node-1", "127.0.0.1:0".parse().unwrap())
///     .seeds(["127.0.0.1:7946".parse().unwrap()])
///     .retry_join(
///         RetryJoin::forever()
///             .max_interval(Duration::from_secs(10))
///             .isolation_timeout(Duration::from_secs(5)),
///     );
/// assert!(config.validate().is_ok());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryJoin {
    pub(crate) max_interval: Duration,
    pub(crate) max_attempts: Option<u32>,
    pub(crate) isolation_timeout: Option<Duration>,
}

impl Default for RetryJoin {
    fn default() -> Self {
        Self::forever()
    }
}

impl RetryJoin {
    /// Retry without bound (the default policy): at most every 30 s, rejoining after 5
    /// probe intervals alone.
    pub fn forever() -> Self {
        Self {
            max_interval: Duration::from_secs(30),
            max_attempts: None,
            isolation_timeout: None,
        }
    }

    /// The longest wait between two background rounds (the backoff's cap; raised to the
    /// initial [`join_backoff`](super::MembershipConfig::join_backoff) if smaller). From
    /// 1 ns to `Duration::MAX`. Default 30 s: a member alone for long costs one connection per seed per
    /// interval.
    pub fn max_interval(mut self, interval: Duration) -> Self {
        self.max_interval = interval;
        self
    }

    /// Give up after this many background rounds without an answer, counted from the
    /// start of each episode of retrying (after the foreground rounds at start, or after
    /// the member found itself alone). From 1 to `u32::MAX`. Default: no bound.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = Some(attempts);
        self
    }

    /// How long the member must have seen no other alive or suspect member before it
    /// retries the seeds. From 1 ns to `Duration::MAX` (never rejoin). Default: 5 probe intervals of the protocol
    /// configuration (2.5 s on LAN), long enough not to react to a view that is only
    /// momentarily empty.
    pub fn isolation_timeout(mut self, timeout: Duration) -> Self {
        self.isolation_timeout = Some(timeout);
        self
    }

    /// Checks every field; the error names `retry_join.<setter>` of the first bad one.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.max_interval.is_zero() {
            return Err(ConfigError::new(
                "retry_join.max_interval",
                "must not be zero",
            ));
        }
        if self.max_attempts == Some(0) {
            return Err(ConfigError::new(
                "retry_join.max_attempts",
                "must be at least 1",
            ));
        }
        if self.isolation_timeout.is_some_and(|t| t.is_zero()) {
            return Err(ConfigError::new(
                "retry_join.isolation_timeout",
                "must not be zero",
            ));
        }
        Ok(())
    }

    /// The isolation timeout, its default derived from the probe interval.
    fn isolation_timeout_for(&self, probe_interval: Duration) -> Duration {
        self.isolation_timeout
            .unwrap_or_else(|| probe_interval.saturating_mul(5))
    }
}

/// Where the background task begins.
pub(crate) enum Begin {
    /// The foreground rounds at start were answered: watch for isolation.
    Joined,
    /// They were not: keep retrying, the backoff going on from `attempt`.
    Retrying { attempt: u32 },
}

/// The background task: retries the seeds (`targets`, this member's own address
/// already removed) per `policy`, until the member stops.
pub(crate) async fn run(
    shared: Arc<RunningMember>,
    targets: Vec<SocketAddr>,
    policy: RetryJoin,
    begin: Begin,
) {
    let mut stop = shared.stop.subscribe();
    let mut changes = shared.version.subscribe();
    let config = &shared.config;
    let backoff = Backoff::new(config.join_backoff.0, policy.max_interval);
    let isolation = policy.isolation_timeout_for(config.protocol.probe_interval);
    // The first background round after a failed start waits like the next foreground
    // round would have; after isolation it goes at once (the member already waited).
    let mut next = match begin {
        Begin::Joined => None,
        Begin::Retrying { attempt } => Some(attempt),
    };
    loop {
        let first = match next {
            Some(attempt) => attempt,
            None => {
                if !until_isolated(&shared, &mut changes, &mut stop, isolation).await {
                    return;
                }
                #[cfg(feature = "tracing")]
                tracing::info!(seeds = ?targets, "gossip member alone; retrying the seeds");
                0
            }
        };
        match retry(&shared, &targets, &backoff, &policy, first, &mut stop).await {
            Retry::Joined => next = None,
            Retry::GaveUp => {
                shared
                    .counters
                    .retry_join_given_up
                    .fetch_add(1, Ordering::Relaxed);
                #[cfg(feature = "tracing")]
                tracing::warn!(seeds = ?targets, "gossip retry-join gave up: no seed answered");
                return;
            }
            Retry::Stopped => return,
        }
    }
}

enum Retry {
    Joined,
    GaveUp,
    Stopped,
}

/// One episode of retrying: rounds with backoff until a seed answers, the attempts run
/// out, or the member stops. The backoff before a round is that of attempt
/// `first + rounds so far - 1`; the very first round of an episode that starts at 0
/// goes at once.
async fn retry(
    shared: &RunningMember,
    targets: &[SocketAddr],
    backoff: &Backoff,
    policy: &RetryJoin,
    first: u32,
    stop: &mut watch::Receiver<bool>,
) -> Retry {
    let mut made: u32 = 0;
    loop {
        if policy.max_attempts.is_some_and(|max| made >= max) {
            return Retry::GaveUp;
        }
        let step = first.saturating_add(made);
        if step > 0 {
            let delay = backoff.delay(step - 1, &mut rand::rng());
            tokio::select! {
                biased;
                _ = stopped(stop) => return Retry::Stopped,
                _ = tokio::time::sleep(delay) => {}
            }
        }
        if leaving(shared) {
            return Retry::Stopped;
        }
        made += 1;
        let answered = tokio::select! {
            biased;
            _ = stopped(stop) => return Retry::Stopped,
            answered = super::join_round(shared, targets) => answered,
        };
        match answered {
            Ok(n) if n > 0 => {
                shared
                    .counters
                    .background_joins
                    .fetch_add(1, Ordering::Relaxed);
                #[cfg(feature = "tracing")]
                tracing::info!(answered = n, "gossip member joined in the background");
                return Retry::Joined;
            }
            Ok(_) => {
                #[cfg(feature = "tracing")]
                tracing::debug!(attempt = made, seeds = ?targets, "gossip retry-join: no seed answered");
            }
            Err(_) => return Retry::Stopped,
        }
    }
}

/// Waits until the member has seen no other live member for `isolation`; `false` if it
/// stopped first. A view change while alone does not restart the wait; one that brings
/// a live member does.
async fn until_isolated(
    shared: &RunningMember,
    changes: &mut watch::Receiver<u64>,
    stop: &mut watch::Receiver<bool>,
    isolation: Duration,
) -> bool {
    let mut alone_since: Option<Instant> = None;
    loop {
        changes.borrow_and_update();
        let live = {
            let core = shared.core.lock();
            if core.stopped || core.swim.is_leaving() {
                return false;
            }
            core.swim.live_members()
        };
        let deadline = if live > 0 {
            alone_since = None;
            None
        } else {
            let since = *alone_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= isolation {
                return true;
            }
            // An isolation timeout too long to add to an instant never fires.
            since.checked_add(isolation)
        };
        tokio::select! {
            biased;
            _ = stopped(stop) => return false,
            changed = changes.changed() => {
                if changed.is_err() {
                    return false;
                }
            }
            _ = sleep_until_some(deadline) => {}
        }
    }
}

/// Whether the member left (or is leaving) or stopped: nothing to rejoin for.
fn leaving(shared: &RunningMember) -> bool {
    let core = shared.core.lock();
    core.stopped || core.swim.is_leaving()
}

/// Resolves when the member is told to stop (or the sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_policy_retries_forever_every_thirty_seconds_at_most() {
        let p = RetryJoin::default();
        assert_eq!(p, RetryJoin::forever());
        assert_eq!(p.max_interval, Duration::from_secs(30));
        assert_eq!(p.max_attempts, None);
        assert_eq!(
            p.isolation_timeout_for(Duration::from_millis(500)),
            Duration::from_millis(2500)
        );
        assert!(p.validate().is_ok());
    }

    #[test]
    fn explicit_isolation_timeout_overrides_the_probe_interval_default() {
        let p = RetryJoin::forever().isolation_timeout(Duration::from_millis(300));
        assert_eq!(
            p.isolation_timeout_for(Duration::from_secs(5)),
            Duration::from_millis(300)
        );
    }

    #[test]
    fn invalid_policy_names_the_setter() {
        let field = |p: RetryJoin| p.validate().unwrap_err().field();
        assert_eq!(
            field(RetryJoin::forever().max_interval(Duration::ZERO)),
            "retry_join.max_interval"
        );
        assert_eq!(
            field(RetryJoin::forever().max_attempts(0)),
            "retry_join.max_attempts"
        );
        assert_eq!(
            field(RetryJoin::forever().isolation_timeout(Duration::ZERO)),
            "retry_join.isolation_timeout"
        );
    }
}
