//! Hostile clients on loopback cannot push `serve` past its memory bound: 60 clients each
//! announce an 8 MiB frame and send all of it but the last byte (on today's main that
//! held 60 × 8 MiB, over 500 MB resident). With a 16 MiB budget for partially read
//! frames the server's resident memory grows by at most the budget plus a margin (72 MiB
//! in all), a well-behaved client is answered throughout, and every hostile connection
//! is closed and counted (over the budget, or by the frame timeout once it stalls).
//!
//! Resident memory is a property of the whole process, so the scenario runs in a child
//! process of its own (this test binary run again with `PALISADE_TRANSPORT_MEMORY` set,
//! running only [`memory_child_entry`]), where nothing else allocates meanwhile.

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use palisade::transport::{Connection, ConnectionConfig, ServeConfig, Server};
use palisade::BoxError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::{service_fn, ServiceExt};

const CHILD_ENV: &str = "PALISADE_TRANSPORT_MEMORY";
const ATTACKERS: usize = 60;
const FRAME: usize = 8 * 1024 * 1024;
const BUDGET: usize = 16 * 1024 * 1024;
/// Room for what is not request bytes: allocator slack (freed frame buffers the allocator
/// keeps resident instead of returning them), per-connection buffers (8 KiB each), task
/// and socket bookkeeping. Runs on a 2-core machine grew by 22 to 36 MiB in all (budget
/// included); the bound is twice the worst of those, and still a sixth of what the
/// unbounded reader held (480 MiB).
const MARGIN: usize = 56 * 1024 * 1024;
/// A cap on the whole scenario: the frame timeout (2 s) plus a generous allowance for
/// moving 480 MiB through loopback on a loaded 2-core machine in a debug build.
const LIMIT: Duration = Duration::from_secs(120);

fn resident_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[test]
fn hostile_clients_with_nearly_complete_frames_stay_under_the_memory_bound() {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            crate::common::test_name(module_path!(), "memory_child_entry").as_str(),
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(out.status.success(), "child failed: {stdout}\n{stderr}");
    assert!(
        stdout.contains("MEMORY OK"),
        "the child did not run: {stdout}"
    );
}

/// The scenario; a no-op unless started by the test above.
#[test]
fn memory_child_entry() {
    if std::env::var(CHILD_ENV).is_err() {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        tokio::time::timeout(LIMIT, scenario())
            .await
            .expect("scenario in time")
    });
}

async fn scenario() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = ServeConfig::builder()
        .max_frame_len(FRAME)
        .max_partial_frame_bytes(BUDGET)
        .frame_timeout(Duration::from_secs(2))
        .max_connections(ATTACKERS + 10)
        .build()
        .unwrap();
    let echo = service_fn(|req: Bytes| async move { Ok::<_, BoxError>(req) });
    let server = Server::new(echo, config);
    let handle = server.handle();
    tokio::spawn(server.run(listener));

    // What every attacker sends, allocated and touched before the baseline.
    let mut attack = (FRAME as u32).to_be_bytes().to_vec();
    attack.resize(4 + FRAME - 1, 1);
    let attack = Arc::new(attack);
    let conn = Connection::new(addr, ConnectionConfig::default());
    for _ in 0..10 {
        conn.clone()
            .oneshot(Bytes::from_static(b"warm"))
            .await
            .unwrap();
    }
    let baseline = resident_bytes();

    let closed = Arc::new(AtomicUsize::new(0));
    let attackers: Vec<_> = (0..ATTACKERS)
        .map(|_| {
            let attack = attack.clone();
            let closed = closed.clone();
            tokio::spawn(async move {
                let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
                // The server may close mid-write: that is the point.
                let _ = s.write_all(&attack).await;
                let mut buf = [0u8; 64];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
                closed.fetch_add(1, Ordering::SeqCst);
            })
        })
        .collect();

    // The well-behaved client, answered throughout; peak memory sampled as it goes.
    let done = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicUsize::new(baseline));
    let client = {
        let (done, peak) = (done.clone(), peak.clone());
        tokio::spawn(async move {
            let mut answered = 0u64;
            while !done.load(Ordering::SeqCst) {
                let payload = Bytes::from(answered.to_be_bytes().to_vec());
                let reply = conn
                    .clone()
                    .oneshot(payload.clone())
                    .await
                    .expect("answered");
                assert_eq!(reply, payload);
                answered += 1;
                peak.fetch_max(resident_bytes(), Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            answered
        })
    };
    for a in attackers {
        a.await.unwrap();
    }
    done.store(true, Ordering::SeqCst);
    let answered = client.await.unwrap();
    peak.fetch_max(resident_bytes(), Ordering::SeqCst);

    let stats = handle.stats();
    let growth = peak.load(Ordering::SeqCst).saturating_sub(baseline);
    println!(
        "baseline {} MiB, peak growth {} MiB (bound {} MiB), answered {answered}, {stats:?}",
        baseline >> 20,
        growth >> 20,
        (BUDGET + MARGIN) >> 20
    );
    assert_eq!(closed.load(Ordering::SeqCst), ATTACKERS);
    assert_eq!(
        stats.over_memory_budget + stats.frame_timeouts,
        ATTACKERS as u64,
        "every hostile connection closed and counted once: {stats:?}"
    );
    assert!(stats.over_memory_budget >= 1, "{stats:?}");
    assert_eq!(stats.refusals(), ATTACKERS as u64, "{stats:?}");
    assert!(answered > 0);
    assert!(growth <= BUDGET + MARGIN, "grew {} MiB", growth >> 20);
    println!("MEMORY OK");
}
