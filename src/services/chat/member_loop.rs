//! The member's loop (`run_member`): one task per joined member that reads its posts and writes
//! its room's events, and on shutdown drains to the room's close point. The hot path profiled in
//! benches/README.md.

use std::pin::Pin;

use tokio::time::Sleep;
use tracing::{debug, info};

use super::post::TokenBucket;
use super::{peer_text, redis, stats, ChatService};
use crate::grpc::server::log_rate::LogRate;
use crate::grpc::{Call, CallResult, ShutdownSignal, Status};
use crate::pb::chat::v1::ChatMessage;
use crate::services::chat::room::{Blocker, Member, Posted, MAX_BATCH_BYTES};

impl ChatService {
    /// The member's loop: post what the client sends, deliver what the room has; on shutdown,
    /// deliver up to the room's close point and end.
    pub(super) async fn run_member(&self, call: &Call, member: &mut Member) -> CallResult {
        let mut bucket = TokenBucket::new(self.config.max_post_rate, self.config.post_burst);
        let mut inbound_open = true;
        // Set once shutdown began: the room's close point, and when the member is cut. Boxed:
        // only a draining member needs a timer.
        let mut closing: Option<(u64, Pin<Box<Sleep>>)> = None;
        // A new batch waits until h2 has written the last one out: events that arrive meanwhile
        // leave together, in one frame, and the connection's queue holds one frame per member.
        // A batch is built only within the window the client has granted: a member whose client
        // reads nothing holds its cursor and nothing else.
        call.track_writes();
        // One handle for the loop's other branches: the gate, and the member's blocked state.
        let blocker = member.blocker();
        // With --redis: posts sent to Redis and not answered yet (several at once, in order).
        let mut in_flight = redis::InFlight::default();
        loop {
            // A shared room's copy retired, or this member's place in it lost: resume elsewhere.
            if let Some(ended) = member.ended() {
                return Err(ended);
            }
            let mut window_wait = false;
            let mut progressed = false;
            if call.is_send_idle() {
                let drained = closing
                    .as_ref()
                    .is_some_and(|(at, _)| member.cursor() > *at);
                if drained {
                    // Everything up to the close point is written: the member has been offered
                    // every post that was echoed.
                    return Err(Status::unavailable("server shutting down"));
                }
                if member.has_news() {
                    match call.try_send_capacity(MAX_BATCH_BYTES)? {
                        0 => window_wait = true,
                        room => {
                            if let Some(batch) = member.next_batch(room) {
                                call.queue_frames(batch)?;
                                progressed = true;
                            }
                        }
                    }
                }
            }
            // Blocked: events are due and none can leave (queued bytes wait for window, or the
            // window is zero, or the last batch is still unwritten). The room stops waiting for a
            // member blocked too long.
            let sending = call.has_queued();
            member.set_blocked(!progressed && (sending || member.has_news()));
            let reading = inbound_open
                && closing.is_none()
                && !self
                    .shared
                    .as_ref()
                    .is_some_and(|s| in_flight.is_full(s.posts_in_flight()));
            // Past the close point nothing new matters: only the last write is awaited.
            let drained = closing
                .as_ref()
                .is_some_and(|(at, _)| member.cursor() > *at);
            // Unbiased on purpose: neither the member's own posts nor its deliveries may starve.
            let send_wait = if sending {
                SendWait::Flush
            } else if window_wait {
                SendWait::Window
            } else {
                SendWait::News { drained }
            };
            tokio::select! {
                sent = send_side(call, &blocker, member, send_wait) => sent?,
                posted = next_post(call, &mut bucket, &blocker), if reading => match posted? {
                    Some(msg) => {
                        if let Some(Posted::Closed(at)) = self.post(member, msg, &mut in_flight)? {
                            closing = Some(self.close(member, at));
                        }
                    }
                    None => inbound_open = false,
                },
                // A post's answer from Redis, oldest first; the first that failed ends the call.
                answer = in_flight.answer(), if !in_flight.is_empty() => {
                    match answer? {
                        Posted::At(_) => stats::posted(),
                        Posted::Closed(at) => {
                            if closing.is_none() {
                                closing = Some(self.close(member, at));
                            }
                        }
                    }
                }
                // A flag read, not a waiter: the server polls every handler once more right after
                // the signal fires, so this is seen then, at the cost of an atomic load per poll
                // (a waiter per member would queue thousands on one lock).
                () = shutdown_begun(&self.shutdown), if closing.is_none() => {
                    let at = member.close_room();
                    closing = Some(self.close(member, at));
                }
                () = async { cut_at(&mut closing).await }, if closing.is_some() => {
                    info!(
                        room = member.room_id(),
                        member = member.name(),
                        "shutdown: member did not take its room's last events in time; cut"
                    );
                    return Err(Status::unavailable(
                        "server shutting down; not every event up to the room's close was taken in time",
                    ));
                }
            }
        }
    }

    /// The drain state of a member whose room closed at `at`.
    fn close(&self, member: &Member, at: u64) -> (u64, Pin<Box<Sleep>>) {
        debug!(
            room = member.room_id(),
            member = member.name(),
            at,
            "room closed; draining"
        );
        (at, Box::pin(tokio::time::sleep(self.config.shutdown_drain)))
    }
}

/// Ready once shutdown has begun; registers no waker (see the member loop).
fn shutdown_begun(signal: &ShutdownSignal) -> impl std::future::Future<Output = ()> + '_ {
    std::future::poll_fn(move |_| {
        if signal.is_shutting_down() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
}

/// What the member's loop waits for on the sending side this turn: one of three, so one future
/// (the member's handler holds room for the largest of them, not for all three).
#[derive(Clone, Copy)]
enum SendWait {
    /// Queued bytes: flush them.
    Flush,
    /// Events are due but the window is zero: wait for window first, then the batch (next time
    /// round); the wait holds nothing.
    Window,
    /// Nothing queued: wait for news (unless drained), then for h2 to have written the last
    /// batch. Both waits resolve at once when already true, so dropping this one loses nothing.
    News { drained: bool },
}

/// The member's sending side for one turn of its loop (see [`SendWait`]).
async fn send_side(
    call: &Call,
    blocker: &Blocker,
    member: &mut Member,
    wait: SendWait,
) -> Result<(), Status> {
    match wait {
        SendWait::Flush => flush_or_block(call, blocker).await,
        SendWait::Window => call.send_capacity(MAX_BATCH_BYTES).await.map(drop),
        SendWait::News { drained } => {
            if !drained {
                member.changed().await;
                // News while the last batch is unwritten: blocked until h2 writes it.
                if !call.is_send_idle() {
                    blocker.set(true);
                }
            }
            call.written().await;
            Ok(())
        }
    }
}

/// Flushes the member's queued bytes; if they must wait for the client's window, the member is
/// blocked meanwhile (see [`Member::set_blocked`]).
async fn flush_or_block(call: &Call, blocker: &Blocker) -> Result<(), Status> {
    let mut flush = std::pin::pin!(call.flush());
    let mut first = true;
    std::future::poll_fn(|cx| {
        let polled = std::future::Future::poll(flush.as_mut(), cx);
        if polled.is_pending() && std::mem::take(&mut first) {
            blocker.set(true);
        }
        polled
    })
    .await
}

/// Resolves when a draining member's time is up; pending while not draining.
async fn cut_at(closing: &mut Option<(u64, Pin<Box<Sleep>>)>) {
    match closing {
        Some((_, sleep)) => sleep.as_mut().await,
        None => std::future::pending().await,
    }
}

/// The next message from the client, read only when the member may post: while the room's
/// readers catch up ([`Blocker::ready`]) or over the rate, the stream is not read, so the client's
/// HTTP/2 window fills and it slows down. Nothing is dropped.
async fn next_post(
    call: &Call,
    bucket: &mut TokenBucket,
    gate: &Blocker,
) -> Result<Option<Box<ChatMessage>>, Status> {
    gate.ready().await;
    let wait = bucket.wait();
    if let Some(wait) = wait {
        // Boxed: only a member over its rate needs a timer, and a timer is large.
        Box::pin(tokio::time::sleep(wait)).await;
    }
    let msg = call.recv::<ChatMessage>().await?;
    if msg.is_some() {
        bucket.take();
        // Counted once the post is read, not when the wait starts: this future is made anew
        // each time the member's loop wakes for something else.
        if let Some(wait) = wait {
            stats::throttled();
            if let Some(suppressed) = THROTTLE_LOG.allow() {
                info!(
                    peer = %peer_text(call),
                    ?wait,
                    suppressed,
                    "post rate limit hit: a member's post waited (max-post-rate)"
                );
            }
        }
    }
    // Boxed: a message is 264 bytes, and the member's loop would otherwise keep room for
    // several copies of it in every member's handler, read or not.
    Ok(msg.map(Box::new))
}

/// Lines saying a member hit the post rate: a few a second at most, however many members do.
static THROTTLE_LOG: LogRate = LogRate::per_second(5);
