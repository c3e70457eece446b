//! One room from two nodes: the same events with the same seq, epoch and order on both; Members
//! is the union over the nodes; a name (or a look-alike) taken on one node is ALREADY_EXISTS on
//! the other.

use h2chat::grpc::Code;
use h2chat::pb::chat::v1::EventKind;

use crate::cluster::{events_until, summary, texts, Node, TEST_TTL};
use crate::redis_server::RedisServer;
use crate::support::chat::{self, kind};
use crate::support::{within, TEST_PATIENCE};

#[tokio::test]
async fn one_room_on_two_nodes_has_one_order_members_over_both_and_unique_names() {
    within(TEST_PATIENCE, "the test", async {
        let redis = RedisServer::start().await;
        let a = Node::start(&redis.url(), TEST_TTL, &[]).await;
        let b = Node::start(&redis.url(), TEST_TTL, &[]).await;

        let mut alice = a.join("lobby", "alice").await;
        let mut bob = b.join("lobby", "bob").await;
        assert_eq!(alice.epoch, bob.epoch, "one epoch, kept in Redis");
        assert_eq!((alice.seq, bob.seq), (1, 2), "Redis numbers the joins");

        // Both post at once, from both nodes; each sees every post in one order.
        for i in 0..20 {
            alice
                .call
                .send(&chat::post(&format!("a{i}")))
                .await
                .expect("post");
            bob.call
                .send(&chat::post(&format!("b{i}")))
                .await
                .expect("post");
        }
        let both_done = |seen: &[h2chat::pb::chat::v1::ChatMessage]| {
            texts(seen)
                .iter()
                .filter(|t| *t == "a19" || *t == "b19")
                .count()
                == 2
        };
        let mut on_a = Vec::new();
        while !both_done(&on_a) {
            on_a.push(chat::next(&mut alice.call).await);
        }
        let mut on_b = Vec::new();
        while !both_done(&on_b) {
            on_b.push(chat::next(&mut bob.call).await);
        }
        // Bob got alice's join as recent history: both saw the room from its first event.
        let (sa, sb) = (summary(&on_a), summary(&on_b));
        assert_eq!(sa, sb, "the same events in the same order on both nodes");
        let seqs: Vec<u64> = sa.iter().map(|e| e.1).collect();
        assert_eq!(
            seqs,
            (1..=42).collect::<Vec<_>>(),
            "consecutive numbers from Redis"
        );
        assert_eq!(texts(&on_a).len(), 40);

        // Members: the union over both nodes, in join order, whichever node is asked.
        assert_eq!(a.members("lobby").await.unwrap(), vec!["alice", "bob"]);
        assert_eq!(b.members("lobby").await.unwrap(), vec!["alice", "bob"]);

        // A name taken on node a is taken on node b, and so is one that looks like it.
        for name in ["alice", "ALICE", "\u{0430}lice"] {
            let refused = b.try_join(&chat::msg("lobby", name, "")).await;
            let status = refused
                .err()
                .unwrap_or_else(|| panic!("{name:?} joined twice"));
            assert_eq!(status.code(), Code::AlreadyExists, "{name:?}: {status}");
        }

        // Alice leaves on node a: bob on node b sees it, and Members drops her.
        alice.call.cancel();
        let left = events_until(&mut bob.call, |e| kind(e) == EventKind::Left).await;
        let left = left.last().expect("a leave");
        assert_eq!(left.sender_id, "alice");
        assert_eq!(left.seq, 43);
        assert_eq!(b.members("lobby").await.unwrap(), vec!["bob"]);
        // Her name is free again, on either node.
        let again = b.join("lobby", "alice").await;
        assert_eq!(again.seq, 44);
    })
    .await;
}
