//! A large room's batched presence events through the client: the session reports them without
//! its own comings and goings, and `h2chat chat` prints them as one line naming the first few.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::support::chat;
use crate::support::cli::ChatProcess;
use crate::support::proxy::Proxy;
use crate::support::{within, TestServer, PATIENCE, TEST_PATIENCE};
use h2chat::client::session::{Session, SessionConfig, Update};
use h2chat::grpc::client::Channel;
use h2chat::pb::chat::v1::EventKind;
use h2chat::services::app::AppConfig;
use h2chat::services::chat::presence::PresenceLimits;

/// Every room batches its presence, each batch at most 20 ms after the last.
fn batching_everywhere() -> AppConfig {
    let mut config = AppConfig::default();
    config.chat.rooms.presence = PresenceLimits {
        batch_above: 0,
        interval_per_member: Duration::from_millis(20),
        max_interval: Duration::from_millis(20),
    };
    config
}

#[tokio::test]
async fn the_session_reports_batched_presence_without_its_own_join() {
    within(
        TEST_PATIENCE,
        "the whole of test the_session_reports_batched_presence_without_its_own_join",
        async {
            let server = TestServer::start(batching_everywhere()).await;
            let ch = Channel::connect(server.addr).await.expect("connect");
            let _a = chat::join(&ch, "big", "a").await;
            let _b = chat::join(&ch, "big", "b").await;
            let config = SessionConfig::new(server.target(), "big", "me");
            let (mut session, _posts) = Session::join(config).await.expect("join");
            let _c = chat::join(&ch, "big", "c").await;
            let mut named = BTreeSet::new();
            while !named.contains("c") {
                let update = within(PATIENCE, "a presence update", session.next()).await;
                let Some(Update::Event(event)) = update else {
                    panic!("the session ended or reported {update:?}");
                };
                assert_eq!(event.kind(), EventKind::Presence, "{event:?}");
                assert!(event.joined_count > 0 || event.left_count > 0, "{event:?}");
                assert_eq!(event.joined_count as usize, event.joined_ids.len());
                named.extend(event.joined_ids);
            }
            let want: BTreeSet<String> = ["a", "b", "c"].map(String::from).into();
            assert_eq!(named, want, "its own join is not reported");
        },
    )
    .await;
}

#[tokio::test]
async fn the_terminal_client_prints_a_batch_as_one_line() {
    within(
        TEST_PATIENCE,
        "the whole of test the_terminal_client_prints_a_batch_as_one_line",
        async {
            let mut config = batching_everywhere();
            // Batches wait until they hold half the room: the five joins below make one.
            config.chat.rooms.presence.interval_per_member = Duration::from_secs(3600);
            config.chat.rooms.presence.max_interval = Duration::from_secs(3600);
            let server = TestServer::start(config).await;
            let ch = Channel::connect(server.addr).await.expect("connect");
            let _first = chat::join(&ch, "big", "first").await;
            let mut reader = ChatProcess::start(&server.target(), "big", Some("reader"), &[]);
            reader.expect_out(|l| l.contains("first")).await;
            let mut others = Vec::new();
            for n in ["ana", "bo", "cy", "dee"] {
                others.push(chat::join(&ch, "big", n).await);
            }
            // dee's post announces the batch holding its join first.
            others[3].send(&chat::post("hello")).await.expect("post");
            let line = reader.expect_out(|l| l.contains(" joined")).await;
            assert!(
                line.starts_with("* ") && line.contains(" joined: ") && line.contains("ana"),
                "{line:?}"
            );
            reader.expect_out(|l| l.ends_with("dee: hello")).await;
            reader.close_stdin();
            let done = reader.finish().await;
            assert_eq!(done.code, Some(0), "{done:#?}");
        },
    )
    .await;
}

#[tokio::test]
async fn a_session_reconnected_into_a_large_room_posts_without_waiting_for_a_batch() {
    within(
        TEST_PATIENCE,
        "the whole of test a_session_reconnected_into_a_large_room_posts_without_waiting_for_a_batch",
        async {
            let mut config = batching_everywhere();
            // No timer: a batch goes out only once it holds half the room's size in changes, or
            // on the post of a member it holds.
            config.chat.rooms.presence.batch_above = 2;
            config.chat.rooms.presence.interval_per_member = Duration::from_secs(3600);
            config.chat.rooms.presence.max_interval = Duration::from_secs(3600);
            let server = TestServer::start(config).await;
            let ch = Channel::connect(server.addr).await.expect("connect");
            let mut others = Vec::new();
            for i in 0..6 {
                others.push(chat::join(&ch, "big", &format!("o{i}")).await);
            }
            others[0].send(&chat::post("before")).await.expect("post");
            let proxy = Proxy::start(server.addr).await;
            let session_config = SessionConfig::new(proxy.addr.to_string(), "big", "sam");
            let (mut session, posts) = Session::join(session_config).await.expect("join");
            let shown = |u: &Update| matches!(u, Update::Event(e) if e.text == "before");
            next_until(&mut session, shown).await;
            proxy.cut().await;
            next_until(&mut session, |u| *u == Update::Reconnected).await;
            // sam's leave and rejoin wait in a batch (2 changes in a room of 7): nothing new is
            // delivered, yet its post goes out, and announces the rejoin before it.
            posts.send("after".into()).await.expect("post");
            let echo = |u: &Update| matches!(u, Update::Event(e) if e.text == "after");
            next_until(&mut session, echo).await;
        },
    )
    .await;
}

/// Reads updates until one satisfies `want`.
async fn next_until(session: &mut Session, want: impl Fn(&Update) -> bool) -> Update {
    loop {
        match within(PATIENCE, "a session update", session.next()).await {
            Some(u) if want(&u) => return u,
            Some(_) => continue,
            None => panic!("the session ended"),
        }
    }
}
