//! The delivery window ([`RoomLimits::delivery_window`](super::RoomLimits::delivery_window)):
//! whether a post wakes the room's members now, or a timer wakes them at the window's end for
//! every post until then. Only rooms above
//! [`RoomLimits::delivery_window_above`](super::RoomLimits::delivery_window_above) members have
//! one: a wake-up costs a room in proportion to its members.

use std::sync::Arc;

use tokio::time::Instant;

use super::{Room, RoomState};

/// Posts a delivery window gathers at most: the last of them wakes the members at once, for all.
pub const MAX_POSTS_IN_WINDOW: u32 = 128;

impl Room {
    /// Whether a post just appended wakes the members now. With a delivery window, not if a post
    /// woke them less than a window ago: then a timer wakes them at the window's end, once for
    /// every post until then (armed by the first of them), unless [`MAX_POSTS_IN_WINDOW`] gather
    /// first. Never in a room of up to `delivery_window_above` members.
    pub(super) fn post_wakes_now(self: &Arc<Self>, st: &mut RoomState) -> bool {
        if self.delivery_window.is_zero() || st.members.len() <= self.delivery_window_above {
            return true;
        }
        if st.wake_due && !self.gate.is_closed() {
            // A window that holds enough posts lets them go at once: a batch that size already
            // spreads a wake-up thin, and a poster that waits for the members is not held up.
            st.held += 1;
            if st.held >= MAX_POSTS_IN_WINDOW {
                st.held = 0;
                return true;
            }
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
        st.held = 1;
        let room = self.clone();
        runtime.spawn(async move {
            tokio::time::sleep_until(at).await;
            let mut st = room.lock();
            st.wake_due = false;
            st.held = 0;
            st.woken_at = Some(Instant::now());
            let next = st.ring.next_seq();
            drop(st);
            room.head.send_replace(next);
        });
        false
    }
}
