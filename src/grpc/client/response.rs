//! The receiving half of a client call: the server's response — headers, messages, trailers —
//! and how the call ended, decided as grpc-go decides it.

use std::fmt;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use h2::client::ResponseFuture;
use h2::RecvStream;
use http::{HeaderMap, Response};
use tokio::time::Instant;
use tracing::debug;

use super::super::codec::{Decoder, Frame};
use super::super::compression::Encoding;
use super::super::headers::GRPC_ENCODING;
use super::super::metadata::Metadata;
use super::super::status::{Code, Status};
use super::shared::{deadline_exceeded, lock, Deadline, Shared};
use super::status::{non_grpc_response, status_from_h2};

/// The receiving direction of a call, from [`ClientCall::split`](super::ClientCall::split).
///
/// Dropping it alone does not cancel the call (the sending half may go on); h2 then discards
/// whatever the server still sends on the call.
pub struct CallReceiver {
    shared: Arc<Mutex<Shared>>,
    stream_id: u32,
    /// Until the response headers arrive.
    response: Option<ResponseFuture>,
    /// From the response headers until the call ends.
    body: Option<RecvStream>,
    /// The body's DATA ended; trailers are next.
    data_done: bool,
    decoder: Decoder,
    /// The response's `grpc-encoding`.
    encoding: Encoding,
    max_message_bytes: usize,
    headers: Option<Metadata>,
    trailers: Option<Metadata>,
    status: Option<Status>,
    deadline: Deadline,
}

impl fmt::Debug for CallReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallReceiver")
            .field("stream_id", &self.stream_id)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl CallReceiver {
    pub(super) fn new(
        shared: Arc<Mutex<Shared>>,
        stream_id: u32,
        response: ResponseFuture,
        deadline: Option<Instant>,
        max_message_bytes: usize,
    ) -> CallReceiver {
        CallReceiver {
            shared,
            stream_id,
            response: Some(response),
            body: None,
            data_done: false,
            decoder: Decoder::new(max_message_bytes),
            encoding: Encoding::Identity,
            max_message_bytes,
            headers: None,
            trailers: None,
            status: None,
            deadline: Deadline::new(deadline),
        }
    }

    /// The HTTP/2 stream id.
    pub fn stream_id(&self) -> u32 {
        self.stream_id
    }

    /// Waits for the response headers and returns their application metadata.
    ///
    /// A Trailers-Only response (the server ended the call without sending any message) has no
    /// headers of its own: if its status is OK this returns empty metadata (the metadata is in
    /// [`trailers`](CallReceiver::trailers)), otherwise `Err(status)`. Any call that ended before
    /// response headers arrived is also `Err(status)`.
    pub async fn headers(&mut self) -> Result<&Metadata, Status> {
        poll_fn(|cx| self.poll_timed(cx, CallReceiver::poll_headers)).await;
        match (&self.headers, &self.status) {
            (Some(headers), _) => Ok(headers),
            (None, Some(status)) => Err(status.clone()),
            (None, None) => Err(Status::internal("no response headers")),
        }
    }

    /// The next response message, decoded as `M`; `Ok(None)` once the call ended with OK.
    ///
    /// Errors: the call's status when it is not OK; RESOURCE_EXHAUSTED for a message over the
    /// receive limit ([`CallOptions::max_recv_message_bytes`](super::CallOptions), 4 MiB by
    /// default; refused from its length prefix, before anything is allocated, and again
    /// after decompression); INTERNAL for a payload that is not an `M`, broken framing, or a
    /// compressed message without a known `grpc-encoding`. The call is cancelled on any error
    /// found here, and every later call of this method returns the same error.
    pub async fn recv<M: prost::Message + Default>(&mut self) -> Result<Option<M>, Status> {
        let Some(payload) = self.recv_raw().await? else {
            return Ok(None);
        };
        M::decode(payload).map(Some).map_err(|e| {
            self.fail(Status::internal(format!(
                "response message does not decode: {e}"
            )))
        })
    }

    /// The next response message's payload (decompressed); `Ok(None)` once the call ended with
    /// OK. Errors as [`recv`](CallReceiver::recv).
    pub async fn recv_raw(&mut self) -> Result<Option<Bytes>, Status> {
        let frame = poll_fn(|cx| self.poll_timed(cx, CallReceiver::poll_frame)).await?;
        let Some(frame) = frame else { return Ok(None) };
        if !frame.compressed {
            return Ok(Some(frame.payload));
        }
        if self.encoding == Encoding::Identity {
            return Err(self.fail(Status::internal(
                "compressed flag set on a message but no grpc-encoding was given",
            )));
        }
        match self
            .encoding
            .decompress(frame.payload, self.max_message_bytes)
        {
            Ok(payload) => Ok(Some(payload)),
            Err(status) => Err(self.fail(status)),
        }
    }

    /// The response's `grpc-encoding`: how the server compresses response messages (`Identity`
    /// until the response headers arrived).
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// The trailing metadata, once the call ended with trailers (for a Trailers-Only response,
    /// the metadata of its only HEADERS frame).
    pub fn trailers(&self) -> Option<&Metadata> {
        self.trailers.as_ref()
    }

    /// How the call ended, once this side learned it (from trailers, a reset, the deadline, a
    /// cancel, or a response it could not accept).
    pub fn status(&self) -> Option<&Status> {
        self.status.as_ref()
    }

    /// Cancels the call: RST_STREAM(CANCEL) now; every later operation on either half fails with
    /// CANCELLED. Does nothing to a call that already ended.
    pub fn cancel(&mut self) {
        if self.status.is_none() {
            self.end_locally(Status::cancelled("call cancelled by the client"));
        }
    }

    /// Polls `op`; when it has to wait and the deadline has passed, ends the call with
    /// DEADLINE_EXCEEDED, after which `op` is ready.
    fn poll_timed<T>(
        &mut self,
        cx: &mut Context<'_>,
        op: fn(&mut CallReceiver, &mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        if let Poll::Ready(v) = op(self, cx) {
            return Poll::Ready(v);
        }
        if self.deadline.poll_passed(cx) {
            self.end_locally(deadline_exceeded());
            return op(self, cx);
        }
        Poll::Pending
    }

    /// Ready once the response headers arrived or the call ended.
    fn poll_headers(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.headers.is_some() || self.status.is_some() {
            return Poll::Ready(());
        }
        let Some(response) = self.response.as_mut() else {
            self.end_locally(Status::internal("response lost"));
            return Poll::Ready(());
        };
        match Pin::new(response).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => {
                let status = self.status_from_h2(&e);
                self.finish(status);
                Poll::Ready(())
            }
            Poll::Ready(Ok(response)) => {
                self.response = None;
                self.on_response(response);
                Poll::Ready(())
            }
        }
    }

    fn on_response(&mut self, response: Response<RecvStream>) {
        let (parts, body) = response.into_parts();
        if let Some(status) = non_grpc_response(parts.status, &parts.headers) {
            debug!(stream_id = self.stream_id, %status, "response is not gRPC");
            self.end_locally(status);
            return;
        }
        if body.is_end_stream() {
            // Trailers-Only: the status and all metadata in this one HEADERS frame.
            let status = Status::from_headers(&parts.headers).unwrap_or_else(|| {
                debug!(
                    stream_id = self.stream_id,
                    "Trailers-Only without grpc-status"
                );
                Status::unknown("server sent a Trailers-Only response without grpc-status")
            });
            if status.code() == Code::Ok {
                self.headers = Some(Metadata::new());
            }
            self.trailers = Some(Metadata::from_headers(&parts.headers));
            self.finish(status);
            return;
        }
        if let Some(value) = parts.headers.get(GRPC_ENCODING) {
            match value.to_str().ok().and_then(Encoding::from_name) {
                Some(encoding) => self.encoding = encoding,
                None => {
                    self.end_locally(Status::internal(format!(
                        "response grpc-encoding {:?} is not supported",
                        String::from_utf8_lossy(value.as_bytes())
                    )));
                    return;
                }
            }
        }
        self.headers = Some(Metadata::from_headers(&parts.headers));
        self.body = Some(body);
    }

    /// The next complete message, `Ok(None)` once the call ended with OK.
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Frame>, Status>> {
        if self.poll_headers(cx).is_pending() {
            return Poll::Pending;
        }
        loop {
            match self.decoder.next_frame() {
                Ok(Some(frame)) => return Poll::Ready(Ok(Some(frame))),
                Ok(None) => {}
                Err(e) => {
                    debug!(stream_id = self.stream_id, error = %e, "bad response framing");
                    self.end_locally(e.to_status());
                }
            }
            if let Some(status) = &self.status {
                return Poll::Ready(if status.code() == Code::Ok {
                    Ok(None)
                } else {
                    Err(status.clone())
                });
            }
            let Some(body) = self.body.as_mut() else {
                self.end_locally(Status::internal("response body lost"));
                continue;
            };
            if !self.data_done {
                match body.poll_data(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Some(Ok(chunk))) => {
                        self.decoder.push(&chunk);
                        // The bytes now sit in the decoder, whose size the message limit bounds.
                        let _ = body.flow_control().release_capacity(chunk.len());
                    }
                    Poll::Ready(Some(Err(e))) => {
                        let status = self.status_from_h2(&e);
                        self.finish(status);
                    }
                    Poll::Ready(None) => self.data_done = true,
                }
                continue;
            }
            match body.poll_trailers(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(Some(trailers))) => self.on_trailers(&trailers),
                Poll::Ready(Ok(None)) => {
                    debug!(stream_id = self.stream_id, "stream ended without trailers");
                    self.finish(Status::internal(
                        "server closed the stream without sending trailers",
                    ));
                }
                Poll::Ready(Err(e)) => {
                    let status = self.status_from_h2(&e);
                    self.finish(status);
                }
            }
        }
    }

    fn on_trailers(&mut self, trailers: &HeaderMap) {
        let mut status = Status::from_headers(trailers).unwrap_or_else(|| {
            debug!(stream_id = self.stream_id, "trailers without grpc-status");
            Status::unknown("server sent trailers without grpc-status")
        });
        if status.code() == Code::Ok {
            if let Err(e) = self.decoder.finish() {
                debug!(stream_id = self.stream_id, error = %e, "bad response framing");
                status = e.to_status();
            }
        }
        self.trailers = Some(Metadata::from_headers(trailers));
        self.finish(status);
    }

    /// The status for an h2 error on this stream: the reason this side gave if it reset the
    /// stream itself, else grpc-go's mapping (a CANCEL after the deadline reads as
    /// DEADLINE_EXCEEDED, as grpc-go reads it).
    fn status_from_h2(&self, err: &h2::Error) -> Status {
        if !err.is_remote() {
            if let Some(status) = lock(&self.shared).local_end.clone() {
                return status;
            }
        }
        let status = status_from_h2(err);
        if status.code() == Code::Cancelled && self.deadline.passed() {
            return deadline_exceeded();
        }
        status
    }

    /// Ends the call from this side (resetting the stream), keeping the first reason given.
    fn end_locally(&mut self, status: Status) {
        if self.status.is_none() {
            let status = lock(&self.shared).cancel(status);
            self.finish(status);
        }
    }

    /// Ends the call locally because of something found in a received message; returns the
    /// status the call ended with.
    fn fail(&mut self, status: Status) -> Status {
        self.end_locally(status);
        self.status
            .clone()
            .unwrap_or_else(|| Status::internal("call ended"))
    }

    /// Records how the call ended and lets go of the h2 receive handles (their unread bytes go
    /// back to the connection window).
    fn finish(&mut self, status: Status) {
        if self.status.is_some() {
            return;
        }
        debug!(stream_id = self.stream_id, code = %status.code(), "call ended");
        self.response = None;
        self.body = None;
        self.decoder = Decoder::new(self.max_message_bytes);
        lock(&self.shared).end = Some(status.clone());
        self.status = Some(status);
    }
}
