//! `h2chat chat` with piped stdin against a real server: what it prints, when it exits, and its
//! exit codes.

use crate::support::chat::{self, kind, reason};
use crate::support::cli::{signal, ChatProcess};
use crate::support::{within, TEST_PATIENCE};
use crate::support::{RefusingAddr, TestServer};
use h2chat::grpc::client::Channel;
use h2chat::pb::chat::v1::{EventKind, LeaveReason};
use h2chat::services::app::AppConfig;

/// A stdout line of a message from `sender` with `text`, whatever the time.
fn is_message(line: &str, sender: &str, text: &str) -> bool {
    line.starts_with('[') && line.ends_with(&format!("] {sender}: {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_piped_clients_see_each_others_lines_and_presence() {
    within(
        TEST_PATIENCE,
        "the whole of test two_piped_clients_see_each_others_lines_and_presence",
        async {
            let server = TestServer::default().await;
            let addr = server.target();
            let mut alice = ChatProcess::start(&addr, "lobby", Some("alice"), &[]);
            alice.expect_out(|l| l == "* alice joined").await;
            alice.send("hello from alice").await;
            alice
                .expect_out(|l| is_message(l, "alice", "hello from alice"))
                .await;

            let mut bob = ChatProcess::start(&addr, "lobby", Some("bob"), &[]);
            // History first: what happened before bob came.
            bob.expect_out(|l| l == "* alice joined").await;
            bob.expect_out(|l| is_message(l, "alice", "hello from alice"))
                .await;
            bob.expect_out(|l| l == "* bob joined").await;
            alice.expect_out(|l| l == "* bob joined").await;

            bob.send("hi alice").await;
            alice.expect_out(|l| is_message(l, "bob", "hi alice")).await;
            bob.expect_out(|l| is_message(l, "bob", "hi alice")).await;
            alice.send("bye bob").await;
            bob.expect_out(|l| is_message(l, "alice", "bye bob")).await;

            bob.close_stdin();
            let bob = bob.finish().await;
            assert_eq!(bob.code, Some(0), "{bob:#?}");
            // Bob left by choice: no "(connection lost)".
            alice.expect_out(|l| l.starts_with("* bob left")).await;
            assert_eq!(alice.out.last().map(String::as_str), Some("* bob left"));

            alice.close_stdin();
            let alice = alice.finish().await;
            assert_eq!(alice.code, Some(0), "{alice:#?}");
            // Every line once: one echo of each own post, no copies.
            let hello = alice
                .out
                .iter()
                .filter(|l| is_message(l, "alice", "hello from alice"))
                .count();
            assert_eq!(hello, 1, "{:#?}", alice.out);
            server.shutdown().await;
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_of_input_exits_after_the_last_line_is_echoed() {
    within(
        TEST_PATIENCE,
        "the whole of test end_of_input_exits_after_the_last_line_is_echoed",
        async {
            let server = TestServer::default().await;
            let ch = Channel::connect(server.addr).await.expect("connect");
            let mut observer = chat::join(&ch, "batch", "observer").await;
            // More lines than the server's post burst (200): the rate limit slows the client down.
            let n = 300;
            let mut writer = ChatProcess::start(&server.target(), "batch", Some("writer"), &[]);
            for i in 1..=n {
                writer.send(&format!("line {i}")).await;
            }
            writer.close_stdin();
            let done = writer.finish().await;
            assert_eq!(done.code, Some(0), "{:#?}", done.err);
            let echoed: Vec<&String> = done
                .out
                .iter()
                .filter(|l| l.contains("] writer: line "))
                .collect();
            assert_eq!(echoed.len(), n, "every line echoed before exit");
            for (i, line) in echoed.iter().enumerate() {
                assert!(
                    is_message(line, "writer", &format!("line {}", i + 1)),
                    "{line}"
                );
            }
            // The room got each line once, in order, and then the leave (by choice).
            for i in 1..=n {
                let m = chat::next_where(&mut observer, |m| kind(m) == EventKind::Message).await;
                assert_eq!(m.text, format!("line {i}"));
            }
            let left = chat::next(&mut observer).await;
            assert_eq!(
                (kind(&left), reason(&left)),
                (EventKind::Left, LeaveReason::Left)
            );
            server.shutdown().await;
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_name_flag_the_first_line_is_the_name() {
    within(
        TEST_PATIENCE,
        "the whole of test without_a_name_flag_the_first_line_is_the_name",
        async {
            let server = TestServer::default().await;
            let mut carol = ChatProcess::start(&server.target(), "names", None, &[]);
            carol.send("carol").await;
            carol.send("first post").await;
            carol.close_stdin();
            let done = carol.finish().await;
            assert_eq!(done.code, Some(0), "{done:#?}");
            assert_eq!(done.out.first().map(String::as_str), Some("* carol joined"));
            assert!(done
                .out
                .iter()
                .any(|l| is_message(l, "carol", "first post")));
            server.shutdown().await;
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_format_prints_one_object_per_event() {
    within(
        TEST_PATIENCE,
        "the whole of test json_format_prints_one_object_per_event",
        async {
            let server = TestServer::default().await;
            let mut dan =
                ChatProcess::start(&server.target(), "json", Some("dan"), &["--format", "json"]);
            dan.send("in json").await;
            dan.close_stdin();
            let done = dan.finish().await;
            assert_eq!(done.code, Some(0), "{done:#?}");
            let events: Vec<serde_json::Value> = done
                .out
                .iter()
                .map(|l| serde_json::from_str(l).expect("each line is one JSON object"))
                .collect();
            assert_eq!(events.len(), 2, "{:#?}", done.out);
            assert_eq!(events[0]["kind"], "joined");
            assert_eq!(events[0]["sender"], "dan");
            assert_eq!(events[1]["kind"], "message");
            assert_eq!(events[1]["text"], "in json");
            assert_eq!(events[1]["room"], "json");
            let (joined, posted) = (events[0]["seq"].as_u64(), events[1]["seq"].as_u64());
            assert!(joined.is_some() && posted > joined, "{events:#?}");
            assert!(events[1]["sent_at"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z')));
            server.shutdown().await;
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_exits_3_with_a_clear_message() {
    within(
        TEST_PATIENCE,
        "the whole of test an_unreachable_server_exits_3_with_a_clear_message",
        async {
            // A port held by a socket that never listens: nothing answers there.
            let nowhere = RefusingAddr::new();
            let addr = nowhere.addr.to_string();
            let mut nobody = ChatProcess::start(&addr, "any", Some("x"), &[]);
            nobody.close_stdin();
            let done = nobody.finish().await;
            assert_eq!(done.code, Some(3), "{done:#?}");
            assert_eq!(
                done.err,
                [format!(
                    "h2chat: cannot connect to {addr}: connection refused"
                )]
            );
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_name_exits_4() {
    within(
        TEST_PATIENCE,
        "the whole of test a_taken_name_exits_4",
        async {
            let server = TestServer::default().await;
            let ch = Channel::connect(server.addr).await.expect("connect");
            let _erin = chat::join(&ch, "taken", "erin").await;
            let mut second = ChatProcess::start(&server.target(), "taken", Some("erin"), &[]);
            second.close_stdin();
            let done = second.finish().await;
            assert_eq!(done.code, Some(4), "{done:#?}");
            assert!(
                done.err.iter().any(|l| l.contains("name taken")),
                "{done:#?}"
            );
            server.shutdown().await;
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_room_or_name_exits_5() {
    within(
        TEST_PATIENCE,
        "the whole of test an_invalid_room_or_name_exits_5",
        async {
            let server = TestServer::default().await;
            let long_name = "n".repeat(200);
            for (room, name) in [("", "frank"), ("ok", long_name.as_str())] {
                let mut bad = ChatProcess::start(&server.target(), room, Some(name), &[]);
                bad.close_stdin();
                let done = bad.finish().await;
                assert_eq!(done.code, Some(5), "{done:#?}");
                assert!(done.err.iter().any(|l| l.contains("invalid")), "{done:#?}");
            }
            server.shutdown().await;
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_refused_otherwise_exits_6() {
    within(
        TEST_PATIENCE,
        "the whole of test a_join_refused_otherwise_exits_6",
        async {
            let mut config = AppConfig::default();
            config.chat.rooms.max_members_per_room = 1;
            let server = TestServer::start(config).await;
            let ch = Channel::connect(server.addr).await.expect("connect");
            let _only = chat::join(&ch, "small", "only").await;
            let mut extra = ChatProcess::start(&server.target(), "small", Some("extra"), &[]);
            extra.close_stdin();
            let done = extra.finish().await;
            assert_eq!(done.code, Some(6), "{done:#?}");
            assert!(done.err.iter().any(|l| l.contains("full")), "{done:#?}");
            server.shutdown().await;
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_leaves_cleanly_and_exits_130() {
    within(
        TEST_PATIENCE,
        "the whole of test sigint_leaves_cleanly_and_exits_130",
        async {
            let server = TestServer::default().await;
            let ch = Channel::connect(server.addr).await.expect("connect");
            let mut observer = chat::join(&ch, "signals", "observer").await;
            let mut gina = ChatProcess::start(&server.target(), "signals", Some("gina"), &[]);
            gina.expect_out(|l| l == "* gina joined").await;
            signal(gina.pid(), libc::SIGINT);
            let done = gina.finish().await;
            assert_eq!(done.code, Some(130), "{done:#?}");
            let left = chat::next_where(&mut observer, |m| kind(m) == EventKind::Left).await;
            assert_eq!(
                (left.sender_id.as_str(), reason(&left)),
                ("gina", LeaveReason::Left)
            );
            server.shutdown().await;
        },
    )
    .await;
}
