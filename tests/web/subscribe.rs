//! `Subscribe` + `Post`: a member without a request stream, and posts that only its key allows.

use h2chat::grpc::client::{CallOptions, Channel};
use h2chat::grpc::metadata::Metadata;
use h2chat::grpc::Code;
use h2chat::pb::chat::v1::{EventKind, PostRequest, PostResponse, SubscribeRequest};

use crate::support::chat::{join, next_where, post};
use crate::support::{within, TestServer, TEST_PATIENCE};

const SUBSCRIBE: &str = "/chat.v1.ChatService/Subscribe";
const POST: &str = "/chat.v1.ChatService/Post";

fn with_key(key: &str) -> CallOptions {
    let mut metadata = Metadata::new();
    metadata.insert("chat-member-key", key).expect("ascii key");
    CallOptions {
        metadata,
        ..CallOptions::default()
    }
}

fn post_request(room: &str, text: &str) -> PostRequest {
    PostRequest {
        room_id: room.into(),
        text: text.into(),
    }
}

#[tokio::test]
async fn a_subscriber_sees_the_room_and_posts_with_its_key_only() {
    within(TEST_PATIENCE, "the test", async {
        let server = TestServer::default().await;
        let ch = Channel::connect(server.addr).await.expect("connect");
        let mut sub = ch
            .start(SUBSCRIBE, CallOptions::default())
            .await
            .expect("start");
        let req = SubscribeRequest {
            room_id: "web".into(),
            sender_id: "ana".into(),
            ..SubscribeRequest::default()
        };
        sub.send_last(&req).await.expect("subscribe");
        let headers = sub.headers().await.expect("joined");
        let key = headers
            .get("chat-member-key")
            .expect("member key")
            .to_owned();
        assert_eq!(key.len(), 32);
        assert!(headers.get("chat-joined-seq").is_some());

        // A Chat member in the same room: each sees the other's posts.
        let mut bob = join(&ch, "web", "bob").await;
        bob.send(&post("hi ana")).await.expect("post");
        let got = next_where(&mut sub, |m| m.kind == EventKind::Message as i32).await;
        assert_eq!(
            (got.sender_id.as_str(), got.text.as_str()),
            ("bob", "hi ana")
        );
        let reply: PostResponse = ch
            .unary(POST, &post_request("web", "hi bob"), with_key(&key))
            .await
            .expect("post by key");
        let seen = next_where(&mut bob, |m| m.text == "hi bob").await;
        assert_eq!((seen.sender_id.as_str(), seen.seq), ("ana", reply.seq));

        // Without the key, with a wrong one, or into another room: refused.
        let no_key = ch
            .unary::<_, PostResponse>(POST, &post_request("web", "x"), CallOptions::default())
            .await
            .expect_err("no key");
        assert_eq!(no_key.code(), Code::Unauthenticated);
        let wrong = ch
            .unary::<_, PostResponse>(POST, &post_request("web", "x"), with_key("00"))
            .await
            .expect_err("wrong key");
        assert_eq!(wrong.code(), Code::Unauthenticated);
        let other_room = ch
            .unary::<_, PostResponse>(POST, &post_request("elsewhere", "x"), with_key(&key))
            .await
            .expect_err("other room");
        assert_eq!(other_room.code(), Code::InvalidArgument);

        // Once the subscriber leaves, its key is dead.
        sub.cancel();
        let left = next_where(&mut bob, |m| m.kind == EventKind::Left as i32).await;
        assert_eq!(left.sender_id, "ana");
        let stale = ch
            .unary::<_, PostResponse>(POST, &post_request("web", "x"), with_key(&key))
            .await
            .expect_err("stale key");
        assert_eq!(stale.code(), Code::Unauthenticated);
        server.shutdown().await;
    })
    .await
}
