//! Persistent connections: one long-lived TCP connection per endpoint, carrying a small
//! length-prefixed, pipelined request/response protocol.
//!
//! [`Connection`] is a tower [`Service<Bytes>`](tower_service::Service) that keeps one
//! TCP connection to an address open in a background task, reconnecting with capped,
//! jittered exponential backoff when it drops. [`serve`] (or [`Server`], which also
//! counts) answers that protocol with any `Service<Bytes, Response = Bytes>`, within the
//! limits of a [`ServeConfig`].
//!
//! # Contract
//! - `poll_ready` is `Pending` while the connection is down, so a balancer routes around
//!   the endpoint; it wakes the task once the connection is back. It reserves a slot in
//!   the bounded request queue; it returns an error only once the background task is gone
//!   (the service is dead).
//! - A request sent on a connection that then drops fails with [`ConnectionLost`]; a
//!   request that reaches the task while no connection is up fails with [`Disconnected`];
//!   an error returned by the remote service arrives as [`RemoteError`].
//! - With a [`request_timeout`](ConnectionConfigBuilder::request_timeout), a request whose
//!   response has not arrived that long after `call` fails with [`RequestTimeout`]
//!   (counted in [`ConnectionStats::timed_out`]); the response wins a tie. Without one, a
//!   server that accepts and never answers keeps the caller waiting: bound it here or
//!   with a timeout layer above.
//! - A server that breaks the protocol (a response to an id never sent on this
//!   connection, a malformed frame, a frame over `max_frame_len`, a request frame) loses
//!   the connection: its requests in flight fail with [`ConnectionLost`], it is counted in
//!   [`ConnectionStats::protocol_violations`], and the task reconnects. A response to a
//!   request that was abandoned (timed out or dropped) is discarded.
//! - Dropping a response future abandons its request: it is not sent if it has not been
//!   yet, and the response, if it comes, is discarded. Dropping every clone of a
//!   `Connection` lets the task answer what is in flight, then close the socket.
//! - Clones share the one connection.
//! - On the server, a request is read only once the one before it was handed to the
//!   service, and the service's `poll_ready` is polled only with a request in hand;
//!   while it is pending the connection keeps answering what is in flight and stops
//!   reading (backpressure to the peer). See [`Server`] for its limits and counters.
//!
//! # Wire format
//! Every frame is a big-endian `u32` length followed by that many bytes: a `u64` request
//! id, a one-byte kind (request, response, error response) and the payload. Frames over
//! `max_frame_len` close the connection: a peer that sends garbage loses its connection,
//! never the process. A frame's buffer grows as its bytes arrive (a peer announcing 4 GiB
//! and sending 5 bytes costs kilobytes), and on the server the partial frames of all
//! connections share one budget
//! ([`max_partial_frame_bytes`](ServeConfigBuilder::max_partial_frame_bytes)). The
//! framing is the crate's one length-prefixed reader, shared with gossip's TCP exchanges.
//!
//! ```no_run
//! use bytes::Bytes;
//! use palisade::transport::{serve, Connection, ConnectionConfig, ServeConfig};
//! use tower::{service_fn, ServiceExt};
//!
//! # async fn demo() -> Result<(), palisade::BoxError> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let addr = listener.local_addr()?;
//! let echo = service_fn(|req: Bytes| async move { Ok::<_, std::io::Error>(req) });
//! tokio::spawn(serve(listener, echo, ServeConfig::default()));
//!
//! let config = ConnectionConfig::builder()
//!     .request_timeout(std::time::Duration::from_secs(2))
//!     .build()?;
//! let conn = Connection::new(addr, config);
//! let reply = conn.oneshot(Bytes::from_static(b"ping")).await?;
//! assert_eq!(&reply[..], b"ping");
//! # Ok(())
//! # }
//! ```

mod client;
mod config;
mod error;
pub(crate) mod frame;
mod server;

// The reconnect delay rule; its home is `crate::backoff`, this path is kept for users.
pub use crate::backoff::Backoff;
pub use client::{Connection, ConnectionStats, ResponseFuture};
pub use config::{ConnectionConfig, ConnectionConfigBuilder};
pub use error::{ConnectionLost, Disconnected, RemoteError, RequestTimeout};
pub use server::{serve, ServeConfig, ServeConfigBuilder, ServeStats, Server, ServerHandle};
