//! `h2chat serve`: the server's flags (limits, rooms, budgets, Redis, metrics) turned into its
//! configuration, and its start: logging, metrics, TLS and tokens checked, the listeners bound,
//! the services served until a signal.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;
use h2chat::grpc::codec::DEFAULT_MAX_MESSAGE_BYTES;
use h2chat::grpc::server::{self as srv, Listener, ServerConfig};
use h2chat::services::app::{self, AppConfig};
use h2chat::services::chat::flow::{self, FlowLimits};
use h2chat::services::chat::presence;
use h2chat::services::chat::room::{self, RoomLimits};
use h2chat::services::chat::{self, ChatConfig};
use h2chat::services::logs::ring::LogRing;
use h2chat::signal::interrupted;

use crate::auth::AuthArgs;
use crate::flags::{self, ListenAddr};
use crate::logging::{init_logging, LogArgs};
use crate::tls::{reload_on_hangup, TlsArgs};

/// The smallest `--max-message-bytes`: below it not even a chat join or a reflection request fits.
const MIN_MESSAGE_BYTES: u64 = 1024;
/// The smallest `--max-header-list-bytes`: a gRPC request's own headers need a few hundred bytes.
const MIN_HEADER_LIST_BYTES: u64 = 1024;
/// The smallest `--small-frame-budget-bytes`: less closes ordinary connections.
const MIN_SMALL_FRAME_BUDGET_BYTES: u64 = 64 << 10;
/// The smallest `--history-bytes`: a room must hold at least its largest event.
const MIN_HISTORY_BYTES: u64 = 16 << 10;
/// The largest `--max-id-bytes`: ids are names, not payloads.
const MAX_ID_BYTES: u64 = 1024;

#[derive(Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on, HOST:PORT (a host name is resolved; 0.0.0.0 or [::] is every
    /// interface); TLS when --tls-cert is given.
    #[arg(long, default_value = "127.0.0.1:50051", value_parser = flags::listen_addr)]
    addr: ListenAddr,
    #[command(flatten)]
    tls: TlsArgs,
    #[command(flatten)]
    auth: AuthArgs,
    /// Largest request message in bytes, before and after decompression.
    #[arg(long, value_parser = flags::whole::<usize>(MIN_MESSAGE_BYTES, Some(u32::MAX as u64)), default_value_t = DEFAULT_MAX_MESSAGE_BYTES)]
    max_message_bytes: usize,
    /// HTTP/2 max concurrent streams per connection; also caps running calls per connection.
    #[arg(long, value_parser = flags::whole::<u32>(1, Some(u32::MAX as u64)), default_value_t = srv::DEFAULT_MAX_CONCURRENT_STREAMS)]
    max_concurrent_streams: u32,
    /// Largest request header list in bytes.
    #[arg(long, value_parser = flags::whole::<u32>(MIN_HEADER_LIST_BYTES, Some(u32::MAX as u64)), default_value_t = srv::DEFAULT_MAX_HEADER_LIST_BYTES)]
    max_header_list_bytes: u32,
    /// Streams a client may open and reset before the server accepts them (rapid-reset guard).
    #[arg(long, value_parser = flags::whole::<usize>(0, None), default_value_t = srv::DEFAULT_MAX_PENDING_ACCEPT_RESET_STREAMS)]
    max_pending_accept_reset_streams: usize,
    /// Streams the server may reset for protocol errors before closing the connection.
    #[arg(long, value_parser = flags::whole::<usize>(0, None), default_value_t = srv::DEFAULT_MAX_LOCAL_ERROR_RESET_STREAMS)]
    max_local_error_reset_streams: usize,
    /// Bytes of bookkeeping h2 may hold for received small DATA frames per connection before it
    /// closes the connection (ENHANCE_YOUR_CALM).
    #[arg(long, value_parser = flags::whole::<usize>(MIN_SMALL_FRAME_BUDGET_BYTES, None), default_value_t = srv::DEFAULT_SMALL_FRAME_BUDGET_BYTES)]
    small_frame_budget_bytes: usize,
    /// Open connections at once [default: the open-file limit minus 64]; above that the server
    /// refuses to start.
    #[arg(long, value_parser = flags::whole::<usize>(1, None))]
    max_connections: Option<usize>,
    /// Seconds a new connection has to complete the HTTP/2 handshake.
    #[arg(long, value_parser = flags::seconds(), default_value_t = srv::DEFAULT_HANDSHAKE_TIMEOUT.as_secs_f64())]
    handshake_timeout: f64,
    /// Seconds graceful shutdown waits for calls to end.
    #[arg(long, value_parser = flags::seconds_or_zero(), default_value_t = srv::DEFAULT_SHUTDOWN_GRACE.as_secs_f64())]
    shutdown_grace: f64,
    /// Cap on any call's duration in seconds (on top of the client's deadline); 0 = none.
    #[arg(long, value_parser = flags::seconds_or_zero(), default_value_t = 0.0)]
    max_call_duration: f64,
    /// Seconds between keepalive PINGs on each connection (0 = off).
    #[arg(long, value_parser = flags::seconds_or_zero(), default_value_t = srv::DEFAULT_KEEPALIVE_INTERVAL.as_secs_f64())]
    keepalive_interval: f64,
    /// Seconds a keepalive PING may go unanswered before the connection is closed.
    #[arg(long, value_parser = flags::seconds(), default_value_t = srv::DEFAULT_KEEPALIVE_TIMEOUT.as_secs_f64())]
    keepalive_timeout: f64,
    /// Events each room keeps.
    #[arg(long, value_parser = flags::whole::<usize>(1, None), default_value_t = room::DEFAULT_HISTORY_EVENTS)]
    history: usize,
    /// Bytes of events each room keeps.
    #[arg(long, value_parser = flags::whole::<usize>(MIN_HISTORY_BYTES, None), default_value_t = room::DEFAULT_HISTORY_BYTES)]
    history_bytes: usize,
    /// Past events a new member receives before live traffic.
    #[arg(long, value_parser = flags::whole::<usize>(0, None), default_value_t = room::DEFAULT_HISTORY_ON_JOIN)]
    history_on_join: usize,
    /// Rooms that may exist at once.
    #[arg(long, value_parser = flags::whole::<usize>(1, None), default_value_t = room::DEFAULT_MAX_ROOMS)]
    max_rooms: usize,
    /// Members per room.
    #[arg(long, value_parser = flags::whole::<usize>(1, None), default_value_t = room::DEFAULT_MAX_MEMBERS_PER_ROOM)]
    max_members_per_room: usize,
    /// Rooms with more members than this announce joins and leaves in batches, one presence event
    /// per interval listing who came and went (0: every room); smaller rooms, one event each.
    #[arg(long, value_parser = flags::whole::<usize>(0, None), default_value_t = presence::DEFAULT_PRESENCE_BATCH_ABOVE)]
    presence_batch_above: usize,
    /// Seconds between a batching room's presence events, per member of the room (the room's
    /// interval grows with it, up to --presence-max-interval).
    #[arg(long, value_parser = flags::seconds(), default_value_t = presence::DEFAULT_PRESENCE_INTERVAL_PER_MEMBER.as_secs_f64())]
    presence_interval_per_member: f64,
    /// Longest wait in seconds between a batching room's presence events.
    #[arg(long, value_parser = flags::seconds(), default_value_t = presence::DEFAULT_PRESENCE_MAX_INTERVAL.as_secs_f64())]
    presence_max_interval: f64,
    /// Seconds a busy room of more than --delivery-window-above members gathers posts before
    /// waking its members (0: none): a post into a room whose members no post woke for this long
    /// goes out at once, later ones together at the window's end (the poster gets its own at
    /// once). Fewer wake-ups and writes for up to this much latency; local rooms only.
    #[arg(long, value_parser = flags::seconds_or_zero(), default_value_t = room::DEFAULT_DELIVERY_WINDOW.as_secs_f64())]
    delivery_window: f64,
    /// Rooms with more members than this hold posts for --delivery-window (0: every room);
    /// smaller rooms wake their members for every post at once.
    #[arg(long, value_parser = flags::whole::<usize>(0, None), default_value_t = room::DEFAULT_DELIVERY_WINDOW_ABOVE)]
    delivery_window_above: usize,
    /// Joined chat calls per connection.
    #[arg(long, value_parser = flags::whole::<usize>(1, None), default_value_t = chat::DEFAULT_MAX_JOINS_PER_CONNECTION)]
    max_joins_per_connection: usize,
    /// Longest room or sender id in bytes.
    #[arg(long, value_parser = flags::whole::<usize>(1, Some(MAX_ID_BYTES)), default_value_t = chat::DEFAULT_MAX_ID_BYTES)]
    max_id_bytes: usize,
    /// Longest chat text in bytes.
    #[arg(long, value_parser = flags::whole::<usize>(1, None), default_value_t = chat::DEFAULT_MAX_TEXT_BYTES)]
    max_text_bytes: usize,
    /// Posts per second per member (0 = unlimited).
    #[arg(long, value_parser = flags::decimal(0.0, true, None), default_value_t = chat::DEFAULT_MAX_POST_RATE)]
    max_post_rate: f64,
    /// Posts a member may make in a burst before the rate applies.
    #[arg(long, value_parser = flags::decimal(1.0, true, None), default_value_t = chat::DEFAULT_POST_BURST)]
    post_burst: f64,
    /// How far the slowest reading member may fall behind, in percent of --history and of
    /// --history-bytes, before the room stops reading its posters (0 = never: slow members get gaps).
    #[arg(long, value_parser = flags::whole::<u32>(0, Some(flow::MAX_HIGH_WATER_PERCENT.into())), default_value_t = flow::DEFAULT_HIGH_WATER_PERCENT)]
    backpressure_high_water: u32,
    /// Seconds a member blocked on its window may hold its room back before it counts as stalled
    /// (the room then goes on without it, and it gets a gap).
    #[arg(long, value_parser = flags::seconds_or_zero(), default_value_t = flow::DEFAULT_STALL_GRACE.as_secs_f64())]
    stall_grace: f64,
    /// An origin (`https://host:port`) whose pages may call the server with gRPC-Web, besides the
    /// server's own; repeatable, `*` for any.
    #[arg(long = "web-origin")]
    web_origins: Vec<String>,
    /// Serve Prometheus metrics over HTTP/1.1 on this HOST:PORT (any path; off by default).
    #[arg(long, value_parser = flags::listen_addr)]
    metrics_addr: Option<ListenAddr>,
    #[command(flatten)]
    logs: LogArgs,
    #[command(flatten)]
    budgets: BudgetArgs,
    #[command(flatten)]
    redis: RedisArgs,
}

/// Rooms shared by several servers through Redis (issue 16).
#[derive(Args)]
struct RedisArgs {
    /// Share rooms with every server started with the same Redis: redis://HOST:PORT[/DB] or
    /// rediss://HOST:PORT[/DB] (TLS). Without it, rooms live in this process.
    #[arg(long, value_parser = flags::redis_url)]
    redis: Option<String>,
    /// Seconds a server's claim on its members' names lasts in Redis without renewal (renewed
    /// every third of it): a server that dies loses its members within about this time.
    #[arg(long, value_parser = flags::decimal(0.1, true, Some(86_400.0)), default_value_t = chat::redis::DEFAULT_PRESENCE_TTL.as_secs_f64())]
    redis_presence_ttl: f64,
    /// Milliseconds a Redis command, a connection attempt or the subscription's connection may
    /// take before it counts as failed: a post that waits longer is refused UNAVAILABLE.
    #[arg(long, value_parser = flags::whole::<u64>(1, Some(3_600_000)), default_value_t = chat::redis::DEFAULT_REDIS_TIMEOUT.as_millis() as u64)]
    redis_timeout_ms: u64,
    /// Posts one member may have sent to Redis and not had answered; past it the member's
    /// stream is not read (its client's window fills) until the oldest is answered.
    #[arg(long, value_parser = flags::whole::<usize>(1, Some(4096)), default_value_t = chat::redis::DEFAULT_POSTS_IN_FLIGHT)]
    redis_posts_in_flight: usize,
    /// Scripts (joins, posts, leaves, renewals) this server may have sent to Redis and not had
    /// answered; more wait in the server, in order.
    #[arg(long, value_parser = flags::whole::<usize>(1, Some(1 << 20)), default_value_t = chat::redis::DEFAULT_SCRIPTS_IN_FLIGHT)]
    redis_scripts_in_flight: usize,
}

impl RedisArgs {
    /// The shared rooms' configuration; `None` without `--redis` (the URL was checked when
    /// parsed).
    fn config(&self, secs: fn(f64) -> Duration) -> Option<chat::redis::RedisConfig> {
        let url = self.redis.as_ref()?;
        let config = chat::redis::RedisConfig::new(url, secs(self.redis_presence_ttl)).ok()?;
        Some(chat::redis::RedisConfig {
            timeout: Duration::from_millis(self.redis_timeout_ms),
            posts_in_flight: self.redis_posts_in_flight,
            scripts_in_flight: self.redis_scripts_in_flight,
            ..config
        })
    }
}

/// What a peer can make the server hold: budgets and the limits on connections (issue 12).
#[derive(Args)]
struct BudgetArgs {
    /// Response bytes one connection may hold encoded and not yet written.
    #[arg(long, value_parser = flags::whole::<usize>(1 << 14, None), default_value_t = srv::DEFAULT_MAX_SEND_BUFFER_PER_CONNECTION)]
    max_send_buffer_per_connection: usize,
    /// Response bytes the whole server may hold encoded and not yet written (beyond 16 KiB per
    /// connection that is always its own).
    #[arg(long, value_parser = flags::whole::<usize>(0, None), default_value_t = srv::DEFAULT_MAX_SEND_BUFFER_TOTAL)]
    max_send_buffer_total: usize,
    /// Seconds a response may wait for the client to grant flow-control window before its
    /// stream is reset (0 = forever).
    #[arg(long, value_parser = flags::seconds_or_zero(), default_value_t = srv::DEFAULT_SEND_TIMEOUT.as_secs_f64())]
    send_timeout: f64,
    /// HTTP/2 receive window of each stream in bytes: what a call whose handler is not reading
    /// may hold (the connection's window is this times --max-concurrent-streams).
    #[arg(long, value_parser = flags::whole::<u32>(1 << 14, Some((1 << 31) - 1)), default_value_t = srv::DEFAULT_INITIAL_STREAM_WINDOW_BYTES)]
    initial_stream_window_bytes: u32,
    /// Open connections per client IP address (0 = no cap).
    #[arg(long, value_parser = flags::whole::<usize>(0, None), default_value_t = 0)]
    max_connections_per_ip: usize,
    /// Seconds a connection may have no calls before it gets GOAWAY (0 = forever).
    #[arg(long, value_parser = flags::seconds_or_zero(), default_value_t = srv::DEFAULT_MAX_CONNECTION_IDLE.as_secs_f64())]
    max_connection_idle: f64,
    /// Seconds (±10%) after which a connection gets GOAWAY (0 = never).
    #[arg(long, value_parser = flags::seconds_or_zero(), default_value_t = 0.0)]
    max_connection_age: f64,
    /// Seconds calls may go on after the age GOAWAY before the connection is closed (0 = until
    /// they end).
    #[arg(long, value_parser = flags::seconds_or_zero(), default_value_t = 0.0)]
    max_connection_age_grace: f64,
    /// Pending connections the kernel queues for accept.
    #[arg(long, value_parser = flags::whole::<u32>(1, None), default_value_t = srv::admission::DEFAULT_LISTEN_BACKLOG)]
    listen_backlog: u32,
    /// Also serve grpc.testing.TestService, the gRPC interop test service (its clients choose
    /// how much the server sends, so it is off unless asked for).
    #[arg(long)]
    interop: bool,
}

impl ServeArgs {
    /// The configuration, with `ring` as the log the server records into and watchers read.
    fn config(&self, ring: LogRing) -> AppConfig {
        // Negative or NaN is 0, too large (or infinite) is "forever": never a panic at startup.
        let secs = h2chat::cli::duration_from_secs;
        AppConfig {
            server: ServerConfig {
                max_message_bytes: self.max_message_bytes,
                max_concurrent_streams: self.max_concurrent_streams,
                max_header_list_bytes: self.max_header_list_bytes,
                max_pending_accept_reset_streams: self.max_pending_accept_reset_streams,
                max_local_error_reset_streams: self.max_local_error_reset_streams,
                max_connections: self
                    .max_connections
                    .unwrap_or_else(srv::admission::max_connections_for_file_limit),
                max_connections_per_ip: (self.budgets.max_connections_per_ip > 0)
                    .then_some(self.budgets.max_connections_per_ip),
                max_connection_idle: (self.budgets.max_connection_idle > 0.0)
                    .then(|| secs(self.budgets.max_connection_idle)),
                max_connection_age: (self.budgets.max_connection_age > 0.0)
                    .then(|| secs(self.budgets.max_connection_age)),
                max_connection_age_grace: (self.budgets.max_connection_age_grace > 0.0)
                    .then(|| secs(self.budgets.max_connection_age_grace)),
                handshake_timeout: secs(self.handshake_timeout),
                shutdown_grace: secs(self.shutdown_grace),
                max_call_duration: (self.max_call_duration > 0.0)
                    .then(|| secs(self.max_call_duration)),
                small_frame_budget_bytes: self.small_frame_budget_bytes,
                keepalive_interval: (self.keepalive_interval > 0.0)
                    .then(|| secs(self.keepalive_interval)),
                keepalive_timeout: secs(self.keepalive_timeout),
                max_send_buffer_per_connection: self.budgets.max_send_buffer_per_connection,
                max_send_buffer_total: self.budgets.max_send_buffer_total,
                send_timeout: (self.budgets.send_timeout > 0.0)
                    .then(|| secs(self.budgets.send_timeout)),
                initial_stream_window_bytes: self.budgets.initial_stream_window_bytes,
            },
            chat: ChatConfig {
                rooms: RoomLimits {
                    history_events: self.history,
                    history_bytes: self.history_bytes,
                    history_on_join: self.history_on_join,
                    max_rooms: self.max_rooms,
                    max_members_per_room: self.max_members_per_room,
                    flow: FlowLimits {
                        high_water_percent: self.backpressure_high_water,
                        stall_grace: secs(self.stall_grace),
                    },
                    presence: presence::PresenceLimits {
                        batch_above: self.presence_batch_above,
                        interval_per_member: secs(self.presence_interval_per_member),
                        max_interval: secs(self.presence_max_interval),
                    },
                    delivery_window: secs(self.delivery_window),
                    delivery_window_above: self.delivery_window_above,
                },
                max_id_bytes: self.max_id_bytes,
                max_text_bytes: self.max_text_bytes,
                max_post_rate: self.max_post_rate,
                post_burst: self.post_burst,
                max_joins_per_connection: self.max_joins_per_connection,
                shutdown_drain: chat::DEFAULT_SHUTDOWN_DRAIN,
                redis: self.redis.config(secs),
            },
            logs: self.logs.config(ring),
            interop: self.budgets.interop,
            auth: None,
            web_origins: self.web_origins.clone(),
        }
    }
}

pub(crate) async fn serve(args: ServeArgs) -> Result<(), Box<dyn std::error::Error>> {
    let ring = args.logs.ring();
    init_logging(Some(&ring), args.logs.log_format)?;
    if let Some(metrics) = &args.metrics_addr {
        let addr = h2chat::exporter::install(metrics.addrs[0])?;
        tracing::info!(%addr, "serving metrics");
    }
    let tls = args.tls.acceptor()?;
    let authenticator = args.auth.authenticator()?;
    let plaintext = tls.is_none() || args.tls.plaintext_addr.is_some();
    if authenticator.is_some() && plaintext && !args.auth.allow_insecure_auth {
        return Err(
            "token authentication on a plaintext listener would carry tokens in the \
                    clear: serve TLS only (--tls-cert, --tls-key, no --plaintext-addr), or pass \
                    --allow-insecure-auth for tests and local use"
                .into(),
        );
    }
    let backlog = args.budgets.listen_backlog;
    let bind = |addrs: Vec<SocketAddr>, text: String| async move {
        listen(&addrs, backlog).map_err(|e| format!("cannot listen on {text}: {e}"))
    };
    let main_listener = bind(args.addr.addrs.clone(), args.addr.text.clone()).await?;
    let mut listeners = Vec::new();
    match &tls {
        Some(tls) => {
            listeners.push(Listener::tls(main_listener, tls.clone()));
            if let Some(addr) = args.tls.plaintext_addr.clone() {
                listeners.push(Listener::plaintext(bind(addr.addrs, addr.text).await?));
            }
            reload_on_hangup(tls.clone());
        }
        None => listeners.push(Listener::plaintext(main_listener)),
    }
    let mut config = args.config(ring);
    config.auth = authenticator;
    let server = app::build(config);
    // Before saying it listens: from then on SIGTERM means graceful shutdown.
    let signal = interrupted();
    for listener in &listeners {
        let transport = if listener.is_tls() {
            "tls"
        } else {
            "plaintext"
        };
        tracing::info!(addr = %listener.local_addr()?, transport, services = ?server.service_names(), "listening");
    }
    server.serve_on(listeners, signal).await?;
    // With --redis: the members that just left are announced before the process ends.
    chat::redis::settle(Duration::from_secs(2)).await;
    Ok(())
}

/// A listening socket on the first of `addrs` that works, with room for `backlog` pending
/// connections.
fn listen(
    addrs: &[std::net::SocketAddr],
    backlog: u32,
) -> std::io::Result<tokio::net::TcpListener> {
    let mut last = std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address");
    for &addr in addrs {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        match socket.bind(addr).and_then(|()| socket.listen(backlog)) {
            Ok(listener) => return Ok(listener),
            Err(e) => last = e,
        }
    }
    Err(last)
}
