//! What chat counts, through the `metrics` facade: nothing at all until an exporter is installed
//! (the gRPC layer's [`is_enabled`] says so).
//!
//! | metric | labels | what |
//! |---|---|---|
//! | `h2chat_chat_rooms` | | rooms that exist |
//! | `h2chat_chat_members` | | members joined, in every room |
//! | `h2chat_chat_presence_events_total` | `event` (`joined`, `left`), `reason` (leaves: `left`, `disconnected`, `server_shutting_down`) | joins and leaves |
//! | `h2chat_chat_posts_total` | | messages posted |
//! | `h2chat_chat_posts_throttled_total` | | times a member's next post had to wait for `--max-post-rate` |
//! | `h2chat_chat_deliveries_total` | | events handed to members' calls (a post to a room of 3 is 3) |
//! | `h2chat_chat_gaps_total` | | gap events: a member fell behind the room's history |
//! | `h2chat_chat_gap_events_total` | | events those gaps skipped |
//!
//! No label ever holds a room or member name.

use metrics::{counter, describe_counter, describe_gauge, gauge};

use crate::grpc::server::stats::is_enabled;
use crate::pb::chat::v1::LeaveReason;

/// A member joined.
pub(crate) fn joined() {
    if !is_enabled() {
        return;
    }
    counter!("h2chat_chat_presence_events_total", "event" => "joined", "reason" => "").increment(1);
    gauge!("h2chat_chat_members").increment(1.0);
}

/// A member left for `reason`.
pub(crate) fn left(reason: LeaveReason) {
    if !is_enabled() {
        return;
    }
    counter!("h2chat_chat_presence_events_total", "event" => "left", "reason" => reason_label(reason))
        .increment(1);
    gauge!("h2chat_chat_members").decrement(1.0);
}

/// How many rooms exist now.
pub(crate) fn rooms(n: usize) {
    if !is_enabled() {
        return;
    }
    gauge!("h2chat_chat_rooms").set(n as f64);
}

/// A message was posted.
pub(crate) fn posted() {
    if !is_enabled() {
        return;
    }
    counter!("h2chat_chat_posts_total").increment(1);
}

/// A member's next post waits for the post rate.
pub(crate) fn throttled() {
    if !is_enabled() {
        return;
    }
    counter!("h2chat_chat_posts_throttled_total").increment(1);
}

/// `n` events went to one member's call.
pub(crate) fn delivered(n: u64) {
    if !is_enabled() {
        return;
    }
    counter!("h2chat_chat_deliveries_total").increment(n);
}

/// A member received a gap event skipping `missed` events.
pub(crate) fn gap(missed: u64) {
    if !is_enabled() {
        return;
    }
    counter!("h2chat_chat_gaps_total").increment(1);
    counter!("h2chat_chat_gap_events_total").increment(missed);
}

/// The label of a leave reason.
pub fn reason_label(reason: LeaveReason) -> &'static str {
    match reason {
        LeaveReason::Left => "left",
        LeaveReason::Disconnected => "disconnected",
        LeaveReason::ServerShuttingDown => "server_shutting_down",
        LeaveReason::CallFailed => "call_failed",
        _ => "unspecified",
    }
}

/// Every series at 0, so a new server's scrape shows them all.
pub fn zero() {
    gauge!("h2chat_chat_rooms").set(0.0);
    gauge!("h2chat_chat_members").set(0.0);
    for name in [
        "h2chat_chat_posts_total",
        "h2chat_chat_posts_throttled_total",
        "h2chat_chat_deliveries_total",
        "h2chat_chat_gaps_total",
        "h2chat_chat_gap_events_total",
    ] {
        counter!(name).absolute(0);
    }
}

/// The HELP lines.
pub fn describe() {
    describe_gauge!("h2chat_chat_rooms", "Chat rooms that exist.");
    describe_gauge!("h2chat_chat_members", "Chat members joined, in every room.");
    describe_counter!(
        "h2chat_chat_presence_events_total",
        "Joins and leaves, leaves by reason."
    );
    describe_counter!("h2chat_chat_posts_total", "Chat messages posted.");
    describe_counter!(
        "h2chat_chat_posts_throttled_total",
        "Times a member's next post waited for --max-post-rate."
    );
    describe_counter!(
        "h2chat_chat_deliveries_total",
        "Chat events handed to members' calls."
    );
    describe_counter!(
        "h2chat_chat_gaps_total",
        "Gap events sent to members that fell behind a room's history."
    );
    describe_counter!(
        "h2chat_chat_gap_events_total",
        "Events skipped by gap events."
    );
}
