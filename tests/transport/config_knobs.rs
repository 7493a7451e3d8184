//! Every numeric knob of the transport's configurations through its extremes: 0, 1,
//! max - 1 and max for counts (plus the documented bounds where they are not the type's),
//! zero, 1 ns and `Duration::MAX` for durations. A value outside the documented range is
//! rejected at `build` with a `ConfigError` naming the field; every accepted value runs a
//! short workload (a server and a `Connection`, one request) in a child process, so an
//! abort is caught as well as a panic or a hang.
//!
//! The child is this test binary run again with `PALISADE_TRANSPORT_KNOB` set, running
//! only [`knob_child_entry`]. The workload passes when the request is answered or, for a
//! value that makes that impossible by design, when the documented outcome was seen: a
//! 1 ns `request_timeout` fails requests with `RequestTimeout`, a 1 ns `connect_timeout`
//! fails connection attempts, a 1 ns `idle_timeout` or `frame_timeout` closes
//! connections (each counted where the configuration says).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use palisade::error::ConfigError;
use palisade::transport::{
    Connection, ConnectionConfig, ConnectionConfigBuilder, RequestTimeout, ServeConfig,
    ServeConfigBuilder, Server,
};
use palisade::BoxError;
use tower::{service_fn, Service, ServiceExt};

const CHILD_ENV: &str = "PALISADE_TRANSPORT_KNOB";
/// The cap on one child's whole run on a loaded machine (a working value takes
/// milliseconds; only the 1 ns timeouts use their full retry window, below).
const CHILD_LIMIT: Duration = Duration::from_secs(120);
/// How long a child retries before judging by the documented outcome.
const RETRY_WINDOW: Duration = Duration::from_secs(3);
/// tokio's channel limit, the documented maximum of `queue`.
const MAX_QUEUE: usize = tokio::sync::Semaphore::MAX_PERMITS;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Side {
    Client,
    Server,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Value {
    Count(usize),
    Time(Duration),
}

const CLIENT_COUNTS: &[&str] = &["max_frame_len", "queue", "max_concurrent_per_connection"];
const CLIENT_TIMES: &[&str] = &[
    "connect_timeout",
    "backoff_base",
    "backoff_max",
    "request_timeout",
];
const SERVER_COUNTS: &[&str] = &[
    "max_frame_len",
    "max_connections",
    "max_concurrent_per_connection",
    "max_partial_frame_bytes",
];
const SERVER_TIMES: &[&str] = &["idle_timeout", "frame_timeout"];

fn counts(knob: &str) -> Vec<usize> {
    let mut v = vec![0, 1, usize::MAX - 1, usize::MAX];
    match knob {
        "max_frame_len" => v.extend([8, 9, u32::MAX as usize - 1, u32::MAX as usize]),
        "queue" => v.extend([MAX_QUEUE, MAX_QUEUE + 1]),
        _ => {}
    }
    if let Ok(past) = usize::try_from(u64::from(u32::MAX) + 1) {
        if knob == "max_frame_len" {
            v.push(past);
        }
    }
    v
}

fn times() -> Vec<Duration> {
    vec![Duration::ZERO, Duration::from_nanos(1), Duration::MAX]
}

fn rows() -> Vec<(Side, &'static str, Value)> {
    let mut rows = Vec::new();
    for (side, count_knobs, time_knobs) in [
        (Side::Client, CLIENT_COUNTS, CLIENT_TIMES),
        (Side::Server, SERVER_COUNTS, SERVER_TIMES),
    ] {
        for &knob in count_knobs {
            rows.extend(
                counts(knob)
                    .into_iter()
                    .map(|n| (side, knob, Value::Count(n))),
            );
        }
        for &knob in time_knobs {
            rows.extend(times().into_iter().map(|d| (side, knob, Value::Time(d))));
        }
    }
    rows
}

fn client_builder(knob: &str, value: Value) -> ConnectionConfigBuilder {
    let b = ConnectionConfig::builder();
    #[allow(deprecated)]
    match (knob, value) {
        ("max_frame_len", Value::Count(n)) => b.max_frame_len(n),
        ("queue", Value::Count(n)) => b.queue(n),
        ("max_concurrent_per_connection", Value::Count(n)) => b.max_concurrent_per_connection(n),
        ("connect_timeout", Value::Time(d)) => b.connect_timeout(d),
        // The cap must stay at least the base: raise it with the base.
        ("backoff_base", Value::Time(d)) => b.backoff_base(d).backoff_max(Duration::MAX),
        ("backoff_max", Value::Time(d)) => b.backoff_max(d),
        ("request_timeout", Value::Time(d)) => b.request_timeout(d),
        _ => unreachable!("{knob} {value:?}"),
    }
}

fn server_builder(knob: &str, value: Value) -> ServeConfigBuilder {
    let b = ServeConfig::builder();
    match (knob, value) {
        ("max_frame_len", Value::Count(n)) => b.max_frame_len(n),
        ("max_connections", Value::Count(n)) => b.max_connections(n),
        ("max_concurrent_per_connection", Value::Count(n)) => b.max_concurrent_per_connection(n),
        ("max_partial_frame_bytes", Value::Count(n)) => b.max_partial_frame_bytes(n),
        ("idle_timeout", Value::Time(d)) => b.idle_timeout(d),
        ("frame_timeout", Value::Time(d)) => b.frame_timeout(d),
        _ => unreachable!("{knob} {value:?}"),
    }
}

/// The two configurations of a row. A client row's server is the client's
/// configuration converted (the migration path of `serve`), so the deprecated
/// server-side knob of `ConnectionConfig` runs too.
fn build(
    side: Side,
    knob: &str,
    value: Value,
) -> Result<(ConnectionConfig, ServeConfig), ConfigError> {
    match side {
        Side::Client => {
            let c = client_builder(knob, value).build()?;
            Ok((c.clone(), ServeConfig::from(c)))
        }
        Side::Server => Ok((
            ConnectionConfig::default(),
            server_builder(knob, value).build()?,
        )),
    }
}

fn encode(side: Side, knob: &str, value: Value) -> String {
    let side = match side {
        Side::Client => "client",
        Side::Server => "server",
    };
    match value {
        Value::Count(n) => format!("{side} {knob} count {n}"),
        Value::Time(d) => format!("{side} {knob} time {} {}", d.as_secs(), d.subsec_nanos()),
    }
}

fn decode(s: &str) -> (Side, String, Value) {
    let parts: Vec<&str> = s.split(' ').collect();
    let side = if parts[0] == "client" {
        Side::Client
    } else {
        Side::Server
    };
    let value = match parts[2] {
        "count" => Value::Count(parts[3].parse().unwrap()),
        _ => Value::Time(Duration::new(
            parts[3].parse().unwrap(),
            parts[4].parse().unwrap(),
        )),
    };
    (side, parts[1].to_string(), value)
}

#[test]
fn every_transport_knob_at_its_extremes_is_rejected_by_name_or_works() {
    let mut accepted = Vec::new();
    let mut rejected = 0;
    for (side, knob, value) in rows() {
        match build(side, knob, value) {
            Err(e) => {
                assert_eq!(e.field(), knob, "{side:?} {knob} = {value:?}: {e}");
                rejected += 1;
            }
            Ok(_) => accepted.push((side, knob, value)),
        }
    }
    // Children two at a time: the machine has two cores.
    let mut failures = Vec::new();
    for pair in accepted.chunks(2) {
        let children: Vec<(String, Child)> = pair
            .iter()
            .map(|&(side, knob, value)| {
                let row = encode(side, knob, value);
                let child = Command::new(std::env::current_exe().unwrap())
                    .args([
                        "--exact",
                        crate::common::test_name(module_path!(), "knob_child_entry").as_str(),
                        "--nocapture",
                        "--test-threads=1",
                    ])
                    .env(CHILD_ENV, &row)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap();
                (row, child)
            })
            .collect();
        for (row, child) in children {
            let out = child.wait_with_output().unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            if !out.status.success() || !stdout.contains("KNOB OK") {
                failures.push(format!(
                    "{row}: {:?}\n{stdout}\n{}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                ));
            } else if let Some(line) = stdout.lines().find(|l| l.contains("KNOB OK")) {
                println!("{row}: {line}");
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n---\n"));
    assert!(rejected > 0 && !accepted.is_empty());
    println!(
        "{} accepted and run, {rejected} rejected by name",
        accepted.len()
    );
}

/// Runs one row's workload; a no-op unless started by the test above.
#[test]
fn knob_child_entry() {
    let Ok(row) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (side, knob, value) = decode(&row);
    let (client, server) = build(side, &knob, value).expect("the parent saw it accepted");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let outcome = rt.block_on(async {
        tokio::time::timeout(CHILD_LIMIT, workload(&knob, value, client, server))
            .await
            .expect("the workload ended within the cap")
    });
    println!("KNOB OK {outcome}");
}

fn echo(
) -> impl Service<Bytes, Response = Bytes, Error = BoxError, Future = impl Send> + Clone + Send {
    service_fn(|req: Bytes| async move { Ok::<_, BoxError>(req) })
}

async fn workload(
    knob: &str,
    value: Value,
    client: ConnectionConfig,
    server: ServeConfig,
) -> &'static str {
    let tiny = value == Value::Time(Duration::from_nanos(1));
    // A 9-byte frame holds the header only: the request must be empty.
    let payload = if client.max_frame_len() == 9 || server.max_frame_len() == 9 {
        Bytes::new()
    } else {
        Bytes::from_static(b"hi")
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Server::new(echo(), server);
    let handle = server.handle();
    tokio::spawn(server.run(listener));
    let conn = Connection::new(addr, client);

    let start = Instant::now();
    while start.elapsed() < RETRY_WINDOW {
        let Ok(ready) =
            tokio::time::timeout(Duration::from_millis(500), conn.clone().ready_oneshot()).await
        else {
            continue;
        };
        let mut svc = ready.expect("the connection task is alive");
        match svc.call(payload.clone()).await {
            Ok(reply) => {
                assert_eq!(reply, payload);
                return "answered";
            }
            Err(e) if e.is::<RequestTimeout>() && knob == "request_timeout" && tiny => {
                return "timed out as configured";
            }
            // Closed under the request (a 1 ns idle or frame timeout): try again.
            Err(e) if tiny => println!("retrying after: {e}"),
            Err(e) => panic!("request failed: {e}"),
        }
    }
    let (client_stats, server_stats) = (conn.stats(), handle.stats());
    match knob {
        "connect_timeout" if tiny && client_stats.connect_failures > 0 => {
            "connects timed out as configured"
        }
        "idle_timeout" if tiny && server_stats.idle_timeouts > 0 => "closed idle as configured",
        "frame_timeout" if tiny && server_stats.frame_timeouts > 0 => {
            "frames timed out as configured"
        }
        _ => panic!("never answered: {client_stats:?} {server_stats:?}"),
    }
}
