//! Five OS processes form a gossip cluster over loopback from one seed address; one is
//! killed with SIGKILL and the others report it failed (within a cap derived from the
//! configuration); another leaves gracefully and is reported as having left.
//!
//! The member processes are this test binary run again: [`member_process_entry`] is a
//! no-op unless `PALISADE_GOSSIP_MEMBER` is set, in which case it runs one member that
//! reports on stdout (`ADDR`, `LIVE n`, `EVENT kind name`) and obeys stdin (`leave`).
//! A member exits when its stdin closes, so none outlives the test. What a member
//! writes to stderr (a panic, say) comes back as `STDERR ...` lines, shown when a wait
//! fails, so that a member that died says why.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use palisade::gossip::runtime::{Membership, MembershipConfig};
use palisade::gossip::Event;

use crate::common;
use common::PATIENCE;

const MEMBER_ENV: &str = "PALISADE_GOSSIP_MEMBER";
const SEED_ENV: &str = "PALISADE_GOSSIP_SEED";
/// A byte; the member seals with the key of 32 such bytes.
const KEY_ENV: &str = "PALISADE_GOSSIP_KEY_BYTE";

/// The longest the protocol takes to declare a crash in a cluster of `n`: every other
/// member is probed within `n` probe intervals (shuffled round robin), then the
/// suspicion runs its longest (Lifeguard's maximum, no confirmations). On virtual time
/// the simulator pins such a bound exactly
/// (`gossip_sim.rs`: `crashed_member_is_declared_dead_by_every_member_within_the_configured_bound`).
fn failure_bound(n: usize) -> Duration {
    let c = common::fast_gossip();
    let suspicion = c.suspicion_min_timeout(n) * c.suspicion_max_timeout_mult;
    c.probe_interval * n as u32 + suspicion
}

/// What the processes get to report the crash: the protocol's bound three times over
/// (on a loaded machine every member's timers fire late, stretching each probe period
/// and suspicion by as much), plus [`PATIENCE`] for five debug-build processes waiting
/// to be scheduled. Generous on purpose: this test proves that a real SIGKILL is seen
/// as a failure across processes; how fast is the simulator's claim.
fn failure_cap(n: usize) -> Duration {
    failure_bound(n) * 3 + PATIENCE
}

/// Runs one member when started as a member process; does nothing in a normal run.
#[test]
fn member_process_entry() {
    let Ok(name) = std::env::var(MEMBER_ENV) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run_member(name));
}

async fn run_member(name: String) {
    let mut protocol = common::fast_gossip();
    if let Ok(byte) = std::env::var(KEY_ENV) {
        protocol.keyring = Some(palisade::gossip::Keyring::new([byte.parse().unwrap(); 32]));
    }
    let mut config = MembershipConfig::new(name, "127.0.0.1:0".parse().unwrap())
        .protocol(protocol)
        .join_attempts(if std::env::var(KEY_ENV).is_ok() {
            4
        } else {
            20
        })
        .join_backoff(Duration::from_millis(50), Duration::from_millis(500))
        // `leave` returns once acknowledged and gossiped (well under a second here);
        // the timeout only cuts it short, so a loaded machine gets plenty.
        .leave_timeout(Duration::from_secs(10));
    if let Ok(seed) = std::env::var(SEED_ENV) {
        config = config.seeds([seed.parse().unwrap()]);
    }
    let member = match Membership::start(config).await {
        Ok(m) => m,
        Err(e) => {
            println!("JOINFAILED {e}");
            return;
        }
    };
    let mut events = member.subscribe();
    println!("ADDR {}", member.gossip_addr());
    let (cmd_tx, mut cmd_rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if cmd_tx.send(line).is_err() {
                return;
            }
        }
        // Stdin closed: the test is gone.
        let _ = cmd_tx.send("exit".to_owned());
    });
    let mut live = usize::MAX;
    let mut dropped = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    // A member exits when its stdin closes (the test process is gone); this is only the
    // backstop, longer than any run of the test with all its caps reached.
    let lifetime = tokio::time::sleep(Duration::from_secs(300));
    tokio::pin!(lifetime);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let now = member.live_members();
                if now != live {
                    live = now;
                    println!("LIVE {live}");
                }
                let d = member.stats().dropped();
                if d != dropped {
                    dropped = d;
                    println!("DROPPED {dropped}");
                }
            }
            Some(e) = events.next() => {
                let kind = match &e {
                    Event::Join(_) => "Join",
                    Event::Leave(_) => "Leave",
                    Event::Failed(_) => "Failed",
                    Event::Update(_) => "Update",
                    Event::Reap(_) => "Reap",
                };
                println!("EVENT {kind} {}", e.member().name());
            }
            cmd = cmd_rx.recv() => match cmd.as_deref() {
                Some("leave") => {
                    let acked = member.leave().await;
                    member.shutdown().await.unwrap();
                    println!("LEFT {acked}");
                    return;
                }
                Some("exit") | None => {
                    member.kill();
                    return;
                }
                Some(_) => {}
            },
            _ = &mut lifetime => return,
        }
    }
}

struct Proc {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(name: &str, seed: Option<&str>, lines: &mpsc::Sender<(String, String)>) -> Proc {
    spawn_keyed(name, seed, None, lines)
}

fn spawn_keyed(
    name: &str,
    seed: Option<&str>,
    key: Option<u8>,
    lines: &mpsc::Sender<(String, String)>,
) -> Proc {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        common::test_name(module_path!(), "member_process_entry").as_str(),
        "--nocapture",
        "--test-threads=1",
    ])
    .env(MEMBER_ENV, name)
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    if let Some(seed) = seed {
        cmd.env(SEED_ENV, seed);
    }
    if let Some(key) = key {
        cmd.env(KEY_ENV, key.to_string());
    }
    let mut child = cmd.spawn().expect("spawn member process");
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let stdin = child.stdin.take();
    let (tx, who) = (lines.clone(), name.to_owned());
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send((who.clone(), format!("STDERR {line}"))).is_err() {
                break;
            }
        }
    });
    let tx = lines.clone();
    let who = name.to_owned();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            // libtest prints "test member_process_entry ... " before the first line.
            let Some(at) = [
                "ADDR ",
                "LIVE ",
                "EVENT ",
                "LEFT ",
                "DROPPED ",
                "JOINFAILED",
            ]
            .iter()
            .filter_map(|tag| line.find(tag))
            .min() else {
                continue;
            };
            if tx.send((who.clone(), line[at..].to_owned())).is_err() {
                break;
            }
        }
    });
    Proc {
        name: name.to_owned(),
        child,
        stdin,
    }
}

/// Everything the members said, and a way to wait for something to be said.
struct Transcript {
    rx: mpsc::Receiver<(String, String)>,
    seen: Vec<(String, String)>,
}

impl Transcript {
    fn said(&self, who: &str, what: &str) -> bool {
        self.seen.iter().any(|(w, l)| w == who && l == what)
    }

    /// Waits until every `(who, line)` was said, at most `within`.
    fn wait_all(&mut self, want: &[(String, String)], within: Duration) -> Result<(), String> {
        let end = Instant::now() + within;
        loop {
            let missing: Vec<_> = want.iter().filter(|(w, l)| !self.said(w, l)).collect();
            if missing.is_empty() {
                return Ok(());
            }
            let left = end.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => {
                    let stderr: Vec<_> = self
                        .seen
                        .iter()
                        .filter(|(_, l)| l.starts_with("STDERR "))
                        .collect();
                    return Err(format!(
                        "still missing {missing:?}; the members' stderr: {stderr:?}"
                    ));
                }
            }
        }
    }

    fn addr_of(&mut self, who: &str, within: Duration) -> String {
        let end = Instant::now() + within;
        loop {
            if let Some((_, l)) = self
                .seen
                .iter()
                .find(|(w, l)| w == who && l.starts_with("ADDR "))
            {
                return l["ADDR ".len()..].to_owned();
            }
            let left = end.saturating_duration_since(Instant::now());
            let line = self
                .rx
                .recv_timeout(left)
                .expect("member printed its address");
            self.seen.push(line);
        }
    }
}

fn all_say(names: &[&str], line: &str) -> Vec<(String, String)> {
    names
        .iter()
        .map(|n| (n.to_string(), line.to_owned()))
        .collect()
}

#[test]
fn five_processes_detect_a_sigkill_as_failed_and_a_leave_as_left() {
    if std::env::var(MEMBER_ENV).is_ok() {
        return;
    }
    let (tx, rx) = mpsc::channel();
    let mut t = Transcript {
        rx,
        seen: Vec::new(),
    };
    let mut procs = vec![spawn("m0", None, &tx)];
    let seed = t.addr_of("m0", PATIENCE);
    for i in 1..5 {
        procs.push(spawn(&format!("m{i}"), Some(&seed), &tx));
    }
    let names = ["m0", "m1", "m2", "m3", "m4"];
    t.wait_all(&all_say(&names, "LIVE 4"), PATIENCE)
        .expect("the five processes converge");

    // SIGKILL m3: no leave, the sockets just vanish.
    let killed_at = Instant::now();
    let cap = failure_cap(5);
    procs[3].child.kill().unwrap();
    procs[3].child.wait().unwrap();
    t.wait_all(&all_say(&["m0", "m1", "m2", "m4"], "EVENT Failed m3"), cap)
        .unwrap_or_else(|e| panic!("not failed within {cap:?}: {e}"));
    eprintln!(
        "m3 failed everywhere {:?} after the SIGKILL (protocol bound {:?})",
        killed_at.elapsed(),
        failure_bound(5)
    );
    assert!(!t.seen.iter().any(|(_, l)| l == "EVENT Leave m3"));

    // m4 leaves gracefully and exits.
    let m4 = &mut procs[4];
    assert_eq!(m4.name, "m4");
    writeln!(m4.stdin.as_mut().unwrap(), "leave").unwrap();
    t.wait_all(&all_say(&["m0", "m1", "m2"], "EVENT Leave m4"), PATIENCE)
        .expect("the leave is seen by every remaining member");
    t.wait_all(&[("m4".into(), "LEFT true".into())], PATIENCE)
        .expect("the leave was acknowledged");
    let status = wait_exit(&mut procs[4].child, PATIENCE);
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    assert!(!t.seen.iter().any(|(_, l)| l == "EVENT Failed m4"));
    t.wait_all(&all_say(&["m0", "m1", "m2"], "LIVE 2"), PATIENCE)
        .expect("three remain alive");
}

fn wait_exit(child: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[test]
fn a_process_with_the_wrong_key_never_appears_and_its_packets_are_dropped() {
    if std::env::var(MEMBER_ENV).is_ok() {
        return;
    }
    let (tx, rx) = mpsc::channel();
    let mut t = Transcript {
        rx,
        seen: Vec::new(),
    };
    let _a = spawn_keyed("a", None, Some(7), &tx);
    let seed = t.addr_of("a", PATIENCE);
    let _b = spawn_keyed("b", Some(&seed), Some(7), &tx);
    t.wait_all(&all_say(&["a", "b"], "LIVE 1"), PATIENCE)
        .expect("the keyed pair forms");
    let _intruder = spawn_keyed("intruder", Some(&seed), Some(9), &tx);
    // Each of its join attempts is a push-pull the seed cannot open.
    let end = Instant::now() + PATIENCE;
    let joined_failed = loop {
        if t.seen
            .iter()
            .any(|(w, l)| w == "intruder" && l.starts_with("JOINFAILED"))
        {
            break true;
        }
        let left = end.saturating_duration_since(Instant::now());
        match t.rx.recv_timeout(left) {
            Ok(line) => t.seen.push(line),
            Err(_) => break false,
        }
    };
    assert!(
        joined_failed,
        "the intruder's join did not fail: {:?}",
        t.seen
    );
    let dropped_by_a = |t: &Transcript| {
        t.seen
            .iter()
            .filter(|(w, l)| w == "a" && l.starts_with("DROPPED "))
            .filter_map(|(_, l)| l["DROPPED ".len()..].parse::<u64>().ok())
            .max()
            .unwrap_or(0)
    };
    // Four attempts, four sealed messages a cannot open.
    let end = Instant::now() + PATIENCE;
    while dropped_by_a(&t) < 4 && Instant::now() < end {
        if let Ok(line) = t.rx.recv_timeout(Duration::from_millis(100)) {
            t.seen.push(line);
        }
    }
    assert!(dropped_by_a(&t) >= 4, "{:?}", t.seen);
    assert!(!t
        .seen
        .iter()
        .any(|(_, l)| l.starts_with("EVENT") && l.ends_with("intruder")));
    assert!(!t.said("a", "LIVE 2") && !t.said("b", "LIVE 2"));
}
