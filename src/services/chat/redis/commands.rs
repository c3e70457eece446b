//! Scripts run on the node's command connection: each with the room's keys and the common
//! arguments, loaded into Redis again when it lost them (NOSCRIPT), no more in flight than
//! `--redis-scripts-in-flight`; and what a failed command means to a caller (UNAVAILABLE, and
//! whether Redis counts as down).

use std::time::Duration;

use redis::RedisError;
use tracing::warn;

use super::{script, Engine};
use crate::grpc::Status;

impl Engine {
    /// Runs `script` on room `room` with `args` after the common ones (loading it into Redis
    /// first if Redis does not have it, as after a restart).
    pub(super) async fn run<T: redis::FromRedisValue>(
        &self,
        script: &redis::Script,
        room: &str,
        args: &[&[u8]],
    ) -> Result<T, RedisError> {
        self.run_script(script, room, args, Missing::Load).await
    }

    /// [`run`](Self::run), and what to do if Redis does not have the script.
    pub(super) async fn run_script<T: redis::FromRedisValue>(
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
}

/// What [`Engine::run_script`] does when Redis does not have the script.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Missing {
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
pub(super) fn is_no_script(e: &RedisError) -> bool {
    e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
}

/// Whether `e` says Redis could not be reached (as opposed to Redis answering with an error).
fn is_unreachable(e: &RedisError) -> bool {
    e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal()
}

/// UNAVAILABLE for a command that failed.
pub(super) fn unavailable(e: &RedisError) -> Status {
    if is_unreachable(e) {
        unreachable()
    } else {
        warn!(error = %e, "redis: a script failed");
        Status::unavailable(format!("Redis refused the chat's script: {e}"))
    }
}

/// UNAVAILABLE while Redis cannot be reached.
pub(super) fn unreachable() -> Status {
    Status::unavailable("chat is unavailable: this server cannot reach Redis; try again")
}
