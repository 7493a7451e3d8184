//! Measurements of the gossip membership on the simulator (LAN defaults).
//!
//! ```text
//! cargo run --release --features sim --example gossip_sim            # everything (about 5 minutes on 2 cores)
//! cargo run --release --features sim --example gossip_sim -- quick   # 16 and 128 members, no false-positive runs
//! cargo run --release --features sim --example gossip_sim -- nofp    # the table and the wall time only
//! cargo run --release --features sim --example gossip_sim -- wall    # only the 1,024 x 60 s wall time
//! cargo run --release --features sim --example gossip_sim -- fp fp_runs=10 verbose  # false positives, each listed
//! cargo run --release --features sim --example gossip_sim -- udp     # members with UDP broken, TCP fallback on and off
//! cargo run --release --features sim --example gossip_sim -- quick probe_interval=1000 probe_timeout=500  # knobs
//! ```
//!
//! Knobs that can be changed on the command line: `probe_interval=<ms>`,
//! `probe_timeout=<ms>`, `suspicion_mult=<n>`, `suspicion_max_timeout_mult=<n>`,
//! `tcp_fallback_ping=<0|1>`.
//!
//! Every run is seeded and reproducible. The network is a LAN: one-way delay uniform in
//! 0.2 to 2 ms (so packets reorder), loss as stated per row. Bytes count the gossip
//! payload with its envelope, not IP/UDP headers.
//!
//! Figures from one run (LAN preset: 500 ms probes, release build, a shared 2-core
//! machine):
//!
//! ```text
//! | members | cold start | update to 99.9%, median (max of 5) | crash seen by all, 1% loss | bytes/member/s |
//! |     16  |   1.30 s   | 0.33 s (0.36 s)                     | 3.00 s (3.83 s)            | 92 (45 push-pull) |
//! |    128  |   1.80 s   | 0.54 s (0.66 s)                     | 5.13 s (6.43 s)            | 92 (45 push-pull) |
//! |   1024  |  11.40 s   | 0.68 s (0.81 s)                     | 7.10 s (7.64 s)            | 93 (45 push-pull) |
//!
//! 1,024 members x 60 s from a cold start: 10.5 s wall on an idle machine (about 20 s
//! while other jobs share it; 0.5 s per further minute once formed)
//!
//! false positives, 128 members, 10 min, 10% loss, 5% of the members slow (each packet
//! handled 0-2 s late), the same 10 seeded runs, `-- fp`; Lifeguard on and off with the
//! TCP fallback ping off (with it on, it saves the same rounds and hides the difference),
//! then the default:
//! | lifeguard | TCP fallback | Dead declarations about timely members | about slow members | members declared Dead |
//! | on        | off          |   0                                    |   0                |   0                   |
//! | off       | off          | 253                                    | 127                |   4                   |
//! | on        | on           |   0                                    |   0                |   0                   |
//!
//! 128 members, 5 min, 1% loss, every 32nd member (4) with UDP dropped both ways (TCP
//! works), `-- udp`:
//! | TCP fallback | Failed events about them | about others | rounds saved by TCP | stream bytes/member/s |
//! | on           |    0                     |   0          | 6032                | 57                    |
//! | off          | 5223                     | 185          |    0                | 59                    |
//! ```
//!
//! The TCP fallback ping (on by default) changes nothing while direct pings are
//! answered; the crash column differs from a run with it off (`tcp_fallback_ping=0`:
//! 3.33 (3.50), 5.14 (5.73), 7.33 (7.74)) only because the pings to the crashed member
//! consume random draws of the simulated network, which moves the losses of the five
//! samples; the protocol's timeouts are the same. The simulated streams are lossless
//! (TCP retransmits), so at 10% datagram loss the fallback saves the rounds whose
//! direct and indirect probes were all lost: with Lifeguard off that removes almost
//! every false positive (`tcp_fallback_ping=0` gives 253 events about timely members,
//! 127 about slow ones, 4 members declared failed, three of them by the whole cluster).
//! A real network that loses datagrams also delays TCP, so expect less there.
//!
//! With the previous LAN preset (1 s probes, `-- fp probe_interval=1000
//! probe_timeout=500 tcp_fallback_ping=0`) the same runs give 0 with Lifeguard and 248
//! events (2 members) without, but a crash took 10.5 s (median) to reach all of 128
//! members: it is dominated by the minimal suspicion timeout,
//! `suspicion_mult * log10(n) * probe_interval` (4.2 s at 128 members now).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use palisade::gossip::sim::{fake_addr, MemberId, Network, Simulation};
use palisade::gossip::{Config, Event, Identity};

/// LAN defaults, except that `knob=value` arguments override these knobs:
/// `probe_interval=<ms>`, `probe_timeout=<ms>`, `suspicion_mult=<n>`,
/// `suspicion_max_timeout_mult=<n>`, `tcp_fallback_ping=<0|1>`.
fn lan() -> Config {
    let mut cfg = Config {
        seed: Some(42),
        ..Config::lan()
    };
    for arg in std::env::args() {
        let Some((knob, v)) = arg.split_once('=') else {
            continue;
        };
        let int = || -> u64 { v.parse().unwrap_or_else(|_| panic!("{knob}=<integer>")) };
        match knob {
            "probe_interval" => cfg.probe_interval = Duration::from_millis(int()),
            "probe_timeout" => cfg.probe_timeout = Duration::from_millis(int()),
            "suspicion_mult" => cfg.suspicion_mult = int() as u32,
            "suspicion_max_timeout_mult" => cfg.suspicion_max_timeout_mult = int() as u32,
            "tcp_fallback_ping" => cfg.tcp_fallback_ping = int() != 0,
            "fp_runs" => {}
            _ => panic!("unknown knob {knob}"),
        }
    }
    cfg.validate().expect("valid knobs");
    cfg
}

/// The value of a `name=<integer>` argument.
fn arg(name: &str) -> Option<u64> {
    std::env::args().find_map(|a| {
        a.strip_prefix(name)
            .and_then(|v| v.strip_prefix('='))
            .map(|v| v.parse().expect("an integer"))
    })
}

/// `n` members named `node-0000` ... (fixed-width names, like host names, so that the
/// bytes measured do not grow with the digits of the member count).
fn add_members(sim: &mut Simulation, n: usize, cfg: &Config) -> Vec<MemberId> {
    (0..n)
        .map(|i| {
            let cfg = Config {
                seed: cfg.seed.map(|s| s + i as u64),
                ..cfg.clone()
            };
            sim.add_member(Identity::new(format!("node-{i:04}"), fake_addr(i)), cfg)
                .expect("valid config")
        })
        .collect()
}

fn converged(sim: &Simulation, ids: &[MemberId]) -> bool {
    ids.iter().all(|&i| {
        sim.swim(i)
            .is_some_and(|s| s.live_members() == ids.len() - 1)
    })
}

/// Starts `n` members at once (each joins m0 at a random moment of the first second)
/// and returns the virtual time until every view is complete.
fn cold_start(
    n: usize,
    cfg: &Config,
    net: Network,
    seed: u64,
) -> (Simulation, Vec<MemberId>, Option<Duration>) {
    let mut sim = Simulation::new(seed, net);
    let ids = add_members(&mut sim, n, cfg);
    let step = Duration::from_nanos(1_000_000_000 / n as u64);
    for &id in &ids[1..] {
        sim.run_for(step);
        sim.join(id, &[ids[0]]);
    }
    let t = sim.run_until_true(Duration::from_millis(100), Duration::from_secs(600), |s| {
        converged(s, &ids)
    });
    let t = t.map(|t| t + Duration::from_secs(1));
    (sim, ids, t)
}

/// A formed cluster whose dissemination queues have drained.
fn settled(n: usize, cfg: &Config, net: Network, seed: u64) -> (Simulation, Vec<MemberId>) {
    let (mut sim, ids, t) = cold_start(n, cfg, net, seed);
    assert!(t.is_some(), "cluster of {n} formed");
    sim.run_until_true(Duration::from_secs(1), Duration::from_secs(300), |s| {
        ids.iter()
            .all(|&i| s.swim(i).is_some_and(|s| s.pending_updates() == 0))
    });
    (sim, ids)
}

/// Time for a tag update to reach 99.9% of the other members.
fn propagation(sim: &mut Simulation, who: MemberId, n: usize) -> Option<Duration> {
    let name = sim.name(who).to_owned();
    let seen = Rc::new(RefCell::new(0usize));
    let s2 = seen.clone();
    sim.set_observer(move |_, _, e| {
        if matches!(e, Event::Update(m) if m.name() == name) {
            *s2.borrow_mut() += 1;
        }
    });
    let tags = BTreeMap::from([("weight".to_owned(), sim.now().to_string())]);
    sim.with_swim(who, |s, now| s.set_tags(tags, now))
        .unwrap()
        .unwrap();
    let need = ((n - 1) as f64 * 0.999).ceil() as usize;
    let t = sim.run_until_true(Duration::from_millis(10), Duration::from_secs(30), |_| {
        *seen.borrow() >= need
    });
    sim.set_observer(|_, _, _| {});
    t
}

/// Time until every other live member has declared a crashed member failed.
fn detection(sim: &mut Simulation, victim: MemberId, live: usize) -> Option<Duration> {
    let name = sim.name(victim).to_owned();
    let failed = Rc::new(RefCell::new(0usize));
    let f2 = failed.clone();
    sim.set_observer(move |_, _, e| {
        if matches!(e, Event::Failed(m) if m.name() == name) {
            *f2.borrow_mut() += 1;
        }
    });
    sim.crash(victim);
    let need = live - 1;
    let t = sim.run_until_true(Duration::from_millis(10), Duration::from_secs(120), |_| {
        *failed.borrow() >= need
    });
    sim.set_observer(|_, _, _| {});
    t
}

/// "median (max)" of several samples.
fn summary(mut samples: Vec<Option<Duration>>) -> String {
    if samples.iter().any(Option::is_none) {
        return "> limit".to_owned();
    }
    samples.sort();
    let med = samples[samples.len() / 2].unwrap();
    let max = samples[samples.len() - 1].unwrap();
    format!("{:.2} s ({:.2} s)", med.as_secs_f64(), max.as_secs_f64())
}

/// Bytes sent per member per second over a quiet window of three push-pull intervals
/// (at least five minutes), so that every member makes several full-state exchanges:
/// all bytes, and push-pull bytes only.
fn bandwidth(sim: &mut Simulation, n: usize) -> (f64, f64) {
    let (all, stream) = (sim.stats().bytes_sent, sim.stats().stream_bytes_sent);
    let window = (lan().push_pull_interval_for(n) * 3).max(Duration::from_secs(300));
    sim.run_for(window);
    let per = |b: u64| b as f64 / n as f64 / window.as_secs_f64();
    (
        per(sim.stats().bytes_sent - all),
        per(sim.stats().stream_bytes_sent - stream),
    )
}

/// Failure events about members that never failed, split by who they were about.
#[derive(Default)]
struct FalsePositives {
    /// About healthy, timely members.
    on_timely: usize,
    /// About slow members.
    on_slow: usize,
    /// Distinct members declared failed at least once (by anyone).
    victims: usize,
}

/// The most a slow member handles an input late; each packet draws its own delay,
/// uniform between zero and this (foca's "slow members delay their inputs by 0-2 s").
const SLOW_MAX: Duration = Duration::from_secs(2);

/// Failure events over ten minutes with 10% loss and 5% of the members slow (one in
/// twenty, every input late by a random `0..=SLOW_MAX`).
fn false_positives(
    n: usize,
    lifeguard: bool,
    tcp_fallback_ping: bool,
    seed: u64,
) -> FalsePositives {
    let cfg = Config {
        lifeguard,
        tcp_fallback_ping,
        ..lan()
    };
    let (mut sim, ids) = settled(n, &cfg, Network::lan(), seed);
    let slow: Vec<MemberId> = ids.iter().copied().step_by(20).collect();
    for &id in &slow {
        sim.set_slow_between(id, Duration::ZERO, SLOW_MAX);
    }
    sim.set_network(Network::lan().with_loss(0.10));
    let slow_names: Vec<String> = slow.iter().map(|&i| sim.name(i).to_owned()).collect();
    let log: Rc<RefCell<Vec<String>>> = Rc::default();
    let l2 = log.clone();
    let verbose = std::env::args().any(|a| a == "verbose");
    let slow_ids = slow.clone();
    let start = sim.now();
    sim.set_observer(move |t, by, e| {
        if let Event::Failed(m) = e {
            if verbose {
                println!(
                    "seed {seed} lifeguard {lifeguard}: at {:.1} s {by:?}{} declared {} (incarnation {}) failed",
                    (t - start) as f64 / 1e9,
                    if slow_ids.contains(&by) { " (slow)" } else { "" },
                    m.name(),
                    m.incarnation()
                );
            }
            l2.borrow_mut().push(m.name().to_owned());
        }
    });
    sim.run_for(Duration::from_secs(600));
    let log = log.borrow();
    let mut victims: Vec<&String> = log.iter().collect();
    victims.sort();
    victims.dedup();
    let on_slow = log.iter().filter(|m| slow_names.contains(m)).count();
    FalsePositives {
        on_timely: log.len() - on_slow,
        on_slow,
        victims: victims.len(),
    }
}

fn fmt(d: Option<Duration>) -> String {
    d.map_or("> limit".to_owned(), |d| {
        format!("{:.2} s", d.as_secs_f64())
    })
}

/// Updates and crashes measured per size (the table shows the median and the maximum).
const SAMPLES: usize = 5;

/// What happens over five minutes (1% loss) when some members' UDP is broken both ways
/// while their TCP works, with the TCP fallback ping on or off.
struct UdpBroken {
    /// Failed events about the members without UDP.
    on_cut: usize,
    /// Failed events about the others.
    on_others: usize,
    /// Probe rounds saved by the fallback, summed over every member.
    saves: u64,
    /// Stream bytes (push-pull and fallback pings) per member per second.
    stream_bytes: f64,
}

fn udp_broken(n: usize, fallback: bool, seed: u64) -> UdpBroken {
    let cfg = Config {
        tcp_fallback_ping: fallback,
        ..lan()
    };
    let (mut sim, ids) = settled(n, &cfg, Network::lan(), seed);
    sim.set_network(Network::lan().with_loss(0.01));
    let cut: Vec<MemberId> = ids.iter().copied().step_by(32).collect();
    for &id in &cut {
        sim.isolate_datagrams(id);
    }
    let cut_names: Vec<String> = cut.iter().map(|&i| sim.name(i).to_owned()).collect();
    let log: Rc<RefCell<Vec<String>>> = Rc::default();
    let l2 = log.clone();
    sim.set_observer(move |_, _, e| {
        if let Event::Failed(m) = e {
            l2.borrow_mut().push(m.name().to_owned());
        }
    });
    let stream = sim.stats().stream_bytes_sent;
    let window = Duration::from_secs(300);
    sim.run_for(window);
    let log = log.borrow();
    let on_cut = log.iter().filter(|m| cut_names.contains(m)).count();
    UdpBroken {
        on_cut,
        on_others: log.len() - on_cut,
        saves: ids
            .iter()
            .filter_map(|&i| sim.swim(i))
            .map(|s| s.stats().tcp_fallback_saves)
            .sum(),
        stream_bytes: (sim.stats().stream_bytes_sent - stream) as f64
            / n as f64
            / window.as_secs_f64(),
    }
}

/// Prints the UDP-broken scenario with the fallback on and off.
fn udp_broken_table() {
    let n = 128;
    println!(
        "\n{n} members, 5 min, 1% loss, every 32nd member ({}) with UDP dropped both ways \
         (TCP works):",
        n / 32
    );
    println!("| TCP fallback | Failed events about them | about others | rounds saved by TCP | stream bytes/member/s |");
    println!("|---|---:|---:|---:|---:|");
    for on in [true, false] {
        let r = udp_broken(n, on, 5);
        println!(
            "| {} | {} | {} | {} | {:.0} |",
            if on { "on" } else { "off" },
            r.on_cut,
            r.on_others,
            r.saves,
            r.stream_bytes
        );
    }
}

fn main() {
    if std::env::args().any(|a| a == "udp") {
        udp_broken_table();
        return;
    }
    let quick = std::env::args().any(|a| a == "quick");
    let wall_only = std::env::args().any(|a| a == "wall");
    let fp_only = std::env::args().any(|a| a == "fp");
    let sizes: &[usize] = match (quick, wall_only || fp_only) {
        (_, true) => &[],
        (true, _) => &[16, 128],
        _ => &[16, 128, 1024],
    };
    let no_fp = std::env::args().any(|a| a == "nofp");
    if !wall_only && !fp_only {
        println!("| members | cold start to complete views | update to 99.9%: median (max of {SAMPLES}) | crash seen by all, 1% loss: median (max of {SAMPLES}) | bytes/member/s | wall |");
        println!("|---:|---:|---:|---:|---:|---:|");
    }
    for &n in sizes {
        let wall = Instant::now();
        let (_, _, cold) = cold_start(n, &lan(), Network::lan(), 1);
        let (mut sim, ids) = settled(n, &lan(), Network::lan(), 2);
        let (bytes, pp_bytes) = bandwidth(&mut sim, n);
        let mut props = Vec::new();
        for k in 0..SAMPLES {
            sim.run_for(Duration::from_secs(5));
            props.push(propagation(&mut sim, ids[(k * 7 + 1) % n], n));
        }
        sim.set_network(Network::lan().with_loss(0.01));
        sim.run_for(Duration::from_secs(10));
        let mut dets = Vec::new();
        for k in 0..SAMPLES {
            dets.push(detection(&mut sim, ids[(k * 5 + 3) % n], n - k));
            sim.run_for(Duration::from_secs(20));
        }
        println!(
            "| {n} | {} | {} | {} | {bytes:.0} ({pp_bytes:.0} push-pull) | {:.1} s |",
            fmt(cold),
            summary(props),
            summary(dets),
            wall.elapsed().as_secs_f64()
        );
    }

    let n = if quick { 128 } else { 1024 };
    if fp_only {
        false_positive_table(quick);
        return;
    }
    let wall = Instant::now();
    let mut sim = Simulation::new(3, Network::lan());
    let ids = add_members(&mut sim, n, &lan());
    for &id in &ids[1..] {
        sim.join(id, &[ids[0]]);
    }
    sim.run_for(Duration::from_secs(60));
    println!(
        "\n{n} members x 60 s simulated from a cold start: {:.1} s wall, {} packets delivered",
        wall.elapsed().as_secs_f64(),
        sim.stats().delivered
    );
    let wall = Instant::now();
    sim.run_for(Duration::from_secs(60));
    println!(
        "{n} members x 60 s more, formed cluster: {:.1} s wall",
        wall.elapsed().as_secs_f64()
    );

    if quick && !no_fp {
        println!(
            "\n(false positives skipped in quick mode: without Lifeguard about half of the \
             10-minute runs declare a healthy member Dead, so one run often shows no \
             difference; run `-- fp`)"
        );
    } else if !wall_only && !no_fp {
        false_positive_table(quick);
    }
}

/// Prints the false positives with Lifeguard on and off over the same seeded runs.
///
/// The comparison runs with the TCP fallback ping off: the simulated streams are
/// lossless, so the fallback saves the very rounds Lifeguard would, and with both on
/// neither shows its effect (both rows read 0). The last row is the default, both on.
fn false_positive_table(quick: bool) {
    let n = 128;
    let runs = arg("fp_runs").unwrap_or(if quick { 1 } else { 10 });
    println!(
        "\nfalse positives, {n} members, 10 min, 10% loss, 5% slow (each input 0-{} ms late), \
         the same {runs} seeded runs; Lifeguard on and off with the TCP fallback ping off \
         (it would hide the difference), then the default with both on:",
        SLOW_MAX.as_millis()
    );
    println!("| lifeguard | TCP fallback | Dead declarations about timely members | about slow members | members declared Dead |");
    println!("|---|---|---:|---:|---:|");
    for (lifeguard, fallback) in [(true, false), (false, false), (true, true)] {
        let mut sum = FalsePositives::default();
        for seed in 0..runs {
            let fp = false_positives(n, lifeguard, fallback, 7 + seed);
            sum.on_timely += fp.on_timely;
            sum.on_slow += fp.on_slow;
            sum.victims += fp.victims;
        }
        let word = |on: bool| if on { "on" } else { "off" };
        println!(
            "| {} | {} | {} | {} | {} |",
            word(lifeguard),
            word(fallback),
            sum.on_timely,
            sum.on_slow,
            sum.victims
        );
    }
}
