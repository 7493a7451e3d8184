//! Helpers shared by the integration tests: for those that count allocations per call, a
//! counting global allocator (each test binary installs it with `#[global_allocator]`),
//! an always-ready service and a no-op-waker driver; for the gossip runtime's loopback
//! tests, a bounded condition wait and a member-state lookup.
#![allow(dead_code)] // each test binary uses a different subset

#[cfg(all(feature = "gossip", feature = "test-util"))]
pub mod swim;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::convert::Infallible;
use std::future::{Future, Ready};
use std::pin::pin;
use std::task::{Context, Poll, Waker};

/// The system allocator, counting allocations and reallocations made on each thread.
pub struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: delegates every call to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Allocations made so far on this thread (the test harness's own threads don't count).
pub fn allocations() -> u64 {
    ALLOCATIONS.with(|n| n.get())
}

/// An always-ready service that answers at once with its request.
#[derive(Clone, Copy, Debug)]
pub struct Echo;

impl tower::Service<u64> for Echo {
    type Response = u64;
    type Error = Infallible;
    type Future = Ready<Result<u64, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: u64) -> Self::Future {
        std::future::ready(Ok(req))
    }
}

/// Polls a future to completion in place with a no-op waker.
pub fn drive<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(out) = f.as_mut().poll(&mut cx) {
            return out;
        }
    }
}

/// How long a real-socket test waits for something that must eventually happen (a join,
/// a failure detection, a leave spreading, a process printing a line): far beyond what
/// any of them needs, so that a loaded 2-core machine (CPU hogs and builds beside the
/// suite, each timer of each member running late) cannot fail the test; a passing test
/// never waits for it. It is no timing claim: the exact bounds are pinned on virtual time
/// (the gossip simulator in `gossip/sim.rs`, the sans-IO core in `gossip/proto.rs` and
/// `gossip/tcp_fallback.rs`, paused-clock tests elsewhere), and a test that does check a
/// real-time bound derives it from its configuration beside the check.
pub const PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

/// Polls `cond` every 20 ms (tokio time) until it holds or `within` passes; whether it
/// held.
pub async fn eventually(within: std::time::Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = tokio::time::Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if tokio::time::Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[cfg(feature = "gossip")]
/// The state in which `m` sees the member called `name`, if it knows it.
pub fn state_of(
    m: &palisade::gossip::runtime::Membership,
    name: &str,
) -> Option<palisade::gossip::proto::MemberState> {
    m.member(name).map(|m| m.state())
}

/// A loopback port that nothing listens on, kept bound (UDP, and TCP without `listen`)
/// so that nothing else on the machine can take it until the test starts something
/// there: a connection to it is refused, as to a closed port.
///
/// Binding port 0 to learn a free port and closing it at once is not enough: the port
/// is back in the kernel's ephemeral range, and any process making outbound
/// connections meanwhile (another test, another build on a shared machine) may get it
/// as its source port; once that connection closes, its TIME_WAIT holds the port for
/// 60 s against a listener's bind. A test's own connections to the closed port can even
/// pick it as their source and connect to themselves (TCP simultaneous open). While
/// this holds the port, the kernel hands it to nobody.
pub struct ReservedAddr {
    addr: std::net::SocketAddr,
    _udp: std::net::UdpSocket,
    _tcp: tokio::net::TcpSocket,
}

impl ReservedAddr {
    /// A fresh loopback port, bound for UDP and TCP.
    pub fn new() -> ReservedAddr {
        loop {
            let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a UDP port");
            let addr = udp.local_addr().unwrap();
            if let Some(reserved) = Self::with_udp(addr, udp) {
                return reserved;
            }
        }
    }

    /// Takes `addr` again once whatever held it let go (a killed member closes its
    /// sockets when its task next runs), trying every 20 ms. For as long as a TIME_WAIT
    /// lasts on Linux (60 s) plus [`PATIENCE`]: a connection elsewhere may still get
    /// the port in the moment between the holder letting go and this taking it.
    pub async fn retake(addr: std::net::SocketAddr) -> ReservedAddr {
        const TIME_WAIT: std::time::Duration = std::time::Duration::from_secs(60);
        let end = tokio::time::Instant::now() + TIME_WAIT + PATIENCE;
        loop {
            if let Ok(udp) = std::net::UdpSocket::bind(addr) {
                if let Some(reserved) = Self::with_udp(addr, udp) {
                    return reserved;
                }
            }
            assert!(
                tokio::time::Instant::now() < end,
                "{addr} still taken after {:?}",
                TIME_WAIT + PATIENCE
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    fn with_udp(addr: std::net::SocketAddr, udp: std::net::UdpSocket) -> Option<ReservedAddr> {
        let tcp = tokio::net::TcpSocket::new_v4().expect("a TCP socket");
        // Like a listener's: a member that held the port leaves TIME_WAIT connections
        // accepted on it, which only block a bind without SO_REUSEADDR.
        tcp.set_reuseaddr(true).unwrap();
        tcp.bind(addr).ok()?;
        Some(ReservedAddr {
            addr,
            _udp: udp,
            _tcp: tcp,
        })
    }

    /// The reserved address.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// Lets go of the address so that the caller can bind it at once.
    pub fn release(self) -> std::net::SocketAddr {
        self.addr
    }
}

impl Default for ReservedAddr {
    fn default() -> Self {
        Self::new()
    }
}

/// A gossip protocol fast enough for loopback tests: 200 ms probes with a 100 ms timeout,
/// gossip every 50 ms. Members that join within milliseconds of each other through one
/// seed get four retransmissions per update (not `local`'s two), so that every member
/// hears of every other by gossip, and a push-pull every second as the backstop.
#[cfg(feature = "gossip")]
pub fn fast_gossip() -> palisade::gossip::proto::Config {
    palisade::gossip::proto::Config {
        probe_interval: std::time::Duration::from_millis(200),
        probe_timeout: std::time::Duration::from_millis(100),
        gossip_interval: std::time::Duration::from_millis(50),
        retransmit_mult: 4,
        push_pull_interval: std::time::Duration::from_secs(1),
        ..palisade::gossip::proto::Config::local()
    }
}

/// The name libtest gives test `name` of the module whose `module_path!()` is `module`:
/// the path without the crate's name. A test that runs its own binary again as a child
/// process selects itself with `--exact` and this name.
pub fn test_name(module: &str, name: &str) -> String {
    match module.split_once("::") {
        Some((_crate, path)) => format!("{path}::{name}"),
        None => name.to_owned(),
    }
}
