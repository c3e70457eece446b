//! A client call and its sending half: both directions of one h2 stream, and the flow-controlled
//! path of request messages into h2 (through [`Shared`]).

use std::fmt;
use std::future::poll_fn;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use h2::client::ResponseFuture;
use h2::SendStream;
use tokio::time::Instant;

use super::super::codec;
use super::super::compression::Encoding;
use super::super::metadata::Metadata;
use super::super::status::Status;
use super::response::CallReceiver;
use super::shared::{deadline_exceeded, lock, Deadline, Shared};
use super::status::status_from_h2;

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
