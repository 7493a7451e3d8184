//! The gossip knobs on loopback: the protocol, and every member (runtime) knob, on a
//! three-member cluster in real time.

use super::sim::sim_workload;
use super::*;

/// The state `observer` holds of `name`, if any.
fn state_of(observer: &Membership, name: &str) -> Option<MemberState> {
    observer.member(name).map(|m| m.state())
}

async fn eventually(
    what: &str,
    cap: Duration,
    mut cond: impl FnMut() -> bool,
) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + cap;
    while !cond() {
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("{what}: not within {cap:?}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Three members on loopback: `a`, then `b` and `c` joining through `a`. All three see
/// each other alive; `c` leaves gracefully and `a` and `b` see it gone (left, or failed
/// when the leave could not be sent); a subscriber of `a` saw the joins.
async fn cluster(make: impl Fn(&str) -> MembershipConfig) -> Result<Verdict, String> {
    let start = |config: MembershipConfig| async move {
        match Membership::start(config).await {
            Ok(m) => Ok(Ok(m)),
            Err(StartError::Config(e)) => Ok(Err(Verdict::Rejected(e.field()))),
            Err(e) => Err(format!("start: {e}")),
        }
    };
    let a = match start(make("a")).await? {
        Ok(m) => m,
        Err(v) => return Ok(v),
    };
    let mut events = a.subscribe();
    let seed = a.gossip_addr();
    let b = start(make("b").seeds([seed]))
        .await?
        .map_err(|_| "b rejected what a accepted")?;
    let c = start(make("c").seeds([seed]))
        .await?
        .map_err(|_| "c rejected what a accepted")?;
    let all = [&a, &b, &c];
    eventually(
        "all three see each other alive",
        Duration::from_secs(20),
        || all.iter().all(|m| m.live_members() == 2),
    )
    .await?;
    // A subscriber that fell behind (a small event capacity) is told so (`dropped`),
    // then goes on.
    let mut received = 0;
    while events.try_next().is_some() {
        received += 1;
    }
    ensure(received >= 1, || "a's subscriber received no event".into())?;
    // A leave is bounded by its timeout; a huge one still returns once acknowledged.
    let _ = tokio::time::timeout(Duration::from_secs(20), c.leave()).await;
    c.shutdown()
        .await
        .map_err(|e| format!("c's driver failed: {e}"))?;
    // Gone: left, or failed when the leave could not be sent, or already forgotten (a
    // short reap timeout).
    let name = c.local().name().to_owned();
    eventually("a and b see c gone", Duration::from_secs(30), || {
        [&a, &b].iter().all(|m| {
            matches!(
                state_of(m, &name),
                None | Some(MemberState::Left | MemberState::Dead)
            )
        })
    })
    .await?;
    ensure(!a.is_stopped() && !b.is_stopped(), || {
        "a member stopped".into()
    })?;
    for m in [a, b] {
        m.shutdown()
            .await
            .map_err(|e| format!("a driver failed: {e}"))?;
    }
    Ok(Verdict::Worked)
}

fn membership(name: &str) -> MembershipConfig {
    MembershipConfig::new(name, "127.0.0.1:0".parse::<SocketAddr>().unwrap())
        .protocol(common::fast_gossip())
        .join_attempts(3)
        .join_backoff(Duration::from_millis(50), Duration::from_millis(500))
        .leave_timeout(Duration::from_secs(2))
}

/// The protocol `config` in the simulator, then on loopback.
fn protocol_workload(config: Config) -> Result<Verdict, String> {
    built!(config.validate());
    sim_workload(&config)?;
    let mut verdict = Ok(Verdict::Worked);
    real(async {
        verdict = cluster(|name| membership(name).protocol(config.clone())).await;
        Ok(())
    })?;
    verdict
}

fn membership_workload(make: fn(&str) -> MembershipConfig) -> Result<Verdict, String> {
    let mut verdict = Ok(Verdict::Worked);
    real(async {
        verdict = cluster(make).await;
        Ok(())
    })?;
    verdict
}

fn gossip_knob(name: &'static str, field: &'static str, values: Vec<V>, run: Run) -> Knob {
    Knob {
        gossip: true,
        ..knob(name, field, values, run)
    }
}

/// The value the child is running, for the `fn` pointers below that cannot capture it.
pub(super) static VALUE: Mutex<Option<V>> = Mutex::new(None);

fn value() -> V {
    VALUE.lock().unwrap().clone().expect("a case is running")
}

pub(super) fn gossip_knobs() -> Vec<Knob> {
    macro_rules! proto {
        ($field:ident, $values:expr, $v:ident => $e:expr) => {
            gossip_knob(
                concat!("gossip.proto.", stringify!($field)),
                stringify!($field),
                $values,
                |$v| {
                    protocol_workload(Config {
                        $field: $e,
                        ..common::fast_gossip()
                    })
                },
            )
        };
    }
    macro_rules! member {
        ($name:expr, $field:expr, $values:expr, $body:expr) => {
            gossip_knob($name, $field, $values, |_| membership_workload($body))
        };
    }
    let mut knobs = vec![
        Knob {
            also: &["probe_timeout"],
            ..proto!(probe_interval, durations(), v => v.d())
        },
        proto!(probe_timeout, durations(), v => v.d()),
        proto!(indirect_checks, usizes(), v => v.usize()),
        proto!(suspicion_mult, u32s(), v => v.u32()),
        proto!(suspicion_max_timeout_mult, u32s(), v => v.u32()),
        proto!(awareness_max_multiplier, u32s(), v => v.u32()),
        proto!(gossip_interval, durations(), v => v.d()),
        proto!(gossip_nodes, usizes(), v => v.usize()),
        proto!(gossip_to_the_dead_time, durations(), v => v.d()),
        proto!(retransmit_mult, u32s(), v => v.u32()),
        proto!(push_pull_interval, durations(), v => v.d()),
        proto!(reconnect_interval, durations(), v => v.d()),
        proto!(reap_timeout, durations(), v => v.d()),
        proto!(max_packet_size, usizes(), v => v.usize()),
        proto!(max_stream_size, usizes(), v => v.usize()),
        proto!(max_tags_bytes, usizes(), v => v.usize()),
        proto!(replay_window, usizes(), v => v.usize()),
        proto!(
            cluster_label,
            vec![V::S(String::new()), V::S("x".repeat(255)), V::S("x".repeat(256))],
            v => v.s()
        ),
        member!(
            "gossip.member.name",
            "name",
            vec![
                V::S(String::new()),
                V::S("x".into()),
                V::S("x".repeat(1 << 20)),
            ],
            |name| {
                // Every member gets the value as a prefix of its own name, so that they
                // stay distinct.
                let V::S(prefix) = value() else {
                    unreachable!()
                };
                let name = if prefix.is_empty() {
                    prefix
                } else {
                    format!("{prefix}{name}")
                };
                membership(&name)
            }
        ),
        member!(
            "gossip.member.join_attempts",
            "join_attempts",
            u32s(),
            |name| { membership(name).join_attempts(value().u32()) }
        ),
        member!(
            "gossip.member.join_backoff.initial",
            "join_backoff",
            durations(),
            |name| { membership(name).join_backoff(value().d(), Duration::MAX) }
        ),
        member!(
            "gossip.member.join_backoff.max",
            "join_backoff",
            durations(),
            |name| { membership(name).join_backoff(Duration::from_millis(50), value().d()) }
        ),
        member!(
            "gossip.member.stream_timeout",
            "stream_timeout",
            durations(),
            |name| { membership(name).stream_timeout(value().d()) }
        ),
        member!(
            "gossip.member.max_inbound_streams",
            "max_inbound_streams",
            usizes(),
            |name| { membership(name).max_inbound_streams(value().usize()) }
        ),
        member!(
            "gossip.member.leave_timeout",
            "leave_timeout",
            durations(),
            |name| { membership(name).leave_timeout(value().d()) }
        ),
        member!(
            "gossip.member.event_capacity",
            "event_capacity",
            usizes(),
            |name| { membership(name).event_capacity(value().usize()) }
        ),
        member!(
            "gossip.member.retry_join.max_interval",
            "retry_join.max_interval",
            durations(),
            |name| retrying(name, RetryJoin::forever().max_interval(value().d()))
        ),
        member!(
            "gossip.member.retry_join.max_attempts",
            "retry_join.max_attempts",
            u32s(),
            |name| retrying(name, RetryJoin::forever().max_attempts(value().u32()))
        ),
        member!(
            "gossip.member.retry_join.isolation_timeout",
            "retry_join.isolation_timeout",
            durations(),
            |name| retrying(name, RetryJoin::forever().isolation_timeout(value().d()))
        ),
    ];
    // `max_stream_size` must be at least `max_packet_size`, and the tags bound depends
    // on the packet size: either field may be named.
    for k in &mut knobs {
        match k.field {
            "max_packet_size" => k.also = &["max_stream_size", "max_tags_bytes"],
            "max_stream_size" => k.also = &["max_packet_size"],
            _ => {}
        }
    }
    knobs
}

/// A member that retries joining with `policy`: `a` (the first, with no seed of its
/// own) joins through a closed port, so that its retrying runs.
fn retrying(name: &str, policy: RetryJoin) -> MembershipConfig {
    let config = membership(name).retry_join(policy);
    if name == "a" {
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        config.seeds([closed]).join_attempts(1)
    } else {
        config
    }
}
