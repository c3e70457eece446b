//! Room epochs over real sockets: a restarted server or a recreated room is a new history with a
//! new epoch; a resume in another epoch gets one reset event and the whole present history; a
//! resume past the head of the present epoch is OUT_OF_RANGE; a client that sends no epoch is never
//! handed a guessed tail.

use std::time::Duration;

use crate::support::chat::{self, kind, PATIENCE};
use crate::support::proxy::Proxy;
use crate::support::TestServer;
use h2chat::client::session::{Session, SessionConfig, Update};
use h2chat::grpc::client::{Channel, ClientCall};
use h2chat::grpc::Code;
use h2chat::pb::chat::v1::{ChatMessage, EventKind};
use h2chat::protocol::{EPOCH_METADATA, JOINED_SEQ_METADATA};

/// A join resuming after `after` in `epoch` (empty: none given, as an old client does).
fn resume(room: &str, name: &str, epoch: &str, after: u64) -> ChatMessage {
    ChatMessage {
        resume_after_seq: Some(after),
        resume_epoch: epoch.into(),
        ..chat::msg(room, name, "")
    }
}

/// Joins with `first`; returns the call and its `chat-epoch` and `chat-joined-seq` headers.
async fn join_with(ch: &Channel, first: &ChatMessage) -> (ClientCall, String, u64) {
    let mut call = chat::start(ch, first).await;
    let headers = call.headers().await.expect("join accepted");
    let epoch = headers.get(EPOCH_METADATA).expect("chat-epoch").to_owned();
    let seq = headers
        .get(JOINED_SEQ_METADATA)
        .and_then(|v| v.parse().ok())
        .expect("chat-joined-seq");
    (call, epoch, seq)
}

/// The events of `call` up to and including the first that satisfies `last`.
async fn events_until(
    call: &mut ClientCall,
    last: impl Fn(&ChatMessage) -> bool,
) -> Vec<ChatMessage> {
    let mut out = Vec::new();
    loop {
        let m = chat::next(call).await;
        let done = last(&m);
        out.push(m);
        if done {
            return out;
        }
    }
}

fn summary(events: &[ChatMessage]) -> Vec<(EventKind, u64, String)> {
    events
        .iter()
        .map(|e| {
            let what = match kind(e) {
                EventKind::Message => e.text.clone(),
                _ => e.sender_id.clone(),
            };
            (kind(e), e.seq, what)
        })
        .collect()
}

/// The next update satisfying `want`, within [`PATIENCE`]; every update before it is kept.
async fn updates_until(session: &mut Session, want: impl Fn(&Update) -> bool) -> Vec<Update> {
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout(PATIENCE, session.next()).await {
            Ok(Some(update)) => {
                let done = want(&update);
                seen.push(update);
                if done {
                    return seen;
                }
            }
            Ok(None) => panic!("session ended; seen {seen:#?}"),
            Err(_) => panic!("no such update within {PATIENCE:?}; seen {seen:#?}"),
        }
    }
}

/// The events in `updates`, as (kind, seq, sender or text).
fn shown(updates: &[Update]) -> Vec<(EventKind, u64, String)> {
    let events: Vec<ChatMessage> = updates
        .iter()
        .filter_map(|u| match u {
            Update::Event(e) => Some(e.clone()),
            _ => None,
        })
        .collect();
    summary(&events)
}

fn fast(addr: String, room: &str, name: &str) -> SessionConfig {
    let mut config = SessionConfig::new(addr, room, name);
    config.backoff_initial = Duration::from_millis(20);
    config.backoff_max = Duration::from_millis(100);
    config
}

/// The restart scenario: alice's session has shown `before` posts of her own on the first server;
/// the server restarts; someone else joins the new one and posts `after` texts before alice's
/// session gets back in. Returns what alice's session shows from the reconnect on.
async fn restart_scenario(before: usize, after: &[&str]) -> Vec<Update> {
    let first = TestServer::default().await;
    let proxy = Proxy::start(first.addr).await;
    let (mut alice, posts) = Session::join(fast(proxy.addr.to_string(), "restart", "alice"))
        .await
        .expect("alice joins");
    for i in 1..=before {
        posts.send(format!("a{i}")).await.expect("post");
    }
    let last = format!("a{before}");
    updates_until(&mut alice, |u| match u {
        Update::Event(e) => e.text == last || (before == 0 && e.sender_id == "alice"),
        _ => false,
    })
    .await;

    // The server goes away; alice's session keeps trying a server that is not there.
    let nowhere = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    };
    proxy.set_upstream(nowhere);
    first.shutdown().await;
    updates_until(&mut alice, |u| matches!(u, Update::Reconnecting { .. })).await;

    let second = TestServer::default().await;
    let ch = Channel::connect(second.addr).await.expect("connect");
    let mut bob = chat::join(&ch, "restart", "bob").await;
    for text in after {
        bob.send(&chat::post(text)).await.expect("post");
    }
    if let Some(last) = after.last() {
        chat::until_text(&mut bob, last).await;
    }
    proxy.set_upstream(second.addr);
    let seen = updates_until(
        &mut alice,
        |u| matches!(u, Update::Event(e) if kind(e) == EventKind::Joined && e.sender_id == "alice"),
    )
    .await;
    // Live traffic goes on in the new epoch.
    bob.send(&chat::post("live")).await.expect("post");
    let live = updates_until(
        &mut alice,
        |u| matches!(u, Update::Event(e) if e.text == "live"),
    )
    .await;
    drop(posts);
    drop(alice);
    drop(bob);
    second.shutdown().await;
    let from = seen
        .iter()
        .position(|u| *u == Update::Reconnected)
        .expect("reconnected");
    seen[from..].iter().chain(live.iter()).cloned().collect()
}

fn restart_expectation(after: &[&str]) -> Vec<(EventKind, u64, String)> {
    let mut want = vec![
        (EventKind::Reset, 0, String::new()),
        (EventKind::Joined, 1, "bob".to_string()),
    ];
    for (i, text) in after.iter().enumerate() {
        want.push((EventKind::Message, 2 + i as u64, text.to_string()));
    }
    let n = after.len() as u64;
    want.push((EventKind::Joined, 2 + n, "alice".to_string()));
    want.push((EventKind::Message, 3 + n, "live".to_string()));
    want
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_with_a_longer_new_history_shows_a_reset_and_all_of_it() {
    // alice's last seq is 2 (her join, a1); the new room reaches seq 5 before she is back.
    let after = ["b1", "b2", "b3", "b4"];
    let seen = restart_scenario(1, &after).await;
    assert_eq!(seen[0], Update::Reconnected);
    assert_eq!(shown(&seen), restart_expectation(&after), "{seen:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_with_a_shorter_new_history_shows_a_reset_and_all_of_it() {
    // alice's last seq is 6 (her join, a1..a5); the new room has only bob's join and one post.
    let after = ["c1"];
    let seen = restart_scenario(5, &after).await;
    assert_eq!(shown(&seen), restart_expectation(&after), "{seen:#?}");
    let reset = seen.iter().find_map(|u| match u {
        Update::Event(e) if kind(e) == EventKind::Reset => Some(e.clone()),
        _ => None,
    });
    let reset = reset.expect("a reset event");
    assert!(!reset.epoch.is_empty());
    assert!(reset.text.contains("started over"), "{}", reset.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churning_ten_thousand_rooms_neither_restarts_a_live_epoch_nor_revives_a_dead_one() {
    let server = TestServer::default().await;
    let ch = Channel::connect(server.addr).await.expect("connect");
    // Room "gone" lives and dies: its epoch is over.
    let (gone_epoch, gone_last) = {
        let (mut call, epoch, seq) = join_with(&ch, &chat::msg("gone", "ann", "g1")).await;
        chat::until_text(&mut call, "g1").await;
        (epoch, seq + 1)
    };
    // Room "kept" stays alive all along.
    let (mut keeper, kept_epoch, _) = join_with(&ch, &chat::msg("kept", "kim", "k1")).await;
    chat::until_text(&mut keeper, "k1").await;

    // 10,000 other rooms come and go, 40 at a time on 4 connections.
    let mut channels = Vec::new();
    for _ in 0..4 {
        channels.push(Channel::connect(server.addr).await.expect("connect"));
    }
    let mut tasks = Vec::new();
    for t in 0..40 {
        let ch = channels[t % 4].clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..250 {
                let (call, _, _) =
                    join_with(&ch, &chat::msg(&format!("churn-{t}-{i}"), "x", "")).await;
                drop(call);
            }
        }));
    }
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(120), task)
            .await
            .expect("churn within 2 minutes")
            .expect("churn task");
    }

    // The live room kept counting in its epoch: k2 follows k1 and nothing restarted.
    keeper.send(&chat::post("k2")).await.expect("post");
    let k2 = chat::until_text(&mut keeper, "k2").await;
    assert_eq!(k2.seq, 3, "kim joined (1), k1 (2), k2 (3)");
    let (mut late, epoch, _) = join_with(&ch, &resume("kept", "lee", &kept_epoch, 2)).await;
    assert_eq!(epoch, kept_epoch);
    let got = events_until(&mut late, |m| m.sender_id == "lee").await;
    assert_eq!(
        summary(&got),
        vec![
            (EventKind::Message, 3, "k2".into()),
            (EventKind::Joined, 4, "lee".into())
        ]
    );

    // The dead room's epoch is not revived: resuming in it is a reset into a new epoch from 1.
    let (mut back, epoch, seq) =
        join_with(&ch, &resume("gone", "ann", &gone_epoch, gone_last)).await;
    assert_ne!(epoch, gone_epoch);
    assert_eq!(seq, 1);
    let got = events_until(&mut back, |m| m.sender_id == "ann").await;
    assert_eq!(kind(&got[0]), EventKind::Reset);
    assert_eq!(got[0].epoch, epoch);
    assert_eq!(
        summary(&got[1..]),
        vec![(EventKind::Joined, 1, "ann".into())]
    );
    server.shutdown().await;
}

#[tokio::test]
async fn resuming_past_the_head_of_the_present_epoch_is_out_of_range() {
    let server = TestServer::default().await;
    let ch = Channel::connect(server.addr).await.expect("connect");
    let (mut carol, epoch, _) = join_with(&ch, &chat::msg("future", "carol", "c1")).await;
    chat::until_text(&mut carol, "c1").await;
    // The head is 2: after 3 has not happened yet.
    let mut alice = chat::start(&ch, &resume("future", "alice", &epoch, 3)).await;
    let status = chat::final_status(&mut alice).await;
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(
        status.message().contains("past the last event") && status.message().contains("seq 2"),
        "{}",
        status.message()
    );
    // Not joined, and the room goes on.
    carol.send(&chat::post("c2")).await.expect("post");
    let c2 = chat::until_text(&mut carol, "c2").await;
    assert_eq!(c2.seq, 3, "no join or leave of alice in between");
    server.shutdown().await;
}

#[tokio::test]
async fn resuming_at_the_head_of_the_present_epoch_misses_nothing() {
    let server = TestServer::default().await;
    let ch = Channel::connect(server.addr).await.expect("connect");
    let (mut carol, epoch, _) = join_with(&ch, &chat::msg("head", "carol", "c1")).await;
    chat::until_text(&mut carol, "c1").await;
    let (mut alice, same, seq) = join_with(&ch, &resume("head", "alice", &epoch, 2)).await;
    assert_eq!((same.as_str(), seq), (epoch.as_str(), 3));
    let first = chat::next(&mut alice).await;
    assert_eq!((kind(&first), first.seq), (EventKind::Joined, 3));
    server.shutdown().await;
}

#[tokio::test]
async fn an_old_client_without_an_epoch_gets_a_reset_never_a_guessed_tail() {
    let first = TestServer::default().await;
    let old_last = {
        let ch = Channel::connect(first.addr).await.expect("connect");
        let mut old = chat::join(&ch, "old", "olga").await;
        old.send(&chat::post("o1")).await.expect("post");
        chat::until_text(&mut old, "o1").await.seq
    };
    first.shutdown().await;

    // Restarted: the new room has more events than olga's last number.
    let second = TestServer::default().await;
    let ch = Channel::connect(second.addr).await.expect("connect");
    let mut pat = chat::join(&ch, "old", "pat").await;
    for text in ["p1", "p2", "p3"] {
        pat.send(&chat::post(text)).await.expect("post");
    }
    chat::until_text(&mut pat, "p3").await;

    // An old client resumes with a number only, as before epochs existed.
    let (mut olga, epoch, _) = join_with(&ch, &resume("old", "olga", "", old_last)).await;
    let got = events_until(&mut olga, |m| m.sender_id == "olga").await;
    assert_eq!(kind(&got[0]), EventKind::Reset, "{got:#?}");
    assert_eq!(got[0].epoch, epoch);
    assert!(
        got[0].text.contains("without resume_epoch"),
        "{}",
        got[0].text
    );
    // Everything from the start of the present history, not what follows its seq 2.
    assert_eq!(
        summary(&got[1..]),
        vec![
            (EventKind::Joined, 1, "pat".into()),
            (EventKind::Message, 2, "p1".into()),
            (EventKind::Message, 3, "p2".into()),
            (EventKind::Message, 4, "p3".into()),
            (EventKind::Joined, 5, "olga".into()),
        ]
    );

    // An old client that does not resume at all still gets the recent history, no reset.
    let mut quinn = chat::join(&ch, "old", "quinn").await;
    let got = events_until(&mut quinn, |m| m.sender_id == "quinn").await;
    assert!(got.iter().all(|e| kind(e) != EventKind::Reset), "{got:#?}");
    assert_eq!(
        got.len(),
        6,
        "pat's join and posts, olga's join, quinn's join"
    );
    second.shutdown().await;
}
