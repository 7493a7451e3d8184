//! Driving the gossip core yourself: a hand-written event loop, no tokio.
//!
//! ```text
//! cargo run --example sans_io
//! ```
//!
//! Three members (`a`, `b`, `c`) each get a plain `std::net::UdpSocket` on 127.0.0.1
//! and a [`Swim`] core. The core never touches a socket or a clock: this loop reads the
//! sockets, hands every datagram to the core, calls its timer when its deadline comes,
//! and sends what the core queued. The members use only datagrams
//! (`Config::datagram_only`), so joining works without any TCP-like stream.
//!
//! What happens, printed as it happens:
//! 1. `b` and `c` join through `a`, and everyone learns everyone. Meanwhile `d` tries
//!    to join through an address where nobody answers: the core retries, then reports
//!    the join failed.
//! 2. `c` crashes (its socket closes without a word): `a` and `b` stop getting answers
//!    to their probes, suspect it, and declare it failed.
//! 3. `b` leaves gracefully: `a` sees a leave, not a failure. Then the loop ends.
//!
//! It ends by itself in a few seconds, or gives up after 30 seconds.

use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use palisade::gossip::{Config, Event, Identity, JoinStatus, Swim};

/// One member: its socket and its protocol core.
struct Node {
    name: &'static str,
    socket: UdpSocket,
    swim: Swim,
}

impl Node {
    fn new(name: &'static str, config: &Config) -> Result<Node, Box<dyn std::error::Error>> {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        // Non-blocking: one thread serves every member, so no read may wait.
        socket.set_nonblocking(true)?;
        let identity = Identity::new(name, socket.local_addr()?);
        let swim = Swim::new(identity, config.clone(), 0)?;
        Ok(Node { name, socket, swim })
    }

    fn addr(&self) -> SocketAddr {
        self.swim.local().gossip_addr()
    }

    /// One turn: read what arrived, run the timer if due, send what the core queued.
    /// Returns the membership events of this turn.
    fn turn(&mut self, now: u64, buf: &mut [u8]) -> Vec<Event> {
        loop {
            match self.socket.recv_from(buf) {
                Ok((n, from)) => self.swim.handle_datagram(from, &buf[..n], now),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                // Loopback may report a port nobody listens on; the core copes with
                // lost datagrams, so there is nothing to do.
                Err(_) => break,
            }
        }
        // Early calls would be harmless too: the core does only what is due.
        if now >= self.swim.next_deadline() {
            self.swim.handle_timeout(now);
        }
        for t in self.swim.drain_transmits().collect::<Vec<_>>() {
            match t.stream {
                None => {
                    // A lost datagram is fine: the protocol expects loss.
                    let _ = self.socket.send_to(&t.bytes, t.to);
                }
                // With `datagram_only` the core never asks for a stream. A driver with
                // streams would open one for a Request (and report a failure with
                // `stream_failed`) and write an Answer back on the stream it answers.
                Some(_) => self.swim.stream_failed(t.to, now),
            }
        }
        std::iter::from_fn(|| self.swim.poll_event()).collect()
    }
}

fn describe(event: &Event) -> String {
    match event {
        Event::Join(m) => format!("{} joined (it gossips at {})", m.name(), m.gossip_addr()),
        Event::Leave(m) => format!("{} left gracefully", m.name()),
        Event::Failed(m) => format!(
            "{} stopped answering probes and was declared failed",
            m.name()
        ),
        Event::Update(m) => format!("{} changed its tags or service address", m.name()),
        Event::Reap(m) => format!("{} was forgotten", m.name()),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Joining,
    CrashDetecting,
    Leaving,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The loopback preset, faster: every step of the story takes about a second.
    let config = Config {
        datagram_only: true,
        probe_interval: Duration::from_millis(200),
        probe_timeout: Duration::from_millis(100),
        gossip_interval: Duration::from_millis(50),
        ..Config::local()
    };
    let epoch = Instant::now();
    let clock = || u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
    let say = |who: &str, what: &str| {
        println!("[{:5.2} s] {who}: {what}", epoch.elapsed().as_secs_f64());
    };

    let mut nodes = vec![
        Node::new("a", &config)?,
        Node::new("b", &config)?,
        Node::new("c", &config)?,
    ];
    let seed = nodes[0].addr();
    for n in &mut nodes[1..] {
        say(n.name, &format!("joining through a at {seed}"));
        n.swim.join(&[seed], clock());
    }
    // A member whose only seed is gone: bind a port, then free it.
    let dead_seed = UdpSocket::bind("127.0.0.1:0")?.local_addr()?;
    let mut d = Some(Node::new("d", &config)?);
    if let Some(d) = d.as_mut() {
        say(
            "d",
            &format!("joining through {dead_seed}, where nobody answers"),
        );
        d.swim.join(&[dead_seed], clock());
    }

    let mut phase = Phase::Joining;
    let mut failed_seen = 0;
    let mut buf = vec![0u8; 65_536];
    let give_up = Duration::from_secs(30);
    loop {
        if epoch.elapsed() > give_up {
            return Err(format!("gave up after {give_up:?} in phase {phase:?}").into());
        }
        let now = clock();
        for n in &mut nodes {
            for e in n.turn(now, &mut buf) {
                say(n.name, &describe(&e));
                if phase == Phase::CrashDetecting
                    && matches!(&e, Event::Failed(m) if m.name() == "c")
                {
                    failed_seen += 1;
                }
                if phase == Phase::Leaving && matches!(&e, Event::Leave(m) if m.name() == "b") {
                    say("loop", "a saw b leave; every member is done: stopping");
                    return Ok(());
                }
            }
        }
        if let Some(node) = d.as_mut() {
            node.turn(now, &mut buf);
            if let JoinStatus::Failed { seeds } = node.swim.join_status() {
                say(
                    "d",
                    &format!("join failed: none of its {seeds} seed(s) answered, after retries"),
                );
                d = None;
            }
        }
        match phase {
            Phase::Joining => {
                let all = nodes
                    .iter()
                    .all(|n| n.swim.live_members() == nodes.len() - 1);
                if all && d.is_none() {
                    say(
                        "loop",
                        "everyone knows everyone; now c crashes (no goodbye)",
                    );
                    nodes.pop();
                    phase = Phase::CrashDetecting;
                }
            }
            Phase::CrashDetecting => {
                if failed_seen == nodes.len() {
                    say(
                        "loop",
                        "both survivors saw the crash; now b leaves gracefully",
                    );
                    nodes[1].swim.leave(clock());
                    phase = Phase::Leaving;
                }
            }
            Phase::Leaving => {}
        }
        // Sleep until the earliest deadline, but wake often to read the sockets (a real
        // driver would wait on the sockets and the deadline together, with poll/epoll).
        let next = nodes
            .iter()
            .map(|n| n.swim.next_deadline())
            .min()
            .unwrap_or(u64::MAX);
        let wait = next.saturating_sub(clock()).min(1_000_000);
        std::thread::sleep(Duration::from_nanos(wait));
    }
}
