//! Chat rooms: a bounded ring of already-encoded events per room, and members as cursors into it.
//!
//! One mechanism gives ordering, history, resume, lag detection and fan-out:
//! - Every event (message, join, leave) gets the room's next sequence number and is encoded into
//!   its gRPC frame once, under the room's lock; all members share that `Bytes`. In a room above
//!   its presence threshold joins and leaves are gathered into batches instead, each one event
//!   ([`presence`](crate::services::chat::presence)), and a member gets a run of presence events
//!   as one.
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
//! With a delivery window ([`RoomLimits::delivery_window`], by default in rooms of more than 50
//! members) a busy room wakes its members for posts at most once per window: a post into a room
//! that has not woken them for a window goes out at once, later ones wait for the window's end and
//! leave together, in one frame per member (fewer wake-ups and writes for up to a window of
//! latency). The poster gets its own post at once; joins, leaves and shutdown are never held.
//!
//! On shutdown each room closes at a definite sequence number ([`Member::close_room`]): later posts
//! are refused, and every member is offered every event up to it before it leaves.

use std::sync::Arc;
use std::time::Duration;

use crate::services::chat::flow::FlowLimits;
use crate::services::chat::presence::PresenceLimits;

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
/// Default delivery window of a room larger than [`DEFAULT_DELIVERY_WINDOW_ABOVE`] members: 16 ms.
/// Below a window a post that comes right after another one wakes every member's task and makes a
/// write on every member's connection for itself (about 13,500 instructions of user work per
/// member, most of it h2's, and a `writev`); within one, a busy room's posts leave together.
pub const DEFAULT_DELIVERY_WINDOW: Duration = Duration::from_millis(16);
/// Default size above which a room holds posts for its delivery window: rooms of up to 50 members
/// wake their members for every post at once.
pub const DEFAULT_DELIVERY_WINDOW_ABOVE: usize = 50;

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
    /// When joins and leaves are batched ([`presence`](crate::services::chat::presence)).
    pub presence: PresenceLimits,
    /// A busy room wakes its members for posts at most once per this long (zero: at every post).
    /// Timed by Tokio's timers, which count whole milliseconds. The poster itself gets its own
    /// post at once.
    pub delivery_window: Duration,
    /// Only rooms with more members than this hold posts for the delivery window (0: every room);
    /// smaller ones wake their members for every post at once.
    pub delivery_window_above: usize,
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
            delivery_window_above: DEFAULT_DELIVERY_WINDOW_ABOVE,
        }
    }
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

mod blocker;
mod epoch;
mod member;
mod poster;
mod registry;
mod shared;
mod state;
mod window;
pub use window::MAX_POSTS_IN_WINDOW;

pub use blocker::Blocker;
use epoch::new_epoch;
pub use member::Member;
pub use poster::Poster;
pub use registry::Rooms;
pub use shared::{fresh_epoch, Delivered, SharedRooms};
pub use state::Room;
use state::RoomState;

#[cfg(test)]
mod tests;
