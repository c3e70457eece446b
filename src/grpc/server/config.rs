//! The server's limits: [`ServerConfig`], and the `DEFAULT_*` constant behind each of its fields
//! (each also a command-line flag).

use std::time::Duration;

use crate::grpc::codec::DEFAULT_MAX_MESSAGE_BYTES;
use crate::grpc::server::admission;
use crate::grpc::server::budget::{
    DEFAULT_MAX_SEND_BUFFER_PER_CONNECTION, DEFAULT_MAX_SEND_BUFFER_TOTAL,
};
use crate::grpc::server::lifetime::DEFAULT_MAX_CONNECTION_IDLE;

/// Default cap on concurrent streams per connection, and on running handlers per connection.
pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 256;
/// Default largest header list a client may send: 16 KiB.
pub const DEFAULT_MAX_HEADER_LIST_BYTES: u32 = 16 << 10;
/// Default number of streams a client may open and reset before they are accepted (h2's default).
pub const DEFAULT_MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 20;
/// Default number of streams the server may reset for protocol errors before it closes the
/// connection (h2's default).
pub const DEFAULT_MAX_LOCAL_ERROR_RESET_STREAMS: usize = 1024;
/// Default time a new connection has to complete the HTTP/2 preface.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default budget h2 may spend on bookkeeping for received small DATA frames on one connection
/// before it closes the connection with ENHANCE_YOUR_CALM: 16 MiB, about 65,000 small frames
/// waiting for their call's task at once (h2's own default is half the connection window).
pub const DEFAULT_SMALL_FRAME_BUDGET_BYTES: usize = 16 << 20;
/// Default time between keepalive PINGs on a connection.
pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
/// Default time a PING may go unanswered before the connection is closed.
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time graceful shutdown waits for connections to close.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Default HTTP/2 receive window of each stream: 64 KiB (HTTP/2's and grpc-go's default). It
/// is all a call whose handler is not reading can make the server hold of received bytes.
pub const DEFAULT_INITIAL_STREAM_WINDOW_BYTES: u32 = 64 << 10;

/// Default time a response may wait for the client to grant flow-control window before its
/// stream is reset (nginx's `send_timeout` is 60 s; grpc-go has no such limit).
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// The server's limits. Every field has a `DEFAULT_*` constant and a command-line flag.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Largest request message, before and after decompression.
    pub max_message_bytes: usize,
    /// HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS`, and the cap on running handlers per connection.
    pub max_concurrent_streams: u32,
    /// HTTP/2 `SETTINGS_MAX_HEADER_LIST_SIZE`.
    pub max_header_list_bytes: u32,
    /// Reset-before-accept streams tolerated at once (rapid-reset defence).
    pub max_pending_accept_reset_streams: usize,
    /// Locally reset streams tolerated before the connection is closed.
    pub max_local_error_reset_streams: usize,
    /// Open connections; further clients wait in the listen backlog. At most the open-file
    /// limit minus [`admission::FILE_RESERVE`] (the default), or [`Server::serve`] refuses to
    /// start.
    ///
    /// [`Server::serve`]: super::Server::serve
    pub max_connections: usize,
    /// Open connections per client IP address; `None` = no cap. A client over it has its new
    /// connection closed at once.
    pub max_connections_per_ip: Option<usize>,
    /// A connection with no calls for this long gets GOAWAY; `None` = never.
    pub max_connection_idle: Option<Duration>,
    /// A connection this old (±10%) gets GOAWAY; `None` = never.
    pub max_connection_age: Option<Duration>,
    /// How long calls may go on after the age GOAWAY before the connection is closed; `None` =
    /// until they end.
    pub max_connection_age_grace: Option<Duration>,
    /// Time to complete the HTTP/2 handshake.
    pub handshake_timeout: Duration,
    /// How long graceful shutdown waits.
    pub shutdown_grace: Duration,
    /// Optional cap on any call's duration, applied on top of the client's `grpc-timeout`.
    pub max_call_duration: Option<Duration>,
    /// h2's budget for received small DATA frames per connection (see
    /// [`DEFAULT_SMALL_FRAME_BUDGET_BYTES`]).
    pub small_frame_budget_bytes: usize,
    /// Time between keepalive PINGs; `None` turns keepalive off.
    pub keepalive_interval: Option<Duration>,
    /// Time a keepalive PING may go unanswered before the connection is closed.
    pub keepalive_timeout: Duration,
    /// Response bytes one connection may hold encoded and not yet written.
    pub max_send_buffer_per_connection: usize,
    /// Response bytes the server may hold encoded and not yet written, beyond each
    /// connection's first [`DEFAULT_SEND_RESERVE_PER_CONNECTION`].
    ///
    /// [`DEFAULT_SEND_RESERVE_PER_CONNECTION`]: super::DEFAULT_SEND_RESERVE_PER_CONNECTION
    pub max_send_buffer_total: usize,
    /// Time a response may wait for the client's window before its stream is reset; `None` =
    /// forever.
    pub send_timeout: Option<Duration>,
    /// HTTP/2 receive window of each stream. The connection's window is this times
    /// `max_concurrent_streams`, so that streams whose handlers do not read cannot use up the
    /// window of the others.
    pub initial_stream_window_bytes: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_concurrent_streams: DEFAULT_MAX_CONCURRENT_STREAMS,
            max_header_list_bytes: DEFAULT_MAX_HEADER_LIST_BYTES,
            max_pending_accept_reset_streams: DEFAULT_MAX_PENDING_ACCEPT_RESET_STREAMS,
            max_local_error_reset_streams: DEFAULT_MAX_LOCAL_ERROR_RESET_STREAMS,
            max_connections: admission::max_connections_for_file_limit(),
            max_connections_per_ip: None,
            max_connection_idle: Some(DEFAULT_MAX_CONNECTION_IDLE),
            max_connection_age: None,
            max_connection_age_grace: None,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            max_call_duration: None,
            small_frame_budget_bytes: DEFAULT_SMALL_FRAME_BUDGET_BYTES,
            keepalive_interval: Some(DEFAULT_KEEPALIVE_INTERVAL),
            keepalive_timeout: DEFAULT_KEEPALIVE_TIMEOUT,
            max_send_buffer_per_connection: DEFAULT_MAX_SEND_BUFFER_PER_CONNECTION,
            max_send_buffer_total: DEFAULT_MAX_SEND_BUFFER_TOTAL,
            send_timeout: Some(DEFAULT_SEND_TIMEOUT),
            initial_stream_window_bytes: DEFAULT_INITIAL_STREAM_WINDOW_BYTES,
        }
    }
}
