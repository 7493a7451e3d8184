//! The transport edges: the frame decoder, and `serve`'s connection loop fed by a client
//! over an in-memory pipe on a current-thread runtime with tokio's paused clock (so the
//! service's delays and any server timeout cost no real time and a hang is caught
//! deterministically).

use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::transport::frame::{Frame, Kind, HEADER_LEN};
use crate::transport::{ServeConfig, Server};

/// The server's frame bound in the serve target: small, so oversized frames are cheap.
pub(crate) const SERVE_MAX_FRAME: usize = 1024;
/// Requests whose payload starts with this byte fail in the service.
pub(crate) const FAIL: u8 = 0xEE;
/// Requests whose payload starts with this byte are answered after [`SLOW`], so answers
/// come back out of order.
pub(crate) const DELAY: u8 = 0xDD;
const SLOW: Duration = Duration::from_millis(10);
const FAILURE: &str = "refused";
/// How long the client waits for answers after sending everything (paused clock: free).
const PATIENCE: Duration = Duration::from_secs(60);
/// Past this, the connection is taken as hung.
const HANG: Duration = Duration::from_secs(3600);

/// The transport's frame decoder: a body decodes exactly when it holds a header with a
/// known kind, and then encodes back to the same bytes.
pub fn transport_frame(data: &[u8]) {
    let decoded = Frame::decode(Bytes::copy_from_slice(data));
    let well_formed = data.len() >= HEADER_LEN && data[HEADER_LEN - 1] <= 2;
    assert_eq!(decoded.is_some(), well_formed, "decode of {data:?}");
    if let Some(f) = decoded {
        assert_eq!(
            &f.encode()[..],
            data,
            "decode then encode changes the frame"
        );
        assert_eq!(f.id.to_be_bytes(), data[..8]);
        assert_eq!(&f.payload[..], &data[HEADER_LEN..]);
    }
}

/// One request the client sent and the answer it must get.
struct Expected {
    id: u64,
    kind: Kind,
    payload: Bytes,
}

fn answer_to(id: u64, payload: &[u8]) -> Expected {
    if payload.first() == Some(&FAIL) {
        Expected {
            id,
            kind: Kind::Error,
            payload: Bytes::from_static(FAILURE.as_bytes()),
        }
    } else {
        Expected {
            id,
            kind: Kind::Response,
            payload: Bytes::copy_from_slice(payload),
        }
    }
}

/// The requests a server reading `data` must serve, and whether the bytes are clean
/// (every whole frame a request within the bound; the last one may be incomplete). A
/// server may close the connection at the first frame that is not.
fn requests(mut data: &[u8]) -> (Vec<Expected>, bool) {
    let mut out = Vec::new();
    while data.len() >= 4 {
        let len = u32::from_be_bytes(data[..4].try_into().expect("4 bytes")) as usize;
        if len > SERVE_MAX_FRAME {
            return (out, false);
        }
        let Some(body) = data.get(4..4 + len) else {
            break;
        };
        match Frame::decode(Bytes::copy_from_slice(body)) {
            Some(Frame {
                id,
                kind: Kind::Request,
                payload,
            }) => out.push(answer_to(id, &payload)),
            _ => return (out, false),
        }
        data = &data[4 + len..];
    }
    (out, true)
}

/// `serve`'s connection loop reading what a client sent: every answer is the service's
/// answer to a request the client sent (no request answered twice, none invented), every
/// request of a clean stream is answered while the client waits, and the server closes
/// the connection after the client does, never hanging.
pub fn transport_serve(data: &[u8]) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime");
    let written = rt.block_on(async {
        let config = ServeConfig::builder()
            .max_frame_len(SERVE_MAX_FRAME)
            .max_concurrent_per_connection(4)
            .build()
            .expect("a valid configuration");
        // Behind a concurrency limit of one: the server must keep answering what is in
        // flight while the service is not ready (a deadlock here is a hang).
        let service = tower::limit::ConcurrencyLimit::new(
            tower::service_fn(|req: Bytes| async move {
                match req.first() {
                    Some(&FAIL) => return Err(std::io::Error::other(FAILURE)),
                    Some(&DELAY) => tokio::time::sleep(SLOW).await,
                    _ => {}
                }
                Ok(req)
            }),
            1,
        );
        let (client, server) = tokio::io::duplex(data.len() + 64 * 1024);
        let (mut client_read, mut client_write) = tokio::io::split(client);
        let serving = Server::new(service, config).serve_connection(server);
        let sending = async {
            // The server may close the connection first (a bad frame): that is fine.
            let _ = client_write.write_all(data).await;
            tokio::time::sleep(PATIENCE).await;
            let _ = client_write.shutdown().await;
        };
        let receiving = async {
            let mut out = Vec::new();
            let _ = client_read.read_to_end(&mut out).await;
            out
        };
        let ((), (), out) =
            tokio::time::timeout(HANG, async { tokio::join!(serving, sending, receiving) })
                .await
                .expect("the connection hung");
        out
    });
    let (mut pending, clean) = requests(data);
    let mut rest = &written[..];
    while !rest.is_empty() {
        assert!(rest.len() >= 4, "the server wrote part of a length");
        let len = u32::from_be_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
        assert!(
            len <= SERVE_MAX_FRAME,
            "the server wrote a frame over max_frame_len"
        );
        let body = rest
            .get(4..4 + len)
            .expect("the server wrote part of a frame");
        let f = Frame::decode(Bytes::copy_from_slice(body)).expect("the server wrote a bad frame");
        let at = pending
            .iter()
            .position(|e| e.id == f.id && e.kind == f.kind && e.payload == f.payload)
            .unwrap_or_else(|| panic!("an answer to no request: {f:?}"));
        pending.swap_remove(at);
        rest = &rest[4 + len..];
    }
    if clean {
        assert!(
            pending.is_empty(),
            "{} requests of a clean stream unanswered",
            pending.len()
        );
    }
}
