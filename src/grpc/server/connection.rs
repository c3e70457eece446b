//! Serving one connection: the TLS handshake if any, the HTTP/2 handshake with the server's
//! settings, then the loop that takes its calls while it watches shutdown, the idle and age
//! deadlines and keepalive; at the end, the lingering close.

use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::debug;

use crate::grpc::server::admission::IpSlot;
use crate::grpc::server::budget::{ConnectionBudget, DEFAULT_SEND_RESERVE_PER_CONNECTION};
use crate::grpc::server::call_task::start_call;
use crate::grpc::server::coalesce::CoalescedWrites;
use crate::grpc::server::keepalive::{lost, Keepalive};
use crate::grpc::server::lifetime::{Activity, Lifetime, LifetimeEvent};
use crate::grpc::server::tls::TlsAcceptor;
use crate::grpc::server::written::Chunk;
use crate::grpc::server::{linger, stats, ConnInfo, ServerConfig, Shared};

/// HTTP/2's largest flow-control window, 2^31 - 1.
const MAX_WINDOW_BYTES: u32 = (1 << 31) - 1;

/// When a connection accepted now must have completed its handshakes.
pub(super) fn handshake_deadline(config: &ServerConfig) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    // An absurd timeout (the flag allows "forever") is a year, not an overflow.
    now.checked_add(config.handshake_timeout)
        .unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 3600))
}

/// Runs the TLS handshake (by `deadline`), then serves HTTP/2 over it.
pub(super) async fn serve_tls(
    shared: Arc<Shared>,
    tls: Arc<TlsAcceptor>,
    socket: tokio::net::TcpStream,
    peer: SocketAddr,
    deadline: tokio::time::Instant,
    permit: Option<(OwnedSemaphorePermit, Option<IpSlot>)>,
) {
    let accepted = match tokio::time::timeout_at(deadline, tls.accept(socket)).await {
        Ok(Ok(accepted)) => accepted,
        Ok(Err(e)) => {
            debug!(error = %e, "TLS connection refused");
            stats::tls_handshake_failed();
            stats::connection_refused("handshake_failed");
            return;
        }
        Err(_) => {
            debug!("TLS handshake timed out");
            stats::connection_refused("handshake_timeout");
            return;
        }
    };
    drop(tls);
    let conn = ConnInfo::new(peer, accepted.identity);
    serve_connection(shared, accepted.stream, conn, deadline, permit).await;
}

pub(super) async fn serve_connection<T>(
    shared: Arc<Shared>,
    socket: T,
    conn_info: ConnInfo,
    deadline: tokio::time::Instant,
    _permit: Option<(OwnedSemaphorePermit, Option<IpSlot>)>,
) where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let cfg = &shared.config;
    // Shared by the connection's calls.
    let conn_info = Arc::new(conn_info);
    // The socket comes back when h2 drops it, for a lingering close (see `linger`).
    let (socket, returned) = linger::Returning::new(socket);
    // Boxed: the handshake's state is large and needed only until the preface is done, while
    // this task lives as long as the connection.
    let stream_window = cfg
        .initial_stream_window_bytes
        .clamp(1 << 14, MAX_WINDOW_BYTES);
    let connection_window = stream_window
        .saturating_mul(cfg.max_concurrent_streams.max(1))
        .min(MAX_WINDOW_BYTES);
    // Boxed: the deadlines are needed rarely, and this task lives as long as the connection.
    let mut lifetime = Box::new(Lifetime::new(
        Activity::new(),
        cfg.max_connection_idle,
        cfg.max_connection_age,
        cfg.max_connection_age_grace.unwrap_or(Duration::MAX),
        conn_info.id,
    ));
    let handshake = {
        let mut builder = h2::server::Builder::new();
        builder
            .max_concurrent_streams(cfg.max_concurrent_streams)
            .max_header_list_size(cfg.max_header_list_bytes)
            .max_pending_accept_reset_streams(cfg.max_pending_accept_reset_streams)
            .max_local_error_reset_streams(Some(cfg.max_local_error_reset_streams))
            .data_frame_budget(cfg.small_frame_budget_bytes)
            // The stream window bounds what a call buffers, since received capacity is released
            // only as messages are consumed; the connection's has room for every stream's, so a
            // stream whose handler does not read holds only its own window.
            .initial_window_size(stream_window)
            .initial_connection_window_size(connection_window);
        // Writes wait one scheduler turn, so that frames from every call answering at once leave
        // together; a call alone on its connection has nobody to wait for (see `coalesce`).
        let socket = CoalescedWrites::unless_alone(socket, lifetime.activity());
        Box::pin(builder.handshake::<_, Chunk>(socket))
    };
    // Matched in place: a named result would keep a second connection-sized slot in this task for
    // the connection's whole life.
    let mut conn = match tokio::time::timeout_at(deadline, handshake).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            debug!(error = %e, "handshake failed");
            stats::connection_refused("handshake_failed");
            return;
        }
        Err(_) => {
            debug!("handshake timed out");
            stats::connection_refused("handshake_timeout");
            return;
        }
    };
    debug!("connection open");
    stats::connection_open(true);
    let handlers = Arc::new(Semaphore::new(cfg.max_concurrent_streams as usize));
    let budget = ConnectionBudget::new(
        cfg.max_send_buffer_per_connection,
        DEFAULT_SEND_RESERVE_PER_CONNECTION,
        shared.send_total.clone(),
    );
    let mut draining = false;
    let mut keepalive = conn
        .ping_pong()
        .and_then(|p| Keepalive::new(p, cfg.keepalive_interval, cfg.keepalive_timeout));
    loop {
        let next = tokio::select! {
            next = poll_fn(|cx| conn.poll_accept(cx)) => next,
            () = shared.signal.wait(), if !draining => {
                // GOAWAY now; keep driving the connection until its calls end.
                conn.graceful_shutdown();
                draining = true;
                continue;
            }
            event = lifetime.next() => match event {
                LifetimeEvent::GoAway => {
                    debug!("connection idle or old: GOAWAY");
                    if !draining {
                        conn.graceful_shutdown();
                        draining = true;
                    }
                    continue;
                }
                LifetimeEvent::Close => {
                    debug!("connection past its age grace: closing");
                    break;
                }
            },
            () = lost(&mut keepalive) => {
                debug!("peer did not answer a keepalive PING; closing the connection");
                conn_info.dropped.store(true, Ordering::Relaxed);
                break;
            }
        };
        match next {
            Some(Ok((request, respond))) => {
                if let Some(k) = keepalive.as_mut() {
                    k.active();
                }
                let permit = handlers
                    .clone()
                    .try_acquire_owned()
                    .ok()
                    .map(|p| lifetime.enter(p));
                start_call(
                    shared.clone(),
                    request,
                    respond,
                    (&conn_info, &budget),
                    permit,
                );
            }
            Some(Err(e)) => {
                // h2 has told the calls already, with the error itself.
                debug!(error = %e, "connection error");
                break;
            }
            None => break,
        }
    }
    drop(conn);
    if let Ok(socket) = returned.await {
        // Boxed: its read buffer is needed only now, not for the connection's whole life.
        Box::pin(linger::linger(socket)).await;
    }
    debug!("connection closed");
    stats::connection_open(false);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpc::server::Server;

    /// A connection's task lives as long as the connection, so its size is per-connection memory.
    /// h2's connection state is about 1.3 KB of it; when the handshake's result was kept in a named
    /// local, the task held that state twice (3.1 KB).
    #[tokio::test]
    async fn the_connection_task_holds_h2_state_once() {
        let (shared, _stopper) = Server::new(ServerConfig::default()).start();
        let (io, _peer) = tokio::io::duplex(64);
        let peer: SocketAddr = ([127, 0, 0, 1], 1).into();
        let deadline = handshake_deadline(&shared.config);
        let task = serve_connection(shared, io, ConnInfo::new(peer, None), deadline, None);
        let size = std::mem::size_of_val(&task);
        // 2 KiB, 8 bytes for the connection's send budget (the idle and age deadlines are
        // boxed) and 8 for the running calls its writes look at (`coalesce`).
        assert!(size <= 2064, "the connection task is {size} bytes");
    }
}
