//! A joined member (`Member`): a cursor into its room's ring, the batches it reads from there (a
//! gap or reset event first when due, runs of presence merged), its blocked state, and its leave
//! on drop.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use tokio::sync::watch;

use super::{Blocker, Posted, Poster, Room, Rooms, MAX_BATCH_BYTES};
use crate::grpc::codec::encode_message;
use crate::grpc::Status;
use crate::pb::chat::v1::{ChatMessage, EventKind, LeaveReason};
use crate::services::chat::flow::{BlockedSince, ReaderId};
use crate::services::chat::presence::{self, Entry};
use crate::services::chat::stats;

/// A joined member. Dropping it leaves the room, with the reason given to
/// [`set_leave_reason`](Member::set_leave_reason) (`LEAVE_REASON_DISCONNECTED` if none was).
pub struct Member {
    pub(super) rooms: Arc<Rooms>,
    pub(super) room: Arc<Room>,
    pub(super) name: Arc<str>,
    /// The next sequence number this member has to receive.
    pub(super) cursor: u64,
    /// The sequence number of this member's join event.
    pub(super) joined_seq: u64,
    pub(super) head: watch::Receiver<u64>,
    pub(super) reason: LeaveReason,
    /// A reset event to hand out before anything else: the epoch the member resumed in (`None`:
    /// it named none). Encoded when it is handed out, not kept encoded: a member that reads
    /// nothing (a zero window) holds no frame of its own.
    pub(super) reset: Option<Option<Box<str>>>,
    /// This member among the room's readers ([`flow`](crate::services::chat::flow)).
    pub(super) reader: ReaderId,
    /// Since when this member has been blocked (shared with the room).
    pub(super) blocked_since: Arc<BlockedSince>,
    /// The last batch stopped short of the ring's head (at its size bound or the client's
    /// window), or the member has posted since: more is due whether or not the room wakes the
    /// member again (with a delivery window it may not, for a while).
    pub(super) behind: bool,
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

    /// Posts a text message from this member, unless the room has closed. The post is due to
    /// the member itself at once, even while the room's delivery window holds it from the others:
    /// a client may wait for its own post to come back before it sends the next one.
    pub fn post(&mut self, text: &str) -> Posted {
        let posted = self.room.post_as(&self.name, text);
        if let Posted::At(_) = posted {
            self.behind = true;
        }
        posted
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
        self.room.set_blocked(&self.blocked_since, blocked);
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
        self.room.takes_posts().await
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
