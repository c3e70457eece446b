//! A member's posts through Redis, several on their way at once.
//!
//! A post is one script call, a round trip to Redis. Were each awaited before the member's next
//! post is read, one member could post no faster than one round trip at a time, and every post
//! would reach the rooms' other members alone (one write each) however fast its sender sends.
//! So a member's posts are sent as they are read, up to [`MAX_POSTS_IN_FLIGHT`] unanswered, and
//! their answers are taken in order ([`InFlight`]).
//!
//! Order is Redis's to keep, not the connection's: the node numbers each member's posts as it
//! reads them (from 1 per claim), and the post script takes a post only if it carries the next
//! number. So what Redis accepted of one call is always its first posts, in order: a post after
//! one that did not get there is refused (UNAVAILABLE, never echoed), never put before it. The
//! first refusal ends the member's call, as any post that cannot reach Redis does.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::stream::FuturesOrdered;
use futures_util::StreamExt;

use super::{lock, Engine};
use crate::grpc::Status;
use crate::services::chat::room::Posted;

/// Posts one member may have sent to Redis and not had answered. Past it the member's stream is
/// not read until the oldest is answered (its client's window fills, and it waits).
pub const MAX_POSTS_IN_FLIGHT: usize = 32;

/// One post on its way: its answer from Redis.
pub type PostFuture = Pin<Box<dyn Future<Output = Result<Posted, Status>> + Send>>;

/// A member's posts sent and not answered yet, oldest first. Empty, it holds nothing (the queue
/// is made on the first post), so members that never post cost no more.
#[derive(Default)]
pub struct InFlight(Option<Box<FuturesOrdered<PostFuture>>>);

impl InFlight {
    /// Whether no post is waiting for its answer.
    pub fn is_empty(&self) -> bool {
        self.0.as_ref().is_none_or(|q| q.is_empty())
    }

    /// Whether [`MAX_POSTS_IN_FLIGHT`] posts are waiting: read no more until one is answered.
    pub fn is_full(&self) -> bool {
        self.0
            .as_ref()
            .is_some_and(|q| q.len() >= MAX_POSTS_IN_FLIGHT)
    }

    /// Adds a post (it is sent when next polled: posts go out in the order they are pushed).
    pub fn push(&mut self, post: PostFuture) {
        self.0.get_or_insert_with(Box::default).push_back(post);
    }

    /// The oldest post's answer; pending while there is none.
    pub async fn next(&mut self) -> Result<Posted, Status> {
        match self.0.as_mut() {
            Some(q) => match q.next().await {
                Some(answer) => answer,
                None => std::future::pending().await,
            },
            None => std::future::pending().await,
        }
    }
}

impl Engine {
    /// Posts `text` as `name` in the shared room (the member's copy is in `epoch`; `closed_at`
    /// is its close point if the room closed for shutdown). The post is numbered now, so posts
    /// made one after the other are taken by Redis in that order or not at all; the future
    /// sends it and owns all it needs.
    ///
    /// Errors: UNAVAILABLE when Redis cannot be reached (the text is not posted), when an earlier
    /// post of the member did not get there (neither is this one), when the room's history is
    /// gone (the copy is retired), or when the member's claim ran out (its call is cut): the
    /// client joins again.
    pub fn post(
        self: &Arc<Self>,
        room_id: &str,
        name: &str,
        epoch: &str,
        closed_at: Option<u64>,
        text: &str,
    ) -> PostFuture {
        if let Some(at) = closed_at {
            return Box::pin(std::future::ready(Ok(Posted::Closed(at))));
        }
        let numbered = lock(&self.claims)
            .get_mut(&(room_id.to_owned(), name.to_owned()))
            .map(|claim| {
                claim.posted += 1;
                (claim.token.clone(), claim.posted)
            });
        let Some((token, number)) = numbered else {
            return Box::pin(std::future::ready(Err(Status::unavailable(
                "this member's place in the room was lost; join again",
            ))));
        };
        let engine = self.clone();
        let (room_id, name, epoch, text) = (
            room_id.to_owned(),
            name.to_owned(),
            epoch.to_owned(),
            text.to_owned(),
        );
        Box::pin(async move {
            engine
                .send_post(&room_id, &name, &epoch, &token, number, &text)
                .await
        })
    }

    async fn send_post(
        &self,
        room_id: &str,
        name: &str,
        epoch: &str,
        token: &str,
        number: u64,
        text: &str,
    ) -> Result<Posted, Status> {
        let number = number.to_string();
        let reply: Vec<String> = self
            .run(
                &self.scripts.post,
                room_id,
                &[
                    epoch.as_bytes(),
                    name.as_bytes(),
                    token.as_bytes(),
                    text.as_bytes(),
                    number.as_bytes(),
                ],
            )
            .await
            .map_err(|e| {
                Status::unavailable(format!(
                    "the post did not reach Redis and was not posted: {e}"
                ))
            })?;
        match reply.as_slice() {
            [ok, seq] if ok == "ok" => Ok(Posted::At(seq.parse().unwrap_or(0))),
            [what] if what == "reset" => {
                self.rooms.retire_shared(room_id, epoch);
                Err(Status::unavailable(format!(
                    "room {room_id}'s history was lost in Redis; the post was not posted; \
                     join again (resume to get a reset)"
                )))
            }
            [what, _] if what == "order" => {
                // The member's later posts would be refused too: its call ends (the claim stays
                // until the leave, which its end announces), and its client joins again.
                let status = Status::unavailable(
                    "an earlier post of this member did not reach Redis, so this one was not \
                     posted either; join again",
                );
                if let Some(copy) = self.rooms.shared_room(room_id) {
                    copy.cut_member(name, status.clone());
                }
                Err(status)
            }
            _ => {
                self.lose(room_id, name);
                Err(Status::unavailable(
                    "this member's place in the room ran out (its server did not renew it in \
                     time); the post was not posted; join again",
                ))
            }
        }
    }
}
