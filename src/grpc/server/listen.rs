//! The accept loop: [`Server::serve`] and [`Server::serve_on`] take connections from the
//! listeners within the connection caps (in total and per client address), back off when accept
//! fails, and spawn each connection's task; on the signal they stop accepting and shut down.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{debug, debug_span, info, warn, Instrument};

use crate::grpc::server::admission::{self, AcceptBackoff, PerIp};
use crate::grpc::server::connection::{handshake_deadline, serve_connection, serve_tls};
use crate::grpc::server::stats;
use crate::grpc::server::transport::{accept_any, Listener};
use crate::grpc::server::{ConnInfo, Server};

/// Least time between two warnings that the connection limit is reached.
const CONNECTION_LIMIT_WARN_INTERVAL: Duration = Duration::from_secs(60);

impl Server {
    /// Serves plaintext connections from `listener` until `signal` resolves, then shuts down
    /// gracefully.
    pub async fn serve(
        self,
        listener: TcpListener,
        signal: impl Future<Output = ()>,
    ) -> io::Result<()> {
        self.serve_on(vec![Listener::plaintext(listener)], signal)
            .await
    }

    /// Serves connections from every listener (each plaintext or TLS) until `signal` resolves,
    /// then shuts down gracefully. `max_connections` counts them all together.
    pub async fn serve_on(
        self,
        listeners: Vec<Listener>,
        signal: impl Future<Output = ()>,
    ) -> io::Result<()> {
        let mut next_listener = 0;
        let max_connections = self.config.max_connections;
        admission::check_max_connections(max_connections)?;
        let connections = Arc::new(Semaphore::new(max_connections));
        let per_ip = PerIp::new(self.config.max_connections_per_ip);
        let mut backoff = AcceptBackoff::new();
        let (shared, stopper) = self.start();
        tokio::pin!(signal);
        let mut limit_warned_at: Option<Instant> = None;
        loop {
            if connections.available_permits() == 0 {
                stats::connection_limit_reached();
            }
            if connections.available_permits() == 0
                && limit_warned_at.is_none_or(|at| at.elapsed() >= CONNECTION_LIMIT_WARN_INTERVAL)
            {
                // An operator may want a higher limit: new clients now wait in the backlog.
                warn!(
                    max_connections,
                    "connection limit reached; new clients wait until a connection closes"
                );
                limit_warned_at = Some(Instant::now());
            }
            let permit = tokio::select! {
                p = connections.clone().acquire_owned() => p,
                () = &mut signal => break,
            };
            let Ok(permit) = permit else { break };
            let accepted = tokio::select! {
                r = accept_any(&listeners, &mut next_listener) => r,
                () = &mut signal => break,
            };
            match accepted {
                Ok(incoming) => {
                    stats::connection_accepted();
                    let (socket, peer) = (incoming.socket, incoming.peer);
                    backoff.succeeded();
                    let ip_slot = match per_ip.admit(peer.ip()) {
                        Some(slot) => Some(slot),
                        None if per_ip.is_limited() => {
                            debug!(%peer, "refused: too many connections from this address");
                            continue;
                        }
                        None => None,
                    };
                    let _ = socket.set_nodelay(true);
                    let permit = Some((permit, ip_slot));
                    let shared = shared.clone();
                    // The TLS handshake and the HTTP/2 preface share the handshake timeout.
                    let deadline = handshake_deadline(&shared.config);
                    // At debug level: an enabled span is stored for the connection's whole life,
                    // and at the default level nothing inside it logs.
                    let span = debug_span!("conn", %peer);
                    match incoming.tls {
                        None => {
                            let conn = ConnInfo::new(peer, None);
                            let task = serve_connection(shared, socket, conn, deadline, permit);
                            tokio::spawn(task.instrument(span));
                        }
                        Some(tls) => {
                            let task = serve_tls(shared, tls, socket, peer, deadline, permit);
                            tokio::spawn(task.instrument(span));
                        }
                    }
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning, and
                    // say so once a minute, not once a try.
                    let (pause, warn_now) = backoff.failed();
                    if let Some(failures) = warn_now {
                        warn!(error = %e, failures, "accept failed; backing off");
                    }
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        () = &mut signal => break,
                    }
                }
            }
        }
        info!("shutting down: no new connections; GOAWAY to every connection; ending live calls");
        drop(listeners);
        drop(shared);
        stopper.stop().await;
        info!("shut down");
        Ok(())
    }
}
