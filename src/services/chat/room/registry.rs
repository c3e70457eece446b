//! The registry: every room of the server by name (`Rooms`), a member's join (checked, placed,
//! given its start point) and leave, and a room removed with its last member.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use super::{Member, Room, RoomLimits, RoomState, Roster, SharedRooms, StartAt};
use crate::grpc::Status;
use crate::pb::chat::v1::{EventKind, LeaveReason};
use crate::services::chat::flow::BlockedSince;
use crate::services::chat::{identity, stats};

/// Every room of the server.
pub struct Rooms {
    pub(super) limits: RoomLimits,
    pub(super) inner: Mutex<Registry>,
    /// Set when rooms are numbered elsewhere (see [`SharedRooms`]).
    pub(super) shared: OnceLock<Arc<dyn SharedRooms>>,
}

#[derive(Default)]
pub(super) struct Registry {
    pub(super) rooms: HashMap<Arc<str>, Arc<Room>>,
}

impl Rooms {
    /// An empty registry.
    pub fn new(limits: RoomLimits) -> Arc<Rooms> {
        Arc::new(Rooms {
            limits,
            inner: Mutex::new(Registry::default()),
            shared: OnceLock::new(),
        })
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Registry> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Joins `name` to `room_id`, creating the room if needed, and posts the join event. Both are
    /// taken as given: the service has checked and normalized them ([`identity::normalize`]).
    ///
    /// Errors: ALREADY_EXISTS when the name, or one a reader could not tell from it (the same
    /// [`identity::skeleton`]), is in the room; RESOURCE_EXHAUSTED when the room is
    /// full or there are too many rooms; OUT_OF_RANGE when resuming in the room's present epoch
    /// after a number it has not reached; UNAVAILABLE when the room has closed for shutdown.
    pub fn join(
        self: &Arc<Self>,
        room_id: &str,
        name: &str,
        start: StartAt,
    ) -> Result<Member, Status> {
        let skeleton = identity::skeleton(name);
        let mut reg = self.lock();
        let room = match reg.rooms.get(room_id) {
            Some(room) => room.clone(),
            None => {
                if reg.rooms.len() >= self.limits.max_rooms {
                    return Err(Status::resource_exhausted(format!(
                        "too many rooms (max-rooms {})",
                        self.limits.max_rooms
                    )));
                }
                let id: Arc<str> = Arc::from(room_id);
                let room = Arc::new(Room::new(id.clone(), &self.limits));
                reg.rooms.insert(id, room.clone());
                stats::rooms(reg.rooms.len());
                room
            }
        };
        let name: Arc<str> = Arc::from(name);
        let mut st = room.lock();
        let refused = if st.members.contains_key(&name) {
            Some(Status::already_exists(format!(
                "{name} is already in room {room_id}"
            )))
        } else if let Some(like) = st.skeletons.get(&skeleton) {
            Some(Status::already_exists(format!(
                "{name:?} looks like {like:?}, who is already in room {room_id}"
            )))
        } else if st.members.len() >= self.limits.max_members_per_room {
            Some(Status::resource_exhausted(format!(
                "room {room_id} is full (max-members-per-room {})",
                self.limits.max_members_per_room
            )))
        } else if let Some(at) = st.closed_at {
            Some(Status::unavailable(format!(
                "server shutting down: room {room_id} closed at seq {at}"
            )))
        } else {
            room.check_resume(&st, &start).err()
        };
        if let Some(status) = refused {
            drop(st);
            self.remove_if_empty(&mut reg, &room);
            return Err(status);
        }
        st.joins += 1;
        let order = st.joins;
        st.members.insert(name.clone(), order);
        Arc::make_mut(&mut st.roster).push(name.clone());
        st.skeletons.insert(skeleton, name.clone());
        // In a large room the join waits in the room's presence batch: the member's place is
        // after the last event numbered so far, and the batch that lists it comes later.
        let before = st.ring.next_seq() - 1;
        let published =
            room.presence_change(&mut st, &name, EventKind::Joined, LeaveReason::Unspecified);
        // The first event the member gets live: its own join's, or the first after its place.
        let (join_seq, first_live) = match published {
            Some(seq) => (seq, seq),
            None => (before, before + 1),
        };
        let (cursor, reset) = self.start_point(&room, &st, first_live, start);
        let blocked_since = Arc::new(BlockedSince::default());
        let span = (st.ring.first_seq(), st.ring.next_seq());
        let reader = st.flow.join(cursor, blocked_since.clone(), span);
        drop(st);
        drop(reg);
        if published.is_some() {
            room.publish();
        }
        let head = room.head.subscribe();
        Ok(Member {
            rooms: self.clone(),
            room,
            name,
            cursor,
            joined_seq: join_seq,
            head,
            reason: LeaveReason::Disconnected,
            reset,
            reader,
            blocked_since,
            behind: false,
        })
    }

    /// Where a member whose first live event is `first_live` starts reading, and the reset it
    /// gets first if any.
    pub(super) fn start_point(
        &self,
        room: &Room,
        st: &RoomState,
        first_live: u64,
        start: StartAt,
    ) -> (u64, Option<Option<Box<str>>>) {
        match start {
            StartAt::RecentHistory => (
                first_live
                    .saturating_sub(self.limits.history_on_join as u64)
                    .max(st.ring.first_seq()),
                None,
            ),
            StartAt::Resume {
                epoch: Some(epoch),
                after,
            } if *epoch == *room.epoch => (after.saturating_add(1), None),
            // From the epoch's first number: if its oldest events are gone, the ring says so
            // with a gap.
            StartAt::Resume { epoch, .. } => (1, Some(epoch.map(String::into_boxed_str))),
        }
    }

    /// The members of a room in join order (empty for an unknown room): the room's own list,
    /// shared, not a copy. Taking it holds the room's lock for one `Arc` clone, however many
    /// members there are; the caller reads it outside the lock.
    pub fn members(&self, room_id: &str) -> Roster {
        let room = self.lock().rooms.get(room_id).cloned();
        let Some(room) = room else {
            return Roster::default();
        };
        let roster = room.lock().roster.clone();
        roster
    }

    /// Number of rooms.
    pub fn len(&self) -> usize {
        self.lock().rooms.len()
    }

    /// Whether there is no room.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(super) fn leave(&self, member: &Member) {
        let mut reg = self.lock();
        let mut st = member.room.lock();
        let mut published = None;
        if st.members.remove(&member.name).is_some() {
            let roster = Arc::make_mut(&mut st.roster);
            if let Some(i) = roster.iter().position(|n| Arc::ptr_eq(n, &member.name)) {
                roster.remove(i);
            }
            st.skeletons.retain(|_, n| *n != member.name);
            st.cut.remove(&member.name);
            st.flow.leave(member.reader, &member.room.gate);
            // A shared room's leave is Redis's to announce (below).
            if self.shared.get().is_none() {
                published = member.room.presence_change(
                    &mut st,
                    &member.name,
                    EventKind::Left,
                    member.reason,
                );
            }
        }
        drop(st);
        self.remove_if_empty(&mut reg, &member.room);
        drop(reg);
        if published.is_some() {
            member.room.publish();
        }
        if let Some(shared) = self.shared.get() {
            shared.left(
                &member.room.id,
                &member.room.epoch,
                &member.name,
                member.reason,
            );
        }
    }

    pub(super) fn remove_if_empty(&self, reg: &mut Registry, room: &Arc<Room>) {
        if !room.lock().members.is_empty() {
            return;
        }
        // Only this incarnation: a room of the same name created meanwhile is another one.
        if reg
            .rooms
            .get(&room.id)
            .is_some_and(|r| Arc::ptr_eq(r, room))
        {
            reg.rooms.remove(&room.id);
            stats::rooms(reg.rooms.len());
        }
    }
}
