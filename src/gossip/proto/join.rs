//! Joining: the exchange with each seed, and whether it worked.
//!
//! [`Swim::join`] opens a push-pull with every seed (over a stream, or in a datagram
//! with [`Config::datagram_only`](super::Config::datagram_only)) and remembers each
//! seed until it answers or fails; [`Swim::join_status`] tells the caller how the join
//! is going, so that a join through dead seeds shows as [`JoinStatus::Failed`] rather
//! than only as zero live members. Each call to `join` starts over.
//!
//! A seed *answers* when a push-pull answer arrives from its address, over either
//! transport. It *fails* when the driver reports a stream to it failed
//! ([`Swim::stream_failed`]), or, for a datagram join, when three datagram push-pulls
//! sent one probe interval apart went unanswered (datagrams are lost silently, so the
//! core keeps this timer itself). An answer that arrives after a failure still counts.

use std::net::SocketAddr;

use super::config::nanos;
use super::Swim;

/// Datagram push-pulls sent to a seed before it is counted failed.
const DATAGRAM_JOIN_TRIES: u32 = 3;

/// How the last [`Swim::join`] is going.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JoinStatus {
    /// No join was asked for, or it named no seed but this member.
    Idle,
    /// No seed answered yet; `waiting` of them may still.
    Pending {
        /// Seeds that neither answered nor failed.
        waiting: usize,
    },
    /// At least one seed answered: this member is in the seeds' cluster.
    Joined {
        /// Seeds that answered.
        answered: usize,
    },
    /// Every seed failed: nothing will answer this join; call [`Swim::join`] again
    /// (for instance after a backoff) to retry.
    Failed {
        /// Seeds tried.
        seeds: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SeedState {
    Waiting,
    Answered,
    Failed,
}

#[derive(Debug, Clone)]
struct Seed {
    addr: SocketAddr,
    state: SeedState,
    /// For a datagram join: when to send again (or give up); `u64::MAX` otherwise.
    retry_at: u64,
    tries: u32,
}

/// The seeds of the current join.
#[derive(Debug, Clone, Default)]
pub(crate) struct JoinAttempt {
    seeds: Vec<Seed>,
}

impl JoinAttempt {
    fn status(&self) -> JoinStatus {
        let count = |s: SeedState| self.seeds.iter().filter(|x| x.state == s).count();
        if self.seeds.is_empty() {
            JoinStatus::Idle
        } else if count(SeedState::Answered) > 0 {
            JoinStatus::Joined {
                answered: count(SeedState::Answered),
            }
        } else if count(SeedState::Waiting) > 0 {
            JoinStatus::Pending {
                waiting: count(SeedState::Waiting),
            }
        } else {
            JoinStatus::Failed {
                seeds: self.seeds.len(),
            }
        }
    }
}

impl Swim {
    /// Joins the cluster through these addresses: a push-pull with each (over a stream,
    /// or in a datagram with [`Config::datagram_only`](super::Config::datagram_only)).
    /// [`join_status`](Self::join_status) then tells whether a seed answered or every
    /// seed failed; call again (for instance after a backoff) to retry. This member's
    /// own address is skipped.
    pub fn join(&mut self, seeds: &[SocketAddr], now: u64) {
        self.start(now);
        if !self.leaving {
            // Announce ourselves by gossip too, not only through the seeds.
            let me = self.local.clone();
            self.enqueue_alive(&me);
        }
        let mut attempt = JoinAttempt::default();
        let retry_every = nanos(self.config.probe_interval);
        for &addr in seeds {
            if addr == self.local.gossip_addr() || attempt.seeds.iter().any(|s| s.addr == addr) {
                continue;
            }
            let sent = self.open_push_pull(addr, true);
            let datagram = self.config.datagram_only;
            attempt.seeds.push(Seed {
                addr,
                // A state too large to send is a join that cannot work through this seed.
                state: if sent {
                    SeedState::Waiting
                } else {
                    SeedState::Failed
                },
                retry_at: if datagram {
                    now.saturating_add(retry_every)
                } else {
                    u64::MAX
                },
                tries: 1,
            });
        }
        self.join = Some(attempt);
    }

    /// How the last [`join`](Self::join) is going (see [`JoinStatus`]).
    pub fn join_status(&self) -> JoinStatus {
        self.join
            .as_ref()
            .map_or(JoinStatus::Idle, JoinAttempt::status)
    }

    /// Reports that a stream exchange this member asked for (a
    /// [`Request`](super::StreamKind::Request) transmit to `to`) failed: the connection
    /// was refused or reset, timed out, or closed without an answer. A join seed at
    /// `to` that has not answered is then counted failed (see
    /// [`join_status`](Self::join_status)); every report is counted in
    /// [`Stats::stream_failures`](super::Stats::stream_failures). Nothing else changes:
    /// a failed push-pull is simply not merged, and a failed TCP fallback ping leaves
    /// its probe round to end as it would without an answer.
    pub fn stream_failed(&mut self, to: SocketAddr, now: u64) {
        self.start(now);
        self.stats.stream_failures += 1;
        if let Some(join) = self.join.as_mut() {
            for s in join.seeds.iter_mut().filter(|s| s.addr == to) {
                if s.state == SeedState::Waiting {
                    s.state = SeedState::Failed;
                }
            }
        }
    }

    /// A push-pull answer came from `from`: a seed there answered.
    pub(crate) fn join_answered(&mut self, from: SocketAddr) {
        if let Some(join) = self.join.as_mut() {
            for s in join.seeds.iter_mut().filter(|s| s.addr == from) {
                s.state = SeedState::Answered;
            }
        }
    }

    /// The next datagram join retry.
    pub(crate) fn join_deadline(&self) -> u64 {
        self.join.as_ref().map_or(u64::MAX, |j| {
            j.seeds
                .iter()
                .filter(|s| s.state == SeedState::Waiting)
                .map(|s| s.retry_at)
                .min()
                .unwrap_or(u64::MAX)
        })
    }

    /// Resends the datagram joins whose answer is overdue, or gives up on their seeds.
    pub(crate) fn join_timeouts(&mut self, now: u64) {
        let Some(join) = self.join.as_mut() else {
            return;
        };
        let retry_every = nanos(self.config.probe_interval);
        let mut resend = Vec::new();
        for s in join
            .seeds
            .iter_mut()
            .filter(|s| s.state == SeedState::Waiting && s.retry_at <= now)
        {
            if s.tries >= DATAGRAM_JOIN_TRIES {
                s.state = SeedState::Failed;
                s.retry_at = u64::MAX;
            } else {
                s.tries += 1;
                s.retry_at = now.saturating_add(retry_every);
                resend.push(s.addr);
            }
        }
        for to in resend {
            self.send_datagram_push_pull(to, true, false);
        }
    }
}
