//! Nodes come and go, the rooms stay: a killed node's members leave within the presence TTL
//! (another node sweeps them), its client resumes on another node with nothing lost or doubled,
//! and restarting every node keeps each room's history, numbering and epoch.

use std::time::Duration;

use h2chat::pb::chat::v1::{EventKind, LeaveReason};

use crate::cluster::{events_until, texts, Node, TEST_TTL};
use crate::redis_server::RedisServer;
use crate::support::chat::{self, kind, reason};
use crate::support::{within, TEST_PATIENCE};

#[tokio::test]
async fn a_killed_nodes_members_leave_in_time_and_its_clients_resume_elsewhere_losing_nothing() {
    within(TEST_PATIENCE, "the test", async {
        let redis = RedisServer::start().await;
        let a = Node::start(&redis.url(), TEST_TTL, &[]).await;
        let b = Node::start(&redis.url(), TEST_TTL, &[]).await;
        let mut carol = a.join("r", "carol").await;
        let mut dave = b.join("r", "dave").await;
        dave.call.send(&chat::post("d1")).await.expect("post");
        let seen = chat::until_text(&mut carol.call, "d1").await;
        let last_seen = seen.seq;

        // Node a dies without a word; dave keeps posting meanwhile.
        a.process.signal(libc::SIGKILL);
        let killed = tokio::time::Instant::now();
        for i in 2..=5 {
            dave.call
                .send(&chat::post(&format!("d{i}")))
                .await
                .expect("post");
        }
        // Carol's claim runs out within the TTL and one renewal period; node b sweeps it and
        // the room hears she left, disconnected.
        let left = events_until(&mut dave.call, |e| kind(e) == EventKind::Left).await;
        let left = left.last().expect("a leave");
        let waited = killed.elapsed();
        assert_eq!(left.sender_id, "carol");
        assert_eq!(reason(left), LeaveReason::Disconnected);
        let ttl = Duration::from_secs_f64(TEST_TTL.parse().unwrap());
        // The bound: TTL + a renewal period (TTL/3), and scheduling slack on a busy machine.
        assert!(
            waited < ttl * 4 / 3 + Duration::from_secs(3),
            "carol left after {waited:?}"
        );
        assert_eq!(b.members("r").await.unwrap(), vec!["dave"]);

        // Carol's client resumes on node b from the last event it had: exactly what it missed.
        let mut again = b.resume("r", "carol", &carol.epoch, last_seen).await;
        assert_eq!(again.epoch, carol.epoch, "the same history");
        let missed = events_until(&mut again.call, |e| {
            kind(e) == EventKind::Joined && e.sender_id == "carol"
        })
        .await;
        let seqs: Vec<u64> = missed.iter().map(|e| e.seq).collect();
        assert_eq!(
            seqs,
            (last_seen + 1..=again.seq).collect::<Vec<_>>(),
            "every event after {last_seen}, once, none before"
        );
        assert_eq!(texts(&missed), vec!["d2", "d3", "d4", "d5"]);
        assert!(missed
            .iter()
            .all(|e| !matches!(kind(e), EventKind::Gap | EventKind::Reset)));
    })
    .await;
}

#[tokio::test]
async fn restarting_every_node_keeps_history_numbers_and_epoch() {
    within(TEST_PATIENCE, "the test", async {
        let redis = RedisServer::start().await;
        let (epoch, last) = {
            let a = Node::start(&redis.url(), TEST_TTL, &[]).await;
            let b = Node::start(&redis.url(), TEST_TTL, &[]).await;
            let mut erin = a.join("kept", "erin").await;
            let mut frank = b.join("kept", "frank").await;
            erin.call
                .send(&chat::post("before restart"))
                .await
                .expect("post");
            let m = chat::until_text(&mut frank.call, "before restart").await;
            // Both nodes stop gracefully: their members' leaves are announced first.
            a.process.terminate().await;
            b.process.terminate().await;
            (erin.epoch, m.seq)
        };
        let a = Node::start(&redis.url(), TEST_TTL, &[]).await;
        let b = Node::start(&redis.url(), TEST_TTL, &[]).await;
        let mut erin = a.resume("kept", "erin", &epoch, last).await;
        assert_eq!(
            erin.epoch, epoch,
            "the same epoch after every node restarted"
        );
        let since = events_until(&mut erin.call, |e| {
            kind(e) == EventKind::Joined && e.sender_id == "erin"
        })
        .await;
        // Only the two leaves of the shutdown came after the post (node a stopped first), then
        // erin's join: numbering went on where it was.
        assert_eq!(
            since
                .iter()
                .map(|e| (kind(e), e.seq, e.sender_id.as_str()))
                .collect::<Vec<_>>(),
            vec![
                (EventKind::Left, last + 1, "erin"),
                (EventKind::Left, last + 2, "frank"),
                (EventKind::Joined, last + 3, "erin"),
            ]
        );
        assert_eq!(reason(&since[0]), LeaveReason::ServerShuttingDown);
        // A newcomer on the other node gets the history from before the restart.
        let mut grace = b.join("kept", "grace").await;
        assert_eq!(grace.seq, last + 4, "numbering continued");
        let history = events_until(&mut grace.call, |e| e.seq == grace.seq).await;
        assert!(texts(&history).contains(&"before restart".to_owned()));
    })
    .await;
}
