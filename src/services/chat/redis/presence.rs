//! Presence across nodes: each node renews its members' claims every third of the TTL, and
//! sweeps (in the same script) the claims other nodes stopped renewing, which announces those
//! members' leave to the room.
//!
//! A renewal also tells the node what Redis no longer has: a room whose history is gone (its
//! copy is retired, its members resume into a RESET), or a member whose claim ran out while its
//! node could not renew it (its call ends; its client joins again).
//!
//! And the presence batches of large rooms: a node looks at a room's pending batch again when
//! it falls due, as the script that added to it said ([`Engine::flush_later`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tracing::debug;

use super::{lock, Engine};

/// A room's epoch and its local members' (name, token).
type RoomClaims = (Arc<str>, Vec<(String, String)>);

/// Renews and sweeps for as long as the process.
pub(super) async fn run(engine: Arc<Engine>) {
    let period = (engine.ttl / 3).max(Duration::from_millis(50));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        renew(&engine).await;
        let _ = engine.requests.send(super::subscriber::Request::Tidy);
    }
}

/// One round: every room with local members, in one script call each; a PING when there is none
/// (so health follows Redis even on an idle node).
async fn renew(engine: &Engine) {
    let mut by_room: HashMap<String, RoomClaims> = HashMap::new();
    for ((room, name), claim) in lock(&engine.claims).iter() {
        by_room
            .entry(room.clone())
            .or_insert_with(|| (claim.epoch.clone(), Vec::new()))
            .1
            .push((name.clone(), claim.token.clone()));
    }
    if by_room.is_empty() {
        let mut con = engine.commands.clone();
        let pong: Result<String, _> = redis::cmd("PING").query_async(&mut con).await;
        engine.commands_ok(pong.is_ok());
        return;
    }
    let ttl_ms = engine.ttl.as_millis().to_string();
    // Every room at once (as many scripts in flight as the engine allows): one after the other,
    // a node with thousands of rooms on a busy core took longer than the TTL, and its members'
    // claims ran out while it was still renewing them.
    let rounds = by_room
        .into_iter()
        .map(|(room, claims)| renew_room(engine, room, claims, &ttl_ms));
    futures_util::future::join_all(rounds).await;
}

/// Renews the claims of one room's local members; loses those Redis no longer has, and retires
/// the room's copy if its history is gone.
async fn renew_room(engine: &Engine, room: String, (epoch, members): RoomClaims, ttl_ms: &str) {
    let mut args: Vec<&[u8]> = vec![epoch.as_bytes(), ttl_ms.as_bytes()];
    for (name, token) in &members {
        args.push(name.as_bytes());
        args.push(token.as_bytes());
    }
    let reply: Vec<String> = match engine.run(&engine.scripts.renew, &room, &args).await {
        Ok(reply) => reply,
        Err(e) => {
            debug!(room, error = %e, "redis: renewal failed");
            return;
        }
    };
    match reply.split_first() {
        Some((ok, lost)) if ok == "ok" => {
            for name in lost {
                engine.lose(&room, name);
            }
        }
        _ => {
            // The room's history is gone in Redis: its members resume into a new epoch.
            lock(&engine.claims).retain(|(r, _), c| !(r == &room && c.epoch == epoch));
            engine.rooms.retire_shared(&room, &epoch);
        }
    }
}

impl Engine {
    /// Looks at the room's pending presence batch again when it falls due, `wait` ms from now
    /// as a script said (`-1`: nothing pending), unless this node already will. A batch no node
    /// looks at (its node died) is numbered by the next change, post or renewal of the room.
    pub(super) fn flush_later(&self, room_id: &str, wait: &str) {
        let Ok(wait) = wait.parse::<u64>() else {
            return;
        };
        if !lock(&self.flushing).insert(room_id.to_owned()) {
            return;
        }
        let engine = self.me();
        let room = room_id.to_owned();
        tokio::spawn(async move {
            let mut wait = wait;
            loop {
                tokio::time::sleep(Duration::from_millis(wait)).await;
                let reply: Result<Vec<String>, _> =
                    engine.run(&engine.scripts.flush, &room, &[]).await;
                match reply
                    .as_deref()
                    .map(|r| r.first().map(|w| w.parse::<u64>()))
                {
                    Ok(Some(Ok(next))) => wait = next,
                    Err(e) => {
                        debug!(room, error = %e, "redis: presence flush failed");
                        break;
                    }
                    // -1: nothing pending.
                    Ok(_) => break,
                }
            }
            lock(&engine.flushing).remove(&room);
        });
    }
}
