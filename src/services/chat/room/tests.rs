//! The room engine's unit tests: rings, cursors, gaps, epochs, presence batches and flow, without
//! sockets (the socket tests are in `tests/chat/`).

use prost::Message;

use super::*;
use crate::pb::chat::v1::{ChatMessage, EventKind, LeaveReason};
use crate::services::chat::presence;

fn rooms(history_events: usize, history_bytes: usize, history_on_join: usize) -> Arc<Rooms> {
    Rooms::new(RoomLimits {
        history_events,
        history_bytes,
        history_on_join,
        max_rooms: 4,
        max_members_per_room: 8,
        flow: FlowLimits {
            high_water_percent: 0,
            ..FlowLimits::default()
        },
        presence: PresenceLimits::default(),
        delivery_window: Duration::ZERO,
        delivery_window_above: 0,
    })
}

/// A registry whose rooms batch presence above `batch_above` members (no timer runs in these
/// tests: a batch goes out when it holds its share, or on a flush).
fn batching(batch_above: usize, history_on_join: usize) -> Arc<Rooms> {
    Rooms::new(RoomLimits {
        history_on_join,
        max_members_per_room: 10_000,
        presence: PresenceLimits {
            batch_above,
            ..PresenceLimits::default()
        },
        ..RoomLimits::default()
    })
}

/// Splits a batch into its events, reading the 5-byte gRPC prefix as the spec lays it out.
fn events(batch: &[u8]) -> Vec<ChatMessage> {
    let mut out = Vec::new();
    let mut rest = batch;
    while !rest.is_empty() {
        assert!(rest.len() >= 5, "a whole prefix");
        assert_eq!(rest[0], 0, "uncompressed");
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        let (msg, tail) = rest[5..].split_at(len);
        out.push(ChatMessage::decode(msg).expect("a ChatMessage"));
        rest = tail;
    }
    out
}

/// Everything due to `member` now, in order.
fn drain(member: &mut Member) -> Vec<ChatMessage> {
    let mut out = Vec::new();
    while let Some(batch) = member.next_batch(usize::MAX) {
        out.extend(events(&batch));
    }
    out
}

/// Resuming after `after` in the epoch `member` is in.
fn resume(member: &Member, after: u64) -> StartAt {
    StartAt::Resume {
        epoch: Some(member.epoch().to_owned()),
        after,
    }
}

fn kinds_and_seqs(events: &[ChatMessage]) -> Vec<(EventKind, u64)> {
    events.iter().map(|e| (e.kind(), e.seq)).collect()
}

#[test]
fn a_large_room_batches_joins_and_a_joiner_gets_its_history_as_one_event() {
    let rooms = batching(3, 50);
    let mut members: Vec<Member> = (0..3)
        .map(|i| {
            rooms
                .join("r", &format!("s{i}"), StartAt::RecentHistory)
                .unwrap()
        })
        .collect();
    // Up to the threshold, one event per join, as always.
    assert_eq!(members[2].joined_seq(), 3);
    // The 4th: a lone change in a quiet room goes at once, as a batch of one.
    members.push(rooms.join("r", "b0", StartAt::RecentHistory).unwrap());
    assert_eq!(members[3].joined_seq(), 4);
    // The 5th waits: 1 change of 5 members is less than half.
    let mut late = rooms.join("r", "b1", StartAt::RecentHistory).unwrap();
    assert_eq!(
        late.joined_seq(),
        4,
        "its place: after the last numbered event"
    );
    let got = drain(&mut late);
    assert_eq!(got.len(), 1, "three joins and a batch merged: {got:?}");
    assert_eq!(got[0].kind(), EventKind::Presence);
    assert_eq!((got[0].presence_from, got[0].seq), (1, 4));
    assert_eq!(got[0].joined_ids, vec!["s0", "s1", "s2", "b0"]);
    assert_eq!(rooms.members("r").len(), 5, "Members is exact meanwhile");
    // Its first post announces it first.
    assert_eq!(late.post("hi"), Posted::At(6));
    let got = drain(&mut members[0]);
    // s0 read nothing yet: everything from its own join on is one presence event, then b1's
    // post.
    assert_eq!(
        kinds_and_seqs(&got),
        vec![(EventKind::Presence, 5), (EventKind::Message, 6)]
    );
    assert_eq!((got[0].presence_from, got[0].joined_count), (1, 5));
    assert_eq!(got[0].joined_ids.last().map(String::as_str), Some("b1"));
}

#[test]
fn joins_into_a_large_room_cost_a_bounded_number_of_deliveries_each() {
    let rooms = batching(10, 50);
    let mut members: Vec<Member> = Vec::new();
    let mut delivered = 0;
    let n = 1000;
    for i in 0..n {
        members.push(
            rooms
                .join("r", &format!("m{i}"), StartAt::RecentHistory)
                .unwrap(),
        );
        // Every member reads whatever it has after every join: the worst case.
        for m in &mut members {
            delivered += drain(m).len();
        }
    }
    assert_eq!(rooms.members("r").len(), n);
    // Small phase (≤ 10 members, one event each): under 10² deliveries. Then each joiner's
    // history is one event, and each batch of ≥ members/2 changes reaches every member once:
    // at most 2 deliveries per change (plus a quiet room's first lone batch).
    let bound = 10 * 10 + n + presence::FLUSH_SHARE * n + 11;
    assert!(delivered <= bound, "{delivered} deliveries > {bound}");
    eprintln!("{n} joins: {delivered} deliveries (bound {bound})");
}

#[test]
fn history_on_join_is_the_most_recent_events_then_the_join() {
    let rooms = rooms(100, 1 << 20, 3);
    let mut alice = rooms.join("r", "alice", StartAt::RecentHistory).unwrap();
    for i in 0..5 {
        alice.post(&format!("m{i}"));
    }
    // seq 1 is alice's join, 2..=6 her posts; bob's join is 7.
    let mut bob = rooms.join("r", "bob", StartAt::RecentHistory).unwrap();
    assert_eq!(bob.joined_seq(), 7);
    let got = drain(&mut bob);
    assert_eq!(
        kinds_and_seqs(&got),
        vec![
            (EventKind::Message, 4),
            (EventKind::Message, 5),
            (EventKind::Message, 6),
            (EventKind::Joined, 7)
        ]
    );
    assert_eq!(got[0].text, "m2");
    assert_eq!(got[3].sender_id, "bob");
}

#[test]
fn resume_after_s_receives_every_retained_event_after_s() {
    let rooms = rooms(100, 1 << 20, 0);
    let mut alice = rooms.join("r", "alice", StartAt::RecentHistory).unwrap();
    for i in 0..5 {
        alice.post(&format!("m{i}"));
    }
    let mut bob = rooms.join("r", "bob", resume(&alice, 3)).unwrap();
    let got = drain(&mut bob);
    assert_eq!(
        got.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![4, 5, 6, 7]
    );
    assert!(got.iter().all(|e| e.kind() != EventKind::Gap));
}

#[test]
fn a_member_behind_the_ring_gets_one_gap_naming_exactly_what_it_missed() {
    let rooms = rooms(4, 1 << 20, 0);
    let mut alice = rooms.join("r", "alice", StartAt::RecentHistory).unwrap();
    let mut bob = rooms.join("r", "bob", StartAt::RecentHistory).unwrap();
    assert_eq!(bob.cursor(), 2, "no history: bob starts at his join");
    for i in 0..10 {
        alice.post(&format!("m{i}"));
    }
    // Events 1..=12 exist; the ring keeps the last 4 (9..=12); bob's cursor is at 2.
    let got = drain(&mut bob);
    assert_eq!(got[0].kind(), EventKind::Gap);
    assert_eq!((got[0].gap_from, got[0].gap_to), (2, 8));
    assert_eq!(got[0].text, "missed 7 events (2..=8)");
    assert_eq!(
        got[1..].iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![9, 10, 11, 12]
    );
    assert!(drain(&mut bob).is_empty(), "exactly one gap");
}

#[test]
fn the_ring_is_bounded_by_count() {
    let rooms = rooms(3, 1 << 20, 100);
    let mut alice = rooms.join("r", "alice", StartAt::RecentHistory).unwrap();
    for i in 0..10 {
        alice.post(&format!("m{i}"));
    }
    let mut bob = rooms.join("r", "bob", StartAt::RecentHistory).unwrap();
    // 12 events; history_on_join (100) reaches past the ring, which holds 10..=12.
    let got = drain(&mut bob);
    assert_eq!(
        got.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![10, 11, 12]
    );
}

#[test]
fn the_ring_is_bounded_by_bytes() {
    // Each 1,000-byte text encodes to a little over 1,000 bytes: three of them and a small join
    // event fit in 3,500 bytes, four do not.
    let rooms = rooms(1000, 3500, 1000);
    let mut alice = rooms.join("r", "alice", StartAt::RecentHistory).unwrap();
    let text = "x".repeat(1000);
    for _ in 0..10 {
        alice.post(&text);
    }
    let mut bob = rooms.join("r", "bob", resume(&alice, 0)).unwrap();
    let got = drain(&mut bob);
    assert_eq!(got[0].kind(), EventKind::Gap);
    let kept: Vec<u64> = got[1..].iter().map(|e| e.seq).collect();
    // Bob's own small join is among what is kept, and whatever is kept is the newest run.
    assert_eq!(*kept.last().unwrap(), 12);
    assert_eq!(kept, vec![9, 10, 11, 12]);
    assert_eq!((got[0].gap_from, got[0].gap_to), (1, 8));
}

#[test]
fn a_batch_holds_at_most_max_batch_bytes_unless_one_event_is_larger() {
    let rooms = rooms(1000, 16 << 20, 0);
    let mut alice = rooms.join("r", "alice", StartAt::RecentHistory).unwrap();
    let mut bob = rooms.join("r", "bob", StartAt::RecentHistory).unwrap();
    let text = "y".repeat(10_000);
    for _ in 0..20 {
        alice.post(&text);
    }
    let mut seen = 0;
    while let Some(batch) = bob.next_batch(usize::MAX) {
        assert!(batch.len() <= MAX_BATCH_BYTES, "{} bytes", batch.len());
        seen += events(&batch).len();
    }
    assert_eq!(seen, 21, "bob's join and 20 posts");
    // A single event larger than the cap still goes, alone.
    let huge = "z".repeat(MAX_BATCH_BYTES + 1);
    alice.post(&huge);
    alice.post("small");
    let first = bob.next_batch(usize::MAX).unwrap();
    assert_eq!(events(&first).len(), 1);
    assert!(first.len() > MAX_BATCH_BYTES);
    assert_eq!(
        events(&bob.next_batch(usize::MAX).unwrap())[0].text,
        "small"
    );
}

#[test]
fn a_batch_is_built_within_the_bytes_the_caller_can_send() {
    let rooms = rooms(1000, 16 << 20, 0);
    let mut alice = rooms.join("r", "alice", StartAt::RecentHistory).unwrap();
    let mut bob = rooms.join("r", "bob", StartAt::RecentHistory).unwrap();
    for _ in 0..10 {
        alice.post(&"w".repeat(100));
    }
    let mut seen = 0;
    while let Some(batch) = bob.next_batch(300) {
        let n = events(&batch).len();
        assert!(
            batch.len() <= 300 || n == 1,
            "{} bytes in {n} events",
            batch.len()
        );
        seen += n;
    }
    assert_eq!(seen, 11);
}

#[test]
fn a_recreated_room_has_a_new_epoch_and_numbers_from_one() {
    let rooms = rooms(100, 1 << 20, 0);
    let mut alice = rooms.join("r", "alice", StartAt::RecentHistory).unwrap();
    let first = alice.epoch().to_owned();
    alice.post("one");
    drop(alice); // seq 3: alice left; the room is removed
    assert!(rooms.is_empty());
    let bob = rooms.join("r", "bob", StartAt::RecentHistory).unwrap();
    assert_eq!(bob.joined_seq(), 1);
    assert_ne!(bob.epoch(), first);
}

#[test]
fn epochs_never_repeat_across_ten_thousand_incarnations() {
    let rooms = rooms(100, 1 << 20, 0);
    let mut seen = std::collections::HashSet::new();
    for i in 0..10_000 {
        let m = rooms
            .join(&format!("room{}", i % 3), "x", StartAt::RecentHistory)
            .unwrap();
        assert!(
            seen.insert(m.epoch().to_owned()),
            "epoch {} repeated",
            m.epoch()
        );
    }
}

#[test]
fn resume_in_another_epoch_is_one_reset_then_the_whole_present_history() {
    let rooms = rooms(100, 1 << 20, 0);
    let old = {
        let mut alice = rooms.join("r", "alice", StartAt::RecentHistory).unwrap();
        alice.post("gone");
        alice.epoch().to_owned()
    };
    let mut carol = rooms.join("r", "carol", StartAt::RecentHistory).unwrap();
    carol.post("c1");
    let start = StartAt::Resume {
        epoch: Some(old.clone()),
        after: 2,
    };
    let mut alice = rooms.join("r", "alice", start).unwrap();
    let got = drain(&mut alice);
    assert_eq!(
        kinds_and_seqs(&got),
        vec![
            (EventKind::Reset, 0),
            (EventKind::Joined, 1),
            (EventKind::Message, 2),
            (EventKind::Joined, 3),
        ]
    );
    assert_eq!(got[0].epoch, carol.epoch());
    assert!(got[0].text.contains(&old), "{}", got[0].text);
    assert_eq!(got[1].sender_id, "carol");
    assert_eq!(got[2].text, "c1");
    assert!(drain(&mut alice).is_empty(), "exactly one reset");
}

#[test]
fn resume_without_an_epoch_is_never_a_guessed_tail() {
    let rooms = rooms(100, 1 << 20, 0);
    let mut carol = rooms.join("r", "carol", StartAt::RecentHistory).unwrap();
    for i in 0..4 {
        carol.post(&format!("c{i}"));
    }
    // seq 2 here may be another incarnation's seq 2: the reset says so, and all follows.
    let start = StartAt::Resume {
        epoch: None,
        after: 2,
    };
    let mut old_client = rooms.join("r", "old", start).unwrap();
    let got = drain(&mut old_client);
    assert_eq!(got[0].kind(), EventKind::Reset);
    assert_eq!(got[0].epoch, carol.epoch());
    assert_eq!(
        got[1..].iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5, 6]
    );
}

#[test]
fn a_reset_whose_history_lost_its_start_has_a_gap_after_it() {
    let rooms = rooms(3, 1 << 20, 0);
    let mut carol = rooms.join("r", "carol", StartAt::RecentHistory).unwrap();
    for i in 0..5 {
        carol.post(&format!("c{i}"));
    }
    let start = StartAt::Resume {
        epoch: Some("an-old-epoch".into()),
        after: 9,
    };
    let mut alice = rooms.join("r", "alice", start).unwrap();
    let got = drain(&mut alice);
    assert_eq!(got[0].kind(), EventKind::Reset);
    assert_eq!(got[1].kind(), EventKind::Gap);
    assert_eq!((got[1].gap_from, got[1].gap_to), (1, 4));
    assert_eq!(
        got[2..].iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![5, 6, 7]
    );
}

#[test]
fn resume_past_the_head_of_the_present_epoch_is_out_of_range() {
    let rooms = rooms(100, 1 << 20, 0);
    let mut carol = rooms.join("r", "carol", StartAt::RecentHistory).unwrap();
    carol.post("c1");
    // The head is 2: resuming after 2 is fine (nothing missed), after 3 is not.
    let err = rooms.join("r", "alice", resume(&carol, 3)).err().unwrap();
    assert_eq!(err.code(), crate::grpc::Code::OutOfRange);
    assert!(
        err.message().contains("past the last event"),
        "{}",
        err.message()
    );
    assert_eq!(names(&rooms, "r"), ["carol"], "not joined");
    let mut alice = rooms.join("r", "alice", resume(&carol, 2)).unwrap();
    assert_eq!(
        kinds_and_seqs(&drain(&mut alice)),
        vec![(EventKind::Joined, 3)]
    );
}

#[test]
fn a_refused_join_leaves_the_room_as_it_was() {
    let rooms = rooms(100, 1 << 20, 0);
    let start = StartAt::Resume {
        epoch: None,
        after: 5,
    };
    // No room "r" yet: an epoch-less resume is a reset, not an error.
    let m = rooms.join("r", "a", start).unwrap();
    let err = rooms.join("r", "b", resume(&m, 99)).err().unwrap();
    assert_eq!(err.code(), crate::grpc::Code::OutOfRange);
    drop(m);
    assert!(rooms.is_empty());
}

#[test]
fn a_closed_room_refuses_posts_after_its_close_point() {
    let rooms = rooms(100, 1 << 20, 0);
    let mut alice = rooms.join("r", "alice", StartAt::RecentHistory).unwrap();
    let mut bob = rooms.join("r", "bob", StartAt::RecentHistory).unwrap();
    assert_eq!(alice.post("before"), Posted::At(3));
    assert_eq!(alice.close_room(), 3);
    assert_eq!(bob.close_room(), 3, "closing twice keeps the first point");
    assert_eq!(alice.post("after"), Posted::Closed(3));
    let got = drain(&mut bob);
    assert_eq!(got.last().map(|e| e.seq), Some(3));
    let err = rooms
        .join("r", "carol", StartAt::RecentHistory)
        .err()
        .unwrap();
    assert_eq!(err.code(), crate::grpc::Code::Unavailable);
}

#[test]
fn leaving_posts_a_left_event_with_the_reason() {
    let rooms = rooms(100, 1 << 20, 0);
    let mut alice = rooms.join("r", "alice", StartAt::RecentHistory).unwrap();
    let mut bob = rooms.join("r", "bob", StartAt::RecentHistory).unwrap();
    drain(&mut alice);
    bob.set_leave_reason(LeaveReason::Left);
    drop(bob);
    let got = drain(&mut alice);
    assert_eq!(kinds_and_seqs(&got), vec![(EventKind::Left, 3)]);
    assert_eq!(got[0].leave_reason(), LeaveReason::Left);
    assert_eq!(names(&rooms, "r"), ["alice"]);
}

#[test]
fn names_are_unique_within_a_room_and_rooms_and_members_are_capped() {
    let rooms = rooms(100, 1 << 20, 0);
    let _a = rooms.join("r", "alice", StartAt::RecentHistory).unwrap();
    let err = rooms
        .join("r", "alice", StartAt::RecentHistory)
        .err()
        .unwrap();
    assert_eq!(err.code(), crate::grpc::Code::AlreadyExists);
    let _others: Vec<Member> = (0..3)
        .map(|i| {
            rooms
                .join(&format!("o{i}"), "x", StartAt::RecentHistory)
                .unwrap()
        })
        .collect();
    let err = rooms.join("o9", "x", StartAt::RecentHistory).err().unwrap();
    assert_eq!(err.code(), crate::grpc::Code::ResourceExhausted);
    let _members: Vec<Member> = (0..7)
        .map(|i| {
            rooms
                .join("r", &format!("m{i}"), StartAt::RecentHistory)
                .unwrap()
        })
        .collect();
    let err = rooms
        .join("r", "one-too-many", StartAt::RecentHistory)
        .err()
        .unwrap();
    assert_eq!(err.code(), crate::grpc::Code::ResourceExhausted);
}
fn names(rooms: &Rooms, room_id: &str) -> Vec<String> {
    rooms
        .members(room_id)
        .iter()
        .map(|n| n.to_string())
        .collect()
}

#[test]
fn members_are_in_join_order_and_shared_not_copied() {
    let rooms = rooms(100, 1 << 20, 0);
    // Joined in an order that is not sorted by name.
    let carol = rooms.join("r", "carol", StartAt::RecentHistory).unwrap();
    let alice = rooms.join("r", "alice", StartAt::RecentHistory).unwrap();
    let bob = rooms.join("r", "bob", StartAt::RecentHistory).unwrap();
    assert_eq!(names(&rooms, "r"), ["carol", "alice", "bob"]);
    // Members takes the room's own list: two calls with no join between get the same one.
    let first = rooms.members("r");
    assert!(
        Arc::ptr_eq(&first, &rooms.members("r")),
        "Members copied the list"
    );
    // A leave makes a new list; the snapshot taken before it stays as it was.
    drop(alice);
    assert_eq!(names(&rooms, "r"), ["carol", "bob"]);
    assert_eq!(first.len(), 3);
    let _dave = rooms.join("r", "dave", StartAt::RecentHistory).unwrap();
    assert_eq!(names(&rooms, "r"), ["carol", "bob", "dave"]);
    assert!(rooms.members("nowhere").is_empty());
    drop((carol, bob));
}

/// A registry whose rooms, of any size, wake their members for posts at most once per `window`.
fn windowed(window: Duration) -> Arc<Rooms> {
    Rooms::new(RoomLimits {
        delivery_window: window,
        delivery_window_above: 0,
        ..RoomLimits::default()
    })
}

#[tokio::test(start_paused = true)]
async fn posts_within_a_delivery_window_wake_the_members_once_at_its_end() {
    let rooms = windowed(Duration::from_millis(100));
    let mut reader = rooms.join("w", "reader", StartAt::RecentHistory).unwrap();
    let mut poster = rooms.join("w", "poster", StartAt::RecentHistory).unwrap();
    drain(&mut reader);
    // The room's first post wakes at once.
    poster.post("first");
    assert!(
        reader.has_news(),
        "the first post of a quiet room is not held"
    );
    drain(&mut reader);
    // The next ones wait for the window the first one opened.
    poster.post("a");
    poster.post("b");
    assert!(
        !reader.has_news(),
        "posts within the window wait for its end"
    );
    tokio::time::timeout(Duration::from_secs(1), reader.changed())
        .await
        .expect("the window's end wakes the member");
    let got: Vec<String> = drain(&mut reader).into_iter().map(|m| m.text).collect();
    assert_eq!(got, ["a", "b"]);
    // A leave is never held.
    drop(poster);
    assert!(reader.has_news(), "a leave wakes at once");
}

#[tokio::test(start_paused = true)]
async fn a_member_whose_batch_stopped_at_its_bound_has_news_though_the_room_did_not_wake_it() {
    let rooms = windowed(Duration::from_secs(60));
    let mut reader = rooms.join("w", "reader", StartAt::RecentHistory).unwrap();
    let mut poster = rooms.join("w", "poster", StartAt::RecentHistory).unwrap();
    drain(&mut reader);
    poster.post("first");
    // Held by the window: the room has not woken the member for these.
    let text = "x".repeat(1000);
    for _ in 0..100 {
        poster.post(&text);
    }
    assert!(reader.has_news(), "the first post woke the member");
    // Woken for the first post, the member reads as far as the ring goes, within its bound.
    let batch = reader.next_batch(10_000).expect("a batch");
    let got = events(&batch).len();
    assert!(got < 101, "the bound cut the batch: {got} events");
    assert!(
        reader.has_news(),
        "a batch cut at its bound leaves news, whether or not the room wakes the member"
    );
    let rest = drain(&mut reader).len();
    assert_eq!(
        got + rest,
        101,
        "every post, without waiting for the window"
    );
    assert!(!reader.has_news(), "caught up");
}

#[tokio::test(start_paused = true)]
async fn the_poster_has_its_own_post_at_once_though_the_window_holds_it_from_the_others() {
    let rooms = windowed(Duration::from_secs(60));
    let mut reader = rooms.join("w", "reader", StartAt::RecentHistory).unwrap();
    let mut poster = rooms.join("w", "poster", StartAt::RecentHistory).unwrap();
    poster.post("first");
    drain(&mut reader);
    drain(&mut poster);
    poster.post("held");
    assert!(
        !reader.has_news(),
        "the window holds the post from the reader"
    );
    assert!(poster.has_news(), "but not from its poster");
    let got: Vec<String> = drain(&mut poster).into_iter().map(|m| m.text).collect();
    assert_eq!(got, ["held"]);
    assert!(!poster.has_news(), "caught up");
}

#[tokio::test(start_paused = true)]
async fn only_rooms_above_delivery_window_above_members_hold_posts() {
    let rooms = Rooms::new(RoomLimits {
        delivery_window: Duration::from_secs(60),
        delivery_window_above: 2,
        ..RoomLimits::default()
    });
    let mut reader = rooms.join("w", "reader", StartAt::RecentHistory).unwrap();
    let mut poster = rooms.join("w", "poster", StartAt::RecentHistory).unwrap();
    drain(&mut reader);
    for k in 0..3 {
        poster.post(&format!("m{k}"));
        assert!(reader.has_news(), "a room of 2 members wakes for post m{k}");
        drain(&mut reader);
    }
    let mut third = rooms.join("w", "third", StartAt::RecentHistory).unwrap();
    drain(&mut reader);
    // Three members: the first post opens a window, the next waits for its end.
    poster.post("opens");
    assert!(
        reader.has_news(),
        "the first post after a quiet window goes at once"
    );
    drain(&mut reader);
    drain(&mut third);
    poster.post("held");
    assert!(
        !reader.has_news(),
        "a room of 3 members holds the next post"
    );
    assert!(!third.has_news(), "from every member but its poster");
}

#[tokio::test(start_paused = true)]
async fn a_window_that_gathers_max_posts_in_window_lets_them_go_at_once() {
    let rooms = windowed(Duration::from_secs(60));
    let mut reader = rooms.join("w", "reader", StartAt::RecentHistory).unwrap();
    let mut poster = rooms.join("w", "poster", StartAt::RecentHistory).unwrap();
    poster.post("first");
    drain(&mut reader);
    let held = MAX_POSTS_IN_WINDOW as usize;
    for k in 1..held {
        poster.post(&format!("m{k}"));
    }
    assert!(!reader.has_news(), "{} posts wait for the window", held - 1);
    poster.post("last");
    assert!(
        reader.has_news(),
        "the window's post number {held} wakes the members"
    );
    let got = drain(&mut reader);
    assert_eq!(got.len(), held, "every post the window gathered");
    assert_eq!(got.last().map(|m| m.text.as_str()), Some("last"));
}
