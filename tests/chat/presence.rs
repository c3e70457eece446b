//! Presence that scales: rooms above `--presence-batch-above` members announce joins and leaves in
//! batches (`EVENT_KIND_PRESENCE`), a member behind gets a run of them as one, and the deliveries
//! of a join storm grow with the number of members, not its square. Counts, not timing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::chat::*;
use crate::support::{within, TestServer, TEST_PATIENCE};
use h2chat::grpc::client::{CallOptions, Channel, ClientCall};
use h2chat::pb::chat::v1::{ChatMessage, EventKind, MembersRequest, MembersResponse};
use h2chat::protocol::EPOCH_METADATA;
use h2chat::services::app::AppConfig;
use h2chat::services::chat::presence::{PresenceLimits, FLUSH_SHARE};

/// A presence interval no test waits for: batches go out only when they hold their share of the
/// room, or when a member whose join is in one posts. The counts are then exact.
const NO_TIMER: Duration = Duration::from_secs(3600);

fn batching(batch_above: usize, interval: Duration) -> AppConfig {
    let mut config = AppConfig::default();
    config.chat.max_post_rate = 0.0;
    config.chat.rooms.presence = PresenceLimits {
        batch_above,
        interval_per_member: interval,
        max_interval: interval,
    };
    config
}

/// The room's members, sorted (they come in join order, and these joins race).
async fn members(ch: &Channel, room: &str) -> Vec<String> {
    let req = MembersRequest {
        room_id: room.into(),
    };
    let res: MembersResponse = ch
        .unary("/chat.v1.ChatService/Members", &req, CallOptions::default())
        .await
        .expect("members");
    let mut ids = res.member_ids;
    ids.sort();
    ids
}

/// What one member received before the message `until`.
#[derive(Debug, Default)]
struct Seen {
    events: u64,
    joins: u64,
    leaves: u64,
}

/// Events counted by every reader of a test, and the most it lets them count: past it each reader
/// stops at its next event, so that a storm far over its bound fails on the count, not on time.
#[derive(Clone)]
struct Budget {
    spent: Arc<AtomicU64>,
    cap: u64,
}

impl Budget {
    fn new(cap: u64) -> Budget {
        Budget {
            spent: Arc::new(AtomicU64::new(0)),
            cap,
        }
    }

    fn spend(&self) -> bool {
        self.spent.fetch_add(1, Ordering::Relaxed) < self.cap
    }
}

/// Reads `call` until the message `until` (or until `budget` runs out), counting events (not that
/// one) and the joins and leaves they announce.
async fn count_until(call: ClientCall, until: &str) -> (ClientCall, Seen) {
    count_within(call, until, Budget::new(u64::MAX)).await
}

async fn count_within(mut call: ClientCall, until: &str, budget: Budget) -> (ClientCall, Seen) {
    let mut seen = Seen::default();
    loop {
        let m = next(&mut call).await;
        if kind(&m) == EventKind::Message && m.text == until {
            return (call, seen);
        }
        let (joins, leaves) = presence_counts(&m);
        seen.joins += joins;
        seen.leaves += leaves;
        seen.events += 1;
        if !budget.spend() {
            return (call, seen);
        }
    }
}

fn names(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("m{i:04}")).collect()
}

/// Joins `names` (member `i` on channel `i % channels.len()`, the channels joining at once) and
/// starts a reader for each that counts until the message `until`.
async fn join_reading(
    channels: &[Channel],
    room: &str,
    names: Vec<String>,
    until: &'static str,
    budget: &Budget,
) -> Vec<tokio::task::JoinHandle<(ClientCall, Seen)>> {
    let mut per_channel: Vec<Vec<String>> = vec![Vec::new(); channels.len()];
    for (i, n) in names.into_iter().enumerate() {
        per_channel[i % channels.len()].push(n);
    }
    let joiners: Vec<_> = channels
        .iter()
        .zip(per_channel)
        .map(|(ch, names)| {
            let (ch, room, budget) = (ch.clone(), room.to_owned(), budget.clone());
            tokio::spawn(async move {
                let mut readers = Vec::new();
                for n in names {
                    let call = join(&ch, &room, &n).await;
                    let reader = count_within(call, until, budget.clone());
                    readers.push((n, tokio::spawn(reader)));
                }
                readers
            })
        })
        .collect();
    let mut readers = Vec::new();
    for j in joiners {
        readers.extend(j.await.expect("joiner"));
    }
    readers.sort_by(|a, b| a.0.cmp(&b.0));
    readers.into_iter().map(|(_, r)| r).collect()
}

#[tokio::test]
async fn a_join_storm_costs_deliveries_linear_in_the_members_and_members_stays_exact() {
    within(
        TEST_PATIENCE,
        "the whole of test a_join_storm_costs_deliveries_linear_in_the_members_and_members_stays_exact",
        async {
            const N: usize = 1000;
            const A: usize = 20;
            // The design's bound. Up to A members, one event per join: at most A deliveries for
            // each of them. Above it: each joiner's history is one presence event (nobody spoke);
            // a batch that filled up holds at least members / FLUSH_SHARE changes and reaches each
            // member once, so it costs at most FLUSH_SHARE per change; the room's first batch (a
            // lone join in a quiet room goes at once) and the last (flushed by the closer's post)
            // reach every member once more.
            let n = N as u64 + 1;
            let bound = (A * A) as u64 + n + FLUSH_SHARE as u64 * n + 2 * n;
            let budget = Budget::new(bound);
            let server = TestServer::start(batching(A, NO_TIMER)).await;
            let mut channels = Vec::new();
            for _ in 0..10 {
                channels.push(Channel::connect(server.addr).await.expect("connect"));
            }
            let ch = channels[0].clone();
            // The first member joins alone, so it sees every later join.
            let first = join(&ch, "storm", "m0000").await;
            let first = tokio::spawn(count_within(first, "done", budget.clone()));
            let mut readers = vec![first];
            readers.extend(join_reading(&channels, "storm", names(1..N / 2), "done", &budget).await);
            // During the storm (half joined, their presence partly still in a batch): exact.
            let mut want = names(0..N / 2);
            assert_eq!(members(&ch, "storm").await, want);
            readers.extend(join_reading(&channels, "storm", names(N / 2..N), "done", &budget).await);
            want = names(0..N);
            assert_eq!(members(&ch, "storm").await, want);
            // One more joins and posts at once: its join, and every join still in the batch, is
            // announced before its post, so "done" comes after every join of the storm.
            let _closer = start(&ch, &msg("storm", "zz-closer", "done")).await;
            let mut counts = Vec::new();
            for r in readers {
                counts.push(r.await.expect("reader"));
            }
            let total = budget.spent.load(Ordering::Relaxed);
            assert!(
                total <= bound,
                "{total} events delivered to {N} members, more than the bound {bound}"
            );
            // Not N²/2 (500,000 for one event per join).
            eprintln!("join storm: {N} members, {total} events delivered (bound {bound})");
            // m0000 saw every join exactly once: its own, then each in one event or batch.
            assert_eq!(counts[0].1.joins, N as u64 + 1, "{:?}", counts[0].1);

            // Half of them leave: Members is exact at once, and the leaves come in batches too.
            let mut calls: Vec<ClientCall> = counts.into_iter().map(|(c, _)| c).collect();
            let leaving = calls.split_off(N / 2);
            drop(leaving);
            let mut stay = names(0..N / 2);
            stay.push("zz-closer".into());
            let ok = async {
                while members(&ch, "storm").await != stay {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            };
            within(Duration::from_secs(20), "the room to drop the leaving members", ok).await;
            let watcher = calls.swap_remove(0);
            let _closer = start(&ch, &msg("storm", "zz-closer-2", "done-2")).await;
            let (_, seen) = count_until(watcher, "done-2").await;
            assert_eq!(seen.leaves, (N - N / 2) as u64, "{seen:?}");
            assert_eq!(seen.joins, 1, "the second closer: {seen:?}");
            assert!(seen.events <= 2 * seen.leaves, "{seen:?}");
        },
    )
    .await;
}

#[tokio::test]
async fn small_rooms_keep_one_joined_and_one_left_event_per_member() {
    within(
        TEST_PATIENCE,
        "the whole of test small_rooms_keep_one_joined_and_one_left_event_per_member",
        async {
            let server = TestServer::start(batching(3, NO_TIMER)).await;
            let ch = Channel::connect(server.addr).await.expect("connect");
            let mut alice = join(&ch, "small", "alice").await;
            let mut bob = join(&ch, "small", "bob").await;
            let carol = join(&ch, "small", "carol").await;
            drop(carol);
            bob.send(&post("hi")).await.expect("post");
            let mut got = Vec::new();
            loop {
                let m = next(&mut alice).await;
                let done = kind(&m) == EventKind::Message;
                got.push((kind(&m), m.sender_id.clone(), m.seq));
                if done {
                    break;
                }
            }
            assert_eq!(
                got,
                vec![
                    (EventKind::Joined, "alice".into(), 1),
                    (EventKind::Joined, "bob".into(), 2),
                    (EventKind::Joined, "carol".into(), 3),
                    (EventKind::Left, "carol".into(), 4),
                    (EventKind::Message, "bob".into(), 5),
                ]
            );
            drop(bob);
        },
    )
    .await;
}

/// Where an event starts in the room's numbering: a presence event covers `presence_from..=seq`.
fn covers_from(m: &ChatMessage) -> u64 {
    if kind(m) == EventKind::Presence {
        m.presence_from
    } else {
        m.seq
    }
}

#[tokio::test]
async fn a_member_resuming_across_batched_presence_gets_exactly_what_it_missed() {
    within(
        TEST_PATIENCE,
        "the whole of test a_member_resuming_across_batched_presence_gets_exactly_what_it_missed",
        async {
            let server = TestServer::start(batching(2, NO_TIMER)).await;
            let ch = Channel::connect(server.addr).await.expect("connect");
            let mut a = join(&ch, "resume", "a").await;
            let _b = join(&ch, "resume", "b").await;
            let _c = join(&ch, "resume", "c").await;
            let mut x = join(&ch, "resume", "x").await;
            let room_epoch = epoch(&mut x).await;
            a.send(&post("m1")).await.expect("post");
            let last = until_text(&mut x, "m1").await.seq;
            x.cancel();
            drop(x);
            // x's leave, and the joins below, are batched while x is away.
            let mut others = Vec::new();
            for n in ["y", "z", "w"] {
                let mut call = join(&ch, "resume", n).await;
                call.send(&post(&format!("from {n}"))).await.expect("post");
                until_text(&mut call, &format!("from {n}")).await;
                others.push(call);
            }
            a.send(&post("m2")).await.expect("post");
            let head = until_text(&mut a, "m2").await.seq;
            let mut first = msg("resume", "x", "");
            first.resume_after_seq = Some(last);
            first.resume_epoch = room_epoch;
            let mut x = start(&ch, &first).await;
            let headers = x.headers().await.expect("rejoined");
            assert!(headers.get(EPOCH_METADATA).is_some());
            let mut got = Vec::new();
            loop {
                let m = next(&mut x).await;
                let done = kind(&m) == EventKind::Message && m.text == "m2";
                got.push(m);
                if done {
                    break;
                }
            }
            // Exactly what came after `last`: every number once, in order, nothing before it.
            let mut expect_from = last + 1;
            let shape: Vec<_> = got
                .iter()
                .map(|m| {
                    (
                        kind(m),
                        covers_from(m),
                        m.seq,
                        m.joined_ids.clone(),
                        m.left_ids.clone(),
                    )
                })
                .collect();
            for m in &got {
                assert_eq!(covers_from(m), expect_from, "after {last}: {shape:?}");
                expect_from = m.seq + 1;
            }
            assert_eq!(expect_from, head + 1);
            assert!(got.iter().any(|m| kind(m) == EventKind::Presence));
            let joined: Vec<&str> = got
                .iter()
                .flat_map(|m| m.joined_ids.iter().map(String::as_str))
                .collect();
            let left: Vec<&str> = got
                .iter()
                .flat_map(|m| m.left_ids.iter().map(String::as_str))
                .collect();
            // x's own join was still in a batch when it left: that batch says it came and went.
            assert_eq!(joined, vec!["x", "y", "z", "w"], "{shape:?}");
            assert_eq!(left, vec!["x"], "{shape:?}");
            let texts: Vec<&str> = got
                .iter()
                .filter(|m| kind(m) == EventKind::Message)
                .map(|m| m.text.as_str())
                .collect();
            assert_eq!(texts, vec!["from y", "from z", "from w", "m2"]);
        },
    )
    .await;
}

#[tokio::test]
async fn a_lone_join_into_a_large_room_is_announced_when_its_interval_ends() {
    within(
        TEST_PATIENCE,
        "the whole of test a_lone_join_into_a_large_room_is_announced_when_its_interval_ends",
        async {
            let server = TestServer::start(batching(2, Duration::from_millis(20))).await;
            let ch = Channel::connect(server.addr).await.expect("connect");
            let mut a = join(&ch, "timer", "a").await;
            let _b = join(&ch, "timer", "b").await;
            let _c = join(&ch, "timer", "c").await;
            let _d = join(&ch, "timer", "d").await;
            // Nobody posts: the timer numbers the batch that holds d's join.
            let m = next_where(&mut a, |m| m.joined_ids.iter().any(|n| n == "d")).await;
            assert_eq!(kind(&m), EventKind::Presence);
            assert_eq!(members(&ch, "timer").await, vec!["a", "b", "c", "d"]);
        },
    )
    .await;
}
