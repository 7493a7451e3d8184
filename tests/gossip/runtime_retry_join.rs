//! Retry-join over real loopback sockets: a member started while its seeds are down runs
//! alone and joins once one comes up; a member left alone finds the cluster again; the
//! background task ends with the member; the policy is validated at start. Every wait for
//! something that must happen is capped by [`PATIENCE`] (no timing claim); the one
//! real-time bound (the backoff starting over) is derived from the policy beside it.

use std::net::SocketAddr;
use std::time::Duration;

use palisade::gossip::proto::{Config, MemberState};
use palisade::gossip::runtime::{Membership, MembershipConfig, RetryJoin, StartError};

use crate::common;
use common::{eventually, state_of, ReservedAddr, PATIENCE};

fn fast() -> Config {
    Config {
        probe_interval: Duration::from_millis(200),
        probe_timeout: Duration::from_millis(100),
        gossip_interval: Duration::from_millis(50),
        push_pull_interval: Duration::from_secs(1),
        // Off: the core's periodic reconnect to failed members must not be what brings
        // members back together in these tests, retry-join must.
        reconnect_interval: Duration::ZERO,
        ..Config::local()
    }
}

fn config(name: &str, bind: SocketAddr) -> MembershipConfig {
    MembershipConfig::new(name, bind)
        .protocol(fast())
        .join_backoff(Duration::from_millis(20), Duration::from_millis(50))
        .stream_timeout(Duration::from_millis(500))
        .leave_timeout(Duration::from_millis(500))
}

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// Retries quickly: backoff from 20 ms up to 100 ms, rejoin after 300 ms alone.
fn quick_retry() -> RetryJoin {
    RetryJoin::forever()
        .max_interval(Duration::from_millis(100))
        .isolation_timeout(Duration::from_millis(300))
}

/// Starts a member on a fixed address (just released from a [`ReservedAddr`]), retrying
/// while it is still taken.
async fn start_on(config: MembershipConfig) -> Membership {
    let end = tokio::time::Instant::now() + PATIENCE;
    loop {
        match Membership::start(config.clone()).await {
            Ok(m) => return m,
            Err(StartError::Bind { .. }) if tokio::time::Instant::now() < end => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("cannot start on {}: {e}", config.name()),
        }
    }
}

/// What made a late seed fail to start for 30 s on a loaded machine: a port learned by
/// binding and released at once is free for any outbound connection meanwhile (here, or
/// in another process), and once such a connection closes, its TIME_WAIT keeps a
/// listener off the port for 60 s. A [`ReservedAddr`] hands the port to nobody until the
/// seed takes it.
#[tokio::test]
async fn a_reserved_seed_address_is_not_handed_to_another_connection() {
    let seed_port = ReservedAddr::new();
    let elsewhere = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    // A connection elsewhere that would get the seed's port as its source.
    let client = tokio::net::TcpSocket::new_v4().unwrap();
    let taken = client.bind(seed_port.addr());
    assert_eq!(
        taken.map_err(|e| e.kind()),
        Err(std::io::ErrorKind::AddrInUse),
        "the reserved port went to a connection"
    );
    drop(elsewhere);
    // Released, it binds at once.
    let seed = Membership::start(config("seed", seed_port.release()))
        .await
        .expect("the seed starts on its reserved address");
    seed.kill();
}

#[tokio::test]
async fn start_with_the_only_seed_down_runs_alone_then_joins_when_the_seed_comes_up() {
    let seed_port = ReservedAddr::new();
    let a = Membership::start(
        config("a", any_port())
            .seeds([seed_port.addr()])
            .join_attempts(2)
            .retry_join(quick_retry()),
    )
    .await
    .expect("retry-join starts even though no seed answers");
    assert_eq!(a.live_members(), 0, "running alone");
    assert!(!a.is_stopped());
    let after_start = a.stats();
    assert_eq!(after_start.join_attempts, 2, "the foreground rounds");
    assert_eq!(after_start.background_joins, 0);
    // The background task keeps trying while the seed is down.
    assert!(
        eventually(PATIENCE, || a.stats().join_attempts >= 4).await,
        "no background rounds: {:?}",
        a.stats()
    );

    let seed = start_on(config("seed", seed_port.release())).await;
    let (a2, seed2) = (a.clone(), seed.clone());
    assert!(
        eventually(PATIENCE, || {
            state_of(&a2, "seed") == Some(MemberState::Alive)
                && state_of(&seed2, "a") == Some(MemberState::Alive)
        })
        .await,
        "a did not join the late seed: {:?}",
        a.stats()
    );
    assert_eq!(a.stats().background_joins, 1);
    a.kill();
    seed.kill();
}

#[tokio::test]
async fn isolated_member_finds_the_restarted_seed_again_through_retry_join() {
    let b = Membership::start(config("b", any_port())).await.unwrap();
    let b_addr = b.gossip_addr();
    let a = Membership::start(
        config("a", any_port())
            .seeds([b_addr])
            .retry_join(quick_retry()),
    )
    .await
    .unwrap();
    assert_eq!(state_of(&a, "b"), Some(MemberState::Alive));
    assert_eq!(a.stats().join_attempts, 1);

    // b crashes; a declares it failed and is then alone.
    b.kill();
    drop(b);
    // Held from when b's sockets close until b comes back.
    let b_port = ReservedAddr::retake(b_addr).await;
    assert!(
        eventually(PATIENCE, || state_of(&a, "b") == Some(MemberState::Dead)).await,
        "b was not declared failed"
    );
    assert_eq!(a.live_members(), 0);
    // Alone for the isolation timeout, a retries its seed in the background.
    assert!(
        eventually(PATIENCE, || a.stats().join_attempts >= 3).await,
        "a did not retry its seed while alone: {:?}",
        a.stats()
    );
    assert_eq!(a.stats().background_joins, 0);

    // b comes back on the same address, with no seeds of its own: only a's retrying can
    // bring them together (the core's reconnects are off).
    let b = start_on(config("b", b_port.release())).await;
    let (a2, b2) = (a.clone(), b.clone());
    assert!(
        eventually(PATIENCE, || {
            state_of(&a2, "b") == Some(MemberState::Alive)
                && state_of(&b2, "a") == Some(MemberState::Alive)
        })
        .await,
        "a and the restarted b did not find each other: {:?}",
        a.stats()
    );
    assert_eq!(a.stats().background_joins, 1);
    a.kill();
    b.kill();
}

#[tokio::test]
async fn a_joined_member_with_live_peers_does_not_retry() {
    let b = Membership::start(config("b", any_port())).await.unwrap();
    let a = Membership::start(
        config("a", any_port())
            .seeds([b.gossip_addr()])
            .retry_join(quick_retry()),
    )
    .await
    .unwrap();
    // Several isolation timeouts with b alive: no round beyond the one at start.
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(a.live_members(), 1);
        assert_eq!(a.stats().join_attempts, 1);
    }
    a.kill();
    b.kill();
}

#[tokio::test]
async fn shutdown_stops_background_retrying() {
    let down = ReservedAddr::new();
    let a = Membership::start(
        config("a", any_port())
            .seeds([down.addr()])
            .join_attempts(1)
            .retry_join(RetryJoin::forever().max_interval(Duration::from_millis(40))),
    )
    .await
    .unwrap();
    assert!(
        eventually(PATIENCE, || a.stats().join_attempts >= 3).await,
        "no background rounds: {:?}",
        a.stats()
    );
    let changes = a.watch_changes();
    // `shutdown` waits for the retry task to end, so nothing counts after it returns.
    a.shutdown().await.unwrap();
    assert!(a.is_stopped());
    let at_shutdown = a.stats().join_attempts;
    // Ten times the longest interval between rounds: a live task would have made more.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(a.stats().join_attempts, at_shutdown);
    drop(a);
    assert!(all_tasks_ended(changes).await, "a task outlived the member");
    // The address of the seed is free: nothing of `a` holds on to it either.
    let seed = start_on(config("seed", down.release())).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(seed.live_members(), 0, "a stopped member joined");
    seed.kill();
}

#[tokio::test]
async fn leave_stops_background_retrying() {
    let down = ReservedAddr::new();
    let a = Membership::start(
        config("a", any_port())
            .seeds([down.addr()])
            .join_attempts(1)
            .retry_join(RetryJoin::forever().max_interval(Duration::from_millis(40))),
    )
    .await
    .unwrap();
    assert!(eventually(PATIENCE, || a.stats().join_attempts >= 3).await);
    // Nobody to tell: the leave completes at once, and the member keeps running.
    assert!(a.leave().await);
    // A round already in flight may still count once; then nothing.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let at_leave = a.stats().join_attempts;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(a.stats().join_attempts, at_leave);
    assert!(!a.is_stopped());
    a.kill();
}

/// Resolves once the member's shared state is gone: the change channel closes only
/// when every task that could touch the member (driver, listener, retry-join) ended
/// and every handle was dropped.
async fn all_tasks_ended(mut changes: tokio::sync::watch::Receiver<u64>) -> bool {
    tokio::time::timeout(PATIENCE, async { while changes.changed().await.is_ok() {} })
        .await
        .is_ok()
}

#[tokio::test]
async fn kill_stops_background_retrying_and_leaves_no_task_behind() {
    let down = ReservedAddr::new();
    let a = Membership::start(
        config("a", any_port())
            .seeds([down.addr()])
            .join_attempts(1)
            .retry_join(RetryJoin::forever().max_interval(Duration::from_millis(40))),
    )
    .await
    .unwrap();
    assert!(eventually(PATIENCE, || a.stats().join_attempts >= 3).await);
    let changes = a.watch_changes();
    a.kill();
    assert!(eventually(PATIENCE, || a.is_stopped()).await);
    // A round already past its stop check may still count once; then nothing.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let at_kill = a.stats().join_attempts;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(a.stats().join_attempts, at_kill);
    drop(a);
    assert!(all_tasks_ended(changes).await, "a task outlived the member");
}

#[tokio::test]
async fn dropping_every_handle_ends_the_retry_task() {
    let down = ReservedAddr::new();
    let a = Membership::start(
        config("a", any_port())
            .seeds([down.addr()])
            .join_attempts(1)
            .retry_join(RetryJoin::forever().max_interval(Duration::from_millis(40))),
    )
    .await
    .unwrap();
    assert!(eventually(PATIENCE, || a.stats().join_attempts >= 3).await);
    let changes = a.watch_changes();
    let other = a.clone();
    drop(a);
    drop(other);
    assert!(
        all_tasks_ended(changes).await,
        "a task outlived the last handle"
    );
}

#[tokio::test]
async fn bounded_retry_join_gives_up_after_max_attempts() {
    let down = ReservedAddr::new();
    let a = Membership::start(
        config("a", any_port())
            .seeds([down.addr()])
            .join_attempts(2)
            .retry_join(
                RetryJoin::forever()
                    .max_interval(Duration::from_millis(40))
                    .max_attempts(3),
            ),
    )
    .await
    .unwrap();
    assert!(
        eventually(PATIENCE, || a.stats().retry_join_given_up == 1).await,
        "did not give up: {:?}",
        a.stats()
    );
    let stats = a.stats();
    assert_eq!(
        stats.join_attempts,
        2 + 3,
        "two foreground and three background rounds"
    );
    assert_eq!(stats.background_joins, 0);
    // The member itself keeps running alone.
    assert!(!a.is_stopped());
    a.kill();
}

#[tokio::test]
async fn without_retry_join_start_still_fails_when_no_seed_answers() {
    let down = ReservedAddr::new();
    let err = Membership::start(
        config("a", any_port())
            .seeds([down.addr()])
            .join_attempts(1),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, StartError::Join(_)), "{err}");
}

#[tokio::test]
async fn invalid_retry_join_configuration_names_the_setter() {
    let field = |r: Result<Membership, StartError>| match r {
        Err(StartError::Config(e)) => e.field(),
        Err(e) => panic!("expected a config error, got {e}"),
        Ok(_) => panic!("expected a config error, got a member"),
    };
    let down = ReservedAddr::new();
    let seeded = || config("a", any_port()).seeds([down.addr()]);
    assert_eq!(
        field(Membership::start(config("a", any_port()).retry_join(RetryJoin::forever())).await),
        "retry_join"
    );
    assert_eq!(
        field(
            Membership::start(
                seeded().retry_join(RetryJoin::forever().max_interval(Duration::ZERO))
            )
            .await
        ),
        "retry_join.max_interval"
    );
    assert_eq!(
        field(Membership::start(seeded().retry_join(RetryJoin::forever().max_attempts(0))).await),
        "retry_join.max_attempts"
    );
    assert_eq!(
        field(
            Membership::start(
                seeded().retry_join(RetryJoin::forever().isolation_timeout(Duration::ZERO))
            )
            .await
        ),
        "retry_join.isolation_timeout"
    );
    // The same checks without starting anything.
    assert!(seeded().retry_join(RetryJoin::forever()).validate().is_ok());
}

#[tokio::test]
async fn backoff_starts_over_after_a_successful_join() {
    // Backoff from 20 ms (`config`'s join_backoff) doubling up to 10 s: eight rounds in,
    // the next wait is of attempt 8 or later.
    const BASE: Duration = Duration::from_millis(20);
    const MAX_INTERVAL: Duration = Duration::from_secs(10);
    const ROUNDS_BEFORE_JOIN: u32 = 8;
    let seed_port = ReservedAddr::new();
    let seed_addr = seed_port.addr();
    let a = Membership::start(
        config("a", any_port())
            .seeds([seed_addr])
            .join_attempts(1)
            .retry_join(
                RetryJoin::forever()
                    .max_interval(MAX_INTERVAL)
                    .isolation_timeout(Duration::from_millis(300)),
            ),
    )
    .await
    .unwrap();
    assert!(
        eventually(PATIENCE, || a.stats().join_attempts
            >= u64::from(ROUNDS_BEFORE_JOIN))
        .await,
        "{:?}",
        a.stats()
    );
    let seed = start_on(config("seed", seed_port.release())).await;
    assert!(
        eventually(PATIENCE, || a.stats().background_joins == 1).await,
        "{:?}",
        a.stats()
    );
    let joined_at = a.stats().join_attempts;
    seed.kill();
    drop(seed);
    let _down_again = ReservedAddr::retake(seed_addr).await;
    assert!(eventually(PATIENCE, || state_of(&a, "seed") == Some(MemberState::Dead)).await);
    // Alone again: the first round of the new episode goes at once and the next three
    // wait 20, 40, 80 ms at most (each round itself is a refused connect, bounded by the
    // stream timeout). Without the reset each of them would wait at least half the
    // ceiling of attempt 8 (jitter draws from half to all of it): together at least
    // `no_reset_floor`, 7.7 s here, some 50 times what they take with it; that gap is the
    // margin a loaded machine gets.
    let ceiling_after_join = (BASE * 2u32.pow(ROUNDS_BEFORE_JOIN)).min(MAX_INTERVAL);
    let no_reset_floor = ceiling_after_join / 2 * 3;
    assert!(eventually(PATIENCE, || a.stats().join_attempts > joined_at).await);
    let first = tokio::time::Instant::now();
    assert!(eventually(PATIENCE, || a.stats().join_attempts >= joined_at + 4).await);
    assert!(
        first.elapsed() < no_reset_floor,
        "three rounds took {:?} (without a reset: at least {no_reset_floor:?}): the backoff \
         did not start over",
        first.elapsed()
    );
    a.kill();
}
