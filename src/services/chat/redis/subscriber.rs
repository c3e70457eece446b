//! The node's one Pub/Sub connection: a subscription per room with local members, whose
//! events it appends to the rooms' local copies in seq order.
//!
//! An event past the copy's next number is preceded by the missing ones, read from the room's
//! stream (a publish missed, or not yet seen); events the stream no longer holds become a gap.
//! When the connection ends (Redis restarted, or cut this client for its output buffer), the
//! node is not serving until it has connected again, subscribed to every room it had, and
//! filled every copy from its stream: no event is lost on the way.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use redis::RedisError;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use super::commands::{unavailable, unreachable};
use super::script::{channel, CHANNEL_PREFIX};
use super::{lock, Engine};
use crate::grpc::Status;
use crate::services::chat::room::Delivered;

/// What the engine asks of the subscription.
pub(super) enum Request {
    /// Subscribe to this room's channel (if not already); answer once Redis confirmed.
    Subscribe(String, oneshot::Sender<Result<(), RedisError>>),
    /// Drop the subscriptions of rooms that have neither a local copy nor a join under way.
    Tidy,
}

/// Longest wait between two connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Most published events taken off the subscription at once (those already received).
const MAX_BATCH: usize = 256;

/// Runs the subscription for as long as the process.
pub(super) async fn run(engine: Arc<Engine>, mut requests: mpsc::UnboundedReceiver<Request>) {
    // The rooms subscribed to; kept over reconnections.
    let mut rooms: HashSet<String> = HashSet::new();
    let mut backoff = Duration::from_millis(50);
    let mut connected_once = false;
    loop {
        engine.pubsub_ok(false);
        let pubsub =
            match tokio::time::timeout(engine.timeout, engine.client.get_async_pubsub()).await {
                Ok(Ok(pubsub)) => pubsub,
                failed => {
                    let error = match failed {
                        Ok(Err(e)) => e.to_string(),
                        _ => "timed out".to_owned(),
                    };
                    debug!(error, "redis: cannot connect the subscription; retrying");
                    refuse_waiting(&mut requests);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            };
        let (mut sink, mut stream) = pubsub.split();
        // Every room this node serves, subscribed anew, and every copy filled from its stream.
        rooms.retain(|room| engine.rooms.shared_room(room).is_some());
        let mut whole = true;
        for room in &rooms {
            if sink.subscribe(channel(room)).await.is_err() {
                whole = false;
                break;
            }
        }
        if whole {
            for copy in engine.rooms.all_rooms() {
                if engine.backfill(&copy).await.is_err() {
                    whole = false;
                    break;
                }
            }
        }
        if !whole {
            tokio::time::sleep(backoff).await;
            continue;
        }
        backoff = Duration::from_millis(50);
        if connected_once {
            info!(
                rooms = rooms.len(),
                "redis: subscription restored; every room filled from its stream"
            );
        }
        connected_once = true;
        engine.pubsub_ok(true);
        loop {
            tokio::select! {
                msg = stream.next() => {
                    let Some(msg) = msg else {
                        warn!("redis: the subscription was closed; chat is unavailable until it is restored");
                        break;
                    };
                    // Every event already received goes in with it: a run of one room's events
                    // is appended under one lock and wakes its members once.
                    let mut batch = vec![msg];
                    while batch.len() < MAX_BATCH {
                        match stream.next().now_or_never() {
                            Some(Some(msg)) => batch.push(msg),
                            _ => break,
                        }
                    }
                    deliver_all(&engine, &batch).await;
                }
                request = requests.recv() => match request {
                    Some(Request::Subscribe(room, ack)) => {
                        let result = if rooms.contains(&room) {
                            Ok(())
                        } else {
                            let r = sink.subscribe(channel(&room)).await;
                            if r.is_ok() {
                                rooms.insert(room);
                            }
                            r
                        };
                        let failed = result.is_err();
                        let _ = ack.send(result);
                        if failed {
                            break;
                        }
                    }
                    Some(Request::Tidy) => {
                        let idle: Vec<String> = {
                            let joining = lock(&engine.joining);
                            rooms
                                .iter()
                                .filter(|r| !joining.contains_key(*r) && engine.rooms.shared_room(r).is_none())
                                .cloned()
                                .collect()
                        };
                        for room in idle {
                            if sink.unsubscribe(channel(&room)).await.is_err() {
                                break;
                            }
                            rooms.remove(&room);
                        }
                    }
                    None => return,
                },
            }
        }
    }
}

impl Engine {
    /// Subscribes to the room's channel (if the node is not already), waiting for Redis to
    /// confirm it.
    pub(super) async fn subscribe(&self, room_id: &str) -> Result<(), Status> {
        let (ack, done) = tokio::sync::oneshot::channel();
        let _ = self
            .requests
            .send(Request::Subscribe(room_id.to_owned(), ack));
        match tokio::time::timeout(self.timeout, done).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(unavailable(&e)),
            _ => Err(unreachable()),
        }
    }
}

/// Answers the subscription requests waiting while there is no connection: unavailable.
fn refuse_waiting(requests: &mut mpsc::UnboundedReceiver<Request>) {
    while let Ok(request) = requests.try_recv() {
        if let Request::Subscribe(_, ack) = request {
            let _ = ack.send(Err(RedisError::from((
                redis::ErrorKind::Io,
                "no connection to Redis",
            ))));
        }
    }
}

/// Appends published events to their rooms' copies: each run of one room's events that follow
/// one another and its copy's last at once, the rest one by one ([`deliver`]).
async fn deliver_all(engine: &Engine, batch: &[redis::Msg]) {
    let mut events = batch.iter().filter_map(|msg| {
        let room = msg.get_channel_name().strip_prefix(CHANNEL_PREFIX)?;
        Some((room, msg.get_payload_bytes()))
    });
    let mut next = events.next();
    while let Some((room, payload)) = next {
        next = events.next();
        let run_start = parse(payload).and_then(|(seq, epoch, frame)| {
            let copy = engine.rooms.shared_room(room)?;
            (copy.epoch().as_bytes() == epoch && copy.next_seq() == seq)
                .then_some((copy, seq, frame))
        });
        let Some((copy, first, frame)) = run_start else {
            deliver(engine, room, payload).await;
            continue;
        };
        let mut frames = vec![Bytes::copy_from_slice(frame)];
        while let Some((r, p)) = next {
            let Some((seq, epoch, frame)) = parse(p) else {
                break;
            };
            if r != room || epoch != copy.epoch().as_bytes() || seq != first + frames.len() as u64 {
                break;
            }
            frames.push(Bytes::copy_from_slice(frame));
            next = events.next();
        }
        // Only this task appends published events; a join's fill meanwhile makes some of them
        // already held, which `fill` skips.
        copy.fill(first, frames);
    }
}

/// Appends one published event (`SEQ EPOCH FRAME`) to the room's copy, filling what precedes it.
async fn deliver(engine: &Engine, room: &str, payload: &[u8]) {
    let Some((seq, epoch, frame)) = parse(payload) else {
        debug!(
            room,
            "redis: a published event that does not parse; ignored"
        );
        return;
    };
    let Some(copy) = engine.rooms.shared_room(room) else {
        return;
    };
    // An event of another epoch: the copy is older or newer than this history; the scripts
    // (which read the room's epoch in Redis) settle which.
    if copy.epoch().as_bytes() != epoch {
        return;
    }
    let frame = Bytes::copy_from_slice(frame);
    if let Delivered::Missing(_) = copy.deliver(seq, frame.clone()) {
        if engine.backfill(&copy).await.is_err() {
            return;
        }
        if let Delivered::Missing(_) = copy.deliver(seq, frame.clone()) {
            // What lies between is no longer in the stream: the members get a gap.
            copy.skip_to(seq);
            copy.deliver(seq, frame);
        }
    }
}

/// `SEQ EPOCH FRAME` split; `None` if it is not that.
fn parse(payload: &[u8]) -> Option<(u64, &[u8], &[u8])> {
    let space = payload.iter().position(|&b| b == b' ')?;
    let (seq, rest) = (payload.get(..space)?, payload.get(space + 1..)?);
    let seq: u64 = std::str::from_utf8(seq).ok()?.parse().ok()?;
    let space = rest.iter().position(|&b| b == b' ')?;
    Some((seq, rest.get(..space)?, rest.get(space + 1..)?))
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn a_published_event_is_seq_epoch_and_the_frame_as_is() {
        let (seq, epoch, frame) = parse(b"42 ab-1 \0\0\0\0\x02 x").unwrap();
        assert_eq!(
            (seq, epoch, frame),
            (42, &b"ab-1"[..], &b"\0\0\0\0\x02 x"[..])
        );
        assert!(parse(b"x ab frame").is_none());
        assert!(parse(b"42").is_none());
    }
}
