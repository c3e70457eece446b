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

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tracing::{info, warn};

pub use crate::grpc::server::auth::{AuthRequest, Authenticator, Principal};
use crate::grpc::server::budget::TotalBudget;
pub use crate::grpc::server::budget::{
    DEFAULT_MAX_SEND_BUFFER_PER_CONNECTION, DEFAULT_MAX_SEND_BUFFER_TOTAL,
    DEFAULT_SEND_RESERVE_PER_CONNECTION,
};
pub use crate::grpc::server::config::{
    ServerConfig, DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_INITIAL_STREAM_WINDOW_BYTES,
    DEFAULT_KEEPALIVE_INTERVAL, DEFAULT_KEEPALIVE_TIMEOUT, DEFAULT_MAX_CONCURRENT_STREAMS,
    DEFAULT_MAX_HEADER_LIST_BYTES, DEFAULT_MAX_LOCAL_ERROR_RESET_STREAMS,
    DEFAULT_MAX_PENDING_ACCEPT_RESET_STREAMS, DEFAULT_SEND_TIMEOUT, DEFAULT_SHUTDOWN_GRACE,
    DEFAULT_SMALL_FRAME_BUDGET_BYTES,
};
use crate::grpc::server::connection::{handshake_deadline, serve_connection};
pub use crate::grpc::server::cors::CorsPolicy;
pub use crate::grpc::server::lifetime::DEFAULT_MAX_CONNECTION_IDLE;
pub use crate::grpc::server::pages::Page;
use crate::grpc::server::router::{Router, Service};
pub use crate::grpc::server::shutdown::{ShutdownSignal, ShutdownTrigger};
pub use crate::grpc::server::tls::{ClientAuth, TlsAcceptor, TlsFiles};
pub use crate::grpc::server::transport::Listener;
pub use crate::grpc::tls::TlsError;

mod accept;
pub mod admission;
pub mod auth;
pub mod budget;
pub mod call;
mod call_log;
mod call_task;
pub mod coalesce;
mod config;
mod connection;
pub mod cors;
mod keepalive;
pub mod lifetime;
pub mod linger;
mod listen;
pub mod log_rate;
pub mod pages;
pub mod router;
pub mod shutdown;
pub mod stats;
pub mod tls;
mod transport;
pub mod written;

/// Source of [`CallInfo::connection_id`](crate::grpc::server::call::CallInfo::connection_id).
static NEXT_CONNECTION_ID: AtomicU64 = AtomicU64::new(1);

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
#[derive(Clone, Debug)]
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
