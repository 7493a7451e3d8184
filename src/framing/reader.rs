//! Reads length-prefixed frames with memory that follows the bytes that arrived, not the
//! length a peer announced.
//!
//! A frame is a big-endian `u32` length and that many bytes. [`FrameReader::poll_frame`]
//! is the one entry point (the fuzz target's too): it reads the 4-byte prefix, refuses a
//! length over `max_frame_len` before reading on, then grows the frame's buffer as its
//! bytes arrive (doubling, starting at [`FIRST_STEP`]), so a peer that announces 4 GiB
//! and sends 5 bytes costs 4 KiB, not 4 GiB. Beyond its first [`UNCHARGED_FRAME_BYTES`],
//! a frame's buffer is charged to a [`MemoryBudget`] shared by all connections of a
//! server; a frame that would overdraw it is refused. The charge is returned when the
//! frame completes (its bytes move on, uncharged, as the request payload) or when the
//! reader is dropped.
//!
//! `poll_frame` keeps its progress in the reader, so it may be abandoned at any
//! `Pending` and polled again (cancel-safe).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{BufMut, Bytes};
use tokio::io::{AsyncRead, ReadBuf};

use super::budget::MemoryBudget;

/// The first allocation of a frame's buffer, and what a frame may hold without charging
/// the shared budget: a small request never waits on (or is refused by) the budget.
pub(crate) const FIRST_STEP: usize = 4096;
/// See [`FIRST_STEP`].
pub(crate) const UNCHARGED_FRAME_BYTES: usize = FIRST_STEP;

/// Why no frame was read.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The peer closed the connection between frames.
    Closed,
    /// The announced length exceeds `max_frame_len` (the body was not read).
    Oversized,
    /// The frame's buffer would overdraw the shared budget.
    OverBudget,
    /// The connection failed or closed in the middle of a frame.
    Io,
}

impl From<io::Error> for ReadError {
    fn from(_: io::Error) -> Self {
        ReadError::Io
    }
}

/// The state of reading one frame at a time from a byte stream.
#[derive(Debug)]
pub(crate) struct FrameReader {
    max_frame_len: usize,
    budget: Arc<MemoryBudget>,
    head: [u8; 4],
    head_len: usize,
    /// The body's length once the prefix is complete.
    want: usize,
    body: Vec<u8>,
    /// Bytes of `body`'s capacity charged to `budget`.
    charged: usize,
}

impl FrameReader {
    pub(crate) fn new(max_frame_len: usize, budget: Arc<MemoryBudget>) -> Self {
        Self {
            max_frame_len,
            budget,
            head: [0; 4],
            head_len: 0,
            want: 0,
            body: Vec::new(),
            charged: 0,
        }
    }

    /// Whether part of a frame (at least its first byte) has arrived.
    // Read by the transport's server only.
    #[cfg_attr(not(feature = "transport"), allow(dead_code))]
    pub(crate) fn in_frame(&self) -> bool {
        self.head_len > 0
    }

    /// Reads until one whole frame body is in, and returns it.
    pub(crate) fn poll_frame<R: AsyncRead + Unpin>(
        &mut self,
        io: &mut R,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Bytes, ReadError>> {
        while self.head_len < self.head.len() {
            let mut buf = ReadBuf::new(&mut self.head[self.head_len..]);
            ready!(Pin::new(&mut *io).poll_read(cx, &mut buf))?;
            let n = buf.filled().len();
            if n == 0 {
                return Poll::Ready(Err(if self.head_len == 0 {
                    ReadError::Closed
                } else {
                    ReadError::Io
                }));
            }
            self.head_len += n;
            if self.head_len == self.head.len() {
                let len = u32::from_be_bytes(self.head);
                match usize::try_from(len) {
                    Ok(len) if len <= self.max_frame_len => self.want = len,
                    _ => return Poll::Ready(Err(ReadError::Oversized)),
                }
            }
        }
        while self.body.len() < self.want {
            if self.body.len() == self.body.capacity() {
                self.grow()?;
            }
            let remaining = self.want - self.body.len();
            let n = ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut *io),
                cx,
                &mut (&mut self.body).limit(remaining),
            ))?;
            if n == 0 {
                return Poll::Ready(Err(ReadError::Io));
            }
        }
        let body = std::mem::take(&mut self.body);
        self.head_len = 0;
        self.want = 0;
        self.release();
        Poll::Ready(Ok(Bytes::from(body)))
    }

    /// Doubles the body's buffer (at least [`FIRST_STEP`], at most the frame's length),
    /// charging the budget for the part beyond [`UNCHARGED_FRAME_BYTES`].
    fn grow(&mut self) -> Result<(), ReadError> {
        let capacity = self.body.capacity();
        let target = capacity.saturating_mul(2).max(FIRST_STEP).min(self.want);
        let charge = target.saturating_sub(UNCHARGED_FRAME_BYTES) - self.charged;
        if charge > 0 {
            if !self.budget.try_charge(charge) {
                return Err(ReadError::OverBudget);
            }
            self.charged += charge;
        }
        self.body.reserve_exact(target - self.body.len());
        Ok(())
    }

    fn release(&mut self) {
        self.budget.release(std::mem::take(&mut self.charged));
    }
}

/// Reads one frame with `reader` (the future form of [`FrameReader::poll_frame`]).
#[cfg(feature = "gossip")]
pub(crate) async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut FrameReader,
    io: &mut R,
) -> Result<Bytes, ReadError> {
    std::future::poll_fn(|cx| reader.poll_frame(io, cx)).await
}

impl Drop for FrameReader {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;

    fn wire(bodies: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for b in bodies {
            out.extend_from_slice(&(b.len() as u32).to_be_bytes());
            out.extend_from_slice(b);
        }
        out
    }

    async fn read_all(bytes: &[u8], max: usize, budget: usize) -> (Vec<Bytes>, ReadError) {
        let mut io = bytes;
        let mut reader = FrameReader::new(max, Arc::new(MemoryBudget::new(budget)));
        let mut frames = Vec::new();
        loop {
            match poll_fn(|cx| reader.poll_frame(&mut io, cx)).await {
                Ok(f) => frames.push(f),
                Err(e) => return (frames, e),
            }
        }
    }

    #[tokio::test]
    async fn frames_come_out_as_they_went_in_then_closed() {
        let big = vec![7u8; 100_000];
        let (frames, end) = read_all(&wire(&[b"a", b"", &big, b"xyz"]), 1 << 20, 1 << 20).await;
        assert_eq!(frames.len(), 4);
        assert_eq!(&frames[0][..], b"a");
        assert!(frames[1].is_empty());
        assert_eq!(&frames[2][..], &big[..]);
        assert_eq!(&frames[3][..], b"xyz");
        assert!(matches!(end, ReadError::Closed));
    }

    #[tokio::test]
    async fn an_announced_length_over_the_maximum_is_refused_before_reading_on() {
        let (frames, end) = read_all(&wire(&[b"12345"]), 4, usize::MAX).await;
        assert!(frames.is_empty());
        assert!(matches!(end, ReadError::Oversized));
        let (_, end) = read_all(&[0xff, 0xff, 0xff, 0xff], u32::MAX as usize - 1, 0).await;
        assert!(matches!(end, ReadError::Oversized));
    }

    #[tokio::test]
    async fn a_truncated_frame_is_an_error_not_a_close() {
        let w = wire(&[b"hello"]);
        let (_, end) = read_all(&w[..6], 64, 64).await;
        assert!(matches!(end, ReadError::Io));
        let (_, end) = read_all(&w[..2], 64, 64).await;
        assert!(matches!(end, ReadError::Io));
    }

    #[tokio::test]
    async fn a_huge_announced_length_costs_only_what_arrived() {
        // 4 GiB - 1 announced, 10 bytes sent: the reader allocated its first step only.
        let mut bytes = u32::MAX.to_be_bytes().to_vec();
        bytes.extend_from_slice(&[1; 10]);
        let mut io = &bytes[..];
        let budget = Arc::new(MemoryBudget::new(0));
        let mut reader = FrameReader::new(u32::MAX as usize, budget.clone());
        let end = poll_fn(|cx| reader.poll_frame(&mut io, cx)).await;
        assert!(matches!(end, Err(ReadError::Io)));
        assert!(reader.body.capacity() <= FIRST_STEP);
        assert_eq!(budget.used(), 0);
    }

    #[tokio::test]
    async fn a_frame_past_the_uncharged_start_needs_the_budget_and_returns_it() {
        let big = vec![1u8; 3 * FIRST_STEP];
        let (frames, end) = read_all(&wire(&[b"small", &big]), 1 << 20, FIRST_STEP).await;
        assert_eq!(frames.len(), 1, "the small frame needs no budget");
        assert!(matches!(end, ReadError::OverBudget));

        let budget = Arc::new(MemoryBudget::new(2 * FIRST_STEP));
        let bytes = wire(&[&big]);
        let mut io = &bytes[..];
        let mut reader = FrameReader::new(1 << 20, budget.clone());
        let frame = poll_fn(|cx| reader.poll_frame(&mut io, cx)).await.unwrap();
        assert_eq!(frame.len(), big.len());
        assert_eq!(budget.used(), 0, "a complete frame returns its charge");
    }

    #[tokio::test]
    async fn dropping_a_reader_mid_frame_returns_its_charge() {
        let budget = Arc::new(MemoryBudget::new(usize::MAX));
        let mut bytes = 100_000u32.to_be_bytes().to_vec();
        bytes.extend_from_slice(&[0; 50_000]);
        let mut io = &bytes[..];
        let mut reader = FrameReader::new(1 << 20, budget.clone());
        let end = poll_fn(|cx| reader.poll_frame(&mut io, cx)).await;
        assert!(matches!(end, Err(ReadError::Io)));
        assert!(budget.used() > 0);
        drop(reader);
        assert_eq!(budget.used(), 0);
    }
}
