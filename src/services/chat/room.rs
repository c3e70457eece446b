//! Chat rooms: a bounded ring of already-encoded events per room, and members as cursors into it.
//!
//! One mechanism gives ordering, history, resume, lag detection and fan-out:
//! - Every event (message, join, leave) gets the room's next sequence number and is encoded into
//!   its gRPC frame once, under the room's lock; all members share that `Bytes`.
//! - The ring keeps the most recent events, bounded by count and by bytes.
//! - A member is a cursor: the next sequence number it has to receive. Reading hands it everything
//!   between its cursor and the head in one batch. History on join, resume after S and lag are the
//!   same arithmetic: a cursor behind the ring's tail means the member missed events, and it gets
//!   one gap event naming exactly which before it continues from the tail.
//! - A member costs a cursor, not a queue: a slow member cannot grow memory or hold anyone back.
//!
//! Rooms are created on first join and removed when their last member leaves. Their sequence
//! numbers do not restart: the registry remembers where a removed room stopped, so a client resuming
//! after S never sees numbers it has already seen.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use tokio::sync::watch;

use crate::grpc::codec::encode_message;
use crate::grpc::Status;
use crate::pb::chat::v1::{ChatMessage, EventKind, LeaveReason};
use crate::services::chat::stats;

/// Default number of events a room keeps.
pub const DEFAULT_HISTORY_EVENTS: usize = 1000;
/// Default bytes of encoded events a room keeps: 1 MiB.
pub const DEFAULT_HISTORY_BYTES: usize = 1 << 20;
/// Default number of past events a new member receives before live traffic.
pub const DEFAULT_HISTORY_ON_JOIN: usize = 50;
/// Default cap on rooms.
pub const DEFAULT_MAX_ROOMS: usize = 10_000;
/// Default cap on members of one room.
pub const DEFAULT_MAX_MEMBERS_PER_ROOM: usize = 10_000;
/// Most bytes handed to one member's call in one batch; bounds a slow member's memory.
pub const MAX_BATCH_BYTES: usize = 64 << 10;

/// Limits of the room registry.
#[derive(Clone, Debug)]
pub struct RoomLimits {
    /// Events kept per room.
    pub history_events: usize,
    /// Encoded bytes kept per room.
    pub history_bytes: usize,
    /// Past events a new member receives.
    pub history_on_join: usize,
    /// Rooms that may exist at once.
    pub max_rooms: usize,
    /// Members per room.
    pub max_members_per_room: usize,
}

impl Default for RoomLimits {
    fn default() -> Self {
        RoomLimits {
            history_events: DEFAULT_HISTORY_EVENTS,
            history_bytes: DEFAULT_HISTORY_BYTES,
            history_on_join: DEFAULT_HISTORY_ON_JOIN,
            max_rooms: DEFAULT_MAX_ROOMS,
            max_members_per_room: DEFAULT_MAX_MEMBERS_PER_ROOM,
        }
    }
}

/// Every room of the server.
pub struct Rooms {
    limits: RoomLimits,
    inner: Mutex<Registry>,
}

#[derive(Default)]
struct Registry {
    rooms: HashMap<Arc<str>, Arc<Room>>,
    /// Where removed rooms stopped numbering, oldest first; at most `max_rooms` entries.
    retired: HashMap<Arc<str>, u64>,
    retired_order: VecDeque<Arc<str>>,
}

/// One room.
pub struct Room {
    id: Arc<str>,
    state: Mutex<RoomState>,
    /// The next sequence number; members wait on it for new events.
    head: watch::Sender<u64>,
}

struct RoomState {
    /// Encoded frames; `ring[i]` has sequence number `first_seq + i`.
    ring: VecDeque<Bytes>,
    first_seq: u64,
    next_seq: u64,
    bytes: usize,
    /// Member name → join order.
    members: HashMap<Arc<str>, u64>,
    joins: u64,
}

/// Where a new member starts reading.
#[derive(Clone, Copy, Debug)]
pub enum StartAt {
    /// The most recent `history_on_join` events, then live traffic.
    RecentHistory,
    /// Every retained event after this sequence number (a gap event first if some are gone).
    After(u64),
}

/// A joined member. Dropping it leaves the room, with the reason given to
/// [`set_leave_reason`](Member::set_leave_reason) (`LEAVE_REASON_DISCONNECTED` if none was).
pub struct Member {
    rooms: Arc<Rooms>,
    room: Arc<Room>,
    name: Arc<str>,
    /// The next sequence number this member has to receive.
    cursor: u64,
    /// The sequence number of this member's join event.
    joined_seq: u64,
    head: watch::Receiver<u64>,
    reason: LeaveReason,
}

impl Rooms {
    /// An empty registry.
    pub fn new(limits: RoomLimits) -> Arc<Rooms> {
        Arc::new(Rooms {
            limits,
            inner: Mutex::new(Registry::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Joins `name` to `room_id`, creating the room if needed, and posts the join event.
    ///
    /// Errors: ALREADY_EXISTS when the name is in the room; RESOURCE_EXHAUSTED when the room is
    /// full or there are too many rooms.
    pub fn join(
        self: &Arc<Self>,
        room_id: &str,
        name: &str,
        start: StartAt,
    ) -> Result<Member, Status> {
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
                let next_seq = reg.retired.remove(&id).unwrap_or(1);
                reg.retired_order.retain(|r| *r != id);
                let room = Arc::new(Room::new(id.clone(), next_seq));
                reg.rooms.insert(id, room.clone());
                stats::rooms(reg.rooms.len());
                room
            }
        };
        let name: Arc<str> = Arc::from(name);
        let mut st = room.lock();
        if st.members.contains_key(&name) {
            drop(st);
            self.remove_if_empty(&mut reg, &room);
            return Err(Status::already_exists(format!(
                "{name} is already in room {room_id}"
            )));
        }
        if st.members.len() >= self.limits.max_members_per_room {
            return Err(Status::resource_exhausted(format!(
                "room {room_id} is full (max-members-per-room {})",
                self.limits.max_members_per_room
            )));
        }
        st.joins += 1;
        let order = st.joins;
        st.members.insert(name.clone(), order);
        let join_seq = room.append(
            &mut st,
            &self.limits,
            &name,
            EventKind::Joined,
            "",
            LeaveReason::Unspecified,
        );
        let cursor = match start {
            StartAt::RecentHistory => join_seq
                .saturating_sub(self.limits.history_on_join as u64)
                .max(st.first_seq),
            StartAt::After(seq) => seq.saturating_add(1).min(st.next_seq),
        };
        drop(st);
        drop(reg);
        room.publish();
        let head = room.head.subscribe();
        Ok(Member {
            rooms: self.clone(),
            room,
            name,
            cursor,
            joined_seq: join_seq,
            head,
            reason: LeaveReason::Disconnected,
        })
    }

    /// The members of a room in join order (empty for an unknown room).
    pub fn members(&self, room_id: &str) -> Vec<String> {
        let room = self.lock().rooms.get(room_id).cloned();
        let Some(room) = room else { return Vec::new() };
        let st = room.lock();
        let mut v: Vec<(u64, &Arc<str>)> = st.members.iter().map(|(n, o)| (*o, n)).collect();
        v.sort_unstable();
        v.into_iter().map(|(_, n)| n.to_string()).collect()
    }

    /// Number of rooms.
    pub fn len(&self) -> usize {
        self.lock().rooms.len()
    }

    /// Whether there is no room.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn leave(&self, member: &Member) {
        let mut reg = self.lock();
        let mut st = member.room.lock();
        if st.members.remove(&member.name).is_some() {
            member.room.append(
                &mut st,
                &self.limits,
                &member.name,
                EventKind::Left,
                "",
                member.reason,
            );
        }
        drop(st);
        self.remove_if_empty(&mut reg, &member.room);
        drop(reg);
        member.room.publish();
    }

    fn remove_if_empty(&self, reg: &mut Registry, room: &Arc<Room>) {
        let st = room.lock();
        if !st.members.is_empty() {
            return;
        }
        let next_seq = st.next_seq;
        drop(st);
        if reg.rooms.remove(&room.id).is_some() {
            stats::rooms(reg.rooms.len());
            reg.retired.insert(room.id.clone(), next_seq);
            reg.retired_order.push_back(room.id.clone());
            while reg.retired_order.len() > self.limits.max_rooms {
                if let Some(old) = reg.retired_order.pop_front() {
                    reg.retired.remove(&old);
                }
            }
        }
    }
}

impl Room {
    fn new(id: Arc<str>, next_seq: u64) -> Room {
        let (head, _) = watch::channel(next_seq);
        Room {
            id,
            state: Mutex::new(RoomState {
                ring: VecDeque::new(),
                first_seq: next_seq,
                next_seq,
                bytes: 0,
                members: HashMap::new(),
                joins: 0,
            }),
            head,
        }
    }

    fn lock(&self) -> MutexGuard<'_, RoomState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Numbers, encodes and stores one event; returns its sequence number. The caller publishes.
    fn append(
        &self,
        st: &mut RoomState,
        limits: &RoomLimits,
        sender: &str,
        kind: EventKind,
        text: &str,
        reason: LeaveReason,
    ) -> u64 {
        let seq = st.next_seq;
        let event = ChatMessage {
            room_id: self.id.to_string(),
            sender_id: sender.to_owned(),
            text: text.to_owned(),
            sent_at: Some(prost_types::Timestamp::from(SystemTime::now())),
            seq,
            kind: kind as i32,
            leave_reason: reason as i32,
            ..Default::default()
        };
        let frame = encode_message(&event);
        st.bytes += frame.len();
        st.ring.push_back(frame);
        st.next_seq += 1;
        // Keep at least the newest event whatever the byte bound says.
        while st.ring.len() > 1
            && (st.ring.len() > limits.history_events || st.bytes > limits.history_bytes)
        {
            if let Some(old) = st.ring.pop_front() {
                st.bytes -= old.len();
                st.first_seq += 1;
            }
        }
        seq
    }

    fn publish(&self) {
        let next = self.lock().next_seq;
        self.head.send_replace(next);
    }
}

impl Member {
    /// The room's name.
    pub fn room_id(&self) -> &str {
        &self.room.id
    }

    /// The member's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The next sequence number this member will receive.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// The sequence number of this member's join event: every later event of the room has a higher
    /// one, and this member's own posts are exactly its messages numbered above it.
    pub fn joined_seq(&self) -> u64 {
        self.joined_seq
    }

    /// Posts a text message from this member; returns its sequence number.
    pub fn post(&self, text: &str) -> u64 {
        let mut st = self.room.lock();
        let seq = self.room.append(
            &mut st,
            &self.rooms.limits,
            &self.name,
            EventKind::Message,
            text,
            LeaveReason::Unspecified,
        );
        let next = st.next_seq;
        drop(st);
        self.room.head.send_replace(next);
        seq
    }

    /// Everything between the cursor and the head, as whole gRPC frames in one buffer (at most
    /// about [`MAX_BATCH_BYTES`]), preceded by a gap event if the cursor fell behind the ring.
    /// Advances the cursor. `None` when the member is up to date.
    pub fn next_batch(&mut self) -> Option<Bytes> {
        let st = self.room.lock();
        let gap = (self.cursor < st.first_seq).then(|| (self.cursor, st.first_seq - 1));
        self.cursor = self.cursor.max(st.first_seq);
        let start = usize::try_from(self.cursor - st.first_seq).unwrap_or(usize::MAX);
        // How many events fit in one batch (at least one, however large).
        let mut size = 0;
        let mut count = 0;
        for frame in st.ring.range(start.min(st.ring.len())..) {
            if count > 0 && size + frame.len() > MAX_BATCH_BYTES {
                break;
            }
            size += frame.len();
            count += 1;
        }
        let events = st.ring.range(start.min(st.ring.len())..).take(count);
        self.cursor += count as u64;
        if count > 0 {
            stats::delivered(count as u64);
        }
        let Some((from, to)) = gap else {
            // One event goes out as the shared frame itself. Several are copied into one buffer
            // right here: a copy of a small frame costs less than taking and dropping a share of
            // it, and the batch leaves as one DATA frame.
            return match count {
                0 => None,
                1 => {
                    let mut events = events;
                    events.next().cloned()
                }
                _ => {
                    let mut buf = BytesMut::with_capacity(size);
                    events.for_each(|f| buf.extend_from_slice(f));
                    Some(buf.freeze())
                }
            };
        };
        let mut buf = BytesMut::with_capacity(size);
        events.for_each(|f| buf.extend_from_slice(f));
        drop(st);
        stats::gap(to - from + 1);
        let gap_frame = encode_message(&ChatMessage {
            room_id: self.room.id.to_string(),
            text: format!("missed {} events ({from}..={to})", to - from + 1),
            sent_at: Some(prost_types::Timestamp::from(SystemTime::now())),
            kind: EventKind::Gap as i32,
            gap_from: from,
            gap_to: to,
            ..Default::default()
        });
        let mut out = BytesMut::with_capacity(gap_frame.len() + buf.len());
        out.extend_from_slice(&gap_frame);
        out.extend_from_slice(&buf);
        Some(out.freeze())
    }

    /// Resolves when events newer than the cursor may exist.
    pub async fn changed(&mut self) {
        if *self.head.borrow_and_update() > self.cursor {
            return;
        }
        // The sender lives as long as the room, which this member keeps alive.
        let _ = self.head.changed().await;
    }

    /// Sets the reason the member will leave with when dropped.
    pub fn set_leave_reason(&mut self, reason: LeaveReason) {
        self.reason = reason;
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.rooms.leave(self);
    }
}
