//! The `h2chat` command: `h2chat serve` runs the server; `h2chat chat` is the chat client;
//! `h2chat stdio` runs the server as a JSON-lines node on stdin/stdout; `h2chat bench …` measures
//! one.
//!
//! This file holds the command line's top (the subcommands) and the dispatch; each subcommand
//! lives in a file of its own: `serve.rs` (with `tls.rs` and `auth.rs`, its TLS and token flags),
//! `chat.rs`, `stdio.rs`, `token.rs`, `bench.rs`; `logging.rs` is the log setup they share.

mod auth;
mod bench;
mod chat;
mod flags;
mod logging;
mod self_signed;
mod serve;
mod stdio;
mod tls;
mod token;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

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
    Serve(Box<serve::ServeArgs>),
    /// Measure a running server: fan-out, idle members, and the baselines (raw h2, plain TCP).
    Bench(bench::BenchArgs),
    /// Run the same server as a JSON-lines node: requests on stdin, replies on stdout, logs on
    /// stderr.
    Stdio(stdio::StdioArgs),
    /// Print an HS256 bearer token signed with a secret file (a development tool: in production
    /// tokens come from an identity provider).
    Token(token::TokenArgs),
    /// Chat in a room: interactive in a terminal, else one message per input line.
    ///
    /// Exit codes: 0 left normally; 1 local failure; 2 bad usage; 3 server unreachable; 4 name
    /// taken; 5 invalid room, name or text; 6 join refused otherwise; 130 stopped by a signal.
    Chat(chat::ChatArgs),
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
        Command::Serve(args) => runtime.block_on(serve::serve(*args)),
        Command::Stdio(args) => runtime.block_on(stdio::run_stdio(args)),
        Command::Bench(args) => runtime.block_on(bench::run(args)),
        Command::Token(args) => token::token(args),
        Command::Chat(args) => return chat::chat(runtime, args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("h2chat: {e}");
            ExitCode::FAILURE
        }
    }
}
