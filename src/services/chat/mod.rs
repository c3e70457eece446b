//! `chat.v1.ChatService`: the call side of chat rooms.
//!
//! `Chat` is one bidirectional call per member. Its first message joins (`room_id`, `sender_id`,
//! optionally `resume_after_seq` and a first `text`); every later message posts its text. The
//! call receives every event of the room in sequence order — its own posts included, which is
//! the acknowledgement — until the client cancels or disconnects. A client that half-closes stays
//! in the room and keeps receiving.
//!
//! The member's task does both directions: it reads the client's posts (no faster than the post
//! rate allows, so HTTP/2 flow control slows a fast sender down) and writes the room's events from
//! its cursor as flow control allows. Nothing here can make it block the room.
//!
//! `Subscribe` and `Post` (`browser.rs`) are the same member split in two calls, for browsers.
//!
//! Shutdown drains: when the server begins shutting down, the member's room closes at a definite
//! sequence number (the first member to notice closes it). Posts after it are refused and never
//! echoed; the member stops reading, is offered every event up to it, and then leaves with
//! `LEAVE_REASON_SERVER_SHUTTING_DOWN` and UNAVAILABLE trailers. So no post is echoed to its sender
//! unless every member present at its seq is offered it. A member that cannot take its events
//! within [`ChatConfig::shutdown_drain`] is cut, and that is logged.

mod browser;
pub mod flow;
pub mod identity;
mod join;
mod member_loop;
mod post;
pub mod presence;
pub mod redis;
pub mod room;
pub mod stats;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::grpc::{BoxFuture, Call, CallResult, Service, ShutdownSignal, Status};
use crate::pb::chat::v1::{ChatMessage, MembersRequest, MembersResponse};
use crate::protocol::{CHAT_METHOD, MEMBERS_METHOD, POST_METHOD, SUBSCRIBE_METHOD};
pub use crate::protocol::{
    DEFAULT_MAX_ID_BYTES, DEFAULT_MAX_TEXT_BYTES, EPOCH_METADATA, JOINED_SEQ_METADATA,
    MAX_TEXT_BYTES_METADATA,
};
use crate::services::chat::room::{RoomLimits, Rooms};

/// Default time a member has on shutdown to take its room's last events (see
/// [`ChatConfig::shutdown_drain`]).
pub const DEFAULT_SHUTDOWN_DRAIN: Duration = Duration::from_secs(4);
/// Default posts per second per member.
pub const DEFAULT_MAX_POST_RATE: f64 = 100.0;
/// Default burst of posts a member may make at once.
pub const DEFAULT_POST_BURST: f64 = 200.0;

/// Default cap on joined `Chat` calls per connection.
pub const DEFAULT_MAX_JOINS_PER_CONNECTION: usize = 256;

/// Limits of the chat service.
#[derive(Clone, Debug)]
pub struct ChatConfig {
    /// Room registry limits (history, rooms, members).
    pub rooms: RoomLimits,
    /// Longest room or sender id, in bytes.
    pub max_id_bytes: usize,
    /// Longest text, in bytes.
    pub max_text_bytes: usize,
    /// Posts per second per member; 0 means unlimited.
    pub max_post_rate: f64,
    /// Posts a member may make at once before the rate applies.
    pub post_burst: f64,
    /// Joined `Chat` calls per connection.
    pub max_joins_per_connection: usize,
    /// On shutdown, how long a member has to take its room's events up to the close point before
    /// it is cut. [`crate::services::app::build`] keeps it within the server's shutdown grace.
    pub shutdown_drain: Duration,
    /// Rooms shared with every node of the same Redis (`--redis`); `None`: rooms live in this
    /// process.
    pub redis: Option<redis::RedisConfig>,
}

impl Default for ChatConfig {
    fn default() -> Self {
        ChatConfig {
            rooms: RoomLimits::default(),
            max_id_bytes: DEFAULT_MAX_ID_BYTES,
            max_text_bytes: DEFAULT_MAX_TEXT_BYTES,
            max_post_rate: DEFAULT_MAX_POST_RATE,
            post_burst: DEFAULT_POST_BURST,
            max_joins_per_connection: DEFAULT_MAX_JOINS_PER_CONNECTION,
            shutdown_drain: DEFAULT_SHUTDOWN_DRAIN,
            redis: None,
        }
    }
}

/// The chat service.
pub struct ChatService {
    config: ChatConfig,
    rooms: Arc<Rooms>,
    shutdown: ShutdownSignal,
    /// Joined calls per connection id.
    joins: Mutex<HashMap<u64, usize>>,
    /// The member keys of live `Subscribe` calls.
    member_keys: browser::MemberKeys,
    /// With `--redis`: the engine that numbers the rooms (`rooms` is then this node's copy).
    shared: Option<Arc<redis::Engine>>,
}

/// The fully-qualified service name.
pub const SERVICE_NAME: &str = crate::protocol::CHAT_SERVICE;

impl Service for ChatService {
    fn name(&self) -> &'static str {
        SERVICE_NAME
    }

    fn call<'a>(&'a self, method: &'a str, call: &'a Call) -> Option<BoxFuture<'a, CallResult>> {
        match method {
            CHAT_METHOD => Some(Box::pin(self.chat(call))),
            MEMBERS_METHOD => Some(Box::pin(self.members(call))),
            SUBSCRIBE_METHOD => Some(Box::pin(self.subscribe(call))),
            POST_METHOD => Some(Box::pin(self.post_by_key(call))),
            _ => None,
        }
    }
}

impl ChatService {
    /// A chat service with these limits, ending its calls when `shutdown` fires.
    /// With `config.redis`, call it inside a Tokio runtime: the engine connects from here on.
    pub fn new(config: ChatConfig, shutdown: ShutdownSignal) -> Arc<ChatService> {
        let rooms = Rooms::new(config.rooms.clone());
        let shared = config
            .redis
            .as_ref()
            .map(|r| redis::Engine::start(r, rooms.clone(), config.rooms.clone()));
        Arc::new(ChatService {
            rooms,
            shared,
            config,
            shutdown,
            joins: Mutex::new(HashMap::new()),
            member_keys: browser::MemberKeys::default(),
        })
    }

    /// The room registry.
    pub fn rooms(&self) -> &Arc<Rooms> {
        &self.rooms
    }

    /// Reports the service's health through `health` (with `--redis`: NOT_SERVING while Redis
    /// cannot be reached).
    pub fn set_health(&self, health: crate::services::health::HealthHandle) {
        if let Some(shared) = &self.shared {
            shared.set_health(health);
        }
    }

    async fn members(&self, call: &Call) -> CallResult {
        let req: MembersRequest = call.recv_one().await?;
        // Rooms are named in NFC; any other form of the same id finds them. An id no room can
        // have names no room.
        let max = self.config.max_id_bytes;
        let member_ids = match identity::normalize("room_id", &req.room_id, max) {
            Ok(room_id) => match &self.shared {
                Some(shared) => shared.members(&room_id).await?,
                // The room's shared list, copied into the response outside the room's lock.
                None => self
                    .rooms
                    .members(&room_id)
                    .iter()
                    .map(|n| n.to_string())
                    .collect(),
            },
            Err(_) => Vec::new(),
        };
        call.send(&MembersResponse { member_ids }).await
    }

    async fn chat(&self, call: &Call) -> CallResult {
        // The join message lives only in this block: the member's task keeps what it needs, and
        // its size is per-member memory for as long as the member stays. The join's future is
        // boxed for the same reason: it is twice the size of the member's loop, and only needed
        // once.
        let mut joined = {
            let Some(first) = call.recv::<ChatMessage>().await? else {
                return Err(Status::invalid_argument(
                    "the first message must join: room_id and sender_id are required",
                ));
            };
            Box::pin(self.join(call, first)).await?
        };
        // However this ends — returned, or stopped by the server on cancel, deadline or
        // shutdown — dropping `joined` posts the leave with the reason the call's state tells.
        self.run_member(call, &mut joined.member).await
    }
}

/// The peer's address for a log line.
fn peer_text(call: &Call) -> String {
    call.info().peer().to_string()
}
