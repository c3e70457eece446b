//! `h2chat chat` as a child process with piped stdin, stdout and stderr.

use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

use super::process::dies_with_the_test;
use super::PATIENCE;

/// A running `h2chat chat` whose stdin is a pipe (so it runs scripted). Killed when dropped, and
/// by the kernel if the test process dies first.
pub struct ChatProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: mpsc::UnboundedReceiver<String>,
    stderr: mpsc::UnboundedReceiver<String>,
    /// Every stdout line read so far.
    pub out: Vec<String>,
    /// Every stderr line read so far.
    pub err: Vec<String>,
}

/// How a chat process ended.
#[derive(Debug)]
pub struct Finished {
    /// The exit code (`None` if killed by a signal).
    pub code: Option<i32>,
    /// All of stdout, line by line.
    pub out: Vec<String>,
    /// All of stderr, line by line.
    pub err: Vec<String>,
}

impl ChatProcess {
    /// Starts `h2chat chat --addr <addr> --room <room> [--name <name>] <extra>`.
    pub fn start(addr: &str, room: &str, name: Option<&str>, extra: &[&str]) -> ChatProcess {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_h2chat"));
        cmd.args(["chat", "--addr", addr, "--room", room]);
        if let Some(name) = name {
            cmd.args(["--name", name]);
        }
        cmd.args(extra)
            .env_remove("RUST_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = dies_with_the_test(&mut cmd)
            .spawn()
            .expect("start h2chat chat");
        let stdin = child.stdin.take();
        let stdout = lines(child.stdout.take().expect("stdout"));
        let stderr = lines(child.stderr.take().expect("stderr"));
        ChatProcess {
            child,
            stdin,
            stdout,
            stderr,
            out: Vec::new(),
            err: Vec::new(),
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// Writes `line` and a newline to stdin.
    pub async fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("write stdin");
        stdin.flush().await.expect("flush stdin");
    }

    /// Closes stdin: the end of input.
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Reads stdout until a line satisfies `want`; returns it. Fails after [`PATIENCE`] or at EOF.
    pub async fn expect_out(&mut self, want: impl Fn(&str) -> bool) -> String {
        self.expect(true, want).await
    }

    /// Reads stderr until a line satisfies `want`; returns it.
    pub async fn expect_err(&mut self, want: impl Fn(&str) -> bool) -> String {
        self.expect(false, want).await
    }

    async fn expect(&mut self, stdout: bool, want: impl Fn(&str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let rx = if stdout {
                &mut self.stdout
            } else {
                &mut self.stderr
            };
            let line = match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(line)) => line,
                Ok(None) => panic!(
                    "{} ended without the expected line\nstdout: {:#?}\nstderr: {:#?}",
                    if stdout { "stdout" } else { "stderr" },
                    self.out,
                    self.err
                ),
                Err(_) => panic!(
                    "expected line not seen within {PATIENCE:?}\nstdout: {:#?}\nstderr: {:#?}",
                    self.out, self.err
                ),
            };
            if stdout {
                self.out.push(line.clone());
            } else {
                self.err.push(line.clone());
            }
            if want(&line) {
                return line;
            }
        }
    }

    /// Waits (at most [`PATIENCE`]) for the process to exit and collects the rest of its output.
    pub async fn finish(mut self) -> Finished {
        let status = tokio::time::timeout(PATIENCE, self.child.wait())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "h2chat chat did not exit within {PATIENCE:?}\nstdout: {:#?}\nstderr: {:#?}",
                    self.out, self.err
                )
            })
            .expect("wait for h2chat chat");
        // The pipes close with the process: read what is left.
        while let Ok(Some(line)) = tokio::time::timeout(PATIENCE, self.stdout.recv()).await {
            self.out.push(line);
        }
        while let Ok(Some(line)) = tokio::time::timeout(PATIENCE, self.stderr.recv()).await {
            self.err.push(line);
        }
        Finished {
            code: status.code(),
            out: self.out,
            err: self.err,
        }
    }
}

/// The lines of a pipe, as they come.
fn lines(pipe: impl AsyncRead + Unpin + Send + 'static) -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut lines = BufReader::new(pipe).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Sends `signal` (e.g. `libc::SIGINT`) to `pid`, a process this test started.
pub fn signal(pid: u32, signal: libc::c_int) {
    super::process::send_signal(pid, signal);
}
