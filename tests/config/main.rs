//! Every numeric knob of every public builder (the transport's aside) at its extremes:
//! 0, 1, max - 1 and max for integers; zero, 1 ns and `Duration::MAX` for durations; 0,
//! NaN, the infinities, negatives and the ends of the range for floats. A value is either
//! rejected by the builder with a `ConfigError` naming that knob, or accepted, and then a
//! short workload runs through what was built and must still work.
//!
//! Each case runs in a child process (this test binary run again with
//! `PALISADE_CONFIG_CASES` naming the cases), so that an abort (a huge allocation, a
//! capacity overflow) is caught as well as a panic. A child runs a batch of cases one after
//! the other and reports each on stdout (`START i`, then `RESULT i ...`); a child that
//! dies mid-batch is blamed for the case it had started, and the rest of its batch runs
//! again in a new child. A panic hook reports panics of any thread (a gossip driver task
//! included) against the running case.
//!
//! Run it with `cargo test --test config -- --nocapture` to see the table of
//! every case; `PALISADE_CONFIG_FILTER=gossip.member` runs only the knobs whose name
//! contains that. Children get `ulimit -v` (through `sh`, so Unix only) so that a
//! runaway allocation fails inside the child instead of swapping the machine.
//!
//! Workloads run on tokio's paused clock, except the gossip clusters, which run on
//! loopback in real time with a fast protocol configuration and bounds far above what
//! the configuration needs (they wait for an event, never for a fixed time).
//!
//! The knobs are listed by room in the modules beside this file; the harness that runs
//! them is here.

#[path = "../common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::future::Future;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use palisade::balance::{
    Builder, ConsistentHash, LeastConnections, OutlierDetection, PowerOfTwoChoices, Random,
    RoundRobin, SlowStart, WeightedRoundRobin,
};
use palisade::breaker::{BreakerConfig, BreakerConfigBuilder, CircuitState};
use palisade::bulkhead::BulkheadConfig;
use palisade::clock::Clock;
use palisade::discover::{ChannelSet, FixedList};
use palisade::error::{BreakerOpen, BulkheadFull, Elapsed, NoEndpoints};
use palisade::gossip::proto::Config;
use palisade::gossip::runtime::{Membership, MembershipConfig, RetryJoin, StartError};
use palisade::gossip::sim::{Network, Simulation};
use palisade::gossip::MemberState;
use palisade::preset::Hystrix;
use palisade::timeout::TimeoutConfig;
use palisade::window::{Event, WindowConfig};
use palisade::{BoxError, ConfigError};
use tower::{service_fn, Layer, Service, ServiceExt};

const CASES_ENV: &str = "PALISADE_CONFIG_CASES";

/// A value given to a knob.
#[derive(Debug, Clone)]
enum V {
    U(u64),
    D(Duration),
    F(f64),
    S(String),
}

impl V {
    fn u32(&self) -> u32 {
        match self {
            V::U(n) => u32::try_from(*n).expect("a u32 knob got a u32 value"),
            _ => unreachable!("{self:?} is not an integer"),
        }
    }
    fn usize(&self) -> usize {
        match self {
            V::U(n) => usize::try_from(*n).expect("a usize knob got a usize value"),
            _ => unreachable!("{self:?} is not an integer"),
        }
    }
    fn d(&self) -> Duration {
        match self {
            V::D(d) => *d,
            _ => unreachable!("{self:?} is not a duration"),
        }
    }
    fn f(&self) -> f64 {
        match self {
            V::F(f) => *f,
            _ => unreachable!("{self:?} is not a float"),
        }
    }
    fn s(&self) -> String {
        match self {
            V::S(s) => s.clone(),
            _ => unreachable!("{self:?} is not a string"),
        }
    }
}

impl std::fmt::Display for V {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            V::U(n) if *n == u64::MAX => f.write_str("u64::MAX"),
            V::U(n) if *n == u64::MAX - 1 => f.write_str("u64::MAX-1"),
            V::U(n) if *n == u64::from(u32::MAX) => f.write_str("u32::MAX"),
            V::U(n) if *n == u64::from(u32::MAX) - 1 => f.write_str("u32::MAX-1"),
            V::U(n) => write!(f, "{n}"),
            V::D(d) if *d == Duration::MAX => f.write_str("Duration::MAX"),
            V::D(d) => write!(f, "{d:?}"),
            V::F(x) => write!(f, "{x}"),
            V::S(s) if s.len() > 12 => write!(f, "{} bytes", s.len()),
            V::S(s) => write!(f, "{s:?}"),
        }
    }
}

fn u32s() -> Vec<V> {
    [0, 1, u32::MAX - 1, u32::MAX]
        .map(|n| V::U(n.into()))
        .to_vec()
}

fn usizes() -> Vec<V> {
    [0, 1, usize::MAX - 1, usize::MAX]
        .map(|n| V::U(n as u64))
        .to_vec()
}

fn durations() -> Vec<V> {
    [Duration::ZERO, Duration::from_nanos(1), Duration::MAX]
        .map(V::D)
        .to_vec()
}

/// The floats every float knob gets, plus `ends` (the ends of its range and just past).
fn floats(ends: &[f64]) -> Vec<V> {
    let mut v = vec![0.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -1.0];
    v.extend_from_slice(ends);
    v.into_iter().map(V::F).collect()
}

/// What a case came to.
enum Verdict {
    Rejected(&'static str),
    Worked,
}

type Run = fn(&V) -> Result<Verdict, String>;

/// One knob of one builder.
struct Knob {
    /// `builder.knob`, for the table.
    name: &'static str,
    /// The field a `ConfigError` must name when the value is rejected. A constraint
    /// between two knobs may name either: `also` lists the other.
    field: &'static str,
    also: &'static [&'static str],
    values: Vec<V>,
    /// Whether the workload is a gossip cluster on loopback (slow: small batches).
    gossip: bool,
    run: Run,
}

fn knob(name: &'static str, field: &'static str, values: Vec<V>, run: Run) -> Knob {
    Knob {
        name,
        field,
        also: &[],
        values,
        gossip: false,
        run,
    }
}

fn rejected<T>(r: Result<T, ConfigError>) -> Result<T, Verdict> {
    r.map_err(|e| Verdict::Rejected(e.field()))
}

macro_rules! built {
    ($e:expr) => {
        match rejected($e) {
            Ok(v) => v,
            Err(verdict) => return Ok(verdict),
        }
    };
}

fn ensure(cond: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(what())
    }
}

/// Runs `f` on a fresh current-thread runtime whose clock is paused, bounded by a day of
/// virtual time (a hang auto-advances to it).
fn paused<T, F: Future<Output = Result<T, String>>>(f: F) -> Result<T, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap()
        .block_on(async {
            tokio::time::timeout(Duration::from_secs(86_400), f)
                .await
                .unwrap_or_else(|_| Err("workload hung for a virtual day".into()))
        })
}

/// Runs `f` on a fresh runtime in real time, bounded by a minute.
fn real<F: Future<Output = Result<(), String>>>(f: F) -> Result<(), String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            tokio::time::timeout(Duration::from_secs(60), f)
                .await
                .unwrap_or_else(|_| Err("workload hung for a minute".into()))
        })
}

// The knobs, by room.
mod balance;
mod breaker;
mod gossip;
mod layers;
mod sim;

use balance::balance_knobs;
use breaker::breaker_knobs;
use gossip::{gossip_knobs, VALUE};
use layers::layer_knobs;
use sim::sim_knobs;

// ---------------------------------------------------------------------------------------
// The harness.

struct Case {
    knob: usize,
    value: V,
}

fn table() -> (Vec<Knob>, Vec<Case>) {
    let mut knobs = breaker_knobs();
    knobs.extend(layer_knobs());
    knobs.extend(balance_knobs());
    knobs.extend(sim_knobs());
    knobs.extend(gossip_knobs());
    let cases = knobs
        .iter()
        .enumerate()
        .flat_map(|(k, knob)| {
            knob.values.iter().map(move |v| Case {
                knob: k,
                value: v.clone(),
            })
        })
        .collect();
    (knobs, cases)
}

static PANICKED: AtomicBool = AtomicBool::new(false);
/// How many cases the child has started: the watchdog's view of progress.
static STARTED: AtomicUsize = AtomicUsize::new(0);

/// The longest one case may take in a child (wall clock) before it counts as hung: the
/// slowest workload, a gossip cluster, waits at most about a minute for its events.
const CASE_LIMIT: Duration = Duration::from_secs(120);

/// The most memory a child may map: far above what any workload needs, and far below
/// the machine's, so that a runaway allocation fails (and aborts the child) instead of
/// swapping the machine.
const CHILD_MEMORY_KIB: u64 = 4 << 20;

/// Runs the cases named by the environment, when started as a child; a no-op otherwise.
#[test]
fn config_extremes_child() {
    let Ok(list) = std::env::var(CASES_ENV) else {
        return;
    };
    let (knobs, cases) = table();
    std::panic::set_hook(Box::new(|info| {
        PANICKED.store(true, Ordering::SeqCst);
        let msg = info.to_string().replace('\n', " ");
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "PANIC {msg}");
        let _ = out.flush();
    }));
    for i in list.split(',').map(|s| s.parse::<usize>().unwrap()) {
        let started = STARTED.fetch_add(1, Ordering::SeqCst) + 1;
        std::thread::spawn(move || {
            std::thread::sleep(CASE_LIMIT);
            if STARTED.load(Ordering::SeqCst) == started {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "RESULT {i} FAILED hung for {CASE_LIMIT:?}");
                let _ = out.flush();
                std::process::exit(3);
            }
        });
        let case = &cases[i];
        let knob = &knobs[case.knob];
        {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "START {i}");
            let _ = out.flush();
        }
        PANICKED.store(false, Ordering::SeqCst);
        *VALUE.lock().unwrap() = Some(case.value.clone());
        let result = std::panic::catch_unwind(|| (knob.run)(&case.value));
        let line = match result {
            _ if PANICKED.load(Ordering::SeqCst) => "FAILED panicked".to_string(),
            Ok(Ok(Verdict::Worked)) => "ACCEPTED".to_string(),
            Ok(Ok(Verdict::Rejected(field))) => format!("REJECTED {field}"),
            Ok(Err(msg)) => format!("FAILED {}", msg.replace('\n', " ")),
            Err(_) => "FAILED panicked".to_string(),
        };
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "RESULT {i} {line}");
        let _ = out.flush();
    }
}

#[derive(Debug, Clone)]
enum Outcome {
    Accepted,
    Rejected(String),
    Failed(String),
}

/// Runs `batch` in children until every case has a result; a child that dies is blamed
/// for the case it was running.
fn run_batch(mut batch: Vec<usize>, results: &Mutex<BTreeMap<usize, Outcome>>) {
    let exe = std::env::current_exe().unwrap();
    while !batch.is_empty() {
        let list = batch
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "ulimit -v {CHILD_MEMORY_KIB} && exec \"$0\" \"$@\""
            ))
            .arg(&exe)
            .args([
                "--exact",
                "config_extremes_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CASES_ENV, list)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("re-run the test binary");
        let stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let err_tail = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
            s
        });
        let mut running: Option<usize> = None;
        let mut progressed = false;
        let mut case_started = std::time::Instant::now();
        let mut panic_msg = String::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // libtest may print its own prefix on the line first.
            let at = ["START ", "PANIC ", "RESULT "]
                .iter()
                .filter_map(|tag| line.find(tag))
                .min();
            let Some(at) = at else { continue };
            let line = &line[at..];
            if let Some(i) = line.strip_prefix("START ") {
                running = Some(i.parse().unwrap());
                progressed = true;
                case_started = std::time::Instant::now();
                panic_msg.clear();
            } else if let Some(msg) = line.strip_prefix("PANIC ") {
                panic_msg = msg.to_string();
            } else if let Some(rest) = line.strip_prefix("RESULT ") {
                let (i, verdict) = rest.split_once(' ').unwrap();
                let i: usize = i.parse().unwrap();
                let outcome = if let Some(f) = verdict.strip_prefix("REJECTED ") {
                    Outcome::Rejected(f.to_string())
                } else if verdict == "ACCEPTED" {
                    Outcome::Accepted
                } else {
                    let why = verdict.trim_start_matches("FAILED ");
                    Outcome::Failed(if panic_msg.is_empty() {
                        why.to_string()
                    } else {
                        format!("{why}: {panic_msg}")
                    })
                };
                eprintln!("case {i}: {outcome:?} in {:?}", case_started.elapsed());
                results.lock().unwrap().insert(i, outcome);
                batch.retain(|&c| c != i);
                running = None;
            }
        }
        let status = child.wait().unwrap();
        let stderr = err_tail.join().unwrap();
        if let Some(i) = running {
            // The abort's message, not the backtrace after it.
            let tail: String = stderr
                .lines()
                .find(|l| l.contains("memory allocation") || l.contains("panicked"))
                .or_else(|| stderr.lines().rfind(|l| !l.trim().is_empty()))
                .unwrap_or("")
                .chars()
                .take(200)
                .collect();
            let why = if panic_msg.is_empty() {
                tail
            } else {
                panic_msg.clone()
            };
            results
                .lock()
                .unwrap()
                .insert(i, Outcome::Failed(format!("child died ({status}): {why}")));
            batch.retain(|&c| c != i);
        } else if !batch.is_empty() && !progressed {
            // The child exited without starting the rest: blame the first.
            let i = batch.remove(0);
            results.lock().unwrap().insert(
                i,
                Outcome::Failed(format!("child exited ({status}) before the case")),
            );
        }
    }
}

#[test]
fn every_accepted_extreme_value_works_and_every_rejection_names_its_knob() {
    if std::env::var(CASES_ENV).is_ok() {
        return;
    }
    let (knobs, cases) = table();
    // Quick cases in large batches; gossip clusters (real time) in small ones, many at
    // once, since they mostly wait.
    let mut batches: Vec<Vec<usize>> = Vec::new();
    // `PALISADE_CONFIG_FILTER=gossip.member` runs the knobs whose name contains it.
    let filter = std::env::var("PALISADE_CONFIG_FILTER").unwrap_or_default();
    let (gossip, quick): (Vec<usize>, Vec<usize>) = (0..cases.len())
        .filter(|&i| knobs[cases[i].knob].name.contains(filter.as_str()))
        .partition(|&i| knobs[cases[i].knob].gossip);
    batches.extend(quick.chunks(25).map(<[usize]>::to_vec));
    batches.extend(gossip.chunks(2).map(<[usize]>::to_vec));
    let results = Mutex::new(BTreeMap::new());
    let queue = Mutex::new(batches);
    let parallel = 8;
    std::thread::scope(|s| {
        for _ in 0..parallel {
            s.spawn(|| loop {
                let Some(batch) = queue.lock().unwrap().pop() else {
                    break;
                };
                run_batch(batch, &results);
            });
        }
    });
    let results = results.into_inner().unwrap();

    let mut failures = Vec::new();
    let (mut accepted, mut rejected) = (0, 0);
    println!("{:<48} {:<22} outcome", "knob", "value");
    for (i, case) in cases.iter().enumerate() {
        let knob = &knobs[case.knob];
        let Some(outcome) = results.get(&i).cloned() else {
            continue;
        };
        let shown = match &outcome {
            Outcome::Accepted => {
                accepted += 1;
                "accepted, works".to_string()
            }
            Outcome::Rejected(f) if f == knob.field || knob.also.contains(&f.as_str()) => {
                rejected += 1;
                format!("rejected ({f})")
            }
            Outcome::Rejected(f) => {
                failures.push(format!(
                    "{} = {}: rejected naming `{f}`, not `{}`",
                    knob.name, case.value, knob.field
                ));
                format!("REJECTED NAMING {f}")
            }
            Outcome::Failed(why) => {
                failures.push(format!("{} = {}: {why}", knob.name, case.value));
                format!("FAILED: {why}")
            }
        };
        println!("{:<48} {:<22} {shown}", knob.name, case.value.to_string());
    }
    println!(
        "{} cases over {} knobs: {accepted} accepted and working, {rejected} rejected, {} failed",
        results.len(),
        knobs
            .iter()
            .filter(|k| k.name.contains(filter.as_str()))
            .count(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
