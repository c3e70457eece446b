//! A member's posts through Redis, several on their way at once.
//!
//! A post is one script call, a round trip to Redis. Were each awaited before the member's next
//! post is read, one member could post no faster than one round trip at a time, and every post
//! would reach the rooms' other members alone (one write each) however fast its sender sends.
//! So a member's posts are sent as they are read, up to `--redis-posts-in-flight` unanswered
//! ([`DEFAULT_POSTS_IN_FLIGHT`]), and their answers are taken in order ([`InFlight`]).
//!
//! Order is Redis's to keep, not the connection's: the node numbers each member's posts as it
//! reads them (from 1 per claim), and the post script takes a post only if it carries the next
//! number. So what Redis accepted of one call is always its first posts, in order: a post is
//! never put before an earlier one. A post Redis did not take in its turn — it found no script
//! (Redis restarted, and the script is loaded by whichever post comes first), or it arrived
//! before an earlier post that had to be sent again — is sent again once every earlier post is
//! accepted, and then it is next. Any other failure ends the member's call, as a post that
//! cannot reach Redis always has: UNAVAILABLE, and that post and the ones after it are not
//! posted (never echoed).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::stream::FuturesOrdered;
use futures_util::StreamExt;

use super::commands::{is_no_script, Missing};
use super::{lock, Engine};
use crate::grpc::Status;
use crate::services::chat::room::{Posted, Poster};

/// Default posts one member may have sent to Redis and not had answered
/// (`--redis-posts-in-flight`). Past it the member's stream is not read until the oldest is
/// answered (its client's window fills, and it waits).
pub const DEFAULT_POSTS_IN_FLIGHT: usize = 32;

/// One post on its way: its answer from Redis.
pub type PostFuture = Pin<Box<dyn Future<Output = Answer> + Send>>;

/// What Redis said to a post.
pub enum Answer {
    /// Posted (or refused for shutdown), or failed: the member's call ends.
    Done(Result<Posted, Status>),
    /// Not taken in its turn (no script, or an earlier post not there yet): sent again once
    /// every earlier post is accepted.
    Again(Box<Post>),
}

/// A numbered post, kept until Redis took it.
pub struct Post {
    engine: Arc<Engine>,
    room_id: String,
    name: String,
    epoch: String,
    token: String,
    number: u64,
    text: String,
}

/// A member's posts sent and not answered yet, oldest first. Empty, it holds nothing (the queue
/// is made on the first post), so members that never post cost no more.
#[derive(Default)]
pub struct InFlight(Option<Box<FuturesOrdered<PostFuture>>>);

impl InFlight {
    /// Whether no post is waiting for its answer.
    pub fn is_empty(&self) -> bool {
        self.0.as_ref().is_none_or(|q| q.is_empty())
    }

    /// Whether `limit` posts (the engine's [`Engine::posts_in_flight`]) are waiting: read no
    /// more until one is answered.
    pub fn is_full(&self, limit: usize) -> bool {
        self.0.as_ref().is_some_and(|q| q.len() >= limit)
    }

    /// Adds a post (it is sent when next polled: posts go out in the order they are pushed).
    pub fn push(&mut self, post: PostFuture) {
        self.0.get_or_insert_with(Box::default).push_back(post);
    }

    /// The oldest post's answer; pending while there is none. A post to send again goes first,
    /// alone in its turn: every post before it is accepted. (A poll function, not an `async
    /// fn`: every member's handler holds this wait, so it holds one reference and nothing else.)
    pub fn answer(&mut self) -> impl Future<Output = Result<Posted, Status>> + '_ {
        std::future::poll_fn(|cx| self.poll_next(cx))
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Result<Posted, Status>> {
        let Some(q) = self.0.as_mut() else {
            return Poll::Pending;
        };
        loop {
            match q.poll_next_unpin(cx) {
                Poll::Ready(Some(Answer::Done(answer))) => return Poll::Ready(answer),
                Poll::Ready(Some(Answer::Again(post))) => {
                    q.push_front(Box::pin(post.send(Missing::Load)))
                }
                // Empty: the member's loop waits on it only while a post is in flight.
                Poll::Ready(None) | Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl Engine {
    /// Posts one member may have sent to Redis and not had answered (`--redis-posts-in-flight`,
    /// at least 1): past it the member's [`InFlight`] is full.
    pub fn posts_in_flight(&self) -> usize {
        self.posts_in_flight
    }

    /// Posts `text` as the member `poster` posts as, for a caller with one post at a time.
    /// Errors as [`Engine::post`]'s.
    pub async fn post_one(self: &Arc<Self>, poster: &Poster, text: &str) -> Result<Posted, Status> {
        let mut one = InFlight::default();
        one.push(self.post(poster, text));
        one.answer().await
    }

    /// Numbers a post of `text` as the member `poster` posts as (in its copy's epoch, unless its
    /// room closed for shutdown) and returns its sending, for an [`InFlight`]: posts numbered
    /// one after the other are taken by Redis in that order or not at all.
    ///
    /// Errors (in the answer): UNAVAILABLE when Redis cannot be reached (the text is not
    /// posted), when an earlier post of the member did not get there (neither did this one),
    /// when the room's history is gone (the copy is retired), or when the member's claim ran
    /// out (its call is cut): the client joins again.
    pub fn post(self: &Arc<Self>, poster: &Poster, text: &str) -> PostFuture {
        let (room_id, name, epoch) = (poster.room_id(), poster.name(), poster.epoch());
        if let Some(at) = poster.closed_at() {
            return Box::pin(std::future::ready(Answer::Done(Ok(Posted::Closed(at)))));
        }
        let numbered = lock(&self.claims)
            .get_mut(&(room_id.to_owned(), name.to_owned()))
            .map(|claim| {
                claim.posted += 1;
                (claim.token.clone(), claim.posted)
            });
        let Some((token, number)) = numbered else {
            return Box::pin(std::future::ready(Answer::Done(Err(Status::unavailable(
                "this member's place in the room was lost; join again",
            )))));
        };
        let post = Post {
            engine: self.clone(),
            room_id: room_id.to_owned(),
            name: name.to_owned(),
            epoch: epoch.to_owned(),
            token,
            number,
            text: text.to_owned(),
        };
        Box::pin(Box::new(post).send(Missing::Answer))
    }
}

impl Post {
    /// Sends the post; `missing` says whether a missing script is loaded here (a post sent again,
    /// in its turn) or answered (a post in flight behind others: sent again in its turn).
    async fn send(self: Box<Post>, missing: Missing) -> Answer {
        let first = missing == Missing::Answer;
        let number = self.number.to_string();
        let engine = &self.engine;
        let reply: Result<Vec<String>, _> = engine
            .run_script(
                &engine.scripts.post,
                &self.room_id,
                &[
                    self.epoch.as_bytes(),
                    self.name.as_bytes(),
                    self.token.as_bytes(),
                    self.text.as_bytes(),
                    number.as_bytes(),
                ],
                missing,
            )
            .await;
        let reply = match reply {
            Ok(reply) => reply,
            Err(e) if first && is_no_script(&e) => return Answer::Again(self),
            Err(e) => {
                return Answer::Done(Err(Status::unavailable(format!(
                    "the post did not reach Redis and was not posted: {e}"
                ))))
            }
        };
        let (room_id, name) = (self.room_id.as_str(), self.name.as_str());
        Answer::Done(match reply.as_slice() {
            [ok, seq] if ok == "ok" => Ok(Posted::At(seq.parse().unwrap_or(0))),
            [what] if what == "reset" => {
                engine.rooms.retire_shared(room_id, &self.epoch);
                Err(Status::unavailable(format!(
                    "room {room_id}'s history was lost in Redis; the post was not posted; \
                     join again (resume to get a reset)"
                )))
            }
            // Ahead of an earlier post that was sent again: its turn comes after it.
            [what, _] if what == "order" && first => return Answer::Again(self),
            [what, _] if what == "order" => {
                // The member's later posts would be refused too: its call ends (the claim stays
                // until the leave, which its end announces), and its client joins again.
                let status = Status::unavailable(
                    "an earlier post of this member did not reach Redis, so this one was not \
                     posted either; join again",
                );
                if let Some(copy) = engine.rooms.shared_room(room_id) {
                    copy.cut_member(name, status.clone());
                }
                Err(status)
            }
            _ => {
                engine.lose(room_id, name);
                Err(Status::unavailable(
                    "this member's place in the room ran out (its server did not renew it in \
                     time); the post was not posted; join again",
                ))
            }
        })
    }
}
