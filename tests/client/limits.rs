//! The chat client goes by what the server says: its text limit (`chat-max-text-bytes`), told
//! locally and without ending the session; reconnect notices that back off; and its own leave and
//! rejoin around a reconnect not shown as someone else's.

use std::time::Duration;

use crate::support::chat::{self, kind, PATIENCE};
use crate::support::cli::ChatProcess;
use crate::support::proxy::Proxy;
use crate::support::TestServer;
use h2chat::client::session::{Session, SessionConfig, Update};
use h2chat::grpc::client::Channel;
use h2chat::pb::chat::v1::EventKind;
use h2chat::services::app::AppConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scripted_line_over_the_servers_limit_is_refused_locally_and_the_rest_is_posted() {
    let mut config = AppConfig::default();
    config.chat.max_text_bytes = 8;
    let server = TestServer::start(config).await;
    let mut carol = ChatProcess::start(&server.target(), "short", Some("carol"), &[]);
    carol.send("ok").await;
    carol.send("far too long for it").await;
    carol.send("fine").await;
    carol.close_stdin();
    let done = carol.finish().await;
    assert_eq!(done.code, Some(0), "{done:#?}");
    let posted: Vec<&str> = done
        .out
        .iter()
        .filter_map(|l| l.split_once("] carol: ").map(|(_, t)| t))
        .collect();
    assert_eq!(posted, vec!["ok", "fine"], "{done:#?}");
    assert!(
        done.err
            .iter()
            .any(|l| l == "! not sent: 19 bytes is over the server's limit of 8 bytes"),
        "{done:#?}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_over_the_default_limit_is_told_as_the_readme_shows() {
    let server = TestServer::default().await;
    let mut bot = ChatProcess::start(&server.target(), "long", Some("bot"), &[]);
    bot.send(&"x".repeat(5000)).await;
    bot.close_stdin();
    let done = bot.finish().await;
    assert_eq!(done.code, Some(0), "{done:#?}");
    let notice = "! not sent: 5000 bytes is over the server's limit of 4096 bytes";
    assert!(done.err.iter().any(|l| l == notice), "{done:#?}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_typed_in_nfd_knows_its_own_posts_in_the_servers_nfc() {
    let server = TestServer::default().await;
    // "émile" as "e" and a combining accent: the server writes it as one character.
    let mut emile = ChatProcess::start(&server.target(), "nfd", Some("e\u{301}mile"), &[]);
    emile.send("bonjour").await;
    emile.close_stdin();
    // It exits once its post is echoed, which it must recognise as its own.
    let done = emile.finish().await;
    assert_eq!(done.code, Some(0), "{done:#?}");
    assert!(
        done.out
            .iter()
            .any(|l| l.ends_with("] \u{e9}mile: bonjour")),
        "{done:#?}"
    );
    server.shutdown().await;
}

/// Every update of `session` for `within`.
async fn updates_for(session: &mut Session, within: Duration) -> Vec<Update> {
    let mut seen = Vec::new();
    let until = tokio::time::Instant::now() + within;
    while let Ok(Some(update)) = tokio::time::timeout_at(until, session.next()).await {
        seen.push(update);
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_notices_back_off() {
    let server = TestServer::default().await;
    let proxy = Proxy::start(server.addr).await;
    let mut config = SessionConfig::new(proxy.addr.to_string(), "outage", "olive");
    config.backoff_initial = Duration::from_millis(1);
    config.backoff_max = Duration::from_millis(2);
    let (mut session, _posts) = Session::join(config).await.expect("join");
    // Nothing answers from now on.
    let nowhere = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    };
    proxy.set_upstream(nowhere);
    proxy.cut().await;
    let seen = updates_for(&mut session, Duration::from_millis(1500)).await;
    let attempts: Vec<u32> = seen
        .iter()
        .filter_map(|u| match u {
            Update::Reconnecting { attempt, .. } => Some(*attempt),
            _ => None,
        })
        .collect();
    // Hundreds of attempts in that time; only a handful of notices, at 1, 2, 4, 8, …
    assert!(attempts.len() >= 4, "{attempts:?}");
    assert!(attempts.len() <= 12, "{attempts:?}");
    let expected: Vec<u32> = (0..attempts.len() as u32).map(|i| 1 << i).collect();
    assert_eq!(attempts, expected);
    session.leave();
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_leave_and_rejoin_around_a_reconnect_are_not_shown_as_events() {
    let server = TestServer::default().await;
    let proxy = Proxy::start(server.addr).await;
    let mut config = SessionConfig::new(proxy.addr.to_string(), "blip", "ivy");
    config.backoff_initial = Duration::from_millis(10);
    let (mut session, posts) = Session::join(config).await.expect("join");
    let ch = Channel::connect(server.addr).await.expect("connect");
    let mut other = chat::join(&ch, "blip", "other").await;
    proxy.cut().await;
    // The other member sees ivy leave and come back; ivy's own session only says it reconnected.
    chat::next_where(&mut other, |m| {
        kind(m) == EventKind::Left && m.sender_id == "ivy"
    })
    .await;
    chat::next_where(&mut other, |m| {
        kind(m) == EventKind::Joined && m.sender_id == "ivy"
    })
    .await;
    posts.send("back".into()).await.expect("post");
    let mut seen = Vec::new();
    loop {
        let update = tokio::time::timeout(PATIENCE, session.next())
            .await
            .expect("an update in time")
            .expect("session going");
        let done = matches!(&update, Update::Event(e) if e.text == "back");
        seen.push(update);
        if done {
            break;
        }
    }
    let ivy_presence: Vec<EventKind> = seen
        .iter()
        .filter_map(|u| match u {
            Update::Event(e) if e.sender_id == "ivy" && kind(e) != EventKind::Message => {
                Some(kind(e))
            }
            _ => None,
        })
        .collect();
    assert_eq!(ivy_presence, vec![EventKind::Joined], "{seen:#?}");
    assert!(seen.contains(&Update::Reconnected), "{seen:#?}");
    drop(posts);
    while session.next().await.is_some() {}
    server.shutdown().await;
}
