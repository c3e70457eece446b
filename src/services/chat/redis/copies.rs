//! The node's copies of the shared rooms, made and filled from each room's stream in Redis: a
//! copy whose history is gone there (another epoch) is retired.

use std::sync::Arc;

use bytes::Bytes;
use tracing::debug;

use super::commands::unavailable;
use super::Engine;
use crate::grpc::Status;
use crate::services::chat::room::Room;

impl Engine {
    /// The local copy of the room in `epoch`, made and filled from the stream if there is none.
    pub(super) async fn copy_of(
        &self,
        room_id: &str,
        epoch: &Arc<str>,
    ) -> Result<Arc<Room>, Status> {
        Ok(match self.rooms.shared_room(room_id) {
            Some(copy) if copy.epoch() == &**epoch => copy,
            _ => {
                let (read_epoch, first, frames) = self.read(room_id, 1).await?;
                if read_epoch.as_deref() != Some(&**epoch) {
                    return Err(Status::unavailable(format!(
                        "room {room_id}'s history changed in Redis during the join; join again"
                    )));
                }
                let copy = self.rooms.open_shared(room_id, epoch, first, frames)?;
                // Events published between the read and the copy's registration were dropped by
                // the subscription: one more read after it closes that window.
                self.backfill(&copy).await?;
                copy
            }
        })
    }

    /// The room's retained events from `from` on: its epoch (`None`: no history in Redis), the
    /// first event's number and the frames.
    async fn read(
        &self,
        room_id: &str,
        from: u64,
    ) -> Result<(Option<String>, u64, Vec<Bytes>), Status> {
        let from_text = from.to_string();
        let reply: Vec<Vec<u8>> = self
            .run(&self.scripts.read, room_id, &[from_text.as_bytes()])
            .await
            .map_err(|e| unavailable(&e))?;
        let mut items = reply.into_iter();
        let Some(epoch) = items.next() else {
            return Ok((None, from, Vec::new()));
        };
        let epoch = String::from_utf8_lossy(&epoch).into_owned();
        let mut first = None;
        let mut frames = Vec::new();
        while let (Some(seq), Some(frame)) = (items.next(), items.next()) {
            let seq = std::str::from_utf8(&seq)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0);
            first.get_or_insert(seq);
            frames.push(Bytes::from(frame));
        }
        Ok((Some(epoch), first.unwrap_or(from), frames))
    }

    /// Fills `copy` from its stream, from its next number on; retires it if its history is gone.
    pub(super) async fn backfill(&self, copy: &Arc<Room>) -> Result<(), Status> {
        let (epoch, first, frames) = self.read(copy.id(), copy.next_seq()).await?;
        if epoch.as_deref() != Some(copy.epoch()) {
            debug!(
                room = copy.id(),
                "redis: the room's history is gone; retiring the copy"
            );
            self.rooms.retire_shared(copy.id(), copy.epoch());
            return Ok(());
        }
        copy.fill(first, frames);
        Ok(())
    }
}
