//! Helpers for talking to `chat.v1.ChatService` with the library's own client.

use h2chat::grpc::client::{CallOptions, Channel, ClientCall};
use h2chat::grpc::Status;
use h2chat::pb::chat::v1::{ChatMessage, EventKind, LeaveReason};

pub use super::PATIENCE;

/// The path of the chat method.
pub const CHAT: &str = "/chat.v1.ChatService/Chat";

/// A join (or post) message.
pub fn msg(room: &str, sender: &str, text: &str) -> ChatMessage {
    ChatMessage {
        room_id: room.into(),
        sender_id: sender.into(),
        text: text.into(),
        ..Default::default()
    }
}

/// A post on a joined call: no room, no sender.
pub fn post(text: &str) -> ChatMessage {
    msg("", "", text)
}

/// Opens a chat call and sends `first` (the join).
pub async fn start(ch: &Channel, first: &ChatMessage) -> ClientCall {
    let mut call = ch
        .start(CHAT, CallOptions::default())
        .await
        .expect("start chat call");
    call.send(first).await.expect("send join");
    call
}

/// Joins and waits until the join was accepted (response headers arrived).
pub async fn join(ch: &Channel, room: &str, name: &str) -> ClientCall {
    let mut call = start(ch, &msg(room, name, "")).await;
    call.headers().await.expect("join accepted");
    call
}

/// The next event, failing the test if none comes within [`PATIENCE`] or the call ends.
pub async fn next(call: &mut ClientCall) -> ChatMessage {
    match tokio::time::timeout(PATIENCE, call.recv::<ChatMessage>()).await {
        Ok(Ok(Some(m))) => m,
        Ok(Ok(None)) => panic!("call ended OK while an event was expected"),
        Ok(Err(s)) => panic!("call failed while an event was expected: {s}"),
        Err(_) => panic!("no event within {PATIENCE:?}"),
    }
}

/// Reads events until one satisfies `want`; returns it.
pub async fn next_where(call: &mut ClientCall, want: impl Fn(&ChatMessage) -> bool) -> ChatMessage {
    loop {
        let m = next(call).await;
        if want(&m) {
            return m;
        }
    }
}

/// Reads events until the message with `text` arrives.
pub async fn until_text(call: &mut ClientCall, text: &str) -> ChatMessage {
    next_where(call, |m| kind(m) == EventKind::Message && m.text == text).await
}

/// The status the call ends with (it must end within [`PATIENCE`]), skipping events.
pub async fn final_status(call: &mut ClientCall) -> Status {
    loop {
        match tokio::time::timeout(PATIENCE, call.recv::<ChatMessage>()).await {
            Ok(Ok(Some(_))) => continue,
            Ok(Ok(None)) => return Status::ok(),
            Ok(Err(s)) => return s,
            Err(_) => panic!("call did not end within {PATIENCE:?}"),
        }
    }
}

/// The event kind.
pub fn kind(m: &ChatMessage) -> EventKind {
    EventKind::try_from(m.kind).unwrap_or(EventKind::Message)
}

/// The joins and leaves an event announces: one for `JOINED` or `LEFT`, a presence event's
/// counts, none for any other event.
pub fn presence_counts(m: &ChatMessage) -> (u64, u64) {
    match kind(m) {
        EventKind::Joined => (1, 0),
        EventKind::Left => (0, 1),
        EventKind::Presence => (m.joined_count, m.left_count),
        _ => (0, 0),
    }
}

/// The leave reason.
pub fn reason(m: &ChatMessage) -> LeaveReason {
    LeaveReason::try_from(m.leave_reason).unwrap_or(LeaveReason::Unspecified)
}

/// The `chat-epoch` of a joined call (its response headers must have arrived or arrive).
pub async fn epoch(call: &mut ClientCall) -> String {
    let headers = call.headers().await.expect("join accepted");
    headers
        .get(h2chat::protocol::EPOCH_METADATA)
        .expect("chat-epoch header")
        .to_owned()
}
