//! The stream transport: one length-prefixed message each way per TCP connection.
//!
//! A push-pull (join, anti-entropy, reconnect, acknowledged leave) is one connection:
//! the initiator connects, sends its message and waits for one answer; the receiver
//! reads one message, hands it to the core, writes the core's answer (if any) on the
//! same connection and closes. Every message is a big-endian `u32` length followed by
//! that many bytes, at most the protocol's `max_stream_size`; a longer length closes
//! the connection before anything is read, and every step is bounded by the stream
//! timeout, so a slow or hostile peer costs one bounded task, never the member.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Writes one message.
pub(crate) async fn write_message<W: AsyncWrite + Unpin>(
    w: &mut W,
    bytes: &[u8],
) -> io::Result<()> {
    let len = u32::try_from(bytes.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "message too long"))?;
    w.write_all(&len.to_be_bytes()).await?;
    w.write_all(bytes).await?;
    w.flush().await
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

/// Reads one message of at most `max` bytes.
pub(crate) async fn read_message<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
) -> Result<Vec<u8>, ReadError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(ReadError::Closed),
        Err(_) => return Err(ReadError::Io),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(ReadError::Oversized);
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).await.map_err(|_| ReadError::Io)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
