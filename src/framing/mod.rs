//! Length-prefixed framing over a byte stream, for every palisade protocol that has one:
//! the transport's connections ([`crate::transport`]) and gossip's TCP exchanges
//! (push-pull, joins, the TCP fallback ping).
//!
//! A frame is a big-endian `u32` length and that many bytes. [`FrameReader`] reads one
//! at a time, refusing a length over its maximum before reading on and growing the
//! frame's buffer as its bytes arrive; past a small uncharged start, the buffer is
//! charged to a [`MemoryBudget`] that several readers can share (a server's
//! connections), so the memory held by partial frames is bounded by what peers actually
//! sent, whatever lengths they announced. [`write_frame`] writes one.
//!
//! # Why not tokio-util's `LengthDelimitedCodec`
//! The codec reserves the announced length as soon as it has read a frame's header, so
//! a peer that announces large frames and sends a few bytes of each costs the full
//! announced size per connection: the transport measured 480 MiB held by connections
//! announcing 8 MiB frames (see `tests/transport_memory.rs`). Its buffer also has no
//! way to be charged to a budget shared across connections. The reader here allocates
//! only for bytes that arrived and charges a shared budget, so the transport left the
//! codec and gossip's stream reader (which allocated the announced length up front too)
//! uses this one instead of its own copy. The wire format is the same as the codec's
//! default (a 4-byte big-endian length, not counting itself), so peers cannot tell.
//!
//! Crate-private: each protocol keeps its own limits (the transport's `max_frame_len`
//! and `max_partial_frame_bytes`, gossip's `max_stream_size`) and counts what it
//! refuses in its own stats.

mod budget;
mod reader;

#[cfg(feature = "gossip")]
use std::io;

#[cfg(feature = "gossip")]
use tokio::io::{AsyncWrite, AsyncWriteExt};

pub(crate) use budget::MemoryBudget;
#[cfg(feature = "gossip")]
pub(crate) use reader::read_frame;
pub(crate) use reader::{FrameReader, ReadError};

/// Writes one frame (its length, then `body`) and flushes. A body longer than a `u32`
/// can announce is refused with `InvalidInput`, nothing written.
#[cfg(feature = "gossip")]
pub(crate) async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, body: &[u8]) -> io::Result<()> {
    let len = u32::try_from(body.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame too long"))?;
    w.write_all(&len.to_be_bytes()).await?;
    w.write_all(body).await?;
    w.flush().await
}

#[cfg(all(test, feature = "gossip"))]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn a_written_frame_reads_back_whole() {
        let mut wire = Vec::new();
        write_frame(&mut wire, b"hello").await.unwrap();
        write_frame(&mut wire, b"").await.unwrap();
        assert_eq!(&wire[..4], &5u32.to_be_bytes());
        let budget = Arc::new(MemoryBudget::unlimited());
        let mut reader = FrameReader::new(5, budget);
        let mut io = &wire[..];
        assert_eq!(
            &read_frame(&mut reader, &mut io).await.unwrap()[..],
            b"hello"
        );
        assert!(read_frame(&mut reader, &mut io).await.unwrap().is_empty());
        assert!(matches!(
            read_frame(&mut reader, &mut io).await,
            Err(ReadError::Closed)
        ));
    }
}
