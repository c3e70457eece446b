//! Chat members cost a cursor: a member whose client grants no window holds no batch of its own.
//!
//! The attack (issue 12): members that join with window 0 (and `resume_after_seq: 0`) each held a
//! private copy of up to 64 KiB of the room's history: about 16 MiB per 256-member connection.

use h2chat::grpc::Channel;
use h2chat::pb::chat::v1::ChatMessage;

use crate::harness::{message, mib, Attacker, Server};
use crate::support::chat::{join, post, until_text};

/// Zero-window members per connection (the default `--max-joins-per-connection`).
const MEMBERS_PER_CONNECTION: usize = 256;
/// Attacking connections.
const CONNECTIONS: usize = 4;
/// What one zero-window member may cost the server (issue 12): all of it, h2's stream state and
/// its per-connection buffers, and the call's task included. 3.5-4.0 KiB measured with each
/// connection's joins in one burst (the worst case for h2's buffers); it was 5.1-5.7 KiB while
/// every member's handler kept room for its join, a post in flight and three copies of a message,
/// and 3.8-4.2 KiB while the call's task took a 1,024-byte cell instead of 896.
const PER_MEMBER: u64 = 4 << 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_window_members_hold_no_copy_of_the_history() {
    let server = Server::start(&["--max-post-rate", "0", "--send-timeout", "600"]);
    // A room whose history (1 MiB) is full of 4 KiB texts.
    let ch = Channel::connect(server.addr).await.expect("connect");
    let mut poster = join(&ch, "full", "poster").await;
    let text = "t".repeat(4000);
    for _ in 0..300 {
        poster.send(&post(&text)).await.expect("post");
    }
    poster.send(&post("filled")).await.expect("post");
    until_text(&mut poster, "filled").await;

    let base = server.rss();
    server.reset_peak();
    let mut attackers = Vec::new();
    let mut joined = Vec::new();
    for c in 0..CONNECTIONS {
        // Each connection's joins arrive in one burst: the worst case for h2's buffers.
        let (mut attacker, paused) =
            Attacker::connect_paused(server.addr, 0, MEMBERS_PER_CONNECTION).await;
        for m in 0..MEMBERS_PER_CONNECTION {
            let first = ChatMessage {
                room_id: "full".into(),
                sender_id: format!("z{c}-{m}"),
                // Half resume from the start of the history, half get the recent history.
                resume_after_seq: (m % 2 == 0).then_some(0),
                ..ChatMessage::default()
            };
            let (response, tx) = attacker
                .call("/chat.v1.ChatService/Chat", &[], message(&first), false)
                .await;
            joined.push((response, tx));
        }
        paused.resume();
        attackers.push(attacker);
    }
    let streams = crate::harness::joined(joined).await;
    // The room goes on for everyone else.
    poster.send(&post("still here")).await.expect("post");
    until_text(&mut poster, "still here").await;
    let peak = server.settled_peak().await;
    let members = (CONNECTIONS * MEMBERS_PER_CONNECTION) as u64;
    let per_member = peak.saturating_sub(base) / members;
    eprintln!(
        "{members} zero-window members: grown {:.1} MiB, {per_member} bytes each",
        mib(peak.saturating_sub(base))
    );
    assert!(
        per_member <= PER_MEMBER,
        "a zero-window member costs {per_member} bytes (at most {PER_MEMBER})"
    );
    drop((streams, attackers));
}
