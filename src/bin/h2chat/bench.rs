//! `h2chat bench …`: the command line of the benches in [`h2chat::bench`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use h2chat::bench::fanout::{self, FanoutConfig};
use h2chat::bench::idle::{self, IdleConfig};
use h2chat::bench::report::Value;
use h2chat::bench::write_floor::{self, WriteFloorConfig};
use h2chat::bench::{raw_h2, unary, BenchError, Outcome};

#[derive(Args)]
pub(crate) struct BenchArgs {
    #[command(subcommand)]
    command: BenchCommand,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Rooms, members, senders: losses, gaps, deliveries/s, latency, server CPU per delivery.
    ///
    /// Prints one JSON line on stdout and a summary on stderr. Exits with status 1 when any
    /// delivery was lost or any sequence number skipped. Start the server with
    /// `--max-post-rate 0`, or its per-member post rate limits the senders.
    Fanout(FanoutArgs),
    /// Joined members that post nothing: server memory per connection and per member, join time.
    ///
    /// Prints one JSON line on stdout and a summary on stderr. Needs `ulimit -n` above --conns.
    Idle(IdleArgs),
    /// The baseline for unary figures: h2 with no gRPC layer, answering any POST with a
    /// gRPC-shaped echo of its body. Runs until SIGINT or SIGTERM.
    RawH2Server(RawH2Args),
    /// The floor under fan-out, its server: plain TCP, no h2, no gRPC. Every 1-byte post read from
    /// any connection becomes one write of --size bytes to every open connection.
    ///
    /// A connection whose write would block is closed. Runs until SIGINT or SIGTERM; logs what it
    /// did then.
    WriteFloorServer(WriteFloorServerArgs),
    /// The floor under fan-out, its load: posts on one connection at --rate and times every
    /// write's arrival on every connection; server CPU per write, split into user and kernel time.
    ///
    /// Prints one JSON line on stdout and a summary on stderr. Exits with status 1 when any write
    /// was lost. Run it against `bench write-floor-server` with the same --size, and nothing else.
    WriteFloor(WriteFloorArgs),
    /// Writes the request body `h2load -d` sends for the unary bench (a SimpleRequest with a
    /// 10-byte payload); with --check, first checks that a server answers it with OK.
    UnaryRequest(UnaryRequestArgs),
}

#[derive(Args)]
struct FanoutArgs {
    /// The server.
    #[arg(long, default_value = "127.0.0.1:50051")]
    addr: SocketAddr,
    /// Rooms.
    #[arg(long, default_value_t = 1)]
    rooms: usize,
    /// Members per room.
    #[arg(long, default_value_t = 100)]
    members: usize,
    /// Members per room that post.
    #[arg(long, default_value_t = 1)]
    senders: usize,
    /// Posts per sender.
    #[arg(long, default_value_t = 1000)]
    messages: usize,
    /// Bytes of each post's text.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Posts per second per sender (default: flat out, paced by acks).
    #[arg(long)]
    rate: Option<f64>,
    /// Connections to spread all members over (default: one per member).
    #[arg(long)]
    conns: Option<usize>,
    /// Posts a room may have ahead of its slowest member (keep it under the server's --history).
    #[arg(long, default_value_t = fanout::DEFAULT_WINDOW)]
    window: usize,
    /// The server's process id: adds its CPU time per delivery and its memory.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Seconds allowed for joining and sending.
    #[arg(long, default_value_t = fanout::DEFAULT_TIMEOUT.as_secs_f64())]
    timeout: f64,
    /// Seconds members have after the last post to receive everything.
    #[arg(long, default_value_t = fanout::DEFAULT_DRAIN.as_secs_f64())]
    drain: f64,
}

#[derive(Args)]
struct IdleArgs {
    /// The server.
    #[arg(long, default_value = "127.0.0.1:50051")]
    addr: SocketAddr,
    /// Members to join.
    #[arg(long, default_value_t = 5000)]
    members: usize,
    /// Connections to spread them over.
    #[arg(long, default_value_t = 50)]
    conns: usize,
    /// Members per room.
    #[arg(long, default_value_t = idle::DEFAULT_MEMBERS_PER_ROOM)]
    members_per_room: usize,
    /// The server's process id: adds its memory at each step.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Seconds to wait before each memory reading.
    #[arg(long, default_value_t = idle::DEFAULT_SETTLE.as_secs_f64())]
    settle: f64,
    /// Seconds allowed for connecting and joining.
    #[arg(long, default_value_t = idle::DEFAULT_TIMEOUT.as_secs_f64())]
    timeout: f64,
}

#[derive(Args)]
struct RawH2Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:50052")]
    addr: SocketAddr,
    /// Small writes wait one scheduler turn, as h2chat's server's do.
    #[arg(long)]
    coalesce_writes: bool,
}

#[derive(Args)]
struct WriteFloorServerArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:50053")]
    addr: SocketAddr,
    /// Bytes written to each connection per post (114: a 100-byte chat text on the wire).
    #[arg(long, default_value_t = write_floor::DEFAULT_SIZE)]
    size: usize,
}

#[derive(Args)]
struct WriteFloorArgs {
    /// The write-floor server.
    #[arg(long, default_value = "127.0.0.1:50053")]
    addr: SocketAddr,
    /// Connections; each receives every post.
    #[arg(long, default_value_t = write_floor::DEFAULT_CONNS)]
    conns: usize,
    /// Posts per second, all on the first connection.
    #[arg(long, default_value_t = write_floor::DEFAULT_RATE)]
    rate: f64,
    /// Posts to send.
    #[arg(long, default_value_t = write_floor::DEFAULT_POSTS)]
    posts: u64,
    /// Bytes the server writes per post and connection: the server's --size.
    #[arg(long, default_value_t = write_floor::DEFAULT_SIZE)]
    size: usize,
    /// The server's process id: adds its CPU time per write (user and kernel) and its memory.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Seconds allowed for the whole run; what has not arrived by then is lost.
    #[arg(long, default_value_t = write_floor::DEFAULT_TIMEOUT.as_secs_f64())]
    timeout: f64,
}

#[derive(Args)]
struct UnaryRequestArgs {
    /// Where to write the request body.
    #[arg(long)]
    out: PathBuf,
    /// A server that must answer grpc.testing.TestService/UnaryCall with OK first.
    #[arg(long)]
    check: Option<SocketAddr>,
}

fn secs(s: f64) -> Duration {
    Duration::try_from_secs_f64(s.max(0.0)).unwrap_or(Duration::MAX)
}

pub(crate) async fn run(args: BenchArgs) -> Result<(), Box<dyn std::error::Error>> {
    match args.command {
        BenchCommand::Fanout(a) => {
            let outcome = fanout::run(FanoutConfig {
                addr: a.addr,
                rooms: a.rooms,
                members: a.members,
                senders: a.senders,
                messages: a.messages,
                size: a.size,
                rate: a.rate,
                conns: a.conns,
                window: a.window,
                server_pid: a.server_pid,
                timeout: secs(a.timeout),
                drain: secs(a.drain),
            })
            .await?;
            print(&outcome);
            let bad = |k: &str| !matches!(outcome.report.get(k), Some(Value::Int(0)));
            if bad("lost") || bad("seq_errors") {
                return Err(BenchError::new("deliveries were lost or out of sequence").into());
            }
        }
        BenchCommand::Idle(a) => {
            let outcome = idle::run(IdleConfig {
                addr: a.addr,
                members: a.members,
                conns: a.conns,
                members_per_room: a.members_per_room,
                server_pid: a.server_pid,
                settle: secs(a.settle),
                timeout: secs(a.timeout),
            })
            .await?;
            print(&outcome);
        }
        BenchCommand::RawH2Server(a) => {
            super::init_logging(None, super::LogFormat::Text)?;
            let listener = tokio::net::TcpListener::bind(a.addr)
                .await
                .map_err(|e| format!("cannot listen on {}: {e}", a.addr))?;
            tracing::info!(addr = %listener.local_addr()?, "raw-h2 baseline listening");
            raw_h2::serve(listener, a.coalesce_writes, h2chat::signal::interrupted()).await?;
        }
        BenchCommand::WriteFloorServer(a) => {
            write_floor::check_size(a.size)?;
            super::init_logging(None, super::LogFormat::Text)?;
            let listener = tokio::net::TcpListener::bind(a.addr)
                .await
                .map_err(|e| format!("cannot listen on {}: {e}", a.addr))?;
            tracing::info!(addr = %listener.local_addr()?, size = a.size, "write-floor server listening");
            let stats =
                write_floor::server::serve(listener, a.size, h2chat::signal::interrupted()).await?;
            tracing::info!(
                accepted = stats.accepted,
                refused = stats.refused,
                posts = stats.posts,
                writes = stats.writes,
                closed_slow = stats.closed_slow,
                closed_garbage = stats.closed_garbage,
                "write-floor server stopped"
            );
        }
        BenchCommand::WriteFloor(a) => {
            let outcome = write_floor::run(WriteFloorConfig {
                addr: a.addr,
                conns: a.conns,
                rate: a.rate,
                posts: a.posts,
                size: a.size,
                server_pid: a.server_pid,
                timeout: secs(a.timeout),
            })
            .await?;
            print(&outcome);
            if !matches!(outcome.report.get("lost"), Some(Value::Int(0))) {
                return Err(BenchError::new("writes were lost").into());
            }
        }
        BenchCommand::UnaryRequest(a) => {
            if let Some(addr) = a.check {
                unary::check(addr).await?;
            }
            std::fs::write(&a.out, unary::request_body())
                .map_err(|e| format!("writing {}: {e}", a.out.display()))?;
        }
    }
    Ok(())
}

/// The report on stdout (one line, for scripts), the summary on stderr (for people).
fn print(outcome: &Outcome) {
    println!("{}", outcome.report.to_json());
    eprintln!("{}", outcome.summary);
}
