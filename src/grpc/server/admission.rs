//! Who gets a connection: the cap on connections set from the process's file limit, the cap per
//! client address, and what accept does when the process is out of files.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Files the server keeps for itself beside its connections (the listener, the log, a watched
/// file, the runtime's own): the default connection cap is the file limit minus this.
pub const FILE_RESERVE: usize = 64;

/// Fallback cap on connections when the file limit cannot be read.
pub const FALLBACK_MAX_CONNECTIONS: usize = 10_000;

/// Default pending connections the kernel queues for accept (the listen backlog).
pub const DEFAULT_LISTEN_BACKLOG: u32 = 1024;

/// Shortest and longest pause of accept after it failed (out of files and the like).
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Least time between two warnings that accept fails.
const ACCEPT_WARN_INTERVAL: Duration = Duration::from_secs(60);

/// The process's soft limit on open files (`RLIMIT_NOFILE`), from /proc/self/limits.
pub fn open_file_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line
        .strip_prefix("Max open files")?
        .split_whitespace()
        .next()?;
    soft.parse().ok()
}

/// The most connections the file limit allows: the limit minus [`FILE_RESERVE`] (unlimited or
/// unreadable: [`FALLBACK_MAX_CONNECTIONS`]).
pub fn max_connections_for_file_limit() -> usize {
    match open_file_limit() {
        Some(files) => files.saturating_sub(FILE_RESERVE).max(1),
        None => FALLBACK_MAX_CONNECTIONS,
    }
}

/// Refuses a connection cap the file limit cannot honour: past it, accept would fail with
/// EMFILE instead of clients waiting in the backlog.
pub fn check_max_connections(max_connections: usize) -> io::Result<()> {
    let Some(files) = open_file_limit() else {
        return Ok(());
    };
    let allowed = files.saturating_sub(FILE_RESERVE);
    if max_connections > allowed {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "max-connections {max_connections} is above what the open-file limit allows \
                 ({files} files, {FILE_RESERVE} kept for the server: at most {allowed}); raise \
                 `ulimit -n` or lower max-connections"
            ),
        ));
    }
    Ok(())
}

/// Open connections per client address.
#[derive(Debug, Default)]
pub(in crate::grpc) struct PerIp {
    limit: Option<usize>,
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl PerIp {
    pub(in crate::grpc) fn new(limit: Option<usize>) -> Arc<PerIp> {
        Arc::new(PerIp {
            limit,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// Counts a connection from `ip` until the slot is dropped; `None` when `ip` has its limit.
    pub(in crate::grpc) fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<IpSlot> {
        let limit = self.limit?;
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            per_ip: self.clone(),
            ip,
        })
    }

    /// Whether addresses are limited at all.
    pub(in crate::grpc) fn is_limited(&self) -> bool {
        self.limit.is_some()
    }
}

/// One counted connection of an address; see [`PerIp::admit`].
#[derive(Debug)]
pub(in crate::grpc) struct IpSlot {
    per_ip: Arc<PerIp>,
    ip: IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self.per_ip.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Accept's pause after failures: doubling from 10 ms to 1 s, and one warning a minute saying
/// how many failed, instead of a line per try.
#[derive(Debug)]
pub(in crate::grpc) struct AcceptBackoff {
    pause: Duration,
    failures: u64,
    warned_at: Option<Instant>,
}

impl AcceptBackoff {
    pub(in crate::grpc) fn new() -> AcceptBackoff {
        AcceptBackoff {
            pause: ACCEPT_BACKOFF_MIN,
            failures: 0,
            warned_at: None,
        }
    }

    /// An accept succeeded.
    pub(in crate::grpc) fn succeeded(&mut self) {
        self.pause = ACCEPT_BACKOFF_MIN;
    }

    /// An accept failed with `error`: how long to pause, and whether (with how many failures
    /// since the last warning) to warn now.
    pub(in crate::grpc) fn failed(&mut self) -> (Duration, Option<u64>) {
        self.failures += 1;
        let pause = self.pause;
        self.pause = (self.pause * 2).min(ACCEPT_BACKOFF_MAX);
        let warn = self
            .warned_at
            .is_none_or(|at| at.elapsed() >= ACCEPT_WARN_INTERVAL);
        if warn {
            self.warned_at = Some(Instant::now());
            return (pause, Some(std::mem::take(&mut self.failures)));
        }
        (pause, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_limit_is_read() {
        let files = open_file_limit().expect("Linux has /proc/self/limits");
        assert!(files > 0);
        assert!(check_max_connections(files.saturating_sub(FILE_RESERVE)).is_ok());
        assert!(check_max_connections(files + 1).is_err());
    }

    #[test]
    fn an_address_gets_at_most_its_limit() {
        let per_ip = PerIp::new(Some(2));
        let ip: IpAddr = [127, 0, 0, 1].into();
        let a = per_ip.admit(ip);
        let b = per_ip.admit(ip);
        assert!(a.is_some() && b.is_some());
        assert!(per_ip.admit(ip).is_none());
        assert!(per_ip.admit([127, 0, 0, 2].into()).is_some());
        drop(a);
        assert!(per_ip.admit(ip).is_some());
    }

    #[test]
    fn failed_accepts_back_off_and_warn_once() {
        let mut backoff = AcceptBackoff::new();
        let (p1, w1) = backoff.failed();
        let (p2, w2) = backoff.failed();
        assert_eq!(w1, Some(1));
        assert_eq!(w2, None);
        assert!(p2 > p1);
        for _ in 0..20 {
            assert!(backoff.failed().0 <= ACCEPT_BACKOFF_MAX);
        }
    }
}
