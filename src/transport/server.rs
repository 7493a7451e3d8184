//! The server side: answers the protocol with any `Service<Bytes, Response = Bytes>`.

use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};
use tower::ServiceExt;

use super::config::ConnectionConfig;
use super::frame::{Frame, Kind, HEADER_LEN};
use crate::error::BoxError;

/// Accepts connections on `listener` and answers each request with a clone of `service`.
///
/// Requests of one connection are served concurrently (up to
/// [`max_concurrent_per_connection`](super::ConnectionConfig)) and answered as they
/// complete, tagged with their id. An `Err` from the service is sent back as an error
/// frame carrying its message (the client sees a [`RemoteError`](super::RemoteError)). A
/// malformed or oversized frame closes that connection only.
///
/// Runs until dropped; dropping it closes the listener and every connection it accepted.
pub async fn serve<S>(listener: TcpListener, service: S, config: ConnectionConfig)
where
    S: tower_service::Service<Bytes, Response = Bytes> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    let _ = stream.set_nodelay(true);
                    connections.spawn(serve_connection(stream, service.clone(), config.clone()));
                }
                // Out of descriptors or a connection reset before accept: pause briefly
                // rather than spin, then keep serving.
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve_connection<S>(stream: TcpStream, service: S, config: ConnectionConfig)
where
    S: tower_service::Service<Bytes, Response = Bytes> + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    let (read, write) = stream.into_split();
    serve_halves(read, write, service, config).await;
}

/// Serves one connection given as its two halves (a TCP stream's, or an in-memory
/// pipe's for the fuzz targets, see `crate::fuzzing`).
pub(crate) async fn serve_halves<R, W, S>(
    read: R,
    write: W,
    mut service: S,
    config: ConnectionConfig,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
    S: tower_service::Service<Bytes, Response = Bytes> + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    let codec = LengthDelimitedCodec::builder()
        .max_frame_length(config.max_frame_len)
        .new_codec();
    let mut reader = FramedRead::new(read, codec.clone());
    let mut writer = FramedWrite::new(write, codec);
    let mut in_flight = FuturesUnordered::new();
    loop {
        let can_read = in_flight.len() < config.max_concurrent_per_connection;
        tokio::select! {
            frame = reader.next(), if can_read => {
                let Some(Ok(body)) = frame else { return };
                let Some(Frame { id, kind: Kind::Request, payload }) = Frame::decode(body) else {
                    return; // protocol violation: close this connection
                };
                let Ok(ready) = service.ready().await else { return };
                let call = ready.call(payload);
                in_flight.push(async move { (id, call.await.map_err(Into::into)) });
            }
            Some((id, result)) = in_flight.next(), if !in_flight.is_empty() => {
                let result: Result<Bytes, BoxError> = result;
                let frame = match result {
                    Ok(payload) if payload.len() + HEADER_LEN <= config.max_frame_len => {
                        Frame { id, kind: Kind::Response, payload }
                    }
                    Ok(_) => Frame {
                        id,
                        kind: Kind::Error,
                        payload: Bytes::from_static(b"response exceeds max_frame_len"),
                    },
                    Err(e) => {
                        let mut message = e.to_string();
                        message.truncate(config.max_frame_len - HEADER_LEN);
                        Frame { id, kind: Kind::Error, payload: Bytes::from(message) }
                    }
                };
                if writer.send(frame.encode()).await.is_err() {
                    return;
                }
            }
        }
    }
}
