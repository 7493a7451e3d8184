//! One connection of the server: reads requests, hands them to the service, writes the
//! responses as they complete.
//!
//! The loop is one poll function over four steps, repeated while any makes progress:
//! collect finished responses, write, hand the request read last to the service once it
//! is ready, read the next frame (only when no request waits for readiness and fewer than
//! `max_concurrent_per_connection` are in flight). A pending `poll_ready` therefore stops
//! only the reading: in-flight responses are still polled and written, which is what
//! frees the service (the permit of a concurrency limit, a `Buffer`'s slot).

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, BufReader};
use tokio::time::{Instant, Sleep};

use super::{Refusal, ServeConfig, Shared};
use crate::error::BoxError;
use crate::framing::{FrameReader, ReadError};
use crate::transport::frame::{Frame, Kind, HEADER_LEN};

/// The read buffer of one connection: small requests pipelined on it are read a few
/// kilobytes per system call.
const READ_BUFFER: usize = 4096;
/// An emptied write buffer larger than this is freed rather than kept for the next
/// response.
const KEEP_WRITE_BUFFER: usize = 64 * 1024;

/// Serves `io` until the peer closes it (after every response is written: `Ok`), it
/// fails (`Ok`), or the server closes it (`Err` with the reason, for counting).
pub(super) async fn serve_io<IO, S>(
    io: IO,
    service: S,
    config: &ServeConfig,
    shared: &Shared,
) -> Result<(), Refusal>
where
    IO: AsyncRead + AsyncWrite + Unpin,
    S: tower_service::Service<Bytes, Response = Bytes>,
    S::Error: Into<BoxError>,
{
    let now = Instant::now();
    let mut conn = ConnectionLoop {
        io: BufReader::with_capacity(READ_BUFFER, io),
        service,
        reader: FrameReader::new(config.max_frame_len, shared.budget.clone()),
        waiting: None,
        in_flight: FuturesUnordered::new(),
        out: BytesMut::new(),
        unwritten: 0,
        read_closed: false,
        timer: None,
        last_activity: now,
        frame_started: None,
        write_progress: now,
        config,
        shared,
    };
    match poll_fn(|cx| conn.poll(cx)).await {
        End::Done | End::Broken => Ok(()),
        End::Refused(r) => Err(r),
    }
}

enum End {
    Done,
    Broken,
    Refused(Refusal),
}

pin_project_lite::pin_project! {
    /// A call to the service, tagged with its request id.
    struct Tagged<F> {
        id: u64,
        #[pin]
        call: F,
    }
}

impl<F, E> Future for Tagged<F>
where
    F: Future<Output = Result<Bytes, E>>,
    E: Into<BoxError>,
{
    type Output = (u64, Result<Bytes, BoxError>);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        this.call
            .poll(cx)
            .map(|result| (*this.id, result.map_err(Into::into)))
    }
}

struct ConnectionLoop<'a, IO, S: tower_service::Service<Bytes>> {
    io: BufReader<IO>,
    service: S,
    reader: FrameReader,
    /// A request read while the service was not ready.
    waiting: Option<(u64, Bytes)>,
    in_flight: FuturesUnordered<Tagged<S::Future>>,
    /// Encoded responses not yet written.
    out: BytesMut,
    /// Responses in `out` (an upper bound once part of `out` is written).
    unwritten: usize,
    /// The peer finished sending: answer what is in flight, then end.
    read_closed: bool,
    timer: Option<(Pin<Box<Sleep>>, Instant, Refusal)>,
    last_activity: Instant,
    frame_started: Option<Instant>,
    write_progress: Instant,
    config: &'a ServeConfig,
    shared: &'a Shared,
}

impl<IO, S> ConnectionLoop<'_, IO, S>
where
    IO: AsyncRead + AsyncWrite + Unpin,
    S: tower_service::Service<Bytes, Response = Bytes>,
    S::Error: Into<BoxError>,
{
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<End> {
        loop {
            let mut progress = false;
            while let Poll::Ready(Some((id, result))) = self.in_flight.poll_next_unpin(cx) {
                self.queue_response(id, result);
                progress = true;
            }
            match self.poll_write(cx) {
                Ok(wrote) => progress |= wrote,
                Err(()) => return Poll::Ready(End::Broken),
            }
            if self.waiting.is_some() {
                match self.service.poll_ready(cx) {
                    Poll::Ready(Ok(())) => {
                        let (id, payload) = self.waiting.take().expect("checked above");
                        let call = self.service.call(payload);
                        self.in_flight.push(Tagged { id, call });
                        progress = true;
                    }
                    // The service is dead: nothing more can be answered here.
                    Poll::Ready(Err(_)) => return Poll::Ready(End::Broken),
                    Poll::Pending => {}
                }
            }
            let busy = self.in_flight.len().saturating_add(self.unwritten);
            if self.waiting.is_none()
                && !self.read_closed
                && busy < self.config.max_concurrent_per_connection
            {
                match self.reader.poll_frame(&mut self.io, cx) {
                    Poll::Ready(Ok(body)) => {
                        self.frame_started = None;
                        self.last_activity = Instant::now();
                        match Frame::decode(body) {
                            Some(Frame {
                                id,
                                kind: Kind::Request,
                                payload,
                            }) => {
                                self.shared.requests.fetch_add(1, Ordering::Relaxed);
                                self.waiting = Some((id, payload));
                                progress = true;
                            }
                            _ => return Poll::Ready(End::Refused(Refusal::ProtocolViolation)),
                        }
                    }
                    Poll::Ready(Err(ReadError::Closed)) => {
                        self.read_closed = true;
                        progress = true;
                    }
                    Poll::Ready(Err(ReadError::Oversized)) => {
                        return Poll::Ready(End::Refused(Refusal::OversizedFrame))
                    }
                    Poll::Ready(Err(ReadError::OverBudget)) => {
                        return Poll::Ready(End::Refused(Refusal::OverMemoryBudget))
                    }
                    Poll::Ready(Err(ReadError::Io)) => return Poll::Ready(End::Broken),
                    Poll::Pending => {
                        if self.reader.in_frame() && self.frame_started.is_none() {
                            self.frame_started = Some(Instant::now());
                        }
                    }
                }
            }
            if self.read_closed
                && self.waiting.is_none()
                && self.in_flight.is_empty()
                && self.out.is_empty()
            {
                return Poll::Ready(End::Done);
            }
            if !progress {
                break;
            }
        }
        self.poll_timer(cx)
    }

    fn queue_response(&mut self, id: u64, result: Result<Bytes, BoxError>) {
        let max_payload = self.config.max_frame_len - HEADER_LEN;
        let frame = match result {
            Ok(payload) if payload.len() <= max_payload => Frame {
                id,
                kind: Kind::Response,
                payload,
            },
            Ok(_) => Frame {
                id,
                kind: Kind::Error,
                payload: Bytes::from_static(b"response exceeds max_frame_len"),
            },
            Err(e) => {
                let mut message = e.to_string();
                if message.len() > max_payload {
                    let mut end = max_payload;
                    while !message.is_char_boundary(end) {
                        end -= 1;
                    }
                    message.truncate(end);
                }
                Frame {
                    id,
                    kind: Kind::Error,
                    payload: Bytes::from(message),
                }
            }
        };
        if self.out.is_empty() {
            self.write_progress = Instant::now();
        }
        // Fits: max_frame_len is at most u32::MAX, checked at build.
        let _ = frame.encode_into(&mut self.out);
        self.unwritten += 1;
        self.shared.responses.fetch_add(1, Ordering::Relaxed);
    }

    /// Writes what it can of `out`; `Ok(true)` when it wrote something.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> Result<bool, ()> {
        let mut wrote = false;
        while !self.out.is_empty() {
            match Pin::new(&mut self.io).poll_write(cx, &self.out) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Err(()),
                Poll::Ready(Ok(n)) => {
                    self.out.advance(n);
                    wrote = true;
                }
                Poll::Pending => break,
            }
        }
        if wrote {
            let now = Instant::now();
            self.write_progress = now;
            if self.out.is_empty() {
                self.unwritten = 0;
                self.last_activity = now;
                if self.out.capacity() > KEEP_WRITE_BUFFER {
                    self.out = BytesMut::new();
                }
            }
        }
        if self.out.is_empty() {
            // A TcpStream needs no flush; a TLS or buffered stream does.
            if let Poll::Ready(Err(_)) = Pin::new(&mut self.io).poll_flush(cx) {
                return Err(());
            }
        }
        Ok(wrote)
    }

    /// Arms the earliest deadline that applies now and ends the connection if it passed.
    fn poll_timer(&mut self, cx: &mut Context<'_>) -> Poll<End> {
        let frame = self.config.frame_timeout;
        let mut deadlines: [Option<(Instant, Refusal)>; 3] = [None; 3];
        if let Some(started) = self.frame_started {
            deadlines[0] = after(started, frame).map(|d| (d, Refusal::FrameTimeout));
        }
        if !self.out.is_empty() {
            deadlines[1] = after(self.write_progress, frame).map(|d| (d, Refusal::FrameTimeout));
        }
        let idle = self.waiting.is_none()
            && self.in_flight.is_empty()
            && self.out.is_empty()
            && !self.reader.in_frame();
        if idle {
            deadlines[2] = after(self.last_activity, self.config.idle_timeout)
                .map(|d| (d, Refusal::IdleTimeout));
        }
        let Some((deadline, reason)) = deadlines.into_iter().flatten().min_by_key(|d| d.0) else {
            // Nothing to time: the timer (if any) is kept for the next deadline, unpolled.
            return Poll::Pending;
        };
        match &mut self.timer {
            Some((sleep, at, why)) => {
                if *at != deadline {
                    sleep.as_mut().reset(deadline);
                    *at = deadline;
                }
                *why = reason;
            }
            None => {
                self.timer = Some((
                    Box::pin(tokio::time::sleep_until(deadline)),
                    deadline,
                    reason,
                ))
            }
        }
        let (sleep, _, why) = self.timer.as_mut().expect("set above");
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(End::Refused(*why)),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// `start + d`, or `None` when that is beyond what the clock can represent (never).
fn after(start: Instant, d: Duration) -> Option<Instant> {
    start.checked_add(d)
}
