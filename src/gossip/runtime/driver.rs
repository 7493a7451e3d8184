//! The task that drives one [`Swim`]: the UDP socket, the TCP listener, the timers.
//!
//! Everything that touches the protocol state goes through one `parking_lot` mutex held
//! for a synchronous step (hand a packet or a tick to the core, drain what it queued),
//! never across an `.await`. The driver is the only one that drains transmits and
//! events; the handle's commands change the core under the lock and wake the driver.
//!
//! However the driver ends (stopped on request, a panic, the listener task ending), one
//! exit path marks the member stopped, records a failure, ends the event streams and
//! wakes whoever waits on the view, so a dead driver never leaves a handle that says it
//! runs.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{broadcast, mpsc, oneshot, watch, Notify, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{timeout, Instant};

use super::config::MembershipConfig;
use super::error::DriverError;
use super::stream::{read_message, write_message, ReadError};
use crate::gossip::proto::{Event, StreamKind, Swim, Transmit, Transport};

/// The largest UDP datagram; anything read is handed to the core, which drops (and
/// counts) what exceeds `max_packet_size`.
const MAX_DATAGRAM: usize = 65_536;

/// The protocol state machine and who waits on it: what the lock in
/// [`RunningMember::core`] guards.
pub(crate) struct ProtocolState {
    pub(crate) swim: Swim,
    /// Join / leave callers waiting for a stream exchange with an address to complete:
    /// `true` if it answered.
    pub(crate) waiters: HashMap<SocketAddr, Vec<oneshot::Sender<bool>>>,
    pub(crate) stopped: bool,
    /// Why the driver ended by itself, once it did.
    pub(crate) failure: Option<DriverError>,
}

/// Counters kept by the runtime (the core keeps its own).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) streams_accepted: AtomicU64,
    pub(crate) streams_refused: AtomicU64,
    pub(crate) streams_oversized: AtomicU64,
    pub(crate) stream_failures: AtomicU64,
    pub(crate) send_errors: AtomicU64,
    pub(crate) recv_errors: AtomicU64,
    pub(crate) join_attempts: AtomicU64,
    pub(crate) background_joins: AtomicU64,
    pub(crate) retry_join_given_up: AtomicU64,
}

/// One running member: what its handles and its driver task share.
pub(crate) struct RunningMember {
    pub(crate) core: Mutex<ProtocolState>,
    pub(crate) config: MembershipConfig,
    pub(crate) epoch: Instant,
    /// Wakes the driver after a command changed the core.
    pub(crate) wake: Notify,
    /// Signalled after every driver step (a leave watches its progress with it).
    pub(crate) stepped: Notify,
    /// Taken (dropped) when the driver stops, which ends every subscription.
    pub(crate) events: Mutex<Option<broadcast::Sender<Event>>>,
    /// Bumped whenever the view may have changed (events, local updates).
    pub(crate) version: watch::Sender<u64>,
    pub(crate) stop: watch::Sender<bool>,
    pub(crate) counters: Counters,
    #[cfg(test)]
    pub(crate) faults: Faults,
}

/// Faults the unit tests inject to kill a driver deterministically.
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct Faults {
    /// The driver panics at its next step.
    pub(crate) panic_driver: std::sync::atomic::AtomicBool,
    /// The listener task panics at its next accepted connection.
    pub(crate) panic_listener: std::sync::atomic::AtomicBool,
}

impl RunningMember {
    /// Nanoseconds since the runtime started, on tokio's clock.
    pub(crate) fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    pub(crate) fn bump(&self) {
        self.version.send_modify(|v| *v = v.wrapping_add(1));
    }
}

enum StreamMsg {
    /// A message received on an inbound connection; the answer goes back on `reply`.
    Inbound {
        from: SocketAddr,
        bytes: Vec<u8>,
        reply: oneshot::Sender<Vec<u8>>,
    },
    /// An outbound exchange with `to` ended: its answer, or `None` if it failed.
    /// `push_pull` tells a full-state exchange (which join / leave callers wait on)
    /// from a TCP fallback ping.
    Answered {
        to: SocketAddr,
        bytes: Option<Vec<u8>>,
        push_pull: bool,
    },
}

/// Drives the member until `stop` turns true (or its sender is gone), or until the
/// driver fails (panics, or its listener task ends); then marks the member stopped.
pub(crate) async fn run(
    shared: Arc<RunningMember>,
    udp: UdpSocket,
    listener: TcpListener,
    stop: watch::Receiver<bool>,
) {
    // A panic is caught here, in the task, rather than left to the join handle: nobody
    // may be awaiting that, and the handles must see the member stopped at once.
    let driven = AssertUnwindSafe(drive(&shared, udp, listener, stop))
        .catch_unwind()
        .await;
    let failure = match driven {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e),
        Err(payload) => Some(DriverError::Panicked(DriverError::panic_message(&*payload))),
    };
    finish(&shared, failure);
}

/// The one exit path: the member is stopped, callers waiting on an exchange are told
/// nothing will answer, event streams end, view watchers wake.
fn finish(shared: &RunningMember, failure: Option<DriverError>) {
    #[cfg(feature = "tracing")]
    if let Some(e) = &failure {
        tracing::error!(
            member = shared.config.name(),
            error = %e,
            "gossip member stopped: its driver ended by itself"
        );
    }
    let mut core = shared.core.lock();
    core.stopped = true;
    core.failure = failure;
    // Dropping the waiters tells join / leave callers that nothing will answer.
    core.waiters.clear();
    drop(core);
    // Also ends the retry-join task when the driver ended by itself.
    shared.stop.send_replace(true);
    shared.events.lock().take();
    shared.bump();
    shared.stepped.notify_waiters();
}

/// The driver proper: `Ok` when stopped on request, an error when its listener task
/// ended.
async fn drive(
    shared: &Arc<RunningMember>,
    udp: UdpSocket,
    listener: TcpListener,
    mut stop: watch::Receiver<bool>,
) -> Result<(), DriverError> {
    let (tx, mut rx) = mpsc::channel::<StreamMsg>(shared.config.stream_queue_capacity());
    let mut accept = AbortOnDrop(tokio::spawn(accept_loop(
        listener,
        tx.clone(),
        Arc::clone(shared),
    )));
    let mut outbound = JoinSet::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        #[cfg(test)]
        if shared.faults.panic_driver.load(Ordering::Relaxed) {
            panic!("injected driver fault");
        }
        let deadline = {
            let core = shared.core.lock();
            let now = shared.now();
            // Never sleep past an hour: a `u64::MAX` deadline means "nothing scheduled".
            let at = core
                .swim
                .next_deadline()
                .min(now.saturating_add(3_600_000_000_000));
            shared.epoch + Duration::from_nanos(at)
        };
        let mut answer = None;
        tokio::select! {
            biased;
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    break;
                }
            }
            // Timers before packets: a flood of datagrams must not starve the probes.
            _ = tokio::time::sleep_until(deadline) => {
                let mut core = shared.core.lock();
                let now = shared.now();
                core.swim.handle_timeout(now);
            }
            Some(msg) = rx.recv() => match msg {
                StreamMsg::Inbound { from, bytes, reply } => {
                    let mut core = shared.core.lock();
                    let now = shared.now();
                    core.swim.handle_stream(from, &bytes, now);
                    answer = Some((from, reply));
                }
                StreamMsg::Answered { to, bytes, push_pull } => {
                    let mut core = shared.core.lock();
                    let ok = bytes.is_some();
                    if !ok {
                        let now = shared.now();
                        core.swim.stream_failed(to, now);
                    }
                    if let Some(bytes) = bytes {
                        let now = shared.now();
                        let saves = core.swim.stats().tcp_fallback_saves;
                        core.swim.handle_stream(to, &bytes, now);
                        #[cfg(not(feature = "tracing"))]
                        let _ = saves;
                        #[cfg(feature = "tracing")]
                        if core.swim.stats().tcp_fallback_saves > saves {
                            tracing::warn!(
                                peer = %to,
                                "gossip probe answered over TCP but not over UDP: \
                                 UDP may be blocked between the members"
                            );
                        }
                    }
                    // Only a full-state exchange acknowledges a join or a leave; a TCP
                    // fallback ping to the same address neither answers nor fails it.
                    if push_pull {
                        for w in core.waiters.remove(&to).unwrap_or_default() {
                            let _ = w.send(ok);
                        }
                    }
                }
            },
            received = udp.recv_from(&mut buf) => match received {
                Ok((n, from)) => {
                    let mut core = shared.core.lock();
                    let now = shared.now();
                    core.swim.handle_datagram(from, &buf[..n], now);
                }
                Err(_) => {
                    shared.counters.recv_errors.fetch_add(1, Ordering::Relaxed);
                }
            },
            _ = shared.wake.notified() => {}
            Some(_) = outbound.join_next(), if !outbound.is_empty() => {}
            // The listener runs until aborted: its end is a failure (a panic, surely).
            ended = &mut accept.0 => {
                let message = ended
                    .err()
                    .and_then(|e| e.try_into_panic().ok())
                    .map(|payload| DriverError::panic_message(&*payload));
                return Err(DriverError::ListenerEnded(message));
            }
        }
        flush(shared, &udp, &tx, &mut outbound, answer).await;
        shared.stepped.notify_waiters();
    }
    drop(accept);
    outbound.abort_all();
    send_last_datagrams(shared, &udp).await;
    Ok(())
}

/// Sends what the core queued and publishes its events. A stream transmit to the peer
/// of the inbound exchange being answered goes back on that connection.
async fn flush(
    shared: &Arc<RunningMember>,
    udp: &UdpSocket,
    tx: &mpsc::Sender<StreamMsg>,
    outbound: &mut JoinSet<()>,
    mut answer: Option<(SocketAddr, oneshot::Sender<Vec<u8>>)>,
) {
    let (transmits, events) = {
        let mut core = shared.core.lock();
        let transmits: Vec<Transmit> = core.swim.drain_transmits().collect();
        let events: Vec<Event> = std::iter::from_fn(|| core.swim.poll_event()).collect();
        (transmits, events)
    };
    for t in transmits {
        match t.transport {
            Transport::Datagram => {
                if udp.send_to(&t.bytes, t.to).await.is_err() {
                    shared.counters.send_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            Transport::Stream => {
                if t.stream == Some(StreamKind::Answer) {
                    // The core answers only the message it was just handed.
                    if let Some((_, reply)) = answer.take().filter(|(from, _)| *from == t.to) {
                        let _ = reply.send(t.bytes);
                    }
                    continue;
                }
                let tx = tx.clone();
                let push_pull = t.push_pull;
                let limit = shared.config.stream_timeout;
                let max = shared.config.protocol.max_stream_size;
                let shared = Arc::clone(shared);
                outbound.spawn(async move {
                    let bytes = timeout(limit, exchange(t.to, &t.bytes, max))
                        .await
                        .ok()
                        .flatten();
                    if bytes.is_none() {
                        #[cfg(feature = "tracing")]
                        tracing::debug!(to = %t.to, "gossip stream exchange failed");
                        shared
                            .counters
                            .stream_failures
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    let _ = tx
                        .send(StreamMsg::Answered {
                            to: t.to,
                            bytes,
                            push_pull,
                        })
                        .await;
                });
            }
        }
    }
    if !events.is_empty() {
        shared.bump();
        #[cfg(feature = "tracing")]
        for e in &events {
            let kind = match e {
                Event::Join(_) => "join",
                Event::Leave(_) => "leave",
                Event::Failed(_) => "failed",
                Event::Update(_) => "update",
                Event::Reap(_) => "reap",
            };
            tracing::debug!(member = e.member().name(), kind, "gossip membership event");
        }
        if let Some(sender) = shared.events.lock().as_ref() {
            for e in events {
                // No subscriber is fine: events are also readable as the view.
                let _ = sender.send(e);
            }
        }
    }
}

/// A member that left and is now stopping sends the datagrams still queued (its leave
/// to every member, above all): on a busy machine the driver may get to run only after
/// the leave timeout cut the leave short, and those datagrams are what tells the others
/// it left rather than failed. A member killed without leaving sends nothing, like a
/// crash. Streams are not started: nothing would read their answers.
async fn send_last_datagrams(shared: &RunningMember, udp: &UdpSocket) {
    let datagrams: Vec<Transmit> = {
        let mut core = shared.core.lock();
        if !core.swim.is_leaving() {
            return;
        }
        core.swim
            .drain_transmits()
            .filter(|t| t.transport == Transport::Datagram)
            .collect()
    };
    for t in datagrams {
        if udp.send_to(&t.bytes, t.to).await.is_err() {
            shared.counters.send_errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// One outbound exchange: connect, send, read the answer.
async fn exchange(to: SocketAddr, bytes: &[u8], max: usize) -> Option<Vec<u8>> {
    let mut stream = TcpStream::connect(to).await.ok()?;
    let _ = stream.set_nodelay(true);
    write_message(&mut stream, bytes).await.ok()?;
    read_message(&mut stream, max).await.ok()
}

async fn accept_loop(
    listener: TcpListener,
    tx: mpsc::Sender<StreamMsg>,
    shared: Arc<RunningMember>,
) {
    let limit = Arc::new(Semaphore::new(shared.config.inbound_stream_permits()));
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                #[cfg(test)]
                Ok(_) if shared.faults.panic_listener.load(Ordering::Relaxed) => {
                    panic!("injected listener fault");
                }
                Ok((stream, peer)) => match Arc::clone(&limit).try_acquire_owned() {
                    Ok(permit) => {
                        shared.counters.streams_accepted.fetch_add(1, Ordering::Relaxed);
                        let tx = tx.clone();
                        let shared = Arc::clone(&shared);
                        connections.spawn(async move {
                            inbound(stream, peer, tx, &shared).await;
                            drop(permit);
                        });
                    }
                    Err(_) => {
                        shared.counters.streams_refused.fetch_add(1, Ordering::Relaxed);
                    }
                },
                // Out of descriptors or a reset before accept: pause rather than spin.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn inbound(
    mut stream: TcpStream,
    peer: SocketAddr,
    tx: mpsc::Sender<StreamMsg>,
    shared: &RunningMember,
) {
    let limit = shared.config.stream_timeout;
    let max = shared.config.protocol.max_stream_size;
    let bytes = match timeout(limit, read_message(&mut stream, max)).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(ReadError::Oversized)) => {
            #[cfg(feature = "tracing")]
            tracing::debug!(%peer, "gossip stream over max_stream_size refused");
            shared
                .counters
                .streams_oversized
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        Ok(Err(ReadError::Closed)) => return,
        Ok(Err(ReadError::Io)) | Err(_) => {
            shared
                .counters
                .stream_failures
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    let (reply, answer) = oneshot::channel();
    if tx
        .send(StreamMsg::Inbound {
            from: peer,
            bytes,
            reply,
        })
        .await
        .is_err()
    {
        return;
    }
    // No answer (a dropped packet, or an answer to an answer) closes the connection.
    if let Ok(Ok(answer)) = timeout(limit, answer).await {
        let _ = timeout(limit, write_message(&mut stream, &answer)).await;
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
