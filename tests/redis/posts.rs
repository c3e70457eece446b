//! A member's posts through Redis, several in flight at once: every node sees them in the order
//! the member sent them, and Redis refuses a post that does not carry its member's next number
//! (so a post after one that failed is never put before it).

use h2chat::services::chat::redis::script::{keys, Scripts};

use crate::cluster::{summary, texts, Node, TEST_TTL};
use crate::redis_server::RedisServer;
use crate::support::chat;
use crate::support::{within, TEST_PATIENCE};

/// Posts sent back to back, without waiting for any echo: more than one member may have in flight.
const BURST: usize = 300;

#[tokio::test]
async fn a_burst_of_posts_sent_without_waiting_is_taken_in_order_on_every_node() {
    within(TEST_PATIENCE, "the test", async {
        let redis = RedisServer::start().await;
        let unlimited = ["--max-post-rate", "0"];
        let a = Node::start(&redis.url(), TEST_TTL, &unlimited).await;
        let b = Node::start(&redis.url(), TEST_TTL, &unlimited).await;
        let mut alice = a.join("burst", "alice").await;
        let mut bob = b.join("burst", "bob").await;

        // Twice: each time Redis has no post script (a fresh Redis, then SCRIPT FLUSH, as after a
        // restart), so the first posts in flight all find none and are sent again in turn.
        let mut seen = [Vec::new(), Vec::new()];
        for round in 0..2 {
            if round == 1 {
                let _: String = redis.cmd(&["SCRIPT", "FLUSH"]).await;
            }
            for i in round * BURST..(round + 1) * BURST {
                alice
                    .call
                    .send(&chat::post(&format!("p{i}")))
                    .await
                    .expect("post");
            }
            let last = format!("p{}", (round + 1) * BURST - 1);
            for (call, seen) in [&mut alice.call, &mut bob.call].into_iter().zip(&mut seen) {
                while !texts(seen).contains(&last) {
                    seen.push(chat::next(call).await);
                }
            }
        }
        let want: Vec<String> = (0..2 * BURST).map(|i| format!("p{i}")).collect();
        assert_eq!(
            texts(&seen[0]),
            want,
            "alice's echoes, in the order she sent"
        );
        // Bob joined after alice: his view starts with her join (recent history) and his own.
        let on_b = summary(&seen[1]);
        assert_eq!(on_b, summary(&seen[0]), "the same events on both nodes");
        let seqs: Vec<u64> = on_b.iter().map(|e| e.1).collect();
        assert_eq!(seqs, (1..=2 + 2 * BURST as u64).collect::<Vec<_>>());
    })
    .await;
}

#[tokio::test]
async fn a_post_out_of_its_members_order_is_refused_by_redis_and_not_posted() {
    within(TEST_PATIENCE, "the test", async {
        let redis = RedisServer::start().await;
        let a = Node::start(&redis.url(), TEST_TTL, &[]).await;
        let mut alice = a.join("order", "alice").await;
        alice.call.send(&chat::post("one")).await.expect("post");
        let echo = chat::next_where(&mut alice.call, |e| e.text == "one").await;
        assert_eq!(echo.seq, 2);

        // The post script as the node runs it, for alice's claim, with a number past her next
        // (2): as if her second post had not reached Redis and her third had.
        let [meta, stream, names, skels, order, alive, posts, pending] = keys("order");
        let held: String = redis.cmd(&["HGET", &names, "alice"]).await;
        let token = held.split(' ').next().expect("TOKEN SKELETON").to_owned();
        let script = Scripts::new().post;
        let reply: Vec<String> = redis
            .cmd(&[
                "EVALSHA",
                script.get_hash(),
                "8",
                &meta,
                &stream,
                &names,
                &skels,
                &order,
                &alive,
                &posts,
                &pending,
                "order",
                "h2chat:room:order",
                "1000",
                "1048576",
                "100",
                "2000",
                "10000000",
                &alice.epoch,
                "alice",
                &token,
                "three",
                "3",
            ])
            .await;
        assert_eq!(
            reply,
            vec!["order", "1"],
            "refused: Redis has her first post only"
        );
        let seq: String = redis.cmd(&["HGET", &meta, "seq"]).await;
        assert_eq!(seq, "2", "nothing was numbered for the refused post");

        // Her own next post, numbered 2 by her node, is taken.
        alice.call.send(&chat::post("two")).await.expect("post");
        let echo = chat::next_where(&mut alice.call, |e| e.text == "two").await;
        assert_eq!(echo.seq, 3);
    })
    .await;
}
