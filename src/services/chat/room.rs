//! Chat rooms: a bounded ring of already-encoded events per room, and members as cursors into it.
//!
//! One mechanism gives ordering, history, resume, lag detection and fan-out:
//! - Every event (message, join, leave) gets the room's next sequence number and is encoded into
//!   its gRPC frame once, under the room's lock; all members share that `Bytes`. In a room above
//!   its presence threshold joins and leaves are gathered into batches instead, each one event
//!   ([`presence`]), and a member gets a run of presence events as one.
//! - The ring keeps the most recent events, bounded by count and by bytes.
//! - A member is a cursor: the next sequence number it has to receive. Reading hands it everything
//!   between its cursor and the head in one batch. History on join, resume after S and lag are the
//!   same arithmetic: a cursor behind the ring's tail means the member missed events, and it gets
//!   one gap event naming exactly which before it continues from the tail.
//! - A member costs a cursor, not a queue: a slow member cannot grow memory or hold anyone back.
//!
//! Rooms are created on first join and removed when their last member leaves. Each incarnation of
//! a room has an *epoch*, a name no other incarnation gets (here or after a restart), and numbers its
//! events from 1 within it. A resume names the epoch its sequence number belongs to:
//! - the room's present epoch: every retained event after S (a gap first for what is gone); a
//!   number past the room's last event is OUT_OF_RANGE;
//! - another epoch, or none: one reset event naming the present epoch, then the present history
//!   from its start. The registry need not remember removed rooms.
//!
//! On shutdown each room closes at a definite sequence number ([`Member::close_room`]): later posts
//! are refused, and every member is offered every event up to it before it leaves.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::grpc::codec::encode_message;
use crate::grpc::Status;
use crate::pb::chat::v1::{ChatMessage, EventKind, LeaveReason};
use crate::ring::{RingBounds, SeqRing};
use crate::services::chat::flow::{BlockedSince, Flow, FlowLimits, Gate, ReaderId};
use crate::services::chat::presence::{self, Due, Entry, Pending, Presence, PresenceLimits};
use crate::services::chat::{identity, stats};

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
    /// Backpressure: when posters wait for reading members ([`flow`](crate::services::chat::flow)).
    pub flow: FlowLimits,
    /// When joins and leaves are batched ([`presence`]).
    pub presence: PresenceLimits,
}

impl Default for RoomLimits {
    fn default() -> Self {
        RoomLimits {
            history_events: DEFAULT_HISTORY_EVENTS,
            history_bytes: DEFAULT_HISTORY_BYTES,
            history_on_join: DEFAULT_HISTORY_ON_JOIN,
            max_rooms: DEFAULT_MAX_ROOMS,
            max_members_per_room: DEFAULT_MAX_MEMBERS_PER_ROOM,
            flow: FlowLimits::default(),
            presence: PresenceLimits::default(),
        }
    }
}

/// Every room of the server.
pub struct Rooms {
    limits: RoomLimits,
    inner: Mutex<Registry>,
    /// Set when rooms are numbered elsewhere (see [`SharedRooms`]).
    shared: OnceLock<Arc<dyn SharedRooms>>,
}

#[derive(Default)]
struct Registry {
    rooms: HashMap<Arc<str>, Arc<Room>>,
}

/// One room.
pub struct Room {
    id: Arc<str>,
    /// This incarnation's epoch: no other incarnation of any room has it.
    epoch: Arc<str>,
    state: Mutex<RoomState>,
    /// The next sequence number; members wait on it for new events.
    head: watch::Sender<u64>,
    /// Posters wait here while reading members catch up ([`flow`](crate::services::chat::flow)).
    gate: Gate,
    presence_limits: PresenceLimits,
    /// Set (with `RoomState::ended`) when this copy of a shared room is retired.
    ended: AtomicBool,
}

struct RoomState {
    /// Encoded frames, numbered by the room's sequence numbers.
    ring: SeqRing<Entry>,
    /// Joins and leaves of a large room not yet numbered ([`presence`]).
    presence: Pending,
    /// Member name → join order.
    members: HashMap<Arc<str>, u64>,
    /// The members in join order, shared with `Members` calls: one takes a clone of the `Arc`
    /// under the lock and reads it outside, so it never sorts or copies under the lock (a join
    /// or leave copies it only while such a reader still holds the old one).
    roster: Roster,
    /// Skeleton of each member's name (see [`identity::skeleton`]) → the name.
    skeletons: HashMap<String, Arc<str>>,
    joins: u64,
    /// Set on shutdown: the last sequence number posts may have. Later posts are refused.
    closed_at: Option<u64>,
    /// Why the members' calls end, once this copy of a shared room is retired.
    ended: Option<Status>,
    /// Members whose calls must end (their place in the shared room was lost), and why.
    cut: HashMap<Arc<str>, Status>,
    /// Where the members' cursors are, for backpressure.
    flow: Flow,
}

/// A room's members in join order, as [`Rooms::members`] shares them: a join or a leave makes a
/// new list (copying only while some reader still holds the old one), so a snapshot never changes.
pub type Roster = Arc<Vec<Arc<str>>>;

/// Where a new member starts reading.
#[derive(Clone, Debug)]
pub enum StartAt {
    /// The most recent `history_on_join` events, then live traffic.
    RecentHistory,
    /// Every retained event after `after`, if `epoch` is the room's present epoch (a gap event
    /// first if some are gone; OUT_OF_RANGE if `after` is past the room's last event). Otherwise,
    /// `None` included, a reset event and the present history from its start.
    Resume {
        /// The epoch `after` belongs to, if the client said.
        epoch: Option<String>,
        /// The last sequence number the client has.
        after: u64,
    },
}

/// What a post did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Posted {
    /// Posted with this sequence number.
    At(u64),
    /// Refused: the room closed (the server is shutting down) at this sequence number.
    Closed(u64),
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
    /// A reset event to hand out before anything else: the epoch the member resumed in (`None`:
    /// it named none). Encoded when it is handed out, not kept encoded: a member that reads
    /// nothing (a zero window) holds no frame of its own.
    reset: Option<Option<Box<str>>>,
    /// This member among the room's readers ([`flow`](crate::services::chat::flow)).
    reader: ReaderId,
    /// Since when this member has been blocked (shared with the room).
    blocked_since: Arc<BlockedSince>,
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

    fn lock(&self) -> MutexGuard<'_, Registry> {
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
        })
    }

    /// Where a member whose first live event is `first_live` starts reading, and the reset it
    /// gets first if any.
    fn start_point(
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

    fn leave(&self, member: &Member) {
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

    fn remove_if_empty(&self, reg: &mut Registry, room: &Arc<Room>) {
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

impl Room {
    fn new(id: Arc<str>, limits: &RoomLimits) -> Room {
        let (head, _) = watch::channel(1);
        let bounds = RingBounds {
            max_entries: limits.history_events,
            max_bytes: limits.history_bytes,
        };
        Room {
            id,
            epoch: new_epoch(),
            state: Mutex::new(RoomState {
                ring: SeqRing::new(1, bounds),
                presence: Pending::default(),
                members: HashMap::new(),
                roster: Roster::default(),
                skeletons: HashMap::new(),
                joins: 0,
                closed_at: None,
                ended: None,
                cut: HashMap::new(),
                flow: Flow::new(limits.flow, bounds),
            }),
            head,
            gate: Gate::default(),
            presence_limits: limits.presence,
            ended: AtomicBool::new(false),
        }
    }

    /// Whether a join may start where it asks: a resume in this epoch must not be past the head.
    fn check_resume(&self, st: &RoomState, start: &StartAt) -> Result<(), Status> {
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
    fn reset_frame(&self, old: Option<&str>) -> Bytes {
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

    fn lock(&self) -> MutexGuard<'_, RoomState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the join or leave of `name` (already added to or taken from the roster): an event
    /// of its own in a small room, a change in the room's batch in a large one ([`presence`]).
    /// Returns the sequence number of the event that carries it if one was numbered now (the
    /// caller publishes), `None` while it waits in the batch.
    fn presence_change(
        self: &Arc<Self>,
        st: &mut RoomState,
        name: &Arc<str>,
        kind: EventKind,
        reason: LeaveReason,
    ) -> Option<u64> {
        // The room's size with the member counted in, for a leave as for a join.
        let size = st.members.len() + usize::from(kind == EventKind::Left);
        let limits = self.presence_limits;
        if !limits.batches(size) {
            // A batch still pending goes first, so that the order of changes holds.
            self.flush_presence(st);
            return Some(self.append(st, name, kind, "", reason));
        }
        if kind == EventKind::Joined {
            st.presence.join(name);
        } else {
            st.presence.leave(name);
        }
        match st.presence.due(st.members.len(), &limits, Instant::now()) {
            Due::Now => self.flush_presence(st),
            Due::At(at) => {
                self.arm_presence_timer(st, at);
                None
            }
            Due::Nothing => None,
        }
    }

    /// Numbers the pending presence batch, if any, as one event; returns its sequence number. The
    /// caller publishes.
    fn flush_presence(&self, st: &mut RoomState) -> Option<u64> {
        let mut batch = st.presence.take(Instant::now())?;
        let seq = st.ring.next_seq();
        batch.from = seq;
        let frame = batch.encode(&self.id, seq);
        Some(self.push(
            st,
            Entry {
                frame,
                presence: Some(Box::new(batch)),
            },
        ))
    }

    /// Pushes an event into the ring and tells the room's flow state (backpressure) about it.
    fn push(&self, st: &mut RoomState, entry: Entry) -> u64 {
        let bytes = crate::ring::Weigh::weight(&entry);
        let seq = st.ring.push(entry);
        let span = (st.ring.first_seq(), st.ring.next_seq());
        st.flow.pushed(bytes, span, &self.gate);
        seq
    }

    /// Makes sure the pending batch is looked at again at `at`.
    fn arm_presence_timer(self: &Arc<Self>, st: &mut RoomState, at: Instant) {
        if st.presence.timer_armed {
            return;
        }
        // Without a runtime (the engine's unit tests) a batch waits for its share or a flush.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        st.presence.timer_armed = true;
        let room: Weak<Room> = Arc::downgrade(self);
        runtime.spawn(async move {
            tokio::time::sleep_until(at).await;
            if let Some(room) = room.upgrade() {
                room.presence_timer();
            }
        });
    }

    /// The presence timer fired: number the batch if it is due, else wait again.
    fn presence_timer(self: &Arc<Self>) {
        let mut st = self.lock();
        st.presence.timer_armed = false;
        let members = st.members.len();
        let published = match st
            .presence
            .due(members, &self.presence_limits, Instant::now())
        {
            Due::Now => self.flush_presence(&mut st).is_some(),
            Due::At(at) => {
                self.arm_presence_timer(&mut st, at);
                false
            }
            Due::Nothing => false,
        };
        drop(st);
        if published {
            self.publish();
        }
    }

    /// Numbers, encodes and stores one event; returns its sequence number. The caller publishes.
    fn append(
        &self,
        st: &mut RoomState,
        sender: &str,
        kind: EventKind,
        text: &str,
        reason: LeaveReason,
    ) -> u64 {
        let seq = st.ring.next_seq();
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
        let presence = match kind {
            EventKind::Joined => Some(Presence::one_join(seq, &Arc::from(sender))),
            EventKind::Left => Some(Presence::one_leave(seq, &Arc::from(sender))),
            _ => None,
        };
        self.push(
            st,
            Entry {
                frame: encode_message(&event),
                presence: presence.map(Box::new),
            },
        )
    }

    fn publish(&self) {
        let next = self.lock().ring.next_seq();
        self.head.send_replace(next);
    }
}

/// A new epoch, `<process>-<count>`: 16 hex digits drawn at random once per process (so a restarted
/// server does not repeat its predecessor's), then a counter (so no two incarnations in one process
/// share one).
fn new_epoch() -> Arc<str> {
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

impl Member {
    /// The room's name.
    pub fn room_id(&self) -> &str {
        &self.room.id
    }

    /// The epoch of the room incarnation this member joined.
    pub fn epoch(&self) -> &str {
        &self.room.epoch
    }

    /// The member's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The next sequence number this member will receive.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// The sequence number of this member's join event — in a room that batches presence, where
    /// the join waits in a batch, the number of the last event before it: every later event of the
    /// room has a higher one, and this member's own posts are exactly its messages numbered above
    /// it.
    pub fn joined_seq(&self) -> u64 {
        self.joined_seq
    }

    /// Posts a text message from this member, unless the room has closed.
    pub fn post(&self, text: &str) -> Posted {
        self.poster().post(text)
    }

    /// A handle that posts as this member from elsewhere (another call), while the member is in
    /// the room: the caller drops it when the member leaves.
    pub fn poster(&self) -> Poster {
        Poster {
            room: self.room.clone(),
            name: self.name.clone(),
        }
    }

    /// Closes the room for shutdown, if it is not already, and returns the sequence number it
    /// closed at: no post gets a higher one. Every member present is to be offered every event up
    /// to it before leaving.
    pub fn close_room(&self) -> u64 {
        let mut st = self.room.lock();
        // Joins and leaves still in the batch are numbered first: they are part of what closes.
        let flushed = st.closed_at.is_none() && self.room.flush_presence(&mut st).is_some();
        let last = st.ring.next_seq() - 1;
        let at = *st.closed_at.get_or_insert(last);
        drop(st);
        if flushed {
            self.room.publish();
        }
        at
    }
}

/// Says whether one member is blocked, and waits for its room's gate; see [`Member::blocker`].
pub struct Blocker {
    room: Arc<Room>,
    since: Arc<BlockedSince>,
}

impl Blocker {
    /// See [`Member::set_blocked`].
    pub fn set(&self, blocked: bool) {
        if self.since.set(blocked) {
            self.room.gate.member_blocked();
        }
    }

    /// Waits until the member's room takes posts (see [`Poster::ready`]).
    pub async fn ready(&self) {
        self.room
            .gate
            .wait_open(|now| self.room.lock().flow.review(now, &self.room.gate))
            .await
    }
}

/// Posts as one member; see [`Member::poster`].
#[derive(Clone)]
pub struct Poster {
    room: Arc<Room>,
    name: Arc<str>,
}

impl Poster {
    /// The member's room.
    pub fn room_id(&self) -> &str {
        &self.room.id
    }

    /// The member's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Waits until the room takes posts: while its slowest reading member is too far behind,
    /// posters wait for it to catch up ([`flow`](crate::services::chat::flow)). Call it before reading the next post from the
    /// client, so that HTTP/2 flow control slows the client meanwhile. Cancel-safe.
    pub async fn ready(&self) {
        self.room
            .gate
            .wait_open(|now| self.room.lock().flow.review(now, &self.room.gate))
            .await
    }

    /// Posts a text message as the member, unless the room has closed.
    pub fn post(&self, text: &str) -> Posted {
        let mut st = self.room.lock();
        if let Some(at) = st.closed_at {
            return Posted::Closed(at);
        }
        // A member's join is announced before its first message.
        if st.presence.is_unannounced(&self.name) {
            self.room.flush_presence(&mut st);
        }
        let seq = self.room.append(
            &mut st,
            &self.name,
            EventKind::Message,
            text,
            LeaveReason::Unspecified,
        );
        let next = st.ring.next_seq();
        drop(st);
        self.room.head.send_replace(next);
        Posted::At(seq)
    }
}

impl Member {
    /// Everything between the cursor and the head, as whole gRPC frames in one buffer of at most
    /// `max_bytes` and [`MAX_BATCH_BYTES`] (a single larger event goes alone, as the room's shared
    /// frame: never a private copy), preceded by a gap event if the cursor fell behind the ring.
    /// Advances the cursor. `None` when the member is up to date. A caller passes the capacity
    /// its client has granted, so that what it builds can leave at once.
    pub fn next_batch(&mut self, max_bytes: usize) -> Option<Bytes> {
        if let Some(old) = self.reset.take() {
            return Some(self.room.reset_frame(old.as_deref()));
        }
        let mut guard = self.room.lock();
        let st = &mut *guard;
        // A large room's member gets a run of joins and leaves as one presence event.
        let coalesce = self.room.presence_limits.batches(st.members.len());
        let span = (st.ring.first_seq(), st.ring.next_seq());
        let before = self.cursor;
        let batch = st
            .ring
            .read(&mut self.cursor, usize::MAX, max_bytes.min(MAX_BATCH_BYTES));
        if self.cursor != before {
            st.flow
                .advanced(self.reader, self.cursor, span, &self.room.gate);
        }
        if coalesce && presence::has_run(batch.entries.clone()) {
            return Some(self.coalesced(batch));
        }
        if batch.count > 0 {
            stats::delivered(batch.count as u64);
        }
        let Some((from, to)) = batch.missed else {
            // One event goes out as the shared frame itself. Several are copied into one buffer
            // right here: a copy of a small frame costs less than taking and dropping a share of
            // it, and the batch leaves as one DATA frame.
            return match batch.count {
                0 => None,
                1 => batch.entries.clone().next().map(|e| e.frame.clone()),
                _ => {
                    let mut buf = BytesMut::with_capacity(batch.bytes);
                    batch.entries.for_each(|e| buf.extend_from_slice(&e.frame));
                    Some(buf.freeze())
                }
            };
        };
        let gap_frame = self.gap_frame(from, to);
        let mut out = BytesMut::with_capacity(gap_frame.len() + batch.bytes);
        out.extend_from_slice(&gap_frame);
        batch.entries.for_each(|e| out.extend_from_slice(&e.frame));
        Some(out.freeze())
    }

    /// A batch read from the ring (the cursor already past it) with its runs of presence events
    /// merged ([`presence::coalesce`]), after a gap event if it has one.
    fn coalesced(&self, batch: crate::ring::Batch<'_, Entry>) -> Bytes {
        let mut out = BytesMut::with_capacity(batch.bytes);
        let mut events = 0;
        if let Some((from, to)) = batch.missed {
            out.extend_from_slice(&self.gap_frame(from, to));
        }
        let first_seq = self.cursor - batch.count as u64;
        events += presence::coalesce(&mut out, batch.entries, first_seq, &self.room.id);
        stats::delivered(events);
        out.freeze()
    }

    /// The gap event for a member that missed `from ..= to` (counted as such).
    fn gap_frame(&self, from: u64, to: u64) -> Bytes {
        stats::gap(to - from + 1);
        encode_message(&ChatMessage {
            room_id: self.room.id.to_string(),
            text: format!("missed {} events ({from}..={to})", to - from + 1),
            sent_at: Some(prost_types::Timestamp::from(SystemTime::now())),
            kind: EventKind::Gap as i32,
            gap_from: from,
            gap_to: to,
            ..Default::default()
        })
    }

    /// Whether the room has an event past the cursor (without marking it seen).
    pub fn has_news(&self) -> bool {
        self.reset.is_some() || *self.head.borrow() > self.cursor
    }

    /// Resolves when events newer than the cursor may exist.
    pub async fn changed(&mut self) {
        if *self.head.borrow_and_update() > self.cursor {
            return;
        }
        // The sender lives as long as the room, which this member keeps alive.
        let _ = self.head.changed().await;
    }

    /// Tells the room whether this member is blocked: events are due to it and none can leave
    /// (its client's window is zero, or its last batch has not been written yet). A member
    /// blocked for longer than the stall grace no longer holds the room back ([`flow`](crate::services::chat::flow)).
    pub fn set_blocked(&self, blocked: bool) {
        // Asked on every turn of the member's loop: no handle is made for it.
        if self.blocked_since.set(blocked) {
            self.room.gate.member_blocked();
        }
    }

    /// A handle that says whether this member is blocked (see [`set_blocked`](Self::set_blocked))
    /// while the member itself is borrowed elsewhere.
    pub fn blocker(&self) -> Blocker {
        Blocker {
            room: self.room.clone(),
            since: self.blocked_since.clone(),
        }
    }

    /// Waits until the room takes posts (see [`Poster::ready`]).
    pub async fn ready(&self) {
        self.room
            .gate
            .wait_open(|now| self.room.lock().flow.review(now, &self.room.gate))
            .await
    }

    /// Sets the reason the member will leave with when dropped.
    pub fn set_leave_reason(&mut self, reason: LeaveReason) {
        self.reason = reason;
    }

    /// Why this member's call must end, if its copy of a shared room was retired (its history
    /// was lost in Redis, or its place there): the client resumes on a new call. An atomic load.
    pub fn ended(&self) -> Option<Status> {
        if !self.room.ended.load(Ordering::Acquire) {
            return None;
        }
        let st = self.room.lock();
        st.ended.clone().or_else(|| st.cut.get(&self.name).cloned())
    }

    /// The sequence number the room closed at for shutdown, if it has.
    pub fn closed_at(&self) -> Option<u64> {
        self.room.lock().closed_at
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.rooms.leave(self);
    }
}

// Rooms numbered elsewhere: with `--redis` ([`crate::services::chat::redis`]) every event is
// numbered, stored and published by Redis, and this registry is the node's copy of the rooms that
// have local members. The ring is filled in sequence order by the node's subscription (never by a
// local post), members read it as they do a local room's, and joins and leaves are Redis's to
// announce: the registry only tells the engine that a local member left.

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

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    fn rooms(history_events: usize, history_bytes: usize, history_on_join: usize) -> Arc<Rooms> {
        Rooms::new(RoomLimits {
            history_events,
            history_bytes,
            history_on_join,
            max_rooms: 4,
            max_members_per_room: 8,
            flow: FlowLimits {
                high_water_percent: 0,
                ..FlowLimits::default()
            },
            presence: PresenceLimits::default(),
        })
    }

    /// A registry whose rooms batch presence above `batch_above` members (no timer runs in these
    /// tests: a batch goes out when it holds its share, or on a flush).
    fn batching(batch_above: usize, history_on_join: usize) -> Arc<Rooms> {
        Rooms::new(RoomLimits {
            history_on_join,
            max_members_per_room: 10_000,
            presence: PresenceLimits {
                batch_above,
                ..PresenceLimits::default()
            },
            ..RoomLimits::default()
        })
    }

    /// Splits a batch into its events, reading the 5-byte gRPC prefix as the spec lays it out.
    fn events(batch: &[u8]) -> Vec<ChatMessage> {
        let mut out = Vec::new();
        let mut rest = batch;
        while !rest.is_empty() {
            assert!(rest.len() >= 5, "a whole prefix");
            assert_eq!(rest[0], 0, "uncompressed");
            let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
            let (msg, tail) = rest[5..].split_at(len);
            out.push(ChatMessage::decode(msg).expect("a ChatMessage"));
            rest = tail;
        }
        out
    }

    /// Everything due to `member` now, in order.
    fn drain(member: &mut Member) -> Vec<ChatMessage> {
        let mut out = Vec::new();
        while let Some(batch) = member.next_batch(usize::MAX) {
            out.extend(events(&batch));
        }
        out
    }

    /// Resuming after `after` in the epoch `member` is in.
    fn resume(member: &Member, after: u64) -> StartAt {
        StartAt::Resume {
            epoch: Some(member.epoch().to_owned()),
            after,
        }
    }

    fn kinds_and_seqs(events: &[ChatMessage]) -> Vec<(EventKind, u64)> {
        events.iter().map(|e| (e.kind(), e.seq)).collect()
    }

    #[test]
    fn a_large_room_batches_joins_and_a_joiner_gets_its_history_as_one_event() {
        let rooms = batching(3, 50);
        let mut members: Vec<Member> = (0..3)
            .map(|i| {
                rooms
                    .join("r", &format!("s{i}"), StartAt::RecentHistory)
                    .unwrap()
            })
            .collect();
        // Up to the threshold, one event per join, as always.
        assert_eq!(members[2].joined_seq(), 3);
        // The 4th: a lone change in a quiet room goes at once, as a batch of one.
        members.push(rooms.join("r", "b0", StartAt::RecentHistory).unwrap());
        assert_eq!(members[3].joined_seq(), 4);
        // The 5th waits: 1 change of 5 members is less than half.
        let mut late = rooms.join("r", "b1", StartAt::RecentHistory).unwrap();
        assert_eq!(
            late.joined_seq(),
            4,
            "its place: after the last numbered event"
        );
        let got = drain(&mut late);
        assert_eq!(got.len(), 1, "three joins and a batch merged: {got:?}");
        assert_eq!(got[0].kind(), EventKind::Presence);
        assert_eq!((got[0].presence_from, got[0].seq), (1, 4));
        assert_eq!(got[0].joined_ids, vec!["s0", "s1", "s2", "b0"]);
        assert_eq!(rooms.members("r").len(), 5, "Members is exact meanwhile");
        // Its first post announces it first.
        assert_eq!(late.post("hi"), Posted::At(6));
        let got = drain(&mut members[0]);
        // s0 read nothing yet: everything from its own join on is one presence event, then b1's
        // post.
        assert_eq!(
            kinds_and_seqs(&got),
            vec![(EventKind::Presence, 5), (EventKind::Message, 6)]
        );
        assert_eq!((got[0].presence_from, got[0].joined_count), (1, 5));
        assert_eq!(got[0].joined_ids.last().map(String::as_str), Some("b1"));
    }

    #[test]
    fn joins_into_a_large_room_cost_a_bounded_number_of_deliveries_each() {
        let rooms = batching(10, 50);
        let mut members: Vec<Member> = Vec::new();
        let mut delivered = 0;
        let n = 1000;
        for i in 0..n {
            members.push(
                rooms
                    .join("r", &format!("m{i}"), StartAt::RecentHistory)
                    .unwrap(),
            );
            // Every member reads whatever it has after every join: the worst case.
            for m in &mut members {
                delivered += drain(m).len();
            }
        }
        assert_eq!(rooms.members("r").len(), n);
        // Small phase (≤ 10 members, one event each): under 10² deliveries. Then each joiner's
        // history is one event, and each batch of ≥ members/2 changes reaches every member once:
        // at most 2 deliveries per change (plus a quiet room's first lone batch).
        let bound = 10 * 10 + n + presence::FLUSH_SHARE * n + 11;
        assert!(delivered <= bound, "{delivered} deliveries > {bound}");
        eprintln!("{n} joins: {delivered} deliveries (bound {bound})");
    }

    #[test]
    fn history_on_join_is_the_most_recent_events_then_the_join() {
        let rooms = rooms(100, 1 << 20, 3);
        let alice = rooms.join("r", "alice", StartAt::RecentHistory).unwrap();
        for i in 0..5 {
            alice.post(&format!("m{i}"));
        }
        // seq 1 is alice's join, 2..=6 her posts; bob's join is 7.
        let mut bob = rooms.join("r", "bob", StartAt::RecentHistory).unwrap();
        assert_eq!(bob.joined_seq(), 7);
        let got = drain(&mut bob);
        assert_eq!(
            kinds_and_seqs(&got),
            vec![
                (EventKind::Message, 4),
                (EventKind::Message, 5),
                (EventKind::Message, 6),
                (EventKind::Joined, 7)
            ]
        );
        assert_eq!(got[0].text, "m2");
        assert_eq!(got[3].sender_id, "bob");
    }

    #[test]
    fn resume_after_s_receives_every_retained_event_after_s() {
        let rooms = rooms(100, 1 << 20, 0);
        let alice = rooms.join("r", "alice", StartAt::RecentHistory).unwrap();
        for i in 0..5 {
            alice.post(&format!("m{i}"));
        }
        let mut bob = rooms.join("r", "bob", resume(&alice, 3)).unwrap();
        let got = drain(&mut bob);
        assert_eq!(
            got.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![4, 5, 6, 7]
        );
        assert!(got.iter().all(|e| e.kind() != EventKind::Gap));
    }

    #[test]
    fn a_member_behind_the_ring_gets_one_gap_naming_exactly_what_it_missed() {
        let rooms = rooms(4, 1 << 20, 0);
        let alice = rooms.join("r", "alice", StartAt::RecentHistory).unwrap();
        let mut bob = rooms.join("r", "bob", StartAt::RecentHistory).unwrap();
        assert_eq!(bob.cursor(), 2, "no history: bob starts at his join");
        for i in 0..10 {
            alice.post(&format!("m{i}"));
        }
        // Events 1..=12 exist; the ring keeps the last 4 (9..=12); bob's cursor is at 2.
        let got = drain(&mut bob);
        assert_eq!(got[0].kind(), EventKind::Gap);
        assert_eq!((got[0].gap_from, got[0].gap_to), (2, 8));
        assert_eq!(got[0].text, "missed 7 events (2..=8)");
        assert_eq!(
            got[1..].iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![9, 10, 11, 12]
        );
        assert!(drain(&mut bob).is_empty(), "exactly one gap");
    }

    #[test]
    fn the_ring_is_bounded_by_count() {
        let rooms = rooms(3, 1 << 20, 100);
        let alice = rooms.join("r", "alice", StartAt::RecentHistory).unwrap();
        for i in 0..10 {
            alice.post(&format!("m{i}"));
        }
        let mut bob = rooms.join("r", "bob", StartAt::RecentHistory).unwrap();
        // 12 events; history_on_join (100) reaches past the ring, which holds 10..=12.
        let got = drain(&mut bob);
        assert_eq!(
            got.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![10, 11, 12]
        );
    }

    #[test]
    fn the_ring_is_bounded_by_bytes() {
        // Each 1,000-byte text encodes to a little over 1,000 bytes: three of them and a small join
        // event fit in 3,500 bytes, four do not.
        let rooms = rooms(1000, 3500, 1000);
        let alice = rooms.join("r", "alice", StartAt::RecentHistory).unwrap();
        let text = "x".repeat(1000);
        for _ in 0..10 {
            alice.post(&text);
        }
        let mut bob = rooms.join("r", "bob", resume(&alice, 0)).unwrap();
        let got = drain(&mut bob);
        assert_eq!(got[0].kind(), EventKind::Gap);
        let kept: Vec<u64> = got[1..].iter().map(|e| e.seq).collect();
        // Bob's own small join is among what is kept, and whatever is kept is the newest run.
        assert_eq!(*kept.last().unwrap(), 12);
        assert_eq!(kept, vec![9, 10, 11, 12]);
        assert_eq!((got[0].gap_from, got[0].gap_to), (1, 8));
    }

    #[test]
    fn a_batch_holds_at_most_max_batch_bytes_unless_one_event_is_larger() {
        let rooms = rooms(1000, 16 << 20, 0);
        let alice = rooms.join("r", "alice", StartAt::RecentHistory).unwrap();
        let mut bob = rooms.join("r", "bob", StartAt::RecentHistory).unwrap();
        let text = "y".repeat(10_000);
        for _ in 0..20 {
            alice.post(&text);
        }
        let mut seen = 0;
        while let Some(batch) = bob.next_batch(usize::MAX) {
            assert!(batch.len() <= MAX_BATCH_BYTES, "{} bytes", batch.len());
            seen += events(&batch).len();
        }
        assert_eq!(seen, 21, "bob's join and 20 posts");
        // A single event larger than the cap still goes, alone.
        let huge = "z".repeat(MAX_BATCH_BYTES + 1);
        alice.post(&huge);
        alice.post("small");
        let first = bob.next_batch(usize::MAX).unwrap();
        assert_eq!(events(&first).len(), 1);
        assert!(first.len() > MAX_BATCH_BYTES);
        assert_eq!(
            events(&bob.next_batch(usize::MAX).unwrap())[0].text,
            "small"
        );
    }

    #[test]
    fn a_batch_is_built_within_the_bytes_the_caller_can_send() {
        let rooms = rooms(1000, 16 << 20, 0);
        let alice = rooms.join("r", "alice", StartAt::RecentHistory).unwrap();
        let mut bob = rooms.join("r", "bob", StartAt::RecentHistory).unwrap();
        for _ in 0..10 {
            alice.post(&"w".repeat(100));
        }
        let mut seen = 0;
        while let Some(batch) = bob.next_batch(300) {
            let n = events(&batch).len();
            assert!(
                batch.len() <= 300 || n == 1,
                "{} bytes in {n} events",
                batch.len()
            );
            seen += n;
        }
        assert_eq!(seen, 11);
    }

    #[test]
    fn a_recreated_room_has_a_new_epoch_and_numbers_from_one() {
        let rooms = rooms(100, 1 << 20, 0);
        let alice = rooms.join("r", "alice", StartAt::RecentHistory).unwrap();
        let first = alice.epoch().to_owned();
        alice.post("one");
        drop(alice); // seq 3: alice left; the room is removed
        assert!(rooms.is_empty());
        let bob = rooms.join("r", "bob", StartAt::RecentHistory).unwrap();
        assert_eq!(bob.joined_seq(), 1);
        assert_ne!(bob.epoch(), first);
    }

    #[test]
    fn epochs_never_repeat_across_ten_thousand_incarnations() {
        let rooms = rooms(100, 1 << 20, 0);
        let mut seen = std::collections::HashSet::new();
        for i in 0..10_000 {
            let m = rooms
                .join(&format!("room{}", i % 3), "x", StartAt::RecentHistory)
                .unwrap();
            assert!(
                seen.insert(m.epoch().to_owned()),
                "epoch {} repeated",
                m.epoch()
            );
        }
    }

    #[test]
    fn resume_in_another_epoch_is_one_reset_then_the_whole_present_history() {
        let rooms = rooms(100, 1 << 20, 0);
        let old = {
            let alice = rooms.join("r", "alice", StartAt::RecentHistory).unwrap();
            alice.post("gone");
            alice.epoch().to_owned()
        };
        let carol = rooms.join("r", "carol", StartAt::RecentHistory).unwrap();
        carol.post("c1");
        let start = StartAt::Resume {
            epoch: Some(old.clone()),
            after: 2,
        };
        let mut alice = rooms.join("r", "alice", start).unwrap();
        let got = drain(&mut alice);
        assert_eq!(
            kinds_and_seqs(&got),
            vec![
                (EventKind::Reset, 0),
                (EventKind::Joined, 1),
                (EventKind::Message, 2),
                (EventKind::Joined, 3),
            ]
        );
        assert_eq!(got[0].epoch, carol.epoch());
        assert!(got[0].text.contains(&old), "{}", got[0].text);
        assert_eq!(got[1].sender_id, "carol");
        assert_eq!(got[2].text, "c1");
        assert!(drain(&mut alice).is_empty(), "exactly one reset");
    }

    #[test]
    fn resume_without_an_epoch_is_never_a_guessed_tail() {
        let rooms = rooms(100, 1 << 20, 0);
        let carol = rooms.join("r", "carol", StartAt::RecentHistory).unwrap();
        for i in 0..4 {
            carol.post(&format!("c{i}"));
        }
        // seq 2 here may be another incarnation's seq 2: the reset says so, and all follows.
        let start = StartAt::Resume {
            epoch: None,
            after: 2,
        };
        let mut old_client = rooms.join("r", "old", start).unwrap();
        let got = drain(&mut old_client);
        assert_eq!(got[0].kind(), EventKind::Reset);
        assert_eq!(got[0].epoch, carol.epoch());
        assert_eq!(
            got[1..].iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![1, 2, 3, 4, 5, 6]
        );
    }

    #[test]
    fn a_reset_whose_history_lost_its_start_has_a_gap_after_it() {
        let rooms = rooms(3, 1 << 20, 0);
        let carol = rooms.join("r", "carol", StartAt::RecentHistory).unwrap();
        for i in 0..5 {
            carol.post(&format!("c{i}"));
        }
        let start = StartAt::Resume {
            epoch: Some("an-old-epoch".into()),
            after: 9,
        };
        let mut alice = rooms.join("r", "alice", start).unwrap();
        let got = drain(&mut alice);
        assert_eq!(got[0].kind(), EventKind::Reset);
        assert_eq!(got[1].kind(), EventKind::Gap);
        assert_eq!((got[1].gap_from, got[1].gap_to), (1, 4));
        assert_eq!(
            got[2..].iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![5, 6, 7]
        );
    }

    #[test]
    fn resume_past_the_head_of_the_present_epoch_is_out_of_range() {
        let rooms = rooms(100, 1 << 20, 0);
        let carol = rooms.join("r", "carol", StartAt::RecentHistory).unwrap();
        carol.post("c1");
        // The head is 2: resuming after 2 is fine (nothing missed), after 3 is not.
        let err = rooms.join("r", "alice", resume(&carol, 3)).err().unwrap();
        assert_eq!(err.code(), crate::grpc::Code::OutOfRange);
        assert!(
            err.message().contains("past the last event"),
            "{}",
            err.message()
        );
        assert_eq!(names(&rooms, "r"), ["carol"], "not joined");
        let mut alice = rooms.join("r", "alice", resume(&carol, 2)).unwrap();
        assert_eq!(
            kinds_and_seqs(&drain(&mut alice)),
            vec![(EventKind::Joined, 3)]
        );
    }

    #[test]
    fn a_refused_join_leaves_the_room_as_it_was() {
        let rooms = rooms(100, 1 << 20, 0);
        let start = StartAt::Resume {
            epoch: None,
            after: 5,
        };
        // No room "r" yet: an epoch-less resume is a reset, not an error.
        let m = rooms.join("r", "a", start).unwrap();
        let err = rooms.join("r", "b", resume(&m, 99)).err().unwrap();
        assert_eq!(err.code(), crate::grpc::Code::OutOfRange);
        drop(m);
        assert!(rooms.is_empty());
    }

    #[test]
    fn a_closed_room_refuses_posts_after_its_close_point() {
        let rooms = rooms(100, 1 << 20, 0);
        let alice = rooms.join("r", "alice", StartAt::RecentHistory).unwrap();
        let mut bob = rooms.join("r", "bob", StartAt::RecentHistory).unwrap();
        assert_eq!(alice.post("before"), Posted::At(3));
        assert_eq!(alice.close_room(), 3);
        assert_eq!(bob.close_room(), 3, "closing twice keeps the first point");
        assert_eq!(alice.post("after"), Posted::Closed(3));
        let got = drain(&mut bob);
        assert_eq!(got.last().map(|e| e.seq), Some(3));
        let err = rooms
            .join("r", "carol", StartAt::RecentHistory)
            .err()
            .unwrap();
        assert_eq!(err.code(), crate::grpc::Code::Unavailable);
    }

    #[test]
    fn leaving_posts_a_left_event_with_the_reason() {
        let rooms = rooms(100, 1 << 20, 0);
        let mut alice = rooms.join("r", "alice", StartAt::RecentHistory).unwrap();
        let mut bob = rooms.join("r", "bob", StartAt::RecentHistory).unwrap();
        drain(&mut alice);
        bob.set_leave_reason(LeaveReason::Left);
        drop(bob);
        let got = drain(&mut alice);
        assert_eq!(kinds_and_seqs(&got), vec![(EventKind::Left, 3)]);
        assert_eq!(got[0].leave_reason(), LeaveReason::Left);
        assert_eq!(names(&rooms, "r"), ["alice"]);
    }

    #[test]
    fn names_are_unique_within_a_room_and_rooms_and_members_are_capped() {
        let rooms = rooms(100, 1 << 20, 0);
        let _a = rooms.join("r", "alice", StartAt::RecentHistory).unwrap();
        let err = rooms
            .join("r", "alice", StartAt::RecentHistory)
            .err()
            .unwrap();
        assert_eq!(err.code(), crate::grpc::Code::AlreadyExists);
        let _others: Vec<Member> = (0..3)
            .map(|i| {
                rooms
                    .join(&format!("o{i}"), "x", StartAt::RecentHistory)
                    .unwrap()
            })
            .collect();
        let err = rooms.join("o9", "x", StartAt::RecentHistory).err().unwrap();
        assert_eq!(err.code(), crate::grpc::Code::ResourceExhausted);
        let _members: Vec<Member> = (0..7)
            .map(|i| {
                rooms
                    .join("r", &format!("m{i}"), StartAt::RecentHistory)
                    .unwrap()
            })
            .collect();
        let err = rooms
            .join("r", "one-too-many", StartAt::RecentHistory)
            .err()
            .unwrap();
        assert_eq!(err.code(), crate::grpc::Code::ResourceExhausted);
    }
    fn names(rooms: &Rooms, room_id: &str) -> Vec<String> {
        rooms
            .members(room_id)
            .iter()
            .map(|n| n.to_string())
            .collect()
    }

    #[test]
    fn members_are_in_join_order_and_shared_not_copied() {
        let rooms = rooms(100, 1 << 20, 0);
        // Joined in an order that is not sorted by name.
        let carol = rooms.join("r", "carol", StartAt::RecentHistory).unwrap();
        let alice = rooms.join("r", "alice", StartAt::RecentHistory).unwrap();
        let bob = rooms.join("r", "bob", StartAt::RecentHistory).unwrap();
        assert_eq!(names(&rooms, "r"), ["carol", "alice", "bob"]);
        // Members takes the room's own list: two calls with no join between get the same one.
        let first = rooms.members("r");
        assert!(
            Arc::ptr_eq(&first, &rooms.members("r")),
            "Members copied the list"
        );
        // A leave makes a new list; the snapshot taken before it stays as it was.
        drop(alice);
        assert_eq!(names(&rooms, "r"), ["carol", "bob"]);
        assert_eq!(first.len(), 3);
        let _dave = rooms.join("r", "dave", StartAt::RecentHistory).unwrap();
        assert_eq!(names(&rooms, "r"), ["carol", "bob", "dave"]);
        assert!(rooms.members("nowhere").is_empty());
        drop((carol, bob));
    }
}
