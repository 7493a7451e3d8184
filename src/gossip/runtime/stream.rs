//! The stream transport: one length-prefixed message each way per TCP connection.
//!
//! A push-pull (join, anti-entropy, reconnect, acknowledged leave) is one connection:
//! the initiator connects, sends its message and waits for one answer; the receiver
//! reads one message, hands it to the core, writes the core's answer (if any) on the
//! same connection and closes. Every message is one frame of the crate's
//! [framing](crate::framing) (a big-endian `u32` length followed by that many bytes), at
//! most the protocol's `max_stream_size`; a longer length closes the connection before
//! anything is read, a message's buffer grows only as its bytes arrive (a peer that
//! announces `max_stream_size` and sends little costs little), and every step is
//! bounded by the stream timeout, so a slow or hostile peer costs one bounded task,
//! never the member.

use std::io;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::framing::{self, FrameReader, MemoryBudget};

/// Writes one message.
pub(crate) async fn write_message<W: AsyncWrite + Unpin>(
    w: &mut W,
    bytes: &[u8],
) -> io::Result<()> {
    framing::write_frame(w, bytes).await
}

/// Why a message could not be read.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The peer closed the connection before sending a message.
    Closed,
    /// The announced length exceeds the bound.
    Oversized,
    /// Any other I/O failure (reset, truncated message).
    Io,
}

/// Reads one message of at most `max` bytes. Gossip's bound is per message
/// (`max_stream_size`) and per member (the cap on inbound connections), so its reader
/// has no shared budget to refuse on.
pub(crate) async fn read_message<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
) -> Result<Vec<u8>, ReadError> {
    let mut reader = FrameReader::new(max, Arc::new(MemoryBudget::unlimited()));
    match framing::read_frame(&mut reader, r).await {
        Ok(bytes) => Ok(Vec::from(bytes)),
        Err(framing::ReadError::Closed) => Err(ReadError::Closed),
        Err(framing::ReadError::Oversized) => Err(ReadError::Oversized),
        // An unlimited budget refuses nothing; were it to, the message is too large.
        Err(framing::ReadError::OverBudget) => Err(ReadError::Oversized),
        Err(framing::ReadError::Io) => Err(ReadError::Io),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    #[tokio::test]
    async fn message_round_trips_and_oversized_length_is_refused_before_reading() {
        let mut wire = Vec::new();
        write_message(&mut wire, b"hello").await.unwrap();
        assert_eq!(read_message(&mut &wire[..], 5).await.unwrap(), b"hello");
        assert!(matches!(
            read_message(&mut &wire[..], 4).await,
            Err(ReadError::Oversized)
        ));
        assert!(matches!(
            read_message(&mut &b""[..], 4).await,
            Err(ReadError::Closed)
        ));
        assert!(matches!(
            read_message(&mut &wire[..6], 5).await,
            Err(ReadError::Io)
        ));
    }

    #[tokio::test]
    async fn a_connection_closed_inside_the_length_prefix_is_a_truncated_message_not_a_close() {
        for cut in 1..4 {
            let read = read_message(&mut &[0u8, 0, 0, 5][..cut], 16).await;
            assert!(matches!(read, Err(ReadError::Io)), "{cut} bytes: {read:?}");
        }
    }

    /// Counts the bytes the reader asks to fill: a reader that reserved the announced
    /// length up front offers the whole of it to the first read.
    struct Trickle<'a> {
        bytes: &'a [u8],
        largest_offer: usize,
    }

    impl AsyncRead for Trickle<'_> {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            self.largest_offer = self.largest_offer.max(buf.remaining());
            if self.bytes.is_empty() {
                // The peer went quiet without closing: the read waits.
                return Poll::Pending;
            }
            let n = buf.remaining().min(self.bytes.len());
            buf.put_slice(&self.bytes[..n]);
            self.bytes = &self.bytes[n..];
            Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn a_peer_announcing_the_maximum_and_sending_little_costs_only_what_arrived() {
        // 8 MiB announced (the largest allowed), 10 bytes sent, then silence.
        let max = 8 << 20;
        let mut bytes = (max as u32).to_be_bytes().to_vec();
        bytes.extend_from_slice(&[1; 10]);
        let mut peer = Trickle {
            bytes: &bytes,
            largest_offer: 0,
        };
        {
            let mut read = pin!(read_message(&mut peer, max));
            let mut cx = Context::from_waker(Waker::noop());
            assert!(
                read.as_mut().poll(&mut cx).is_pending(),
                "the message is not all there"
            );
        }
        assert!(
            peer.largest_offer <= 4096,
            "a buffer of {} bytes was offered for 10 bytes",
            peer.largest_offer
        );
    }
}
