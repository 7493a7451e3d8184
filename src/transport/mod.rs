//! Persistent connections: one long-lived TCP connection per endpoint, carrying a small
//! length-prefixed, pipelined request/response protocol.
//!
//! [`Connection`] is a tower [`Service<Bytes>`](tower_service::Service) that keeps one
//! TCP connection to an address open in a background task, reconnecting with capped,
//! jittered exponential backoff when it drops. [`serve`] answers that protocol with any
//! `Service<Bytes, Response = Bytes>`.
//!
//! # Contract
//! - `poll_ready` is `Pending` while the connection is down, so a balancer routes around
//!   the endpoint; it wakes the task once the connection is back. It reserves a slot in
//!   the bounded request queue; it returns an error only once the background task is gone
//!   (the service is dead).
//! - A request sent on a connection that then drops fails with [`ConnectionLost`]; a
//!   request that reaches the task while no connection is up fails with [`Disconnected`];
//!   an error returned by the remote service arrives as [`RemoteError`].
//! - Dropping a response future abandons its request: the response, if it comes, is
//!   discarded. Dropping every clone of a `Connection` lets the task answer what is in
//!   flight, then close the socket.
//! - Clones share the one connection.
//!
//! # Wire format
//! Every frame is a big-endian `u32` length followed by that many bytes: a `u64` request
//! id, a one-byte kind (request, response, error response) and the payload. Frames over
//! [`ConnectionConfig::max_frame_len`] close the connection: a peer that sends garbage
//! loses its connection, never the process.
//!
//! ```no_run
//! use bytes::Bytes;
//! use palisade::transport::{serve, Connection, ConnectionConfig};
//! use tower::{service_fn, ServiceExt};
//!
//! # async fn demo() -> Result<(), palisade::BoxError> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let addr = listener.local_addr()?;
//! let echo = service_fn(|req: Bytes| async move { Ok::<_, std::io::Error>(req) });
//! tokio::spawn(serve(listener, echo, ConnectionConfig::default()));
//!
//! let conn = Connection::new(addr, ConnectionConfig::default());
//! let reply = conn.oneshot(Bytes::from_static(b"ping")).await?;
//! assert_eq!(&reply[..], b"ping");
//! # Ok(())
//! # }
//! ```

mod backoff;
mod client;
mod config;
mod error;
pub(crate) mod frame;
pub(crate) mod server;

pub use backoff::Backoff;
pub use client::{Connection, ConnectionStats, ResponseFuture};
pub use config::ConnectionConfig;
pub use error::{ConnectionLost, Disconnected, RemoteError};
pub use server::serve;
