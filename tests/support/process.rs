//! The real `h2chat` binary as a child process, for tests that measure the server from outside
//! or need the binary itself (its flags, its signals, its log).
//!
//! A child dies with the test: it is killed when its [`ServerProcess`] is dropped (a failing
//! test included), and the kernel kills it (`PR_SET_PDEATHSIG`) if the test process dies first.

use std::net::SocketAddr;
use std::process::{ExitStatus, Stdio};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use super::{within, PATIENCE};

/// A running `h2chat serve` (or another serving subcommand), stopped (by its PID) when dropped.
pub struct ServerProcess {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    log: mpsc::UnboundedReceiver<String>,
    /// Every log line (stderr) read so far: up to "listening" by [`start`](ServerProcess::start),
    /// then by [`expect_log`](ServerProcess::expect_log).
    pub log_seen: Vec<String>,
}

/// Makes `cmd`'s child die when the test process does, and kills it when its handle is dropped.
pub fn dies_with_the_test(cmd: &mut Command) -> &mut Command {
    // SAFETY: the closure runs in the forked child before exec and only makes async-signal-safe
    // system calls (prctl, getppid, _exit).
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before prctl: then the signal will never come.
            if libc::getppid() == 1 {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    cmd.kill_on_drop(true)
}

impl ServerProcess {
    /// Starts `h2chat serve --addr 127.0.0.1:0 <args>` and waits for its "listening" log line.
    pub async fn start(args: &[&str]) -> ServerProcess {
        ServerProcess::start_command(&["serve"], args).await
    }

    /// Starts `h2chat <command> --addr 127.0.0.1:0 <args>` (any subcommand that serves and logs
    /// "listening … addr=…") and waits (at most [`PATIENCE`]) for its "listening" log line.
    pub async fn start_command(command: &[&str], args: &[&str]) -> ServerProcess {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_h2chat"));
        cmd.args(command)
            .args(["--addr", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = dies_with_the_test(&mut cmd).spawn().expect("start h2chat");
        let stderr = child.stderr.take().expect("stderr");
        // Keep draining the log so the server never blocks on a full pipe.
        let (tx, mut log) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut seen = Vec::new();
        let listening = async {
            while let Some(line) = log.recv().await {
                seen.push(line.clone());
                let Some(rest) = line
                    .split("addr=")
                    .nth(1)
                    .filter(|_| line.contains("listening"))
                else {
                    continue;
                };
                let addr = rest.split_whitespace().next().unwrap_or_default();
                return addr.parse::<SocketAddr>().expect("listening address");
            }
            panic!("h2chat {command:?} exited before listening: {seen:#?}");
        };
        let addr = within(PATIENCE, "the server's \"listening\" log line", listening).await;
        ServerProcess {
            child,
            addr,
            log,
            log_seen: seen,
        }
    }

    /// The `addr=` of the first line read so far that contains `what` (e.g. "serving metrics",
    /// logged before "listening" with the port a `127.0.0.1:0` flag got).
    pub fn logged_addr(&self, what: &str) -> SocketAddr {
        let line = self
            .log_seen
            .iter()
            .find(|l| l.contains(what))
            .unwrap_or_else(|| panic!("no {what:?} line in {:#?}", self.log_seen));
        line.split("addr=")
            .nth(1)
            .and_then(|a| a.split_whitespace().next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line}"))
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("the server is running")
    }

    /// Reads the server's log until a line satisfies `want` (at most [`PATIENCE`]); returns it.
    pub async fn expect_log(&mut self, what: &str, want: impl Fn(&str) -> bool) -> String {
        let log = &mut self.log;
        let seen = &mut self.log_seen;
        let found = async {
            while let Some(line) = log.recv().await {
                seen.push(line.clone());
                if want(&line) {
                    return Some(line);
                }
            }
            None
        };
        let waited = format!("the server to log {what}");
        match within(PATIENCE, &waited, found).await {
            Some(line) => line,
            None => panic!("the server's log ended before {what}: {:#?}", self.log_seen),
        }
    }

    /// The server's resident set size in KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmRSS:")
    }

    /// The server's peak resident set size in KiB since it started or since the last
    /// [`reset_peak_rss`](ServerProcess::reset_peak_rss), from /proc.
    pub fn peak_rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmHWM:")
    }

    /// Resets the server's peak RSS (VmHWM) to its current RSS (Linux 4.0+), so that
    /// [`peak_rss_kib`](ServerProcess::peak_rss_kib) afterwards is the peak of what follows.
    pub fn reset_peak_rss(&self) {
        std::fs::write(format!("/proc/{}/clear_refs", self.pid()), "5").expect(
            "cannot reset VmHWM through /proc/PID/clear_refs (Linux 4.0 or later is needed)",
        );
    }

    /// Sends `signal` (e.g. `libc::SIGINT`) to the server, by its PID.
    pub fn signal(&self, signal: libc::c_int) {
        send_signal(self.pid(), signal);
    }

    /// Waits (at most `limit`) for the server to exit and returns its status.
    pub async fn wait(&mut self, limit: std::time::Duration) -> ExitStatus {
        within(limit, "the server process to exit", self.child.wait())
            .await
            .expect("wait for the server")
    }

    /// Sends SIGTERM and waits (at most [`PATIENCE`]) for the exit status.
    pub async fn terminate(mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait(PATIENCE).await
    }
}

/// Sends `signal` to the process `pid` (one this test started).
pub fn send_signal(pid: u32, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(pid).expect("a pid");
    // SAFETY: kill(2) with a pid this test started and a valid signal number.
    let rc = unsafe { libc::kill(pid, signal) };
    assert_eq!(
        rc,
        0,
        "kill({pid}, {signal}): {}",
        std::io::Error::last_os_error()
    );
}

/// A `Vm*:` figure of /proc/PID/status, in KiB.
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .expect("field in /proc status")
}
