//! `Blocker`: a member's blocked state and its room's gate, for the member's loop while the member
//! itself is borrowed elsewhere.

use std::sync::Arc;

use super::Room;
use crate::services::chat::flow::BlockedSince;

/// Says whether one member is blocked, and waits for its room's gate; see
/// [`Member::blocker`](super::Member::blocker).
pub struct Blocker {
    pub(super) room: Arc<Room>,
    pub(super) since: Arc<BlockedSince>,
}

impl Blocker {
    /// See [`Member::set_blocked`](super::Member::set_blocked).
    pub fn set(&self, blocked: bool) {
        self.room.set_blocked(&self.since, blocked);
    }

    /// Waits until the member's room takes posts (see [`Poster::ready`](super::Poster::ready)).
    pub async fn ready(&self) {
        self.room.takes_posts().await
    }
}
