//! The client side: a `Service<Bytes>` over one persistent, self-healing connection.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::SinkExt;
use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use tokio::io::BufReader;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Sleep;
use tokio_util::codec::{FramedWrite, LengthDelimitedCodec};
use tokio_util::sync::PollSender;

use super::config::ConnectionConfig;
use super::error::{ConnectionLost, Disconnected, RemoteError, RequestTimeout};
use super::frame::{Frame, Kind, HEADER_LEN};
use crate::backoff::Backoff;
use crate::error::BoxError;
use crate::framing::MemoryBudget;
use crate::framing::{FrameReader, ReadError};

/// A connection that lived at least this long resets the reconnect backoff; one that drops
/// sooner (a peer that accepts and closes) keeps backing off.
const STABLE_AFTER: Duration = Duration::from_secs(1);
/// The read buffer of one connection.
const READ_BUFFER: usize = 4096;

type Reply = oneshot::Sender<Result<Bytes, BoxError>>;

struct Outgoing {
    payload: Bytes,
    reply: Reply,
}

struct Shared {
    addr: SocketAddr,
    connected: AtomicBool,
    wakers: Mutex<Vec<Waker>>,
    connects: AtomicU64,
    connect_failures: AtomicU64,
    disconnects: AtomicU64,
    sent: AtomicU64,
    answered: AtomicU64,
    lost: AtomicU64,
    refused: AtomicU64,
    timed_out: AtomicU64,
    violations: AtomicU64,
}

/// The connection task's end of the request queue. However the task ends (returned,
/// dropped with its runtime before or after its first poll, panicked), dropping this closes
/// the queue and then wakes every caller parked in `poll_ready`, which finds it closed.
struct TaskRequests {
    rx: mpsc::Receiver<Outgoing>,
    shared: Arc<Shared>,
}

impl Drop for TaskRequests {
    fn drop(&mut self) {
        self.rx.close();
        for w in self.shared.wakers.lock().drain(..) {
            w.wake();
        }
    }
}

impl Shared {
    fn set_connected(&self, up: bool) {
        self.connected.store(up, Ordering::Release);
        if up {
            for w in self.wakers.lock().drain(..) {
                w.wake();
            }
        }
    }

    fn register(&self, waker: &Waker) {
        let mut wakers = self.wakers.lock();
        if !wakers.iter().any(|w| w.will_wake(waker)) {
            wakers.push(waker.clone());
        }
    }
}

/// Counters of one [`Connection`], shared by its clones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConnectionStats {
    /// Whether the connection is up now.
    pub connected: bool,
    /// Successful connection attempts.
    pub connects: u64,
    /// Failed connection attempts (refused, unreachable, timed out).
    pub connect_failures: u64,
    /// Connections that dropped after being up.
    pub disconnects: u64,
    /// Requests written to a connection.
    pub requests_sent: u64,
    /// Responses (ok or error) received for them.
    pub responses: u64,
    /// Requests failed with [`ConnectionLost`].
    pub lost: u64,
    /// Requests failed with [`Disconnected`] without being sent.
    pub refused: u64,
    /// Requests failed with [`RequestTimeout`].
    pub timed_out: u64,
    /// Connections dropped because the server broke the protocol: a response to an id
    /// never sent on that connection, a malformed frame, a frame over `max_frame_len`, a
    /// request frame. Their requests in flight fail with [`ConnectionLost`].
    pub protocol_violations: u64,
}

/// A `Service<Bytes, Response = Bytes>` over one persistent TCP connection. See the
/// [module docs](super) for the contract.
pub struct Connection {
    shared: Arc<Shared>,
    tx: PollSender<Outgoing>,
    // Whether `poll_ready` reserved a queue slot that `call` has not used yet.
    reserved: bool,
    request_timeout: Option<Duration>,
}

impl Clone for Connection {
    /// A clone shares the connection and its counters; it has its own queue reservation.
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            tx: self.tx.clone(),
            reserved: false,
            request_timeout: self.request_timeout,
        }
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("addr", &self.shared.addr)
            .field("connected", &self.shared.connected.load(Ordering::Relaxed))
            .finish()
    }
}

impl Connection {
    /// Starts the background task that connects to `addr` and keeps the connection up.
    ///
    /// # Panics
    /// When called outside a tokio runtime, as `tokio::spawn` does.
    pub fn new(addr: SocketAddr, config: ConnectionConfig) -> Self {
        let (tx, rx) = mpsc::channel(config.queue);
        let shared = Arc::new(Shared {
            addr,
            connected: AtomicBool::new(false),
            wakers: Mutex::new(Vec::new()),
            connects: AtomicU64::new(0),
            connect_failures: AtomicU64::new(0),
            disconnects: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            answered: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            timed_out: AtomicU64::new(0),
            violations: AtomicU64::new(0),
        });
        let request_timeout = config.request_timeout;
        let requests = TaskRequests {
            rx,
            shared: shared.clone(),
        };
        tokio::spawn(run(shared.clone(), config, requests));
        Self {
            shared,
            tx: PollSender::new(tx),
            reserved: false,
            request_timeout,
        }
    }

    /// The address this connection dials.
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// Whether the connection is up now.
    pub fn is_connected(&self) -> bool {
        self.shared.connected.load(Ordering::Acquire)
    }

    /// The shared counters.
    pub fn stats(&self) -> ConnectionStats {
        let s = &self.shared;
        ConnectionStats {
            connected: s.connected.load(Ordering::Acquire),
            connects: s.connects.load(Ordering::Relaxed),
            connect_failures: s.connect_failures.load(Ordering::Relaxed),
            disconnects: s.disconnects.load(Ordering::Relaxed),
            requests_sent: s.sent.load(Ordering::Relaxed),
            responses: s.answered.load(Ordering::Relaxed),
            lost: s.lost.load(Ordering::Relaxed),
            refused: s.refused.load(Ordering::Relaxed),
            timed_out: s.timed_out.load(Ordering::Relaxed),
            protocol_violations: s.violations.load(Ordering::Relaxed),
        }
    }
}

impl tower_service::Service<Bytes> for Connection {
    type Response = Bytes;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if self.reserved {
            return Poll::Ready(Ok(()));
        }
        if !self.shared.connected.load(Ordering::Acquire) {
            self.shared.register(cx.waker());
            // The task may have connected, or ended, between the load and the registration.
            if !self.shared.connected.load(Ordering::Acquire) {
                if self.tx.get_ref().is_none_or(|tx| tx.is_closed()) {
                    // The connection task is gone (its runtime shut down, or it panicked):
                    // no connection will ever come, so the service is dead.
                    return Poll::Ready(Err(ConnectionLost.into()));
                }
                return Poll::Pending;
            }
        }
        match self.tx.poll_reserve(cx) {
            Poll::Ready(Ok(())) => {
                self.reserved = true;
                Poll::Ready(Ok(()))
            }
            // Only reachable if the connection task is gone: the service is dead.
            Poll::Ready(Err(_)) => Poll::Ready(Err(ConnectionLost.into())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn call(&mut self, payload: Bytes) -> ResponseFuture {
        if !std::mem::take(&mut self.reserved) {
            // Called without readiness: a contract breach, answered without panicking.
            self.shared.refused.fetch_add(1, Ordering::Relaxed);
            return ResponseFuture {
                state: State::Failed(Some(Disconnected.into())),
            };
        }
        let (reply, rx) = oneshot::channel();
        match self.tx.send_item(Outgoing { payload, reply }) {
            Ok(()) => ResponseFuture {
                state: State::Waiting {
                    rx,
                    // `sleep` copes with any duration: past the clock's range it never fires.
                    deadline: self.request_timeout.map(|after| Deadline {
                        sleep: Box::pin(tokio::time::sleep(after)),
                        after,
                        shared: self.shared.clone(),
                    }),
                },
            },
            // The task is gone.
            Err(_) => ResponseFuture {
                state: State::Failed(Some(Disconnected.into())),
            },
        }
    }
}

/// The response of a [`Connection`] call.
pub struct ResponseFuture {
    state: State,
}

enum State {
    Waiting {
        rx: oneshot::Receiver<Result<Bytes, BoxError>>,
        deadline: Option<Deadline>,
    },
    Failed(Option<BoxError>),
}

struct Deadline {
    sleep: Pin<Box<Sleep>>,
    after: Duration,
    shared: Arc<Shared>,
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl Future for ResponseFuture {
    type Output = Result<Bytes, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.state {
            State::Waiting { rx, deadline } => match Pin::new(rx).poll(cx) {
                Poll::Ready(Ok(result)) => Poll::Ready(result),
                // The task dropped the reply without answering: it is shutting down.
                Poll::Ready(Err(_)) => Poll::Ready(Err(ConnectionLost.into())),
                // The response wins a tie with the deadline.
                Poll::Pending => {
                    let Some(d) = deadline else {
                        return Poll::Pending;
                    };
                    if d.sleep.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    d.shared.timed_out.fetch_add(1, Ordering::Relaxed);
                    let after = d.after;
                    // Dropping the receiver abandons the request (see the write loop).
                    self.state = State::Failed(None);
                    Poll::Ready(Err(RequestTimeout::new(after).into()))
                }
            },
            State::Failed(err) => {
                Poll::Ready(Err(err.take().unwrap_or_else(|| Disconnected.into())))
            }
        }
    }
}

/// The connection task: connect, serve, back off, repeat; ends when every handle is gone.
async fn run(shared: Arc<Shared>, config: ConnectionConfig, requests: TaskRequests) {
    let mut requests = requests;
    let rx = &mut requests.rx;
    let backoff = Backoff::new(config.backoff_base, config.backoff_max);
    let mut rng = SmallRng::from_os_rng();
    let mut attempt = 0u32;
    loop {
        let connect = tokio::time::timeout(config.connect_timeout, TcpStream::connect(shared.addr));
        let Some(outcome) = refuse_while(&shared, rx, connect).await else {
            return;
        };
        match outcome {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                shared.connects.fetch_add(1, Ordering::Relaxed);
                let since = Instant::now();
                let handles_remain = serve_connection(&shared, &config, stream, rx).await;
                shared.disconnects.fetch_add(1, Ordering::Relaxed);
                if !handles_remain {
                    return;
                }
                if since.elapsed() >= STABLE_AFTER {
                    attempt = 0;
                }
            }
            _ => {
                shared.connect_failures.fetch_add(1, Ordering::Relaxed);
            }
        }
        let pause = tokio::time::sleep(backoff.delay(attempt, &mut rng));
        attempt = attempt.saturating_add(1);
        if refuse_while(&shared, rx, pause).await.is_none() {
            return;
        }
    }
}

/// Runs `fut` while failing every request that arrives with [`Disconnected`]; `None` when
/// every handle is gone first.
async fn refuse_while<F: Future>(
    shared: &Shared,
    rx: &mut mpsc::Receiver<Outgoing>,
    fut: F,
) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    loop {
        tokio::select! {
            out = &mut fut => return Some(out),
            msg = rx.recv() => match msg {
                Some(o) => {
                    shared.refused.fetch_add(1, Ordering::Relaxed);
                    let _ = o.reply.send(Err(Disconnected.into()));
                }
                None => return None,
            },
        }
    }
}

enum WriteEnd {
    Broken,
    HandlesGone,
}

/// Serves one live connection until it drops (returns `true`) or every handle is gone and
/// the requests in flight are answered (returns `false`).
async fn serve_connection(
    shared: &Shared,
    config: &ConnectionConfig,
    stream: TcpStream,
    rx: &mut mpsc::Receiver<Outgoing>,
) -> bool {
    let codec = LengthDelimitedCodec::builder()
        .max_frame_length(config.max_frame_len)
        .new_codec();
    let (read, write) = stream.into_split();
    let mut read = BufReader::with_capacity(READ_BUFFER, read);
    // One connection's responses: its frame is bounded by max_frame_len, and grows as
    // its bytes arrive, so a server announcing a long frame costs only what it sends.
    let mut reader = FrameReader::new(config.max_frame_len, Arc::new(MemoryBudget::unlimited()));
    let mut writer = FramedWrite::new(write, codec);
    let pending: Mutex<HashMap<u64, Reply>> = Mutex::new(HashMap::new());
    let draining = AtomicBool::new(false);
    // Ids are given out in order from 0, so every id below `issued` was sent (or is about
    // to be: the id is counted before the frame is written).
    let issued = AtomicU64::new(0);
    let mut next_id = 0u64;
    let mut sweep_at = 64usize;
    shared.set_connected(true);

    let write_loop = async {
        while let Some(o) = rx.recv().await {
            if o.reply.is_closed() {
                continue; // the caller gave up before we got to it
            }
            if o.payload.len() + HEADER_LEN > config.max_frame_len {
                let _ = o.reply.send(Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "request exceeds max_frame_len",
                )
                .into()));
                continue;
            }
            let id = next_id;
            next_id = next_id.wrapping_add(1);
            issued.store(next_id, Ordering::Release);
            {
                let mut p = pending.lock();
                p.insert(id, o.reply);
                // Abandoned requests whose response never comes must not pile up.
                if p.len() >= sweep_at {
                    p.retain(|_, r| !r.is_closed());
                    sweep_at = (p.len() * 2).max(64);
                }
            }
            let frame = Frame {
                id,
                kind: Kind::Request,
                payload: o.payload,
            };
            if writer.feed(frame.encode()).await.is_err() {
                return WriteEnd::Broken;
            }
            shared.sent.fetch_add(1, Ordering::Relaxed);
            if rx.is_empty() && SinkExt::<Bytes>::flush(&mut writer).await.is_err() {
                return WriteEnd::Broken;
            }
        }
        let _ = SinkExt::<Bytes>::flush(&mut writer).await;
        WriteEnd::HandlesGone
    };

    let violation = || {
        shared.violations.fetch_add(1, Ordering::Relaxed);
    };
    let read_loop = async {
        loop {
            let body = match std::future::poll_fn(|cx| reader.poll_frame(&mut read, cx)).await {
                Ok(body) => body,
                Err(ReadError::Closed | ReadError::Io) => return,
                Err(ReadError::Oversized | ReadError::OverBudget) => return violation(),
            };
            let Some(frame) = Frame::decode(body) else {
                return violation();
            };
            let result = match frame.kind {
                Kind::Response => Ok(frame.payload),
                Kind::Error => {
                    Err(RemoteError::new(String::from_utf8_lossy(&frame.payload)).into())
                }
                Kind::Request => return violation(),
            };
            // An id never sent is a server answering someone else's request, or making
            // one up: nothing it says can be trusted.
            if frame.id >= issued.load(Ordering::Acquire) {
                return violation();
            }
            // A sent id that is not pending was abandoned (timed out, dropped) and swept:
            // a late answer, discarded.
            let reply = pending.lock().remove(&frame.id);
            if let Some(reply) = reply {
                shared.answered.fetch_add(1, Ordering::Relaxed);
                let _ = reply.send(result);
            }
            if draining.load(Ordering::Relaxed) && pending.lock().is_empty() {
                return;
            }
        }
    };

    let mut read_loop = std::pin::pin!(read_loop);
    let handles_gone = tokio::select! {
        end = write_loop => matches!(end, WriteEnd::HandlesGone),
        () = &mut read_loop => false,
    };
    if handles_gone {
        draining.store(true, Ordering::Relaxed);
        if !pending.lock().is_empty() {
            read_loop.await;
        }
    }
    shared.connected.store(false, Ordering::Release);
    let lost: Vec<Reply> = pending.lock().drain().map(|(_, r)| r).collect();
    shared.lost.fetch_add(lost.len() as u64, Ordering::Relaxed);
    for reply in lost {
        let _ = reply.send(Err(ConnectionLost.into()));
    }
    !handles_gone
}
