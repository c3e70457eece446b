//! A TCP proxy on 127.0.0.1 that can lose data and cut connections, to test reconnecting.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{within, PATIENCE};

/// Forwards connections to `upstream`.
///
/// - [`cut`](Proxy::cut) closes every connection open at the time (both sides) and returns once
///   they are closed;
/// - [`black_hole`](Proxy::black_hole) makes every connection open at the time drop what it
///   carries, both ways, as a network that fails silently: the sockets stay open, and neither
///   side hears of the other closing. It returns once every such connection drops, so that
///   whatever is sent after it returns is lost.
///
/// New connections are forwarded normally either way, to the upstream of the time
/// ([`set_upstream`](Proxy::set_upstream)).
pub struct Proxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    upstream: watch::Sender<SocketAddr>,
    conns: Arc<Mutex<Vec<Conn>>>,
    accepted: watch::Receiver<u64>,
    dropped_from_clients: watch::Receiver<u64>,
    task: JoinHandle<()>,
}

/// What a connection is told to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Forward,
    Swallow,
    Cut,
}

/// One proxied connection, as the proxy steers it.
struct Conn {
    mode: watch::Sender<Mode>,
    /// How many of its two pumps have switched to swallowing (closed once both have ended).
    swallowing: watch::Receiver<u8>,
    task: JoinHandle<()>,
}

impl Proxy {
    /// Starts forwarding to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let (accepted_tx, accepted) = watch::channel(0u64);
        let (dropped_tx, dropped_from_clients) = watch::channel(0u64);
        let (upstream_tx, upstream_rx) = watch::channel(upstream);
        let conns = Arc::new(Mutex::new(Vec::new()));
        let registry = conns.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let upstream = *upstream_rx.borrow();
                let (mode, mode_rx) = watch::channel(Mode::Forward);
                let (acks, swallowing) = watch::channel(0u8);
                let task =
                    tokio::spawn(forward(client, upstream, mode_rx, acks, dropped_tx.clone()));
                registry.lock().expect("proxy registry").push(Conn {
                    mode,
                    swallowing,
                    task,
                });
                accepted_tx.send_modify(|n| *n += 1);
            }
        });
        Proxy {
            addr,
            upstream: upstream_tx,
            conns,
            accepted,
            dropped_from_clients,
            task,
        }
    }

    /// Forwards new connections to `upstream` from now on.
    pub fn set_upstream(&self, upstream: SocketAddr) {
        self.upstream.send_replace(upstream);
    }

    /// Closes every connection open now, and waits (at most [`PATIENCE`]) until they are closed.
    pub async fn cut(&self) {
        let conns: Vec<Conn> = std::mem::take(&mut *self.conns.lock().expect("proxy registry"));
        for conn in &conns {
            conn.mode.send_replace(Mode::Cut);
        }
        for conn in conns {
            within(PATIENCE, "the proxy to close a connection", conn.task)
                .await
                .expect("proxy connection task");
        }
    }

    /// From now on, every connection open now drops what it carries; returns (at most
    /// [`PATIENCE`]) once each of them does.
    pub async fn black_hole(&self) {
        let waits: Vec<watch::Receiver<u8>> = {
            let conns = self.conns.lock().expect("proxy registry");
            conns
                .iter()
                .map(|conn| {
                    conn.mode.send_replace(Mode::Swallow);
                    conn.swallowing.clone()
                })
                .collect()
        };
        for mut swallowing in waits {
            // Err: both pumps have ended (the connection closed), so nothing passes either.
            let _ = within(
                PATIENCE,
                "both pumps of a proxied connection to start dropping",
                swallowing.wait_for(|n| *n >= 2),
            )
            .await;
        }
    }

    /// Waits (at most [`PATIENCE`]) until `n` connections in all have been accepted.
    pub async fn accepted(&self, n: u64) {
        let mut accepted = self.accepted.clone();
        let what = format!("the proxy to have accepted {n} connections");
        within(PATIENCE, &what, accepted.wait_for(|got| *got >= n))
            .await
            .expect("proxy running");
    }

    /// Waits (at most [`PATIENCE`]) until black holes have swallowed at least `n` bytes sent by
    /// clients.
    pub async fn dropped_from_clients(&self, n: u64) {
        let mut dropped = self.dropped_from_clients.clone();
        let what = format!("the proxy to have dropped {n} bytes from clients");
        within(PATIENCE, &what, dropped.wait_for(|got| *got >= n))
            .await
            .expect("proxy running");
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        if let Ok(conns) = self.conns.lock() {
            for conn in conns.iter() {
                conn.task.abort();
            }
        }
    }
}

/// One connection: connects to `upstream` and pumps both ways until either side ends or the
/// proxy cuts it. Both sockets are dropped when it returns: the connection is gone on both sides.
async fn forward(
    client: TcpStream,
    upstream: SocketAddr,
    mode: watch::Receiver<Mode>,
    acks: watch::Sender<u8>,
    dropped: watch::Sender<u64>,
) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (client_rx, client_tx) = client.into_split();
    let (server_rx, server_tx) = server.into_split();
    let mut cut = mode.clone();
    tokio::select! {
        biased;
        _ = cut.wait_for(|m| *m == Mode::Cut) => {}
        () = pump(client_rx, server_tx, mode.clone(), acks.clone(), Some(dropped)) => {}
        () = pump(server_rx, client_tx, mode, acks, None) => {}
    }
}

/// Copies `from` to `to` until either ends; once told to swallow, says so on `acks` and reads
/// and drops instead (counting into `dropped`, if given). A swallowing pump never ends by itself:
/// a silent network does not pass a close on either way; only a cut ends it.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
    acks: watch::Sender<u8>,
    dropped: Option<watch::Sender<u64>>,
) {
    let mut buf = vec![0u8; 16 << 10];
    let mut swallowing = false;
    loop {
        if !swallowing && *mode.borrow_and_update() != Mode::Forward {
            swallowing = true;
            acks.send_modify(|n| *n += 1);
        }
        // Biased: a change of mode is seen before any more data is read.
        let n = tokio::select! {
            biased;
            changed = mode.changed(), if !swallowing => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) if swallowing => std::future::pending().await,
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
        };
        if swallowing {
            if let Some(dropped) = &dropped {
                dropped.send_modify(|total| *total += n as u64);
            }
            continue;
        }
        let Some(data) = buf.get(..n) else {
            return;
        };
        // A write the peer does not take must not hold up the switch to swallowing.
        tokio::select! {
            biased;
            changed = mode.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            written = to.write_all(data) => {
                if written.is_err() {
                    return;
                }
            }
        }
    }
}
