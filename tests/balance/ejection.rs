//! Outlier ejection, panic mode and slow start, on tokio's paused clock.

use std::collections::HashMap;
use std::future::{ready, Ready};
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use palisade::balance::{Builder, OutlierDetection, RoundRobin, SlowStart, WeightedRoundRobin};
use palisade::clock::Clock;
use palisade::discover::{ChannelSet, FixedList};
use tower::{Service, ServiceExt};

/// How an endpoint answers: always well, always badly, or every other call badly.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Healthy,
    Failing,
    Flaky,
}

#[derive(Clone)]
struct Ep {
    name: &'static str,
    mode: Mode,
    calls: Arc<AtomicU32>,
    failing: Arc<AtomicBool>,
}

fn ep(name: &'static str, mode: Mode) -> Ep {
    Ep {
        name,
        mode,
        calls: Arc::default(),
        failing: Arc::new(AtomicBool::new(mode == Mode::Failing)),
    }
}

impl Service<()> for Ep {
    type Response = &'static str;
    type Error = io::Error;
    type Future = Ready<Result<&'static str, io::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: ()) -> Self::Future {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        let fail = match self.mode {
            Mode::Healthy => false,
            Mode::Failing => self.failing.load(Ordering::SeqCst),
            Mode::Flaky => n % 2 == 0,
        };
        ready(if fail {
            Err(io::Error::other(self.name))
        } else {
            Ok(self.name)
        })
    }
}

const NAMES: [&str; 10] = ["e0", "e1", "e2", "e3", "e4", "e5", "e6", "e7", "e8", "e9"];

fn ten(failing: usize, mode: Mode) -> FixedList<&'static str, Ep> {
    FixedList::unweighted(
        NAMES
            .iter()
            .enumerate()
            .map(|(i, &n)| (n, ep(n, if i < failing { mode } else { Mode::Healthy }))),
    )
}

/// Sends `n` requests; returns who served (or failed) each.
async fn run<S>(svc: &mut S, n: usize) -> Vec<&'static str>
where
    S: Service<(), Response = &'static str, Error = palisade::BoxError>,
{
    let mut out = Vec::new();
    for _ in 0..n {
        let r = svc.ready().await.unwrap().call(()).await;
        out.push(match r {
            Ok(name) => name,
            Err(e) => NAMES
                .iter()
                .find(|&&n| n == e.to_string())
                .copied()
                .unwrap(),
        });
    }
    out
}

#[tokio::test(start_paused = true)]
async fn consecutive_failures_eject_until_the_ejection_time_is_up() {
    let detection = OutlierDetection::builder()
        .consecutive_failures(3)
        .success_rate(false)
        .interval(Duration::from_secs(3600))
        .base_ejection_time(Duration::from_secs(30))
        .max_ejection_time(Duration::from_secs(300))
        .max_ejection_percent(10)
        .build()
        .unwrap();
    let mut b = Builder::new(RoundRobin::new())
        .clock(Clock::tokio())
        .outlier_detection(detection)
        .build(ten(1, Mode::Failing))
        .unwrap();
    let served = run(&mut b, 30).await;
    assert_eq!(served.iter().filter(|&&n| n == "e0").count(), 3);
    let served = run(&mut b, 100).await;
    assert!(!served.contains(&"e0"), "ejected endpoint got traffic");
    let e0 = b.endpoint_id(&"e0").unwrap();
    assert_eq!(b.is_ejected(e0), Some(true));
    assert_eq!(b.ejected_len(), 1);

    tokio::time::advance(Duration::from_secs(29)).await;
    assert!(!run(&mut b, 20).await.contains(&"e0"));
    tokio::time::advance(Duration::from_secs(1)).await;
    let served = run(&mut b, 30).await;
    assert_eq!(
        served.iter().filter(|&&n| n == "e0").count(),
        3,
        "back after 30 s, and ejected again after three more failures"
    );
    // The second ejection lasts twice as long.
    tokio::time::advance(Duration::from_secs(59)).await;
    assert!(!run(&mut b, 20).await.contains(&"e0"));
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(run(&mut b, 20).await.contains(&"e0"));
    assert_eq!(b.ejections(), 2);
}

#[tokio::test(start_paused = true)]
async fn ejection_never_exceeds_max_ejection_percent() {
    let detection = OutlierDetection::builder()
        .consecutive_failures(2)
        .success_rate(false)
        .base_ejection_time(Duration::from_secs(5))
        .max_ejection_time(Duration::from_secs(20))
        .max_ejection_percent(20)
        .panic_threshold_percent(0)
        .build()
        .unwrap();
    let mut b = Builder::new(RoundRobin::new())
        .clock(Clock::tokio())
        .outlier_detection(detection)
        .build(ten(6, Mode::Failing))
        .unwrap();
    let mut max_seen = 0;
    for _ in 0..600 {
        run(&mut b, 5).await;
        max_seen = max_seen.max(b.ejected_len());
        assert!(b.ejected_len() <= 2, "{} ejected", b.ejected_len());
        tokio::time::advance(Duration::from_millis(250)).await;
    }
    assert_eq!(max_seen, 2);
    assert!(
        b.ejections() > 10,
        "ejected endpoints return and are ejected again"
    );
}

#[tokio::test(start_paused = true)]
async fn panic_mode_picks_among_all_when_too_few_are_healthy() {
    let detection = OutlierDetection::builder()
        .consecutive_failures(1)
        .success_rate(false)
        .max_ejection_percent(50)
        .panic_threshold_percent(75)
        .build()
        .unwrap();
    let list = FixedList::unweighted([
        ("e0", ep("e0", Mode::Failing)),
        ("e1", ep("e1", Mode::Failing)),
        ("e2", ep("e2", Mode::Healthy)),
        ("e3", ep("e3", Mode::Healthy)),
    ]);
    let mut b = Builder::new(RoundRobin::new())
        .clock(Clock::tokio())
        .outlier_detection(detection)
        .build(list)
        .unwrap();
    run(&mut b, 4).await;
    // Both failing endpoints are ejected: 2 of 4 healthy is below 75 %.
    b.ready().await.unwrap();
    assert_eq!(b.ejected_len(), 2);
    assert!(b.in_panic());
    assert_eq!(b.ready_len(), 4, "panic picks among all");
    let served = run(&mut b, 8).await;
    assert!(served.contains(&"e0") && served.contains(&"e1"));
}

#[tokio::test(start_paused = true)]
async fn success_rate_outlier_is_ejected_at_the_interval() {
    let detection = OutlierDetection::builder()
        .consecutive_failures(0)
        .interval(Duration::from_secs(10))
        .success_rate_request_volume(20)
        .success_rate_minimum_hosts(5)
        .max_ejection_percent(10)
        .build()
        .unwrap();
    let mut b = Builder::new(RoundRobin::new())
        .clock(Clock::tokio())
        .outlier_detection(detection)
        .build(ten(1, Mode::Flaky))
        .unwrap();
    run(&mut b, 300).await;
    assert_eq!(b.ejected_len(), 0, "judged only at the interval");
    tokio::time::advance(Duration::from_secs(10)).await;
    let served = run(&mut b, 50).await;
    assert_eq!(b.ejected_len(), 1);
    assert_eq!(b.is_ejected(b.endpoint_id(&"e0").unwrap()), Some(true));
    assert!(!served.contains(&"e0"));
}

#[tokio::test(start_paused = true)]
async fn ejected_endpoint_removed_from_discovery_frees_its_ejection() {
    let detection = OutlierDetection::builder()
        .consecutive_failures(1)
        .success_rate(false)
        .max_ejection_percent(50)
        .panic_threshold_percent(0)
        .build()
        .unwrap();
    let (set, handle) = ChannelSet::new();
    handle.insert("bad", ep("bad", Mode::Failing), 1).unwrap();
    handle.insert("good", ep("good", Mode::Healthy), 1).unwrap();
    let mut b = Builder::new(RoundRobin::new())
        .clock(Clock::tokio())
        .outlier_detection(detection)
        .build_weighted(set)
        .unwrap();
    let _ = b.ready().await.unwrap().call(()).await;
    b.ready().await.unwrap();
    assert_eq!(b.ejected_len(), 1);
    handle.remove("bad").unwrap();
    b.ready().await.unwrap();
    assert_eq!((b.len(), b.ejected_len()), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn slow_start_ramps_a_new_endpoints_share() {
    let slow_start = SlowStart::builder()
        .window(Duration::from_secs(10))
        .min_weight_percent(10)
        .build()
        .unwrap();
    let (set, handle) = ChannelSet::new();
    handle.insert("a", ep("a", Mode::Healthy), 1).unwrap();
    handle.insert("b", ep("b", Mode::Healthy), 1).unwrap();
    let mut b = Builder::new(WeightedRoundRobin::new())
        .clock(Clock::tokio())
        .slow_start(slow_start)
        .build_weighted(set)
        .unwrap();
    run(&mut b, 2).await;
    tokio::time::advance(Duration::from_secs(20)).await;
    run(&mut b, 2).await;
    handle.insert("c", ep("c", Mode::Healthy), 1).unwrap();
    let share = |picks: &[&str]| {
        let mut m = HashMap::new();
        for p in picks {
            *m.entry(p.to_string()).or_insert(0usize) += 1;
        }
        m.get("c").copied().unwrap_or(0)
    };
    // 1 : 1 : 0.1 is 10 : 10 : 1, so one turn in 21.
    let picks = run(&mut b, 21).await;
    let c = b.endpoint_id(&"c").unwrap();
    assert_eq!(b.effective_weight(c), Some(0.1));
    assert_eq!(share(&picks), 1);
    tokio::time::advance(Duration::from_secs(5)).await;
    run(&mut b, 1).await;
    assert!((b.effective_weight(c).unwrap() - 0.5).abs() < 1e-9);
    let picks = run(&mut b, 50).await;
    assert_eq!(share(&picks), 10, "1 : 1 : 0.5 gives c one turn in five");
    tokio::time::advance(Duration::from_secs(5)).await;
    run(&mut b, 1).await;
    assert_eq!(b.effective_weight(c), Some(1.0));
    let picks = run(&mut b, 30).await;
    assert_eq!(share(&picks), 10);
}

#[tokio::test(start_paused = true)]
async fn request_waits_for_an_ejection_to_end_when_every_endpoint_is_ejected() {
    let detection = OutlierDetection::builder()
        .consecutive_failures(1)
        .success_rate(false)
        .base_ejection_time(Duration::from_secs(3))
        .max_ejection_percent(100)
        .panic_threshold_percent(0)
        .build()
        .unwrap();
    let only = ep("only", Mode::Failing);
    let failing = only.failing.clone();
    let list = FixedList::unweighted([("only", only)]);
    let mut b = Builder::new(RoundRobin::new())
        .clock(Clock::tokio())
        .no_endpoint_deadline(Duration::from_secs(10))
        .outlier_detection(detection)
        .build(list)
        .unwrap();
    assert!(b.ready().await.unwrap().call(()).await.is_err());
    failing.store(false, Ordering::SeqCst);
    let start = tokio::time::Instant::now();
    let served = b.ready().await.unwrap().call(()).await.unwrap();
    assert_eq!(served, "only");
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(3),
        "woken by the ejection's end, not the no-endpoint deadline"
    );
}
