//! The one test harness every test target includes (`#[path = "../support/mod.rs"] mod support;`):
//! the real server in this process on 127.0.0.1:0 ([`TestServer`]), the `h2chat` binary as a child
//! process ([`process`]), a raw h2 gRPC client ([`wire`]), HTTP/2 frames by hand ([`frames`]),
//! chat helpers on the library's client ([`chat`]), the chat CLI as a child process ([`cli`]) and
//! a TCP proxy that fails on purpose ([`proxy`]).
// Each test target uses a part of the harness, so what one target leaves unused is not dead.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use h2chat::grpc::Server;
use h2chat::services::app::{self, AppConfig};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub mod chat;
pub mod cli;
pub mod frames;
pub mod grpcurl;
pub mod process;
pub mod proxy;
pub mod wire;

/// Longest a test waits for any one thing it expects before it fails: a safety net against hangs,
/// never a timing check (a healthy run waits milliseconds).
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Awaits `fut`, failing the test with "`what` did not happen within `limit`" if it takes longer.
pub async fn within<T>(limit: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {limit:?} waiting for {what}"),
    }
}

/// The whole of one test: longer than any one wait, so that a wait that hangs names itself
/// first; a safety net against hangs, never a timing check.
pub const TEST_PATIENCE: Duration = Duration::from_secs(90);

/// A server running in this test's runtime, on a listener bound to 127.0.0.1:0 before the server
/// was built. [`shutdown`](TestServer::shutdown) stops it and asserts that it ended well; a
/// server dropped without it is stopped too, and its panic (if it had one) fails the test.
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    /// Starts the full h2chat server with `config`.
    pub async fn start(config: AppConfig) -> TestServer {
        TestServer::serve(app::build(config)).await
    }

    /// Starts the server with default limits, and with `grpc.testing.TestService` (as
    /// `serve --interop`): tests drive it.
    pub async fn default() -> TestServer {
        TestServer::start(AppConfig {
            interop: true,
            ..AppConfig::default()
        })
        .await
    }

    /// Runs `server` (any service set) on a fresh listener on 127.0.0.1:0.
    pub async fn serve(server: Server) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        TestServer::serve_on(server, listener)
    }

    /// Runs `server` on `listener` (already bound: the address is the server's from the start).
    pub fn serve_on(server: Server, listener: TcpListener) -> TestServer {
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(listener, async {
            let _ = rx.await;
        }));
        TestServer {
            addr,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// `host:port` for command-line clients.
    pub fn target(&self) -> String {
        self.addr.to_string()
    }

    /// Begins graceful shutdown without waiting for it.
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }

    /// Begins graceful shutdown and waits (at most [`PATIENCE`]) until the server has stopped;
    /// fails the test if the server panicked or `serve` returned an error.
    pub async fn shutdown(mut self) {
        self.begin_shutdown();
        if let Some(task) = self.task.take() {
            let ended = within(PATIENCE, "the server to shut down", task).await;
            match ended {
                Ok(Ok(())) => {}
                Ok(Err(e)) => panic!("the server's serve() failed: {e}"),
                Err(e) => panic!("the server task failed: {e}"),
            }
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.begin_shutdown();
        // A server that already ended on its own must have ended well; one still running stops
        // in the background (its test is over).
        let Some(task) = self.task.as_mut() else {
            return;
        };
        if !task.is_finished() || std::thread::panicking() {
            return;
        }
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        if let std::task::Poll::Ready(ended) = std::pin::Pin::new(task).poll(&mut cx) {
            match ended {
                Ok(Ok(())) => {}
                Ok(Err(e)) => panic!("the server's serve() failed: {e}"),
                Err(e) => panic!("the server task failed: {e}"),
            }
        }
    }
}

/// An address on 127.0.0.1 where nothing listens, held so no one else can take it: a TCP socket
/// bound but never listening, so a connection to it is refused. Keep it alive while it is used.
pub struct RefusingAddr {
    /// The address.
    pub addr: SocketAddr,
    _socket: tokio::net::TcpSocket,
}

impl RefusingAddr {
    /// Binds a fresh one.
    pub fn new() -> RefusingAddr {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind("127.0.0.1:0".parse().expect("addr"))
            .expect("bind");
        let addr = socket.local_addr().expect("addr");
        RefusingAddr {
            addr,
            _socket: socket,
        }
    }
}

/// The path of a command-line tool the tests need; panics (the test fails) when it is missing,
/// since a test never skips itself quietly.
pub fn require_tool(name: &str) -> std::path::PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!("{name} is not on PATH: run the README's test command, which installs it");
}

/// A name no other temp path of this test process has: `h2chat-<pid>-<n>-<name>`.
fn unique_temp_path(name: &str) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("h2chat-{}-{n}-{name}", std::process::id()))
}

/// A file in the temp dir holding these lines, removed on drop (on every path out of the test,
/// a failure included).
pub struct TempFile(pub PathBuf);

impl TempFile {
    /// Writes `lines`, each ended by a newline, to a fresh file named after `name`.
    pub fn with_lines(name: &str, lines: &[&str]) -> TempFile {
        let path = unique_temp_path(name);
        let mut text = lines.join("\n");
        text.push('\n');
        std::fs::write(&path, text).expect("write temp file");
        TempFile(path)
    }

    /// A fresh path named after `name` where nothing is yet; whatever is put there is removed
    /// on drop.
    pub fn path_for(name: &str) -> TempFile {
        TempFile(unique_temp_path(name))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A fresh directory in the temp dir, removed with all it holds on drop (on every path out of
/// the test, a failure included).
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Creates a directory named after `name`.
    pub fn new(name: &str) -> TempDir {
        let path = unique_temp_path(name);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
