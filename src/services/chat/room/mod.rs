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
//! With a delivery window ([`RoomLimits::delivery_window`]) a busy room wakes its members for posts
//! at most once per window: a post into a room that has not woken them for a window goes out at
//! once, later ones wait for the window's end and leave together, in one frame per member (fewer
//! wake-ups and writes for up to a window of latency). Joins, leaves and shutdown are never held.
//!
//! On shutdown each room closes at a definite sequence number ([`Member::close_room`]): later posts
//! are refused, and every member is offered every event up to it before it leaves.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, SystemTime};

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
/// Default delivery window: none, every post wakes the room's members at once.
pub const DEFAULT_DELIVERY_WINDOW: Duration = Duration::ZERO;

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
    /// A busy room wakes its members for posts at most once per this long (zero: at every post).
    /// Timed by Tokio's timers, which count whole milliseconds.
    pub delivery_window: Duration,
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
            delivery_window: DEFAULT_DELIVERY_WINDOW,
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
    /// See [`RoomLimits::delivery_window`].
    delivery_window: Duration,
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
    /// When a post last woke the members (with a delivery window).
    woken_at: Option<Instant>,
    /// A timer will wake the members for the posts since then.
    wake_due: bool,
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
    /// The last batch stopped short of the ring's head (at its size bound or the client's
    /// window): more is due whether or not the room wakes the member again (with a delivery
    /// window it may not, for a while).
    behind: bool,
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
            behind: false,
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
                woken_at: None,
                wake_due: false,
            }),
            head,
            gate: Gate::default(),
            presence_limits: limits.presence,
            delivery_window: limits.delivery_window,
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

    /// Whether a post just appended wakes the members now. With a delivery window, not if a post
    /// woke them less than a window ago: then a timer wakes them at the window's end, once for
    /// every post until then (armed by the first of them).
    fn post_wakes_now(self: &Arc<Self>, st: &mut RoomState) -> bool {
        if self.delivery_window.is_zero() {
            return true;
        }
        if st.wake_due && !self.gate.is_closed() {
            return false;
        }
        let now = Instant::now();
        // Posters wait for the members at a closed gate: they are woken now, not a window later.
        let Some(at) = st
            .woken_at
            .and_then(|t| t.checked_add(self.delivery_window))
            .filter(|at| *at > now && !self.gate.is_closed())
        else {
            st.woken_at = Some(now);
            return true;
        };
        // Outside a runtime (a unit test) there is no timer: at once.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return true;
        };
        st.wake_due = true;
        let room = self.clone();
        runtime.spawn(async move {
            tokio::time::sleep_until(at).await;
            let mut st = room.lock();
            st.wake_due = false;
            st.woken_at = Some(Instant::now());
            let next = st.ring.next_seq();
            drop(st);
            room.head.send_replace(next);
        });
        false
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
        let wake = self.room.post_wakes_now(&mut st);
        drop(st);
        if wake {
            self.room.head.send_replace(next);
        }
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
        self.behind = self.cursor < span.1;
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
        self.reset.is_some() || self.behind || *self.head.borrow() > self.cursor
    }

    /// Resolves when events newer than the cursor may exist.
    pub async fn changed(&mut self) {
        if self.behind || *self.head.borrow_and_update() > self.cursor {
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

mod shared;

pub use shared::{fresh_epoch, Delivered, SharedRooms};

#[cfg(test)]
mod tests;
