//! `h2chat stdio`: the server as a JSON-lines node on stdin/stdout, its flags and its run.

use clap::Args;
use h2chat::services::app::AppConfig;
use h2chat::stdio::{self, StdioConfig};

use crate::flags;
use crate::logging::{init_logging, LogArgs};

/// The smallest `stdio --max-line-bytes`: an init request must fit.
const MIN_LINE_BYTES: u64 = 128;

#[derive(Args)]
pub(crate) struct StdioArgs {
    #[command(flatten)]
    logs: LogArgs,
    /// Seconds running calls may go on once stdin has ended.
    #[arg(long, value_parser = flags::seconds_or_zero(), default_value_t = stdio::DEFAULT_DRAIN_TIMEOUT.as_secs_f64())]
    drain_timeout: f64,
    /// Longest input line in bytes.
    #[arg(long, value_parser = flags::whole::<usize>(MIN_LINE_BYTES, None), default_value_t = stdio::DEFAULT_MAX_LINE_BYTES)]
    max_line_bytes: usize,
}

pub(crate) async fn run_stdio(args: StdioArgs) -> Result<(), Box<dyn std::error::Error>> {
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
