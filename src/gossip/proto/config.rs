//! Every knob of the protocol, with its default and the reason for it.
//!
//! Three presets follow memberlist's: [`Config::lan`] (the default; one data centre),
//! [`Config::wan`] (members across regions: slower, more patient) and [`Config::local`]
//! (loopback or one host: fast and lean). None takes a cluster size: everything that
//! should grow with the cluster grows at run time with the number of live members the
//! member currently knows, which is a better estimate than a guess made at start-up:
//! - retransmissions of each update: `retransmit_mult * ceil(log10(n + 1))`;
//! - the suspicion timeout: `suspicion_mult * max(1, log10(n)) * probe_interval`
//!   (stretched up to `suspicion_max_timeout_mult` times that with Lifeguard);
//! - the push-pull interval: `push_pull_interval * n / 32` (at least 5 s), so that a
//!   full state (which grows with `n`) is exchanged proportionally less often and each
//!   member's anti-entropy traffic stays flat whatever the cluster size. (memberlist
//!   scales it by `log2(n / 32)`, which lets the traffic per member grow almost
//!   linearly.) At 1,024 members each member exchanges state every 16 minutes, while
//!   somewhere in the cluster an exchange happens every second.
//!
//! Fields are public; [`Config::validate`] (called by
//! [`Swim::new`](super::Swim::new)) rejects bad values with a
//! [`ConfigError`] naming the field.

use std::time::Duration;

use crate::error::ConfigError;
use crate::gossip::keyring::Keyring;

use super::member::MAX_WIRE_TAGS_BYTES;

/// The shortest period of the protocol's periodic work (`probe_interval`,
/// `gossip_interval`, and `push_pull_interval` and `reconnect_interval` when on): the
/// runtime's timer counts milliseconds, so a shorter period would only spin.
pub const MIN_INTERVAL: Duration = Duration::from_millis(1);

/// The largest `max_packet_size`: the largest UDP payload over IPv4.
pub const MAX_PACKET_SIZE: usize = 65_507;

/// The largest `replay_window`: a million nonces, some tens of megabytes.
pub const MAX_REPLAY_WINDOW: usize = 1 << 20;

/// Protocol configuration. See the [module docs](self) for how values scale.
#[derive(Debug, Clone)]
pub struct Config {
    /// How often this member probes one other member (one protocol period).
    /// LAN 500 ms (half memberlist's 1 s). The time until every member sees a crash is
    /// mostly the suspicion timeout, which is proportional to this interval
    /// (`suspicion_mult * log10(n) * probe_interval`): at 1 s, a crash in a 128-member
    /// cluster with 1% loss took about 11 s to be seen by all (simulated median); at
    /// 500 ms it takes about 5 s, within the 8 s we aim for. The cost is one more ping
    /// and ack per member per second (about 24 bytes/member/s, the same at any cluster
    /// size); healthy members are still not declared failed at 10% loss, because
    /// Lifeguard stretches lone suspicions and refutations travel as fast as before.
    /// Range: [`MIN_INTERVAL`] (1 ms) to `Duration::MAX` (never probe, so crashes go
    /// unnoticed), and longer than `probe_timeout`.
    pub probe_interval: Duration,
    /// How long to wait for a direct ack before asking others to probe indirectly.
    /// LAN 250 ms: still about a hundred times a data centre round trip, and leaves half
    /// of the period for the indirect probes (a relay that hears nothing from the target
    /// sends its nack after 80% of that half, so that it arrives within the period).
    /// Must be below `probe_interval`.
    /// Range: 1 ns to just under `probe_interval`.
    pub probe_timeout: Duration,
    /// How many members are asked to probe indirectly after a missed ack. LAN 3: the
    /// chance that all three paths are lossy at once is small, and the traffic is bounded.
    /// Range: 0 (no indirect probes) to `usize::MAX` (every other member).
    pub indirect_checks: usize,
    /// Multiplier of the suspicion timeout (see the module docs). LAN 4: a suspected
    /// member gets several periods in which to hear of it and refute.
    /// Range: 1 to `u32::MAX` (the timeout saturates: a suspect is then never declared
    /// dead).
    pub suspicion_mult: u32,
    /// Lifeguard: a fresh suspicion waits up to this many times the minimal timeout and
    /// shrinks towards it as independent members confirm. LAN 6 (memberlist's value).
    /// Range: 1 to `u32::MAX` (saturating).
    pub suspicion_max_timeout_mult: u32,
    /// Lifeguard: a member that misses nacks or has to refute suspicions of itself
    /// stretches its own probe interval and timeout by up to this factor, so a slow
    /// member stops accusing healthy ones. LAN 8.
    /// Range: 1 to `u32::MAX` (saturating).
    pub awareness_max_multiplier: u32,
    /// How often updates are gossiped to random members (besides piggybacking on
    /// probes). LAN 200 ms: an update crosses a 1,000-member cluster in about a second.
    /// Range: [`MIN_INTERVAL`] (1 ms) to `Duration::MAX` (updates then travel only on
    /// probes and push-pulls).
    pub gossip_interval: Duration,
    /// How many random members each gossip round sends to. LAN 3.
    /// Range: 1 to `usize::MAX` (every member).
    pub gossip_nodes: usize,
    /// Dead members still receive gossip for this long, so that a wrongly declared member
    /// learns of it and refutes. LAN 30 s.
    /// Range: zero (never) to `Duration::MAX`.
    pub gossip_to_the_dead_time: Duration,
    /// Each update is sent `retransmit_mult * ceil(log10(n + 1))` times. LAN 4: enough
    /// for an epidemic to reach every member with high probability despite loss.
    /// Range: 1 to `u32::MAX` (the limit saturates: updates are then sent on every
    /// round until newer ones displace them, and every gossip packet is full).
    pub retransmit_mult: u32,
    /// How often to exchange full state with one random member (anti-entropy), as the
    /// interval for a cluster of 32 members; it scales linearly with the cluster size
    /// (module docs). Zero turns it off. LAN 30 s (memberlist's value).
    /// Range: zero (off), or [`MIN_INTERVAL`] (1 ms) to `Duration::MAX` (the scaled
    /// interval saturates).
    pub push_pull_interval: Duration,
    /// How often to consider a full-state exchange with one random *failed* member, so
    /// that a healed partition merges again; zero turns it off. As in Serf, each member
    /// tries with probability `failed / live`, so the cluster as a whole makes about one
    /// attempt per failed member per interval. LAN 30 s (Serf's value).
    /// Range: zero (off), or [`MIN_INTERVAL`] (1 ms) to `Duration::MAX`.
    pub reconnect_interval: Duration,
    /// Failed and left members are forgotten (a `Reap` event) after this long. LAN 24 h
    /// (Serf's reconnect timeout): they are remembered for reconnection, and a stale alive
    /// update about them cannot resurrect them.
    /// Range: 1 ns to `Duration::MAX` (never forgotten).
    pub reap_timeout: Duration,
    /// The largest datagram sent or accepted, envelope included. LAN 1,400 bytes: fits an
    /// Ethernet MTU after IP and UDP headers, so packets are never fragmented.
    /// Range: 576 to [`MAX_PACKET_SIZE`] (65,507).
    pub max_packet_size: usize,
    /// The largest stream message (push-pull) sent or accepted. LAN 8 MiB: full state of
    /// tens of thousands of members with tags.
    /// Range: `max_packet_size` to `usize::MAX` (the wire's 4-byte length prefix caps
    /// a message at 4 GiB).
    pub max_stream_size: usize,
    /// The most bytes of tags (keys plus values) a member may carry. LAN 512 (memberlist's
    /// metadata bound): an alive update always fits a packet with room for others.
    /// Range: 0 to `max_packet_size - 400`, at most
    /// [`MAX_WIRE_TAGS_BYTES`].
    pub max_tags_bytes: usize,
    /// Lifeguard on (the default) or off: off means no local health awareness, no nacks,
    /// no buddy system and a fixed suspicion timeout (plain SWIM, for comparison).
    pub lifeguard: bool,
    /// TCP fallback ping (memberlist's default; its `DisableTcpPings` is this set to
    /// false): when a direct ping goes unanswered and the probe turns indirect, also
    /// ping the target over the stream transport, and count an ack that comes back that
    /// way as the probe's ack. A member whose UDP is broken (a firewall dropping UDP, a
    /// one-way UDP partition) while TCP works is then not declared failed, and the
    /// rounds saved this way are counted in
    /// [`Stats::tcp_fallback_saves`](super::Stats::tcp_fallback_saves), a sign that UDP
    /// is broken somewhere. Costs one stream exchange per probe that reaches its
    /// indirect step (none while every direct ping is answered). Default on; off
    /// behaves exactly as plain SWIM + Lifeguard over datagrams.
    pub tcp_fallback_ping: bool,
    /// For a driver that carries datagrams only (no TCP-like streams; see
    /// [driving the core yourself](super#driving-the-core-yourself)): when set, this
    /// member never queues a stream transmit. Joins, periodic push-pulls and reconnects
    /// go as *datagram push-pulls*, each side's state cut to what fits one datagram
    /// (`max_packet_size`: this member and the live members that fit, from a random
    /// place in its table), so one exchange teaches part of the cluster and gossip and
    /// later exchanges the rest; the TCP fallback ping is off whatever
    /// `tcp_fallback_ping` says. A join through a seed that does not answer is retried
    /// every probe interval, three tries in all, then counted failed
    /// ([`Swim::join_status`](super::Swim::join_status)). Every member of this build
    /// answers a datagram push-pull with one, whatever its own setting, so such a
    /// member joins any cluster of this build. Default off: a full-state exchange
    /// needs a stream.
    pub datagram_only: bool,
    /// How many nonces of sealed packets are remembered to drop replays. LAN 4,096: a few
    /// seconds of a busy member's traffic.
    /// Range: 0 (no replay protection) to [`MAX_REPLAY_WINDOW`]: the nonces are kept in
    /// memory.
    pub replay_window: usize,
    /// A label every packet carries (authenticated when sealed); members only talk to
    /// members with the same label. Default empty. At most 255 bytes.
    pub cluster_label: String,
    /// Shared keys; when set, every packet is sealed and unsealed packets are dropped.
    /// Default none.
    pub keyring: Option<Keyring>,
    /// Seed of the member's random choices (probe order, gossip targets); `None` (the
    /// default) seeds from the operating system. Set it for reproducible simulations.
    pub seed: Option<u64>,
}

impl Default for Config {
    fn default() -> Self {
        Self::lan()
    }
}

impl Config {
    /// Members in one data centre (the default). See each field for its value.
    pub fn lan() -> Self {
        Self {
            probe_interval: Duration::from_millis(500),
            probe_timeout: Duration::from_millis(250),
            indirect_checks: 3,
            suspicion_mult: 4,
            suspicion_max_timeout_mult: 6,
            awareness_max_multiplier: 8,
            gossip_interval: Duration::from_millis(200),
            gossip_nodes: 3,
            gossip_to_the_dead_time: Duration::from_secs(30),
            retransmit_mult: 4,
            push_pull_interval: Duration::from_secs(30),
            reconnect_interval: Duration::from_secs(30),
            reap_timeout: Duration::from_secs(24 * 3600),
            max_packet_size: 1400,
            max_stream_size: 8 << 20,
            max_tags_bytes: 512,
            lifeguard: true,
            tcp_fallback_ping: true,
            datagram_only: false,
            replay_window: 4096,
            cluster_label: String::new(),
            keyring: None,
            seed: None,
        }
    }

    /// Members across regions: probe every 5 s with a 3 s timeout, suspicion multiplier 6,
    /// gossip every 500 ms to 4 members, dead members gossiped to for 60 s, push-pull
    /// every 60 s (memberlist's WAN values: long, variable round trips).
    pub fn wan() -> Self {
        Self {
            probe_interval: Duration::from_secs(5),
            probe_timeout: Duration::from_secs(3),
            suspicion_mult: 6,
            gossip_interval: Duration::from_millis(500),
            gossip_nodes: 4,
            gossip_to_the_dead_time: Duration::from_secs(60),
            push_pull_interval: Duration::from_secs(60),
            ..Self::lan()
        }
    }

    /// Members on one host or loopback: the LAN probe interval (500 ms) with a 200 ms
    /// probe timeout, suspicion multiplier 3, one indirect check, gossip every 100 ms,
    /// 2x retransmission, push-pull every 15 s (memberlist's local values apart from the
    /// probe interval: no real loss or latency to absorb).
    pub fn local() -> Self {
        Self {
            probe_timeout: Duration::from_millis(200),
            indirect_checks: 1,
            suspicion_mult: 3,
            gossip_interval: Duration::from_millis(100),
            gossip_to_the_dead_time: Duration::from_secs(15),
            retransmit_mult: 2,
            push_pull_interval: Duration::from_secs(15),
            ..Self::lan()
        }
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = |d: Duration, field: &'static str| {
            if d.is_zero() {
                Err(ConfigError::new(field, "must be greater than zero"))
            } else {
                Ok(())
            }
        };
        let interval = |d: Duration, field: &'static str| {
            if d < MIN_INTERVAL {
                Err(ConfigError::new(
                    field,
                    format!("must be at least {MIN_INTERVAL:?}"),
                ))
            } else {
                Ok(())
            }
        };
        let interval_or_off = |d: Duration, field: &'static str| {
            if d.is_zero() {
                Ok(())
            } else {
                interval(d, field)
            }
        };
        interval(self.probe_interval, "probe_interval")?;
        positive(self.probe_timeout, "probe_timeout")?;
        if self.probe_timeout >= self.probe_interval {
            return Err(ConfigError::new(
                "probe_timeout",
                "must be shorter than probe_interval",
            ));
        }
        let at_least_one = |v: u64, field: &'static str| {
            if v == 0 {
                Err(ConfigError::new(field, "must be at least 1"))
            } else {
                Ok(())
            }
        };
        at_least_one(self.suspicion_mult.into(), "suspicion_mult")?;
        at_least_one(
            self.suspicion_max_timeout_mult.into(),
            "suspicion_max_timeout_mult",
        )?;
        at_least_one(
            self.awareness_max_multiplier.into(),
            "awareness_max_multiplier",
        )?;
        interval(self.gossip_interval, "gossip_interval")?;
        interval_or_off(self.push_pull_interval, "push_pull_interval")?;
        interval_or_off(self.reconnect_interval, "reconnect_interval")?;
        at_least_one(self.gossip_nodes as u64, "gossip_nodes")?;
        at_least_one(self.retransmit_mult.into(), "retransmit_mult")?;
        positive(self.reap_timeout, "reap_timeout")?;
        if self.max_packet_size < 576 {
            return Err(ConfigError::new(
                "max_packet_size",
                "must be at least 576 bytes (the minimum IPv4 datagram every host accepts)",
            ));
        }
        if self.max_packet_size > MAX_PACKET_SIZE {
            return Err(ConfigError::new(
                "max_packet_size",
                format!("must be at most {MAX_PACKET_SIZE} bytes (the largest UDP payload)"),
            ));
        }
        if self.max_stream_size < self.max_packet_size {
            return Err(ConfigError::new(
                "max_stream_size",
                "must be at least max_packet_size",
            ));
        }
        // An alive update (name, two addresses, tags, framing) plus the envelope must fit
        // one packet with room to spare.
        let tags_cap = (self.max_packet_size - 400).min(MAX_WIRE_TAGS_BYTES);
        if self.max_tags_bytes > tags_cap {
            return Err(ConfigError::new(
                "max_tags_bytes",
                format!("must be at most {tags_cap} with this max_packet_size"),
            ));
        }
        if self.replay_window > MAX_REPLAY_WINDOW {
            return Err(ConfigError::new(
                "replay_window",
                format!("must be at most {MAX_REPLAY_WINDOW}"),
            ));
        }
        if self.cluster_label.len() > 255 {
            return Err(ConfigError::new(
                "cluster_label",
                "must be at most 255 bytes",
            ));
        }
        Ok(())
    }

    /// How many times an update is sent in a cluster of `n` live members.
    pub fn retransmit_limit(&self, n: usize) -> u32 {
        let scale = ((n as f64) + 1.0).log10().ceil().max(1.0) as u32;
        self.retransmit_mult.saturating_mul(scale)
    }

    /// The shortest suspicion timeout in a cluster of `n` members (self included).
    pub fn suspicion_min_timeout(&self, n: usize) -> Duration {
        let scale = (n.max(1) as f64).log10().max(1.0);
        mul_saturating(self.probe_interval, scale * f64::from(self.suspicion_mult))
    }

    /// The push-pull interval in a cluster of `n` members.
    pub fn push_pull_interval_for(&self, n: usize) -> Duration {
        const REFERENCE: f64 = 32.0;
        const FLOOR: Duration = Duration::from_secs(5);
        if self.push_pull_interval.is_zero() {
            return Duration::ZERO;
        }
        mul_saturating(self.push_pull_interval, n as f64 / REFERENCE)
            .max(FLOOR.min(self.push_pull_interval))
    }
}

/// `d * k` for a finite `k >= 0`, saturating at `Duration::MAX` instead of panicking as
/// `Duration::mul_f64` does, so that a huge configured interval scales to "never".
fn mul_saturating(d: Duration, k: f64) -> Duration {
    Duration::try_from_secs_f64(d.as_secs_f64() * k).unwrap_or(Duration::MAX)
}

/// A duration in nanoseconds of the protocol's clock, saturating at `u64::MAX` (about
/// 584 years, so "never") instead of wrapping as `as u64` would.
pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid() {
        Config::lan().validate().unwrap();
        Config::wan().validate().unwrap();
        Config::local().validate().unwrap();
    }

    #[test]
    fn invalid_values_name_their_field() {
        let field = |c: Config| c.validate().unwrap_err().field();
        assert_eq!(
            field(Config {
                probe_timeout: Duration::from_secs(1),
                ..Config::lan()
            }),
            "probe_timeout"
        );
        assert_eq!(
            field(Config {
                gossip_nodes: 0,
                ..Config::lan()
            }),
            "gossip_nodes"
        );
        assert_eq!(
            field(Config {
                max_packet_size: 100,
                ..Config::lan()
            }),
            "max_packet_size"
        );
        assert_eq!(
            field(Config {
                max_tags_bytes: 1200,
                ..Config::lan()
            }),
            "max_tags_bytes"
        );
        assert_eq!(
            field(Config {
                cluster_label: "x".repeat(300),
                ..Config::lan()
            }),
            "cluster_label"
        );
    }

    #[test]
    fn scaling_follows_the_cluster_size() {
        let c = Config::lan();
        assert_eq!(c.retransmit_limit(0), 4);
        assert_eq!(c.retransmit_limit(9), 4);
        assert_eq!(c.retransmit_limit(10), 8);
        assert_eq!(c.retransmit_limit(1024), 16);
        assert_eq!(c.suspicion_min_timeout(5), Duration::from_secs(2));
        assert_eq!(c.suspicion_min_timeout(100), Duration::from_secs(4));
        assert_eq!(c.push_pull_interval_for(2), Duration::from_secs(5));
        assert_eq!(c.push_pull_interval_for(16), Duration::from_secs(15));
        assert_eq!(c.push_pull_interval_for(32), Duration::from_secs(30));
        assert_eq!(c.push_pull_interval_for(1024), Duration::from_secs(960));
    }

    #[test]
    fn scaling_saturates_instead_of_overflowing() {
        let c = Config {
            probe_interval: Duration::MAX,
            probe_timeout: Duration::from_secs(1),
            retransmit_mult: u32::MAX,
            suspicion_mult: u32::MAX,
            push_pull_interval: Duration::MAX,
            ..Config::lan()
        };
        c.validate().unwrap();
        // Past 10 members the multiplier is scaled by 2, past 32 the interval by n / 32.
        assert_eq!(c.retransmit_limit(10), u32::MAX);
        assert_eq!(c.push_pull_interval_for(33), Duration::MAX);
        assert_eq!(c.push_pull_interval_for(1_000_000), Duration::MAX);
        assert_eq!(c.suspicion_min_timeout(1000), Duration::MAX);
        assert_eq!(nanos(Duration::MAX), u64::MAX);
        assert_eq!(nanos(Duration::from_nanos(7)), 7);
    }

    #[test]
    fn periods_below_a_millisecond_oversized_packets_and_replay_windows_are_rejected() {
        let field = |c: Config| c.validate().unwrap_err().field();
        let tiny = Duration::from_micros(999);
        assert_eq!(
            field(Config {
                gossip_interval: tiny,
                ..Config::lan()
            }),
            "gossip_interval"
        );
        assert_eq!(
            field(Config {
                push_pull_interval: tiny,
                ..Config::lan()
            }),
            "push_pull_interval"
        );
        assert_eq!(
            field(Config {
                reconnect_interval: tiny,
                ..Config::lan()
            }),
            "reconnect_interval"
        );
        assert_eq!(
            field(Config {
                max_packet_size: MAX_PACKET_SIZE + 1,
                max_stream_size: usize::MAX,
                ..Config::lan()
            }),
            "max_packet_size"
        );
        assert_eq!(
            field(Config {
                replay_window: MAX_REPLAY_WINDOW + 1,
                ..Config::lan()
            }),
            "replay_window"
        );
        // Zero still turns the anti-entropy mechanisms off.
        Config {
            push_pull_interval: Duration::ZERO,
            reconnect_interval: Duration::ZERO,
            ..Config::lan()
        }
        .validate()
        .unwrap();
    }
}
