//! When Redis loses the rooms or goes away: a flushed room is a new epoch and resuming clients
//! get RESET; while Redis is down posts are UNAVAILABLE and never echoed, joins are refused and
//! health is NOT_SERVING, members keep their calls; once it is back the nodes subscribe again,
//! fill from the streams, and nothing that was echoed is lost. A node whose subscription Redis
//! cuts (its output buffer limit) recovers from the streams too.

use h2chat::grpc::Code;
use h2chat::pb::chat::v1::EventKind;
use h2chat::pb::grpc::health::v1::health_check_response::ServingStatus;

use crate::cluster::{events_until, texts, Node, TEST_TTL};
use crate::redis_server::RedisServer;
use crate::support::chat::{self, kind};
use crate::support::{within, TEST_PATIENCE};

#[tokio::test]
async fn a_flushed_room_is_a_new_epoch_and_resuming_clients_get_reset() {
    within(TEST_PATIENCE, "the test", async {
        let redis = RedisServer::start().await;
        let a = Node::start(&redis.url(), TEST_TTL, &[]).await;
        let b = Node::start(&redis.url(), TEST_TTL, &[]).await;
        let mut hal = a.join("f", "hal").await;
        hal.call
            .send(&chat::post("old history"))
            .await
            .expect("post");
        let last = chat::until_text(&mut hal.call, "old history").await.seq;

        let _: String = redis.cmd(&["FLUSHALL"]).await;
        // The node learns at its next renewal that the room's history is gone: hal's call ends
        // so that his client resumes.
        let status = chat::final_status(&mut hal.call).await;
        assert_eq!(status.code(), Code::Unavailable, "{status}");

        let mut back = b.resume("f", "hal", &hal.epoch, last).await;
        assert_ne!(back.epoch, hal.epoch, "a new epoch for the new history");
        let first = chat::next(&mut back.call).await;
        assert_eq!(kind(&first), EventKind::Reset);
        assert_eq!(first.epoch, back.epoch);
        let join = chat::next(&mut back.call).await;
        assert_eq!(
            (kind(&join), join.seq),
            (EventKind::Joined, 1),
            "counted from 1 again"
        );
    })
    .await;
}

#[tokio::test]
async fn while_redis_is_down_posts_are_unavailable_and_after_it_returns_nothing_echoed_is_lost() {
    within(TEST_PATIENCE, "the test", async {
        let mut redis = RedisServer::start().await;
        // A TTL longer than the outage: members are not swept for Redis's absence.
        let a = Node::start(&redis.url(), "30", &[]).await;
        let b = Node::start(&redis.url(), "30", &[]).await;
        let mut ivy = a.join("o", "ivy").await;
        let mut jack = b.join("o", "jack").await;
        ivy.call.send(&chat::post("echoed")).await.expect("post");
        let echoed = chat::until_text(&mut ivy.call, "echoed").await.seq;
        chat::until_text(&mut jack.call, "echoed").await;

        redis.stop_saving().await;
        a.health_becomes(ServingStatus::NotServing).await;
        b.health_becomes(ServingStatus::NotServing).await;
        // A post that cannot reach Redis is refused, and its call ends so that its client
        // resumes; a join is refused; jack, who does not post, keeps his call.
        ivy.call
            .send(&chat::post("never posted"))
            .await
            .expect("send");
        let status = chat::final_status(&mut ivy.call).await;
        assert_eq!(status.code(), Code::Unavailable, "{status}");
        let refused = b.try_join(&chat::msg("o", "kim", "")).await;
        assert_eq!(refused.err().map(|s| s.code()), Some(Code::Unavailable));

        redis.start_again().await;
        a.health_becomes(ServingStatus::Serving).await;
        b.health_becomes(ServingStatus::Serving).await;
        // Node a announces ivy's leave once Redis is back; jack's call, which lived through the
        // outage, hears it right after what he had: no refused post, no gap, nothing twice.
        let seen = events_until(&mut jack.call, |e| {
            kind(e) == EventKind::Left && e.sender_id == "ivy"
        })
        .await;
        let left = seen.last().expect("ivy's leave").seq;
        assert!(
            !texts(&seen).contains(&"never posted".to_owned()),
            "{seen:?}"
        );
        let seqs: Vec<u64> = seen.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (echoed + 1..=left).collect::<Vec<_>>());
        // Ivy resumes on the other node: the history survived, and she gets what she missed.
        let mut ivy2 = b.resume("o", "ivy", &ivy.epoch, echoed).await;
        assert_eq!(ivy2.epoch, ivy.epoch, "the history survived the outage");
        let missed = events_until(&mut ivy2.call, |e| {
            kind(e) == EventKind::Joined && e.sender_id == "ivy"
        })
        .await;
        let seqs: Vec<u64> = missed.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (echoed + 1..=ivy2.seq).collect::<Vec<_>>());
        assert!(
            texts(&missed).is_empty(),
            "nothing was posted meanwhile: {missed:?}"
        );
        ivy2.call.send(&chat::post("after")).await.expect("post");
        let after = chat::until_text(&mut jack.call, "after").await;
        assert_eq!(after.seq, ivy2.seq + 1);
    })
    .await;
}

#[tokio::test]
async fn a_node_whose_subscription_redis_cuts_recovers_from_the_streams() {
    within(TEST_PATIENCE, "the test", async {
        let redis = RedisServer::start().await;
        // Texts larger than Redis's 16 KiB static reply buffer, which the limit does not count.
        let big_texts = ["--max-text-bytes", "65536"];
        let mut a = Node::start(&redis.url(), TEST_TTL, &big_texts).await;
        let mut b = Node::start(&redis.url(), TEST_TTL, &big_texts).await;
        let mut lea = a.join("cut", "lea").await;
        let mut max = b.join("cut", "max").await;
        // Redis cuts any subscriber whose output buffer passes 1 KiB at once.
        let _: String = redis
            .cmd(&[
                "CONFIG",
                "SET",
                "client-output-buffer-limit",
                "pubsub 1024 0 0",
            ])
            .await;
        let big = "x".repeat(32 << 10);
        max.call.send(&chat::post(&big)).await.expect("post");
        max.call.send(&chat::post("small")).await.expect("post");
        let mine = events_until(&mut max.call, |e| e.text == "small").await;
        let theirs = events_until(&mut lea.call, |e| e.text == "small").await;
        // It was cut, and came back: each node says so.
        for node in [&mut a, &mut b] {
            node.process
                .expect_log("its subscription restored", |l| {
                    l.contains("subscription restored")
                })
                .await;
        }
        let tail = |evs: &[h2chat::pb::chat::v1::ChatMessage]| {
            evs.iter()
                .filter(|e| e.seq > max.seq)
                .map(|e| (e.seq, e.text.len()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            tail(&mine),
            tail(&theirs),
            "both nodes got both posts, once, in order"
        );
        assert_eq!(tail(&mine).len(), 2);
        assert!(theirs.iter().all(|e| kind(e) != EventKind::Gap));
    })
    .await;
}
