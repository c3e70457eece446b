//! Keepalive: PINGs that find a peer gone without closing its socket.
//!
//! The state lives in the connection's [`Keepalive`], not in a future its loop makes anew each
//! turn: h2 allows one PING of ours at a time, and a PONG that arrives after the future that
//! waited for it was dropped (the loop took a new call meanwhile) would stay unread, so the next
//! PING could not be sent and a peer that answered would be taken for gone.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// PING-based liveness of one connection: a peer that vanished without closing its socket is found
/// within `interval + timeout` of the connection's last new call, and all its calls end.
pub(in crate::grpc) struct Keepalive {
    ping_pong: h2::PingPong,
    interval: Duration,
    timeout: Duration,
    /// When to PING, or, while a PING is unanswered, when to give up on it.
    timer: Pin<Box<Sleep>>,
    awaiting_pong: bool,
}

impl Keepalive {
    /// Keepalive for a connection, `None` when `interval` is (keepalive off).
    pub(in crate::grpc) fn new(
        ping_pong: h2::PingPong,
        interval: Option<Duration>,
        timeout: Duration,
    ) -> Option<Keepalive> {
        let interval = interval?;
        Some(Keepalive {
            ping_pong,
            interval,
            timeout,
            timer: Box::pin(tokio::time::sleep(interval)),
            awaiting_pong: false,
        })
    }

    /// The connection took a new call: the next PING is one interval from now (unless one is
    /// already out, which must still be answered in time).
    pub(in crate::grpc) fn active(&mut self) {
        if !self.awaiting_pong {
            let at = Instant::now() + self.interval;
            self.timer.as_mut().reset(at);
        }
    }

    /// Ready once the peer has not answered a PING within the timeout (or no PING could be
    /// sent: the connection is gone); pending while it answers.
    pub(in crate::grpc) fn poll_lost(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if self.awaiting_pong {
                match self.ping_pong.poll_pong(cx) {
                    Poll::Ready(Ok(_)) => {
                        self.awaiting_pong = false;
                        let at = Instant::now() + self.interval;
                        self.timer.as_mut().reset(at);
                        continue;
                    }
                    Poll::Ready(Err(_)) => return Poll::Ready(()),
                    Poll::Pending => {}
                }
                ready!(self.timer.as_mut().poll(cx));
                return Poll::Ready(());
            }
            ready!(self.timer.as_mut().poll(cx));
            if self.ping_pong.send_ping(h2::Ping::opaque()).is_err() {
                return Poll::Ready(());
            }
            self.awaiting_pong = true;
            let at = Instant::now() + self.timeout;
            self.timer.as_mut().reset(at);
        }
    }
}

/// Resolves when the peer of `keepalive` is lost (see [`Keepalive::poll_lost`]); never when
/// keepalive is off.
pub(in crate::grpc) async fn lost(keepalive: &mut Option<Keepalive>) {
    match keepalive {
        Some(k) => std::future::poll_fn(|cx| k.poll_lost(cx)).await,
        None => std::future::pending().await,
    }
}
