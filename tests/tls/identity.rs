//! Who a chat member is once tokens are on: the token's name, rooms the token allows, a call ended
//! when its token expires, and the session client resuming with a fresh token, nothing lost.

use std::time::Duration;

use h2chat::client::credentials::TokenSource;
use h2chat::client::session::{Session, SessionConfig, Update};
use h2chat::grpc::client::{Channel, ClientCall};
use h2chat::grpc::{Code, Status};
use h2chat::pb::chat::v1::{ChatMessage, EventKind};
use serde_json::json;

use crate::harness::{join_chat, within};
use crate::tokens::{bearer, hs256, now, AuthServer, SECRET};

/// Joins `room` as `sender` with `token`.
async fn join(
    channel: &Channel,
    token: &str,
    room: &str,
    sender: &str,
) -> Result<ClientCall, Status> {
    join_chat(channel, bearer(&format!("Bearer {token}")), room, sender).await
}

/// The next event of a joined call.
async fn next(call: &mut ClientCall) -> Result<ChatMessage, Status> {
    match within("an event", call.recv::<ChatMessage>()).await? {
        Some(event) => Ok(event),
        None => Err(Status::ok()),
    }
}

#[tokio::test]
async fn the_token_name_is_the_member_and_a_different_sender_id_is_permission_denied() {
    let s = AuthServer::hs256("name").await;
    let channel = s.channel().await;
    let token = hs256(
        SECRET,
        &json!({"sub": "u-123", "name": "Alice", "exp": now() + 3600}),
    );
    let mut call = join(&channel, &token, "lobby", "")
        .await
        .expect("an empty sender_id joins");
    let event = next(&mut call).await.expect("the join event");
    assert_eq!(event.kind, EventKind::Joined as i32);
    assert_eq!(
        event.sender_id, "Alice",
        "the token's name claim is the member"
    );
    let denied = join(&channel, &token, "lobby", "Mallory")
        .await
        .err()
        .unwrap_or_else(|| panic!("denied"));
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    assert!(
        denied.message().contains("not the authenticated name"),
        "{denied:?}"
    );
    // Without a name claim, the subject is the name; saying it is fine.
    let bob = hs256(SECRET, &json!({"sub": "bob", "exp": now() + 3600}));
    let mut call = join(&channel, &bob, "other", "bob")
        .await
        .expect("bob joins as bob");
    let event = next(&mut call).await.expect("the join event");
    assert_eq!(event.sender_id, "bob");
    s.server.shutdown().await;
}

#[tokio::test]
async fn a_room_outside_the_rooms_claim_is_permission_denied() {
    let s = AuthServer::hs256("rooms").await;
    let channel = s.channel().await;
    let token = hs256(
        SECRET,
        &json!({"sub": "alice", "exp": now() + 3600, "rooms": ["team-*", "lobby"]}),
    );
    for room in ["team-red", "lobby"] {
        join(&channel, &token, room, "")
            .await
            .expect("an allowed room");
    }
    for room in ["ops", "lobby-2", "team"] {
        let denied = join(&channel, &token, room, "")
            .await
            .err()
            .unwrap_or_else(|| panic!("denied"));
        assert_eq!(denied.code(), Code::PermissionDenied, "{room}: {denied:?}");
        assert!(
            denied.message().contains("does not allow room"),
            "{denied:?}"
        );
    }
    s.server.shutdown().await;
}

#[tokio::test]
async fn a_token_that_expires_during_the_call_ends_it_unauthenticated() {
    let s = AuthServer::hs256("expiry").await;
    let channel = s.channel().await;
    let token = hs256(SECRET, &json!({"sub": "alice", "exp": now() + 2}));
    let mut call = join(&channel, &token, "lobby", "").await.expect("joined");
    let ended = loop {
        match next(&mut call).await {
            Ok(_) => continue,
            Err(status) => break status,
        }
    };
    assert_eq!(ended.code(), Code::Unauthenticated, "{ended:?}");
    assert_eq!(ended.message(), "token expired");
    s.server.shutdown().await;
}

/// Reads updates until `pred` holds for one; returns them all.
async fn updates_until(session: &mut Session, pred: impl Fn(&Update) -> bool) -> Vec<Update> {
    let mut seen = Vec::new();
    within("a session update", async {
        while let Some(update) = session.next().await {
            let done = pred(&update);
            seen.push(update);
            if done {
                return;
            }
        }
        panic!("the session ended; saw {seen:?}");
    })
    .await;
    seen
}

fn message_is(update: &Update, text: &str) -> bool {
    matches!(update, Update::Event(e) if e.kind == EventKind::Message as i32 && e.text == text)
}

#[tokio::test]
async fn the_session_resumes_with_a_fresh_token_and_loses_nothing() {
    let s = AuthServer::hs256("resume").await;
    let token_file = s.pki.dir.write(
        "alice.jwt",
        hs256(SECRET, &json!({"sub": "alice", "exp": now() + 2})),
    );
    let mut config = SessionConfig::new(s.server.target(), "lobby", "alice");
    config.tls = Some(s.pki.client());
    config.token = Some(TokenSource::File(token_file.clone()));
    config.backoff_initial = Duration::from_millis(50);
    let (mut alice, posts) = within("alice joins", Session::join(config))
        .await
        .expect("join");
    // The rotated token is on disk before the first one expires; the next connection reads it.
    std::fs::write(
        &token_file,
        hs256(SECRET, &json!({"sub": "alice", "exp": now() + 3600})),
    )
    .expect("rotate the token");
    let mut bob_config = SessionConfig::new(s.server.target(), "lobby", "bob");
    bob_config.tls = Some(s.pki.client());
    bob_config.token = Some(TokenSource::Value(hs256(
        SECRET,
        &json!({"sub": "bob", "exp": now() + 3600}),
    )));
    let (_bob, bob_posts) = within("bob joins", Session::join(bob_config))
        .await
        .expect("join");

    posts.send("before".into()).await.expect("post");
    let mut seen = updates_until(&mut alice, |u| message_is(u, "before")).await;
    seen.extend(updates_until(&mut alice, |u| matches!(u, Update::Reconnecting { .. })).await);
    let Some(Update::Reconnecting { error, .. }) = seen.last() else {
        unreachable!()
    };
    assert!(error.contains("token expired"), "{error}");
    // While alice is away: bob posts, and alice queues a post of her own.
    bob_posts
        .send("while away".into())
        .await
        .expect("bob posts");
    posts.send("after".into()).await.expect("post");
    seen.extend(updates_until(&mut alice, |u| message_is(u, "after")).await);
    assert!(
        seen.iter().any(|u| matches!(u, Update::Reconnected)),
        "{seen:?}"
    );
    for text in ["before", "while away", "after"] {
        let n = seen.iter().filter(|u| message_is(u, text)).count();
        assert_eq!(n, 1, "{text:?} seen {n} times: {seen:?}");
    }
    assert!(
        !seen
            .iter()
            .any(|u| matches!(u, Update::Event(e) if e.kind == EventKind::Gap as i32)),
        "nothing was missed: {seen:?}"
    );
    drop(posts);
    alice.leave();
    within("alice leaves", alice.end())
        .await
        .expect("a clean end");
    s.server.shutdown().await;
}
