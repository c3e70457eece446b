//! Shutdown drains: on shutdown each room closes at a definite sequence number, later posts are
//! refused, and every member is offered every event up to it before its call ends with
//! UNAVAILABLE. So no post is echoed to its sender unless every member present at its seq got it.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::support::chat::{self, kind};
use crate::support::TestServer;
use h2chat::grpc::client::{CallReceiver, Channel};
use h2chat::grpc::{Code, Status};
use h2chat::pb::chat::v1::{ChatMessage, EventKind};
use h2chat::services::app::AppConfig;

const MEMBERS: usize = 200;
/// Five members a connection: the client's h2 budget for unread small DATA frames is per
/// connection, and 200 members reading a burst on a few connections can exceed it on a busy
/// machine (the client then closes its own connection, which is not what this test is about).
const CONNECTIONS: usize = 40;
const ROUNDS: usize = 20;
/// How long posting goes on before the shutdown begins.
const POSTING: Duration = Duration::from_millis(100);

/// What one member received: the sequence numbers of messages, and how its call ended.
struct Received {
    seqs: BTreeSet<u64>,
    status: Status,
}

/// Reads `rx` until the call ends; keeps the messages' numbers, and those from `own` apart
/// (telling `first_echo` when the first of them arrives).
async fn read_all(
    mut rx: CallReceiver,
    own: Option<&str>,
    mut first_echo: Option<tokio::sync::oneshot::Sender<()>>,
) -> (Received, BTreeSet<u64>) {
    let mut seqs = BTreeSet::new();
    let mut echoed = BTreeSet::new();
    let status = loop {
        match tokio::time::timeout(chat::PATIENCE, rx.recv::<ChatMessage>()).await {
            Ok(Ok(Some(m))) => {
                if kind(&m) == EventKind::Message {
                    seqs.insert(m.seq);
                    if Some(m.sender_id.as_str()) == own {
                        echoed.insert(m.seq);
                        if let Some(tell) = first_echo.take() {
                            let _ = tell.send(());
                        }
                    }
                }
                assert_ne!(kind(&m), EventKind::Gap, "nothing may be missed here");
            }
            Ok(Ok(None)) => break Status::ok(),
            Ok(Err(status)) => break status,
            Err(_) => panic!("a member's call did not end within {:?}", chat::PATIENCE),
        }
    };
    (Received { seqs, status }, echoed)
}

/// One round: members join, a sender posts about 1,000 a second, the server shuts down meanwhile.
/// Returns how many posts were echoed.
async fn round(round: usize) -> usize {
    let mut app = AppConfig::default();
    app.chat.max_post_rate = 0.0;
    // Room for everything a round posts: a gap would be a loss this test does not look for.
    app.chat.rooms.history_events = 100_000;
    app.chat.rooms.history_bytes = 64 << 20;
    // The drain ends as soon as every member has taken its events; generous bounds only matter
    // on a busy core, where members read slowly and a 4 s drain would cut them (a flake, not a loss).
    app.chat.shutdown_drain = Duration::from_secs(30);
    app.server.shutdown_grace = Duration::from_secs(40);
    let server = TestServer::start(app).await;
    let room = format!("drain-{round}");
    let mut channels = Vec::new();
    for _ in 0..CONNECTIONS {
        channels.push(Channel::connect(server.addr).await.expect("connect"));
    }
    // Everyone joins at once; each member reads from the moment it is in.
    let (joined_tx, mut joined_rx) = tokio::sync::mpsc::channel::<()>(MEMBERS);
    let mut readers = Vec::new();
    for i in 0..MEMBERS {
        let ch = channels[i % CONNECTIONS].clone();
        let (room, joined) = (room.clone(), joined_tx.clone());
        readers.push(tokio::spawn(async move {
            let call = chat::join(&ch, &room, &format!("m{i}")).await;
            let _ = joined.send(()).await;
            // The sending half stays open: a member that half-closed would be no different.
            let (_tx, rx) = call.split();
            read_all(rx, None, None).await.0
        }));
    }
    for _ in 0..MEMBERS {
        tokio::time::timeout(chat::PATIENCE, joined_rx.recv())
            .await
            .expect("every member joined in time");
    }
    let sender = chat::join(&channels[0], &room, "sender").await;
    let (mut tx, rx) = sender.split();
    let (echo_tx, echo_rx) = tokio::sync::oneshot::channel();
    let echoes = tokio::spawn(async move { read_all(rx, Some("sender"), Some(echo_tx)).await });
    let posting = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        for i in 0.. {
            tick.tick().await;
            // Posts after the room closed are refused: the send fails once the call is over.
            if tx.send(&chat::post(&format!("p{i}"))).await.is_err() {
                return i;
            }
            if i > 20_000 {
                return i;
            }
        }
        0
    });
    // Posting is under way (one post went round) when the shutdown begins, a little later.
    tokio::time::timeout(chat::PATIENCE, echo_rx)
        .await
        .expect("a first echo in time")
        .expect("sender reading");
    tokio::time::sleep(POSTING).await;
    tokio::time::timeout(Duration::from_secs(60), server.shutdown())
        .await
        .expect("server stopped within 60 s");

    let (sender_got, echoed) = echoes.await.expect("sender");
    let _ = posting.await;
    assert_eq!(
        sender_got.status.code(),
        Code::Unavailable,
        "{:?}",
        sender_got.status
    );
    assert!(!echoed.is_empty(), "round {round}: nothing was echoed");
    for (i, reader) in readers.into_iter().enumerate() {
        let got = reader.await.expect("member");
        assert_eq!(
            got.status.code(),
            Code::Unavailable,
            "m{i}: {:?}",
            got.status
        );
        assert_eq!(got.status.message(), "server shutting down", "m{i} was cut");
        let missing: Vec<&u64> = echoed.difference(&got.seqs).collect();
        assert!(
            missing.is_empty(),
            "round {round}: m{i} never got echoed posts {missing:?}"
        );
    }
    echoed.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_post_is_echoed_unless_every_member_was_offered_it() {
    let mut total = 0;
    for r in 0..ROUNDS {
        total += round(r).await;
    }
    assert!(total >= ROUNDS, "posts were echoed in every round");
}
