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
//! `Subscribe` and `Post` ([`browser`]) are the same member split in two calls, for browsers.
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
pub mod presence;
pub mod redis;
pub mod room;
pub mod stats;

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::{Instant, Sleep};
use tracing::{debug, info};

use crate::auth::Claims;
use crate::grpc::server::log_rate::LogRate;
use crate::grpc::status::{quote, MAX_QUOTED_BYTES};
use crate::grpc::{
    BoxFuture, Call, CallResult, CallState, CloseCause, Service, ShutdownSignal, Status,
};
use crate::pb::chat::v1::{ChatMessage, LeaveReason, MembersRequest, MembersResponse};
use crate::protocol::{CHAT_METHOD, MEMBERS_METHOD, POST_METHOD, SUBSCRIBE_METHOD};
pub use crate::protocol::{
    DEFAULT_MAX_ID_BYTES, DEFAULT_MAX_TEXT_BYTES, EPOCH_METADATA, JOINED_SEQ_METADATA,
    MAX_TEXT_BYTES_METADATA,
};
use crate::services::chat::room::{
    Blocker, Member, Posted, Poster, RoomLimits, Rooms, StartAt, MAX_BATCH_BYTES,
};

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

    /// Validates the join message, joins, sends the response headers and posts the join's text.
    async fn join<'a>(
        &'a self,
        call: &'a Call,
        first: ChatMessage,
    ) -> Result<Membership<'a>, Status> {
        let max = self.config.max_id_bytes;
        let room_id = identity::normalize("room_id", &first.room_id, max)?;
        // An authenticated member may leave its name out; one that gives it is held to the rules.
        let given = if !first.sender_id.is_empty() || !is_authenticated(call) {
            identity::normalize("sender_id", &first.sender_id, max)?
        } else {
            String::new()
        };
        let first = ChatMessage {
            room_id: room_id.clone(),
            sender_id: given,
            ..first
        };
        let name = identity::normalize("sender_id", &member_name(call, &first)?, max)?;
        self.check_text(&first.text)?;
        let slot = self.join_slot(call.info().connection_id)?;
        let start = match first.resume_after_seq {
            Some(after) => StartAt::Resume {
                epoch: (!first.resume_epoch.is_empty()).then_some(first.resume_epoch),
                after,
            },
            None => StartAt::RecentHistory,
        };
        let member = match &self.shared {
            Some(shared) => Box::pin(shared.join(&room_id, &name, start)).await?,
            None => self.rooms.join(&room_id, &name, start)?,
        };
        debug!(room = ?room_id, member = ?name, cursor = member.cursor(), "joined");
        // Names are a client's free text: `?` writes them quoted and escaped.
        info!(
            room = ?room_id,
            name = ?name,
            peer = %peer_text(call),
            seq = member.joined_seq(),
            epoch = member.epoch(),
            "joined"
        );
        stats::joined();
        let joined = Membership {
            member,
            call,
            shutdown: &self.shutdown,
            _slot: slot,
        };
        let joined_seq = joined.member.joined_seq().to_string();
        let max_text = self.config.max_text_bytes.to_string();
        call.with_headers(|h| {
            h.insert(JOINED_SEQ_METADATA, &joined_seq)?;
            h.insert(EPOCH_METADATA, joined.member.epoch())?;
            h.insert(MAX_TEXT_BYTES_METADATA, &max_text)
        })?;
        // Handled here, not by the server: on shutdown this call still delivers its room's last
        // events before it ends.
        call.drain_on_shutdown();
        call.send_headers()?;
        if !first.text.is_empty() {
            // A room that closed this instant: the post is refused and the loop drains.
            if let Posted::At(_) = self.post_text(&joined.member.poster(), &first.text).await? {
                stats::posted();
            }
        }
        Ok(joined)
    }

    /// The member's loop: post what the client sends, deliver what the room has; on shutdown,
    /// deliver up to the room's close point and end.
    async fn run_member(&self, call: &Call, member: &mut Member) -> CallResult {
        let mut bucket = TokenBucket::new(self.config.max_post_rate, self.config.post_burst);
        let mut inbound_open = true;
        // Set once shutdown began: the room's close point, and when the member is cut. Boxed:
        // only a draining member needs a timer.
        let mut closing: Option<(u64, Pin<Box<Sleep>>)> = None;
        // A new batch waits until h2 has written the last one out: events that arrive meanwhile
        // leave together, in one frame, and the connection's queue holds one frame per member.
        // A batch is built only within the window the client has granted: a member whose client
        // reads nothing holds its cursor and nothing else.
        call.track_writes();
        // One handle for the loop's other branches: the gate, and the member's blocked state.
        let blocker = member.blocker();
        // With --redis: posts sent to Redis and not answered yet (several at once, in order).
        let mut in_flight = redis::InFlight::default();
        loop {
            // A shared room's copy retired, or this member's place in it lost: resume elsewhere.
            if let Some(ended) = member.ended() {
                return Err(ended);
            }
            let mut window_wait = false;
            let mut progressed = false;
            if call.is_send_idle() {
                let drained = closing
                    .as_ref()
                    .is_some_and(|(at, _)| member.cursor() > *at);
                if drained {
                    // Everything up to the close point is written: the member has been offered
                    // every post that was echoed.
                    return Err(Status::unavailable("server shutting down"));
                }
                if member.has_news() {
                    match call.try_send_capacity(MAX_BATCH_BYTES)? {
                        0 => window_wait = true,
                        room => {
                            if let Some(batch) = member.next_batch(room) {
                                call.queue_frames(batch)?;
                                progressed = true;
                            }
                        }
                    }
                }
            }
            // Blocked: events are due and none can leave (queued bytes wait for window, or the
            // window is zero, or the last batch is still unwritten). The room stops waiting for a
            // member blocked too long.
            let sending = call.has_queued();
            member.set_blocked(!progressed && (sending || member.has_news()));
            let reading = inbound_open
                && closing.is_none()
                && !self
                    .shared
                    .as_ref()
                    .is_some_and(|s| in_flight.is_full(s.posts_in_flight()));
            // Past the close point nothing new matters: only the last write is awaited.
            let drained = closing
                .as_ref()
                .is_some_and(|(at, _)| member.cursor() > *at);
            // Unbiased on purpose: neither the member's own posts nor its deliveries may starve.
            let send_wait = if sending {
                SendWait::Flush
            } else if window_wait {
                SendWait::Window
            } else {
                SendWait::News { drained }
            };
            tokio::select! {
                sent = send_side(call, &blocker, member, send_wait) => sent?,
                posted = next_post(call, &mut bucket, &blocker), if reading => match posted? {
                    Some(msg) => {
                        if let Some(Posted::Closed(at)) = self.post(member, msg, &mut in_flight)? {
                            closing = Some(self.close(member, at));
                        }
                    }
                    None => inbound_open = false,
                },
                // A post's answer from Redis, oldest first; the first that failed ends the call.
                answer = in_flight.answer(), if !in_flight.is_empty() => {
                    match answer? {
                        Posted::At(_) => stats::posted(),
                        Posted::Closed(at) => {
                            if closing.is_none() {
                                closing = Some(self.close(member, at));
                            }
                        }
                    }
                }
                // A flag read, not a waiter: the server polls every handler once more right after
                // the signal fires, so this is seen then, at the cost of an atomic load per poll
                // (a waiter per member would queue thousands on one lock).
                () = shutdown_begun(&self.shutdown), if closing.is_none() => {
                    let at = member.close_room();
                    closing = Some(self.close(member, at));
                }
                () = async { cut_at(&mut closing).await }, if closing.is_some() => {
                    info!(
                        room = member.room_id(),
                        member = member.name(),
                        "shutdown: member did not take its room's last events in time; cut"
                    );
                    return Err(Status::unavailable(
                        "server shutting down; not every event up to the room's close was taken in time",
                    ));
                }
            }
        }
    }

    /// The drain state of a member whose room closed at `at`.
    fn close(&self, member: &Member, at: u64) -> (u64, Pin<Box<Sleep>>) {
        debug!(
            room = member.room_id(),
            member = member.name(),
            at,
            "room closed; draining"
        );
        (at, Box::pin(tokio::time::sleep(self.config.shutdown_drain)))
    }

    /// Posts what the member sent: in a local room at once (what it did), through Redis by
    /// adding it to `in_flight` (`None`: its answer comes from there).
    fn post(
        &self,
        member: &Member,
        msg: Box<ChatMessage>,
        in_flight: &mut redis::InFlight,
    ) -> Result<Option<Posted>, Status> {
        let same_room = || {
            unicode_normalization::UnicodeNormalization::nfc(msg.room_id.as_str())
                .eq(member.room_id().chars())
        };
        if !msg.room_id.is_empty() && !same_room() {
            return Err(Status::invalid_argument(format!(
                "room_id {} differs from the joined room {}; one call is one room",
                quote(&msg.room_id, MAX_QUOTED_BYTES),
                quote(member.room_id(), MAX_QUOTED_BYTES)
            )));
        }
        self.check_text(&msg.text)?;
        if msg.text.is_empty() {
            return Ok(Some(Posted::At(0)));
        }
        let posted = match &self.shared {
            Some(shared) => {
                in_flight.push(shared.post(&member.poster(), &msg.text));
                return Ok(None);
            }
            None => member.post(&msg.text),
        };
        if let Posted::At(_) = posted {
            stats::posted();
        }
        Ok(Some(posted))
    }

    /// Posts `text` as the member: in its room here, or with `--redis` through Redis (then
    /// UNAVAILABLE when Redis cannot be reached; the text is not posted).
    async fn post_text(&self, poster: &Poster, text: &str) -> Result<Posted, Status> {
        match &self.shared {
            // Boxed (by the engine): a Redis round trip's future is large, and every member's
            // handler would otherwise hold room for it while it waits for a post.
            Some(shared) => shared.post_one(poster, text).await,
            None => Ok(poster.post(text)),
        }
    }

    fn check_text(&self, text: &str) -> CallResult {
        if text.len() > self.config.max_text_bytes {
            return Err(Status::invalid_argument(format!(
                "text is {} bytes; the limit is {} (max-text-bytes)",
                text.len(),
                self.config.max_text_bytes
            )));
        }
        Ok(())
    }

    /// Counts a joined call against its connection's limit until the slot is dropped.
    fn join_slot(&self, connection_id: u64) -> Result<JoinSlot<'_>, Status> {
        let mut joins = self.joins.lock().unwrap_or_else(|e| e.into_inner());
        let n = joins.entry(connection_id).or_insert(0);
        if *n >= self.config.max_joins_per_connection {
            return Err(Status::resource_exhausted(format!(
                "too many joined chats on this connection (max-joins-per-connection {})",
                self.config.max_joins_per_connection
            )));
        }
        *n += 1;
        Ok(JoinSlot {
            service: self,
            connection_id,
        })
    }
}

/// Whether the call has an identity nobody else can claim: a token's, or a client certificate's.
fn is_authenticated(call: &Call) -> bool {
    call.info().principal.is_some() || call.info().peer_identity.is_some()
}

/// The name a join makes its member: with a token, its name (the `name` claim, else `sub`); else
/// with a verified client certificate, its identity; else the `sender_id` the client chose. A
/// non-empty `sender_id` that differs from an authenticated name is PERMISSION_DENIED, and so is a
/// room the token's `rooms` claim does not allow.
fn member_name(call: &Call, join: &ChatMessage) -> Result<String, Status> {
    let info = call.info();
    let (identity, claims) = match &info.principal {
        Some(p) => (Some(p.name.as_str()), p.attributes::<Claims>()),
        None => (info.peer_identity.as_deref(), None),
    };
    let Some(identity) = identity else {
        return Ok(join.sender_id.clone());
    };
    if !join.sender_id.is_empty() && join.sender_id != identity {
        return Err(Status::permission_denied(format!(
            "sender_id {:?} is not the authenticated name {identity:?}",
            join.sender_id
        )));
    }
    if claims.is_some_and(|c| !c.allows_room(&join.room_id)) {
        return Err(Status::permission_denied(format!(
            "the token does not allow room {:?}",
            join.room_id
        )));
    }
    Ok(identity.to_string())
}

/// A member and the call it belongs to; leaving happens on drop.
struct Membership<'a> {
    member: Member,
    call: &'a Call,
    shutdown: &'a ShutdownSignal,
    _slot: JoinSlot<'a>,
}

impl Drop for Membership<'_> {
    fn drop(&mut self) {
        let reason = match self.call.state() {
            _ if self.shutdown.is_shutting_down() => LeaveReason::ServerShuttingDown,
            // A cancel, or a client that closed its connection (its process ended).
            CallState::Closed(CloseCause::Reset(_) | CloseCause::ConnectionClosed) => {
                LeaveReason::Left
            }
            CallState::Closed(_) => LeaveReason::Disconnected,
            // The stream is still open: the server is ending the call, because the member's
            // loop failed (a bad post) or the call's deadline passed.
            _ => LeaveReason::CallFailed,
        };
        // The member itself is dropped right after this, which posts the leave event.
        self.member.set_leave_reason(reason);
        stats::left(reason);
        info!(
            room = ?self.member.room_id(),
            name = ?self.member.name(),
            reason = stats::reason_label(reason),
            peer = %peer_text(self.call),
            "left"
        );
    }
}

struct JoinSlot<'a> {
    service: &'a ChatService,
    connection_id: u64,
}

impl Drop for JoinSlot<'_> {
    fn drop(&mut self) {
        let mut joins = self.service.joins.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = joins.get_mut(&self.connection_id) {
            *n -= 1;
            if *n == 0 {
                joins.remove(&self.connection_id);
            }
        }
    }
}

/// Ready once shutdown has begun; registers no waker (see the member loop).
fn shutdown_begun(signal: &ShutdownSignal) -> impl std::future::Future<Output = ()> + '_ {
    std::future::poll_fn(move |_| {
        if signal.is_shutting_down() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
}

/// What the member's loop waits for on the sending side this turn: one of three, so one future
/// (the member's handler holds room for the largest of them, not for all three).
#[derive(Clone, Copy)]
enum SendWait {
    /// Queued bytes: flush them.
    Flush,
    /// Events are due but the window is zero: wait for window first, then the batch (next time
    /// round); the wait holds nothing.
    Window,
    /// Nothing queued: wait for news (unless drained), then for h2 to have written the last
    /// batch. Both waits resolve at once when already true, so dropping this one loses nothing.
    News { drained: bool },
}

/// The member's sending side for one turn of its loop (see [`SendWait`]).
async fn send_side(
    call: &Call,
    blocker: &Blocker,
    member: &mut Member,
    wait: SendWait,
) -> Result<(), Status> {
    match wait {
        SendWait::Flush => flush_or_block(call, blocker).await,
        SendWait::Window => call.send_capacity(MAX_BATCH_BYTES).await.map(drop),
        SendWait::News { drained } => {
            if !drained {
                member.changed().await;
                // News while the last batch is unwritten: blocked until h2 writes it.
                if !call.is_send_idle() {
                    blocker.set(true);
                }
            }
            call.written().await;
            Ok(())
        }
    }
}

/// Flushes the member's queued bytes; if they must wait for the client's window, the member is
/// blocked meanwhile (see [`Member::set_blocked`]).
async fn flush_or_block(call: &Call, blocker: &Blocker) -> Result<(), Status> {
    let mut flush = std::pin::pin!(call.flush());
    let mut first = true;
    std::future::poll_fn(|cx| {
        let polled = std::future::Future::poll(flush.as_mut(), cx);
        if polled.is_pending() && std::mem::take(&mut first) {
            blocker.set(true);
        }
        polled
    })
    .await
}

/// Resolves when a draining member's time is up; pending while not draining.
async fn cut_at(closing: &mut Option<(u64, Pin<Box<Sleep>>)>) {
    match closing {
        Some((_, sleep)) => sleep.as_mut().await,
        None => std::future::pending().await,
    }
}

/// The next message from the client, read only when the member may post: while the room's
/// readers catch up ([`Blocker::ready`]) or over the rate, the stream is not read, so the client's
/// HTTP/2 window fills and it slows down. Nothing is dropped.
async fn next_post(
    call: &Call,
    bucket: &mut TokenBucket,
    gate: &Blocker,
) -> Result<Option<Box<ChatMessage>>, Status> {
    gate.ready().await;
    let wait = bucket.wait();
    if let Some(wait) = wait {
        // Boxed: only a member over its rate needs a timer, and a timer is large.
        Box::pin(tokio::time::sleep(wait)).await;
    }
    let msg = call.recv::<ChatMessage>().await?;
    if msg.is_some() {
        bucket.take();
        // Counted once the post is read, not when the wait starts: this future is made anew
        // each time the member's loop wakes for something else.
        if let Some(wait) = wait {
            stats::throttled();
            if let Some(suppressed) = THROTTLE_LOG.allow() {
                info!(
                    peer = %peer_text(call),
                    ?wait,
                    suppressed,
                    "post rate limit hit: a member's post waited (max-post-rate)"
                );
            }
        }
    }
    // Boxed: a message is 264 bytes, and the member's loop would otherwise keep room for
    // several copies of it in every member's handler, read or not.
    Ok(msg.map(Box::new))
}

/// Lines saying a member hit the post rate: a few a second at most, however many members do.
static THROTTLE_LOG: LogRate = LogRate::per_second(5);

/// The peer's address for a log line.
fn peer_text(call: &Call) -> String {
    call.info().peer.map_or_else(String::new, |p| p.to_string())
}

/// A token bucket: `rate` tokens per second, at most `burst` saved up.
struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    fn new(rate: f64, burst: f64) -> TokenBucket {
        let burst = burst.max(1.0);
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            at: Instant::now(),
        }
    }

    fn refill(&mut self) {
        let now = Instant::now();
        let earned = now.duration_since(self.at).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + earned).min(self.burst);
        self.at = now;
    }

    /// How long until one token is available; `None` if one is (or the rate is unlimited).
    fn wait(&mut self) -> Option<Duration> {
        if self.rate <= 0.0 {
            return None;
        }
        self.refill();
        // Saturates instead of panicking for absurd configured rates.
        (self.tokens < 1.0).then(|| {
            Duration::try_from_secs_f64((1.0 - self.tokens) / self.rate).unwrap_or(Duration::MAX)
        })
    }

    fn take(&mut self) {
        if self.rate > 0.0 {
            self.tokens -= 1.0;
        }
    }
}
