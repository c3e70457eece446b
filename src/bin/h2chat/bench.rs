//! `h2chat bench …`: the command line of the benches in [`h2chat::bench`].

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use h2chat::bench::fanout::{self, FanoutConfig};
use h2chat::bench::idle::{self, IdleConfig};
use h2chat::bench::report::Value;
use h2chat::bench::storm::{self, StormConfig};
use h2chat::bench::write_floor::{self, WriteFloorConfig};
use h2chat::bench::{raw_h2, unary, BenchError, Outcome};

use crate::logging::{init_logging, LogFormat};

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
    Fanout(FanoutConfig),
    /// Joined members that post nothing: server memory per connection and per member, join time.
    ///
    /// Prints one JSON line on stdout and a summary on stderr. Needs `ulimit -n` above --conns.
    Idle(IdleConfig),
    /// Members joining one room at once: events delivered for it (histories, join confirmations,
    /// presence), server CPU and peak memory.
    ///
    /// Prints one JSON line on stdout and a summary on stderr. Needs `ulimit -n` above --conns.
    JoinStorm(StormConfig),
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
    WriteFloor(WriteFloorConfig),
    /// Writes the request body `h2load -d` sends for the unary bench (a SimpleRequest with a
    /// 10-byte payload); with --check, first checks that a server answers it with OK.
    UnaryRequest(UnaryRequestArgs),
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
struct UnaryRequestArgs {
    /// Where to write the request body.
    #[arg(long)]
    out: PathBuf,
    /// A server that must answer grpc.testing.TestService/UnaryCall with OK first.
    #[arg(long)]
    check: Option<SocketAddr>,
}

pub(crate) async fn run(args: BenchArgs) -> Result<(), Box<dyn std::error::Error>> {
    match args.command {
        BenchCommand::Fanout(a) => {
            let outcome = fanout::run(a).await?;
            print(&outcome);
            let bad = |k: &str| !matches!(outcome.report.get(k), Some(Value::Int(0)));
            if bad("lost") || bad("seq_errors") {
                return Err(BenchError::new("deliveries were lost or out of sequence").into());
            }
        }
        BenchCommand::Idle(a) => {
            let outcome = idle::run(a).await?;
            print(&outcome);
        }
        BenchCommand::JoinStorm(a) => {
            let outcome = storm::run(a).await?;
            print(&outcome);
        }
        BenchCommand::RawH2Server(a) => {
            init_logging(None, LogFormat::Text)?;
            let listener = tokio::net::TcpListener::bind(a.addr)
                .await
                .map_err(|e| format!("cannot listen on {}: {e}", a.addr))?;
            tracing::info!(addr = %listener.local_addr()?, "raw-h2 baseline listening");
            raw_h2::serve(listener, a.coalesce_writes, h2chat::signal::interrupted()).await?;
        }
        BenchCommand::WriteFloorServer(a) => {
            write_floor::check_size(a.size)?;
            init_logging(None, LogFormat::Text)?;
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
            let outcome = write_floor::run(a).await?;
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
