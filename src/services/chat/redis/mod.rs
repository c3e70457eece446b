//! Rooms shared by several nodes through Redis (`h2chat serve --redis URL`), after Centrifugo's
//! Redis engine: per room a stream for history, one atomic script per change (next seq, append to
//! the stream trimmed to the history bounds, publish), an epoch kept with the room so that a lost
//! history is detected, and Pub/Sub for live fan-out between nodes.
//!
//! - **One order per room.** Joins, posts and leaves go through the scripts of [`script`]: Redis
//!   gives every event its seq and encodes it once; every node receives the same frame.
//! - **Local fan-out.** A node subscribes once per room with local members (`subscriber.rs`) and
//!   appends the published events to its copy of the room (a [`Rooms`] registry whose rings its
//!   members read exactly as they read a local room) in seq order: a number past the next one
//!   is filled from the stream first, and one the stream no longer holds becomes a gap.
//! - **Presence across nodes.** A name is claimed in Redis (unique across nodes, look-alikes
//!   included); each node renews its members' claims (`presence.rs`) every third of
//!   `--redis-presence-ttl`, and any node that touches the room sweeps the claims that ran out,
//!   announcing those members' leave. So a node that dies loses its members within the TTL and
//!   one renewal period.
//! - **Posts in flight.** A member's posts are sent as they are read, several at once, and Redis
//!   takes them in the order read or not at all (`posts.rs`).
//! - **Outages.** A join, post or Members call that cannot reach Redis is UNAVAILABLE (a post is
//!   then never echoed: it has no seq); members keep their calls and receive nothing until Redis
//!   is back; the chat service's health is NOT_SERVING. When Redis answers again, the node
//!   subscribes anew, fills each copy from its stream and turns SERVING. A copy whose history
//!   is gone in Redis (another epoch) is retired: its members' calls end with UNAVAILABLE, and
//!   they resume into a RESET.
//!
//! The engine's parts: `commands.rs` runs the scripts and says what a failure means, `join.rs`
//! claims a name and admits the member into the room's local copy, which `copies.rs` makes and
//! fills from the room's stream, and `leave.rs` owes Redis the leaves until they are announced.

mod commands;
mod copies;
mod join;
mod leave;
mod posts;
mod presence;
pub mod script;
mod subscriber;
#[cfg(test)]
mod tests;

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, RedisError};
use tokio::sync::{mpsc, Semaphore};
use tracing::warn;

use crate::grpc::Status;
use crate::pb::grpc::health::v1::health_check_response::ServingStatus;
use crate::services::chat::room::{RoomLimits, Rooms};
use crate::services::health::HealthHandle;

use commands::unavailable;
pub use leave::settle;
use leave::Pending;
pub use posts::{Answer, InFlight, Post, PostFuture, DEFAULT_POSTS_IN_FLIGHT};
use script::Scripts;

/// Default time a node's claim on its members' names lasts without renewal: a node that dies
/// loses its members within it (and one renewal period, a third of it).
pub const DEFAULT_PRESENCE_TTL: Duration = Duration::from_secs(15);
/// Default longest a Redis command, a connection attempt or the subscription's connection may
/// take before it counts as failed (`--redis-timeout-ms`).
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_secs(2);
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

/// A local member's claim in Redis.
#[derive(Clone, Debug)]
struct Claim {
    epoch: Arc<str>,
    token: String,
    /// Posts numbered under this claim (see [`posts`]).
    posted: u64,
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

    /// The members of a shared room over every node, in join order.
    pub async fn members(&self, room_id: &str) -> Result<Vec<String>, Status> {
        self.run(&self.scripts.members, room_id, &[])
            .await
            .map_err(|e| unavailable(&e))
    }

    fn me(&self) -> Arc<Engine> {
        // The engine lives as long as its registry, which outlives every member.
        match self.me.upgrade() {
            Some(me) => me,
            None => unreachable!("the engine is dropped only with the process"),
        }
    }
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
