//! Leave events say truly why a member left: it cancelled or its process ended (LEFT), its
//! connection broke (DISCONNECTED), or the server ended its call for something it sent
//! (CALL_FAILED).

use std::process::Stdio;
use std::time::Duration;

use crate::support::chat::{self, kind, reason};
use crate::support::proxy::Proxy;
use crate::support::{require_tool, TestServer};
use h2chat::grpc::client::{Channel, ClientCall};
use h2chat::grpc::Code;
use h2chat::pb::chat::v1::{ChatMessage, EventKind, LeaveReason};
use h2chat::services::app::AppConfig;

/// The leave event of `who`, as `observer` sees it.
async fn leave_of(observer: &mut ClientCall, who: &str) -> ChatMessage {
    chat::next_where(observer, |m| {
        kind(m) == EventKind::Left && m.sender_id == who
    })
    .await
}

/// An observer in `room`, and a channel for others.
async fn room_with_observer(server: &TestServer, room: &str) -> (Channel, ClientCall) {
    let ch = Channel::connect(server.addr).await.expect("connect");
    let observer = chat::join(&ch, room, "observer").await;
    (ch, observer)
}

#[tokio::test]
async fn a_client_cancel_is_left() {
    let server = TestServer::default().await;
    let (ch, mut observer) = room_with_observer(&server, "cancel").await;
    let mut bob = chat::join(&ch, "cancel", "bob").await;
    bob.cancel();
    assert_eq!(
        reason(&leave_of(&mut observer, "bob").await),
        LeaveReason::Left
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_stopped_by_ctrl_c_is_left() {
    let server = TestServer::default().await;
    let (_ch, mut observer) = room_with_observer(&server, "curl").await;
    let mut grpcurl = tokio::process::Command::new(require_tool("grpcurl"))
        .args([
            "-plaintext",
            "-d",
            r#"{"room_id":"curl","sender_id":"gus"}"#,
        ])
        .args([&server.target(), "chat.v1.ChatService/Chat"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("run grpcurl");
    chat::next_where(&mut observer, |m| {
        kind(m) == EventKind::Joined && m.sender_id == "gus"
    })
    .await;
    let pid = grpcurl.id().expect("grpcurl pid");
    crate::support::cli::signal(pid, libc::SIGINT);
    let _ = tokio::time::timeout(chat::PATIENCE, grpcurl.wait()).await;
    assert_eq!(
        reason(&leave_of(&mut observer, "gus").await),
        LeaveReason::Left
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_goes_dead_is_disconnected() {
    let mut app = AppConfig::default();
    app.server.keepalive_interval = Some(Duration::from_millis(100));
    app.server.keepalive_timeout = Duration::from_millis(300);
    let server = TestServer::start(app).await;
    let (_ch, mut observer) = room_with_observer(&server, "dead").await;
    // Dana's connection goes through a proxy that will swallow everything, both ways.
    let proxy = Proxy::start(server.addr).await;
    let dana_ch = Channel::connect(proxy.addr).await.expect("connect");
    let _dana = chat::join(&dana_ch, "dead", "dana").await;
    chat::next_where(&mut observer, |m| {
        kind(m) == EventKind::Joined && m.sender_id == "dana"
    })
    .await;
    proxy.black_hole().await;
    let left = leave_of(&mut observer, "dana").await;
    assert_eq!(reason(&left), LeaveReason::Disconnected);
    server.shutdown().await;
}

#[tokio::test]
async fn a_member_whose_own_call_failed_says_so() {
    let mut app = AppConfig::default();
    app.chat.max_text_bytes = 8;
    let server = TestServer::start(app).await;
    let (ch, mut observer) = room_with_observer(&server, "fail").await;

    let mut eve = chat::join(&ch, "fail", "eve").await;
    eve.send(&chat::post("far too long")).await.expect("post");
    let status = chat::final_status(&mut eve).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(
        reason(&leave_of(&mut observer, "eve").await),
        LeaveReason::CallFailed
    );

    let mut fay = chat::join(&ch, "fail", "fay").await;
    fay.send(&chat::msg("elsewhere", "", "hi"))
        .await
        .expect("post");
    let status = chat::final_status(&mut fay).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(
        reason(&leave_of(&mut observer, "fay").await),
        LeaveReason::CallFailed
    );
    server.shutdown().await;
}
