//! `Poster`: posts as one member from elsewhere (another call), while the member is in the room.

use std::sync::Arc;

use super::{Posted, Room};
use crate::pb::chat::v1::{EventKind, LeaveReason};

/// Posts as one member; see [`Member::poster`](super::Member::poster).
#[derive(Clone)]
pub struct Poster {
    pub(super) room: Arc<Room>,
    pub(super) name: Arc<str>,
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
        self.room.takes_posts().await
    }

    /// Posts a text message as the member, unless the room has closed.
    pub fn post(&self, text: &str) -> Posted {
        self.room.post_as(&self.name, text)
    }
}

impl Room {
    /// Posts a text message as `name`, unless the room has closed; wakes the members unless the
    /// delivery window holds the post ([`post_wakes_now`](Room::post_wakes_now)).
    pub(super) fn post_as(self: &Arc<Self>, name: &Arc<str>, text: &str) -> Posted {
        let mut st = self.lock();
        if let Some(at) = st.closed_at {
            return Posted::Closed(at);
        }
        // A member's join is announced before its first message.
        if st.presence.is_unannounced(name) {
            self.flush_presence(&mut st);
        }
        let seq = self.append(
            &mut st,
            name,
            EventKind::Message,
            text,
            LeaveReason::Unspecified,
        );
        let next = st.ring.next_seq();
        let wake = self.post_wakes_now(&mut st);
        drop(st);
        if wake {
            self.head.send_replace(next);
        }
        Posted::At(seq)
    }
}
