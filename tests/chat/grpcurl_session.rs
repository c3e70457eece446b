//! The README's two-terminal grpcurl session, with real grpcurl processes and no .proto files on
//! the client side (grpcurl learns the schema through reflection).

use crate::support::{within, TEST_PATIENCE};
use std::process::Stdio;
use std::time::Duration;

use crate::support::{require_tool, TestServer};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

const PATIENCE: Duration = Duration::from_secs(30);

fn grpcurl_chat(
    target: &str,
    body: &str,
    extra: &[&str],
) -> (Child, Lines<BufReader<ChildStdout>>) {
    let mut child = Command::new(require_tool("grpcurl"))
        .arg("-plaintext")
        .args(["-d", body])
        .args(extra)
        .args([target, "chat.v1.ChatService/Chat"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("run grpcurl");
    let out = child.stdout.take().expect("stdout");
    (child, BufReader::new(out).lines())
}

/// Reads grpcurl's output until a line contains `needle`; returns everything read.
async fn read_until(lines: &mut Lines<BufReader<ChildStdout>>, needle: &str) -> String {
    let mut seen = String::new();
    let found = tokio::time::timeout(PATIENCE, async {
        while let Ok(Some(line)) = lines.next_line().await {
            seen.push_str(&line);
            seen.push('\n');
            if line.contains(needle) {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(
        found,
        Ok(true),
        "never saw {needle:?}; output so far:\n{seen}"
    );
    seen
}

#[tokio::test]
async fn two_grpcurl_sessions_chat_through_reflection() {
    within(
        TEST_PATIENCE,
        "the whole of test two_grpcurl_sessions_chat_through_reflection",
        async {
            let server = TestServer::default().await;
            let target = server.target();
            let (mut alice, mut alice_out) = grpcurl_chat(
                &target,
                r#"{"room_id":"rust","sender_id":"alice","text":"hello"}"#,
                &["-rpc-header", "content-type: application/grpc"],
            );
            read_until(&mut alice_out, r#""text": "hello""#).await;
            let (mut bob, mut bob_out) = grpcurl_chat(
                &target,
                r#"{"room_id":"rust","sender_id":"bob","text":"hi alice"}"#,
                &[],
            );
            // Bob sees alice's earlier message (room history), then his own.
            let bob_saw = read_until(&mut bob_out, r#""text": "hi alice""#).await;
            assert!(
                bob_saw.contains(r#""text": "hello""#),
                "bob missed the history:\n{bob_saw}"
            );
            let alice_saw = read_until(&mut alice_out, r#""text": "hi alice""#).await;
            assert!(alice_saw.contains(r#""senderId": "bob""#), "{alice_saw}");
            // Both stay connected (grpcurl half-closed after sending; the calls go on).
            assert!(
                alice.try_wait().expect("alice").is_none(),
                "alice's grpcurl exited"
            );
            assert!(
                bob.try_wait().expect("bob").is_none(),
                "bob's grpcurl exited"
            );
            // Ctrl-C on bob: alice sees him leave.
            bob.kill().await.expect("stop bob");
            read_until(&mut alice_out, "EVENT_KIND_LEFT").await;
            alice.kill().await.expect("stop alice");
        },
    )
    .await;
}

// Multi-threaded: grpcurl runs as a blocking child process while the server answers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_lists_and_describes_without_proto_files() {
    within(
        TEST_PATIENCE,
        "the whole of test grpcurl_lists_and_describes_without_proto_files",
        async {
            let server = TestServer::default().await;
            let run = |args: &[&str]| {
                let out = std::process::Command::new(require_tool("grpcurl"))
                    .arg("-plaintext")
                    .arg(server.target())
                    .args(args)
                    .output()
                    .expect("run grpcurl");
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                String::from_utf8_lossy(&out.stdout).into_owned()
            };
            assert!(run(&["list"]).contains("chat.v1.ChatService"));
            let described = run(&["describe", "chat.v1.ChatMessage"]);
            for field in [
                "room_id = 1",
                "sender_id = 2",
                "text = 3",
                "sent_at = 4",
                "seq = 5",
                "resume_after_seq = 7",
            ] {
                assert!(described.contains(field), "{field} missing:\n{described}");
            }
        },
    )
    .await;
}
