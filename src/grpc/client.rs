//! The gRPC client: one HTTP/2 connection ([`Channel`]) and the calls made on it ([`ClientCall`]).
//!
//! A call is one h2 stream. Its two directions can be driven together through [`ClientCall`] or
//! apart, from two tasks, after [`ClientCall::split`]:
//!
//! - sending ([`CallSender`]): a message is handed to h2 only in pieces no larger than the
//!   capacity h2 granted (hyper's `PipeToSendStream` discipline), so a server that stops reading
//!   stops the client after one window, and the call holds at most one unsent message.
//! - receiving ([`CallReceiver`]): bytes move from h2 into the bounded message decoder only when it
//!   has no complete message left, and are released to the server's window as they move. The
//!   length prefix is checked against the receive limit before anything is allocated for the body.
//!
//! How a call ends, from the client's side:
//! - the server's trailers carry `grpc-status` (OK → `recv` returns `Ok(None)`, else `Err`);
//! - the deadline from [`CallOptions::timeout`] passes: DEADLINE_EXCEEDED, and the stream is reset
//!   with CANCEL (the server was also told the deadline in `grpc-timeout`);
//! - the client cancels ([`ClientCall::cancel`], or drops the call — or both halves — before it
//!   ended): h2 resets the stream with CANCEL when the last handle of the stream is dropped;
//! - the response is not gRPC, or breaks the protocol: a status chosen as grpc-go chooses it
//!   (HTTP status mapped per grpc/grpc `doc/http-grpc-status-mapping.md`, missing `grpc-status` →
//!   UNKNOWN, stream ended without trailers → INTERNAL, RST_STREAM codes mapped as grpc-go's
//!   `http2ErrConvTab`).

use std::fmt;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use h2::client::{ResponseFuture, SendRequest};
use h2::{Reason, RecvStream, SendStream};
use http::header::{CONTENT_TYPE, TE, USER_AGENT};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, ToSocketAddrs};
use tokio::time::{Instant, Sleep};
use tracing::{debug, debug_span, Instrument};

use super::codec::{self, Decoder, Frame, DEFAULT_MAX_MESSAGE_BYTES};
use super::compression::{Encoding, ACCEPT_ENCODING};
use super::metadata::Metadata;
use super::status::{Code, Status};
use super::timeout;

/// Default HTTP/2 receive window of each call: 1 MiB, so a fast server is not held to 64 KiB per
/// round trip. Memory stays bounded: bytes are only taken from h2 while the decoder needs them.
pub const DEFAULT_STREAM_WINDOW_BYTES: u32 = 1 << 20;
/// Default HTTP/2 receive window of the whole connection: 4 MiB.
pub const DEFAULT_CONNECTION_WINDOW_BYTES: u32 = 4 << 20;
/// Default largest response header list the client accepts: 16 KiB.
pub const DEFAULT_MAX_HEADER_LIST_BYTES: u32 = 16 << 10;

/// Smallest DATA frame a gRPC server sends when it frames each message on its own: an empty
/// message's prefix.
const MIN_MESSAGE_FRAME_BYTES: usize = codec::PREFIX_BYTES;
/// h2 charges every received DATA frame shorter than this many bytes against the connection's
/// DATA frame budget until the application reads it (h2's `DEFAULT_DATA_FRAME_OVERHEAD_THRESHOLD`).
const H2_SMALL_FRAME_BYTES: usize = 256;

/// The `user-agent` every call sends.
const USER_AGENT_VALUE: &str = concat!("h2chat-grpc/", env!("CARGO_PKG_VERSION"));
/// The authority sent when the transport has no address (e.g. [`Channel::connect_io`]).
const DEFAULT_AUTHORITY: &str = "localhost";

/// Why a connection could not be made or used.
#[derive(Debug)]
pub enum ClientError {
    /// The TCP connection failed.
    Connect(std::io::Error),
    /// A socket operation other than connecting failed.
    Io(std::io::Error),
    /// HTTP/2 failed: handshake, connection lost, or a request h2 refused.
    H2(h2::Error),
    /// A request's URI could not be completed with the channel's scheme and authority.
    InvalidUri(http::uri::InvalidUriParts),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Connect(e) => write!(f, "connecting: {e}"),
            ClientError::Io(e) => write!(f, "socket: {e}"),
            ClientError::H2(e) => write!(f, "http/2: {e}"),
            ClientError::InvalidUri(e) => write!(f, "invalid request URI: {e}"),
        }
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClientError::Connect(e) | ClientError::Io(e) => Some(e),
            ClientError::H2(e) => Some(e),
            ClientError::InvalidUri(e) => Some(e),
        }
    }
}

impl From<ClientError> for Status {
    /// UNAVAILABLE: the connection is not there to carry the call.
    fn from(e: ClientError) -> Status {
        Status::unavailable(e.to_string())
    }
}

/// Settings of one connection. Every field has a `DEFAULT_*` constant.
#[derive(Clone, Debug)]
pub struct ChannelConfig {
    /// Largest response message, before and after decompression, unless a call sets its own
    /// ([`CallOptions::max_recv_message_bytes`]).
    pub max_recv_message_bytes: usize,
    /// HTTP/2 initial receive window of each call. It also sizes h2's budget for unread small
    /// DATA frames: one window of the smallest message frames fits in it.
    pub stream_window_bytes: u32,
    /// HTTP/2 receive window of the connection.
    pub connection_window_bytes: u32,
    /// HTTP/2 `SETTINGS_MAX_HEADER_LIST_SIZE` for responses.
    pub max_header_list_bytes: u32,
}

impl Default for ChannelConfig {
    fn default() -> Self {
        ChannelConfig {
            max_recv_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            stream_window_bytes: DEFAULT_STREAM_WINDOW_BYTES,
            connection_window_bytes: DEFAULT_CONNECTION_WINDOW_BYTES,
            max_header_list_bytes: DEFAULT_MAX_HEADER_LIST_BYTES,
        }
    }
}

/// Per-call settings.
#[derive(Clone, Debug, Default)]
pub struct CallOptions {
    /// The call's deadline, from when it starts: sent as `grpc-timeout`, and enforced locally
    /// (DEADLINE_EXCEEDED, stream reset with CANCEL) while any operation of the call is awaited.
    pub timeout: Option<Duration>,
    /// Custom request metadata (see [`Metadata`]).
    pub metadata: Metadata,
    /// Compresses request messages with this encoding (sent as `grpc-encoding`).
    pub encoding: Option<Encoding>,
    /// Sends `grpc-accept-encoding`, allowing the server to compress responses.
    pub accept_compressed: bool,
    /// Largest response message for this call; `None` uses the channel's
    /// [`ChannelConfig::max_recv_message_bytes`].
    pub max_recv_message_bytes: Option<usize>,
}

/// One HTTP/2 connection to a server. Cheap to clone: clones share the connection, and calls from
/// any clone are multiplexed on it. The connection is driven by a spawned task, which ends when
/// every clone and every call is dropped (or the connection fails).
#[derive(Clone)]
pub struct Channel {
    send: SendRequest<Bytes>,
    authority: Authority,
    config: Arc<ChannelConfig>,
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("authority", &self.authority)
            .finish_non_exhaustive()
    }
}

impl Channel {
    /// Connects over TCP (with `TCP_NODELAY`) and completes the HTTP/2 handshake, with default
    /// settings.
    pub async fn connect(addr: impl ToSocketAddrs) -> Result<Channel, ClientError> {
        Channel::connect_with(addr, ChannelConfig::default()).await
    }

    /// [`connect`](Channel::connect) with explicit settings.
    pub async fn connect_with(
        addr: impl ToSocketAddrs,
        config: ChannelConfig,
    ) -> Result<Channel, ClientError> {
        let socket = TcpStream::connect(addr)
            .await
            .map_err(ClientError::Connect)?;
        socket.set_nodelay(true).map_err(ClientError::Io)?;
        let peer = socket.peer_addr().map_err(ClientError::Io)?;
        // A socket address always makes a valid authority; the fallback is unreachable in practice.
        let authority = Authority::try_from(peer.to_string())
            .unwrap_or_else(|_| Authority::from_static(DEFAULT_AUTHORITY));
        Channel::handshake(socket, authority, config).await
    }

    /// Speaks HTTP/2 over any transport (e.g. `tokio::io::duplex`), with default settings. The
    /// `:authority` of requests is `localhost`.
    pub async fn connect_io<T>(io: T) -> Result<Channel, ClientError>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        Channel::connect_io_with(io, ChannelConfig::default()).await
    }

    /// [`connect_io`](Channel::connect_io) with explicit settings.
    pub async fn connect_io_with<T>(io: T, config: ChannelConfig) -> Result<Channel, ClientError>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let authority = Authority::from_static(DEFAULT_AUTHORITY);
        Channel::handshake(io, authority, config).await
    }

    async fn handshake<T>(
        io: T,
        authority: Authority,
        config: ChannelConfig,
    ) -> Result<Channel, ClientError>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let mut builder = h2::client::Builder::new();
        builder
            .enable_push(false)
            .initial_window_size(config.stream_window_bytes)
            .initial_connection_window_size(config.connection_window_bytes)
            .max_header_list_size(config.max_header_list_bytes)
            .data_frame_budget(data_frame_budget(config.stream_window_bytes));
        let (send, connection) = builder
            .handshake::<_, Bytes>(io)
            .await
            .map_err(ClientError::H2)?;
        let span = debug_span!("client_conn", %authority);
        tokio::spawn(
            async move {
                match connection.await {
                    Ok(()) => debug!("connection closed"),
                    Err(e) => debug!(error = %e, "connection ended"),
                }
            }
            .instrument(span),
        );
        Ok(Channel {
            send,
            authority,
            config: Arc::new(config),
        })
    }

    /// Makes a unary call: one request, one response.
    ///
    /// Errors: the call's status when it is not OK; INTERNAL when an OK call carried no response
    /// message or more than one (as grpc-go).
    pub async fn unary<Req, Resp>(
        &self,
        path: &str,
        req: &Req,
        opts: CallOptions,
    ) -> Result<Resp, Status>
    where
        Req: prost::Message,
        Resp: prost::Message + Default,
    {
        let mut call = self.start(path, opts).await?;
        // A failed send is not the call's outcome: the status the server sent (e.g. UNIMPLEMENTED
        // for a method it does not have) is, and receiving finds it.
        let _ = call.send_last(req).await;
        let Some(reply) = call.recv::<Resp>().await? else {
            return Err(Status::internal(
                "cardinality violation: received no response message from non-server-streaming RPC",
            ));
        };
        if call.recv_raw().await?.is_some() {
            call.cancel();
            return Err(Status::internal(
                "cardinality violation: expected <EOF> for non server-streaming RPCs, but received another message",
            ));
        }
        Ok(reply)
    }

    /// Starts a call of any kind (unary, client, server or bidirectional streaming) on `path`
    /// (`/package.Service/Method`). The request headers go out at once; the response is read
    /// through the returned call.
    ///
    /// Errors: UNAVAILABLE when the connection is gone, DEADLINE_EXCEEDED when the deadline
    /// passes while waiting for the server to allow another stream, INTERNAL for a path that is
    /// not a valid URI path.
    pub async fn start(&self, path: &str, opts: CallOptions) -> Result<ClientCall, Status> {
        let deadline = opts.timeout.and_then(|t| Instant::now().checked_add(t));
        let request = self.request(path, &opts)?;
        // Waits while the server's SETTINGS_MAX_CONCURRENT_STREAMS is reached.
        let ready = self.send.clone().ready();
        let ready = match deadline {
            Some(at) => tokio::time::timeout_at(at, ready).await.map_err(|_| {
                Status::deadline_exceeded("deadline exceeded before the call started")
            })?,
            None => ready.await,
        };
        let mut send = ready.map_err(|e| Status::from(ClientError::H2(e)))?;
        let (response, stream) = send
            .send_request(request, false)
            .map_err(|e| status_from_h2(&e))?;
        let max_recv = opts
            .max_recv_message_bytes
            .unwrap_or(self.config.max_recv_message_bytes);
        let encoding = opts.encoding.filter(|e| *e != Encoding::Identity);
        Ok(ClientCall::new(
            response, stream, deadline, encoding, max_recv,
        ))
    }

    /// Sends any request, as is, and hands back h2's raw handles: for tests that send what a
    /// well-behaved client never would (wrong `:method`, wrong `content-type`, broken frames). A
    /// URI without an authority (e.g. `/svc/Method`) gets the channel's scheme and authority.
    ///
    /// Nothing of the gRPC discipline applies to the handles: the caller reserves capacity and
    /// releases received bytes itself.
    pub async fn send_request(
        &self,
        mut req: Request<()>,
        end_of_stream: bool,
    ) -> Result<(ResponseFuture, SendStream<Bytes>), ClientError> {
        if req.uri().authority().is_none() {
            let mut parts = std::mem::take(req.uri_mut()).into_parts();
            parts.scheme = Some(Scheme::HTTP);
            parts.authority = Some(self.authority.clone());
            if parts.path_and_query.is_none() {
                parts.path_and_query = Some(PathAndQuery::from_static("/"));
            }
            *req.uri_mut() = Uri::from_parts(parts).map_err(ClientError::InvalidUri)?;
        }
        let mut send = self.send.clone().ready().await.map_err(ClientError::H2)?;
        send.send_request(req, end_of_stream)
            .map_err(ClientError::H2)
    }

    /// The request headers of a call.
    fn request(&self, path: &str, opts: &CallOptions) -> Result<Request<()>, Status> {
        let uri = Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(self.authority.clone())
            .path_and_query(path)
            .build()
            .map_err(|e| Status::internal(format!("invalid method path {path:?}: {e}")))?;
        let mut headers = HeaderMap::with_capacity(6 + opts.metadata.iter().count());
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert(TE, HeaderValue::from_static("trailers"));
        headers.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
        if let Some(t) = opts.timeout {
            // Digits and a unit letter: always a valid header value.
            if let Ok(v) = HeaderValue::from_str(&timeout::format(t)) {
                headers.insert("grpc-timeout", v);
            }
        }
        if let Some(enc) = opts.encoding.filter(|e| *e != Encoding::Identity) {
            headers.insert("grpc-encoding", HeaderValue::from_static(enc.name()));
        }
        if opts.accept_compressed {
            headers.insert(
                "grpc-accept-encoding",
                HeaderValue::from_static(ACCEPT_ENCODING),
            );
        }
        opts.metadata.add_to(&mut headers);
        let mut request = Request::new(());
        *request.method_mut() = Method::POST;
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        Ok(request)
    }
}

/// h2's budget for small DATA frames received and not yet read, sized so that a server framing
/// each message on its own can fill a whole stream window without exhausting it.
///
/// h2 charges `256 - len` for each unread DATA frame of `len < 256` bytes (about what h2 holds
/// per queued frame) and closes the connection with ENHANCE_YOUR_CALM when the charges exceed
/// the budget. Its default, half the connection window, is about 8,000 unread small messages: a
/// server streaming small messages to a client that reads late (a chat history, a benchmark)
/// exceeds it. A message frame has at least 5 bytes, so one stream window of them costs at most
/// `window / 5 * 251`; that is the budget (about 50 MiB of accounting for the default 1 MiB
/// window, reached only when a reader stalls while a server fills its window with empty
/// messages). Several stalled streams of tiny messages, or a server splitting its data into
/// frames smaller than a message prefix, still meet h2's defence.
fn data_frame_budget(stream_window_bytes: u32) -> usize {
    // HTTP/2 starts every window at 65,535 bytes, whatever the target.
    let window = usize::try_from(stream_window_bytes.max(65_535)).unwrap_or(usize::MAX);
    (window / MIN_MESSAGE_FRAME_BYTES + 1)
        .saturating_mul(H2_SMALL_FRAME_BYTES - MIN_MESSAGE_FRAME_BYTES)
}

/// What both halves of a call share: the send handle (the receiving half resets the stream
/// through it) and how the call ended, once it did.
struct Shared {
    stream: SendStream<Bytes>,
    /// Why this side ended the call early (deadline, cancel, a response it could not accept).
    local_end: Option<Status>,
    /// The status the call ended with, once the receiving half learned it.
    end: Option<Status>,
}

impl Shared {
    /// Ends the call from this side with RST_STREAM(CANCEL); every later operation on either half
    /// fails with the returned status (the first reason given wins).
    fn cancel(&mut self, status: Status) -> Status {
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

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // Held only inside non-async functions of this module; a poisoned lock can only come from a
    // panic here, after which the data is still consistent.
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// A call's deadline, and the timer that wakes a waiting operation when it passes. The timer is
/// only armed when an operation actually has to wait.
struct Deadline {
    at: Option<Instant>,
    timer: Option<Pin<Box<Sleep>>>,
}

impl Deadline {
    fn new(at: Option<Instant>) -> Deadline {
        Deadline { at, timer: None }
    }

    /// Whether the deadline has passed; if not, the task is woken when it does.
    fn poll_passed(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(at) = self.at else { return false };
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
        timer.as_mut().poll(cx).is_ready()
    }

    /// Whether the deadline has passed, without arming anything.
    fn passed(&self) -> bool {
        self.at.is_some_and(|at| at <= Instant::now())
    }
}

fn deadline_exceeded() -> Status {
    Status::deadline_exceeded("deadline exceeded")
}

/// A client call: both directions of one stream. See the module documentation.
///
/// Dropping it before the call ended cancels the call (RST_STREAM with CANCEL).
pub struct ClientCall {
    tx: CallSender,
    rx: CallReceiver,
}

impl fmt::Debug for ClientCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCall")
            .field("stream_id", &self.rx.stream_id)
            .field("status", &self.rx.status)
            .finish_non_exhaustive()
    }
}

impl ClientCall {
    fn new(
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
            rx: CallReceiver {
                shared,
                stream_id,
                response: Some(response),
                body: None,
                data_done: false,
                decoder: Decoder::new(max_recv_message_bytes),
                encoding: Encoding::Identity,
                max_message_bytes: max_recv_message_bytes,
                headers: None,
                trailers: None,
                status: None,
                deadline: Deadline::new(deadline),
            },
        }
    }

    /// The HTTP/2 stream id.
    pub fn stream_id(&self) -> u32 {
        self.rx.stream_id
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

/// The sending direction of a call.
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

/// The receiving direction of a call.
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
    /// receive limit (refused from its length prefix, before anything is allocated, and again
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
        if let Some(value) = parts.headers.get("grpc-encoding") {
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

/// The status for a response that is not gRPC, as grpc-go decides it: a non-200 HTTP status maps
/// per grpc/grpc `doc/http-grpc-status-mapping.md`; a 200 without a gRPC `content-type` is
/// INTERNAL. `None` for a gRPC response.
fn non_grpc_response(http_status: StatusCode, headers: &HeaderMap) -> Option<Status> {
    let content_type = headers.get(CONTENT_TYPE).map(|v| v.as_bytes());
    let grpc_content = content_type.is_some_and(is_grpc_content_type);
    if http_status == StatusCode::OK && grpc_content {
        return None;
    }
    let mut problems = Vec::with_capacity(2);
    if http_status != StatusCode::OK {
        problems.push(format!(
            "unexpected HTTP status code received from server: {} ({})",
            http_status.as_u16(),
            http_status.canonical_reason().unwrap_or("unknown")
        ));
    }
    if !grpc_content {
        problems.push(match content_type {
            None => "malformed header: missing HTTP content-type".to_string(),
            Some(ct) => format!("unexpected content-type {:?}", String::from_utf8_lossy(ct)),
        });
    }
    let code = if http_status == StatusCode::OK {
        Code::Internal
    } else {
        code_from_http(http_status)
    };
    Some(Status::new(code, problems.join("; ")))
}

/// `application/grpc`, optionally followed by `+subtype` or `;parameters` (not `grpc-web`).
fn is_grpc_content_type(ct: &[u8]) -> bool {
    match ct.strip_prefix(b"application/grpc") {
        Some(rest) => rest.is_empty() || rest.starts_with(b"+") || rest.starts_with(b";"),
        None => false,
    }
}

/// The gRPC code for the HTTP status of a response without `grpc-status`
/// (grpc/grpc `doc/http-grpc-status-mapping.md`): every status the table does not list is
/// UNKNOWN — 405 and 415 included.
pub fn code_from_http(status: StatusCode) -> Code {
    match status.as_u16() {
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502 | 503 | 504 => Code::Unavailable,
        _ => Code::Unknown,
    }
}

/// The gRPC code for a stream reset with `reason` (grpc-go's `http2ErrConvTab`).
pub fn code_from_reset(reason: Reason) -> Code {
    match reason {
        Reason::CANCEL => Code::Cancelled,
        Reason::REFUSED_STREAM => Code::Unavailable,
        Reason::ENHANCE_YOUR_CALM => Code::ResourceExhausted,
        Reason::INADEQUATE_SECURITY => Code::PermissionDenied,
        Reason::NO_ERROR
        | Reason::PROTOCOL_ERROR
        | Reason::INTERNAL_ERROR
        | Reason::FLOW_CONTROL_ERROR
        | Reason::SETTINGS_TIMEOUT
        | Reason::STREAM_CLOSED
        | Reason::FRAME_SIZE_ERROR
        | Reason::COMPRESSION_ERROR
        | Reason::CONNECT_ERROR
        | Reason::HTTP_1_1_REQUIRED => Code::Internal,
        _ => Code::Unknown,
    }
}

fn status_from_reset(reason: Reason) -> Status {
    Status::new(
        code_from_reset(reason),
        format!("stream terminated by RST_STREAM with error code {reason:?}"),
    )
}

/// The status for an h2 error: a stream reset maps by its reason; anything else (connection
/// lost, GOAWAY, I/O) is UNAVAILABLE.
fn status_from_h2(err: &h2::Error) -> Status {
    match err.reason() {
        Some(reason) if err.is_reset() => status_from_reset(reason),
        _ => Status::unavailable(format!("connection: {err}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_statuses_map_as_the_grpc_table_says() {
        let code = |n: u16| StatusCode::from_u16(n).map(code_from_http).ok();
        assert_eq!(code(400), Some(Code::Internal));
        assert_eq!(code(401), Some(Code::Unauthenticated));
        assert_eq!(code(403), Some(Code::PermissionDenied));
        assert_eq!(code(404), Some(Code::Unimplemented));
        for n in [429, 502, 503, 504] {
            assert_eq!(code(n), Some(Code::Unavailable), "{n}");
        }
        for n in [405, 415, 500, 302] {
            assert_eq!(code(n), Some(Code::Unknown), "{n}");
        }
    }

    #[test]
    fn a_200_without_grpc_content_type_is_internal() {
        let mut h = HeaderMap::new();
        assert_eq!(
            non_grpc_response(StatusCode::OK, &h).map(|s| s.code()),
            Some(Code::Internal)
        );
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/grpc-web"),
        );
        assert_eq!(
            non_grpc_response(StatusCode::OK, &h).map(|s| s.code()),
            Some(Code::Internal)
        );
        for ct in [
            "application/grpc",
            "application/grpc+proto",
            "application/grpc;x=1",
        ] {
            h.insert(CONTENT_TYPE, HeaderValue::from_static(ct));
            assert_eq!(non_grpc_response(StatusCode::OK, &h), None, "{ct}");
        }
        let refused = non_grpc_response(StatusCode::UNSUPPORTED_MEDIA_TYPE, &HeaderMap::new());
        assert_eq!(refused.as_ref().map(Status::code), Some(Code::Unknown));
        assert!(refused.is_some_and(|s| s.message().contains("415")));
    }

    #[test]
    fn handles_can_move_between_tasks() {
        fn send_sync<T: Send + Sync>() {}
        fn send<T: Send>() {}
        send_sync::<Channel>();
        send::<ClientCall>();
        send::<CallSender>();
        send::<CallReceiver>();
    }

    #[test]
    fn resets_map_as_grpc_go() {
        assert_eq!(code_from_reset(Reason::CANCEL), Code::Cancelled);
        assert_eq!(code_from_reset(Reason::REFUSED_STREAM), Code::Unavailable);
        assert_eq!(code_from_reset(Reason::NO_ERROR), Code::Internal);
        assert_eq!(
            code_from_reset(Reason::ENHANCE_YOUR_CALM),
            Code::ResourceExhausted
        );
        assert_eq!(code_from_reset(Reason::from(0xff)), Code::Unknown);
    }
}
