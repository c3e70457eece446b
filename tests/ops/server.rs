//! `h2chat serve` as a child process whose log the test reads line by line.

use std::net::SocketAddr;
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use crate::support::process::dies_with_the_test;
use crate::support::PATIENCE;

/// A running `h2chat serve` (killed when dropped) and its stderr.
pub struct LoggedServer {
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    /// Every log line read so far.
    pub log: Vec<String>,
    /// Where it listens (from its "listening" line).
    pub addr: SocketAddr,
}

impl LoggedServer {
    /// Starts `h2chat serve --addr 127.0.0.1:0 ARGS` with `RUST_LOG=info` and `env`, and waits
    /// for the line saying where it listens.
    pub async fn start(args: &[&str], env: &[(&str, &str)]) -> LoggedServer {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_h2chat"));
        cmd.args(["serve", "--addr", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "info");
        for (name, value) in env {
            cmd.env(name, value);
        }
        LoggedServer::spawn(cmd).await
    }

    /// Spawns `cmd` (an `h2chat serve` with its own flags and environment) and waits for the
    /// line saying where it listens.
    pub async fn spawn(mut cmd: Command) -> LoggedServer {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = dies_with_the_test(&mut cmd)
            .spawn()
            .expect("start h2chat serve");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut server = LoggedServer {
            child,
            lines,
            log: Vec::new(),
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        };
        // The gRPC port's line.
        let line = server
            .expect_log(|l| l.contains(": listening ") || l.contains("\"message\":\"listening\""))
            .await;
        server.addr = listening_addr(&line)
            .unwrap_or_else(|| panic!("no address in the listening line: {line}"));
        server
    }

    /// Reads the log until a line satisfies `want` and returns it; fails after [`PATIENCE`] or
    /// when the log ends.
    pub async fn expect_log(&mut self, want: impl Fn(&str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) => {
                    self.log.push(line.clone());
                    if want(&line) {
                        return line;
                    }
                }
                Ok(None) => panic!("the log ended without the expected line:\n{:#?}", self.log),
                Err(_) => panic!(
                    "expected log line not seen within {PATIENCE:?}:\n{:#?}",
                    self.log
                ),
            }
        }
    }

    /// Where `--metrics-addr` serves, from the "serving metrics" line (logged before the gRPC
    /// port's "listening" line, which `start` has waited for).
    pub fn metrics_addr(&self) -> SocketAddr {
        let line = self
            .log
            .iter()
            .find(|l| l.contains("serving metrics"))
            .unwrap_or_else(|| panic!("no \"serving metrics\" line in {:#?}", self.log));
        line.split("addr=")
            .nth(1)
            .and_then(|a| a.split_whitespace().next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line}"))
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// Sends SIGTERM, waits (at most [`PATIENCE`]) for the exit and reads the rest of the log.
    pub async fn terminate(mut self) -> (std::process::ExitStatus, Vec<String>) {
        crate::support::cli::signal(self.pid(), libc::SIGTERM);
        let status = tokio::time::timeout(PATIENCE, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("server did not exit within {PATIENCE:?}"))
            .expect("wait for the server");
        while let Ok(Some(line)) = tokio::time::timeout(PATIENCE, self.lines.recv()).await {
            self.log.push(line);
        }
        (status, self.log)
    }
}

/// The address in a "listening" line, text (`addr=127.0.0.1:5`) or JSON (`"addr":"127.0.0.1:5"`).
fn listening_addr(line: &str) -> Option<SocketAddr> {
    let rest = line
        .split_once("addr=")
        .or_else(|| line.split_once("\"addr\":\""))?
        .1;
    rest.split(|c: char| c.is_whitespace() || c == '"')
        .next()?
        .parse()
        .ok()
}
