//! The `h2chat` command: `h2chat serve` runs the server; `h2chat chat` is the chat client;
//! `h2chat stdio` runs the server as a JSON-lines node on stdin/stdout; `h2chat bench …` measures
//! one.

mod bench;
mod flags;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use flags::ListenAddr;
use h2chat::client::render::Format;
use h2chat::client::{self, ChatOptions};
use h2chat::grpc::codec::DEFAULT_MAX_MESSAGE_BYTES;
use h2chat::grpc::server::{self as srv, ServerConfig};
use h2chat::services::app::{self, AppConfig};
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
    Serve(ServeArgs),
    /// Measure a running server: fan-out, idle members, and the baselines (raw h2, plain TCP).
    Bench(bench::BenchArgs),
    /// Run the same server as a JSON-lines node: requests on stdin, replies on stdout, logs on
    /// stderr.
    Stdio(StdioArgs),
    /// Chat in a room: interactive in a terminal, else one message per input line.
    ///
    /// Exit codes: 0 left normally; 1 local failure; 2 bad usage; 3 server unreachable; 4 name
    /// taken; 5 invalid room, name or text; 6 join refused otherwise; 130 stopped by a signal.
    Chat(ChatArgs),
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
    /// interface).
    #[arg(long, default_value = "127.0.0.1:50051", value_parser = flags::listen_addr)]
    addr: ListenAddr,
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
    /// Open connections at once.
    #[arg(long, value_parser = flags::whole::<usize>(1, None), default_value_t = srv::DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,
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
    /// Serve Prometheus metrics over HTTP/1.1 on this HOST:PORT (any path; off by default).
    #[arg(long, value_parser = flags::listen_addr)]
    metrics_addr: Option<ListenAddr>,
    #[command(flatten)]
    logs: LogArgs,
}

impl ServeArgs {
    /// The configuration, with `ring` as the log the server records into and watchers read.
    fn config(&self, ring: LogRing) -> AppConfig {
        // Negative or NaN is 0, too large (or infinite) is "forever": never a panic at startup.
        let secs = |s: f64| Duration::try_from_secs_f64(s.max(0.0)).unwrap_or(Duration::MAX);
        AppConfig {
            server: ServerConfig {
                max_message_bytes: self.max_message_bytes,
                max_concurrent_streams: self.max_concurrent_streams,
                max_header_list_bytes: self.max_header_list_bytes,
                max_pending_accept_reset_streams: self.max_pending_accept_reset_streams,
                max_local_error_reset_streams: self.max_local_error_reset_streams,
                max_connections: self.max_connections,
                handshake_timeout: secs(self.handshake_timeout),
                shutdown_grace: secs(self.shutdown_grace),
                max_call_duration: (self.max_call_duration > 0.0)
                    .then(|| secs(self.max_call_duration)),
                small_frame_budget_bytes: self.small_frame_budget_bytes,
                keepalive_interval: (self.keepalive_interval > 0.0)
                    .then(|| secs(self.keepalive_interval)),
                keepalive_timeout: secs(self.keepalive_timeout),
            },
            chat: ChatConfig {
                rooms: RoomLimits {
                    history_events: self.history,
                    history_bytes: self.history_bytes,
                    history_on_join: self.history_on_join,
                    max_rooms: self.max_rooms,
                    max_members_per_room: self.max_members_per_room,
                },
                max_id_bytes: self.max_id_bytes,
                max_text_bytes: self.max_text_bytes,
                max_post_rate: self.max_post_rate,
                post_burst: self.post_burst,
                max_joins_per_connection: self.max_joins_per_connection,
            },
            logs: self.logs.config(ring),
        }
    }
}

/// Logs to stderr (as `format` says) and, if given, into `ring`, both filtered by `RUST_LOG`
/// (default `info`). A `RUST_LOG` that does not parse is an error: a typo must not silently
/// turn logging off.
fn init_logging(ring: Option<&LogRing>, format: LogFormat) -> Result<(), String> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(text) => EnvFilter::try_new(&text).map_err(|e| {
            format!("invalid RUST_LOG {text:?}: {e} (e.g. RUST_LOG=info,h2chat=debug)")
        })?,
        Err(std::env::VarError::NotPresent) => EnvFilter::new("info"),
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
    let listener = tokio::net::TcpListener::bind(&args.addr.addrs[..])
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.addr.text))?;
    let server = app::build(args.config(ring));
    // Before saying it listens: from then on SIGTERM means graceful shutdown.
    let signal = interrupted();
    tracing::info!(addr = %listener.local_addr()?, services = ?server.service_names(), "listening");
    server.serve(listener, signal).await?;
    Ok(())
}

/// Runs the chat client; the runtime is shut down without waiting for a pending read of stdin.
fn chat(runtime: tokio::runtime::Runtime, args: ChatArgs) -> ExitCode {
    if std::env::var_os("RUST_LOG").is_some() {
        if let Err(e) = init_logging(None, LogFormat::Text) {
            eprintln!("h2chat: {e}");
            return ExitCode::from(2);
        }
    }
    let options = ChatOptions {
        addr: args.addr,
        room: args.room,
        name: args.name,
        format: match args.format {
            FormatArg::Text => Format::Text,
            FormatArg::Json => Format::Json,
        },
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
        drain_timeout: Duration::try_from_secs_f64(args.drain_timeout.max(0.0))
            .unwrap_or(Duration::MAX),
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
        Command::Serve(args) => runtime.block_on(serve(args)),
        Command::Stdio(args) => runtime.block_on(run_stdio(args)),
        Command::Bench(args) => runtime.block_on(bench::run(args)),
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
