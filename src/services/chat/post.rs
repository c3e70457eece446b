//! A member's posts: checked (one call is one room; the text's length), posted in the room here or
//! through Redis, and the post rate (a token bucket per member).

use std::time::Duration;

use tokio::time::Instant;

use super::{redis, stats, ChatService};
use crate::grpc::status::{quote, MAX_QUOTED_BYTES};
use crate::grpc::{CallResult, Status};
use crate::pb::chat::v1::ChatMessage;
use crate::services::chat::room::{Member, Posted, Poster};

impl ChatService {
    /// Posts what the member sent: in a local room at once (what it did), through Redis by
    /// adding it to `in_flight` (`None`: its answer comes from there).
    pub(super) fn post(
        &self,
        member: &mut Member,
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
    pub(super) async fn post_text(&self, poster: &Poster, text: &str) -> Result<Posted, Status> {
        match &self.shared {
            // Boxed (by the engine): a Redis round trip's future is large, and every member's
            // handler would otherwise hold room for it while it waits for a post.
            Some(shared) => shared.post_one(poster, text).await,
            None => Ok(poster.post(text)),
        }
    }

    pub(super) fn check_text(&self, text: &str) -> CallResult {
        if text.len() > self.config.max_text_bytes {
            return Err(Status::invalid_argument(format!(
                "text is {} bytes; the limit is {} (max-text-bytes)",
                text.len(),
                self.config.max_text_bytes
            )));
        }
        Ok(())
    }
}

/// A token bucket: `rate` tokens per second, at most `burst` saved up.
pub(super) struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    pub(super) fn new(rate: f64, burst: f64) -> TokenBucket {
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
    pub(super) fn wait(&mut self) -> Option<Duration> {
        if self.rate <= 0.0 {
            return None;
        }
        self.refill();
        // Saturates instead of panicking for absurd configured rates.
        (self.tokens < 1.0).then(|| {
            Duration::try_from_secs_f64((1.0 - self.tokens) / self.rate).unwrap_or(Duration::MAX)
        })
    }

    pub(super) fn take(&mut self) {
        if self.rate > 0.0 {
            self.tokens -= 1.0;
        }
    }
}
