//! A client call's shared state and its sending half: both directions of one h2 stream, and the
//! flow-controlled path of request messages into h2.

use std::fmt;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use h2::client::ResponseFuture;
use h2::{Reason, SendStream};
use tokio::time::{Instant, Sleep};

use super::super::codec;
use super::super::compression::Encoding;
use super::super::metadata::Metadata;
use super::super::status::{Code, Status};
use super::response::{status_from_h2, status_from_reset, CallReceiver};

/// What both halves of a call share: the send handle (the receiving half resets the stream
/// through it) and how the call ended, once it did.
pub(super) struct Shared {
    stream: SendStream<Bytes>,
    /// Why this side ended the call early (deadline, cancel, a response it could not accept).
    pub(super) local_end: Option<Status>,
    /// The status the call ended with, once the receiving half learned it.
    pub(super) end: Option<Status>,
}

impl Shared {
    /// Ends the call from this side with RST_STREAM(CANCEL); every later operation on either half
    /// fails with the returned status (the first reason given wins).
    pub(super) fn cancel(&mut self, status: Status) -> Status {
        if let Some(earlier) = &self.local_end {
            return earlier.clone();
        }
        self.stream.send_reset(Reason::CANCEL);
        self.local_end = Some(status.clone());
        status
    }

    /// The status a failed send reports: how the call ended if known and not OK, else `fallback`.
    fn send_error(&self, fallback: Status) -> Status {
        self.local_end
            .clone()
            .or_else(|| self.end.clone().filter(|s| s.code() != Code::Ok))
            .unwrap_or(fallback)
    }

    /// Hands `pending` to h2 in pieces no larger than the granted capacity; END_STREAM goes with
    /// the last piece when `end` is set (and is cleared once sent).
    fn poll_send(
        &mut self,
        cx: &mut Context<'_>,
        pending: &mut Bytes,
        end: &mut bool,
    ) -> Poll<Result<(), Status>> {
        if let Some(status) = &self.local_end {
            return Poll::Ready(Err(status.clone()));
        }
        while !pending.is_empty() {
            self.stream.reserve_capacity(pending.len());
            let granted = self.stream.capacity();
            if granted == 0 {
                match self.stream.poll_capacity(cx) {
                    Poll::Ready(Some(Ok(_))) => continue,
                    Poll::Ready(Some(Err(e))) => {
                        return Poll::Ready(Err(self.send_error(status_from_h2(&e))))
                    }
                    // The stream can no longer send: find out why.
                    Poll::Ready(None) => {
                        let status = match self.stream.poll_reset(cx) {
                            Poll::Ready(Ok(reason)) => status_from_reset(reason),
                            Poll::Ready(Err(e)) => status_from_h2(&e),
                            Poll::Pending => Status::internal("request stream closed"),
                        };
                        return Poll::Ready(Err(self.send_error(status)));
                    }
                    Poll::Pending => {
                        // Waiting for the server to read: notice if it resets meanwhile.
                        if let Poll::Ready(r) = self.stream.poll_reset(cx) {
                            let status = match r {
                                Ok(reason) => status_from_reset(reason),
                                Err(e) => status_from_h2(&e),
                            };
                            return Poll::Ready(Err(self.send_error(status)));
                        }
                        return Poll::Pending;
                    }
                }
            }
            let piece = pending.split_to(granted.min(pending.len()));
            let last = pending.is_empty() && *end;
            if let Err(e) = self.stream.send_data(piece, last) {
                return Poll::Ready(Err(self.send_error(status_from_h2(&e))));
            }
            if last {
                *end = false;
            }
        }
        if *end {
            *end = false;
            if let Err(e) = self.stream.send_data(Bytes::new(), true) {
                return Poll::Ready(Err(self.send_error(status_from_h2(&e))));
            }
        }
        Poll::Ready(Ok(()))
    }
}

pub(super) fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // Held only inside the non-async functions of a call's two halves, never across an await; a
    // poisoned lock can only come from a panic there, after which the data is still consistent.
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// A call's deadline, and the timer that wakes a waiting operation when it passes. The timer is
/// only armed when an operation actually has to wait.
pub(super) struct Deadline {
    at: Option<Instant>,
    timer: Option<Pin<Box<Sleep>>>,
}

impl Deadline {
    pub(super) fn new(at: Option<Instant>) -> Deadline {
        Deadline { at, timer: None }
    }

    /// Whether the deadline has passed; if not, the task is woken when it does.
    pub(super) fn poll_passed(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(at) = self.at else { return false };
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
        timer.as_mut().poll(cx).is_ready()
    }

    /// Whether the deadline has passed, without arming anything.
    pub(super) fn passed(&self) -> bool {
        self.at.is_some_and(|at| at <= Instant::now())
    }
}

pub(super) fn deadline_exceeded() -> Status {
    Status::deadline_exceeded("deadline exceeded")
}

/// A client call: both directions of one stream (see the [client module](crate::grpc::client)
/// documentation for how a call ends).
///
/// Dropping it before the call ended cancels the call (RST_STREAM with CANCEL).
pub struct ClientCall {
    tx: CallSender,
    rx: CallReceiver,
}

impl fmt::Debug for ClientCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCall")
            .field("stream_id", &self.rx.stream_id())
            .field("status", &self.rx.status())
            .finish_non_exhaustive()
    }
}

impl ClientCall {
    pub(super) fn new(
        response: ResponseFuture,
        stream: SendStream<Bytes>,
        deadline: Option<Instant>,
        encoding: Option<Encoding>,
        max_recv_message_bytes: usize,
    ) -> ClientCall {
        let stream_id = stream.stream_id().as_u32();
        let shared = Arc::new(Mutex::new(Shared {
            stream,
            local_end: None,
            end: None,
        }));
        ClientCall {
            tx: CallSender {
                shared: shared.clone(),
                encoding,
                pending: Bytes::new(),
                end_pending: false,
                closed: false,
                deadline: Deadline::new(deadline),
            },
            rx: CallReceiver::new(
                shared,
                stream_id,
                response,
                deadline,
                max_recv_message_bytes,
            ),
        }
    }

    /// The HTTP/2 stream id.
    pub fn stream_id(&self) -> u32 {
        self.rx.stream_id()
    }

    /// Sends one request message. See [`CallSender::send`].
    pub async fn send<M: prost::Message>(&mut self, msg: &M) -> Result<(), Status> {
        self.tx.send(msg).await
    }

    /// Sends the last request message and half-closes. See [`CallSender::send_last`].
    pub async fn send_last<M: prost::Message>(&mut self, msg: &M) -> Result<(), Status> {
        self.tx.send_last(msg).await
    }

    /// Sends arbitrary bytes. See [`CallSender::send_raw`].
    pub async fn send_raw(&mut self, bytes: Bytes) -> Result<(), Status> {
        self.tx.send_raw(bytes).await
    }

    /// Half-closes the request stream. See [`CallSender::close_send`].
    pub fn close_send(&mut self) -> Result<(), Status> {
        self.tx.close_send()
    }

    /// Waits for the response headers. See [`CallReceiver::headers`].
    pub async fn headers(&mut self) -> Result<&Metadata, Status> {
        self.rx.headers().await
    }

    /// The next response message. See [`CallReceiver::recv`].
    pub async fn recv<M: prost::Message + Default>(&mut self) -> Result<Option<M>, Status> {
        self.rx.recv().await
    }

    /// The next response message's payload. See [`CallReceiver::recv_raw`].
    pub async fn recv_raw(&mut self) -> Result<Option<Bytes>, Status> {
        self.rx.recv_raw().await
    }

    /// The trailing metadata, once the call ended with trailers.
    pub fn trailers(&self) -> Option<&Metadata> {
        self.rx.trailers()
    }

    /// The response's `grpc-encoding`. See [`CallReceiver::encoding`].
    pub fn encoding(&self) -> Encoding {
        self.rx.encoding()
    }

    /// How the call ended, once the receiving side learned it.
    pub fn status(&self) -> Option<&Status> {
        self.rx.status()
    }

    /// Cancels the call: RST_STREAM(CANCEL) now; every later operation fails with CANCELLED.
    /// Does nothing to a call that already ended.
    pub fn cancel(&mut self) {
        self.rx.cancel();
    }

    /// The two directions, to be driven from different tasks. The call is cancelled when both
    /// halves are dropped before it ended.
    pub fn split(self) -> (CallSender, CallReceiver) {
        (self.tx, self.rx)
    }
}

/// The sending direction of a call, from [`ClientCall::split`].
///
/// Dropping it alone neither cancels nor half-closes the call: call
/// [`close_send`](CallSender::close_send) first when the request stream is complete.
pub struct CallSender {
    shared: Arc<Mutex<Shared>>,
    /// Request compression, never `Identity`.
    encoding: Option<Encoding>,
    /// The part of the current request bytes h2 has not taken yet (left by a send whose future
    /// was dropped; it goes out first).
    pending: Bytes,
    /// END_STREAM is to follow `pending`.
    end_pending: bool,
    /// END_STREAM was requested: nothing more may be sent.
    closed: bool,
    deadline: Deadline,
}

impl fmt::Debug for CallSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallSender")
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl CallSender {
    /// Sends one request message (compressed if the call's options ask for it); returns once h2
    /// has taken all of it within flow control.
    ///
    /// Errors mean nothing more can be sent: the call's status if it already ended with one that
    /// is not OK, DEADLINE_EXCEEDED or CANCELLED if this side ended it, INTERNAL after
    /// [`close_send`](CallSender::close_send), else a status for the stream reset or the lost
    /// connection (a stream reset with NO_ERROR means the server ended the call: its status is
    /// what the receiving side reports).
    ///
    /// Cancel-safe: if the future is dropped, the unsent rest of the message goes out first on
    /// the next send (or with [`close_send`](CallSender::close_send)).
    pub async fn send<M: prost::Message>(&mut self, msg: &M) -> Result<(), Status> {
        let frame = self.encode(msg)?;
        self.send_bytes(frame, false).await
    }

    /// Sends one request message with END_STREAM: the usual way to send the only message of a
    /// unary or server-streaming call. Errors as [`send`](CallSender::send).
    pub async fn send_last<M: prost::Message>(&mut self, msg: &M) -> Result<(), Status> {
        let frame = self.encode(msg)?;
        self.send_bytes(frame, true).await
    }

    /// Sends arbitrary bytes on the request stream — no prefix is added, nothing is compressed
    /// (for tests that split or break frames). Same flow-control discipline and errors as
    /// [`send`](CallSender::send).
    pub async fn send_raw(&mut self, bytes: Bytes) -> Result<(), Status> {
        self.send_bytes(bytes, false).await
    }

    /// Half-closes the request stream (END_STREAM); the response can still be received. Does
    /// nothing when already closed. A message left unsent by a dropped send goes out first (h2
    /// holds it until the window allows; it is at most one message).
    pub fn close_send(&mut self) -> Result<(), Status> {
        if self.closed && !self.end_pending {
            return Ok(());
        }
        self.closed = true;
        self.end_pending = false;
        let rest = std::mem::take(&mut self.pending);
        let mut shared = lock(&self.shared);
        if let Some(status) = &shared.local_end {
            return Err(status.clone());
        }
        match shared.stream.send_data(rest, true) {
            Ok(()) => Ok(()),
            Err(e) => Err(shared.send_error(status_from_h2(&e))),
        }
    }

    /// Cancels the call: RST_STREAM(CANCEL) now; every later operation on either half fails with
    /// CANCELLED.
    pub fn cancel(&mut self) {
        lock(&self.shared).cancel(Status::cancelled("call cancelled by the client"));
    }

    fn encode<M: prost::Message>(&mut self, msg: &M) -> Result<Bytes, Status> {
        let Some(encoding) = self.encoding else {
            return Ok(codec::encode_message(msg));
        };
        match encoding.compress(&msg.encode_to_vec()) {
            Ok(compressed) => {
                let mut buf = BytesMut::new();
                codec::encode_frame(true, &compressed, &mut buf);
                Ok(buf.freeze())
            }
            // The server would wait for a message that never comes: end the call.
            Err(status) => Err(lock(&self.shared).cancel(status)),
        }
    }

    async fn send_bytes(&mut self, bytes: Bytes, end: bool) -> Result<(), Status> {
        if self.closed {
            return Err(Status::internal("send after the request stream was closed"));
        }
        poll_fn(|cx| self.poll_flush(cx)).await?;
        self.pending = bytes;
        self.end_pending = end;
        self.closed = end;
        poll_fn(|cx| self.poll_flush(cx)).await
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        let mut shared = lock(&self.shared);
        match shared.poll_send(cx, &mut self.pending, &mut self.end_pending) {
            Poll::Pending if self.deadline.poll_passed(cx) => {
                Poll::Ready(Err(shared.cancel(deadline_exceeded())))
            }
            polled => polled,
        }
    }
}
