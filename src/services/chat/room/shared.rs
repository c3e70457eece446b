//! Rooms numbered elsewhere: with `--redis` ([`crate::services::chat::redis`]) every event is
//! numbered, stored and published by Redis, and this registry is the node's copy of the rooms that
//! have local members. The ring is filled in sequence order by the node's subscription (never by a
//! local post), members read it as they do a local room's, and joins and leaves are Redis's to
//! announce: the registry only tells the engine that a local member left.

use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::*;
use crate::grpc::Status;
use crate::pb::chat::v1::LeaveReason;
use crate::ring::SeqRing;
use crate::services::chat::flow::BlockedSince;
use crate::services::chat::presence::Entry;
use crate::services::chat::{identity, stats};

/// The engine of rooms shared by several nodes, as the registry sees it.
pub trait SharedRooms: Send + Sync {
    /// A local member left (its call ended): announce it to the room. Must not block.
    fn left(&self, room_id: &str, epoch: &str, name: &str, reason: LeaveReason);
}

/// What [`Room::deliver`] did with an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivered {
    /// Appended: it was the next number.
    Appended,
    /// Already held (or older than the copy's start): nothing to do.
    Held,
    /// Not appended: the copy needs the events from this number first.
    Missing(u64),
}

/// A new epoch for a shared room's history (unique as a local room's are).
pub fn fresh_epoch() -> String {
    new_epoch().to_string()
}

impl Poster {
    /// The epoch of the member's room copy.
    pub fn epoch(&self) -> &str {
        &self.room.epoch
    }

    /// The sequence number the room closed at for shutdown, if it has.
    pub fn closed_at(&self) -> Option<u64> {
        self.room.lock().closed_at
    }
}

impl Rooms {
    /// Makes this registry the local copy of rooms numbered by `shared`; no room exists yet.
    pub fn set_shared(&self, shared: Arc<dyn SharedRooms>) {
        let _ = self.shared.set(shared);
    }

    /// The local copy of a shared room, if it has members here.
    pub fn shared_room(&self, room_id: &str) -> Option<Arc<Room>> {
        self.lock().rooms.get(room_id).cloned()
    }

    /// Every local copy of a room.
    pub fn all_rooms(&self) -> Vec<Arc<Room>> {
        self.lock().rooms.values().cloned().collect()
    }

    /// The local copy of the shared room `room_id` in `epoch`, holding `frames` (numbered from
    /// `first_seq`, as the room's stream retains them). A copy of another epoch is retired first:
    /// its members' calls end with `UNAVAILABLE`, so they resume in the new one. RESOURCE_EXHAUSTED
    /// when a new copy would pass max-rooms.
    pub fn open_shared(
        &self,
        room_id: &str,
        epoch: &str,
        first_seq: u64,
        frames: Vec<Bytes>,
    ) -> Result<Arc<Room>, Status> {
        let mut reg = self.lock();
        if let Some(room) = reg.rooms.get(room_id).cloned() {
            if *room.epoch == *epoch {
                drop(reg);
                room.fill(first_seq, frames);
                return Ok(room);
            }
            room.end(Status::unavailable(format!(
                "room {room_id}'s history was lost in Redis; epoch {epoch} follows (resume to \
                 get a reset)"
            )));
            reg.rooms.remove(room_id);
        }
        if reg.rooms.len() >= self.limits.max_rooms {
            return Err(Status::resource_exhausted(format!(
                "too many rooms (max-rooms {})",
                self.limits.max_rooms
            )));
        }
        let id: Arc<str> = Arc::from(room_id);
        let mut room = Room::new(id.clone(), &self.limits);
        room.epoch = Arc::from(epoch);
        let bounds = room.lock().ring.bounds();
        room.lock().ring = SeqRing::new(first_seq, bounds);
        let room = Arc::new(room);
        room.fill(first_seq, frames);
        reg.rooms.insert(id, room.clone());
        stats::rooms(reg.rooms.len());
        Ok(room)
    }

    /// Retires the local copy of `room_id` if it is in `epoch` (its history is gone in Redis):
    /// its members' calls end with UNAVAILABLE, and the next join makes a new copy.
    pub fn retire_shared(&self, room_id: &str, epoch: &str) {
        let mut reg = self.lock();
        let Some(room) = reg.rooms.get(room_id).cloned() else {
            return;
        };
        if *room.epoch != *epoch {
            return;
        }
        room.end(Status::unavailable(format!(
            "room {room_id}'s history was lost in Redis; join again (resume to get a reset)"
        )));
        reg.rooms.remove(room_id);
        stats::rooms(reg.rooms.len());
    }

    /// Admits `name` to the local copy `room`, whose join Redis numbered `joined_seq` with
    /// `first_live` the first event the member gets live (the same, or the next after its place
    /// when the join waits in the room's presence batch), starting where `start` says. Errors as [`Rooms::join`]'s local checks (the
    /// name's uniqueness across nodes and the resume's range were checked in Redis); ABORTED
    /// when `room` is no longer the registry's copy (its last local member left meanwhile): make
    /// a new copy and admit again.
    pub fn admit_shared(
        self: &Arc<Self>,
        room: &Arc<Room>,
        name: &str,
        (joined_seq, first_live): (u64, u64),
        start: StartAt,
    ) -> Result<Member, Status> {
        let skeleton = identity::skeleton(name);
        let name: Arc<str> = Arc::from(name);
        // Held while admitting, as a local join does: the copy cannot be removed meanwhile.
        let reg = self.lock();
        if !reg
            .rooms
            .get(&room.id)
            .is_some_and(|r| Arc::ptr_eq(r, room))
        {
            return Err(Status::aborted(format!(
                "the local copy of room {} was removed during the join",
                room.id
            )));
        }
        let mut st = room.lock();
        if let Some(status) = st.ended.clone() {
            return Err(status);
        }
        if st.members.contains_key(&name) || st.skeletons.contains_key(&skeleton) {
            return Err(Status::already_exists(format!(
                "{name} is already in room {}",
                room.id
            )));
        }
        if st.members.len() >= self.limits.max_members_per_room {
            return Err(Status::resource_exhausted(format!(
                "room {} is full on this server (max-members-per-room {})",
                room.id, self.limits.max_members_per_room
            )));
        }
        if let Some(at) = st.closed_at {
            return Err(Status::unavailable(format!(
                "server shutting down: room {} closed at seq {at}",
                room.id
            )));
        }
        st.joins += 1;
        let order = st.joins;
        st.members.insert(name.clone(), order);
        Arc::make_mut(&mut st.roster).push(name.clone());
        st.skeletons.insert(skeleton, name.clone());
        let (cursor, reset) = self.start_point(room, &st, first_live, start);
        let blocked_since = Arc::new(BlockedSince::default());
        let span = (st.ring.first_seq(), st.ring.next_seq());
        let reader = st.flow.join(cursor, blocked_since.clone(), span);
        drop(st);
        drop(reg);
        Ok(Member {
            rooms: self.clone(),
            room: room.clone(),
            name,
            cursor,
            joined_seq,
            head: room.head.subscribe(),
            reason: LeaveReason::Disconnected,
            reset,
            reader,
            blocked_since,
            behind: false,
        })
    }
}

impl Room {
    /// The room's name.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// This copy's epoch.
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// The number the copy's next event must have.
    pub fn next_seq(&self) -> u64 {
        self.lock().ring.next_seq()
    }

    /// The names of the local members.
    pub fn local_members(&self) -> Vec<Arc<str>> {
        self.lock().roster.iter().cloned().collect()
    }

    /// Appends event `seq` (a whole encoded frame) if it is the next one, and wakes the members.
    pub fn deliver(&self, seq: u64, frame: Bytes) -> Delivered {
        let mut st = self.lock();
        let next = st.ring.next_seq();
        if seq < next {
            return Delivered::Held;
        }
        if seq > next {
            return Delivered::Missing(next);
        }
        self.push(
            &mut st,
            Entry {
                frame,
                presence: None,
            },
        );
        drop(st);
        self.head.send_replace(seq + 1);
        Delivered::Appended
    }

    /// Appends what of `frames` (numbered from `first`) the copy lacks; when the events the copy
    /// needs next are gone from the stream, it continues from `first` (its members get a gap).
    pub fn fill(&self, first: u64, frames: Vec<Bytes>) {
        let mut st = self.lock();
        let end = first + frames.len() as u64;
        if st.ring.next_seq() < first && end > first {
            st.ring.skip_to(first);
        }
        for (seq, frame) in (first..).zip(frames) {
            if seq == st.ring.next_seq() {
                self.push(
                    &mut st,
                    Entry {
                        frame,
                        presence: None,
                    },
                );
            }
        }
        let next = st.ring.next_seq();
        drop(st);
        self.head.send_replace(next);
    }

    /// Continues from `seq` without the events before it (they are gone from the stream): members
    /// behind it get a gap.
    pub fn skip_to(&self, seq: u64) {
        let mut st = self.lock();
        st.ring.skip_to(seq);
        drop(st);
        self.head.send_replace(seq);
    }

    /// Ends every member's call with `status`.
    pub fn end(&self, status: Status) {
        self.lock().ended = Some(status);
        self.ended.store(true, Ordering::Release);
        self.head.send_modify(|_| {});
    }

    /// Ends the call of the local member `name` with `status`.
    pub fn cut_member(&self, name: &str, status: Status) {
        let mut st = self.lock();
        let Some((name, _)) = st.members.get_key_value(name) else {
            return;
        };
        let name = name.clone();
        st.cut.insert(name, status);
        drop(st);
        self.ended.store(true, Ordering::Release);
        self.head.send_modify(|_| {});
    }
}
