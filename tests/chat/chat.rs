//! chat.v1.ChatService over real sockets with the library's own h2 client: joining, posting,
//! validation, presence, cancellation and shutdown. (Message framing is tested at the protocol
//! layer, in `tests/protocol/framing.rs`.)

use crate::support::chat::*;
use crate::support::proxy::Proxy;
use crate::support::TestServer;
use crate::support::{within, TEST_PATIENCE};
use h2chat::grpc::client::{CallOptions, Channel};
use h2chat::grpc::Code;
use h2chat::pb::chat::v1::{ChatMessage, EventKind, LeaveReason, MembersRequest, MembersResponse};
use h2chat::services::app::AppConfig;

async fn setup() -> (TestServer, Channel) {
    let server = TestServer::default().await;
    let ch = Channel::connect(server.addr).await.expect("connect");
    (server, ch)
}

#[tokio::test]
async fn every_member_sees_every_post_in_one_order_sender_included() {
    within(
        TEST_PATIENCE,
        "the whole of test every_member_sees_every_post_in_one_order_sender_included",
        async {
            let (_server, ch) = setup().await;
            let mut alice = join(&ch, "rust", "alice").await;
            let mut bob = join(&ch, "rust", "bob").await;
            alice.send(&post("hello")).await.expect("post");
            bob.send(&post("hi alice")).await.expect("post");
            for call in [&mut alice, &mut bob] {
                let first = until_text(call, "hello").await;
                assert_eq!(first.sender_id, "alice");
                let second = next_where(call, |m| kind(m) == EventKind::Message).await;
                assert_eq!(
                    (second.sender_id.as_str(), second.text.as_str()),
                    ("bob", "hi alice")
                );
                assert_eq!(second.seq, first.seq + 1, "one order per room");
                assert!(second.sent_at.is_some(), "the server stamps sent_at");
            }
        },
    )
    .await;
}

#[tokio::test]
async fn join_message_text_is_posted() {
    within(
        TEST_PATIENCE,
        "the whole of test join_message_text_is_posted",
        async {
            let (_server, ch) = setup().await;
            let mut alice = start(&ch, &msg("r", "alice", "hello")).await;
            let m = until_text(&mut alice, "hello").await;
            assert_eq!(m.sender_id, "alice");
            assert_eq!(m.room_id, "r");
        },
    )
    .await;
}

#[tokio::test]
async fn spoofed_sender_is_overwritten_with_the_joined_identity() {
    within(
        TEST_PATIENCE,
        "the whole of test spoofed_sender_is_overwritten_with_the_joined_identity",
        async {
            let (_server, ch) = setup().await;
            let mut bob = join(&ch, "r", "bob").await;
            bob.send(&msg("r", "alice", "it was me"))
                .await
                .expect("post");
            let m = until_text(&mut bob, "it was me").await;
            assert_eq!(m.sender_id, "bob");
        },
    )
    .await;
}

#[tokio::test]
async fn empty_text_is_not_posted() {
    within(
        TEST_PATIENCE,
        "the whole of test empty_text_is_not_posted",
        async {
            let (_server, ch) = setup().await;
            let mut a = join(&ch, "r", "a").await;
            a.send(&post("")).await.expect("post");
            a.send(&post("after")).await.expect("post");
            let m = next_where(&mut a, |m| kind(m) == EventKind::Message).await;
            assert_eq!(m.text, "after");
        },
    )
    .await;
}

#[tokio::test]
async fn half_closed_member_keeps_receiving() {
    within(
        TEST_PATIENCE,
        "the whole of test half_closed_member_keeps_receiving",
        async {
            let (_server, ch) = setup().await;
            let mut alice = ch.start(CHAT, CallOptions::default()).await.expect("start");
            alice
                .send_last(&msg("r", "alice", ""))
                .await
                .expect("join and half-close");
            alice.headers().await.expect("joined");
            let mut bob = join(&ch, "r", "bob").await;
            bob.send(&post("still there?")).await.expect("post");
            let m = until_text(&mut alice, "still there?").await;
            assert_eq!(m.sender_id, "bob");
        },
    )
    .await;
}

#[tokio::test]
async fn name_taken_is_already_exists() {
    within(
        TEST_PATIENCE,
        "the whole of test name_taken_is_already_exists",
        async {
            let (_server, ch) = setup().await;
            let _alice = join(&ch, "r", "alice").await;
            let mut again = start(&ch, &msg("r", "alice", "")).await;
            let status = final_status(&mut again).await;
            assert_eq!(status.code(), Code::AlreadyExists, "{status}");
            // The same name in another room is fine.
            let _other = join(&ch, "other", "alice").await;
        },
    )
    .await;
}

#[tokio::test]
async fn invalid_joins_and_posts_are_invalid_argument_naming_the_rule() {
    within(
        TEST_PATIENCE,
        "the whole of test invalid_joins_and_posts_are_invalid_argument_naming_the_rule",
        async {
            let (_server, ch) = setup().await;
            let long = "x".repeat(65);
            let cases: Vec<(ChatMessage, &str)> = vec![
                (msg("", "alice", ""), "room_id"),
                (msg("r", "", ""), "sender_id"),
                (msg(&long, "alice", ""), "max-id-bytes"),
                (msg("r", &long, ""), "max-id-bytes"),
                (msg("r", "al\nice", ""), "control"),
                (msg("r", "alice", &"t".repeat(4097)), "max-text-bytes"),
            ];
            for (first, needle) in cases {
                let mut call = start(&ch, &first).await;
                let status = final_status(&mut call).await;
                assert_eq!(status.code(), Code::InvalidArgument, "{first:?}: {status}");
                assert!(
                    status.message().contains(needle),
                    "{status} should name {needle}"
                );
            }
            // After joining: another room, or too long a text.
            let mut a = join(&ch, "r", "a").await;
            a.send(&msg("elsewhere", "", "hi")).await.expect("post");
            let status = final_status(&mut a).await;
            assert_eq!(status.code(), Code::InvalidArgument, "{status}");
            let mut b = join(&ch, "r", "b").await;
            b.send(&post(&"t".repeat(4097))).await.expect("post");
            assert_eq!(final_status(&mut b).await.code(), Code::InvalidArgument);
        },
    )
    .await;
}

#[tokio::test]
async fn no_join_message_is_invalid_argument() {
    within(
        TEST_PATIENCE,
        "the whole of test no_join_message_is_invalid_argument",
        async {
            let (_server, ch) = setup().await;
            let mut call = ch.start(CHAT, CallOptions::default()).await.expect("start");
            call.close_send().expect("half-close");
            assert_eq!(final_status(&mut call).await.code(), Code::InvalidArgument);
        },
    )
    .await;
}

#[tokio::test]
async fn cancel_removes_the_member_and_others_see_it_leave() {
    within(
        TEST_PATIENCE,
        "the whole of test cancel_removes_the_member_and_others_see_it_leave",
        async {
            let (_server, ch) = setup().await;
            let mut alice = join(&ch, "r", "alice").await;
            let mut bob = join(&ch, "r", "bob").await;
            next_where(&mut alice, |m| {
                kind(m) == EventKind::Joined && m.sender_id == "bob"
            })
            .await;
            bob.cancel();
            let left = next_where(&mut alice, |m| kind(m) == EventKind::Left).await;
            assert_eq!(left.sender_id, "bob");
            assert_eq!(reason(&left), LeaveReason::Left);
            let who: MembersResponse = ch
                .unary(
                    "/chat.v1.ChatService/Members",
                    &MembersRequest {
                        room_id: "r".into(),
                    },
                    CallOptions::default(),
                )
                .await
                .expect("members");
            assert_eq!(who.member_ids, vec!["alice".to_string()]);
            // The name is free again.
            let _bob = join(&ch, "r", "bob").await;
        },
    )
    .await;
}

#[tokio::test]
async fn a_connection_the_client_closes_removes_the_member_as_left() {
    within(
        TEST_PATIENCE,
        "the whole of test a_connection_the_client_closes_removes_the_member_as_left",
        async {
            let server = TestServer::default().await;
            let ch = Channel::connect(server.addr).await.expect("connect");
            let mut alice = join(&ch, "r", "alice").await;
            // Bob's connection is a socket this test can cut.
            let sock = std::net::TcpStream::connect(server.addr).expect("connect");
            let cutter = sock.try_clone().expect("clone");
            sock.set_nonblocking(true).expect("nonblocking");
            let bob_ch =
                Channel::connect_io(tokio::net::TcpStream::from_std(sock).expect("tokio socket"))
                    .await
                    .expect("h2");
            let _bob = join(&bob_ch, "r", "bob").await;
            next_where(&mut alice, |m| {
                kind(m) == EventKind::Joined && m.sender_id == "bob"
            })
            .await;
            // A clean close (FIN) with the call open: what a client process that ends does.
            cutter.shutdown(std::net::Shutdown::Both).expect("cut");
            let left = next_where(&mut alice, |m| kind(m) == EventKind::Left).await;
            assert_eq!(left.sender_id, "bob");
            assert_eq!(reason(&left), LeaveReason::Left);
        },
    )
    .await;
}

#[tokio::test]
async fn members_lists_in_join_order_and_unknown_room_is_empty() {
    within(
        TEST_PATIENCE,
        "the whole of test members_lists_in_join_order_and_unknown_room_is_empty",
        async {
            let (_server, ch) = setup().await;
            let _c = join(&ch, "r", "carol").await;
            let _a = join(&ch, "r", "alice").await;
            let path = "/chat.v1.ChatService/Members";
            let who: MembersResponse = ch
                .unary(
                    path,
                    &MembersRequest {
                        room_id: "r".into(),
                    },
                    CallOptions::default(),
                )
                .await
                .expect("members");
            assert_eq!(
                who.member_ids,
                vec!["carol".to_string(), "alice".to_string()]
            );
            let none: MembersResponse = ch
                .unary(
                    path,
                    &MembersRequest {
                        room_id: "nope".into(),
                    },
                    CallOptions::default(),
                )
                .await
                .expect("members");
            assert!(none.member_ids.is_empty());
        },
    )
    .await;
}

#[tokio::test]
async fn graceful_shutdown_ends_live_calls_with_unavailable() {
    within(
        TEST_PATIENCE,
        "the whole of test graceful_shutdown_ends_live_calls_with_unavailable",
        async {
            let server = TestServer::start(AppConfig::default()).await;
            let ch = Channel::connect(server.addr).await.expect("connect");
            let mut alice = join(&ch, "r", "alice").await;
            let mut bob = join(&ch, "r", "bob").await;
            let stopping = tokio::spawn(server.shutdown());
            for call in [&mut alice, &mut bob] {
                let status = final_status(call).await;
                assert_eq!(status.code(), Code::Unavailable, "{status}");
                assert_eq!(status.message(), "server shutting down");
            }
            stopping.await.expect("server stopped");
        },
    )
    .await;
}

#[tokio::test]
async fn full_room_and_too_many_rooms_are_resource_exhausted_naming_the_limit() {
    within(
        TEST_PATIENCE,
        "the whole of test full_room_and_too_many_rooms_are_resource_exhausted_naming_the_limit",
        async {
            let mut config = AppConfig::default();
            config.chat.rooms.max_members_per_room = 1;
            config.chat.rooms.max_rooms = 1;
            let server = TestServer::start(config).await;
            let ch = Channel::connect(server.addr).await.expect("connect");
            let _a = join(&ch, "r", "a").await;
            let mut b = start(&ch, &msg("r", "b", "")).await;
            let status = final_status(&mut b).await;
            assert_eq!(status.code(), Code::ResourceExhausted);
            assert!(
                status.message().contains("max-members-per-room"),
                "{status}"
            );
            let mut c = start(&ch, &msg("r2", "c", "")).await;
            let status = final_status(&mut c).await;
            assert_eq!(status.code(), Code::ResourceExhausted);
            assert!(status.message().contains("max-rooms"), "{status}");
        },
    )
    .await;
}

#[tokio::test]
async fn joins_per_connection_are_capped() {
    within(
        TEST_PATIENCE,
        "the whole of test joins_per_connection_are_capped",
        async {
            let mut config = AppConfig::default();
            config.chat.max_joins_per_connection = 2;
            let server = TestServer::start(config).await;
            let ch = Channel::connect(server.addr).await.expect("connect");
            let _a = join(&ch, "r", "a").await;
            let _b = join(&ch, "r", "b").await;
            let mut c = start(&ch, &msg("r", "c", "")).await;
            let status = final_status(&mut c).await;
            assert_eq!(status.code(), Code::ResourceExhausted);
            assert!(
                status.message().contains("max-joins-per-connection"),
                "{status}"
            );
            // Another connection may still join.
            let other = Channel::connect(server.addr).await.expect("connect");
            let _c = join(&other, "r", "c").await;
        },
    )
    .await;
}

#[tokio::test]
async fn join_headers_carry_the_seq_of_the_members_join_event() {
    within(
        TEST_PATIENCE,
        "the whole of test join_headers_carry_the_seq_of_the_members_join_event",
        async {
            let (_server, ch) = setup().await;
            let mut alice = join(&ch, "seq", "alice").await;
            alice.send(&post("before bob")).await.expect("post");
            until_text(&mut alice, "before bob").await;
            let mut bob = start(&ch, &msg("seq", "bob", "")).await;
            let joined_seq: u64 = bob
                .headers()
                .await
                .expect("join accepted")
                .get(h2chat::services::chat::JOINED_SEQ_METADATA)
                .and_then(|v| v.parse().ok())
                .expect("chat-joined-seq header");
            let joined = next_where(&mut bob, |m| {
                kind(m) == EventKind::Joined && m.sender_id == "bob"
            })
            .await;
            assert_eq!(joined.seq, joined_seq);
        },
    )
    .await;
}

/// The server's keepalive: a member whose connection went silent (a black-holed proxy: no
/// close, no PING answers) is removed as disconnected within interval + timeout, and others see
/// it leave; a member idle on a live connection (its h2 client answers PINGs) is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_removes_a_vanished_member_and_keeps_an_idle_one() {
    within(
        TEST_PATIENCE,
        "the whole of test keepalive_removes_a_vanished_member_and_keeps_an_idle_one",
        async {
            let mut app = AppConfig::default();
            app.server.keepalive_interval = Some(std::time::Duration::from_millis(200));
            app.server.keepalive_timeout = std::time::Duration::from_millis(400);
            let server = TestServer::start(app).await;
            let proxy = Proxy::start(server.addr).await;
            let far = Channel::connect(proxy.addr).await.expect("connect");
            let _vanishing = join(&far, "r", "vanishing").await;
            let near = Channel::connect(server.addr).await.expect("connect");
            let mut idle = join(&near, "r", "idle").await;

            proxy.black_hole().await;
            let left = next_where(&mut idle, |m| {
                kind(m) == EventKind::Left && m.sender_id == "vanishing"
            })
            .await;
            assert_eq!(reason(&left), LeaveReason::Disconnected);
            // The leave took at least one interval and one timeout: the idle member's
            // connection was pinged too, and stays.
            let who: MembersResponse = near
                .unary(
                    "/chat.v1.ChatService/Members",
                    &MembersRequest {
                        room_id: "r".into(),
                    },
                    CallOptions::default(),
                )
                .await
                .expect("members");
            assert_eq!(who.member_ids, ["idle"]);
            idle.send(&post("still here")).await.expect("post");
            until_text(&mut idle, "still here").await;
            server.shutdown().await;
        },
    )
    .await;
}
