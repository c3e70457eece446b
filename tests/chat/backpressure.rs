//! Backpressure instead of loss: a poster posting flat out (`--max-post-rate 0`) far more than the
//! room's history holds cannot push reading members off the ring; a member whose client grants no
//! window is stalled, gets exactly one gap naming what it missed, and never holds the room back.

use std::time::Duration;

use tokio::sync::watch;

use crate::support::chat::*;
use crate::support::wire::{self, WindowGrant, WireCall, WireClient};
use crate::support::TestServer;
use crate::support::{within, TEST_PATIENCE};
use h2chat::grpc::client::{CallReceiver, Channel};
use h2chat::pb::chat::v1::{ChatMessage, EventKind};
use h2chat::services::app::AppConfig;
use h2chat::services::chat::flow::FlowLimits;

/// Events each room keeps in these tests: small, so that a flood is many times the history.
const HISTORY: usize = 100;
/// Posts in a flood: fifty times the history.
const POSTS: usize = 50 * HISTORY;
const ROOM: &str = "flood";

/// Unlimited posting, a small history, no history on join; a stall grace of `grace`. No send
/// timeout: a stalled member stays in the room until the test ends it, however long it stalls.
fn config(grace: Duration) -> AppConfig {
    let mut config = AppConfig::default();
    config.server.send_timeout = None;
    config.chat.max_post_rate = 0.0;
    config.chat.rooms.history_events = HISTORY;
    config.chat.rooms.history_on_join = 0;
    config.chat.rooms.flow = FlowLimits {
        stall_grace: grace,
        ..FlowLimits::default()
    };
    config
}

/// What a reading member saw of the flood.
#[derive(Debug, Default)]
struct Seen {
    posts: usize,
    /// Posts that never came (skipped by a gap, or otherwise).
    missed: usize,
    gaps: usize,
    /// Events out of order (a sequence number that is not the last one plus one).
    disorder: usize,
    last_seq: u64,
}

/// Reads until the flood's last post (`p{POSTS - 1}`) arrives, checking that every event follows
/// the one before it and every post is the next one; reports how many posts it has seen.
async fn read_flood(mut rx: CallReceiver, progress: watch::Sender<usize>) -> Seen {
    let mut seen = Seen::default();
    loop {
        let m = match rx.recv::<ChatMessage>().await {
            Ok(Some(m)) => m,
            Ok(None) => panic!("the call ended after {} posts", seen.posts),
            Err(s) => panic!("the call failed after {} posts: {s}", seen.posts),
        };
        if kind(&m) == EventKind::Gap {
            seen.gaps += 1;
            seen.last_seq = m.gap_to;
            continue;
        }
        if seen.last_seq != 0 && m.seq != seen.last_seq + 1 {
            seen.disorder += 1;
        }
        seen.last_seq = m.seq;
        let Some(n) = m
            .text
            .strip_prefix('p')
            .and_then(|n| n.parse::<usize>().ok())
        else {
            continue;
        };
        seen.missed += n.saturating_sub(seen.posts + seen.missed);
        seen.posts += 1;
        progress.send_replace(seen.posts);
        if n == POSTS - 1 {
            return seen;
        }
    }
}

/// The readers: `n` members, each on a connection of its own, reading in a task of its own.
async fn readers(
    addr: std::net::SocketAddr,
    n: usize,
) -> Vec<(
    tokio::task::JoinHandle<Seen>,
    watch::Receiver<usize>,
    Channel,
)> {
    let mut out = Vec::new();
    for i in 0..n {
        let ch = Channel::connect(addr).await.expect("connect");
        let call = join(&ch, ROOM, &format!("reader{i}")).await;
        let (_tx, rx) = call.split();
        let (progress, seen) = watch::channel(0);
        // The sending half is dropped: a half-closed member stays and keeps receiving.
        out.push((tokio::spawn(read_flood(rx, progress)), seen, ch));
    }
    out
}

/// Posts `POSTS` texts as fast as the server takes them: no pacing of any kind. The poster reads
/// its own echoes as any member does; returns that reader.
async fn flood(ch: &Channel) -> tokio::task::JoinHandle<Seen> {
    let poster = join(ch, ROOM, "poster").await;
    let (mut tx, rx) = poster.split();
    let (progress, _) = watch::channel(0);
    let echoes = tokio::spawn(read_flood(rx, progress));
    for i in 0..POSTS {
        tx.send(&post(&format!("p{i}"))).await.expect("post");
    }
    echoes
}

/// A member joined on a connection that grants no window: the server cannot send it a byte.
async fn stalled_member(addr: std::net::SocketAddr) -> (WireClient, WindowGrant, WireCall, u64) {
    let (mut client, grant) = WireClient::connect_granting_nothing(addr).await;
    let mut call = client.start(CHAT, &[]).await;
    call.send(wire::message(&msg(ROOM, "stalled", "")), false);
    let joined_seq = call
        .headers()
        .await
        .get("chat-joined-seq")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .expect("chat-joined-seq");
    (client, grant, call, joined_seq)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_reaches_every_reading_member_in_order_without_a_gap() {
    within(TEST_PATIENCE, "the flood to reach every reader", async {
        // No member here stops reading: a long grace, so that a busy machine never makes a
        // reader count as stalled.
        let server = TestServer::start(config(Duration::from_secs(60))).await;
        let readers = readers(server.addr, 3).await;
        let ch = Channel::connect(server.addr).await.expect("connect");
        let echoes = flood(&ch).await;
        let mut all = vec![echoes];
        all.extend(readers.into_iter().map(|(reader, _, _)| reader));
        for (i, reader) in all.into_iter().enumerate() {
            let seen = reader.await.expect("reader");
            assert_eq!(
                (seen.gaps, seen.missed, seen.disorder, seen.posts),
                (0, 0, 0, POSTS),
                "member {i} (0 is the poster): {POSTS} posts ({} times the history) in order, \
                 no gap: {seen:?}",
                POSTS / HISTORY
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_member_gets_exactly_one_gap_naming_what_it_missed_and_the_others_lose_nothing() {
    within(TEST_PATIENCE, "the flood with a stalled member", async {
        let server = TestServer::start(config(Duration::from_secs(2))).await;
        let (_client, grant, mut stalled, joined_seq) = stalled_member(server.addr).await;
        let readers = readers(server.addr, 3).await;
        let ch = Channel::connect(server.addr).await.expect("connect");
        let echoes = flood(&ch).await;
        let mut last_seq = 0;
        let mut all = vec![echoes];
        all.extend(readers.into_iter().map(|(reader, _, _)| reader));
        for (i, reader) in all.into_iter().enumerate() {
            let seen = reader.await.expect("reader");
            assert_eq!(
                (seen.gaps, seen.missed, seen.disorder, seen.posts),
                (0, 0, 0, POSTS),
                "member {i} (0 is the poster) beside a stalled member: {seen:?}"
            );
            last_seq = seen.last_seq;
        }

        // Now the stalled member's client reads: one gap from its own join (it was sent nothing)
        // to just before the oldest event the room still holds, then every event from there.
        grant.grant(1 << 20);
        let gap: ChatMessage = stalled.next_message().await.expect("an event");
        assert_eq!(kind(&gap), EventKind::Gap, "first a gap: {gap:?}");
        assert_eq!(
            gap.gap_from, joined_seq,
            "it missed everything from its join on"
        );
        let missed = gap.gap_to - gap.gap_from + 1;
        assert_eq!(
            gap.text,
            format!("missed {missed} events ({}..={})", gap.gap_from, gap.gap_to)
        );
        let mut expected = gap.gap_to + 1;
        let mut kept = 0;
        while expected <= last_seq {
            let m: ChatMessage = stalled.next_message().await.expect("an event");
            assert_ne!(kind(&m), EventKind::Gap, "exactly one gap: {m:?}");
            assert_eq!(m.seq, expected, "after the gap, every event in order");
            expected += 1;
            kept += 1;
        }
        assert!(
            (HISTORY / 2..=HISTORY).contains(&kept),
            "after the gap it reads what the room still holds: {kept} events"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_member_never_holds_the_room_back() {
    within(
        TEST_PATIENCE,
        "the room to go on past a stalled member",
        async {
            let server = TestServer::start(config(Duration::from_secs(1))).await;
            let (_client, _grant, _stalled, joined_seq) = stalled_member(server.addr).await;
            let readers = readers(server.addr, 2).await;
            let watch: Vec<watch::Receiver<usize>> =
                readers.iter().map(|(_, seen, _)| seen.clone()).collect();
            let ch = Channel::connect(server.addr).await.expect("connect");
            let posted = tokio::spawn(async move {
                let echoes = flood(&ch).await;
                (echoes.await.expect("the poster's echoes"), ch)
            });
            // By counts: the stalled member has been sent nothing, and a member the room waited for
            // would hold it within the history (at most HISTORY events past its cursor). The readers
            // get the whole flood, fifty histories past the stalled member's cursor.
            let counts = || watch.iter().map(|w| *w.borrow()).collect::<Vec<_>>();
            let all = async {
                for w in &watch {
                    let mut w = w.clone();
                    w.wait_for(|n| *n == POSTS).await.expect("reader alive");
                }
            };
            if tokio::time::timeout(Duration::from_secs(60), all)
                .await
                .is_err()
            {
                panic!(
                "the readers got {:?} of {POSTS} posts: the stalled member (cursor {joined_seq}, \
                 history {HISTORY}) held the room back",
                counts()
            );
            }
            let (echoes, ch) = posted.await.expect("poster");
            let members = ch
                .unary::<_, h2chat::pb::chat::v1::MembersResponse>(
                    "/chat.v1.ChatService/Members",
                    &h2chat::pb::chat::v1::MembersRequest {
                        room_id: ROOM.into(),
                    },
                    Default::default(),
                )
                .await
                .expect("Members");
            assert!(
                members.member_ids.iter().any(|m| m == "stalled"),
                "the room went on with the stalled member in it: {:?}",
                members.member_ids
            );
            assert_eq!((echoes.gaps, echoes.disorder), (0, 0), "{echoes:?}");
            for (reader, _, _) in readers {
                let seen = reader.await.expect("reader");
                assert_eq!((seen.gaps, seen.disorder), (0, 0), "{seen:?}");
                assert!(
                    seen.last_seq > joined_seq + 10 * HISTORY as u64,
                    "the room went {} events past the stalled member's cursor {joined_seq}",
                    seen.last_seq - joined_seq
                );
            }
        },
    )
    .await;
}
