//! A real `redis-server` for one test: on a free loopback port below 32768 (a random one, another
//! when it cannot bind), persistence off (`--save '' --appendonly no`) in its own temp dir,
//! stopped by its PID when dropped and killed by the kernel if the test process dies first. A
//! test can pause it (SIGSTOP: its sockets stay open, commands get no answer) and let it go on.

use std::process::Stdio;
use std::time::Duration;

use rand::Rng;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::support::process::dies_with_the_test;
use crate::support::{require_tool, within, TempDir, PATIENCE};

/// Times a test tries another port when Redis cannot bind the one it drew.
const PORT_TRIES: usize = 20;

/// A running `redis-server`, stopped (by PID) when dropped.
pub struct RedisServer {
    child: Option<Child>,
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: TempDir,
}

impl RedisServer {
    /// Starts one on a free port; fails the test if `redis-server` is not installed.
    pub async fn start() -> RedisServer {
        let dir = TempDir::new("redis");
        for _ in 0..PORT_TRIES {
            let port = rand::thread_rng().gen_range(20_000..32_000);
            if let Some(child) = spawn(port, &dir).await {
                return RedisServer {
                    child: Some(child),
                    port,
                    dir,
                };
            }
        }
        panic!("redis-server could not bind any of {PORT_TRIES} random loopback ports");
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// A connection for the test's own commands (FLUSHALL, CONFIG, CLIENT KILL…).
    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        let client = redis::Client::open(self.url()).expect("redis url");
        within(
            PATIENCE,
            "a connection to the test's redis-server",
            client.get_multiplexed_async_connection(),
        )
        .await
        .expect("connect to redis")
    }

    /// Runs one command and returns its reply.
    pub async fn cmd<T: redis::FromRedisValue>(&self, args: &[&str]) -> T {
        let mut con = self.connection().await;
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        within(
            PATIENCE,
            &format!("redis to answer {args:?}"),
            cmd.query_async(&mut con),
        )
        .await
        .unwrap_or_else(|e| panic!("redis {args:?}: {e}"))
    }

    /// Saves the data set to its dir (so that [`start_again`](Self::start_again) finds it) and
    /// stops the server, waiting for it to exit.
    pub async fn stop_saving(&mut self) {
        let _: String = self.cmd(&["SAVE"]).await;
        let mut child = self.child.take().expect("redis is running");
        let pid = child.id().expect("redis pid");
        crate::support::process::send_signal(pid, libc::SIGKILL);
        within(PATIENCE, "redis-server to exit", child.wait())
            .await
            .expect("wait for redis");
    }

    /// Starts it again on the same port and dir, with what it saved.
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "redis is still running");
        let child = spawn(self.port, &self.dir)
            .await
            .unwrap_or_else(|| panic!("redis-server could not bind port {} again", self.port));
        self.child = Some(child);
    }
}

impl RedisServer {
    /// Stops the server with SIGSTOP and waits until the kernel says it is stopped: connections
    /// stay up and take commands, which get no answer, until the guard is dropped (SIGCONT).
    pub async fn pause(&self) -> Paused<'_> {
        let pid = self
            .child
            .as_ref()
            .and_then(Child::id)
            .expect("redis is running");
        crate::support::process::send_signal(pid, libc::SIGSTOP);
        let stopped = tokio::task::spawn_blocking(move || wait_stopped(pid));
        within(PATIENCE, "redis-server to stop on SIGSTOP", stopped)
            .await
            .expect("the stop waiter")
            .expect("waitid on redis-server");
        Paused { _redis: self, pid }
    }
}

/// A paused `redis-server` ([`RedisServer::pause`]); dropping it sends SIGCONT.
pub struct Paused<'a> {
    _redis: &'a RedisServer,
    pid: u32,
}

impl Paused<'_> {
    /// Lets the server go on (SIGCONT): it answers what it was sent meanwhile, in order.
    pub fn resume(self) {}
}

impl Drop for Paused<'_> {
    fn drop(&mut self) {
        if let Ok(pid) = libc::pid_t::try_from(self.pid) {
            // SAFETY: kill(2) on the redis-server this test started (it outlives the guard).
            unsafe { libc::kill(pid, libc::SIGCONT) };
        }
    }
}

/// Blocks until the child `pid` is stopped, leaving its state to be reaped as usual (WNOWAIT).
fn wait_stopped(pid: u32) -> std::io::Result<()> {
    let id = libc::id_t::from(pid);
    // SAFETY: a zeroed siginfo_t is valid for waitid(2) to fill in.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: waitid(2) on a child of this process, writing only into `info`.
    let rc = unsafe { libc::waitid(libc::P_PID, id, &mut info, libc::WSTOPPED | libc::WNOWAIT) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            // kill_on_drop sends SIGKILL to this PID (the server this test started).
            let _ = child.start_kill();
        }
    }
}

/// Starts redis-server on `port`; `None` when it could not bind it (it exits saying so).
async fn spawn(port: u16, dir: &TempDir) -> Option<Child> {
    let bin = require_tool("redis-server");
    let mut cmd = Command::new(bin);
    cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(&dir.0)
        .args(["--loglevel", "notice"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = dies_with_the_test(&mut cmd)
        .spawn()
        .expect("start redis-server");
    let stdout = child.stdout.take().expect("redis stdout");
    let mut lines = BufReader::new(stdout).lines();
    let ready = within(PATIENCE, "redis-server to say it is ready or exit", async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("Ready to accept connections") {
                return true;
            }
        }
        false
    })
    .await;
    if !ready {
        let _ = within(
            Duration::from_secs(5),
            "a failed redis-server to exit",
            child.wait(),
        )
        .await;
        return None;
    }
    // Keep draining its log so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Some(child)
}
