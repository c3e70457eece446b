//! `Subscribe` and `Post`: chat for clients that cannot stream requests (browsers, over
//! gRPC-Web). A `Subscribe` call is one member, joined as `Chat` joins and fed the same events;
//! its response headers carry a member key, a random secret, and a `Post` call that presents it
//! in `chat-member-key` posts as that member. The key lives as long as the `Subscribe` call: when
//! the member leaves, its key stops working. So nobody can post as a member whose key they were
//! not given, with or without token authentication (with it, the name is the token's as in `Chat`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tracing::debug;

use crate::grpc::{Call, CallResult, Status};
use crate::pb::chat::v1::{ChatMessage, PostRequest, PostResponse, SubscribeRequest};
use crate::protocol::MEMBER_KEY_METADATA;
use crate::services::chat::post::TokenBucket;
use crate::services::chat::room::{Posted, Poster};
use crate::services::chat::ChatService;

/// Bytes of randomness in a member key (hex-encoded in the header).
const MEMBER_KEY_BYTES: usize = 16;

/// The live member keys: key → the member it posts as, with that member's post rate.
#[derive(Default)]
pub(super) struct MemberKeys {
    keys: Mutex<HashMap<String, Arc<KeyedMember>>>,
}

struct KeyedMember {
    poster: Poster,
    bucket: Mutex<TokenBucket>,
}

impl MemberKeys {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<KeyedMember>>> {
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Removes a key when its `Subscribe` call ends, however it ends.
struct KeyGuard<'a> {
    keys: &'a MemberKeys,
    key: String,
}

impl Drop for KeyGuard<'_> {
    fn drop(&mut self) {
        self.keys.lock().remove(&self.key);
    }
}

fn new_key() -> Result<String, Status> {
    let mut bytes = [0u8; MEMBER_KEY_BYTES];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| Status::internal("no randomness for a member key"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

impl ChatService {
    /// `Subscribe`: join, hand out the member key, deliver events until the call ends.
    pub(super) async fn subscribe(&self, call: &Call) -> CallResult {
        let req: SubscribeRequest = call.recv_one().await?;
        let key = new_key()?;
        call.with_headers(|h| h.insert(MEMBER_KEY_METADATA, &key))?;
        let join = ChatMessage {
            room_id: req.room_id,
            sender_id: req.sender_id,
            resume_after_seq: req.resume_after_seq,
            resume_epoch: req.resume_epoch,
            ..ChatMessage::default()
        };
        let mut joined = self.join(call, join).await?;
        let keyed = Arc::new(KeyedMember {
            poster: joined.member.poster(),
            bucket: Mutex::new(TokenBucket::new(
                self.config.max_post_rate,
                self.config.post_burst,
            )),
        });
        self.member_keys.lock().insert(key.clone(), keyed);
        let _guard = KeyGuard {
            keys: &self.member_keys,
            key,
        };
        // The request stream has ended (one message): the member loop only delivers.
        self.run_member(call, &mut joined.member).await
    }

    /// `Post`: one text as the member the key names.
    pub(super) async fn post_by_key(&self, call: &Call) -> CallResult {
        let req: PostRequest = call.recv_one().await?;
        let key = call
            .metadata()
            .get(MEMBER_KEY_METADATA)
            .ok_or_else(|| {
                Status::unauthenticated(format!(
                    "{MEMBER_KEY_METADATA} is required: the key from a Subscribe call's headers"
                ))
            })?
            .to_owned();
        let keyed = self.member_keys.lock().get(&key).cloned();
        let Some(keyed) = keyed else {
            return Err(Status::unauthenticated(format!(
                "{MEMBER_KEY_METADATA} names no member in a room (its Subscribe call ended?)"
            )));
        };
        let poster = &keyed.poster;
        if let Some(principal) = &call.info().principal {
            if principal.name != poster.name() {
                return Err(Status::permission_denied(
                    "the member key belongs to another member than the token's",
                ));
            }
        }
        if req.room_id != poster.room_id() {
            return Err(Status::invalid_argument(format!(
                "room_id {:?} is not the member's room {:?}",
                req.room_id,
                poster.room_id()
            )));
        }
        self.check_text(&req.text)?;
        if req.text.is_empty() {
            return Err(Status::invalid_argument("text is empty"));
        }
        // While the room's readers catch up, the post waits (and so does the client's next one).
        poster.ready().await;
        {
            let mut bucket = keyed.bucket.lock().unwrap_or_else(|e| e.into_inner());
            if bucket.wait().is_some() {
                return Err(Status::resource_exhausted(format!(
                    "posting faster than max-post-rate {} per second",
                    self.config.max_post_rate
                )));
            }
            bucket.take();
        }
        let seq = match self.post_text(poster, &req.text).await? {
            Posted::At(seq) => seq,
            Posted::Closed(_) => {
                return Err(Status::unavailable(
                    "server shutting down: the room takes no more posts",
                ))
            }
        };
        debug!(room = %poster.room_id(), member = %poster.name(), seq, "posted by key");
        call.send(&PostResponse { seq }).await
    }
}
