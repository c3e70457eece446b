//! The node's copy of a shared room, without Redis: what the subscription and the joins do
//! to it.

use std::sync::Arc;

use bytes::Bytes;
use prost::Message;

use crate::grpc::codec::encode_message;
use crate::grpc::Code;
use crate::pb::chat::v1::{ChatMessage, EventKind};
use crate::services::chat::room::{Delivered, Member, RoomLimits, Rooms, StartAt};

fn frame(seq: u64, text: &str) -> Bytes {
    encode_message(&ChatMessage {
        room_id: "r".into(),
        sender_id: "s".into(),
        text: text.into(),
        seq,
        ..Default::default()
    })
}

fn registry(history: usize) -> Arc<Rooms> {
    Rooms::new(RoomLimits {
        history_events: history,
        history_bytes: 1 << 20,
        history_on_join: 10,
        max_rooms: 4,
        max_members_per_room: 8,
        ..RoomLimits::default()
    })
}

fn drain(member: &mut Member) -> Vec<ChatMessage> {
    let mut out = Vec::new();
    while let Some(mut batch) = member.next_batch(usize::MAX) {
        while batch.len() >= 5 {
            let len = u32::from_be_bytes([batch[1], batch[2], batch[3], batch[4]]) as usize;
            out.push(ChatMessage::decode(&batch[5..5 + len]).unwrap());
            batch = batch.slice(5 + len..);
        }
    }
    out
}

#[test]
fn a_copy_takes_events_in_seq_order_only_and_says_what_it_lacks() {
    let rooms = registry(100);
    let copy = rooms
        .open_shared("r", "e1", 3, vec![frame(3, "a"), frame(4, "b")])
        .unwrap();
    let mut m = rooms
        .admit_shared(&copy, "x", (4, 4), StartAt::RecentHistory)
        .unwrap();
    assert_eq!(copy.deliver(4, frame(4, "b")), Delivered::Held);
    assert_eq!(copy.deliver(6, frame(6, "d")), Delivered::Missing(5));
    assert_eq!(copy.deliver(5, frame(5, "c")), Delivered::Appended);
    assert_eq!(copy.deliver(6, frame(6, "d")), Delivered::Appended);
    let got: Vec<(u64, String)> = drain(&mut m).into_iter().map(|e| (e.seq, e.text)).collect();
    assert_eq!(
        got,
        vec![
            (3, "a".into()),
            (4, "b".into()),
            (5, "c".into()),
            (6, "d".into())
        ]
    );
}

#[test]
fn events_the_stream_no_longer_holds_become_one_gap() {
    let rooms = registry(100);
    let copy = rooms
        .open_shared("r", "e1", 1, vec![frame(1, "a")])
        .unwrap();
    let mut m = rooms
        .admit_shared(&copy, "x", (1, 1), StartAt::RecentHistory)
        .unwrap();
    drain(&mut m);
    // The stream was trimmed past 2..=4 before this copy could read them.
    copy.fill(5, vec![frame(5, "e"), frame(6, "f")]);
    let got = drain(&mut m);
    assert_eq!(got[0].kind(), EventKind::Gap);
    assert_eq!((got[0].gap_from, got[0].gap_to), (2, 4));
    assert_eq!(
        got[1..].iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![5, 6]
    );
}

#[test]
fn a_retired_copy_ends_its_members_and_a_join_into_a_removed_copy_is_aborted() {
    let rooms = registry(100);
    let copy = rooms
        .open_shared("r", "e1", 1, vec![frame(1, "a")])
        .unwrap();
    let m = rooms
        .admit_shared(&copy, "x", (1, 1), StartAt::RecentHistory)
        .unwrap();
    assert!(m.ended().is_none());
    rooms.retire_shared("r", "e1");
    assert_eq!(m.ended().map(|s| s.code()), Some(Code::Unavailable));
    assert!(rooms.shared_room("r").is_none());
    let err = rooms
        .admit_shared(&copy, "y", (2, 2), StartAt::RecentHistory)
        .err()
        .unwrap();
    assert_eq!(err.code(), Code::Aborted);
    // Another epoch's copy replaces it; a resume from the old one starts with a reset.
    let fresh = rooms
        .open_shared("r", "e2", 1, vec![frame(1, "n")])
        .unwrap();
    let start = StartAt::Resume {
        epoch: Some("e1".into()),
        after: 1,
    };
    let mut back = rooms.admit_shared(&fresh, "x2", (1, 1), start).unwrap();
    assert_eq!(drain(&mut back)[0].kind(), EventKind::Reset);
}
