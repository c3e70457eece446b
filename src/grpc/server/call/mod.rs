//! One gRPC call on the server: the request stream, the response stream and the call's state.
//!
//! A handler receives `&Call`. Everything it awaits on the call — the next request message, room
//! for the next response message, the client going away — is polled from the handler's own task,
//! so the handler can wait on several of them at once with `tokio::select!`.
//!
//! Flow control, both ways:
//! - receiving: bytes are released back to the peer's window as they move from h2 into the bounded
//!   message decoder, and the decoder is only fed when it has no complete message left. A handler
//!   that stops asking for messages therefore stops the peer after one window.
//! - sending: a response frame is handed to h2 only in pieces no larger than the capacity h2
//!   granted. Whatever the client does, the call holds at most one frame that h2 has not sent.

use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{RecvStream, SendStream};
use http::{HeaderMap, HeaderValue, Response};
use tokio::sync::OwnedSemaphorePermit;
use tracing::debug;

use crate::grpc::codec::{self, Decoder};
use crate::grpc::compression::{Encoding, Encodings, ACCEPT_ENCODING};
use crate::grpc::headers::{GRPC_ACCEPT_ENCODING, GRPC_ENCODING};
use crate::grpc::metadata::Metadata;
use crate::grpc::server::auth::Principal;
use crate::grpc::server::stats;
use crate::grpc::server::written::{Chunk, Tracker};
use crate::grpc::status::Status;

mod state;

pub use state::{CallState, CloseCause};

/// Facts about a call fixed when its headers arrive.
#[derive(Debug)]
pub struct CallInfo {
    /// The `:path`, `/package.Service/Method`.
    pub path: String,
    /// The HTTP/2 stream id.
    pub stream_id: u32,
    /// Identifies the connection the call came on (unique for the server's lifetime).
    pub connection_id: u64,
    /// The client's address.
    pub peer: Option<SocketAddr>,
    /// The identity of the client's verified TLS certificate (SAN URI, else DNS, else CN), if the
    /// connection is TLS and the client presented one.
    pub peer_identity: Option<Arc<str>>,
    /// Who the call runs as, if the server's authenticator established it.
    pub principal: Option<Arc<Principal>>,
    /// Application metadata from the request headers.
    pub metadata: Metadata,
    /// When the call must be over (from `grpc-timeout` and the server's cap).
    pub deadline: Option<Instant>,
    /// The `grpc-encoding` of request messages.
    pub request_encoding: Encoding,
    /// The best encoding the client accepts for responses (`grpc-accept-encoding`), if any.
    pub accepted_encoding: Option<Encoding>,
    /// Every encoding the client lists in `grpc-accept-encoding` that this server supports.
    pub accepted_encodings: Encodings,
    /// Largest request message, before and after decompression.
    pub max_message_bytes: usize,
}

/// A server-side call. See the module documentation.
pub struct Call {
    info: CallInfo,
    inner: Mutex<Inner>,
    /// The call's place among the connection's running handlers; released with the call.
    permit: Option<OwnedSemaphorePermit>,
}

struct Inner {
    state: CallState,
    body: RecvStream,
    decoder: Decoder,
    /// Bytes taken from h2 whose flow-control capacity is not yet given back to the client.
    unreleased: usize,
    recv_done: bool,
    respond: SendResponse<Chunk>,
    stream: Option<SendStream<Chunk>>,
    headers: Metadata,
    trailers: Metadata,
    /// Response compression the handler asked for (only used if the client accepts it).
    response_encoding: Option<Encoding>,
    /// The part of the current response frame that h2 has not taken yet.
    pending: Bytes,
    /// The compressed flag of the last request message handed to the handler.
    last_compressed: bool,
    /// Counts the response chunks h2 has not written yet, once the handler asks (`track_writes`).
    tracker: Option<Tracker>,
    /// The handler's last poll left its task waiting on h2 for request data, which h2 also wakes
    /// on a reset or a lost connection: until the next poll, `watch_peer` has nothing to add.
    handler_waits_on_recv: bool,
    /// The handler ends the call itself on shutdown (see `drain_on_shutdown`).
    drains_on_shutdown: bool,
    /// Set when the server drops the call's connection itself (see [`CloseCause`]).
    dropped: Arc<AtomicBool>,
}

impl Call {
    /// A call over an accepted h2 stream.
    pub(in crate::grpc) fn new(
        info: CallInfo,
        body: RecvStream,
        respond: SendResponse<Chunk>,
        permit: Option<OwnedSemaphorePermit>,
        dropped: Arc<AtomicBool>,
    ) -> Call {
        let mut state = CallState::Open;
        let recv_done = body.is_end_stream();
        if recv_done {
            state.recv_end_stream(info.stream_id);
        }
        let decoder = Decoder::new(info.max_message_bytes);
        Call {
            info,
            permit,
            inner: Mutex::new(Inner {
                dropped,
                state,
                body,
                decoder,
                unreleased: 0,
                recv_done,
                respond,
                stream: None,
                headers: Metadata::new(),
                trailers: Metadata::new(),
                response_encoding: None,
                pending: Bytes::new(),
                last_compressed: false,
                tracker: None,
                handler_waits_on_recv: false,
                drains_on_shutdown: false,
            }),
        }
    }

    /// Tells the server that this handler watches the shutdown signal itself and ends the call
    /// when it has said what it must: on shutdown the server then keeps running it (a client that
    /// goes away or a deadline still stop it) instead of ending the call with UNAVAILABLE. The
    /// server's shutdown grace still bounds it; the handler must end well within it.
    pub fn drain_on_shutdown(&self) {
        self.lock().drains_on_shutdown = true;
    }

    /// Whether the handler asked to drain on shutdown itself.
    pub(in crate::grpc) fn drains_on_shutdown(&self) -> bool {
        self.lock().drains_on_shutdown
    }

    /// Whether the call got a place among the connection's running handlers.
    pub(in crate::grpc) fn has_permit(&self) -> bool {
        self.permit.is_some()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Only this call's task touches the lock, and never across an await; a poisoned lock can
        // only come from a panic in this module, after which the data is still consistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Facts about the call.
    pub fn info(&self) -> &CallInfo {
        &self.info
    }

    /// Request metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.info.metadata
    }

    /// The current stream state.
    pub fn state(&self) -> CallState {
        self.lock().state
    }

    /// Changes the response headers before they are sent (ignored once they are).
    pub fn with_headers<R>(&self, f: impl FnOnce(&mut Metadata) -> R) -> R {
        f(&mut self.lock().headers)
    }

    /// Changes the trailing metadata sent with the final status.
    pub fn with_trailers<R>(&self, f: impl FnOnce(&mut Metadata) -> R) -> R {
        f(&mut self.lock().trailers)
    }

    /// Compresses response messages with `encoding` if the client lists it in
    /// `grpc-accept-encoding` (else sends them uncompressed, as the spec requires). Ignored once
    /// the headers are sent: `grpc-encoding` travels in them.
    pub fn compress_responses(&self, encoding: Encoding) {
        let accepted =
            encoding != Encoding::Identity && self.info.accepted_encodings.contains(encoding);
        let mut inner = self.lock();
        if inner.stream.is_none() {
            inner.response_encoding = accepted.then_some(encoding);
        }
    }

    /// Whether response messages are being compressed.
    pub fn response_encoding(&self) -> Option<Encoding> {
        self.lock().response_encoding
    }

    /// The next request message's payload (decompressed); `Ok(None)` once the client half-closed.
    ///
    /// Errors: INTERNAL for broken framing or a compressed message with no `grpc-encoding`,
    /// RESOURCE_EXHAUSTED for a message over the limit, CANCELLED if the client reset the stream.
    pub async fn recv_raw(&self) -> Result<Option<Bytes>, Status> {
        let frame = poll_fn(|cx| self.lock().poll_recv_frame(cx, self.info.stream_id)).await?;
        let Some(frame) = frame else { return Ok(None) };
        stats::messages_received(&self.info.path, 1);
        self.lock().last_compressed = frame.compressed;
        if !frame.compressed {
            return Ok(Some(frame.payload));
        }
        if self.info.request_encoding == Encoding::Identity {
            return Err(Status::internal(
                "compressed flag set on a message but no grpc-encoding was given",
            ));
        }
        self.info
            .request_encoding
            .decompress(frame.payload, self.info.max_message_bytes)
            .map(Some)
    }

    /// Whether the last request message returned by [`recv_raw`](Call::recv_raw),
    /// [`recv`](Call::recv) or [`recv_one`](Call::recv_one) arrived with the compressed flag set
    /// (compression is per message: a stream with a `grpc-encoding` may mix both).
    pub fn last_request_compressed(&self) -> bool {
        self.lock().last_compressed
    }

    /// The next request message, decoded as `M`. A payload that is not an `M` is INTERNAL.
    pub async fn recv<M: prost::Message + Default>(&self) -> Result<Option<M>, Status> {
        match self.recv_raw().await? {
            None => Ok(None),
            Some(payload) => M::decode(payload)
                .map(Some)
                .map_err(|e| Status::internal(format!("request message does not decode: {e}"))),
        }
    }

    /// Exactly one request message, for unary and server-streaming methods: zero or two messages
    /// are UNIMPLEMENTED, as grpc-go answers.
    pub async fn recv_one<M: prost::Message + Default>(&self) -> Result<M, Status> {
        let Some(msg) = self.recv::<M>().await? else {
            return Err(Status::unimplemented(
                "expected one request message, got none",
            ));
        };
        if self.recv_raw().await?.is_some() {
            return Err(Status::unimplemented(
                "expected one request message, got more",
            ));
        }
        Ok(msg)
    }

    /// Sends the response headers now, if not yet sent (they otherwise go with the first message).
    pub fn send_headers(&self) -> Result<(), Status> {
        self.lock().ensure_headers(&self.info)
    }

    /// Sends one response message; returns once h2 has taken all of it within flow control.
    /// Compressed when the call compresses responses (see [`compress_responses`](Call::compress_responses)).
    pub async fn send<M: prost::Message>(&self, msg: &M) -> Result<(), Status> {
        self.send_with(msg, true).await
    }

    /// Sends one response message, compressed only if `compress` and the call compresses
    /// responses: the compressed flag is per message, so a compressing call may still send
    /// some uncompressed.
    pub async fn send_with<M: prost::Message>(
        &self,
        msg: &M,
        compress: bool,
    ) -> Result<(), Status> {
        let frame = match self.response_encoding().filter(|_| compress) {
            None => codec::encode_message(msg),
            Some(enc) => {
                let compressed = enc.compress(&msg.encode_to_vec())?;
                let mut buf = bytes::BytesMut::new();
                codec::encode_frame(true, &compressed, &mut buf);
                buf.freeze()
            }
        };
        self.send_frames(frame).await
    }

    /// Sends bytes that are already whole gRPC frames (one or many, prefix included), e.g. a
    /// message encoded once and shared by many calls. Returns once h2 has taken all of them.
    pub async fn send_frames(&self, frames: Bytes) -> Result<(), Status> {
        self.queue_frames(frames)?;
        self.flush().await
    }

    /// Hands whole frames to the call without waiting; [`flush`](Call::flush) sends them. Unlike
    /// a dropped `send_frames` future, queued frames are never lost: use this where the wait for
    /// the client may be abandoned (e.g. in a `select!`).
    pub fn queue_frames(&self, frames: Bytes) -> Result<(), Status> {
        stats::messages_sent(&self.info.path, &frames);
        let mut inner = self.lock();
        inner.ensure_headers(&self.info)?;
        if inner.pending.is_empty() {
            inner.pending = frames;
        } else {
            let mut joined = bytes::BytesMut::with_capacity(inner.pending.len() + frames.len());
            joined.extend_from_slice(&inner.pending);
            joined.extend_from_slice(&frames);
            inner.pending = joined.freeze();
        }
        Ok(())
    }

    /// Whether queued bytes are waiting for flow-control capacity.
    pub fn has_queued(&self) -> bool {
        !self.lock().pending.is_empty()
    }

    /// From now on, counts the response bytes h2 has taken but not yet written out, for
    /// [`written`](Call::written). A call that streams small events uses it to hold new events
    /// back while its last frame waits in h2's queue, and then send them together.
    pub fn track_writes(&self) {
        self.lock().tracker.get_or_insert_with(Tracker::default);
    }

    /// Resolves once h2 has written (or, on a reset, dropped) every response byte it took since
    /// [`track_writes`](Call::track_writes); at once if writes are not tracked. Cancel-safe.
    pub async fn written(&self) {
        let Some(tracker) = self.lock().tracker.clone() else {
            return;
        };
        poll_fn(|cx| tracker.poll_written(cx)).await
    }

    /// Whether nothing of the response is on its way: no queued bytes, and h2 has written every
    /// byte it took since [`track_writes`](Call::track_writes) (writes not tracked count as
    /// written). One lock, for a streaming call's loop to ask on every wake-up.
    pub fn is_send_idle(&self) -> bool {
        let inner = self.lock();
        inner.pending.is_empty() && inner.tracker.as_ref().is_none_or(Tracker::is_written)
    }

    /// Waits until h2 has taken every queued byte (within the capacity the client grants).
    /// Cancel-safe: what is not sent stays queued.
    pub async fn flush(&self) -> Result<(), Status> {
        let id = self.info.stream_id;
        poll_fn(|cx| self.lock().poll_flush(cx, id)).await
    }

    /// What the server polls beside the handler, under one lock: keeps taking received bytes out
    /// of h2 while the handler does something else (see `Inner::poll_drain`), and resolves when
    /// the client resets the stream or the connection is lost.
    ///
    /// Polled right after the handler, in the same task: when the handler has just registered
    /// that task with h2 for request data, there is nothing to drain and h2 will wake the task on
    /// a reset or a lost connection anyway, so this skips both (two h2 locks and two waker
    /// registrations on every wake-up of a streaming call).
    pub(in crate::grpc) async fn watch_peer(&self) -> CloseCause {
        let id = self.info.stream_id;
        poll_fn(|cx| {
            let mut inner = self.lock();
            if std::mem::take(&mut inner.handler_waits_on_recv) {
                return Poll::Pending;
            }
            let _ = inner.poll_drain(cx, id);
            inner.poll_gone(cx, id)
        })
        .await
    }

    /// Resolves when the client resets the stream or the connection is lost. Use it beside any
    /// wait that does not involve the call, so that a cancel is noticed while idle.
    pub async fn cancelled(&self) -> CloseCause {
        poll_fn(|cx| self.lock().poll_gone(cx, self.info.stream_id)).await
    }

    /// Ends the call: trailers with the status (or a Trailers-Only response when nothing was sent
    /// yet). Does nothing if the stream is already closed.
    pub(in crate::grpc) fn finish(&self, result: Result<(), Status>) {
        let status = result.err().unwrap_or_else(Status::ok);
        self.lock().finish(&self.info, &status);
    }
}

impl Inner {
    fn poll_recv_frame(
        &mut self,
        cx: &mut Context<'_>,
        stream_id: u32,
    ) -> Poll<Result<Option<codec::Frame>, Status>> {
        loop {
            match self.decoder.next_frame() {
                Ok(Some(frame)) => {
                    // The message is consumed: its bytes may now be sent again by the client.
                    self.release(codec::PREFIX_BYTES + frame.payload.len());
                    return Poll::Ready(Ok(Some(frame)));
                }
                Ok(None) => {}
                Err(e) => {
                    debug!(stream_id, error = %e, "bad request framing");
                    return Poll::Ready(Err(e.to_status()));
                }
            }
            // The handler waits for a message that is not whole yet: what is buffered is part of
            // it, so let the client send the rest (a message may be larger than the window).
            self.release(self.unreleased);
            if self.recv_done {
                return Poll::Ready(match self.decoder.finish() {
                    Ok(()) => Ok(None),
                    Err(e) => {
                        debug!(stream_id, error = %e, "bad request framing");
                        Err(e.to_status())
                    }
                });
            }
            match self.poll_pull(cx, stream_id) {
                Poll::Pending => {
                    self.handler_waits_on_recv = true;
                    return Poll::Pending;
                }
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(status)) => return Poll::Ready(Err(status)),
            }
        }
    }

    /// Moves one received chunk from h2 into the decoder, without releasing its flow-control
    /// capacity (that happens as messages are consumed). `Ready(Ok)` when a chunk or the end of
    /// the stream arrived.
    fn poll_pull(&mut self, cx: &mut Context<'_>, stream_id: u32) -> Poll<Result<(), Status>> {
        match self.body.poll_data(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(chunk))) => {
                self.decoder.push(&chunk);
                self.unreleased += chunk.len();
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Some(Err(e))) => {
                self.recv_done = true;
                self.state
                    .recv_reset(stream_id, Some(&e), self.dropped.load(Ordering::Relaxed));
                Poll::Ready(Err(Status::cancelled(format!("request stream: {e}"))))
            }
            Poll::Ready(None) => {
                self.recv_done = true;
                self.state.recv_end_stream(stream_id);
                Poll::Ready(Ok(()))
            }
        }
    }

    /// Takes whatever h2 has received into the decoder's one contiguous buffer, while the handler
    /// is busy elsewhere. h2 keeps a record per received DATA frame, and closes the connection
    /// (ENHANCE_YOUR_CALM) when too many small ones wait unread; moving them here costs only
    /// their bytes, which the client's flow-control window bounds since nothing is released
    /// until it is consumed. Never completes.
    fn poll_drain(&mut self, cx: &mut Context<'_>, stream_id: u32) -> Poll<()> {
        while !self.recv_done && !self.decoder.is_failed() {
            if self.poll_pull(cx, stream_id).is_pending() {
                break;
            }
        }
        Poll::Pending
    }

    fn release(&mut self, bytes: usize) {
        let n = bytes.min(self.unreleased);
        if n > 0 {
            self.unreleased -= n;
            let _ = self.body.flow_control().release_capacity(n);
        }
    }

    fn ensure_headers(&mut self, info: &CallInfo) -> Result<(), Status> {
        if self.stream.is_some() {
            return Ok(());
        }
        if self.state.is_closed() {
            return Err(Status::cancelled("call is closed"));
        }
        let mut headers = grpc_response_headers(self.response_encoding);
        self.headers.move_to(&mut headers);
        let mut response = Response::new(());
        *response.headers_mut() = headers;
        match self.respond.send_response(response, false) {
            Ok(stream) => {
                self.stream = Some(stream);
                Ok(())
            }
            Err(e) => {
                self.state.recv_reset(
                    info.stream_id,
                    Some(&e),
                    self.dropped.load(Ordering::Relaxed),
                );
                Err(Status::cancelled(format!("sending headers: {e}")))
            }
        }
    }

    /// Hands `pending` to h2 in pieces no larger than the granted capacity.
    fn poll_flush(&mut self, cx: &mut Context<'_>, stream_id: u32) -> Poll<Result<(), Status>> {
        let Some(stream) = self.stream.as_mut() else {
            return Poll::Ready(Err(Status::cancelled("call is closed")));
        };
        while !self.pending.is_empty() {
            stream.reserve_capacity(self.pending.len());
            let granted = stream.capacity();
            if granted == 0 {
                match stream.poll_capacity(cx) {
                    Poll::Ready(Some(Ok(_))) => continue,
                    Poll::Ready(Some(Err(e))) => {
                        self.state.recv_reset(
                            stream_id,
                            Some(&e),
                            self.dropped.load(Ordering::Relaxed),
                        );
                        return Poll::Ready(Err(Status::cancelled(format!("response: {e}"))));
                    }
                    Poll::Ready(None) => {
                        self.state.recv_reset(
                            stream_id,
                            None,
                            self.dropped.load(Ordering::Relaxed),
                        );
                        return Poll::Ready(Err(Status::cancelled("response stream closed")));
                    }
                    Poll::Pending => {
                        // Waiting for the client to read: notice if it resets meanwhile.
                        if let Poll::Ready(r) = stream.poll_reset(cx) {
                            self.state.recv_reset(
                                stream_id,
                                r.as_ref().err(),
                                self.dropped.load(Ordering::Relaxed),
                            );
                            return Poll::Ready(Err(Status::cancelled("client reset the stream")));
                        }
                        return Poll::Pending;
                    }
                }
            }
            let piece = self.pending.split_to(granted.min(self.pending.len()));
            let piece = match &self.tracker {
                Some(tracker) => Chunk::tracked(piece, tracker),
                None => Chunk::from(piece),
            };
            if let Err(e) = stream.send_data(piece, false) {
                self.state
                    .recv_reset(stream_id, Some(&e), self.dropped.load(Ordering::Relaxed));
                return Poll::Ready(Err(Status::cancelled(format!("response: {e}"))));
            }
        }
        Poll::Ready(Ok(()))
    }

    fn poll_gone(&mut self, cx: &mut Context<'_>, stream_id: u32) -> Poll<CloseCause> {
        if let CallState::Closed(cause) = self.state {
            return Poll::Ready(cause);
        }
        let polled = match self.stream.as_mut() {
            Some(stream) => stream.poll_reset(cx),
            None => self.respond.poll_reset(cx),
        };
        match polled {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(reason)) => {
                self.state.close(stream_id, CloseCause::Reset(reason));
                Poll::Ready(CloseCause::Reset(reason))
            }
            Poll::Ready(Err(e)) => {
                self.state
                    .recv_reset(stream_id, Some(&e), self.dropped.load(Ordering::Relaxed));
                Poll::Ready(match self.state {
                    CallState::Closed(cause) => cause,
                    _ => CloseCause::ConnectionLost,
                })
            }
        }
    }

    fn finish(&mut self, info: &CallInfo, status: &Status) {
        if self.state.is_closed() {
            return;
        }
        let mut trailers = HeaderMap::new();
        status.add_to(&mut trailers);
        self.trailers.move_to(&mut trailers);
        let sent = match self.stream.as_mut() {
            Some(stream) => {
                // A frame cut short by a stopped handler is completed (at most one frame), so
                // the client never sees a truncated message before the status.
                let rest = std::mem::take(&mut self.pending);
                let data_ok = rest.is_empty() || stream.send_data(rest.into(), false).is_ok();
                data_ok && stream.send_trailers(trailers).is_ok()
            }
            None => {
                // Trailers-Only: one HEADERS frame carrying the status, then END_STREAM.
                let mut headers = grpc_response_headers(None);
                self.headers.move_to(&mut headers);
                headers.extend(trailers);
                let mut response = Response::new(());
                *response.headers_mut() = headers;
                self.respond.send_response(response, true).is_ok()
            }
        };
        if sent {
            self.state.send_trailers(info.stream_id);
        } else {
            self.state
                .recv_reset(info.stream_id, None, self.dropped.load(Ordering::Relaxed));
        }
        debug!(stream_id = info.stream_id, code = %status.code(), "call finished");
    }
}

/// The headers every gRPC response starts with.
pub(in crate::grpc) fn grpc_response_headers(encoding: Option<Encoding>) -> HeaderMap {
    let mut h = HeaderMap::with_capacity(4);
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert(
        GRPC_ACCEPT_ENCODING,
        HeaderValue::from_static(ACCEPT_ENCODING),
    );
    if let Some(enc) = encoding {
        h.insert(GRPC_ENCODING, HeaderValue::from_static(enc.name()));
    }
    h
}
