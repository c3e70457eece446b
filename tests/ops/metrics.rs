//! `--metrics-addr`: after a chat session, a refused join, an unknown method and a gap, a scrape
//! shows each in the go-grpc-prometheus series and h2chat's own, with the right values, and
//! never a room or member name as a label.

use h2chat::grpc::client::Channel;
use h2chat::grpc::Code;
use h2chat::pb::chat::v1::{ChatMessage, EventKind};

use crate::logs::call_unknown_method;
use crate::scrape::Scrape;
use crate::server::LoggedServer;
use crate::support::chat::{self, kind, msg, next_where, post};

const CHAT: [(&str, &str); 2] = [
    ("grpc_service", "chat.v1.ChatService"),
    ("grpc_method", "Chat"),
];

fn with<'a>(base: &[(&'a str, &'a str)], more: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    base.iter().chain(more).copied().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_after_a_session_a_refusal_and_a_gap_has_the_right_values() {
    // History of 2 events, so a late resume misses some; 2 posts a second, burst 1, so the
    // second post waits.
    let mut server = LoggedServer::start(
        &[
            "--metrics-addr",
            "127.0.0.1:0",
            "--history",
            "2",
            "--max-post-rate",
            "2",
            "--post-burst",
            "1",
        ],
        &[],
    )
    .await;
    let metrics_addr = server.metrics_addr();

    // Before anything: every series is there, at 0.
    let fresh = Scrape::get(metrics_addr).await;
    for name in [
        "h2chat_chat_rooms",
        "h2chat_chat_members",
        "h2chat_chat_gaps_total",
        "h2chat_chat_posts_throttled_total",
        "h2chat_tls_handshake_failures_total",
        "h2chat_redis_errors_total",
    ] {
        assert_eq!(fresh.must(name, &[]), 0.0, "{name}");
    }

    // One connection: a watcher, alice posting twice, bob resuming from the start (a gap),
    // carol refused (alice's name), and a call to a method nobody serves.
    let ch = Channel::connect(server.addr).await.expect("connect");
    let mut alice = chat::join(&ch, "m", "alice").await;
    alice.send(&post("one")).await.expect("post");
    alice.send(&post("two")).await.expect("post");
    chat::until_text(&mut alice, "two").await;
    let mut bob = chat::start(
        &ch,
        &ChatMessage {
            resume_after_seq: Some(0),
            ..msg("m", "bob", "")
        },
    )
    .await;
    let gap = next_where(&mut bob, |m| kind(m) == EventKind::Gap).await;
    let missed = gap.gap_to - gap.gap_from + 1;
    let mut carol = chat::start(&ch, &msg("m", "alice", "")).await;
    assert_eq!(
        chat::final_status(&mut carol).await.code(),
        Code::AlreadyExists
    );
    call_unknown_method(&ch).await;

    // Alice and bob leave (their calls are cancelled); the log says when each has.
    drop(alice);
    drop(bob);
    let mut gone = Vec::new();
    while gone.len() < 2 {
        let line = server
            .expect_log(|l| {
                l.contains(" left ") && (l.contains("\"alice\"") || l.contains("\"bob\""))
            })
            .await;
        gone.push(line);
    }

    let code = |c| with(&CHAT, &[("grpc_code", c)]);
    // Counted in the calls' own tasks just before or after the leave lines: looked for until
    // they are there.
    let s = Scrape::until(metrics_addr, "both calls handled and the room gone", |s| {
        s.value("grpc_server_handled_total", &code("Canceled")) == Some(2.0)
            && s.value("h2chat_chat_rooms", &[]) == Some(0.0)
    })
    .await;
    // go-grpc-prometheus' series.
    assert_eq!(
        s.must("grpc_server_started_total", &CHAT),
        3.0,
        "alice, bob, carol"
    );
    assert_eq!(s.must("grpc_server_handled_total", &code("Canceled")), 2.0);
    assert_eq!(
        s.must("grpc_server_handled_total", &code("AlreadyExists")),
        1.0
    );
    assert_eq!(s.must("grpc_server_handling_seconds_count", &CHAT), 3.0);
    let inf = with(&CHAT, &[("le", "+Inf")]);
    assert_eq!(s.must("grpc_server_handling_seconds_bucket", &inf), 3.0);
    // Joins: 3; alice's posts: 2.
    assert_eq!(s.must("grpc_server_msg_received_total", &CHAT), 5.0);
    assert!(s.must("grpc_server_msg_sent_total", &CHAT) >= 5.0);
    // The unknown method: one label value for every unserved path.
    let unknown = [
        ("grpc_service", "unknown"),
        ("grpc_method", "unknown"),
        ("grpc_code", "Unimplemented"),
    ];
    assert_eq!(s.must("grpc_server_handled_total", &unknown), 1.0);
    assert_eq!(
        s.must("h2chat_calls_refused_total", &[("reason", "unimplemented")]),
        1.0
    );
    assert!(s
        .label_sets("grpc_server_started_total")
        .iter()
        .all(|l| l["grpc_method"] != "Method"));

    // Connections.
    assert_eq!(s.must("h2chat_connections_accepted_total", &[]), 1.0);
    assert_eq!(s.must("h2chat_connections_open", &[]), 1.0);
    let timeout = [("reason", "handshake_timeout")];
    assert_eq!(s.must("h2chat_connections_refused_total", &timeout), 0.0);

    // Chat.
    assert_eq!(
        s.must("h2chat_chat_rooms", &[]),
        0.0,
        "the room went with its last member"
    );
    assert_eq!(s.must("h2chat_chat_members", &[]), 0.0);
    let joined = [("event", "joined"), ("reason", "")];
    assert_eq!(s.must("h2chat_chat_presence_events_total", &joined), 2.0);
    // A cancel is `left`, or `disconnected` when the handler saw the reset first.
    let left: f64 = ["left", "disconnected"]
        .iter()
        .filter_map(|r| {
            s.value(
                "h2chat_chat_presence_events_total",
                &[("event", "left"), ("reason", r)],
            )
        })
        .sum();
    assert_eq!(left, 2.0);
    assert_eq!(s.must("h2chat_chat_posts_total", &[]), 2.0);
    assert_eq!(
        s.must("h2chat_chat_posts_throttled_total", &[]),
        1.0,
        "alice's second post"
    );
    assert_eq!(s.must("h2chat_chat_gaps_total", &[]), 1.0);
    assert_eq!(s.must("h2chat_chat_gap_events_total", &[]), missed as f64);
    // At least what the test itself read: alice's join, "one" and "two"; bob's events after
    // the gap.
    assert!(s.must("h2chat_chat_deliveries_total", &[]) >= 4.0);

    // Stubs for features still to come are exported at 0.
    assert_eq!(s.must("h2chat_tls_handshake_failures_total", &[]), 0.0);
    assert_eq!(
        s.must(
            "h2chat_auth_token_rejections_total",
            &[("reason", "invalid")]
        ),
        0.0
    );
    assert_eq!(
        s.must("h2chat_budget_bytes_in_use", &[("budget", "send")]),
        0.0
    );

    // No label value anywhere is a room or member name.
    for name in ["\"m\"", "\"alice\"", "\"bob\"", "\"carol\""] {
        assert!(
            !s.text.contains(name),
            "{name} appears in the scrape:\n{}",
            s.text
        );
    }
}
