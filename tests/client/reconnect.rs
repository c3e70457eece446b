//! `h2chat chat` (and the session under it) through a TCP proxy that cuts or silences its
//! connection, or a server that restarts: it reconnects, resumes after the last event it showed,
//! shows every event once, in order (a gap for what the room no longer has), and posts each line
//! once.

use crate::support::{within, TEST_PATIENCE};
use std::time::Duration;

use crate::support::chat::{self, kind, reason};
use crate::support::cli::ChatProcess;
use crate::support::proxy::Proxy;
use crate::support::{RefusingAddr, TestServer};
use h2chat::client::session::{Session, SessionConfig, Update};
use h2chat::grpc::client::Channel;
use h2chat::pb::chat::v1::{EventKind, LeaveReason};
use h2chat::services::app::AppConfig;

/// The texts of `sender`'s messages in `out`, in order.
fn texts_from<'a>(out: &'a [String], sender: &str) -> Vec<&'a str> {
    let marker = format!("] {sender}: ");
    out.iter()
        .filter_map(|l| l.split_once(&marker).map(|(_, text)| text))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_connection_resumes_with_every_message_once_in_order() {
    within(
        TEST_PATIENCE,
        "the whole of test a_cut_connection_resumes_with_every_message_once_in_order",
        async {
            let server = TestServer::default().await;
            let proxy = Proxy::start(server.addr).await;
            let mut reader =
                ChatProcess::start(&proxy.addr.to_string(), "resume", Some("reader"), &[]);
            reader.expect_out(|l| l == "* reader joined").await;

            let ch = Channel::connect(server.addr).await.expect("connect");
            let mut writer = chat::join(&ch, "resume", "writer").await;
            // Past the server's post burst, so posting goes on at the post rate while the cut happens.
            let n = 400;
            let posting = tokio::spawn(async move {
                for i in 1..=n {
                    writer
                        .send(&chat::post(&format!("m{i:04}")))
                        .await
                        .expect("post");
                }
                writer
            });

            reader.expect_out(|l| l.ends_with("] writer: m0050")).await;
            proxy.cut().await;
            reader.expect_err(|l| l.contains("reconnecting…")).await;
            reader.expect_err(|l| l.contains("reconnected")).await;
            proxy.accepted(2).await;

            let _writer = posting.await.expect("posting task");
            let last = format!("] writer: m{n:04}");
            reader.expect_out(|l| l.ends_with(&last)).await;
            reader.close_stdin();
            let done = reader.finish().await;
            assert_eq!(done.code, Some(0), "{:#?}", done.err);

            let expected: Vec<String> = (1..=n).map(|i| format!("m{i:04}")).collect();
            assert_eq!(texts_from(&done.out, "writer"), expected);
            // The writer joined once, and the reader showed that once too.
            let writer_joins = done.out.iter().filter(|l| *l == "* writer joined").count();
            assert_eq!(writer_joins, 1, "{:#?}", done.out);
            server.shutdown().await;
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_lost_with_the_connection_are_sent_again_once_and_in_order() {
    within(
        TEST_PATIENCE,
        "the whole of test posts_lost_with_the_connection_are_sent_again_once_and_in_order",
        async {
            let server = TestServer::default().await;
            let proxy = Proxy::start(server.addr).await;
            let ch = Channel::connect(server.addr).await.expect("connect");
            let mut observer = chat::join(&ch, "posts", "observer").await;
            let mut poster =
                ChatProcess::start(&proxy.addr.to_string(), "posts", Some("poster"), &[]);
            poster.expect_out(|l| l == "* poster joined").await;

            for i in 1..=10 {
                poster.send(&format!("p{i:02}")).await;
            }
            poster.expect_out(|l| l.ends_with("] poster: p10")).await;
            // The connection fails silently: what the client sends now is lost on the way.
            proxy.black_hole().await;
            for i in 11..=30 {
                poster.send(&format!("p{i:02}")).await;
            }
            // At least 10 bytes a post (prefix and message) for the first 20: several posts left the
            // client and never reached the server. Then the connection breaks for good.
            proxy.dropped_from_clients(20 * 10).await;
            proxy.cut().await;
            poster.close_stdin();
            let done = poster.finish().await;
            assert_eq!(done.code, Some(0), "{:#?}", done.err);

            let expected: Vec<String> = (1..=30).map(|i| format!("p{i:02}")).collect();
            assert_eq!(texts_from(&done.out, "poster"), expected);
            // The room itself got each post once, in order, before the poster left for good.
            let mut seen = Vec::new();
            loop {
                let m = chat::next_where(&mut observer, |m| m.sender_id == "poster").await;
                match kind(&m) {
                    EventKind::Message => seen.push(m.text),
                    // The proxy's cut closes the first call's connection cleanly: a leave
                    // too, so only the leave after the last post is the poster leaving.
                    EventKind::Left if reason(&m) == LeaveReason::Left && seen.len() >= 30 => break,
                    _ => {}
                }
            }
            assert_eq!(seen, expected);
            server.shutdown().await;
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_is_rejoined_and_the_restart_is_said() {
    within(
        TEST_PATIENCE,
        "the whole of test a_restarted_server_is_rejoined_and_the_restart_is_said",
        async {
            let first = TestServer::default().await;
            let proxy = Proxy::start(first.addr).await;
            let mut reader =
                ChatProcess::start(&proxy.addr.to_string(), "restart", Some("reader"), &[]);
            reader.expect_out(|l| l == "* reader joined").await;
            {
                let ch = Channel::connect(first.addr).await.expect("connect");
                let mut writer = chat::join(&ch, "restart", "writer").await;
                writer.send(&chat::post("before")).await.expect("post");
                reader.expect_out(|l| l.ends_with("] writer: before")).await;
            }
            first.shutdown().await;
            reader.expect_err(|l| l.contains("connection lost")).await;
            // The old server is gone: attempts fail until the new one is there.
            reader
                .expect_err(|l| l.contains("still reconnecting…"))
                .await;

            let second = TestServer::default().await;
            proxy.set_upstream(second.addr);
            reader.expect_err(|l| l.contains("reconnected")).await;
            // The server said so (a reset event, in the output like every event): nothing guessed.
            reader
                .expect_out(|l| l.contains("history started over"))
                .await;
            let ch = Channel::connect(second.addr).await.expect("connect");
            let mut writer = chat::join(&ch, "restart", "writer").await;
            writer.send(&chat::post("after")).await.expect("post");
            // Numbered from 1 again in the new epoch, yet shown: the client counts over after a
            // reset.
            reader.expect_out(|l| l.ends_with("] writer: after")).await;
            reader.close_stdin();
            let done = reader.finish().await;
            assert_eq!(done.code, Some(0), "{:#?}", done.err);
            second.shutdown().await;
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_gone_silent_is_found_by_the_probe_and_replaced() {
    within(
        TEST_PATIENCE,
        "the whole of test a_connection_gone_silent_is_found_by_the_probe_and_replaced",
        async {
            // The server finds the dead peer by its keepalive; the client by its probe.
            let mut app = AppConfig::default();
            app.server.keepalive_interval = Some(Duration::from_millis(200));
            app.server.keepalive_timeout = Duration::from_millis(400);
            let server = TestServer::start(app).await;
            let proxy = Proxy::start(server.addr).await;
            let mut config = SessionConfig::new(proxy.addr.to_string(), "silent", "sam");
            config.probe_after = Duration::from_millis(200);
            config.probe_timeout = Duration::from_millis(400);
            let (mut session, posts) = Session::join(config).await.expect("join");
            let joined = |u: &Update| matches!(u, Update::Event(e) if e.sender_id == "sam");
            next_update(&mut session, joined).await;

            proxy.black_hole().await;
            let lost =
                next_update(&mut session, |u| matches!(u, Update::Reconnecting { .. })).await;
            // Nothing closed: the probe's deadline is what found the connection dead.
            assert!(
                matches!(&lost, Update::Reconnecting { error, .. } if error.contains("deadline")),
                "{lost:?}"
            );
            next_update(&mut session, |u| *u == Update::Reconnected).await;
            posts.send("still here".into()).await.expect("post");
            next_update(
                &mut session,
                |u| matches!(u, Update::Event(e) if e.text == "still here"),
            )
            .await;
            drop(posts);
            while session.next().await.is_some() {}
            session.end().await.expect("left cleanly");
            server.shutdown().await;
        },
    )
    .await;
}

/// The next update satisfying `want`, within [`chat::PATIENCE`].
async fn next_update(session: &mut Session, want: impl Fn(&Update) -> bool) -> Update {
    loop {
        match tokio::time::timeout(chat::PATIENCE, session.next()).await {
            Ok(Some(update)) if want(&update) => return update,
            Ok(Some(_)) => continue,
            Ok(None) => panic!("session ended while an update was expected"),
            Err(_) => panic!("no such update within {:?}", chat::PATIENCE),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_fell_out_of_the_history_while_away_is_shown_as_a_gap() {
    within(
        TEST_PATIENCE,
        "the whole of test what_fell_out_of_the_history_while_away_is_shown_as_a_gap",
        async {
            let mut app = AppConfig::default();
            app.chat.rooms.history_events = 5;
            let server = TestServer::start(app).await;
            let proxy = Proxy::start(server.addr).await;
            let mut reader =
                ChatProcess::start(&proxy.addr.to_string(), "away", Some("reader"), &[]);
            reader.expect_out(|l| l == "* reader joined").await;

            // Away: the connection is cut and nothing answers until the room has moved on.
            let nowhere = RefusingAddr::new();
            proxy.set_upstream(nowhere.addr);
            proxy.cut().await;
            reader.expect_err(|l| l.contains("connection lost")).await;
            let ch = Channel::connect(server.addr).await.expect("connect");
            let mut writer = chat::join(&ch, "away", "writer").await;
            for i in 1..=20 {
                writer
                    .send(&chat::post(&format!("m{i:02}")))
                    .await
                    .expect("post");
            }
            chat::until_text(&mut writer, "m20").await;

            proxy.set_upstream(server.addr);
            reader.expect_err(|l| l.contains("reconnected")).await;
            let gap = reader.expect_out(|l| l.starts_with("! missed ")).await;
            reader.expect_out(|l| l.ends_with("] writer: m20")).await;
            reader.close_stdin();
            let done = reader.finish().await;
            assert_eq!(done.code, Some(0), "{:#?}", done.err);
            // Only what the room still had after the gap, each once.
            let shown = texts_from(&done.out, "writer");
            assert!(!shown.is_empty() && shown.len() < 20, "{gap}: {shown:?}");
            let expected: Vec<String> = (21 - shown.len()..=20)
                .map(|i| format!("m{i:02}"))
                .collect();
            assert_eq!(shown, expected, "{gap}");
            server.shutdown().await;
        },
    )
    .await;
}
