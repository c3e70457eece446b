//! `Members` in a loop on a 5,000-member room: the answer is the room's join-ordered list, and
//! the room goes on delivering meanwhile.
//!
//! The attack (issue 12): `Members` collected and sorted the names under the room's lock, so
//! calling it in a loop on a 5,000-member room took that room's p99 from 1.1 to 25 ms. The room
//! now keeps its members in join order in a list shared by `Arc`: `Members` holds the lock for
//! one clone of it (the room engine's unit test `members_are_in_join_order_and_shared_not_copied`
//! checks that two calls get the same list, not copies). This test checks what a client sees,
//! by order and by count, with no timing: the names come in join order (never sorted), and posts
//! keep being delivered, in order, to a member on another connection while Members is called
//! back to back.

use std::sync::atomic::{AtomicBool, Ordering};

use h2chat::grpc::{CallOptions, Channel};
use h2chat::pb::chat::v1::{ChatMessage, MembersRequest, MembersResponse};
use h2chat::protocol::MEMBERS_PATH;

use crate::harness::{joined, message, well_behaved_check, within, Attacker, Server, PATIENCE};
use crate::support::chat::{join, post, until_text};

/// Members join in waves, one connection each; a wave joins only once the previous one has.
const WAVES: usize = 20;
/// Members per wave (under the default `--max-joins-per-connection` of 256).
const PER_WAVE: usize = 250;
/// Members calls in the loop.
const MEMBERS_CALLS: usize = 20;
/// A bound on the posts made while the loop runs (the loop ends them).
const MAX_POSTS: usize = 100_000;

/// Member `m` of wave `w`. Sorted by name, the waves interleave ("000-w00", "000-w01", …); in
/// join order each wave comes whole, after the one before.
fn name(wave: usize, m: usize) -> String {
    // 101 is coprime with PER_WAVE, so this is a permutation of 0..PER_WAVE.
    format!("{:03}-w{wave:02}", (m * 101) % PER_WAVE)
}

async fn members(ch: &Channel) -> Vec<String> {
    let resp: MembersResponse = ch
        .unary(
            MEMBERS_PATH,
            &MembersRequest {
                room_id: "big".into(),
            },
            CallOptions::default(),
        )
        .await
        .expect("Members answers");
    resp.member_ids
}

/// Checks `got` is every wave whole, in wave order, then `last`: join order, which sorting by name
/// would break.
fn assert_join_order(got: &[String], last: &[&str]) {
    assert_eq!(got.len(), WAVES * PER_WAVE + last.len(), "member count");
    for (w, chunk) in got.chunks(PER_WAVE).take(WAVES).enumerate() {
        let suffix = format!("-w{w:02}");
        if let Some((i, stray)) = chunk
            .iter()
            .enumerate()
            .find(|(_, n)| !n.ends_with(&suffix))
        {
            panic!(
                "not join order: {stray:?} is at place {}, among wave {w}'s; the list starts {:?}",
                w * PER_WAVE + i,
                got.get(..5)
            );
        }
        let mut chunk = chunk.to_vec();
        chunk.sort();
        chunk.dedup();
        assert_eq!(chunk.len(), PER_WAVE, "wave {w} has every member once");
    }
    let tail: Vec<&str> = got
        .iter()
        .skip(WAVES * PER_WAVE)
        .map(String::as_str)
        .collect();
    assert_eq!(tail, last, "the last to join come last");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_in_a_loop_on_a_5000_member_room_is_join_ordered_and_the_room_delivers_meanwhile() {
    // Members that never read: they must not be reset while the test runs.
    let server = Server::start(&["--max-post-rate", "0", "--send-timeout", "600"]);
    let mut waves = Vec::new();
    for w in 0..WAVES {
        let mut attacker = Attacker::connect(server.addr, 0).await;
        let mut joins = Vec::new();
        for m in 0..PER_WAVE {
            let first = ChatMessage {
                room_id: "big".into(),
                sender_id: name(w, m),
                ..ChatMessage::default()
            };
            joins.push(
                attacker
                    .call("/chat.v1.ChatService/Chat", &[], message(&first), false)
                    .await,
            );
        }
        // Every member of this wave has joined before the next wave starts.
        waves.push((attacker, joined(joins).await));
    }

    let ch = Channel::connect(server.addr).await.expect("connect");
    let mut speaker = join(&ch, "big", "speaker").await;
    let listen_ch = Channel::connect(server.addr).await.expect("connect");
    let mut listener = join(&listen_ch, "big", "listener").await;
    let asker = Channel::connect(server.addr).await.expect("connect");

    // Members back to back on one connection; meanwhile the speaker posts, one post at a time,
    // each read by the listener before the next, until the loop is done.
    let done = AtomicBool::new(false);
    let ask = async {
        for _ in 0..MEMBERS_CALLS {
            assert_join_order(&members(&asker).await, &["speaker", "listener"]);
        }
        done.store(true, Ordering::SeqCst);
    };
    let talk = async {
        let mut delivered = 0;
        while !done.load(Ordering::SeqCst) && delivered < MAX_POSTS {
            let text = format!("p{delivered}");
            speaker.send(&post(&text)).await.expect("post");
            until_text(&mut listener, &text).await;
            delivered += 1;
        }
        delivered
    };
    let ((), delivered) = within(PATIENCE, "the Members loop beside the posts", async {
        tokio::join!(ask, talk)
    })
    .await;
    // How many is the machine's business (no timing is asserted); that each was delivered, in
    // turn, while the loop ran is the test's.
    eprintln!("{delivered} posts delivered, each in turn, during {MEMBERS_CALLS} Members calls");
    well_behaved_check(server.addr).await;
    drop(waves);
}
