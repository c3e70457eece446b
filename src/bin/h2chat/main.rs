//! The `h2chat` command: `h2chat serve` runs the server; `h2chat chat` is the chat client;
//! `h2chat stdio` runs the server as a JSON-lines node on stdin/stdout; `h2chat bench …` measures
//! one.

mod bench;
mod flags;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

mod self_signed;
use std::time::Duration;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use flags::ListenAddr;
use h2chat::auth::mint::{self, TokenRequest};
use h2chat::auth::{self, keys, AuthConfig, JwtAuthenticator};
use h2chat::client::credentials::TokenSource;
use h2chat::client::render::Format;
use h2chat::client::{self, ChatOptions};
use h2chat::grpc::client::ClientTls;
use h2chat::grpc::codec::DEFAULT_MAX_MESSAGE_BYTES;
use h2chat::grpc::server::{
    self as srv, ClientAuth, Listener, ServerConfig, TlsAcceptor, TlsFiles,
};
use h2chat::services::app::{self, AppConfig};
use h2chat::services::chat::flow::{self, FlowLimits};
use h2chat::services::chat::presence;
use h2chat::services::chat::room::{self, RoomLimits};
use h2chat::services::chat::{self, ChatConfig};
use h2chat::services::logs::ring::{self, LogRing};
use h2chat::services::logs::tail;
use h2chat::services::logs::LogsConfig;
use h2chat::signal::interrupted;
use h2chat::stdio::{self, StdioConfig};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

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
/// The smallest `stdio --max-line-bytes`: an init request must fit.
const MIN_LINE_BYTES: u64 = 128;

#[derive(Parser)]
#[command(
    name = "h2chat",
    version,
    about = "A gRPC chat server written directly on h2"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gRPC server (chat, reflection and the other services).
    Serve(Box<ServeArgs>),
    /// Measure a running server: fan-out, idle members, and the baselines (raw h2, plain TCP).
    Bench(bench::BenchArgs),
    /// Run the same server as a JSON-lines node: requests on stdin, replies on stdout, logs on
    /// stderr.
    Stdio(StdioArgs),
    /// Print an HS256 bearer token signed with a secret file (a development tool: in production
    /// tokens come from an identity provider).
    Token(TokenArgs),
    /// Chat in a room: interactive in a terminal, else one message per input line.
    ///
    /// Exit codes: 0 left normally; 1 local failure; 2 bad usage; 3 server unreachable; 4 name
    /// taken; 5 invalid room, name or text; 6 join refused otherwise; 130 stopped by a signal.
    Chat(ChatArgs),
}

#[derive(Args)]
struct TokenArgs {
    /// The HS256 secret file the server checks tokens with (--auth-hs256-secret-file).
    #[arg(long)]
    secret_file: PathBuf,
    /// The token's subject.
    #[arg(long)]
    sub: String,
    /// The name to chat as (default: the subject).
    #[arg(long)]
    name: Option<String>,
    /// Rooms the token may join: names or `prefix*` patterns, comma-separated (default: all).
    #[arg(long, value_delimiter = ',')]
    rooms: Option<Vec<String>>,
    /// Lifetime: a number with s, m, h or d (e.g. 90s, 1h).
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    ttl: Duration,
    /// The `iss` claim.
    #[arg(long)]
    issuer: Option<String>,
    /// The `aud` claim.
    #[arg(long)]
    audience: Option<String>,
}

/// `90s`, `5m`, `1h`, `2d`, or plain seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 90s, 5m, 1h or 2d"))?;
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{text:?}: the unit must be s, m, h or d")),
    };
    Ok(Duration::from_secs(n.saturating_mul(unit)))
}

fn token(args: TokenArgs) -> Result<(), Box<dyn std::error::Error>> {
    // The same checks as the server's: a short secret is refused here too.
    keys::hs256_secret(&args.secret_file)?;
    let secret = std::fs::read(&args.secret_file)?;
    let request = TokenRequest {
        sub: args.sub,
        name: args.name,
        rooms: args.rooms,
        issuer: args.issuer,
        audience: args.audience,
        ttl: args.ttl,
        not_before: None,
    };
    println!("{}", mint::hs256(secret.trim_ascii(), &request)?);
    Ok(())
}

#[derive(Args)]
struct ChatArgs {
    /// Server address, host:port.
    #[arg(long, default_value = "127.0.0.1:50051", value_parser = flags::connect_addr)]
    addr: String,
    /// Room to join.
    #[arg(long)]
    room: String,
    /// Name to chat as; asked for if missing (scripted: the first input line).
    #[arg(long)]
    name: Option<String>,
    /// How room events are printed.
    #[arg(long, value_enum, default_value_t = FormatArg::Text)]
    format: FormatArg,
    /// Speak TLS (the server's certificate is checked against the system's roots, or --ca).
    #[arg(long)]
    tls: bool,
    /// Trust this CA (PEM) instead of the system's roots; implies --tls.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Present this client certificate (PEM) for mTLS; implies --tls.
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// The private key of --cert (PEM).
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// Check the server's certificate against this name instead of the host in --addr.
    #[arg(long)]
    tls_server_name: Option<String>,
    /// A file holding the bearer token to send; read again on every reconnect (else the token
    /// in H2CHAT_TOKEN, if set).
    #[arg(long)]
    token_file: Option<PathBuf>,
}

impl ChatArgs {
    /// The TLS settings asked for, if any.
    fn tls(&self) -> Result<Option<ClientTls>, String> {
        if !(self.tls || self.ca.is_some() || self.cert.is_some()) {
            return Ok(None);
        }
        let identity = self.cert.as_deref().zip(self.key.as_deref());
        let tls = ClientTls::new(self.ca.as_deref(), identity).map_err(|e| e.to_string())?;
        Ok(Some(match &self.tls_server_name {
            Some(name) => tls.with_server_name(name),
            None => tls,
        }))
    }

    /// Where the token comes from: --token-file, else `H2CHAT_TOKEN`.
    fn token(&self) -> Option<TokenSource> {
        match &self.token_file {
            Some(path) => Some(TokenSource::File(path.clone())),
            None => std::env::var("H2CHAT_TOKEN")
                .ok()
                .filter(|t| !t.trim().is_empty())
                .map(TokenSource::Value),
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum FormatArg {
    /// `[14:40:12] alice: hi`, `* bob joined`.
    Text,
    /// One JSON object per line.
    Json,
}

/// How log lines are written to stderr.
#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per event (`timestamp`, `level`, `fields`, `target`, `span`).
    Json,
}

/// The log flags `serve` and `stdio` share.
#[derive(Args)]
struct LogArgs {
    /// How log lines are written to stderr (the filter is RUST_LOG, default `info`).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Log entries the server keeps for LogWatcher.WatchLogs.
    #[arg(long, value_parser = flags::whole::<usize>(1, None), default_value_t = ring::DEFAULT_LOG_HISTORY)]
    log_history: usize,
    /// A file to follow like `tail -F` into the log (one entry per line; a leading level word
    /// such as ERROR sets the level).
    #[arg(long)]
    watch_file: Option<PathBuf>,
    /// Milliseconds between two looks at the watch file.
    #[arg(long, value_parser = flags::whole::<u64>(1, None), default_value_t = tail::DEFAULT_POLL_INTERVAL.as_millis() as u64)]
    watch_poll_ms: u64,
}

impl LogArgs {
    /// The ring these flags ask for.
    fn ring(&self) -> LogRing {
        LogRing::new(self.log_history)
    }

    /// The log configuration, with `ring` as the log the server records into and watchers read.
    fn config(&self, ring: LogRing) -> LogsConfig {
        LogsConfig {
            ring,
            watch_file: self.watch_file.clone(),
            poll_interval: Duration::from_millis(self.watch_poll_ms.max(1)),
        }
    }
}

#[derive(Args)]
struct StdioArgs {
    #[command(flatten)]
    logs: LogArgs,
    /// Seconds running calls may go on once stdin has ended.
    #[arg(long, value_parser = flags::seconds_or_zero(), default_value_t = stdio::DEFAULT_DRAIN_TIMEOUT.as_secs_f64())]
    drain_timeout: f64,
    /// Longest input line in bytes.
    #[arg(long, value_parser = flags::whole::<usize>(MIN_LINE_BYTES, None), default_value_t = stdio::DEFAULT_MAX_LINE_BYTES)]
    max_line_bytes: usize,
}

#[derive(Args)]
struct ServeArgs {
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
    /// Seconds a busy room gathers posts before waking its members (0: none): a post into a room
    /// whose members no post woke for this long goes out at once, later ones together at the
    /// window's end. Fewer wake-ups and writes for up to this much latency; local rooms only.
    #[arg(long, value_parser = flags::seconds_or_zero(), default_value_t = room::DEFAULT_DELIVERY_WINDOW.as_secs_f64())]
    delivery_window: f64,
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

/// The server's TLS flags.
#[derive(Args)]
struct TlsArgs {
    /// Serve TLS on --addr with this certificate chain (PEM, leaf first); SIGHUP reloads it.
    #[arg(long, requires = "tls_key", conflicts_with = "tls_self_signed")]
    tls_cert: Option<PathBuf>,
    /// Serve TLS on --addr with a certificate for localhost made at startup (its SHA-256
    /// fingerprint is printed): for trying the chat page at https://localhost:PORT/.
    #[arg(long)]
    tls_self_signed: bool,
    /// The private key of --tls-cert (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// CA certificates (PEM) that client certificates must chain to (mTLS).
    #[arg(long, requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// Whether clients must present a certificate signed by --tls-client-ca.
    #[arg(long, value_enum, requires = "tls_client_ca")]
    tls_client_auth: Option<ClientAuthArg>,
    /// With TLS on --addr, also serve plaintext HTTP/2 on this address, HOST:PORT (off unless
    /// given).
    #[arg(long, requires = "tls_cert", value_parser = flags::listen_addr)]
    plaintext_addr: Option<ListenAddr>,
}

/// The server's bearer-token flags.
#[derive(Args)]
struct AuthArgs {
    /// Check bearer tokens signed HS256 with the secret in this file (at least 32 bytes).
    #[arg(long, group = "auth_key")]
    auth_hs256_secret_file: Option<PathBuf>,
    /// Check bearer tokens with this public key (PEM: RSA → RS256 etc., EC → ES256/ES384,
    /// Ed25519 → EdDSA).
    #[arg(long, group = "auth_key")]
    auth_public_key: Option<PathBuf>,
    /// Check bearer tokens with the keys of this JWKS file (chosen by the token's kid).
    #[arg(long, group = "auth_key")]
    auth_jwks: Option<PathBuf>,
    /// The `iss` tokens must carry.
    #[arg(long, requires = "auth_key")]
    auth_issuer: Option<String>,
    /// The `aud` tokens must carry.
    #[arg(long, requires = "auth_key")]
    auth_audience: Option<String>,
    /// Seconds of clock skew allowed on a token's exp and nbf.
    #[arg(long, default_value_t = auth::DEFAULT_LEEWAY.as_secs())]
    auth_leeway: u64,
    /// Services that need a token, comma-separated (`*` = all).
    #[arg(long, value_delimiter = ',', default_values_t = auth::DEFAULT_SERVICES.iter().map(|s| s.to_string()))]
    auth_services: Vec<String>,
    /// Allow token authentication without TLS (tokens then cross the network in the clear: for
    /// tests and local use only).
    #[arg(long)]
    allow_insecure_auth: bool,
}

impl AuthArgs {
    /// The authenticator these flags ask for; `None` without a key flag.
    fn authenticator(&self) -> Result<Option<Arc<JwtAuthenticator>>, Box<dyn std::error::Error>> {
        let keys = if let Some(path) = &self.auth_hs256_secret_file {
            vec![keys::hs256_secret(path)?]
        } else if let Some(path) = &self.auth_public_key {
            vec![keys::public_key(path)?]
        } else if let Some(path) = &self.auth_jwks {
            keys::jwks(path)?
        } else {
            return Ok(None);
        };
        let config = AuthConfig {
            keys,
            issuer: self.auth_issuer.clone(),
            audience: self.auth_audience.clone(),
            leeway: Duration::from_secs(self.auth_leeway),
            services: self.auth_services.clone(),
        };
        Ok(Some(Arc::new(JwtAuthenticator::new(config)?)))
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum ClientAuthArg {
    /// Clients may present a certificate.
    Optional,
    /// Clients must present a certificate.
    Required,
}

impl TlsArgs {
    /// The TLS acceptor these flags ask for, loaded; `None` without --tls-cert.
    fn acceptor(&self) -> Result<Option<Arc<TlsAcceptor>>, Box<dyn std::error::Error>> {
        let made;
        let (cert, key) = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => (cert, key),
            _ if self.tls_self_signed => {
                made = self_signed::make()?;
                tracing::info!(
                    fingerprint = %made.fingerprint,
                    cert = %made.cert.display(),
                    "TLS with a self-signed certificate for localhost made at startup: compare \
                     its SHA-256 fingerprint with the browser's before accepting it"
                );
                (&made.cert, &made.key)
            }
            _ => return Ok(None),
        };
        let client_auth = match (&self.tls_client_ca, self.tls_client_auth) {
            (None, _) => ClientAuth::None,
            (Some(_), Some(ClientAuthArg::Optional)) => ClientAuth::Optional,
            // A client CA without a word on it means the CA is there to be used.
            (Some(_), Some(ClientAuthArg::Required) | None) => ClientAuth::Required,
        };
        let files = TlsFiles {
            cert_chain: cert.clone(),
            key: key.clone(),
            client_ca: self.tls_client_ca.clone(),
            client_auth,
        };
        Ok(Some(Arc::new(TlsAcceptor::load(files)?)))
    }
}

/// Reloads the TLS certificate and key on every SIGHUP, for new connections; a bad pair is
/// refused with an error and the old one stays.
fn reload_on_hangup(tls: Arc<TlsAcceptor>) {
    let mut hangups = h2chat::signal::hangups();
    tokio::spawn(async move {
        while hangups.next().await {
            match tls.reload() {
                Ok(()) => tracing::info!(
                    cert = %tls.files().cert_chain.display(),
                    "SIGHUP: TLS certificate reloaded; new connections use it"
                ),
                Err(e) => tracing::error!(
                    error = %e,
                    "SIGHUP: TLS certificate not reloaded; still serving the previous one"
                ),
            }
        }
    });
}

/// Logs to stderr (as `format` says) and, if given, into `ring`, both filtered by `RUST_LOG`
/// (default `info,h2::proto=error`: h2's per-frame complaints about peers are not warnings). A
/// `RUST_LOG` that does not parse is an error: a typo must not silently
/// turn logging off.
fn init_logging(ring: Option<&LogRing>, format: LogFormat) -> Result<(), String> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(text) => EnvFilter::try_new(&text).map_err(|e| {
            format!("invalid RUST_LOG {text:?}: {e} (e.g. RUST_LOG=info,h2chat=debug)")
        })?,
        Err(std::env::VarError::NotPresent) => EnvFilter::new("info,h2::proto=error"),
        Err(std::env::VarError::NotUnicode(_)) => return Err("RUST_LOG is not UTF-8".into()),
    };
    let ansi = std::io::stderr().is_terminal();
    let (text, json) = match format {
        LogFormat::Text => (
            Some(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(ansi),
            ),
            None,
        ),
        LogFormat::Json => (
            None,
            Some(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(std::io::stderr),
            ),
        ),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(text)
        .with(json)
        .with(ring.map(LogRing::layer))
        .init();
    Ok(())
}

async fn serve(args: ServeArgs) -> Result<(), Box<dyn std::error::Error>> {
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

/// Runs the chat client; the runtime is shut down without waiting for a pending read of stdin.
fn chat(runtime: tokio::runtime::Runtime, args: ChatArgs) -> ExitCode {
    if std::env::var_os("RUST_LOG").is_some() {
        if let Err(e) = init_logging(None, LogFormat::Text) {
            eprintln!("h2chat: {e}");
            return ExitCode::from(2);
        }
    }
    let tls = match args.tls() {
        Ok(tls) => tls,
        Err(e) => {
            eprintln!("h2chat: {e}");
            return ExitCode::from(client::EXIT_USAGE);
        }
    };
    let token = args.token();
    let options = ChatOptions {
        addr: args.addr,
        room: args.room,
        name: args.name,
        format: match args.format {
            FormatArg::Text => Format::Text,
            FormatArg::Json => Format::Json,
        },
        tls,
        token,
    };
    let code = runtime.block_on(client::run(options));
    runtime.shutdown_background();
    ExitCode::from(code)
}

async fn run_stdio(args: StdioArgs) -> Result<(), Box<dyn std::error::Error>> {
    let ring = args.logs.ring();
    init_logging(Some(&ring), args.logs.log_format)?;
    let config = StdioConfig {
        app: AppConfig {
            logs: args.logs.config(ring),
            ..AppConfig::default()
        },
        drain_timeout: h2chat::cli::duration_from_secs(args.drain_timeout),
        max_line_bytes: args.max_line_bytes,
    };
    stdio::run(config, tokio::io::stdin(), tokio::io::stdout()).await?;
    Ok(())
}

fn main() -> ExitCode {
    let cli = match Cli::from_arg_matches(&flags::with_env(Cli::command()).get_matches()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("h2chat: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Serve(args) => runtime.block_on(serve(*args)),
        Command::Stdio(args) => runtime.block_on(run_stdio(args)),
        Command::Bench(args) => runtime.block_on(bench::run(args)),
        Command::Token(args) => token(args),
        Command::Chat(args) => return chat(runtime, args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("h2chat: {e}");
            ExitCode::FAILURE
        }
    }
}
