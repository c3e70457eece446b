//! A member's join to a shared room: a leave still owed for the name goes first, the room is
//! subscribed to, the name is claimed in Redis (unique across nodes), and the member is admitted
//! into the room's local copy; a join under way keeps the room's subscription ([`Joining`]).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::commands::{unavailable, unreachable};
use super::{lock, Claim, Engine};
use crate::grpc::Status;
use crate::pb::chat::v1::LeaveReason;
use crate::services::chat::identity;
use crate::services::chat::room::{Member, StartAt};

/// Times a join makes a new local copy of its room when the last one was emptied meanwhile.
const ADMIT_TRIES: usize = 3;

impl Engine {
    /// Joins `name` to the shared room `room_id` (both normalized by the service).
    ///
    /// Errors: as [`Rooms::join`]'s, with the name unique across every node; UNAVAILABLE when
    /// Redis cannot be reached.
    ///
    /// [`Rooms::join`]: crate::services::chat::room::Rooms::join
    pub async fn join(&self, room_id: &str, name: &str, start: StartAt) -> Result<Member, Status> {
        if !self.is_up() {
            return Err(unreachable());
        }
        let _joining = Joining::new(self, room_id);
        // A leave of this name that did not reach Redis goes first: its claim is this node's.
        let owed = lock(&self.pending).remove(&(room_id.to_owned(), name.to_owned()));
        if let Some(owed) = owed {
            self.announce_leave(room_id, name, &owed).await?;
        }
        self.subscribe(room_id).await?;
        let token = format!(
            "{}:{}",
            self.node,
            self.tokens.fetch_add(1, Ordering::Relaxed)
        );
        let (resume_epoch, resume_after) = match &start {
            StartAt::Resume { epoch, after } => {
                (epoch.clone().unwrap_or_default(), after.to_string())
            }
            StartAt::RecentHistory => (String::new(), String::new()),
        };
        let candidate = crate::services::chat::room::fresh_epoch();
        let skeleton = identity::skeleton(name);
        let ttl_ms = self.ttl.as_millis().to_string();
        let reply: Vec<String> = self
            .run(
                &self.scripts.join,
                room_id,
                &[
                    candidate.as_bytes(),
                    name.as_bytes(),
                    skeleton.as_bytes(),
                    token.as_bytes(),
                    resume_epoch.as_bytes(),
                    resume_after.as_bytes(),
                    ttl_ms.as_bytes(),
                ],
            )
            .await
            .map_err(|e| unavailable(&e))?;
        let (epoch, joined_seq, first_live) = match reply.as_slice() {
            [ok, epoch, seq, first, wait] if ok == "ok" => {
                self.flush_later(room_id, wait);
                (
                    epoch.clone(),
                    seq.parse::<u64>().unwrap_or(0),
                    first.parse::<u64>().unwrap_or(0),
                )
            }
            [what, who] if what == "exists" => {
                return Err(Status::already_exists(format!(
                    "{who} is already in room {room_id}"
                )))
            }
            [what, like] if what == "like" => {
                return Err(Status::already_exists(format!(
                    "{name:?} looks like {like:?}, who is already in room {room_id}"
                )))
            }
            [what, last] if what == "range" => {
                return Err(Status::out_of_range(format!(
                    "resume_after_seq {resume_after} is past the last event of room {room_id} \
                     in epoch {resume_epoch} (seq {last}); resume after a number this room has \
                     sent"
                )))
            }
            _ => return Err(Status::internal("unexpected reply from the join script")),
        };
        let epoch: Arc<str> = Arc::from(epoch);
        let claim = Claim {
            epoch: epoch.clone(),
            token,
            posted: 0,
        };
        match self
            .admit(room_id, name, &epoch, (joined_seq, first_live), start)
            .await
        {
            Ok(member) => {
                lock(&self.claims).insert((room_id.to_owned(), name.to_owned()), claim);
                Ok(member)
            }
            Err(status) => {
                // Joined in Redis, not here: say it left at once.
                self.owe_leave(room_id, name, claim, LeaveReason::CallFailed);
                Err(status)
            }
        }
    }

    /// The local copy of the room in `epoch` (made and filled from the stream if needed), and
    /// the member in it.
    async fn admit(
        &self,
        room_id: &str,
        name: &str,
        epoch: &Arc<str>,
        seqs: (u64, u64),
        start: StartAt,
    ) -> Result<Member, Status> {
        // A copy can be removed between its making and the admission (its last local member
        // left): then another is made.
        for _ in 0..ADMIT_TRIES {
            let copy = self.copy_of(room_id, epoch).await?;
            match self.rooms.admit_shared(&copy, name, seqs, start.clone()) {
                Err(status) if status.code() == crate::grpc::Code::Aborted => continue,
                admitted => return admitted,
            }
        }
        Err(Status::unavailable(format!(
            "room {room_id} kept being emptied on this server during the join; join again"
        )))
    }
}

/// Counts a join under way in its room, so that the room keeps its subscription meanwhile.
struct Joining<'a> {
    engine: &'a Engine,
    room: String,
}

impl<'a> Joining<'a> {
    fn new(engine: &'a Engine, room: &str) -> Joining<'a> {
        *lock(&engine.joining).entry(room.to_owned()).or_insert(0) += 1;
        Joining {
            engine,
            room: room.to_owned(),
        }
    }
}

impl Drop for Joining<'_> {
    fn drop(&mut self) {
        let mut joining = lock(&self.engine.joining);
        if let Some(n) = joining.get_mut(&self.room) {
            *n -= 1;
            if *n == 0 {
                joining.remove(&self.room);
            }
        }
    }
}
