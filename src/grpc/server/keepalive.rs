//! Keepalive: PINGs that find a peer gone without closing its socket.

use std::future::pending;
use std::time::Duration;

/// PING-based liveness of one connection: a peer that vanished without closing its socket is found
/// within `keepalive_interval + keepalive_timeout`, and all its calls end.
pub(in crate::grpc) struct Keepalive {
    ping_pong: h2::PingPong,
    interval: Option<Duration>,
}

impl Keepalive {
    pub(in crate::grpc) fn new(ping_pong: h2::PingPong, interval: Option<Duration>) -> Keepalive {
        Keepalive {
            ping_pong,
            interval,
        }
    }
}

/// Waits one keepalive interval, pings, and waits for the pong: `true` if it came in time.
/// Never resolves when keepalive is off.
pub(in crate::grpc) async fn keep_alive(
    keepalive: &mut Option<Keepalive>,
    timeout: Duration,
) -> bool {
    let Some(Keepalive {
        ping_pong,
        interval: Some(interval),
    }) = keepalive.as_mut()
    else {
        return pending().await;
    };
    tokio::time::sleep(*interval).await;
    if ping_pong.send_ping(h2::Ping::opaque()).is_err() {
        return false;
    }
    let pong = std::future::poll_fn(|cx| ping_pong.poll_pong(cx));
    matches!(tokio::time::timeout(timeout, pong).await, Ok(Ok(_)))
}
