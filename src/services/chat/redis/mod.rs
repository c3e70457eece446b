//! Rooms shared by several nodes through Redis (`h2chat serve --redis URL`), after Centrifugo's
//! Redis engine: per room a stream for history, one atomic script per change (next seq, append to
//! the stream trimmed to the history bounds, publish), an epoch kept with the room so that a lost
//! history is detected, and Pub/Sub for live fan-out between nodes.
//!
//! - **One order per room.** Joins, posts and leaves go through the scripts of [`script`]: Redis
//!   gives every event its seq and encodes it once; every node receives the same frame.
//! - **Local fan-out.** A node subscribes once per room with local members ([`subscriber`]) and
//!   appends the published events to its copy of the room (a [`Rooms`] registry whose rings its
//!   members read exactly as they read a local room) in seq order: a number past the next one
//!   is filled from the stream first, and one the stream no longer holds becomes a gap.
//! - **Presence across nodes.** A name is claimed in Redis (unique across nodes, look-alikes
//!   included); each node renews its members' claims ([`presence`]) every third of
//!   `--redis-presence-ttl`, and any node that touches the room sweeps the claims that ran out,
//!   announcing those members' leave. So a node that dies loses its members within the TTL and
//!   one renewal period.
//! - **Posts in flight.** A member's posts are sent as they are read, several at once, and Redis
//!   takes them in the order read or not at all ([`posts`]).
//! - **Outages.** A join, post or Members call that cannot reach Redis is UNAVAILABLE (a post is
//!   then never echoed: it has no seq); members keep their calls and receive nothing until Redis
//!   is back; the chat service's health is NOT_SERVING. When Redis answers again, the node
//!   subscribes anew, fills each copy from its stream and turns SERVING. A copy whose history
//!   is gone in Redis (another epoch) is retired: its members' calls end with UNAVAILABLE, and
//!   they resume into a RESET.

mod posts;
mod presence;
pub mod script;
mod subscriber;

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, RedisError};
use tokio::sync::{mpsc, Notify, Semaphore};
use tracing::{debug, warn};

use crate::grpc::Status;
use crate::pb::chat::v1::LeaveReason;
use crate::pb::grpc::health::v1::health_check_response::ServingStatus;
use crate::services::chat::identity;
use crate::services::chat::room::{Member, Room, RoomLimits, Rooms, SharedRooms, StartAt};
use crate::services::health::HealthHandle;

pub use posts::{Answer, InFlight, Post, PostFuture, DEFAULT_POSTS_IN_FLIGHT};
use script::Scripts;

/// Default time a node's claim on its members' names lasts without renewal: a node that dies
/// loses its members within it (and one renewal period, a third of it).
pub const DEFAULT_PRESENCE_TTL: Duration = Duration::from_secs(15);
/// Default longest a Redis command, a connection attempt or the subscription's connection may
/// take before it counts as failed (`--redis-timeout-ms`).
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_secs(2);
/// Times a join makes a new local copy of its room when the last one was emptied meanwhile.
const ADMIT_TRIES: usize = 3;
/// Default scripts one node may have sent to Redis and not had answered
/// (`--redis-scripts-in-flight`); more wait in the node, in order. Without a bound a burst of
/// joins (tens of thousands of members connecting at once) queues in Redis, where each waits
/// against the Redis timeout and a slow answer counts as Redis down.
pub const DEFAULT_SCRIPTS_IN_FLIGHT: usize = 128;

/// Where the shared rooms live, how long presence lasts, and how much a node asks of Redis at
/// once.
#[derive(Clone, Debug)]
pub struct RedisConfig {
    /// The Redis server (`redis://HOST:PORT[/DB]` or `rediss://` for TLS).
    pub client: Client,
    /// How long a node's claim on its members' names lasts without renewal.
    pub presence_ttl: Duration,
    /// Longest a command, a connection attempt or the subscription's connection may take before
    /// it counts as failed (a post then is UNAVAILABLE). Default [`DEFAULT_REDIS_TIMEOUT`].
    pub timeout: Duration,
    /// Posts one member may have sent to Redis and not had answered; past it its stream is not
    /// read. At least 1 (0 is taken as 1). Default [`DEFAULT_POSTS_IN_FLIGHT`].
    pub posts_in_flight: usize,
    /// Scripts the node may have sent to Redis and not had answered; more wait in the node, in
    /// order. At least 1 (0 is taken as 1). Default [`DEFAULT_SCRIPTS_IN_FLIGHT`].
    pub scripts_in_flight: usize,
}

impl RedisConfig {
    /// The configuration for `url`, with the default timeout and bounds in flight; an error
    /// naming what is wrong with it.
    pub fn new(url: &str, presence_ttl: Duration) -> Result<RedisConfig, String> {
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            return Err(format!(
                "{url:?} is not a Redis URL: redis://HOST:PORT[/DB] or rediss://HOST:PORT[/DB]"
            ));
        }
        let client = Client::open(url).map_err(|e| format!("{url:?}: {e}"))?;
        Ok(RedisConfig {
            client,
            presence_ttl,
            timeout: DEFAULT_REDIS_TIMEOUT,
            posts_in_flight: DEFAULT_POSTS_IN_FLIGHT,
            scripts_in_flight: DEFAULT_SCRIPTS_IN_FLIGHT,
        })
    }
}

/// Leaves not yet announced in Redis, across engines: shutdown waits for them ([`settle`]).
static UNSETTLED: AtomicUsize = AtomicUsize::new(0);
static SETTLED: Notify = Notify::const_new();

/// Waits, at most `within`, until every leave this process owes Redis is announced (or given up
/// to the presence TTL): a node shutting down says its members left instead of letting their
/// claims run out.
pub async fn settle(within: Duration) {
    let _ = tokio::time::timeout(within, async {
        loop {
            let notified = SETTLED.notified();
            if UNSETTLED.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    })
    .await;
}

/// A local member's claim in Redis.
#[derive(Clone, Debug)]
struct Claim {
    epoch: Arc<str>,
    token: String,
    /// Posts numbered under this claim (see [`posts`]).
    posted: u64,
}

/// A leave that has not reached Redis yet.
#[derive(Clone, Debug)]
struct Pending {
    epoch: Arc<str>,
    token: String,
    reason: LeaveReason,
}

type MemberKey = (String, String);

/// The node's side of the shared rooms.
pub struct Engine {
    me: Weak<Engine>,
    rooms: Arc<Rooms>,
    limits: RoomLimits,
    client: Client,
    commands: ConnectionManager,
    scripts: Scripts,
    ttl: Duration,
    /// [`RedisConfig::timeout`].
    timeout: Duration,
    /// [`RedisConfig::posts_in_flight`].
    posts_in_flight: usize,
    /// This process's name in claim tokens.
    node: String,
    tokens: AtomicU64,
    /// Local members' claims by (room, name).
    claims: Mutex<HashMap<MemberKey, Claim>>,
    /// Leaves that did not reach Redis yet, by (room, name).
    pending: Mutex<HashMap<MemberKey, Pending>>,
    /// Rooms with a join under way (they keep their subscription).
    joining: Mutex<HashMap<String, usize>>,
    /// Rooms whose pending presence batch this node will look at when it falls due.
    flushing: Mutex<HashSet<String>>,
    requests: mpsc::UnboundedSender<subscriber::Request>,
    /// Whether the last command reached Redis.
    commands_up: AtomicBool,
    /// Whether the subscription is connected and every copy filled since.
    pubsub_up: AtomicBool,
    /// Room for scripts in flight ([`RedisConfig::scripts_in_flight`]).
    scripts_in_flight: Semaphore,
    health: OnceLock<HealthHandle>,
    health_lock: Mutex<Option<ServingStatus>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Engine {
    /// Starts the engine over `rooms` (which becomes the node's copy of the shared rooms): its
    /// subscription and its renewal task. Call inside a Tokio runtime.
    pub fn start(config: &RedisConfig, rooms: Arc<Rooms>, limits: RoomLimits) -> Arc<Engine> {
        let manager_config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(config.timeout))
            .set_connection_timeout(Some(config.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let commands =
            match ConnectionManager::new_lazy_with_config(config.client.clone(), manager_config) {
                Ok(c) => c,
                // Only a configuration redis-rs refuses; ours is fixed above.
                Err(e) => unreachable_config(e),
            };
        let (requests, rx) = mpsc::unbounded_channel();
        let engine = Arc::new_cyclic(|me| Engine {
            me: me.clone(),
            rooms: rooms.clone(),
            limits,
            client: config.client.clone(),
            commands,
            scripts: Scripts::new(),
            ttl: config.presence_ttl,
            timeout: config.timeout,
            posts_in_flight: config.posts_in_flight.max(1),
            node: node_name(),
            tokens: AtomicU64::new(1),
            claims: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            joining: Mutex::new(HashMap::new()),
            flushing: Mutex::new(HashSet::new()),
            requests,
            commands_up: AtomicBool::new(false),
            pubsub_up: AtomicBool::new(false),
            scripts_in_flight: Semaphore::new(config.scripts_in_flight.max(1)),
            health: OnceLock::new(),
            health_lock: Mutex::new(None),
        });
        rooms.set_shared(engine.clone());
        tokio::spawn(subscriber::run(engine.clone(), rx));
        tokio::spawn(presence::run(engine.clone()));
        engine
    }

    /// Reports the chat service's health through `health` from now on.
    pub fn set_health(&self, health: HealthHandle) {
        let _ = self.health.set(health);
        self.refresh_health();
    }

    /// Whether Redis answers and the subscription is whole.
    pub fn is_up(&self) -> bool {
        self.commands_up.load(Ordering::Acquire) && self.pubsub_up.load(Ordering::Acquire)
    }

    fn refresh_health(&self) {
        let Some(health) = self.health.get() else {
            return;
        };
        let status = if self.is_up() {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        let mut last = lock(&self.health_lock);
        if *last != Some(status) {
            *last = Some(status);
            if status == ServingStatus::Serving {
                tracing::info!("redis: reached, subscribed and filled; chat is serving");
            }
            health.set_status(crate::services::chat::SERVICE_NAME, status);
        }
    }

    fn commands_ok(&self, ok: bool) {
        if self.commands_up.swap(ok, Ordering::AcqRel) != ok {
            if ok {
                tracing::info!("redis: commands reach Redis again");
            } else {
                warn!("redis: a command did not reach Redis; chat is unavailable until it does");
            }
            self.refresh_health();
        }
    }

    fn pubsub_ok(&self, ok: bool) {
        if self.pubsub_up.swap(ok, Ordering::AcqRel) != ok {
            self.refresh_health();
        }
    }

    /// Runs `script` on room `room` with `args` after the common ones (loading it into Redis
    /// first if Redis does not have it, as after a restart).
    async fn run<T: redis::FromRedisValue>(
        &self,
        script: &redis::Script,
        room: &str,
        args: &[&[u8]],
    ) -> Result<T, RedisError> {
        self.run_script(script, room, args, Missing::Load).await
    }

    /// [`run`](Self::run), and what to do if Redis does not have the script.
    async fn run_script<T: redis::FromRedisValue>(
        &self,
        script: &redis::Script,
        room: &str,
        args: &[&[u8]],
        missing: Missing,
    ) -> Result<T, RedisError> {
        let keys = script::keys(room);
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(script.get_hash()).arg(keys.len()).arg(&keys);
        let presence = &self.limits.presence;
        cmd.arg(room)
            .arg(script::channel(room))
            .arg(self.limits.history_events)
            .arg(self.limits.history_bytes)
            .arg(presence.batch_above)
            .arg(micros(presence.interval_per_member))
            .arg(micros(presence.max_interval));
        for arg in args {
            cmd.arg(*arg);
        }
        // Never closed; waiters are served in order (a member's posts stay in theirs).
        let _permit = self.scripts_in_flight.acquire().await.ok();
        let mut con = self.commands.clone();
        let mut reply = cmd.query_async(&mut con).await;
        if missing == Missing::Load && reply.as_ref().err().is_some_and(is_no_script) {
            reply = match script.load_async(&mut con).await {
                Ok(_) => cmd.query_async(&mut con).await,
                Err(e) => Err(e),
            };
        }
        // A script's own error is Redis answering; only a failure to reach it counts as down.
        self.commands_ok(reply.as_ref().err().is_none_or(|e| !is_unreachable(e)));
        reply
    }

    /// Joins `name` to the shared room `room_id` (both normalized by the service).
    ///
    /// Errors: as [`Rooms::join`]'s, with the name unique across every node; UNAVAILABLE when
    /// Redis cannot be reached.
    pub async fn join(&self, room_id: &str, name: &str, start: StartAt) -> Result<Member, Status> {
        if !self.is_up() {
            return Err(unreachable());
        }
        let _joining = Joining::new(self, room_id);
        // A leave of this name that did not reach Redis goes first: its claim is this node's.
        let owed = lock(&self.pending).remove(&(room_id.to_owned(), name.to_owned()));
        if let Some(owed) = owed {
            self.announce_leave(room_id, name, &owed).await?;
        }
        self.subscribe(room_id).await?;
        let token = format!(
            "{}:{}",
            self.node,
            self.tokens.fetch_add(1, Ordering::Relaxed)
        );
        let (resume_epoch, resume_after) = match &start {
            StartAt::Resume { epoch, after } => {
                (epoch.clone().unwrap_or_default(), after.to_string())
            }
            StartAt::RecentHistory => (String::new(), String::new()),
        };
        let candidate = crate::services::chat::room::fresh_epoch();
        let skeleton = identity::skeleton(name);
        let ttl_ms = self.ttl.as_millis().to_string();
        let reply: Vec<String> = self
            .run(
                &self.scripts.join,
                room_id,
                &[
                    candidate.as_bytes(),
                    name.as_bytes(),
                    skeleton.as_bytes(),
                    token.as_bytes(),
                    resume_epoch.as_bytes(),
                    resume_after.as_bytes(),
                    ttl_ms.as_bytes(),
                ],
            )
            .await
            .map_err(|e| unavailable(&e))?;
        let (epoch, joined_seq, first_live) = match reply.as_slice() {
            [ok, epoch, seq, first, wait] if ok == "ok" => {
                self.flush_later(room_id, wait);
                (
                    epoch.clone(),
                    seq.parse::<u64>().unwrap_or(0),
                    first.parse::<u64>().unwrap_or(0),
                )
            }
            [what, who] if what == "exists" => {
                return Err(Status::already_exists(format!(
                    "{who} is already in room {room_id}"
                )))
            }
            [what, like] if what == "like" => {
                return Err(Status::already_exists(format!(
                    "{name:?} looks like {like:?}, who is already in room {room_id}"
                )))
            }
            [what, last] if what == "range" => {
                return Err(Status::out_of_range(format!(
                    "resume_after_seq {resume_after} is past the last event of room {room_id} \
                     in epoch {resume_epoch} (seq {last}); resume after a number this room has \
                     sent"
                )))
            }
            _ => return Err(Status::internal("unexpected reply from the join script")),
        };
        let epoch: Arc<str> = Arc::from(epoch);
        let claim = Claim {
            epoch: epoch.clone(),
            token,
            posted: 0,
        };
        match self
            .admit(room_id, name, &epoch, (joined_seq, first_live), start)
            .await
        {
            Ok(member) => {
                lock(&self.claims).insert((room_id.to_owned(), name.to_owned()), claim);
                Ok(member)
            }
            Err(status) => {
                // Joined in Redis, not here: say it left at once.
                self.owe_leave(room_id, name, claim, LeaveReason::CallFailed);
                Err(status)
            }
        }
    }

    /// The local copy of the room in `epoch` (made and filled from the stream if needed), and
    /// the member in it.
    async fn admit(
        &self,
        room_id: &str,
        name: &str,
        epoch: &Arc<str>,
        seqs: (u64, u64),
        start: StartAt,
    ) -> Result<Member, Status> {
        // A copy can be removed between its making and the admission (its last local member
        // left): then another is made.
        for _ in 0..ADMIT_TRIES {
            let copy = self.copy_of(room_id, epoch).await?;
            match self.rooms.admit_shared(&copy, name, seqs, start.clone()) {
                Err(status) if status.code() == crate::grpc::Code::Aborted => continue,
                admitted => return admitted,
            }
        }
        Err(Status::unavailable(format!(
            "room {room_id} kept being emptied on this server during the join; join again"
        )))
    }

    /// The local copy of the room in `epoch`, made and filled from the stream if there is none.
    async fn copy_of(&self, room_id: &str, epoch: &Arc<str>) -> Result<Arc<Room>, Status> {
        Ok(match self.rooms.shared_room(room_id) {
            Some(copy) if copy.epoch() == &**epoch => copy,
            _ => {
                let (read_epoch, first, frames) = self.read(room_id, 1).await?;
                if read_epoch.as_deref() != Some(&**epoch) {
                    return Err(Status::unavailable(format!(
                        "room {room_id}'s history changed in Redis during the join; join again"
                    )));
                }
                let copy = self.rooms.open_shared(room_id, epoch, first, frames)?;
                // Events published between the read and the copy's registration were dropped by
                // the subscription: one more read after it closes that window.
                self.backfill(&copy).await?;
                copy
            }
        })
    }

    /// The room's retained events from `from` on: its epoch (`None`: no history in Redis), the
    /// first event's number and the frames.
    async fn read(
        &self,
        room_id: &str,
        from: u64,
    ) -> Result<(Option<String>, u64, Vec<Bytes>), Status> {
        let from_text = from.to_string();
        let reply: Vec<Vec<u8>> = self
            .run(&self.scripts.read, room_id, &[from_text.as_bytes()])
            .await
            .map_err(|e| unavailable(&e))?;
        let mut items = reply.into_iter();
        let Some(epoch) = items.next() else {
            return Ok((None, from, Vec::new()));
        };
        let epoch = String::from_utf8_lossy(&epoch).into_owned();
        let mut first = None;
        let mut frames = Vec::new();
        while let (Some(seq), Some(frame)) = (items.next(), items.next()) {
            let seq = std::str::from_utf8(&seq)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0);
            first.get_or_insert(seq);
            frames.push(Bytes::from(frame));
        }
        Ok((Some(epoch), first.unwrap_or(from), frames))
    }

    /// Fills `copy` from its stream, from its next number on; retires it if its history is gone.
    async fn backfill(&self, copy: &Arc<Room>) -> Result<(), Status> {
        let (epoch, first, frames) = self.read(copy.id(), copy.next_seq()).await?;
        if epoch.as_deref() != Some(copy.epoch()) {
            debug!(
                room = copy.id(),
                "redis: the room's history is gone; retiring the copy"
            );
            self.rooms.retire_shared(copy.id(), copy.epoch());
            return Ok(());
        }
        copy.fill(first, frames);
        Ok(())
    }

    /// Subscribes to the room's channel (if the node is not already), waiting for Redis to
    /// confirm it.
    async fn subscribe(&self, room_id: &str) -> Result<(), Status> {
        let (ack, done) = tokio::sync::oneshot::channel();
        let _ = self
            .requests
            .send(subscriber::Request::Subscribe(room_id.to_owned(), ack));
        match tokio::time::timeout(self.timeout, done).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(unavailable(&e)),
            _ => Err(unreachable()),
        }
    }

    /// The members of a shared room over every node, in join order.
    pub async fn members(&self, room_id: &str) -> Result<Vec<String>, Status> {
        self.run(&self.scripts.members, room_id, &[])
            .await
            .map_err(|e| unavailable(&e))
    }

    /// The local member's claim is gone in Redis: its call ends, so its client joins again.
    fn lose(&self, room_id: &str, name: &str) {
        lock(&self.claims).remove(&(room_id.to_owned(), name.to_owned()));
        if let Some(copy) = self.rooms.shared_room(room_id) {
            copy.cut_member(
                name,
                Status::unavailable(
                    "this member's place in the room ran out (its server did not renew it in \
                     time); join again",
                ),
            );
        }
    }

    /// Records a leave Redis must hear of and announces it in the background, retrying until it
    /// is announced, a join of the same name takes it over, or the claim has run out anyway.
    fn owe_leave(&self, room_id: &str, name: &str, claim: Claim, reason: LeaveReason) {
        let key = (room_id.to_owned(), name.to_owned());
        let owed = Pending {
            epoch: claim.epoch,
            token: claim.token,
            reason,
        };
        lock(&self.pending).insert(key.clone(), owed.clone());
        UNSETTLED.fetch_add(1, Ordering::AcqRel);
        let engine = self.me();
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            let mut wait = Duration::from_millis(50);
            loop {
                let still = lock(&engine.pending)
                    .get(&key)
                    .is_some_and(|p| p.token == owed.token);
                if !still || started.elapsed() > engine.ttl {
                    break;
                }
                if engine.announce_leave(&key.0, &key.1, &owed).await.is_ok() {
                    break;
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(1));
            }
            let mut pending = lock(&engine.pending);
            if pending.get(&key).is_some_and(|p| p.token == owed.token) {
                pending.remove(&key);
            }
            drop(pending);
            if UNSETTLED.fetch_sub(1, Ordering::AcqRel) == 1 {
                SETTLED.notify_waiters();
            }
        });
    }

    async fn announce_leave(
        &self,
        room_id: &str,
        name: &str,
        owed: &Pending,
    ) -> Result<(), Status> {
        let reason = (owed.reason as i32).to_string();
        let reply: Vec<String> = self
            .run(
                &self.scripts.leave,
                room_id,
                &[
                    owed.epoch.as_bytes(),
                    name.as_bytes(),
                    owed.token.as_bytes(),
                    reason.as_bytes(),
                ],
            )
            .await
            .map_err(|e| unavailable(&e))?;
        if let [ok, wait] = reply.as_slice() {
            if ok == "ok" {
                self.flush_later(room_id, wait);
            }
        }
        Ok(())
    }

    /// Looks at the room's pending presence batch again when it falls due, `wait` ms from now
    /// as a script said (`-1`: nothing pending), unless this node already will. A batch no node
    /// looks at (its node died) is numbered by the next change, post or renewal of the room.
    fn flush_later(&self, room_id: &str, wait: &str) {
        let Ok(wait) = wait.parse::<u64>() else {
            return;
        };
        if !lock(&self.flushing).insert(room_id.to_owned()) {
            return;
        }
        let engine = self.me();
        let room = room_id.to_owned();
        tokio::spawn(async move {
            let mut wait = wait;
            loop {
                tokio::time::sleep(Duration::from_millis(wait)).await;
                let reply: Result<Vec<String>, _> =
                    engine.run(&engine.scripts.flush, &room, &[]).await;
                match reply
                    .as_deref()
                    .map(|r| r.first().map(|w| w.parse::<u64>()))
                {
                    Ok(Some(Ok(next))) => wait = next,
                    Err(e) => {
                        debug!(room, error = %e, "redis: presence flush failed");
                        break;
                    }
                    // -1: nothing pending.
                    Ok(_) => break,
                }
            }
            lock(&engine.flushing).remove(&room);
        });
    }

    fn me(&self) -> Arc<Engine> {
        // The engine lives as long as its registry, which outlives every member.
        match self.me.upgrade() {
            Some(me) => me,
            None => unreachable!("the engine is dropped only with the process"),
        }
    }
}

impl SharedRooms for Engine {
    fn left(&self, room_id: &str, epoch: &str, name: &str, reason: LeaveReason) {
        let key = (room_id.to_owned(), name.to_owned());
        let claim = lock(&self.claims).remove(&key);
        match claim {
            // The member's claim is in the copy's epoch; one of an older copy is gone anyway.
            Some(claim) if &*claim.epoch == epoch => self.owe_leave(room_id, name, claim, reason),
            _ => {}
        }
    }
}

/// Counts a join under way in its room, so that the room keeps its subscription meanwhile.
struct Joining<'a> {
    engine: &'a Engine,
    room: String,
}

impl<'a> Joining<'a> {
    fn new(engine: &'a Engine, room: &str) -> Joining<'a> {
        *lock(&engine.joining).entry(room.to_owned()).or_insert(0) += 1;
        Joining {
            engine,
            room: room.to_owned(),
        }
    }
}

impl Drop for Joining<'_> {
    fn drop(&mut self) {
        let mut joining = lock(&self.engine.joining);
        if let Some(n) = joining.get_mut(&self.room) {
            *n -= 1;
            if *n == 0 {
                joining.remove(&self.room);
            }
        }
    }
}

/// What [`Engine::run_script`] does when Redis does not have the script.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Missing {
    /// Loads it and runs it again.
    Load,
    /// Answers the error (NOSCRIPT): a post in flight is sent again only in its turn.
    Answer,
}

/// `d` in whole microseconds, as the scripts take the presence intervals.
fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Whether `e` is Redis saying it does not have the script (NOSCRIPT).
fn is_no_script(e: &RedisError) -> bool {
    e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
}

/// Whether `e` says Redis could not be reached (as opposed to Redis answering with an error).
fn is_unreachable(e: &RedisError) -> bool {
    e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal()
}

/// UNAVAILABLE for a command that failed.
fn unavailable(e: &RedisError) -> Status {
    if is_unreachable(e) {
        unreachable()
    } else {
        warn!(error = %e, "redis: a script failed");
        Status::unavailable(format!("Redis refused the chat's script: {e}"))
    }
}

/// UNAVAILABLE while Redis cannot be reached.
fn unreachable() -> Status {
    Status::unavailable("chat is unavailable: this server cannot reach Redis; try again")
}

fn unreachable_config(e: RedisError) -> ! {
    panic!("redis: connection manager configuration refused: {e}")
}

/// A name for this process in claim tokens: 16 hex digits no other process is likely to draw.
fn node_name() -> String {
    let mut h = RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    h.write_u128(now);
    format!("{:016x}", h.finish())
}

#[cfg(test)]
mod tests {
    //! The node's copy of a shared room, without Redis: what the subscription and the joins do
    //! to it.

    use prost::Message;

    use super::*;
    use crate::grpc::codec::encode_message;
    use crate::grpc::Code;
    use crate::pb::chat::v1::{ChatMessage, EventKind};
    use crate::services::chat::room::Delivered;

    fn frame(seq: u64, text: &str) -> Bytes {
        encode_message(&ChatMessage {
            room_id: "r".into(),
            sender_id: "s".into(),
            text: text.into(),
            seq,
            ..Default::default()
        })
    }

    fn registry(history: usize) -> Arc<Rooms> {
        Rooms::new(RoomLimits {
            history_events: history,
            history_bytes: 1 << 20,
            history_on_join: 10,
            max_rooms: 4,
            max_members_per_room: 8,
            ..RoomLimits::default()
        })
    }

    fn drain(member: &mut Member) -> Vec<ChatMessage> {
        let mut out = Vec::new();
        while let Some(mut batch) = member.next_batch(usize::MAX) {
            while batch.len() >= 5 {
                let len = u32::from_be_bytes([batch[1], batch[2], batch[3], batch[4]]) as usize;
                out.push(ChatMessage::decode(&batch[5..5 + len]).unwrap());
                batch = batch.slice(5 + len..);
            }
        }
        out
    }

    #[test]
    fn a_copy_takes_events_in_seq_order_only_and_says_what_it_lacks() {
        let rooms = registry(100);
        let copy = rooms
            .open_shared("r", "e1", 3, vec![frame(3, "a"), frame(4, "b")])
            .unwrap();
        let mut m = rooms
            .admit_shared(&copy, "x", (4, 4), StartAt::RecentHistory)
            .unwrap();
        assert_eq!(copy.deliver(4, frame(4, "b")), Delivered::Held);
        assert_eq!(copy.deliver(6, frame(6, "d")), Delivered::Missing(5));
        assert_eq!(copy.deliver(5, frame(5, "c")), Delivered::Appended);
        assert_eq!(copy.deliver(6, frame(6, "d")), Delivered::Appended);
        let got: Vec<(u64, String)> = drain(&mut m).into_iter().map(|e| (e.seq, e.text)).collect();
        assert_eq!(
            got,
            vec![
                (3, "a".into()),
                (4, "b".into()),
                (5, "c".into()),
                (6, "d".into())
            ]
        );
    }

    #[test]
    fn events_the_stream_no_longer_holds_become_one_gap() {
        let rooms = registry(100);
        let copy = rooms
            .open_shared("r", "e1", 1, vec![frame(1, "a")])
            .unwrap();
        let mut m = rooms
            .admit_shared(&copy, "x", (1, 1), StartAt::RecentHistory)
            .unwrap();
        drain(&mut m);
        // The stream was trimmed past 2..=4 before this copy could read them.
        copy.fill(5, vec![frame(5, "e"), frame(6, "f")]);
        let got = drain(&mut m);
        assert_eq!(got[0].kind(), EventKind::Gap);
        assert_eq!((got[0].gap_from, got[0].gap_to), (2, 4));
        assert_eq!(
            got[1..].iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![5, 6]
        );
    }

    #[test]
    fn a_retired_copy_ends_its_members_and_a_join_into_a_removed_copy_is_aborted() {
        let rooms = registry(100);
        let copy = rooms
            .open_shared("r", "e1", 1, vec![frame(1, "a")])
            .unwrap();
        let m = rooms
            .admit_shared(&copy, "x", (1, 1), StartAt::RecentHistory)
            .unwrap();
        assert!(m.ended().is_none());
        rooms.retire_shared("r", "e1");
        assert_eq!(m.ended().map(|s| s.code()), Some(Code::Unavailable));
        assert!(rooms.shared_room("r").is_none());
        let err = rooms
            .admit_shared(&copy, "y", (2, 2), StartAt::RecentHistory)
            .err()
            .unwrap();
        assert_eq!(err.code(), Code::Aborted);
        // Another epoch's copy replaces it; a resume from the old one starts with a reset.
        let fresh = rooms
            .open_shared("r", "e2", 1, vec![frame(1, "n")])
            .unwrap();
        let start = StartAt::Resume {
            epoch: Some("e1".into()),
            after: 1,
        };
        let mut back = rooms.admit_shared(&fresh, "x2", (1, 1), start).unwrap();
        assert_eq!(drain(&mut back)[0].kind(), EventKind::Reset);
    }
}
