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

mod call;
mod response;
mod shared;
mod status;
pub mod tls;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use h2::client::{ResponseFuture, SendRequest};
use h2::SendStream;
use http::header::{CONTENT_TYPE, TE, USER_AGENT};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderValue, Method, Request, Uri};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, ToSocketAddrs};
use tokio::time::Instant;
use tracing::{debug, debug_span, Instrument};

use super::codec::{self, DEFAULT_MAX_MESSAGE_BYTES};
use super::compression::{Encoding, ACCEPT_ENCODING};
use super::headers::{GRPC_ACCEPT_ENCODING, GRPC_ENCODING, GRPC_TIMEOUT};
use super::metadata::Metadata;
use super::status::Status;
use super::timeout;
use status::status_from_h2;

pub use call::{CallSender, ClientCall};
pub use response::CallReceiver;
pub use status::{code_from_http, code_from_reset};
pub use tls::ClientTls;

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
    /// TLS failed: the handshake, the server's certificate, or ALPN did not choose `h2`.
    Tls(String),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Connect(e) => write!(f, "connecting: {e}"),
            ClientError::Io(e) => write!(f, "socket: {e}"),
            ClientError::H2(e) => write!(f, "http/2: {e}"),
            ClientError::InvalidUri(e) => write!(f, "invalid request URI: {e}"),
            ClientError::Tls(e) => write!(f, "tls: {e}"),
        }
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClientError::Connect(e) | ClientError::Io(e) => Some(e),
            ClientError::H2(e) => Some(e),
            ClientError::InvalidUri(e) => Some(e),
            ClientError::Tls(_) => None,
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
    /// `https` over TLS, else `http`.
    scheme: Scheme,
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
        Channel::handshake(socket, authority, Scheme::HTTP, config).await
    }

    /// Connects over TCP to `addr` (`host:port`), runs the TLS handshake with `tls` (the server's
    /// certificate is checked against `host`), then the HTTP/2 handshake.
    pub async fn connect_tls(
        addr: &str,
        tls: &ClientTls,
        config: ChannelConfig,
    ) -> Result<Channel, ClientError> {
        let socket = TcpStream::connect(addr)
            .await
            .map_err(ClientError::Connect)?;
        socket.set_nodelay(true).map_err(ClientError::Io)?;
        let stream = tls.connect(socket, tls::host_of(addr)).await?;
        Channel::connect_io_to(stream, addr, true, config).await
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
        Channel::handshake(io, authority, Scheme::HTTP, config).await
    }

    /// Speaks HTTP/2 over a transport the caller connected (and, when `secure`, wrapped in TLS,
    /// e.g. with [`ClientTls::connect`]); requests name `authority` (`host:port`) and the scheme
    /// `https` when `secure`.
    pub async fn connect_io_to<T>(
        io: T,
        authority: &str,
        secure: bool,
        config: ChannelConfig,
    ) -> Result<Channel, ClientError>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let authority = Authority::try_from(authority)
            .unwrap_or_else(|_| Authority::from_static(DEFAULT_AUTHORITY));
        let scheme = if secure { Scheme::HTTPS } else { Scheme::HTTP };
        Channel::handshake(io, authority, scheme, config).await
    }

    async fn handshake<T>(
        io: T,
        authority: Authority,
        scheme: Scheme,
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
            scheme,
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
            parts.scheme = Some(self.scheme.clone());
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
            .scheme(self.scheme.clone())
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
                headers.insert(GRPC_TIMEOUT, v);
            }
        }
        if let Some(enc) = opts.encoding.filter(|e| *e != Encoding::Identity) {
            headers.insert(GRPC_ENCODING, HeaderValue::from_static(enc.name()));
        }
        if opts.accept_compressed {
            headers.insert(
                GRPC_ACCEPT_ENCODING,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_can_move_between_tasks() {
        fn send_sync<T: Send + Sync>() {}
        fn send<T: Send>() {}
        send_sync::<Channel>();
        send::<ClientCall>();
        send::<CallSender>();
        send::<CallReceiver>();
    }
}
