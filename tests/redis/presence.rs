//! Presence that scales across nodes: a shared room above `--presence-batch-above` members
//! announces joins and leaves in batches numbered by Redis (`EVENT_KIND_PRESENCE`), so a join
//! storm over several nodes costs deliveries linear in the members, not their square; every join
//! and leave is counted exactly once, and Members stays exact on every node. Counts, not timing:
//! the interval is an hour, so batches go out only when they hold their share of the room, or
//! before a post.

use h2chat::grpc::client::ClientCall;
use h2chat::pb::chat::v1::EventKind;

use crate::cluster::{Node, TEST_TTL};
use crate::redis_server::RedisServer;
use crate::support::chat::{self, kind};
use crate::support::{within, PATIENCE, TEST_PATIENCE};
use h2chat::pb::chat::v1::ChatMessage;

/// Members that join in the storm (besides the watcher).
const STORM: usize = 80;
/// Rooms above this batch presence in this test.
const BATCH_ABOVE: &str = "4";

/// What one member received before the message it waited for.
#[derive(Debug, Default)]
struct Seen {
    events: u64,
    joins: u64,
    leaves: u64,
}

/// Reads `call` until the message `until`, counting the events before it, the joins and leaves
/// they announce, and checking that their numbers follow one another (no gap, no repeat).
async fn count_until(mut call: ClientCall, until: &str) -> (ClientCall, Seen) {
    let mut seen = Seen::default();
    let mut last_seq = None;
    loop {
        let m = chat::next(&mut call).await;
        if let Some(last) = last_seq {
            let first = if kind(&m) == EventKind::Presence && m.presence_from > 0 {
                m.presence_from
            } else {
                m.seq
            };
            assert_eq!(first, last + 1, "events follow one another: {m:?}");
        }
        last_seq = Some(m.seq);
        match kind(&m) {
            EventKind::Message if m.text == until => return (call, seen),
            EventKind::Joined | EventKind::Left | EventKind::Presence => {}
            kind => panic!("no {kind:?} event in this room: {m:?}"),
        }
        let (joins, leaves) = chat::presence_counts(&m);
        seen.joins += joins;
        seen.leaves += leaves;
        seen.events += 1;
    }
}

/// Waits until both nodes' Members list `want` members.
async fn members_become(nodes: [&Node; 2], room: &str, want: usize) {
    let what = format!("Members of {room} to list {want} on both nodes");
    within(PATIENCE, &what, async {
        for node in nodes {
            loop {
                let members = node.members(room).await.expect("Members");
                if members.len() == want {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    })
    .await;
}

/// Two nodes of `redis` whose rooms above [`BATCH_ABOVE`] batch presence, with an interval no
/// test waits for: batches go out only when they hold their share of the room, or before a post.
async fn two_nodes(redis: &RedisServer) -> (Node, Node) {
    let flags = [
        "--presence-batch-above",
        BATCH_ABOVE,
        "--presence-interval-per-member",
        "3600",
        "--presence-max-interval",
        "3600",
    ];
    let a = Node::start(&redis.url(), TEST_TTL, &flags).await;
    let b = Node::start(&redis.url(), TEST_TTL, &flags).await;
    (a, b)
}

#[tokio::test]
async fn a_join_storm_over_two_nodes_is_announced_in_batches_each_change_counted_once() {
    within(TEST_PATIENCE, "the test", async {
        let redis = RedisServer::start().await;
        let (a, b) = two_nodes(&redis).await;
        let watcher = a.join("storm", "watcher").await;
        let watching = tokio::spawn(count_until(watcher.call, "done"));

        // The storm: half of the members on each node, both nodes joining at once; each member
        // counts what it receives until the watcher's "done".
        let joiners = [(&a, 0), (&b, 1)].map(|(node, parity)| {
            let ch = node.ch.clone();
            tokio::spawn(async move {
                let mut readers = Vec::new();
                for i in (parity..STORM).step_by(2) {
                    let call = chat::join(&ch, "storm", &format!("m{i:03}")).await;
                    readers.push(tokio::spawn(count_until(call, "done")));
                }
                readers
            })
        });
        let mut readers = Vec::new();
        for j in joiners {
            readers.extend(j.await.expect("joiner"));
        }
        members_become([&a, &b], "storm", STORM + 1).await;

        // A post announces the batch still pending first.
        let mut poster = a.join("storm", "poster").await;
        poster.call.send(&chat::post("done")).await.expect("post");
        let (_watcher, seen) = within(PATIENCE, "the watcher's count", watching)
            .await
            .expect("watcher");
        // Every join counted once (the watcher's own, the storm's and the poster's), in far
        // fewer events than joins: one each while the room is small, then a batch per doubling,
        // then the one before the post.
        assert_eq!(seen.joins, STORM as u64 + 2, "{seen:?}");
        assert_eq!(seen.leaves, 0, "{seen:?}");
        assert!(
            seen.events <= 16,
            "{} joins took {} events: not batched ({seen:?})",
            STORM + 2,
            seen.events
        );
        // Every member: its history on join and the batches after it, linear in the members.
        let mut total = seen.events;
        for r in readers {
            let (_call, seen) = within(PATIENCE, "a member's count", r)
                .await
                .expect("reader");
            total += seen.events;
        }
        let bound = 10 * (STORM as u64 + 1);
        assert!(
            total <= bound,
            "the storm delivered {total} events to {} members (bound {bound})",
            STORM + 1
        );
    })
    .await;
}

#[tokio::test]
async fn leaves_from_two_nodes_are_batched_counted_once_and_members_stays_exact() {
    within(TEST_PATIENCE, "the test", async {
        let redis = RedisServer::start().await;
        let (a, b) = two_nodes(&redis).await;
        let mut watcher = a.join("exodus", "watcher").await;
        let mut calls = Vec::new();
        for i in 0..40 {
            let node = if i % 2 == 0 { &a } else { &b };
            calls.push(node.join("exodus", &format!("m{i:02}")).await.call);
        }
        // Everyone is announced (the post flushes the pending batch) before anyone leaves.
        watcher
            .call
            .send(&chat::post("all in"))
            .await
            .expect("post");
        chat::until_text(&mut watcher.call, "all in").await;

        // Thirty leave, from both nodes; ten stay.
        for mut call in calls.drain(..30) {
            call.cancel();
        }
        members_become([&a, &b], "exodus", 11).await;
        let mut want: Vec<String> = (30..40).map(|i| format!("m{i:02}")).collect();
        want.insert(0, "watcher".into());
        assert_eq!(a.members("exodus").await.unwrap(), want, "join order, on a");
        assert_eq!(b.members("exodus").await.unwrap(), want, "join order, on b");

        watcher.call.send(&chat::post("done")).await.expect("post");
        let (_watcher, seen) = within(
            PATIENCE,
            "the watcher's count",
            count_until(watcher.call, "done"),
        )
        .await;
        assert_eq!((seen.joins, seen.leaves), (0, 30), "{seen:?}");
        assert!(
            seen.events <= 8,
            "30 leaves took {} events: not batched ({seen:?})",
            seen.events
        );
    })
    .await;
}

#[tokio::test]
async fn a_pending_batch_goes_out_when_its_interval_passes_with_no_post() {
    within(TEST_PATIENCE, "the test", async {
        let redis = RedisServer::start().await;
        // Renewals (a third of the TTL) come too late to be what numbers the batch: only the
        // node's own look when the interval passes can.
        let flags = [
            "--presence-batch-above",
            BATCH_ABOVE,
            "--presence-interval-per-member",
            "0.005",
            "--presence-max-interval",
            "0.2",
        ];
        let a = Node::start(&redis.url(), "120", &flags).await;
        let b = Node::start(&redis.url(), "120", &flags).await;
        let mut watcher = a.join("quiet", "watcher").await;
        let mut calls = Vec::new();
        for i in 0..12 {
            let node = if i % 2 == 0 { &a } else { &b };
            calls.push(node.join("quiet", &format!("m{i:02}")).await.call);
        }
        // The watcher's own join and twelve more, announced with nobody posting.
        let mut joins = 0;
        let mut events: Vec<ChatMessage> = Vec::new();
        within(PATIENCE, "every join to be announced", async {
            while joins < 13 {
                let m = chat::next(&mut watcher.call).await;
                assert!(
                    matches!(kind(&m), EventKind::Joined | EventKind::Presence),
                    "only joins in this room: {m:?}"
                );
                joins += chat::presence_counts(&m).0;
                events.push(m);
            }
        })
        .await;
        assert_eq!(joins, 13);
        assert!(
            events.iter().any(|m| kind(m) == EventKind::Presence),
            "the room above the threshold batched: {events:?}"
        );
    })
    .await;
}
