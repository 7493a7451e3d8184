//! The server side: answers the protocol with any `Service<Bytes, Response = Bytes>`.
//!
//! [`Server`] holds the service, its [`ServeConfig`] and the counters every connection
//! shares; [`Server::run`] accepts TCP connections, [`Server::serve_connection`] serves
//! one already-open byte stream of any kind (TLS, Unix socket, `tokio::io::duplex`), and
//! [`serve`] is the one-line form. The per-connection loop is in `connection.rs`.

mod config;
mod connection;

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

pub use config::{ServeConfig, ServeConfigBuilder};

use crate::error::BoxError;
use crate::framing::MemoryBudget;

/// Accepts connections on `listener` and answers each request with a clone of `service`:
/// `Server::new(service, config).run(listener)`. See [`Server`] for the behaviour and
/// for counters.
///
/// Runs until dropped; dropping it closes the listener and every connection it accepted.
pub async fn serve<S>(listener: TcpListener, service: S, config: impl Into<ServeConfig>)
where
    S: tower_service::Service<Bytes, Response = Bytes> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    Server::new(service, config.into()).run(listener).await
}

/// A server of the protocol, with counters.
///
/// Requests of one connection are served concurrently (up to
/// [`max_concurrent_per_connection`](ServeConfigBuilder::max_concurrent_per_connection))
/// and answered as they complete, tagged with their id. An `Err` from the service is sent
/// back as an error frame carrying its message (the client sees a
/// [`RemoteError`](super::RemoteError)).
///
/// A frame is read only once the previous request was handed to the service: while the
/// service's `poll_ready` is pending (a concurrency limit, a `Buffer`, a rate limit), the
/// connection stops reading, which is the backpressure to the peer, and keeps driving the
/// requests in flight and writing their responses. `poll_ready` is called only with a
/// request in hand, so an idle connection holds no reservation of the service.
///
/// A connection is closed, and counted in [`ServeStats`] by reason, when it is beyond
/// [`max_connections`](ServeConfigBuilder::max_connections) at accept, stays idle past
/// [`idle_timeout`](ServeConfigBuilder::idle_timeout), takes longer than
/// [`frame_timeout`](ServeConfigBuilder::frame_timeout) over one frame, announces a frame
/// over [`max_frame_len`](ServeConfigBuilder::max_frame_len), would overdraw
/// [`max_partial_frame_bytes`](ServeConfigBuilder::max_partial_frame_bytes), or breaks
/// the protocol (a frame too short or not a request). Only that connection closes: its
/// requests in flight are dropped.
///
/// ```no_run
/// use bytes::Bytes;
/// use palisade::transport::{ServeConfig, Server};
/// use tower::service_fn;
///
/// # async fn demo() -> Result<(), palisade::BoxError> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let echo = service_fn(|req: Bytes| async move { Ok::<_, std::io::Error>(req) });
/// let config = ServeConfig::builder().max_connections(100).build()?;
/// let server = Server::new(echo, config);
/// let handle = server.handle();
/// tokio::spawn(server.run(listener));
/// // ... later:
/// println!("refused: {}", handle.stats().refusals());
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Server<S> {
    service: S,
    config: Arc<ServeConfig>,
    shared: Arc<Shared>,
}

/// Reads the counters of a [`Server`] after `run` took it; clones share them.
#[derive(Debug, Clone)]
pub struct ServerHandle {
    shared: Arc<Shared>,
}

/// Counters of one [`Server`], shared by all its connections.
///
/// The refusal counters (`connections_refused` to `protocol_violations`) count
/// connections the server closed, each once, by the first reason that applied;
/// [`refusals`](Self::refusals) is their sum. A connection the peer closed, or that
/// failed (reset, truncated mid-frame), counts in none of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ServeStats {
    /// Connections being served now.
    pub connections_open: usize,
    /// Connections accepted (admitted under the cap).
    pub connections_accepted: u64,
    /// Connections closed at accept because `max_connections` were open.
    pub connections_refused: u64,
    /// Connections closed after `idle_timeout` without activity.
    pub idle_timeouts: u64,
    /// Connections closed because a frame took longer than `frame_timeout` to read
    /// (after its first byte) or responses could not be written for that long.
    pub frame_timeouts: u64,
    /// Connections closed because a frame announced more than `max_frame_len` bytes.
    pub oversized_frames: u64,
    /// Connections closed because their frame would overdraw `max_partial_frame_bytes`.
    pub over_memory_budget: u64,
    /// Connections closed for a malformed frame or one that is not a request.
    pub protocol_violations: u64,
    /// Requests read and handed to the service.
    pub requests: u64,
    /// Responses (ok or error) queued for writing.
    pub responses: u64,
    /// Bytes held by partially read frames now, charged to `max_partial_frame_bytes`.
    pub partial_frame_bytes: usize,
}

impl ServeStats {
    /// Every connection the server closed on its own: the sum of the refusal counters.
    pub fn refusals(&self) -> u64 {
        [
            self.idle_timeouts,
            self.frame_timeouts,
            self.oversized_frames,
            self.over_memory_budget,
            self.protocol_violations,
        ]
        .into_iter()
        .fold(self.connections_refused, u64::saturating_add)
    }
}

/// Why the server closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    IdleTimeout,
    FrameTimeout,
    OversizedFrame,
    OverMemoryBudget,
    ProtocolViolation,
}

#[derive(Debug)]
struct Shared {
    max_connections: usize,
    budget: Arc<MemoryBudget>,
    open: AtomicUsize,
    accepted: AtomicU64,
    refused: AtomicU64,
    idle_timeouts: AtomicU64,
    frame_timeouts: AtomicU64,
    oversized: AtomicU64,
    over_budget: AtomicU64,
    violations: AtomicU64,
    requests: AtomicU64,
    responses: AtomicU64,
}

impl Shared {
    fn stats(&self) -> ServeStats {
        ServeStats {
            connections_open: self.open.load(Ordering::Acquire),
            connections_accepted: self.accepted.load(Ordering::Relaxed),
            connections_refused: self.refused.load(Ordering::Relaxed),
            idle_timeouts: self.idle_timeouts.load(Ordering::Relaxed),
            frame_timeouts: self.frame_timeouts.load(Ordering::Relaxed),
            oversized_frames: self.oversized.load(Ordering::Relaxed),
            over_memory_budget: self.over_budget.load(Ordering::Relaxed),
            protocol_violations: self.violations.load(Ordering::Relaxed),
            requests: self.requests.load(Ordering::Relaxed),
            responses: self.responses.load(Ordering::Relaxed),
            partial_frame_bytes: self.budget.used(),
        }
    }

    fn count(&self, refusal: Refusal) {
        let counter = match refusal {
            Refusal::IdleTimeout => &self.idle_timeouts,
            Refusal::FrameTimeout => &self.frame_timeouts,
            Refusal::OversizedFrame => &self.oversized,
            Refusal::OverMemoryBudget => &self.over_budget,
            Refusal::ProtocolViolation => &self.violations,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes a connection slot, or counts the refusal.
    fn admit(self: &Arc<Self>) -> Option<Slot> {
        let admitted = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < self.max_connections).then(|| open + 1)
            })
            .is_ok();
        if admitted {
            self.accepted.fetch_add(1, Ordering::Relaxed);
            Some(Slot(Arc::clone(self)))
        } else {
            self.refused.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// One open connection's place under `max_connections`; given back on drop, so a
/// connection task that ends any way (aborted included) frees it.
struct Slot(Arc<Shared>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

impl<S> Server<S>
where
    S: tower_service::Service<Bytes, Response = Bytes> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    /// A server answering with clones of `service` (one per connection).
    pub fn new(service: S, config: ServeConfig) -> Self {
        let shared = Arc::new(Shared {
            max_connections: config.max_connections,
            budget: Arc::new(MemoryBudget::new(config.max_partial_frame_bytes)),
            open: AtomicUsize::new(0),
            accepted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            idle_timeouts: AtomicU64::new(0),
            frame_timeouts: AtomicU64::new(0),
            oversized: AtomicU64::new(0),
            over_budget: AtomicU64::new(0),
            violations: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            responses: AtomicU64::new(0),
        });
        Self {
            service,
            config: Arc::new(config),
            shared,
        }
    }

    /// The counters now.
    pub fn stats(&self) -> ServeStats {
        self.shared.stats()
    }

    /// A handle that reads the counters, also after [`run`](Self::run) took the server.
    pub fn handle(&self) -> ServerHandle {
        ServerHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Accepts connections on `listener` and serves each on its own task, until dropped;
    /// dropping it closes the listener and every connection it accepted.
    pub async fn run(self, listener: TcpListener) {
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _peer)) => {
                        if let Some(slot) = self.shared.admit() {
                            let _ = stream.set_nodelay(true);
                            connections.spawn(self.serve_admitted(stream, slot));
                        }
                        // else: dropped here, which closes it at once.
                    }
                    // Out of descriptors or a connection reset before accept: pause
                    // briefly rather than spin, then keep serving.
                    Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
    }

    /// Serves one open connection (any byte stream) until it ends, counted in this
    /// server's stats and subject to its `max_connections` (checked now: beyond the cap
    /// the returned future closes `io` at once).
    pub fn serve_connection<IO>(&self, io: IO) -> impl Future<Output = ()> + Send + 'static
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let admitted = self
            .shared
            .admit()
            .map(|slot| self.serve_admitted(io, slot));
        async move {
            if let Some(serving) = admitted {
                serving.await;
            }
        }
    }

    fn serve_admitted<IO>(&self, io: IO, slot: Slot) -> impl Future<Output = ()> + Send + 'static
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let service = self.service.clone();
        let config = Arc::clone(&self.config);
        async move {
            let shared = Arc::clone(&slot.0);
            if let Err(refusal) = connection::serve_io(io, service, &config, &shared).await {
                shared.count(refusal);
            }
            drop(slot);
        }
    }
}

impl ServerHandle {
    /// The counters now.
    pub fn stats(&self) -> ServeStats {
        self.shared.stats()
    }
}
