//! gRPC-Web checked by an independent client: `buf curl --protocol grpcweb` (connect-go's
//! gRPC-Web client), with the schema from the server's reflection (itself over gRPC-Web).

use std::process::Output;
use std::time::Duration;

use h2chat::grpc::client::Channel;
use h2chat::grpc::ServerConfig;
use h2chat::services::app::AppConfig;
use tokio::process::Command;

use crate::support::chat::{join, next_where, post};
use crate::support::{within, TestServer, PATIENCE, TEST_PATIENCE};
use crate::tools::npm_tool;

/// Runs `buf curl --protocol grpcweb -v` against `method` with `data`.
async fn buf_curl(server: &TestServer, method: &str, data: &str) -> Output {
    let url = format!("http://{}/{method}", server.addr);
    let mut command = Command::new(npm_tool("buf"));
    command
        .args([
            "curl",
            "--protocol",
            "grpcweb",
            "--http2-prior-knowledge",
            "-v",
        ])
        .args(["-d", data, &url])
        .kill_on_drop(true);
    within(PATIENCE, "buf curl", command.output())
        .await
        .expect("buf curl runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The trailers of the call on stream `stream`, as `buf curl -v` prints them (`[*] Name: value`).
fn trailer_lines(stderr: &str, stream: u32) -> Vec<String> {
    let prefix = format!("buf: < (#{stream}) [*] ");
    stderr
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn unary_call_and_its_trailers() {
    within(TEST_PATIENCE, "the test", async {
        let server = TestServer::default().await;
        let out = buf_curl(&server, "grpc.health.v1.Health/Check", "{}").await;
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert!(out.status.success(), "{stderr}");
        assert!(stdout.contains(r#""status": "SERVING""#), "{stdout}");
        // buf numbers its calls: #1 is reflection (a stream, whose trailers -v prints), #2 the
        // call (a unary call succeeds only once the client has read grpc-status 0 from the
        // trailers frame: connect-go fails a gRPC-Web response without one).
        assert!(
            stderr.contains("< (#2) Content-Type: application/grpc-web+proto"),
            "{stderr}"
        );
        assert!(stderr.contains("(#2) Call complete"), "{stderr}");
        assert!(
            trailer_lines(&stderr, 1).contains(&"Grpc-Status: 0".to_owned()),
            "{stderr}"
        );
        server.shutdown().await;
    })
    .await
}

#[tokio::test]
async fn error_status_reaches_the_client() {
    within(TEST_PATIENCE, "the test", async {
        let server = TestServer::default().await;
        let out = buf_curl(
            &server,
            "grpc.health.v1.Health/Check",
            r#"{"service":"nope"}"#,
        )
        .await;
        // buf prints the error status as JSON on stderr and exits non-zero.
        let stderr = text(&out.stderr);
        assert!(!out.status.success());
        assert!(stderr.contains(r#""code": "not_found""#), "{stderr}");
        assert!(stderr.contains(r#"unknown service \"nope\""#), "{stderr}");
        server.shutdown().await;
    })
    .await
}

#[tokio::test]
async fn server_stream_messages_then_trailers() {
    within(TEST_PATIENCE, "the test", async {
        let server = TestServer::default().await;
        let data = r#"{"response_parameters":[{"size":3},{"size":4}]}"#;
        let out = buf_curl(
            &server,
            "grpc.testing.TestService/StreamingOutputCall",
            data,
        )
        .await;
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert!(out.status.success(), "{stderr}");
        // Two messages: payloads of 3 and 4 zero bytes, in base64 in buf's JSON.
        let first = stdout.find(r#""body": "AAAA""#).expect("first message");
        let second = stdout
            .find(r#""body": "AAAAAA==""#)
            .expect("second message");
        assert!(first < second, "{stdout}");
        assert!(
            trailer_lines(&stderr, 2).contains(&"Grpc-Status: 0".to_owned()),
            "{stderr}"
        );
        server.shutdown().await;
    })
    .await
}

#[tokio::test]
async fn subscribe_streams_the_room_then_the_servers_status() {
    within(TEST_PATIENCE, "the test", async {
        // The server's cap on a call's duration ends the stream with its own status, in the
        // trailers frame (a client-side timeout would end it on buf's side instead).
        let server = TestServer::start(AppConfig {
            server: ServerConfig {
                max_call_duration: Some(Duration::from_secs(3)),
                ..ServerConfig::default()
            },
            ..AppConfig::default()
        })
        .await;
        let ch = Channel::connect(server.addr).await.expect("connect");
        let mut bob = join(&ch, "web", "bob").await;
        bob.send(&post("hello from bob")).await.expect("post");
        next_where(&mut bob, |m| m.text == "hello from bob").await;
        let data = r#"{"room_id":"web","sender_id":"curl"}"#;
        let out = buf_curl(&server, "chat.v1.ChatService/Subscribe", data).await;
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert!(stderr.contains("< (#2) Chat-Member-Key: "), "{stderr}");
        let posted = stdout.find(r#""text": "hello from bob""#).expect("history");
        let joined = stdout.find(r#""senderId": "curl""#).expect("own join");
        assert!(posted < joined, "{stdout}");
        assert!(!out.status.success());
        assert!(
            stderr.contains(r#""code": "deadline_exceeded""#),
            "{stderr}"
        );
        assert!(
            trailer_lines(&stderr, 2).contains(&"Grpc-Status: 4".to_owned()),
            "{stderr}"
        );
        server.shutdown().await;
    })
    .await
}
