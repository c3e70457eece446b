//! Shared test harness: starts the real server on 127.0.0.1:0 and stops it.
#![allow(dead_code)]

use std::net::SocketAddr;

use h2chat::services::app::{self, AppConfig};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub mod chat;
pub mod cli;
pub mod process;
pub mod proxy;

/// A server running in this test's runtime.
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    /// Starts the full h2chat server with `config`.
    pub async fn start(config: AppConfig) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = app::build(config);
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

    /// Starts the server with default limits, and with `grpc.testing.TestService` (as
    /// `serve --interop`): tests drive it.
    pub async fn default() -> TestServer {
        TestServer::start(AppConfig {
            interop: true,
            ..AppConfig::default()
        })
        .await
    }

    /// `host:port` for command-line clients.
    pub fn target(&self) -> String {
        self.addr.to_string()
    }

    /// Begins graceful shutdown and waits until the server has stopped.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
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

/// A file in the temp dir holding these lines, removed on drop.
pub struct TempFile(pub std::path::PathBuf);

impl TempFile {
    /// Writes `lines`, each ended by a newline, to a file named after `name` and this process.
    pub fn with_lines(name: &str, lines: &[&str]) -> TempFile {
        let path = std::env::temp_dir().join(format!("h2chat-{}-{name}", std::process::id()));
        let mut text = lines.join("\n");
        text.push('\n');
        std::fs::write(&path, text).expect("write temp file");
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
