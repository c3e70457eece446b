//! A TCP proxy on 127.0.0.1 that can lose data and cut connections, to test reconnecting.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Forwards connections to `upstream`.
///
/// - [`cut`](Proxy::cut) closes every connection open at the time (both sides);
/// - [`black_hole`](Proxy::black_hole) makes every connection open at the time drop what it
///   carries, both ways, as a network that fails silently: the sockets stay open, and neither
///   side hears of the other closing;
///
/// New connections are forwarded normally either way, to the upstream of the time
/// ([`set_upstream`](Proxy::set_upstream)).
pub struct Proxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    upstream: watch::Sender<SocketAddr>,
    cuts: watch::Sender<u64>,
    holes: watch::Sender<u64>,
    accepted: watch::Receiver<u64>,
    dropped_from_clients: watch::Receiver<u64>,
    task: JoinHandle<()>,
}

/// What a connection's pumps watch.
#[derive(Clone)]
struct Signals {
    cuts: watch::Receiver<u64>,
    holes: watch::Receiver<u64>,
}

impl Proxy {
    /// Starts forwarding to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let (cuts, cut_rx) = watch::channel(0u64);
        let (holes, hole_rx) = watch::channel(0u64);
        let (accepted_tx, accepted) = watch::channel(0u64);
        let (dropped_tx, dropped_from_clients) = watch::channel(0u64);
        let (upstream_tx, upstream_rx) = watch::channel(upstream);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                accepted_tx.send_modify(|n| *n += 1);
                let mut signals = Signals {
                    cuts: cut_rx.clone(),
                    holes: hole_rx.clone(),
                };
                signals.cuts.mark_unchanged();
                signals.holes.mark_unchanged();
                let dropped = dropped_tx.clone();
                let upstream = *upstream_rx.borrow();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (client_rx, client_tx) = client.into_split();
                    let (server_rx, server_tx) = server.into_split();
                    let mut cut = signals.cuts.clone();
                    tokio::select! {
                        () = pump(client_rx, server_tx, signals.holes.clone(), Some(dropped)) => {}
                        () = pump(server_rx, client_tx, signals.holes, None) => {}
                        _ = cut.changed() => {}
                    }
                    // Both sockets are dropped here: the connection is gone on both sides.
                });
            }
        });
        Proxy {
            addr,
            upstream: upstream_tx,
            cuts,
            holes,
            accepted,
            dropped_from_clients,
            task,
        }
    }

    /// Forwards new connections to `upstream` from now on.
    pub fn set_upstream(&self, upstream: SocketAddr) {
        self.upstream.send_replace(upstream);
    }

    /// Closes every connection open now.
    pub fn cut(&self) {
        self.cuts.send_modify(|n| *n += 1);
    }

    /// From now on, every connection open now drops what it carries.
    pub fn black_hole(&self) {
        self.holes.send_modify(|n| *n += 1);
    }

    /// Waits until `n` connections in all have been accepted.
    pub async fn accepted(&self, n: u64) {
        let mut accepted = self.accepted.clone();
        accepted
            .wait_for(|got| *got >= n)
            .await
            .expect("proxy running");
    }

    /// Waits until black holes have swallowed at least `n` bytes sent by clients.
    pub async fn dropped_from_clients(&self, n: u64) {
        let mut dropped = self.dropped_from_clients.clone();
        dropped
            .wait_for(|got| *got >= n)
            .await
            .expect("proxy running");
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.cut();
    }
}

/// Copies `from` to `to` until either ends; once the black hole opens, reads and drops instead
/// (counting into `dropped`, if given).
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut hole: watch::Receiver<u64>,
    dropped: Option<watch::Sender<u64>>,
) {
    let mut buf = vec![0u8; 16 << 10];
    let mut swallowing = false;
    loop {
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                // A silent network does not pass a close on either: only a cut ends it.
                Ok(0) | Err(_) if swallowing => std::future::pending().await,
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            changed = hole.changed(), if !swallowing => {
                if changed.is_err() {
                    return;
                }
                swallowing = true;
                continue;
            }
        };
        if swallowing {
            if let Some(dropped) = &dropped {
                dropped.send_modify(|total| *total += n as u64);
            }
        } else if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
