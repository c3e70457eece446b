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
//!
//! Send budget: every response byte, from its encoding until h2 has written it, holds a
//! [`Lease`] on the connection's [`ConnectionBudget`] (see `budget`). A send waits for that room
//! *before* it encodes; a message larger than the whole per-connection budget is
//! RESOURCE_EXHAUSTED. A response that waits for the client's window longer than the server's
//! send timeout has its stream reset (`Call::send_stalled`), which gives its bytes back.

use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{RecvStream, SendStream};
use http::{HeaderMap, HeaderValue, Response};
use tokio::task::JoinHandle;
use tracing::debug;

use crate::grpc::codec::{self, Decoder};
use crate::grpc::compression::{Encoding, Encodings, ACCEPT_ENCODING};
use crate::grpc::headers::{GRPC_ACCEPT_ENCODING, GRPC_ENCODING};
use crate::grpc::metadata::Metadata;
use crate::grpc::server::auth::Principal;
use crate::grpc::server::budget::{ConnectionBudget, Lease};
use crate::grpc::server::lifetime::CallSlot;
use crate::grpc::server::stats;
use crate::grpc::server::written::{Chunk, Tracker};
use crate::grpc::server::ConnInfo;
use crate::grpc::status::Status;
use crate::grpc::web::{self, TextDecoder};

mod send;
mod state;

pub use send::SendReservation;

pub use state::{CallState, CloseCause};

/// Facts about a call fixed when its headers arrive.
#[derive(Debug)]
pub struct CallInfo {
    /// The `:path`, `/package.Service/Method`.
    pub path: String,
    /// The HTTP/2 stream id.
    pub stream_id: u32,
    /// The connection the call came on, shared by its calls (see [`connection_id`],
    /// [`peer`], [`peer_identity`]): one pointer per call instead of 56 bytes, in a value that
    /// lives as long as the call (a chat member's, for hours).
    ///
    /// [`connection_id`]: CallInfo::connection_id
    /// [`peer`]: CallInfo::peer
    /// [`peer_identity`]: CallInfo::peer_identity
    pub(in crate::grpc) conn: Arc<ConnInfo>,
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
    /// How long a response may wait for the client's window, or a send for room in the send
    /// budget, before the call ends; `None` = forever.
    pub send_timeout: Option<Duration>,
    /// Set when the call is gRPC-Web: the trailers then travel in the body.
    pub web: Option<Box<WebCall>>,
}

impl CallInfo {
    /// Identifies the connection the call came on (unique for the server's lifetime).
    pub fn connection_id(&self) -> u64 {
        self.conn.id
    }

    /// The client's address.
    pub fn peer(&self) -> SocketAddr {
        self.conn.peer
    }

    /// The identity of the client's verified TLS certificate (SAN URI, else DNS, else CN), if the
    /// connection is TLS and the client presented one.
    pub fn peer_identity(&self) -> Option<&str> {
        self.conn.identity.as_deref()
    }
}

/// How a gRPC-Web call differs on the wire (see [`crate::grpc::web`]). The handler sees the same
/// call either way; only the framing of the response changes.
#[derive(Debug)]
pub struct WebCall {
    /// `-text`: both bodies are base64.
    pub text: bool,
    /// The request's `content-type`, which the response repeats.
    pub content_type: HeaderValue,
    /// HTTP headers added to the response (CORS for an allowed origin).
    pub response_headers: HeaderMap,
}

/// A server-side call. See the module documentation.
pub struct Call {
    info: CallInfo,
    inner: Mutex<Inner>,
    /// The call's place among the connection's running handlers; released with the call.
    permit: Option<CallSlot>,
    /// What the connection may hold of responses not yet written (see the module doc).
    budget: Arc<ConnectionBudget>,
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
    /// The send budget `pending` holds (as many bytes as it has; `None` when empty).
    pending_lease: Option<Lease>,
    /// Since when `pending` has waited for the client to grant window, if it waits.
    stalled_since: Option<Instant>,
    /// The compressed flag of the last request message handed to the handler.
    last_compressed: bool,
    /// Counts the response chunks h2 has not written yet, once the handler asks (`track_writes`).
    tracker: Option<Tracker>,
    /// The handler's last poll left its task waiting on h2 for request data, which h2 also wakes
    /// on a reset or a lost connection: until the next poll, `watch_peer` has nothing to add.
    handler_waits_on_recv: bool,
    /// Decodes a gRPC-Web `-text` request body before the message decoder sees it.
    text: Option<TextDecoder>,
    /// The handler ends the call itself on shutdown (see `drain_on_shutdown`).
    drains_on_shutdown: bool,
    /// Set when the server drops the call's connection itself (see [`CloseCause`]).
    dropped: Arc<AtomicBool>,
    /// A request message being inflated off the worker (see [`inflate`]); kept here, not in the
    /// `recv_raw` future, so that a handler dropping that future (a `select!`) loses nothing.
    inflating: Option<JoinHandle<Result<Bytes, Status>>>,
}

impl Call {
    /// A call over an accepted h2 stream.
    pub(in crate::grpc) fn new(
        info: CallInfo,
        body: RecvStream,
        respond: SendResponse<Chunk>,
        permit: Option<CallSlot>,
        budget: Arc<ConnectionBudget>,
        dropped: Arc<AtomicBool>,
    ) -> Call {
        let mut state = CallState::Open;
        let recv_done = body.is_end_stream();
        if recv_done {
            state.recv_end_stream(info.stream_id);
        }
        let decoder = Decoder::new(info.max_message_bytes);
        let text = info
            .web
            .as_ref()
            .filter(|w| w.text)
            .map(|_| TextDecoder::default());
        Call {
            info,
            permit,
            budget,
            inner: Mutex::new(Inner {
                dropped,
                inflating: None,
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
                pending_lease: None,
                stalled_since: None,
                last_compressed: false,
                tracker: None,
                handler_waits_on_recv: false,
                text,
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
    ///
    /// One `poll_fn` over `poll_recv_raw`, not a chain of awaits: a chat
    /// member's task holds this future for as long as it waits for a post, so its size is
    /// per-member memory (24 bytes, where awaiting the frame and then the inflation took 128).
    pub async fn recv_raw(&self) -> Result<Option<Bytes>, Status> {
        poll_fn(|cx| self.poll_recv_raw(cx)).await
    }

    /// Polls for the next request message (see [`recv_raw`](Call::recv_raw)). A message inflated
    /// off the worker ([`inflate`]) is kept in the call, not in the future: a handler dropping
    /// the future (a `select!`) loses nothing, and the next poll takes it.
    fn poll_recv_raw(&self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, Status>> {
        loop {
            let mut inner = self.lock();
            if let Some(handle) = inner.inflating.as_mut() {
                let done = std::task::ready!(std::pin::Pin::new(handle).poll(cx));
                inner.inflating = None;
                return Poll::Ready(
                    done.unwrap_or_else(|_| Err(Status::internal("decompression failed")))
                        .map(Some),
                );
            }
            let frame = std::task::ready!(inner.poll_recv_frame(cx, self.info.stream_id))?;
            let Some(frame) = frame else {
                return Poll::Ready(Ok(None));
            };
            stats::messages_received(&self.info.path, 1);
            inner.last_compressed = frame.compressed;
            if !frame.compressed {
                return Poll::Ready(Ok(Some(frame.payload)));
            }
            if self.info.request_encoding == Encoding::Identity {
                return Poll::Ready(Err(Status::internal(
                    "compressed flag set on a message but no grpc-encoding was given",
                )));
            }
            let (encoding, max) = (self.info.request_encoding, self.info.max_message_bytes);
            if frame.payload.len() < INFLATE_OFF_WORKER_BYTES {
                drop(inner);
                return Poll::Ready(encoding.decompress(frame.payload, max).map(Some));
            }
            // Polled at the top of the next round, which registers the waker.
            inner.inflating = Some(inflate(encoding, frame.payload, max));
        }
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
                self.unreleased += chunk.len();
                match self.text.as_mut() {
                    None => self.decoder.push(&chunk),
                    Some(text) => {
                        let mut decoded = bytes::BytesMut::with_capacity(chunk.len() / 4 * 3 + 3);
                        if let Err(e) = text.push(&chunk, &mut decoded) {
                            debug!(stream_id, error = %e, "bad request body");
                            return Poll::Ready(Err(Status::internal(e.to_string())));
                        }
                        self.decoder.push(&decoded);
                    }
                }
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
                match self.text.as_ref().map(TextDecoder::finish) {
                    Some(Err(e)) => {
                        debug!(stream_id, error = %e, "bad request body");
                        Poll::Ready(Err(Status::internal(e.to_string())))
                    }
                    _ => Poll::Ready(Ok(())),
                }
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
        add_web_headers(info, &mut headers);
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
                let lease = self.pending_lease.take();
                match &info.web {
                    None => {
                        let data_ok = rest.is_empty()
                            || stream
                                .send_data(Chunk::new(rest, None, lease), false)
                                .is_ok();
                        data_ok && stream.send_trailers(trailers).is_ok()
                    }
                    // gRPC-Web: the trailers are the body's last frame, and END_STREAM goes on
                    // that DATA frame (at most one frame past flow control, as above).
                    Some(w) => {
                        let frame = web::encode_trailers(&trailers);
                        let frame = if w.text {
                            web::encode_text(&frame)
                        } else {
                            frame
                        };
                        let mut last = bytes::BytesMut::with_capacity(rest.len() + frame.len());
                        last.extend_from_slice(&rest);
                        last.extend_from_slice(&frame);
                        stream
                            .send_data(Chunk::new(last.freeze(), None, lease), true)
                            .is_ok()
                    }
                }
            }
            None => {
                // Trailers-Only: one HEADERS frame carrying the status, then END_STREAM (also
                // for gRPC-Web, which allows the status in the headers).
                let mut headers = grpc_response_headers(None);
                add_web_headers(info, &mut headers);
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

/// For a gRPC-Web call: the request's content type instead of `application/grpc`, and the
/// extra HTTP headers (CORS).
fn add_web_headers(info: &CallInfo, headers: &mut HeaderMap) {
    if let Some(w) = &info.web {
        headers.insert(http::header::CONTENT_TYPE, w.content_type.clone());
        for (name, value) in &w.response_headers {
            headers.append(name, value.clone());
        }
    }
}

/// The headers every gRPC response starts with.
pub(in crate::grpc) fn grpc_response_headers(encoding: Option<Encoding>) -> HeaderMap {
    let mut h = HeaderMap::with_capacity(3);
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

/// Compressed messages at least this long are inflated on tokio's blocking pool rather than on the
/// worker that polls the connection: one such message may inflate to `max_message_bytes` (deflate
/// reaches about 1,000:1), and a worker busy inflating is a worker that accepts, handshakes and
/// serves nobody else. Shorter ones inflate to at most about a megabyte and stay inline.
pub const INFLATE_OFF_WORKER_BYTES: usize = 1 << 10;

/// Inflates one request message on the blocking pool, at most
/// [`std::thread::available_parallelism`] at a time, so that inflating never holds more output
/// buffers than there are cores (each bounded by `max`). The permit is held until the inflation
/// ends, even when the call is gone before.
fn inflate(encoding: Encoding, payload: Bytes, max: usize) -> JoinHandle<Result<Bytes, Status>> {
    tokio::spawn(async move {
        let _permit = inflating()
            .acquire()
            .await
            .map_err(|_| Status::internal("decompression stopped"))?;
        tokio::task::spawn_blocking(move || encoding.decompress(payload, max))
            .await
            .unwrap_or_else(|_| Err(Status::internal("decompression failed")))
    })
}

/// The permits for [`inflate`]: one per core.
fn inflating() -> &'static tokio::sync::Semaphore {
    static PERMITS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    PERMITS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        tokio::sync::Semaphore::new(cores)
    })
}
