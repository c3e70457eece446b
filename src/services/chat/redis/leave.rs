//! Leaves through Redis: a member that leaves this node (or whose claim ran out) is owed to
//! Redis and announced in the background, retried until it is heard, taken over by a join of
//! the same name, or the claim has run out anyway; shutdown waits for them ([`settle`]).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use super::commands::unavailable;
use super::{lock, Claim, Engine};
use crate::grpc::Status;
use crate::pb::chat::v1::LeaveReason;
use crate::services::chat::room::SharedRooms;

/// Leaves not yet announced in Redis, across engines: shutdown waits for them ([`settle`]).
static UNSETTLED: AtomicUsize = AtomicUsize::new(0);
static SETTLED: Notify = Notify::const_new();

/// Waits, at most `within`, until every leave this process owes Redis is announced (or given up
/// to the presence TTL): a node shutting down says its members left instead of letting their
/// claims run out.
pub async fn settle(within: Duration) {
    let _ = tokio::time::timeout(within, async {
        loop {
            let notified = SETTLED.notified();
            if UNSETTLED.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    })
    .await;
}

/// A leave that has not reached Redis yet.
#[derive(Clone, Debug)]
pub(super) struct Pending {
    epoch: Arc<str>,
    token: String,
    reason: LeaveReason,
}

impl Engine {
    /// The local member's claim is gone in Redis: its call ends, so its client joins again.
    pub(super) fn lose(&self, room_id: &str, name: &str) {
        lock(&self.claims).remove(&(room_id.to_owned(), name.to_owned()));
        if let Some(copy) = self.rooms.shared_room(room_id) {
            copy.cut_member(
                name,
                Status::unavailable(
                    "this member's place in the room ran out (its server did not renew it in \
                     time); join again",
                ),
            );
        }
    }

    /// Records a leave Redis must hear of and announces it in the background, retrying until it
    /// is announced, a join of the same name takes it over, or the claim has run out anyway.
    pub(super) fn owe_leave(&self, room_id: &str, name: &str, claim: Claim, reason: LeaveReason) {
        let key = (room_id.to_owned(), name.to_owned());
        let owed = Pending {
            epoch: claim.epoch,
            token: claim.token,
            reason,
        };
        lock(&self.pending).insert(key.clone(), owed.clone());
        UNSETTLED.fetch_add(1, Ordering::AcqRel);
        let engine = self.me();
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            let mut wait = Duration::from_millis(50);
            loop {
                let still = lock(&engine.pending)
                    .get(&key)
                    .is_some_and(|p| p.token == owed.token);
                if !still || started.elapsed() > engine.ttl {
                    break;
                }
                if engine.announce_leave(&key.0, &key.1, &owed).await.is_ok() {
                    break;
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(1));
            }
            let mut pending = lock(&engine.pending);
            if pending.get(&key).is_some_and(|p| p.token == owed.token) {
                pending.remove(&key);
            }
            drop(pending);
            if UNSETTLED.fetch_sub(1, Ordering::AcqRel) == 1 {
                SETTLED.notify_waiters();
            }
        });
    }

    pub(super) async fn announce_leave(
        &self,
        room_id: &str,
        name: &str,
        owed: &Pending,
    ) -> Result<(), Status> {
        let reason = (owed.reason as i32).to_string();
        let reply: Vec<String> = self
            .run(
                &self.scripts.leave,
                room_id,
                &[
                    owed.epoch.as_bytes(),
                    name.as_bytes(),
                    owed.token.as_bytes(),
                    reason.as_bytes(),
                ],
            )
            .await
            .map_err(|e| unavailable(&e))?;
        if let [ok, wait] = reply.as_slice() {
            if ok == "ok" {
                self.flush_later(room_id, wait);
            }
        }
        Ok(())
    }
}

impl SharedRooms for Engine {
    fn left(&self, room_id: &str, epoch: &str, name: &str, reason: LeaveReason) {
        let key = (room_id.to_owned(), name.to_owned());
        let claim = lock(&self.claims).remove(&key);
        match claim {
            // The member's claim is in the copy's epoch; one of an older copy is gone anyway.
            Some(claim) if &*claim.epoch == epoch => self.owe_leave(room_id, name, claim, reason),
            _ => {}
        }
    }
}
