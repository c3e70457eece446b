//! The log setup the subcommands share: stderr as text or JSON, filtered by `RUST_LOG`, and the
//! log ring `serve` and `stdio` keep for LogWatcher.WatchLogs (with `--watch-file`).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use h2chat::services::logs::ring::{self, LogRing};
use h2chat::services::logs::tail;
use h2chat::services::logs::LogsConfig;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use crate::flags;

/// How log lines are written to stderr.
#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per event (`timestamp`, `level`, `fields`, `target`, `span`).
    Json,
}

/// The log flags `serve` and `stdio` share.
#[derive(Args)]
pub(crate) struct LogArgs {
    /// How log lines are written to stderr (the filter is RUST_LOG, default `info`).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub(crate) log_format: LogFormat,
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
    pub(crate) fn ring(&self) -> LogRing {
        LogRing::new(self.log_history)
    }

    /// The log configuration, with `ring` as the log the server records into and watchers read.
    pub(crate) fn config(&self, ring: LogRing) -> LogsConfig {
        LogsConfig {
            ring,
            watch_file: self.watch_file.clone(),
            poll_interval: Duration::from_millis(self.watch_poll_ms.max(1)),
        }
    }
}

/// Logs to stderr (as `format` says) and, if given, into `ring`, both filtered by `RUST_LOG`
/// (default `info,h2::proto=error`: h2's per-frame complaints about peers are not warnings). A
/// `RUST_LOG` that does not parse is an error: a typo must not silently
/// turn logging off.
pub(crate) fn init_logging(ring: Option<&LogRing>, format: LogFormat) -> Result<(), String> {
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
