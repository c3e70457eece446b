//! `h2chat.logs.v1.LogWatcher`: the call side of the server's log ([`crate::services::logs::ring`]).
//!
//! `WatchLogs` sends the retained entries first, then live ones, selected by a level or a
//! substring, and ends OK after `limit` entries (with `count` in the trailers) or follows until
//! the client cancels. The call is a cursor into the ring: a watcher that reads more slowly than
//! the log grows costs nothing more; what it missed is reported as one notice entry (`skipped`).

pub mod ring;
pub mod tail;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tracing::Level;

use crate::grpc::{BoxFuture, Call, CallResult, Service, ShutdownSignal, Status};
use crate::pb::h2chat::logs::v1::{LogEntry, WatchLogsRequest};
use crate::services::logs::ring::{LogFilter, LogRing, DEFAULT_LOG_HISTORY, MAX_BATCH_ENTRIES};

/// Trailing-metadata key carrying how many entries a `WatchLogs` call sent.
pub const COUNT_TRAILER: &str = "count";
/// The fully-qualified service name.
pub const SERVICE_NAME: &str = "h2chat.logs.v1.LogWatcher";

/// Everything about the log watcher `h2chat serve` can be told.
#[derive(Clone, Debug)]
pub struct LogsConfig {
    /// The ring the service reads. To see the server's own events, install [`LogRing::layer`] in
    /// the process's tracing subscriber; without it the ring holds only the followed file's lines.
    pub ring: LogRing,
    /// A file to follow like `tail -F`, one entry per line.
    pub watch_file: Option<PathBuf>,
    /// How often the followed file is looked at.
    pub poll_interval: Duration,
}

impl Default for LogsConfig {
    fn default() -> Self {
        LogsConfig {
            ring: LogRing::new(DEFAULT_LOG_HISTORY),
            watch_file: None,
            poll_interval: tail::DEFAULT_POLL_INTERVAL,
        }
    }
}

/// `h2chat.logs.v1.LogWatcher`.
pub struct LogWatcherService {
    ring: LogRing,
    shutdown: ShutdownSignal,
}

impl Service for LogWatcherService {
    fn name(&self) -> &'static str {
        SERVICE_NAME
    }

    fn call<'a>(&'a self, method: &'a str, call: &'a Call) -> Option<BoxFuture<'a, CallResult>> {
        match method {
            "WatchLogs" => Some(Box::pin(self.watch_logs(call))),
            _ => None,
        }
    }
}

impl LogWatcherService {
    /// The service over `config.ring`. When `config.watch_file` is set, also starts following that
    /// file into the ring until `shutdown` fires; that needs a Tokio runtime (without one the file
    /// is not followed and a warning says so).
    pub fn new(config: LogsConfig, shutdown: ShutdownSignal) -> Arc<LogWatcherService> {
        if let Some(path) = config.watch_file {
            tail::spawn(
                path,
                config.ring.clone(),
                config.poll_interval,
                shutdown.clone(),
            );
        }
        Arc::new(LogWatcherService {
            ring: config.ring,
            shutdown,
        })
    }

    /// The ring the service reads.
    pub fn ring(&self) -> &LogRing {
        &self.ring
    }

    async fn watch_logs(&self, call: &Call) -> CallResult {
        let req: WatchLogsRequest = call.recv_one().await?;
        let filter = LogFilter::parse(&req.filter);
        let limit = u64::from(req.limit);
        let mut cursor = self.ring.watch();
        // Headers now: the client knows the watch has started before any entry matches.
        call.send_headers()?;
        let mut sent = 0u64;
        let mut batch = Vec::with_capacity(MAX_BATCH_ENTRIES);
        loop {
            let skipped = cursor.next_batch(&mut batch);
            if skipped > 0 {
                call.send(&skipped_notice(skipped)).await?;
                sent += 1;
            }
            if limit > 0 && sent >= limit {
                return finish(call, sent);
            }
            if batch.is_empty() && skipped == 0 {
                tokio::select! {
                    () = cursor.changed() => continue,
                    () = self.shutdown.wait() => {
                        finish(call, sent)?;
                        return Err(Status::unavailable("server shutting down"));
                    }
                }
            }
            for record in batch.drain(..) {
                if !filter.matches(&record) {
                    continue;
                }
                call.send(&record.entry).await?;
                sent += 1;
                if limit > 0 && sent >= limit {
                    return finish(call, sent);
                }
            }
        }
    }
}

/// Puts the count of sent entries in the trailers.
fn finish(call: &Call, sent: u64) -> CallResult {
    call.with_trailers(|t| t.insert(COUNT_TRAILER, &sent.to_string()))
}

/// The entry telling a watcher that it missed `skipped` entries.
fn skipped_notice(skipped: u64) -> LogEntry {
    LogEntry {
        level: Level::WARN.as_str().to_owned(),
        msg: format!(
            "skipped {skipped} entries: this watcher read more slowly than the log grew, and \
             they left the server's bounded log before it got to them"
        ),
        timestamp: Some(prost_types::Timestamp::from(SystemTime::now())),
        target: module_path!().to_owned(),
        seq: 0,
        skipped,
    }
}
