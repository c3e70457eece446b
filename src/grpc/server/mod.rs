//! The server: accepts TCP connections, speaks HTTP/2 on them with h2, and runs one task per call.
//!
//! Before a call reaches its handler the server refuses what is not gRPC (`:method` other than
//! POST → HTTP 405, `content-type` neither `application/grpc[+…]` nor gRPC-Web's
//! `application/grpc-web[-text][+…]` → HTTP 415) and ends with a
//! Trailers-Only status what is gRPC but cannot run: unknown service or method (UNIMPLEMENTED),
//! unknown `grpc-encoding` (UNIMPLEMENTED, with `grpc-accept-encoding`), malformed `grpc-timeout`
//! (INTERNAL), too many running calls on the connection (RESOURCE_EXHAUSTED).
//!
//! A missing `te: trailers` header is accepted (as grpc-go does); h2 itself rejects any other `te`.
//!
//! gRPC-Web ([`crate::grpc::web`]) runs on the same port and router, with the same limits,
//! deadlines and authentication: only the response's framing differs (trailers in the body).
//! Browsers from other origins are governed by a [`CorsPolicy`] ([`cors`]); static files given
//! with [`Server::add_pages`] answer `GET` ([`pages`]).
//!
//! Transport: each [`Listener`] speaks plaintext HTTP/2 or TLS ([`tls`]); the TLS handshake and
//! the HTTP/2 preface share one `handshake_timeout`. With an [`Authenticator`] set, every call is
//! authenticated before its handler runs ([`auth`]), and a call whose principal expires is ended
//! UNAUTHENTICATED.
//!
//! Graceful shutdown: on the signal the server stops accepting, tells services through
//! [`ShutdownSignal`], sends GOAWAY on every connection, ends every live call with UNAVAILABLE
//! "server shutting down", and returns once every connection is closed or `shutdown_grace` passed.

use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use h2::server::SendResponse;
use h2::RecvStream;
use http::Request;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tracing::{debug, debug_span, info, warn, Instrument};

use crate::grpc::codec::DEFAULT_MAX_MESSAGE_BYTES;
use crate::grpc::server::admission::{AcceptBackoff, IpSlot, PerIp};
pub use crate::grpc::server::auth::{AuthRequest, Authenticator, Principal};
use crate::grpc::server::budget::{ConnectionBudget, TotalBudget};
pub use crate::grpc::server::budget::{
    DEFAULT_MAX_SEND_BUFFER_PER_CONNECTION, DEFAULT_MAX_SEND_BUFFER_TOTAL,
    DEFAULT_SEND_RESERVE_PER_CONNECTION,
};
use crate::grpc::server::call::Call;
use crate::grpc::server::coalesce::CoalescedWrites;
pub use crate::grpc::server::cors::CorsPolicy;
use crate::grpc::server::keepalive::{lost, Keepalive};
pub use crate::grpc::server::lifetime::DEFAULT_MAX_CONNECTION_IDLE;
use crate::grpc::server::lifetime::{Activity, CallSlot, Lifetime, LifetimeEvent};
pub use crate::grpc::server::pages::Page;
use crate::grpc::server::router::{Router, Service};
pub use crate::grpc::server::shutdown::{ShutdownSignal, ShutdownTrigger};
use crate::grpc::server::stats::MethodLabels;
pub use crate::grpc::server::tls::{ClientAuth, TlsAcceptor, TlsFiles};
use crate::grpc::server::transport::accept_any;
pub use crate::grpc::server::transport::Listener;
use crate::grpc::server::written::Chunk;
use crate::grpc::status::{Code, Status};
pub use crate::grpc::tls::TlsError;

mod accept;
pub mod admission;
pub mod auth;
pub mod budget;
pub mod call;
mod call_log;
pub mod coalesce;
pub mod cors;
mod keepalive;
pub mod lifetime;
pub mod linger;
pub mod log_rate;
pub mod pages;
pub mod router;
pub mod shutdown;
pub mod stats;
pub mod tls;
mod transport;
pub mod written;

use accept::accept_call;
use call_log::{log_failed_call, refuse_unimplemented};

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

/// HTTP/2's largest flow-control window, 2^31 - 1.
const MAX_WINDOW_BYTES: u32 = (1 << 31) - 1;

/// Least time between two warnings that the connection limit is reached.
const CONNECTION_LIMIT_WARN_INTERVAL: Duration = Duration::from_secs(60);

/// Source of [`CallInfo::connection_id`](crate::grpc::server::call::CallInfo::connection_id).
static NEXT_CONNECTION_ID: AtomicU64 = AtomicU64::new(1);

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

/// A gRPC server over h2.
pub struct Server {
    config: Arc<ServerConfig>,
    router: Router,
    authenticator: Option<Arc<dyn Authenticator>>,
    cors: CorsPolicy,
    pages: Vec<Page>,
    trigger: ShutdownTrigger,
    signal: ShutdownSignal,
}

/// What every connection and call task shares.
struct Shared {
    config: Arc<ServerConfig>,
    router: Router,
    authenticator: Option<Arc<dyn Authenticator>>,
    cors: CorsPolicy,
    pages: Vec<Page>,
    signal: ShutdownSignal,
    /// The send budget every connection draws on.
    send_total: Arc<TotalBudget>,
    /// Held by every task; its channel closes when all are gone.
    _alive: mpsc::Sender<()>,
}

impl Server {
    /// A server with these limits and no services yet.
    pub fn new(config: ServerConfig) -> Server {
        let (trigger, signal) = ShutdownSignal::new();
        Server {
            config: Arc::new(config),
            router: Router::new(),
            authenticator: None,
            cors: CorsPolicy::default(),
            pages: Vec::new(),
            trigger,
            signal,
        }
    }

    /// The signal services watch to learn that shutdown has begun.
    pub fn shutdown_signal(&self) -> ShutdownSignal {
        self.signal.clone()
    }

    /// Adds a service.
    pub fn add_service(&mut self, service: Arc<dyn Service>) {
        self.router.add(service);
    }

    /// Authenticates every call with `authenticator` before its handler runs.
    pub fn set_authenticator(&mut self, authenticator: Arc<dyn Authenticator>) {
        self.authenticator = Some(authenticator);
    }

    /// Which browser origins may make gRPC-Web calls (by default only the server's own).
    pub fn set_cors(&mut self, policy: CorsPolicy) {
        self.cors = policy;
    }

    /// Answers `GET`/`HEAD` of these files' paths with them; any other `GET` is refused like
    /// every method but POST (HTTP 405).
    pub fn add_pages(&mut self, pages: &[Page]) {
        self.pages.extend_from_slice(pages);
    }

    /// The names of the services added so far.
    pub fn service_names(&self) -> Vec<&'static str> {
        self.router.names()
    }

    /// Serves one already-connected transport — e.g. one end of `tokio::io::duplex`, for an
    /// in-process front end — until the peer closes it or `signal` resolves (then gracefully).
    /// `peer` is what calls see as their peer address.
    pub async fn serve_io<T>(self, io: T, peer: SocketAddr, signal: impl Future<Output = ()>)
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (shared, stopper) = self.start();
        let conn = ConnInfo::new(peer, None);
        let deadline = handshake_deadline(&shared.config);
        let conn = tokio::spawn(serve_connection(shared, io, conn, deadline, None));
        tokio::select! {
            _ = conn => {}
            () = signal => stopper.stop().await,
        }
    }

    /// Serves plaintext connections from `listener` until `signal` resolves, then shuts down
    /// gracefully.
    pub async fn serve(
        self,
        listener: TcpListener,
        signal: impl Future<Output = ()>,
    ) -> io::Result<()> {
        self.serve_on(vec![Listener::plaintext(listener)], signal)
            .await
    }

    /// Serves connections from every listener (each plaintext or TLS) until `signal` resolves,
    /// then shuts down gracefully. `max_connections` counts them all together.
    pub async fn serve_on(
        self,
        listeners: Vec<Listener>,
        signal: impl Future<Output = ()>,
    ) -> io::Result<()> {
        let mut next_listener = 0;
        let max_connections = self.config.max_connections;
        admission::check_max_connections(max_connections)?;
        let connections = Arc::new(Semaphore::new(max_connections));
        let per_ip = PerIp::new(self.config.max_connections_per_ip);
        let mut backoff = AcceptBackoff::new();
        let (shared, stopper) = self.start();
        tokio::pin!(signal);
        let mut limit_warned_at: Option<Instant> = None;
        loop {
            if connections.available_permits() == 0 {
                stats::connection_limit_reached();
            }
            if connections.available_permits() == 0
                && limit_warned_at.is_none_or(|at| at.elapsed() >= CONNECTION_LIMIT_WARN_INTERVAL)
            {
                // An operator may want a higher limit: new clients now wait in the backlog.
                warn!(
                    max_connections,
                    "connection limit reached; new clients wait until a connection closes"
                );
                limit_warned_at = Some(Instant::now());
            }
            let permit = tokio::select! {
                p = connections.clone().acquire_owned() => p,
                () = &mut signal => break,
            };
            let Ok(permit) = permit else { break };
            let accepted = tokio::select! {
                r = accept_any(&listeners, &mut next_listener) => r,
                () = &mut signal => break,
            };
            match accepted {
                Ok(incoming) => {
                    stats::connection_accepted();
                    let (socket, peer) = (incoming.socket, incoming.peer);
                    backoff.succeeded();
                    let ip_slot = match per_ip.admit(peer.ip()) {
                        Some(slot) => Some(slot),
                        None if per_ip.is_limited() => {
                            debug!(%peer, "refused: too many connections from this address");
                            continue;
                        }
                        None => None,
                    };
                    let _ = socket.set_nodelay(true);
                    let permit = Some((permit, ip_slot));
                    let shared = shared.clone();
                    // The TLS handshake and the HTTP/2 preface share the handshake timeout.
                    let deadline = handshake_deadline(&shared.config);
                    // At debug level: an enabled span is stored for the connection's whole life,
                    // and at the default level nothing inside it logs.
                    let span = debug_span!("conn", %peer);
                    match incoming.tls {
                        None => {
                            let conn = ConnInfo::new(peer, None);
                            let task = serve_connection(shared, socket, conn, deadline, permit);
                            tokio::spawn(task.instrument(span));
                        }
                        Some(tls) => {
                            let task = serve_tls(shared, tls, socket, peer, deadline, permit);
                            tokio::spawn(task.instrument(span));
                        }
                    }
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning, and
                    // say so once a minute, not once a try.
                    let (pause, warn_now) = backoff.failed();
                    if let Some(failures) = warn_now {
                        warn!(error = %e, failures, "accept failed; backing off");
                    }
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        () = &mut signal => break,
                    }
                }
            }
        }
        info!("shutting down: no new connections; GOAWAY to every connection; ending live calls");
        drop(listeners);
        drop(shared);
        stopper.stop().await;
        info!("shut down");
        Ok(())
    }

    /// Freezes the services into the state every task shares.
    fn start(self) -> (Arc<Shared>, Stopper) {
        let (alive_tx, alive_rx) = mpsc::channel::<()>(1);
        let stopper = Stopper {
            trigger: self.trigger,
            alive: alive_rx,
            grace: self.config.shutdown_grace,
        };
        let send_total = TotalBudget::new(self.config.max_send_buffer_total);
        let shared = Arc::new(Shared {
            send_total,
            config: self.config,
            router: self.router,
            authenticator: self.authenticator,
            cors: self.cors,
            pages: self.pages,
            signal: self.signal,
            _alive: alive_tx,
        });
        (shared, stopper)
    }
}

/// Runs graceful shutdown once the caller has dropped its own [`Shared`].
struct Stopper {
    trigger: ShutdownTrigger,
    alive: mpsc::Receiver<()>,
    grace: Duration,
}

impl Stopper {
    /// Fires the shutdown signal, then waits for every task to end, at most `grace`.
    async fn stop(mut self) {
        self.trigger.fire();
        if tokio::time::timeout(self.grace, self.alive.recv())
            .await
            .is_err()
        {
            warn!(grace = ?self.grace, "shutdown grace period over; dropping remaining connections");
        } else {
            info!("shutting down: every connection closed");
        }
    }
}

/// The facts of a connection every call on it sees.
#[derive(Clone)]
pub(in crate::grpc) struct ConnInfo {
    /// Unique for the server's lifetime.
    pub(in crate::grpc) id: u64,
    /// The client's address.
    pub(in crate::grpc) peer: SocketAddr,
    /// The identity of the client's verified TLS certificate.
    pub(in crate::grpc) identity: Option<Arc<str>>,
    /// Set before the connection's task drops the connection itself, so its calls tell that from
    /// a client that closed it (h2 reports both to them alike; see `CloseCause`).
    pub(in crate::grpc) dropped: Arc<AtomicBool>,
}

impl ConnInfo {
    fn new(peer: SocketAddr, identity: Option<Arc<str>>) -> ConnInfo {
        ConnInfo {
            id: NEXT_CONNECTION_ID.fetch_add(1, Ordering::Relaxed),
            peer,
            identity,
            dropped: Arc::new(AtomicBool::new(false)),
        }
    }
}

/// When a connection accepted now must have completed its handshakes.
fn handshake_deadline(config: &ServerConfig) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    // An absurd timeout (the flag allows "forever") is a year, not an overflow.
    now.checked_add(config.handshake_timeout)
        .unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 3600))
}

/// Runs the TLS handshake (by `deadline`), then serves HTTP/2 over it.
async fn serve_tls(
    shared: Arc<Shared>,
    tls: Arc<TlsAcceptor>,
    socket: tokio::net::TcpStream,
    peer: SocketAddr,
    deadline: tokio::time::Instant,
    permit: Option<(OwnedSemaphorePermit, Option<IpSlot>)>,
) {
    let accepted = match tokio::time::timeout_at(deadline, tls.accept(socket)).await {
        Ok(Ok(accepted)) => accepted,
        Ok(Err(e)) => {
            debug!(error = %e, "TLS connection refused");
            stats::tls_handshake_failed();
            stats::connection_refused("handshake_failed");
            return;
        }
        Err(_) => {
            debug!("TLS handshake timed out");
            stats::connection_refused("handshake_timeout");
            return;
        }
    };
    drop(tls);
    let conn = ConnInfo::new(peer, accepted.identity);
    serve_connection(shared, accepted.stream, conn, deadline, permit).await;
}

async fn serve_connection<T>(
    shared: Arc<Shared>,
    socket: T,
    conn_info: ConnInfo,
    deadline: tokio::time::Instant,
    _permit: Option<(OwnedSemaphorePermit, Option<IpSlot>)>,
) where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let cfg = &shared.config;
    // The socket comes back when h2 drops it, for a lingering close (see `linger`).
    let (socket, returned) = linger::Returning::new(socket);
    // Boxed: the handshake's state is large and needed only until the preface is done, while
    // this task lives as long as the connection.
    let stream_window = cfg
        .initial_stream_window_bytes
        .clamp(1 << 14, MAX_WINDOW_BYTES);
    let connection_window = stream_window
        .saturating_mul(cfg.max_concurrent_streams.max(1))
        .min(MAX_WINDOW_BYTES);
    // Boxed: the deadlines are needed rarely, and this task lives as long as the connection.
    let mut lifetime = Box::new(Lifetime::new(
        Activity::new(),
        cfg.max_connection_idle,
        cfg.max_connection_age,
        cfg.max_connection_age_grace.unwrap_or(Duration::MAX),
        conn_info.id,
    ));
    let handshake = {
        let mut builder = h2::server::Builder::new();
        builder
            .max_concurrent_streams(cfg.max_concurrent_streams)
            .max_header_list_size(cfg.max_header_list_bytes)
            .max_pending_accept_reset_streams(cfg.max_pending_accept_reset_streams)
            .max_local_error_reset_streams(Some(cfg.max_local_error_reset_streams))
            .data_frame_budget(cfg.small_frame_budget_bytes)
            // The stream window bounds what a call buffers, since received capacity is released
            // only as messages are consumed; the connection's has room for every stream's, so a
            // stream whose handler does not read holds only its own window.
            .initial_window_size(stream_window)
            .initial_connection_window_size(connection_window);
        // Writes wait one scheduler turn, so that frames from every call answering at once leave
        // together; a call alone on its connection has nobody to wait for (see `coalesce`).
        let socket = CoalescedWrites::unless_alone(socket, lifetime.activity());
        Box::pin(builder.handshake::<_, Chunk>(socket))
    };
    // Matched in place: a named result would keep a second connection-sized slot in this task for
    // the connection's whole life.
    let mut conn = match tokio::time::timeout_at(deadline, handshake).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            debug!(error = %e, "handshake failed");
            stats::connection_refused("handshake_failed");
            return;
        }
        Err(_) => {
            debug!("handshake timed out");
            stats::connection_refused("handshake_timeout");
            return;
        }
    };
    debug!("connection open");
    stats::connection_open(true);
    let handlers = Arc::new(Semaphore::new(cfg.max_concurrent_streams as usize));
    let budget = ConnectionBudget::new(
        cfg.max_send_buffer_per_connection,
        DEFAULT_SEND_RESERVE_PER_CONNECTION,
        shared.send_total.clone(),
    );
    let mut draining = false;
    let mut keepalive = conn
        .ping_pong()
        .and_then(|p| Keepalive::new(p, cfg.keepalive_interval, cfg.keepalive_timeout));
    loop {
        let next = tokio::select! {
            next = poll_fn(|cx| conn.poll_accept(cx)) => next,
            () = shared.signal.wait(), if !draining => {
                // GOAWAY now; keep driving the connection until its calls end.
                conn.graceful_shutdown();
                draining = true;
                continue;
            }
            event = lifetime.next() => match event {
                LifetimeEvent::GoAway => {
                    debug!("connection idle or old: GOAWAY");
                    if !draining {
                        conn.graceful_shutdown();
                        draining = true;
                    }
                    continue;
                }
                LifetimeEvent::Close => {
                    debug!("connection past its age grace: closing");
                    break;
                }
            },
            () = lost(&mut keepalive) => {
                debug!("peer did not answer a keepalive PING; closing the connection");
                conn_info.dropped.store(true, Ordering::Relaxed);
                break;
            }
        };
        match next {
            Some(Ok((request, respond))) => {
                if let Some(k) = keepalive.as_mut() {
                    k.active();
                }
                let permit = handlers
                    .clone()
                    .try_acquire_owned()
                    .ok()
                    .map(|p| lifetime.enter(p));
                start_call(
                    shared.clone(),
                    request,
                    respond,
                    (&conn_info, &budget),
                    permit,
                );
            }
            Some(Err(e)) => {
                // h2 has told the calls already, with the error itself.
                debug!(error = %e, "connection error");
                break;
            }
            None => break,
        }
    }
    drop(conn);
    if let Ok(socket) = returned.await {
        // Boxed: its read buffer is needed only now, not for the connection's whole life.
        Box::pin(linger::linger(socket)).await;
    }
    debug!("connection closed");
    stats::connection_open(false);
}

/// Spawns the task of one call, unless the request is refused outright.
///
/// The setup is synchronous and the task holds only the call: the request's headers are gone
/// before the long wait starts. A task lives as long as its call (a chat member's, for hours), so
/// its size is per-member memory: the call's span is kept only when it is enabled (a disabled
/// span still takes 80 bytes in the task).
fn start_call(
    shared: Arc<Shared>,
    request: Request<RecvStream>,
    respond: SendResponse<Chunk>,
    (conn, budget): (&ConnInfo, &Arc<ConnectionBudget>),
    permit: Option<CallSlot>,
) {
    let stream_id: u32 = respond.stream_id().as_u32();
    let span = tracing::debug_span!("call", stream_id, method = %request.uri().path());
    let Some(call) = span.in_scope(|| accept_call(&shared, request, respond, conn, budget, permit))
    else {
        return;
    };
    if span.is_disabled() {
        tokio::spawn(call_task(shared, call));
    } else {
        tokio::spawn(call_task(shared, call).instrument(span));
    }
}

/// What a call's task runs: the handler, beside the watch for the client going away, the deadline
/// and shutdown. An `async` block, not an `async fn`: an `async fn` keeps a second copy of the
/// call it takes by value for as long as it runs (1,008 bytes instead of 648).
#[allow(clippy::manual_async_fn)] // on purpose: see above
fn call_task(shared: Arc<Shared>, call: Call) -> impl Future<Output = ()> + Send + 'static {
    async move { drive_call(&shared, &call).await }
}

/// The status of a call whose end came: its credentials expired (UNAUTHENTICATED with the
/// authenticator's message) or its deadline passed.
fn ended<T>(end: Option<(T, Option<&'static str>)>) -> Status {
    match end.and_then(|(_, expired)| expired) {
        Some(message) => Status::unauthenticated(message),
        None => Status::deadline_exceeded("deadline exceeded"),
    }
}

/// Runs the call's handler until it returns, the client goes away, the deadline passes or the
/// server shuts down; then ends the call.
async fn drive_call(shared: &Shared, call: &Call) {
    let (service, method) = match shared.router.route(&call.info().path) {
        Ok(found) => found,
        Err(status) => return refuse_unimplemented(call, status),
    };
    let Some(mut handler) = service.call(method, call) else {
        let status = Status::unimplemented(format!(
            "unknown method {} for service {}",
            crate::grpc::status::truncate(method, crate::grpc::status::MAX_QUOTED_BYTES),
            service.name()
        ));
        return refuse_unimplemented(call, status);
    };
    let labels = MethodLabels::served(&call.info().path);
    stats::call_started(*labels);
    let started = Instant::now();
    // The call ends at its deadline or when its principal's credential expires, whichever is
    // first. Boxed, and only when there is one: a timer is large, and most calls have none.
    let expiry = call
        .info()
        .principal
        .as_ref()
        .and_then(|p| Some((p.expires_at?, p.expiry_message)));
    let end = match (call.info().deadline, expiry) {
        (Some(at), Some((exp, _))) if at <= exp => Some((at, None)),
        (_, Some((exp, message))) => Some((exp, Some(message))),
        (Some(at), None) => Some((at, None)),
        (None, None) => None,
    };
    let mut deadline = end.map(|(at, _)| Box::pin(tokio::time::sleep_until(at.into())));
    let mut expired = poll_fn(|cx| match deadline.as_mut() {
        Some(sleep) => sleep.as_mut().poll(cx),
        None => Poll::Pending,
    });
    let send_stalled = call.send_stalled(shared.config.send_timeout);
    let outcome = tokio::select! {
        // The handler first: on shutdown it may still say goodbye (health sends NOT_SERVING).
        biased;
        result = &mut handler => Some(result),
        cause = call.watch_peer() => {
            debug!(?cause, "client went away; handler stopped");
            None
        }
        () = send_stalled => None,
        () = &mut expired => Some(Err(ended(end))),
        () = shared.signal.wait() => {
            // The signal may have fired after the handler was polled in this same round (the
            // task was woken by something else): poll the handler once more, now that the
            // signal is set, so a handler waiting on it gets its goodbye out.
            match poll_fn(|cx| Poll::Ready(handler.as_mut().poll(cx))).await {
                Poll::Ready(result) => Some(result),
                Poll::Pending if call.drains_on_shutdown() => tokio::select! {
                    // The handler ends the call itself once it has drained.
                    biased;
                    result = &mut handler => Some(result),
                    _ = call.watch_peer() => None,
                    () = &mut expired => Some(Err(ended(end))),
                },
                Poll::Pending => Some(Err(Status::unavailable("server shutting down"))),
            }
        }
    };
    let code = match &outcome {
        None => Code::Cancelled,
        Some(Ok(())) => Code::Ok,
        Some(Err(status)) => status.code(),
    };
    stats::call_handled(*labels, code, started.elapsed());
    if let Some(Err(status)) = &outcome {
        log_failed_call(call, status, shared.signal.is_shutting_down());
    }
    if let Some(result) = outcome {
        call.finish(result);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection's task lives as long as the connection, so its size is per-connection memory.
    /// h2's connection state is about 1.3 KB of it; when the handshake's result was kept in a named
    /// local, the task held that state twice (3.1 KB).
    #[tokio::test]
    async fn the_connection_task_holds_h2_state_once() {
        let (shared, _stopper) = Server::new(ServerConfig::default()).start();
        let (io, _peer) = tokio::io::duplex(64);
        let peer: SocketAddr = ([127, 0, 0, 1], 1).into();
        let deadline = handshake_deadline(&shared.config);
        let task = serve_connection(shared, io, ConnInfo::new(peer, None), deadline, None);
        let size = std::mem::size_of_val(&task);
        // 2 KiB, 8 bytes for the connection's send budget (the idle and age deadlines are
        // boxed) and 8 for the running calls its writes look at (`coalesce`).
        assert!(size <= 2064, "the connection task is {size} bytes");
    }

    /// A call's task lives as long as the call (a chat member's, for hours), so its size is
    /// per-member memory: it holds the call and the future driving it, nothing else (a span kept
    /// twice, or a second copy of the call, would show here).
    #[tokio::test]
    async fn a_call_task_holds_the_call_and_its_driver_only() {
        let (client_io, server_io) = tokio::io::duplex(1 << 16);
        let client = tokio::spawn(async move {
            let (mut send, conn) = h2::client::handshake(client_io)
                .await
                .expect("client handshake");
            tokio::spawn(conn);
            let request = http::Request::post("http://localhost/a.B/C")
                .header(http::header::CONTENT_TYPE, "application/grpc")
                .body(())
                .expect("request");
            let (response, _body) = send.send_request(request, false).expect("send request");
            let _ = response.await;
        });
        let mut conn = h2::server::Builder::new()
            .handshake::<_, Chunk>(server_io)
            .await
            .expect("server handshake");
        let (request, respond) = conn.accept().await.expect("a request").expect("no error");
        let (shared, _stopper) = Server::new(ServerConfig::default()).start();
        let peer: SocketAddr = ([127, 0, 0, 1], 1).into();
        let permit = Arc::new(Semaphore::new(1))
            .try_acquire_owned()
            .ok()
            .map(|p| Activity::new().enter(p));
        let conn_info = ConnInfo::new(peer, None);
        let budget = ConnectionBudget::new(1 << 20, 0, shared.send_total.clone());
        let call =
            accept_call(&shared, request, respond, &conn_info, &budget, permit).expect("accepted");
        let parts = std::mem::size_of_val(&call)
            + std::mem::size_of_val(&drive_call(&shared, &call))
            + std::mem::size_of_val(&shared);
        let task = call_task(shared, call);
        let size = std::mem::size_of_val(&task);
        assert!(
            size <= parts + 16,
            "a call's task is {size} bytes, its parts {parts}"
        );
        drop(task);
        drop(conn);
        let _ = client.await;
    }
}
