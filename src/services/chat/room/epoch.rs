//! Epochs: each incarnation of a room gets a name no other has (here or after a restart); a resume
//! is checked against the room's present epoch, and a member from another one gets a reset event.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use bytes::Bytes;

use super::{Room, RoomState, StartAt};
use crate::grpc::codec::encode_message;
use crate::grpc::Status;
use crate::pb::chat::v1::{ChatMessage, EventKind};

/// A new epoch, `<process>-<count>`: 16 hex digits drawn at random once per process (so a restarted
/// server does not repeat its predecessor's), then a counter (so no two incarnations in one process
/// share one).
pub(super) fn new_epoch() -> Arc<str> {
    static PROCESS: OnceLock<u64> = OnceLock::new();
    static COUNT: AtomicU64 = AtomicU64::new(1);
    let process = *PROCESS.get_or_init(|| {
        // std's hasher keys are random per process; mixing in the time and pid guards against a
        // platform where they are not.
        let mut h = RandomState::new().build_hasher();
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        h.write_u128(now);
        h.write_u32(std::process::id());
        h.finish()
    });
    let count = COUNT.fetch_add(1, Ordering::Relaxed);
    Arc::from(format!("{process:016x}-{count}"))
}

impl Room {
    /// Whether a join may start where it asks: a resume in this epoch must not be past the head.
    pub(super) fn check_resume(&self, st: &RoomState, start: &StartAt) -> Result<(), Status> {
        let StartAt::Resume {
            epoch: Some(epoch),
            after,
        } = start
        else {
            return Ok(());
        };
        let last = st.ring.next_seq() - 1;
        if *epoch == *self.epoch && *after > last {
            return Err(Status::out_of_range(format!(
                "resume_after_seq {after} is past the last event of room {} in epoch {epoch} \
                 (seq {last}); resume after a number this room has sent",
                self.id
            )));
        }
        Ok(())
    }

    /// The reset event for a member whose resume point was in `old` (or unknown).
    pub(super) fn reset_frame(&self, old: Option<&str>) -> Bytes {
        let text = match old {
            Some(old) => format!(
                "this room's history started over: epoch {old} is gone; epoch {} follows from \
                 its start",
                self.epoch
            ),
            None => format!(
                "resume_after_seq came without resume_epoch, so it cannot be matched to this \
                 room's history; epoch {} follows from its start",
                self.epoch
            ),
        };
        encode_message(&ChatMessage {
            room_id: self.id.to_string(),
            text,
            sent_at: Some(prost_types::Timestamp::from(SystemTime::now())),
            kind: EventKind::Reset as i32,
            epoch: self.epoch.to_string(),
            ..Default::default()
        })
    }
}
