//! The Redis engine's bounds, each a flag that takes effect: `--redis-timeout-ms` (how long a
//! command may go unanswered), `--redis-posts-in-flight` (a member's posts sent and unanswered)
//! and `--redis-scripts-in-flight` (a node's scripts sent and unanswered).
//!
//! Redis is paused with SIGSTOP: its connections stay up and take commands, which get no answer
//! until SIGCONT. A node's commands share one connection, so Redis then runs them in the order
//! the node sent them. The in-flight bounds are counted, not timed: the first post's timeout ends
//! the member's call, which fixes what the node sent (posts not sent by then never are); once
//! Redis goes on it runs what it was sent — a post given up on by its node is still taken, as
//! any command Redis received — and then the member's leave, which the node sent after them. So
//! the posts another member sees before that leave are exactly those the node sent.

use std::time::{Duration, Instant};

use h2chat::grpc::Code;
use h2chat::pb::chat::v1::EventKind;
use h2chat::pb::grpc::health::v1::health_check_response::ServingStatus;

use crate::cluster::{events_until, texts, Joined, Node};
use crate::redis_server::RedisServer;
use crate::support::chat::{self, kind};
use crate::support::{within, TEST_PATIENCE};

/// A presence TTL no renewal falls within a test (seconds; renewed every third): a renewal's
/// script would take room among the scripts in flight.
const LONG_TTL: &str = "300";

#[tokio::test]
async fn with_redis_paused_a_post_is_unavailable_within_the_redis_timeout() {
    within(TEST_PATIENCE, "the test", async {
        let redis = RedisServer::start().await;
        let a = Node::start(&redis.url(), LONG_TTL, &["--redis-timeout-ms", "200"]).await;
        let mut ivy = a.join("slow", "ivy").await;
        ivy.call.send(&chat::post("before")).await.expect("post");
        chat::until_text(&mut ivy.call, "before").await;

        let paused = redis.pause().await;
        let sent = Instant::now();
        ivy.call
            .send(&chat::post("unanswered"))
            .await
            .expect("send");
        // 200 ms, and room for a busy core; the default 2 s would miss this bound.
        let status = within(
            Duration::from_millis(1500),
            "the post's UNAVAILABLE within 1.5 s (--redis-timeout-ms 200)",
            chat::final_status(&mut ivy.call),
        )
        .await;
        assert_eq!(status.code(), Code::Unavailable, "{status}");
        assert!(
            sent.elapsed() >= Duration::from_millis(200),
            "not before the timeout"
        );
        a.health_becomes(ServingStatus::NotServing).await;

        paused.resume();
        a.health_becomes(ServingStatus::Serving).await;
        let mut back = a.join("slow", "ivy2").await;
        back.call.send(&chat::post("after")).await.expect("post");
        chat::until_text(&mut back.call, "after").await;
    })
    .await;
}

#[tokio::test]
async fn a_member_has_at_most_redis_posts_in_flight_posts_sent_to_redis() {
    within(TEST_PATIENCE, "the test", async {
        let redis = RedisServer::start().await;
        let flags = ["--max-post-rate", "0", "--redis-posts-in-flight", "3"];
        let a = Node::start(&redis.url(), LONG_TTL, &flags).await;
        let sent = posts_taken_while_paused(&redis, &a, "p", 10).await;
        assert_eq!(
            sent,
            ["p0", "p1", "p2"],
            "the node read 3 of the member's 10 posts (the default would be all 10)"
        );
    })
    .await;
}

#[tokio::test]
async fn a_node_has_at_most_redis_scripts_in_flight_scripts_sent_to_redis() {
    within(TEST_PATIENCE, "the test", async {
        let redis = RedisServer::start().await;
        // The member's 8 posts are all read (32 in flight); the node sends one script at a time.
        let flags = ["--max-post-rate", "0", "--redis-scripts-in-flight", "1"];
        let a = Node::start(&redis.url(), LONG_TTL, &flags).await;
        let sent = posts_taken_while_paused(&redis, &a, "s", 8).await;
        assert_eq!(
            sent,
            ["s0"],
            "the node sent 1 of the member's 8 posts (the default would be all 8)"
        );
    })
    .await;
}

/// Joins a poster and a watcher to one room on `node`, pauses Redis, has the poster send `n`
/// posts (`{prefix}0`…) and waits for the first to time out (which ends the poster's call and
/// fixes what was sent), lets Redis go on, and returns the texts the watcher sees before the
/// poster's leave: the posts the node had sent to Redis.
async fn posts_taken_while_paused(
    redis: &RedisServer,
    node: &Node,
    prefix: &str,
    n: usize,
) -> Vec<String> {
    let room = format!("{prefix}-room");
    let mut poster: Joined = node.join(&room, "poster").await;
    let mut watcher = node.join(&room, "watcher").await;
    poster.call.send(&chat::post("ready")).await.expect("post");
    chat::until_text(&mut watcher.call, "ready").await;

    let paused = redis.pause().await;
    for i in 0..n {
        poster
            .call
            .send(&chat::post(&format!("{prefix}{i}")))
            .await
            .expect("post");
    }
    let status = chat::final_status(&mut poster.call).await;
    assert_eq!(status.code(), Code::Unavailable, "{status}");
    paused.resume();

    let seen = events_until(&mut watcher.call, |e| {
        kind(e) == EventKind::Left && e.sender_id == "poster"
    })
    .await;
    texts(&seen)
}
