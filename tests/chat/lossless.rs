//! Chat that loses nothing: sequence numbers, presence, history, resume, slow members, post rate.

use crate::support::chat::*;
use crate::support::process::ServerProcess;
use crate::support::TestServer;
use crate::support::{within, TEST_PATIENCE};
use h2chat::grpc::client::{Channel, ChannelConfig, ClientCall};
use h2chat::grpc::Code;
use h2chat::pb::chat::v1::{ChatMessage, EventKind, LeaveReason};
use h2chat::services::app::AppConfig;

fn unlimited_posting() -> AppConfig {
    let mut config = AppConfig::default();
    config.chat.max_post_rate = 0.0;
    config
}

/// Reads events until the message `text` arrives; returns everything read, that one included.
async fn collect_until(call: &mut ClientCall, text: &str) -> Vec<ChatMessage> {
    let mut out = Vec::new();
    loop {
        let m = next(call).await;
        let done = kind(&m) == EventKind::Message && m.text == text;
        out.push(m);
        if done {
            return out;
        }
    }
}

fn assert_consecutive(events: &[ChatMessage]) {
    for pair in events.windows(2) {
        assert_eq!(
            pair[1].seq,
            pair[0].seq + 1,
            "gap or reorder: {:?} then {:?}",
            pair[0],
            pair[1]
        );
    }
}

#[tokio::test]
async fn sequence_numbers_are_identical_and_gap_free_across_members() {
    within(
        TEST_PATIENCE,
        "the whole of test sequence_numbers_are_identical_and_gap_free_across_members",
        async {
            let server = TestServer::start(unlimited_posting()).await;
            let ch = Channel::connect(server.addr).await.expect("connect");
            // Three members post at once, from separate tasks.
            let mut posters = Vec::new();
            for n in ["a", "b", "c"] {
                let mut call = join(&ch, "seq", n).await;
                posters.push(tokio::spawn(async move {
                    for k in 0..50 {
                        call.send(&post(&format!("{n}-{k}"))).await.expect("post");
                    }
                    call.send(&post(&format!("{n}-done"))).await.expect("post");
                    until_text(&mut call, &format!("{n}-done")).await;
                    call
                }));
            }
            let mut _members = Vec::new();
            for p in posters {
                _members.push(p.await.expect("poster"));
            }
            let room_epoch = epoch(&mut _members[0]).await;
            // Observers replay the room from its start: all must agree, event for event.
            let mut seen: Vec<Vec<(u64, String, String)>> = Vec::new();
            for n in ["x", "y", "z"] {
                let mut first = msg("seq", n, "");
                first.resume_after_seq = Some(0);
                first.resume_epoch = room_epoch.clone();
                let mut call = start(&ch, &first).await;
                let mut events = Vec::new();
                let mut done = 0;
                while done < 3 {
                    let m = next(&mut call).await;
                    if kind(&m) == EventKind::Message && m.text.ends_with("-done") {
                        done += 1;
                    }
                    events.push(m);
                }
                assert_consecutive(&events);
                assert_eq!(events.first().map(|m| m.seq), Some(1));
                seen.push(
                    events
                        .iter()
                        .filter(|m| kind(m) == EventKind::Message)
                        .map(|m| (m.seq, m.sender_id.clone(), m.text.clone()))
                        .collect(),
                );
            }
            assert_eq!(seen[0].len(), 153);
            assert!(
                seen.iter().all(|s| *s == seen[0]),
                "members disagree on the room's order"
            );
        },
    )
    .await;
}

#[tokio::test]
async fn live_members_see_the_same_gap_free_sequence() {
    within(
        TEST_PATIENCE,
        "the whole of test live_members_see_the_same_gap_free_sequence",
        async {
            let server = TestServer::start(unlimited_posting()).await;
            let ch = Channel::connect(server.addr).await.expect("connect");
            let mut a = join(&ch, "live", "a").await;
            let mut b = join(&ch, "live", "b").await;
            let poster = {
                let ch = ch.clone();
                tokio::spawn(async move {
                    let mut p = join(&ch, "live", "p").await;
                    for k in 0..300 {
                        p.send(&post(&k.to_string())).await.expect("post");
                    }
                    until_text(&mut p, "299").await;
                })
            };
            let from_a = collect_until(&mut a, "299").await;
            let from_b = collect_until(&mut b, "299").await;
            poster.await.expect("poster");
            assert_consecutive(&from_a);
            assert_consecutive(&from_b);
            let tail = |v: &[ChatMessage]| -> Vec<(u64, String)> {
                v.iter()
                    .filter(|m| m.seq >= 3)
                    .map(|m| (m.seq, m.text.clone()))
                    .collect()
            };
            assert_eq!(tail(&from_a), tail(&from_b));
        },
    )
    .await;
}

#[tokio::test]
async fn joins_and_leaves_are_events_with_reasons() {
    within(
        TEST_PATIENCE,
        "the whole of test joins_and_leaves_are_events_with_reasons",
        async {
            let server = TestServer::default().await;
            let ch = Channel::connect(server.addr).await.expect("connect");
            let mut alice = join(&ch, "p", "alice").await;
            let joined = next_where(&mut alice, |m| kind(m) == EventKind::Joined).await;
            assert_eq!(joined.sender_id, "alice");
            let mut bob = join(&ch, "p", "bob").await;
            let joined = next_where(&mut alice, |m| kind(m) == EventKind::Joined).await;
            assert_eq!(joined.sender_id, "bob");
            bob.cancel();
            let left = next_where(&mut alice, |m| kind(m) == EventKind::Left).await;
            assert_eq!(
                (left.sender_id.as_str(), reason(&left)),
                ("bob", LeaveReason::Left)
            );
            assert_eq!(left.seq, joined.seq + 1);
        },
    )
    .await;
}

#[tokio::test]
async fn late_joiner_gets_recent_history_then_live_traffic() {
    within(
        TEST_PATIENCE,
        "the whole of test late_joiner_gets_recent_history_then_live_traffic",
        async {
            let server = TestServer::default().await;
            let ch = Channel::connect(server.addr).await.expect("connect");
            let mut alice = start(&ch, &msg("h", "alice", "hello")).await;
            for i in 0..3 {
                alice.send(&post(&format!("old {i}"))).await.expect("post");
            }
            until_text(&mut alice, "old 2").await;
            let mut bob = join(&ch, "h", "bob").await;
            alice.send(&post("live")).await.expect("post");
            let got = collect_until(&mut bob, "live").await;
            let summary: Vec<(EventKind, &str, &str)> = got
                .iter()
                .map(|m| (kind(m), m.sender_id.as_str(), m.text.as_str()))
                .collect();
            assert_eq!(
                summary,
                vec![
                    (EventKind::Joined, "alice", ""),
                    (EventKind::Message, "alice", "hello"),
                    (EventKind::Message, "alice", "old 0"),
                    (EventKind::Message, "alice", "old 1"),
                    (EventKind::Message, "alice", "old 2"),
                    (EventKind::Joined, "bob", ""),
                    (EventKind::Message, "alice", "live"),
                ]
            );
            assert_consecutive(&got);
        },
    )
    .await;
}

#[tokio::test]
async fn history_on_join_is_bounded_by_its_setting() {
    within(
        TEST_PATIENCE,
        "the whole of test history_on_join_is_bounded_by_its_setting",
        async {
            let mut config = unlimited_posting();
            config.chat.rooms.history_on_join = 5;
            let server = TestServer::start(config).await;
            let ch = Channel::connect(server.addr).await.expect("connect");
            let mut alice = join(&ch, "h", "alice").await;
            for i in 0..20 {
                alice.send(&post(&i.to_string())).await.expect("post");
            }
            until_text(&mut alice, "19").await;
            let mut bob = join(&ch, "h", "bob").await;
            let first = next(&mut bob).await;
            // Bob's own join is seq 22; five events come before it: messages 15..=19.
            assert_eq!((first.seq, first.text.as_str()), (17, "15"));
            assert_eq!(kind(&first), EventKind::Message);
        },
    )
    .await;
}

#[tokio::test]
async fn resume_after_seq_yields_exactly_the_later_events_while_others_post() {
    within(
        TEST_PATIENCE,
        "the whole of test resume_after_seq_yields_exactly_the_later_events_while_others_post",
        async {
            let server = TestServer::start(unlimited_posting()).await;
            let ch = Channel::connect(server.addr).await.expect("connect");
            let mut poster = join(&ch, "resume", "poster").await;
            for i in 0..50 {
                poster.send(&post(&format!("m{i}"))).await.expect("post");
            }
            let before = until_text(&mut poster, "m49").await;
            let s = before.seq - 20;
            let room_epoch = epoch(&mut poster).await;
            // Keep posting while the resuming member joins.
            let (mut tx, mut rx) = poster.split();
            let posting = tokio::spawn(async move {
                for i in 50..400 {
                    tx.send(&post(&format!("m{i}"))).await.expect("post");
                }
                tx
            });
            let mut first = msg("resume", "reader", "");
            first.resume_after_seq = Some(s);
            first.resume_epoch = room_epoch;
            let mut reader = start(&ch, &first).await;
            let got = collect_until(&mut reader, "m399").await;
            let _tx = posting.await.expect("poster");
            assert_eq!(got.first().map(|m| m.seq), Some(s + 1));
            assert_consecutive(&got);
            assert!(
                got.iter().all(|m| kind(m) != EventKind::Gap),
                "no gap expected"
            );
            // And what the resumed member saw matches what the poster saw, event for event.
            let mut from_poster = Vec::new();
            loop {
                let m = next_where_rx(&mut rx).await;
                let done = m.text == "m399";
                from_poster.push((m.seq, m.text.clone()));
                if done {
                    break;
                }
            }
            // (The poster had already read up to m49; compare what both saw after it.)
            let from_reader: Vec<(u64, String)> = got
                .iter()
                .filter(|m| kind(m) == EventKind::Message && m.seq > before.seq)
                .map(|m| (m.seq, m.text.clone()))
                .collect();
            assert_eq!(from_reader, from_poster);
        },
    )
    .await;
}

async fn next_where_rx(rx: &mut h2chat::grpc::client::CallReceiver) -> ChatMessage {
    loop {
        let m = tokio::time::timeout(PATIENCE, rx.recv::<ChatMessage>())
            .await
            .expect("event in time")
            .expect("call ok")
            .expect("call open");
        if kind(&m) == EventKind::Message {
            return m;
        }
    }
}

#[tokio::test]
async fn resume_from_before_the_retained_history_starts_with_a_gap_event() {
    within(
        TEST_PATIENCE,
        "the whole of test resume_from_before_the_retained_history_starts_with_a_gap_event",
        async {
            let mut config = unlimited_posting();
            config.chat.rooms.history_events = 10;
            let server = TestServer::start(config).await;
            let ch = Channel::connect(server.addr).await.expect("connect");
            let mut alice = join(&ch, "g", "alice").await;
            for i in 0..30 {
                alice.send(&post(&i.to_string())).await.expect("post");
            }
            let last = until_text(&mut alice, "29").await;
            let mut first = msg("g", "late", "");
            first.resume_after_seq = Some(3);
            first.resume_epoch = epoch(&mut alice).await;
            let mut late = start(&ch, &first).await;
            let gap = next(&mut late).await;
            assert_eq!(kind(&gap), EventKind::Gap);
            // Retained: the last 10 events, which are seq last-8 ..= last and late's own join.
            let oldest = last.seq + 1 - 9;
            assert_eq!((gap.gap_from, gap.gap_to), (4, oldest - 1));
            let after = next(&mut late).await;
            assert_eq!(after.seq, oldest);
        },
    )
    .await;
}

#[tokio::test]
async fn sender_over_the_post_rate_is_slowed_not_cut_off_and_loses_nothing() {
    within(
        TEST_PATIENCE,
        "the whole of test sender_over_the_post_rate_is_slowed_not_cut_off_and_loses_nothing",
        async {
            let mut config = AppConfig::default();
            config.chat.max_post_rate = 20.0;
            config.chat.post_burst = 5.0;
            let server = TestServer::start(config).await;
            let ch = Channel::connect(server.addr).await.expect("connect");
            let mut fast = join(&ch, "rate", "fast").await;
            for i in 0..25 {
                fast.send(&post(&i.to_string())).await.expect("post");
            }
            let got = collect_until(&mut fast, "24").await;
            let posts: Vec<&ChatMessage> = got
                .iter()
                .filter(|m| kind(m) == EventKind::Message)
                .collect();
            let texts: Vec<String> = posts.iter().map(|m| m.text.clone()).collect();
            assert_eq!(
                texts,
                (0..25).map(|i| i.to_string()).collect::<Vec<_>>(),
                "nothing lost"
            );
            // The server stamped the posts as it accepted them: after the burst of 5, no faster than
            // 20 per second. This is a lower bound the limiter guarantees, however loaded the machine.
            let at = |m: &ChatMessage| {
                let t = m.sent_at.unwrap_or_default();
                t.seconds as f64 + f64::from(t.nanos) / 1e9
            };
            let spread = at(posts[24]) - at(posts[4]);
            assert!(
                spread >= 0.95,
                "20 posts over the burst took only {spread:.3}s"
            );
            // Still connected: a later post goes through.
            fast.send(&post("after")).await.expect("post");
            until_text(&mut fast, "after").await;
        },
    )
    .await;
}

/// Reads `count` message events on `rx`, checking they are consecutive; reports progress.
async fn read_all(
    mut rx: h2chat::grpc::client::CallReceiver,
    count: usize,
    progress: tokio::sync::watch::Sender<usize>,
) -> u64 {
    let mut last_seq = 0;
    for n in 0..count {
        let m = next_where_rx(&mut rx).await;
        if n > 0 {
            assert_eq!(m.seq, last_seq + 1, "a reading member missed something");
        }
        assert_eq!(
            m.text.get(..7).and_then(|t| t.parse::<usize>().ok()),
            Some(n)
        );
        last_seq = m.seq;
        progress.send_replace(n + 1);
    }
    last_seq
}

/// A member that stops reading while 10,000 messages are posted: the members that read get all
/// of them in order, the one that does not gets exactly one gap event covering what it missed and
/// then continues, and the server's memory stays bounded. The server runs as its own process so
/// that its RSS is its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_that_stops_reading_gets_one_gap_and_cannot_grow_server_memory() {
    within(TEST_PATIENCE, "the whole of test member_that_stops_reading_gets_one_gap_and_cannot_grow_server_memory", async {
        const POSTS: usize = 10_000;
        const TEXT_BYTES: usize = 4000;
        const HISTORY: usize = 1000;
        // The poster keeps at most this many posts ahead of the slowest reading member, well inside
        // the history, as a paced chat would: reading members must never be the ones that lag.
        const AHEAD: usize = HISTORY / 4;
        // Unbounded buffering for the slow member would hold about POSTS * TEXT_BYTES = 40 MB; the
        // room's history holds HISTORY * TEXT_BYTES = 4 MB.
        const RSS_GROWTH_BOUND_KIB: u64 = 16 * 1024;
        let history = HISTORY.to_string();
        let server = ServerProcess::start(&[
            "--max-post-rate",
            "0",
            "--history",
            &history,
            "--history-bytes",
            "8388608",
        ]).await;
        let fast_ch = Channel::connect(server.addr).await.expect("connect");
        // The slow member's connection has small windows, and this test does not read it until the end.
        let slow_ch = Channel::connect_with(
            server.addr,
            ChannelConfig {
                stream_window_bytes: 16 << 10,
                connection_window_bytes: 16 << 10,
                ..ChannelConfig::default()
            },
        )
        .await
        .expect("connect");
        let mut slow = join(&slow_ch, "big", "slow").await;
        let other = join(&fast_ch, "big", "other").await;
        let fast = join(&fast_ch, "big", "fast").await;
        let rss_before = server.rss_kib();

        let (mut tx, fast_rx) = fast.split();
        let (_other_tx, other_rx) = other.split();
        let (fast_progress, mut fast_seen) = tokio::sync::watch::channel(0usize);
        let (other_progress, mut other_seen) = tokio::sync::watch::channel(0usize);
        let fast_reader = tokio::spawn(read_all(fast_rx, POSTS, fast_progress));
        let other_reader = tokio::spawn(read_all(other_rx, POSTS, other_progress));
        let text = "x".repeat(TEXT_BYTES - 8);
        for i in 0..POSTS {
            let behind = i.saturating_sub(AHEAD);
            fast_seen
                .wait_for(|n| *n >= behind)
                .await
                .expect("fast reader alive");
            other_seen
                .wait_for(|n| *n >= behind)
                .await
                .expect("other reader alive");
            tx.send(&post(&format!("{i:07} {text}")))
                .await
                .expect("post");
        }
        let last_seq = fast_reader.await.expect("fast reader");
        assert_eq!(other_reader.await.expect("other reader"), last_seq);
        let rss_after = server.rss_kib();
        let growth = rss_after.saturating_sub(rss_before);
        assert!(
            growth < RSS_GROWTH_BOUND_KIB,
            "server RSS grew by {growth} KiB (bound {RSS_GROWTH_BOUND_KIB} KiB) while a member did not read"
        );

        // Now the slow member reads: what it got, plus one gap, covers every event exactly once.
        let mut expected = None;
        let mut gaps = Vec::new();
        let mut received = 0usize;
        loop {
            let m = next(&mut slow).await;
            if kind(&m) == EventKind::Gap {
                gaps.push((m.gap_from, m.gap_to));
                assert_eq!(
                    Some(m.gap_from),
                    expected,
                    "gap must start where delivery stopped"
                );
                expected = Some(m.gap_to + 1);
                continue;
            }
            if let Some(e) = expected {
                assert_eq!(m.seq, e, "slow member: duplicate or unannounced gap");
            }
            expected = Some(m.seq + 1);
            received += 1;
            if m.seq == last_seq {
                break;
            }
        }
        assert_eq!(gaps.len(), 1, "exactly one gap event: {gaps:?}");
        let (from, to) = gaps[0];
        eprintln!(
            "server RSS growth {growth} KiB; slow member: gap {from}..={to}, {received} received"
        );
        assert!(to >= from && received > 0);
        assert!(
            received >= HISTORY - 1,
            "after the gap it continues from the oldest retained event"
        );
    })
    .await;
}

/// Joins `room` as `name` on a server that is at its room limit, retrying while it refuses
/// (RESOURCE_EXHAUSTED "max-rooms"): returns once the join is accepted, which proves that an
/// emptied room was removed.
async fn join_once_a_room_is_gone(ch: &Channel, room: &str, name: &str) -> ClientCall {
    let attempt = async {
        loop {
            let mut call = start(ch, &msg(room, name, "")).await;
            match call.headers().await {
                Ok(_) => return call,
                Err(s)
                    if s.code() == Code::ResourceExhausted && s.message().contains("max-rooms") =>
                {
                    tokio::task::yield_now().await;
                }
                Err(s) => panic!("join {room:?} refused otherwise: {s}"),
            }
        }
    };
    let what = format!("the server to remove an empty room so that {room:?} can be made");
    within(PATIENCE, &what, attempt).await
}

#[tokio::test]
async fn an_empty_room_is_removed_and_made_again_in_a_new_epoch_numbered_from_one() {
    within(
        TEST_PATIENCE,
        "the whole of test an_empty_room_is_removed_and_made_again_in_a_new_epoch_numbered_from_one",
        async {
            // Two rooms at most, one of them always held: a room can only be made once the
            // other one is removed. (Nothing of a removed room is remembered: its next
            // incarnation has a new epoch.)
            let mut config = AppConfig::default();
            config.chat.rooms.max_rooms = 2;
            let server = TestServer::start(config).await;
            let ch = Channel::connect(server.addr).await.expect("connect");
            let _anchor = join(&ch, "anchor", "keeper").await;
            let mut a = start(&ch, &msg("again", "a", "first life")).await;
            let first_epoch = epoch(&mut a).await;
            until_text(&mut a, "first life").await;
            // While "again" has a member, no third room can be made.
            let mut refused = start(&ch, &msg("probe", "p", "")).await;
            let status = final_status(&mut refused).await;
            assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
            a.cancel();
            drop(a);
            // "again" emptied: it is removed, so "probe" can be made; then "probe" empties too.
            let mut probe = join_once_a_room_is_gone(&ch, "probe", "p").await;
            probe.cancel();
            drop(probe);
            // "again" is made anew: a new epoch, numbered from 1.
            let mut b = join_once_a_room_is_gone(&ch, "again", "b").await;
            let second_epoch = epoch(&mut b).await;
            b.send(&post("second life")).await.expect("post");
            let second = until_text(&mut b, "second life").await;
            assert_ne!(second_epoch, first_epoch, "a new incarnation, a new epoch");
            assert_eq!(second.seq, 2, "b joined (1), posted (2)");
            server.shutdown().await;
        },
    )
    .await;
}
