//! One room (`Room`) and what its lock guards (`RoomState`): the ring of encoded events, the
//! roster, the presence batch and its timer, the flow state; events numbered, pushed and published.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::time::Instant;

use super::{new_epoch, RoomLimits, Roster};
use crate::grpc::codec::encode_message;
use crate::grpc::Status;
use crate::pb::chat::v1::{ChatMessage, EventKind, LeaveReason};
use crate::ring::{RingBounds, SeqRing};
use crate::services::chat::flow::{BlockedSince, Flow, Gate};
use crate::services::chat::presence::{Due, Entry, Pending, Presence, PresenceLimits};

/// One room.
pub struct Room {
    pub(super) id: Arc<str>,
    /// This incarnation's epoch: no other incarnation of any room has it.
    pub(super) epoch: Arc<str>,
    state: Mutex<RoomState>,
    /// The next sequence number; members wait on it for new events.
    pub(super) head: watch::Sender<u64>,
    /// Posters wait here while reading members catch up ([`flow`](crate::services::chat::flow)).
    pub(super) gate: Gate,
    pub(super) presence_limits: PresenceLimits,
    /// See [`RoomLimits::delivery_window`].
    pub(super) delivery_window: Duration,
    /// See [`RoomLimits::delivery_window_above`].
    pub(super) delivery_window_above: usize,
    /// Set (with `RoomState::ended`) when this copy of a shared room is retired.
    pub(super) ended: AtomicBool,
}

pub(super) struct RoomState {
    /// Encoded frames, numbered by the room's sequence numbers.
    pub(super) ring: SeqRing<Entry>,
    /// Joins and leaves of a large room not yet numbered
    /// ([`presence`](crate::services::chat::presence)).
    pub(super) presence: Pending,
    /// Member name → join order.
    pub(super) members: HashMap<Arc<str>, u64>,
    /// The members in join order, shared with `Members` calls: one takes a clone of the `Arc`
    /// under the lock and reads it outside, so it never sorts or copies under the lock (a join
    /// or leave copies it only while such a reader still holds the old one).
    pub(super) roster: Roster,
    /// Skeleton of each member's name (see
    /// [`identity::skeleton`](crate::services::chat::identity::skeleton)) → the name.
    pub(super) skeletons: HashMap<String, Arc<str>>,
    pub(super) joins: u64,
    /// Set on shutdown: the last sequence number posts may have. Later posts are refused.
    pub(super) closed_at: Option<u64>,
    /// Why the members' calls end, once this copy of a shared room is retired.
    pub(super) ended: Option<Status>,
    /// Members whose calls must end (their place in the shared room was lost), and why.
    pub(super) cut: HashMap<Arc<str>, Status>,
    /// Where the members' cursors are, for backpressure.
    pub(super) flow: Flow,
    /// When a post last woke the members (with a delivery window).
    pub(super) woken_at: Option<Instant>,
    /// A timer will wake the members for the posts since then.
    pub(super) wake_due: bool,
    /// Posts held for the window since the members were last woken.
    pub(super) held: u32,
}

impl Room {
    pub(super) fn new(id: Arc<str>, limits: &RoomLimits) -> Room {
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
                held: 0,
            }),
            head,
            gate: Gate::default(),
            presence_limits: limits.presence,
            delivery_window: limits.delivery_window,
            delivery_window_above: limits.delivery_window_above,
            ended: AtomicBool::new(false),
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, RoomState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the join or leave of `name` (already added to or taken from the roster): an event
    /// of its own in a small room, a change in the room's batch in a large one
    /// ([`presence`](crate::services::chat::presence)).
    /// Returns the sequence number of the event that carries it if one was numbered now (the
    /// caller publishes), `None` while it waits in the batch.
    pub(super) fn presence_change(
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
    pub(super) fn flush_presence(&self, st: &mut RoomState) -> Option<u64> {
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
    pub(super) fn push(&self, st: &mut RoomState, entry: Entry) -> u64 {
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
    pub(super) fn append(
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

    pub(super) fn publish(&self) {
        let next = self.lock().ring.next_seq();
        self.head.send_replace(next);
    }

    /// Waits until the room takes posts: its backpressure gate is open (posters at a closed gate
    /// review who is stalled as time passes). Cancel-safe. The gate's own future, not an
    /// `async fn` around it: it is part of every member's task while it waits.
    pub(super) fn takes_posts(&self) -> impl Future<Output = ()> + '_ {
        self.gate
            .wait_open(|now| self.lock().flow.review(now, &self.gate))
    }

    /// A member's blocked state, held in `since`, is now `blocked`; the gate's posters look
    /// again when it changed.
    pub(super) fn set_blocked(&self, since: &BlockedSince, blocked: bool) {
        if since.set(blocked) {
            self.gate.member_blocked();
        }
    }
}
