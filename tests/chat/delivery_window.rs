//! `--delivery-window`: a busy room of more than `--delivery-window-above` members wakes its members
//! for posts at most once per window, so posts that come within one window reach each member
//! together, in one DATA frame; the poster gets its own at once, and smaller rooms are never held. (That a member
//! whose batch stopped at its bound takes the rest without waiting for the next window is a unit
//! test of the room, which can order that exactly.) The reader's frames are read by hand (RFC 9113 framing, gRPC's length prefix), so the
//! test sees how the server cut its writes into DATA frames.

use std::time::{Duration, Instant};

use prost::Message;

use crate::support::chat::*;
use crate::support::frames::{
    data, grpc_request, kind, RawConnection, SETTINGS_INITIAL_WINDOW_SIZE,
};
use crate::support::process::ServerProcess;
use crate::support::{within, TEST_PATIENCE};
use h2chat::grpc::client::{Channel, ClientCall};
use h2chat::pb::chat::v1::{ChatMessage, EventKind};

/// The messages in one DATA payload: whole gRPC frames (a 1-byte flag, a 4-byte big-endian
/// length, the message), as the gRPC spec lays them out.
fn messages_in(payload: &[u8]) -> Vec<ChatMessage> {
    let mut out = Vec::new();
    let mut rest = payload;
    while !rest.is_empty() {
        let head: [u8; 5] = rest
            .get(..5)
            .and_then(|h| h.try_into().ok())
            .expect("a DATA frame that ends inside a gRPC message prefix");
        assert_eq!(head[0], 0, "an uncompressed message");
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let body = rest
            .get(5..5 + len)
            .expect("a DATA frame that ends inside a gRPC message");
        out.push(ChatMessage::decode(body).expect("a ChatMessage"));
        rest = &rest[5 + len..];
    }
    out
}

/// A member joined by hand on stream 1 of `conn`: the join request, left open.
async fn join_by_hand(conn: &mut RawConnection, room: &str, name: &str) {
    let join = ChatMessage {
        room_id: room.into(),
        sender_id: name.into(),
        ..Default::default()
    }
    .encode_to_vec();
    let mut framed = vec![0];
    framed.extend_from_slice(&(join.len() as u32).to_be_bytes());
    framed.extend_from_slice(&join);
    let mut request = grpc_request(1, "/chat.v1.ChatService/Chat", &[]);
    request.extend_from_slice(&data(1, &framed, false));
    conn.send(&request).await;
}

/// Reads the reader's DATA frames until a message with `text` arrives; returns, per DATA frame,
/// the texts of the messages it carried.
async fn frames_until(conn: &mut RawConnection, text: &str) -> Vec<Vec<String>> {
    let mut frames = Vec::new();
    loop {
        let Some(f) = conn.next_frame().await else {
            panic!("the server closed the reader's connection; frames so far: {frames:?}");
        };
        assert_ne!(f.kind, kind::GOAWAY, "GOAWAY to the reader: {frames:?}");
        if f.kind != kind::DATA || f.stream != 1 {
            continue;
        }
        let texts: Vec<String> = messages_in(&f.payload)
            .into_iter()
            .filter(|m| kind(m) == EventKind::Message)
            .map(|m| m.text)
            .collect();
        let done = texts.iter().any(|t| t == text);
        frames.push(texts);
        if done {
            return frames;
        }
    }
}

#[tokio::test]
async fn posts_within_one_delivery_window_reach_a_member_in_one_frame() {
    within(TEST_PATIENCE, "the test", async {
        const WINDOW: Duration = Duration::from_secs(2);
        let server = ServerProcess::start(&[
            "--delivery-window",
            "2",
            "--delivery-window-above",
            "0",
            "--max-post-rate",
            "0",
        ])
        .await;
        let mut reader =
            RawConnection::connect(server.addr, &[(SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20)]).await;
        join_by_hand(&mut reader, "window", "reader").await;
        let ch = Channel::connect(server.addr).await.expect("connect");
        let mut poster = join(&ch, "window", "poster").await;
        // The room's first post: nothing woke its members for a window, so it goes out at once.
        poster.send(&post("first")).await.expect("post");
        frames_until(&mut reader, "first").await;
        // Ten more, 50 ms apart: without a window each would reach an idle reader in a frame of
        // its own. With one they wait for the window the first post opened, and leave together.
        let started = Instant::now();
        for k in 0..10 {
            poster.send(&post(&format!("m{k}"))).await.expect("post");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let frames = frames_until(&mut reader, "m9").await;
        let texts: Vec<&String> = frames.iter().flatten().collect();
        let want: Vec<String> = (0..10).map(|k| format!("m{k}")).collect();
        assert_eq!(
            texts,
            want.iter().collect::<Vec<_>>(),
            "every post, in order"
        );
        // A machine slow enough to spread the posts over more than one window gets a frame per
        // window they span.
        let windows = 1 + (started.elapsed().as_secs_f64() / WINDOW.as_secs_f64()) as usize;
        assert!(
            frames.len() <= windows,
            "10 posts over {:?} with a {WINDOW:?} window came in {} DATA frames: {frames:?}",
            started.elapsed(),
            frames.len()
        );
    })
    .await;
}

/// A server whose rooms of more than `above` members hold posts for a window far longer than any
/// wait of these tests (20 s), so that a post it held would time out; a reader and a poster joined
/// to `room` on one connection.
async fn long_window(above: &str, room: &str) -> (ServerProcess, Channel, ClientCall, ClientCall) {
    let args = ["--delivery-window", "600", "--delivery-window-above", above];
    let server = ServerProcess::start(&[&args[..], &["--max-post-rate", "0"]].concat()).await;
    let ch = Channel::connect(server.addr).await.expect("connect");
    let reader = join(&ch, room, "reader").await;
    let poster = join(&ch, room, "poster").await;
    (server, ch, reader, poster)
}

#[tokio::test]
async fn the_poster_gets_its_own_post_at_once_while_the_window_holds_it_from_the_others() {
    within(TEST_PATIENCE, "the test", async {
        let (_server, _ch, mut reader, mut poster) = long_window("0", "own").await;
        // The first post of a quiet room reaches everyone at once and opens the window.
        poster.send(&post("first")).await.expect("post");
        until_text(&mut reader, "first").await;
        until_text(&mut poster, "first").await;
        // The second is held from the reader for the window, but not from its poster: a client
        // that waits for its own post before sending the next is not slowed to one a window.
        for k in 0..3 {
            let text = format!("own{k}");
            poster.send(&post(&text)).await.expect("post");
            let echo = until_text(&mut poster, &text).await;
            assert_eq!(echo.sender_id, "poster");
        }
    })
    .await;
}

#[tokio::test]
async fn a_room_of_up_to_delivery_window_above_members_is_never_held() {
    within(TEST_PATIENCE, "the test", async {
        let (_server, ch, mut reader, mut poster) = long_window("2", "small").await;
        // Two members, not more than 2: every post wakes the reader, however close they come.
        for k in 0..5 {
            let text = format!("m{k}");
            poster.send(&post(&text)).await.expect("post");
            until_text(&mut reader, &text).await;
        }
        // A third member makes the room larger than 2: from now on posts that follow one another
        // within the window are held from the reader (the poster still gets its own).
        let mut third = join(&ch, "small", "third").await;
        poster.send(&post("opens")).await.expect("post");
        until_text(&mut third, "opens").await;
        until_text(&mut reader, "opens").await;
        poster.send(&post("held")).await.expect("post");
        until_text(&mut poster, "held").await;
        // A leave is never held: it wakes the room at once, and the held post comes with it, in
        // the room's order.
        drop(third);
        let next = next_where(&mut reader, |m| {
            m.text == "held" || kind(m) == EventKind::Left
        })
        .await;
        assert_eq!(
            next.text, "held",
            "the held post, before the later leave: {next:?}"
        );
        let left = next_where(&mut reader, |m| kind(m) == EventKind::Left).await;
        assert_eq!(left.sender_id, "third");
    })
    .await;
}
