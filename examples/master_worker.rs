//! A master dispatches 10,000 tasks to 8 workers through a balancer.
//!
//! The workers are tower services of different speeds (1 ms to 8 ms per task); one of
//! them, `w7`, fails in bursts (every other 100 ms window of the run). The master keeps
//! up to 64 tasks in flight through a [`Balance`](palisade::balance::Balance) with
//! [`LeastConnections`] (fast workers finish sooner, so they are given more) and a
//! circuit breaker per worker ([`Builder::endpoint_breaker`]): when `w7` starts failing,
//! its breaker opens and the balancer routes around it instead of failing tasks; after
//! the sleep window it is probed, and taken back once the burst is over.
//!
//! Every task ends either completed or reported failed with its reason; the example
//! checks that each task id is accounted for exactly once and that the counts add up,
//! then prints per-worker counts, latency and breaker trips.
//!
//! Run: `cargo run --release --example master_worker`

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use palisade::balance::{Builder, LeastConnections};
use palisade::breaker::BreakerConfig;
use palisade::discover::FixedList;
use palisade::BoxError;
use tower::{service_fn, Service, ServiceExt};

const TASKS: u64 = 10_000;
const IN_FLIGHT: usize = 64;
const WORKERS: [(&str, u64); 8] = [
    ("w0", 1),
    ("w1", 1),
    ("w2", 2),
    ("w3", 2),
    ("w4", 3),
    ("w5", 4),
    ("w6", 6),
    ("w7", 8),
];
/// The worker that fails in bursts.
const FLAKY: &str = "w7";

/// What a worker returns for a task.
#[derive(Debug)]
struct Done {
    worker: &'static str,
    task: u64,
    value: u64,
}

/// A worker's failure, naming the worker and the task.
#[derive(Debug)]
struct WorkerFailed {
    worker: &'static str,
    task: u64,
}

impl fmt::Display for WorkerFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} failed task {}: transient fault",
            self.worker, self.task
        )
    }
}

impl std::error::Error for WorkerFailed {}

/// A worker: takes `millis` per task; the flaky one fails every task it is given in
/// every other 100 ms window since `start`.
fn worker(
    name: &'static str,
    millis: u64,
    start: Instant,
    given: Arc<AtomicU64>,
) -> impl Service<u64, Response = Done, Error = WorkerFailed, Future: Send> + Clone {
    service_fn(move |task: u64| {
        given.fetch_add(1, Ordering::Relaxed);
        let window = start.elapsed().as_millis() / 100;
        let fail = name == FLAKY && window % 2 == 1;
        async move {
            tokio::time::sleep(Duration::from_millis(millis)).await;
            if fail {
                Err(WorkerFailed { worker: name, task })
            } else {
                Ok(Done {
                    worker: name,
                    task,
                    value: task * task,
                })
            }
        }
    })
}

#[derive(Default)]
struct Tally {
    completed: u64,
    failed: u64,
    latencies: Vec<Duration>,
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let breaker = BreakerConfig::builder()
        .consecutive_failures(5)
        .sleep_window(Duration::from_millis(100))
        .half_open_probes(1)
        .probes_to_close(3)
        .build()?;
    let started = Instant::now();
    let given: Vec<Arc<AtomicU64>> = WORKERS.iter().map(|_| Arc::default()).collect();
    let workers = FixedList::unweighted(
        WORKERS
            .iter()
            .zip(&given)
            .map(|(&(name, ms), given)| (name, worker(name, ms, started, given.clone()))),
    );
    let mut balance = Builder::new(LeastConnections::new())
        .endpoint_breaker(breaker)
        .build_weighted(workers)?;

    let mut running = FuturesUnordered::new();
    let mut seen = vec![false; TASKS as usize];
    let mut tally: BTreeMap<&'static str, Tally> = BTreeMap::new();
    let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
    let mut next = 0u64;
    while next < TASKS || !running.is_empty() {
        // Dispatch while there is room, then wait for one task to end.
        while next < TASKS && running.len() < IN_FLIGHT {
            let task = next;
            next += 1;
            let sent = Instant::now();
            let response = balance.ready().await?.call(task);
            running.push(async move { (task, sent, response.await) });
        }
        let Some((task, sent, result)) = running.next().await else {
            continue;
        };
        let latency = sent.elapsed();
        assert!(
            !std::mem::replace(&mut seen[task as usize], true),
            "task {task} ended twice"
        );
        match result {
            Ok(done) => {
                assert_eq!((done.task, done.value), (task, task * task));
                let t = tally.entry(done.worker).or_default();
                t.completed += 1;
                t.latencies.push(latency);
            }
            Err(error) => {
                let (worker, reason) = match error.downcast_ref::<WorkerFailed>() {
                    Some(f) => (f.worker, "transient fault".to_string()),
                    // The balancer's own rejections (BreakerOpen, NoEndpoints) name no worker.
                    None => ("(balancer)", error.to_string()),
                };
                let t = tally.entry(worker).or_default();
                t.failed += 1;
                t.latencies.push(latency);
                *reasons.entry(format!("{worker}: {reason}")).or_default() += 1;
            }
        }
    }
    let elapsed = started.elapsed();

    println!(
        "{TASKS} tasks on {} workers in {elapsed:.2?}",
        WORKERS.len()
    );
    println!(
        "{:<8} {:>4} {:>7} {:>9} {:>7} {:>10} {:>10} {:>6}",
        "worker", "ms", "given", "completed", "failed", "mean", "p99", "trips"
    );
    for (i, (name, ms)) in WORKERS.into_iter().enumerate() {
        let calls = given[i].load(Ordering::Relaxed);
        let Some(t) = tally.get_mut(name) else {
            println!("{name:<8} {ms:>4} {calls:>7} {:>9} {:>7}", 0, 0);
            continue;
        };
        t.latencies.sort_unstable();
        let mean = t.latencies.iter().sum::<Duration>() / t.latencies.len().max(1) as u32;
        let p99 = t.latencies[(t.latencies.len() * 99 / 100).min(t.latencies.len() - 1)];
        let trips = balance
            .endpoint_breaker(&name)
            .map_or(0, |h| h.metrics().total_trips);
        println!(
            "{name:<8} {ms:>4} {calls:>7} {:>9} {:>7} {:>10.2?} {:>10.2?} {trips:>6}",
            t.completed, t.failed, mean, p99
        );
        assert_eq!(
            calls,
            t.completed + t.failed,
            "{name}: every task given ended"
        );
    }
    if let Some(t) = tally.get("(balancer)") {
        println!("(balancer) rejected {} tasks", t.failed);
    }
    for (reason, n) in &reasons {
        println!("failed: {n} x {reason}");
    }

    let completed: u64 = tally.values().map(|t| t.completed).sum();
    let failed: u64 = tally.values().map(|t| t.failed).sum();
    println!(
        "completed {completed} + failed {failed} = {}",
        completed + failed
    );
    assert_eq!(completed + failed, TASKS, "every task is accounted for");
    assert!(seen.iter().all(|&s| s), "no task was lost");
    assert_eq!(failed, reasons.values().sum::<u64>());
    Ok(())
}
