//! Several `h2chat serve --redis` nodes of one test, and what the tests ask of them: joins
//! (fresh or resuming), the events of a call, Members, and the chat service's health.

use h2chat::grpc::client::{CallOptions, Channel, ClientCall};
use h2chat::grpc::Status;
use h2chat::pb::chat::v1::{ChatMessage, EventKind, MembersRequest, MembersResponse};
use h2chat::pb::grpc::health::v1::health_check_response::ServingStatus;
use h2chat::pb::grpc::health::v1::{HealthCheckRequest, HealthCheckResponse};
use h2chat::protocol::{EPOCH_METADATA, JOINED_SEQ_METADATA};

use crate::support::chat::{self, kind};
use crate::support::process::ServerProcess;
use crate::support::{within, PATIENCE};

/// A presence TTL short enough for a test to see a dead node's members leave (seconds).
pub const TEST_TTL: &str = "1.5";

/// One node: the process and a channel to it.
pub struct Node {
    /// The `h2chat serve --redis` process.
    pub process: ServerProcess,
    /// A connection to it.
    pub ch: Channel,
}

impl Node {
    /// Starts `h2chat serve --redis URL --redis-presence-ttl TTL` with `extra` flags and waits
    /// until its chat service is SERVING (it has reached Redis).
    pub async fn start(url: &str, ttl: &str, extra: &[&str]) -> Node {
        let mut args = vec!["--redis", url, "--redis-presence-ttl", ttl];
        args.extend_from_slice(extra);
        let process = ServerProcess::start(&args).await;
        let ch = Channel::connect(process.addr)
            .await
            .expect("connect to node");
        let node = Node { process, ch };
        node.health_becomes(ServingStatus::Serving).await;
        node
    }

    /// Waits (Health/Watch, at most PATIENCE) until the chat service's health is `want`.
    pub async fn health_becomes(&self, want: ServingStatus) {
        let mut call = self
            .ch
            .start("/grpc.health.v1.Health/Watch", CallOptions::default())
            .await
            .expect("start Watch");
        call.send_last(&HealthCheckRequest {
            service: "chat.v1.ChatService".into(),
        })
        .await
        .expect("send Watch request");
        let what = format!("the node's chat health to turn {want:?}");
        within(PATIENCE, &what, async {
            loop {
                let resp: HealthCheckResponse =
                    call.recv().await.expect("Watch goes on").expect("a status");
                if resp.status == want as i32 {
                    return;
                }
            }
        })
        .await;
    }

    /// Joins `room` as `name`; the call, its epoch and its join's seq.
    pub async fn join(&self, room: &str, name: &str) -> Joined {
        self.join_with(&chat::msg(room, name, "")).await
    }

    /// Joins resuming after `after` in `epoch`.
    pub async fn resume(&self, room: &str, name: &str, epoch: &str, after: u64) -> Joined {
        self.join_with(&resume_msg(room, name, epoch, after)).await
    }

    /// Joins with `first`, which must be accepted.
    pub async fn join_with(&self, first: &ChatMessage) -> Joined {
        match self.try_join(first).await {
            Ok(joined) => joined,
            Err(status) => panic!("join {first:?} refused: {status}"),
        }
    }

    /// Joins with `first`; the status if it is refused.
    pub async fn try_join(&self, first: &ChatMessage) -> Result<Joined, Status> {
        let mut call = chat::start(&self.ch, first).await;
        let headers = within(PATIENCE, "the join's response headers", call.headers()).await?;
        let epoch = headers.get(EPOCH_METADATA).expect("chat-epoch").to_owned();
        let seq = headers
            .get(JOINED_SEQ_METADATA)
            .and_then(|v| v.parse().ok())
            .expect("chat-joined-seq");
        Ok(Joined { call, epoch, seq })
    }

    /// The room's members as this node answers.
    pub async fn members(&self, room: &str) -> Result<Vec<String>, Status> {
        let resp: MembersResponse = self
            .ch
            .unary(
                "/chat.v1.ChatService/Members",
                &MembersRequest {
                    room_id: room.into(),
                },
                CallOptions::default(),
            )
            .await?;
        Ok(resp.member_ids)
    }
}

/// A joined member.
pub struct Joined {
    /// The Chat call.
    pub call: ClientCall,
    /// Its `chat-epoch`.
    pub epoch: String,
    /// Its `chat-joined-seq`.
    pub seq: u64,
}

/// A join message resuming after `after` in `epoch`.
pub fn resume_msg(room: &str, name: &str, epoch: &str, after: u64) -> ChatMessage {
    ChatMessage {
        resume_after_seq: Some(after),
        resume_epoch: epoch.into(),
        ..chat::msg(room, name, "")
    }
}

/// The call's events up to and including the first that satisfies `last`.
pub async fn events_until(
    call: &mut ClientCall,
    last: impl Fn(&ChatMessage) -> bool,
) -> Vec<ChatMessage> {
    let mut out = Vec::new();
    loop {
        let m = chat::next(call).await;
        let done = last(&m);
        out.push(m);
        if done {
            return out;
        }
    }
}

/// Events as (kind, seq, text or sender): what two members must agree on.
pub fn summary(events: &[ChatMessage]) -> Vec<(EventKind, u64, String)> {
    events
        .iter()
        .map(|e| {
            let what = match kind(e) {
                EventKind::Message => e.text.clone(),
                _ => e.sender_id.clone(),
            };
            (kind(e), e.seq, what)
        })
        .collect()
}

/// The message events' texts, in order.
pub fn texts(events: &[ChatMessage]) -> Vec<String> {
    events
        .iter()
        .filter(|e| kind(e) == EventKind::Message)
        .map(|e| e.text.clone())
        .collect()
}
