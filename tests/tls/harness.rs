//! The real server over TLS in this test's runtime, the real binary as a child process, and the
//! clients the tests use against them.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use h2chat::grpc::client::{CallOptions, Channel, ChannelConfig, ClientTls};
use h2chat::grpc::server::{ClientAuth, Listener, TlsAcceptor, TlsFiles};
use h2chat::grpc::Status;
use h2chat::pb::grpc::health::v1::{HealthCheckRequest, HealthCheckResponse};
use h2chat::services::app::{self, AppConfig};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::pki::{write_server, Ca, ServerFiles, TempDir};

pub use crate::support::process::ServerProcess;
pub use crate::support::require_tool;
use crate::support::PATIENCE;

/// Awaits `future` for at most the suite's patience, failing the test with `what` otherwise.
pub async fn within<F: std::future::Future>(what: &str, future: F) -> F::Output {
    crate::support::within(PATIENCE, what, future).await
}

/// A CA, a server certificate it issued, and the files of both in a directory of their own.
pub struct Pki {
    pub dir: TempDir,
    pub ca: Ca,
    pub files: ServerFiles,
}

impl Pki {
    /// A fresh CA and server certificate for 127.0.0.1 and localhost.
    pub fn new(name: &str) -> Pki {
        let dir = TempDir::new(name);
        let ca = Ca::new("h2chat test CA");
        let files = write_server(&dir, &ca, &ca.server());
        Pki { dir, ca, files }
    }

    /// The server's TLS files, with client certificates as `client_auth` says.
    pub fn tls_files(&self, client_auth: ClientAuth) -> TlsFiles {
        TlsFiles {
            cert_chain: self.files.cert.clone(),
            key: self.files.key.clone(),
            client_ca: (client_auth != ClientAuth::None).then(|| self.files.ca.clone()),
            client_auth,
        }
    }

    /// A client trusting this CA.
    pub fn client(&self) -> ClientTls {
        ClientTls::new(Some(&self.files.ca), None).expect("client TLS")
    }

    /// A client trusting this CA and presenting the certificate in `cert` and `key`.
    pub fn client_with(&self, cert: &Path, key: &Path) -> ClientTls {
        ClientTls::new(Some(&self.files.ca), Some((cert, key))).expect("client TLS")
    }
}

/// The full h2chat server on a TLS listener (and, if asked, a plaintext one), in this runtime.
pub struct TlsServer {
    /// The TLS address.
    pub addr: SocketAddr,
    /// The plaintext address, if one was asked for.
    pub plain_addr: Option<SocketAddr>,
    /// The acceptor, to reload.
    pub tls: Arc<TlsAcceptor>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl TlsServer {
    /// Starts the server with `config` on TLS with `files`.
    pub async fn start(config: AppConfig, files: TlsFiles) -> TlsServer {
        TlsServer::start_with(app::build(config), files, false).await
    }

    /// Starts `server` on TLS with `files`, plus a plaintext listener if `plaintext`.
    pub async fn start_with(
        server: h2chat::grpc::Server,
        files: TlsFiles,
        plaintext: bool,
    ) -> TlsServer {
        let tls = Arc::new(TlsAcceptor::load(files).expect("load TLS files"));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut listeners = vec![Listener::tls(listener, tls.clone())];
        let mut plain_addr = None;
        if plaintext {
            let plain = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            plain_addr = Some(plain.local_addr().expect("addr"));
            listeners.push(Listener::plaintext(plain));
        }
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve_on(listeners, async {
            let _ = rx.await;
        }));
        TlsServer {
            addr,
            plain_addr,
            tls,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// `host:port`.
    pub fn target(&self) -> String {
        self.addr.to_string()
    }

    /// Begins graceful shutdown and waits until the server has stopped.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = within("server shutdown", task).await;
        }
    }
}

/// A gRPC channel over TLS to `addr`.
pub async fn connect(addr: SocketAddr, tls: &ClientTls) -> Channel {
    within(
        "TLS connect",
        Channel::connect_tls(&addr.to_string(), tls, ChannelConfig::default()),
    )
    .await
    .expect("TLS connect")
}

/// The whole server's health, as an ordinary unary call.
pub async fn health(
    channel: &Channel,
    options: CallOptions,
) -> Result<HealthCheckResponse, Status> {
    within(
        "health check",
        channel.unary(
            "/grpc.health.v1.Health/Check",
            &HealthCheckRequest::default(),
            options,
        ),
    )
    .await
}

/// Runs the `h2chat` binary with `args` to the end; returns (success, stdout, stderr).
pub fn run_h2chat(args: &[&std::ffi::OsStr]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_h2chat"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run h2chat");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Starts a `Chat` call with `options` and sends the join of `room` as `sender`; returns the call
/// once the server answered the join (Ok) or refused it (Err).
pub async fn join_chat(
    channel: &Channel,
    options: CallOptions,
    room: &str,
    sender: &str,
) -> Result<h2chat::grpc::client::ClientCall, Status> {
    let mut call = within(
        "start chat",
        channel.start("/chat.v1.ChatService/Chat", options),
    )
    .await?;
    let join = h2chat::pb::chat::v1::ChatMessage {
        room_id: room.into(),
        sender_id: sender.into(),
        ..Default::default()
    };
    let _ = call.send(&join).await;
    within("the join's answer", call.headers()).await?;
    Ok(call)
}
