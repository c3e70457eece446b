//! `h2chat stdio` as a harness drives it: the built binary, JSON lines on its stdin and stdout.

use crate::support::{within, TEST_PATIENCE};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::support::TempFile;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// A running `h2chat stdio`.
struct Node {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Node {
    fn start(args: &[&str]) -> Node {
        let mut child = Command::new(env!("CARGO_BIN_EXE_h2chat"))
            .arg("stdio")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn h2chat stdio");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout");
        Node {
            child,
            stdin,
            lines: BufReader::new(stdout).lines(),
        }
    }

    async fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(line.as_bytes()).await.expect("write");
        stdin.write_all(b"\n").await.expect("write");
        stdin.flush().await.expect("flush");
    }

    /// Sends `body` from `c1` to `n1`.
    async fn send(&mut self, body: Value) {
        let line = json!({"src": "c1", "dest": "n1", "body": body}).to_string();
        self.send_line(&line).await;
    }

    /// The next output line, parsed.
    async fn recv(&mut self) -> Value {
        let line = self
            .lines
            .next_line()
            .await
            .expect("read stdout")
            .expect("the node ended its output");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    }

    /// The body of the next reply, checking its envelope.
    async fn recv_body(&mut self) -> Value {
        let line = self.recv().await;
        assert_eq!(line["src"], "n1", "{line}");
        assert_eq!(line["dest"], "c1", "{line}");
        line["body"].clone()
    }

    /// The body of the next reply answering `msg_id`; replies to other requests are skipped.
    async fn reply_to(&mut self, msg_id: u64) -> Value {
        loop {
            let body = self.recv_body().await;
            if body["in_reply_to"] == msg_id {
                return body;
            }
        }
    }

    async fn init(&mut self) {
        self.send(json!({"type": "init", "msg_id": 1, "node_id": "n1", "node_ids": ["n1"]}))
            .await;
        let line = self.recv().await;
        assert_eq!(
            line,
            json!({"src": "n1", "dest": "c1",
                   "body": {"type": "init_ok", "in_reply_to": 1, "msg_id": 0}})
        );
    }

    /// Opens a BiDiChat stream with request `msg_id`; returns its stream id.
    async fn open_echo(&mut self, msg_id: u64) -> String {
        self.send(json!({"type": "grpc_bidi_stream_open", "msg_id": msg_id,
                         "service": "Chat", "method": "BiDiChat"}))
            .await;
        let ok = self.reply_to(msg_id).await;
        assert_eq!(ok["type"], "grpc_bidi_stream_open_ok", "{ok}");
        ok["stream_id"].as_str().expect("stream_id").to_owned()
    }

    async fn echo(&mut self, msg_id: u64, stream: &str, text: &str) -> Value {
        self.send(json!({"type": "grpc_bidi_stream_send", "msg_id": msg_id,
                         "stream_id": stream, "data": {"text": text}}))
            .await;
        self.reply_to(msg_id).await
    }

    /// Closes stdin and waits for the node to exit.
    async fn finish(mut self) -> (Vec<Value>, ExitStatus) {
        drop(self.stdin.take());
        let mut rest = Vec::new();
        while let Some(line) = self.lines.next_line().await.expect("read stdout") {
            rest.push(serde_json::from_str(&line).expect("JSON"));
        }
        (rest, self.child.wait().await.expect("wait"))
    }
}

/// Asserts an `error` reply with this gRPC code.
fn assert_error(body: &Value, code: i64) {
    assert_eq!(body["type"], "error", "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert!(
        body["text"].as_str().is_some_and(|t| !t.is_empty()),
        "{body}"
    );
}

#[tokio::test]
async fn sample_init_then_a_server_stream_of_the_watch_files_errors() {
    within(
        TEST_PATIENCE,
        "the whole of test sample_init_then_a_server_stream_of_the_watch_files_errors",
        async {
            let file = TempFile::with_lines(
                "stdio.log",
                &[
                    "ERROR disk full",
                    "INFO started",
                    "ERROR connection reset",
                    "ERROR timeout",
                ],
            );
            let path = file.0.to_string_lossy().into_owned();
            let mut node = Node::start(&["--watch-file", &path]);
            node.init().await;
            node.send(
                json!({"type": "grpc_server_stream", "msg_id": 2, "service": "LogWatcher",
                         "method": "WatchLogs", "request": {"filter": "ERROR", "limit": 3}}),
            )
            .await;
            for (k, msg) in ["disk full", "connection reset", "timeout"]
                .iter()
                .enumerate()
            {
                let body = node.recv_body().await;
                assert_eq!(body["type"], "grpc_stream_msg", "{body}");
                assert_eq!(body["in_reply_to"], 2);
                assert_eq!(body["seq"], k + 1);
                assert_eq!(body["msg_id"], k + 1);
                assert_eq!(body["data"]["level"], "ERROR");
                assert_eq!(body["data"]["msg"], *msg);
                assert_eq!(body["data"]["target"], format!("file:{path}"));
            }
            let end = node.recv_body().await;
            assert_eq!(
                end,
                json!({"type": "grpc_stream_end", "in_reply_to": 2, "status": "OK", "count": 3,
                   "msg_id": 4})
            );
        },
    )
    .await;
}

#[tokio::test]
async fn sample_init_then_bidi_open_and_send() {
    within(
        TEST_PATIENCE,
        "the whole of test sample_init_then_bidi_open_and_send",
        async {
            let mut node = Node::start(&[]);
            node.init().await;
            node.send(json!({"type": "grpc_bidi_stream_open", "msg_id": 2,
                         "service": "Chat", "method": "BiDiChat"}))
                .await;
            let ok = node.recv_body().await;
            assert_eq!(ok["type"], "grpc_bidi_stream_open_ok");
            assert_eq!(
                (ok["in_reply_to"].clone(), ok["stream_id"].clone()),
                (json!(2), json!("s1"))
            );
            node.send(
                json!({"type": "grpc_bidi_stream_send", "msg_id": 3, "stream_id": "s1",
                         "data": {"text": "hello"}}),
            )
            .await;
            let recv = node.recv_body().await;
            assert_eq!(recv["type"], "grpc_bidi_stream_recv");
            assert_eq!(recv["in_reply_to"], 3);
            assert_eq!(recv["data"], json!({"text": "echo: hello"}));
            node.send(json!({"type": "grpc_bidi_stream_close", "msg_id": 4, "stream_id": "s1"}))
                .await;
            let end = node.recv_body().await;
            assert_eq!(end["type"], "grpc_stream_end");
            assert_eq!(
                (end["in_reply_to"].clone(), end["status"].clone()),
                (json!(4), json!("OK"))
            );
            assert_eq!(end["count"], 1);
        },
    )
    .await;
}

#[tokio::test]
async fn streams_are_numbered_and_independent() {
    within(
        TEST_PATIENCE,
        "the whole of test streams_are_numbered_and_independent",
        async {
            let mut node = Node::start(&[]);
            node.init().await;
            assert_eq!(node.open_echo(2).await, "s1");
            assert_eq!(node.open_echo(3).await, "s2");
            assert_eq!(node.echo(4, "s1", "one").await["data"]["text"], "echo: one");
            node.send(json!({"type": "grpc_bidi_stream_close", "msg_id": 5, "stream_id": "s1"}))
                .await;
            assert_eq!(node.reply_to(5).await["type"], "grpc_stream_end");
            let recv = node.echo(6, "s2", "two").await;
            assert_eq!(
                (recv["stream_id"].clone(), recv["data"]["text"].clone()),
                (json!("s2"), json!("echo: two"))
            );
            assert_eq!(node.open_echo(7).await, "s3");
        },
    )
    .await;
}

#[tokio::test]
async fn a_send_on_a_half_closed_or_closed_stream_is_an_error() {
    within(
        TEST_PATIENCE,
        "the whole of test a_send_on_a_half_closed_or_closed_stream_is_an_error",
        async {
            let mut node = Node::start(&[]);
            node.init().await;
            let s = node.open_echo(2).await;
            node.send(json!({"type": "grpc_bidi_stream_close", "msg_id": 3, "stream_id": s}))
                .await;
            node.send(
                json!({"type": "grpc_bidi_stream_send", "msg_id": 4, "stream_id": s,
                         "data": {"text": "late"}}),
            )
            .await;
            // HALF_CLOSED or, once the call ended, CLOSED: either way not OPEN. The stream's end
            // (answering the close) may come before or after that error.
            let (mut error, mut end) = (None, None);
            while error.is_none() || end.is_none() {
                let body = node.recv_body().await;
                match body["in_reply_to"].as_u64() {
                    Some(3) => end = Some(body),
                    Some(4) => error = Some(body),
                    _ => panic!("unexpected {body}"),
                }
            }
            assert_error(&error.unwrap_or_default(), 9);
            assert_eq!(end.unwrap_or_default()["type"], "grpc_stream_end");
            let closed = node.echo(5, &s, "later").await;
            assert_error(&closed, 9);
            assert!(
                closed["text"]
                    .as_str()
                    .is_some_and(|t| t.contains("CLOSED")),
                "{closed}"
            );
            node.send(json!({"type": "grpc_bidi_stream_close", "msg_id": 6, "stream_id": s}))
                .await;
            assert_error(&node.reply_to(6).await, 9);
        },
    )
    .await;
}

#[tokio::test]
async fn unknown_services_and_methods_are_unimplemented() {
    within(
        TEST_PATIENCE,
        "the whole of test unknown_services_and_methods_are_unimplemented",
        async {
            let mut node = Node::start(&[]);
            node.init().await;
            node.send(
                json!({"type": "grpc_server_stream", "msg_id": 2, "service": "Nope",
                         "method": "WatchLogs", "request": {}}),
            )
            .await;
            assert_error(&node.reply_to(2).await, 12);
            node.send(
                json!({"type": "grpc_server_stream", "msg_id": 3, "service": "LogWatcher",
                         "method": "Nope", "request": {}}),
            )
            .await;
            assert_error(&node.reply_to(3).await, 12);
            node.send(
                json!({"type": "grpc_bidi_stream_open", "msg_id": 4, "service": "Chat",
                         "method": "Nope"}),
            )
            .await;
            assert_error(&node.reply_to(4).await, 12);
            node.send(json!({"type": "no_such_type", "msg_id": 5}))
                .await;
            assert_error(&node.reply_to(5).await, 12);
        },
    )
    .await;
}

#[tokio::test]
async fn an_unknown_stream_is_not_found() {
    within(
        TEST_PATIENCE,
        "the whole of test an_unknown_stream_is_not_found",
        async {
            let mut node = Node::start(&[]);
            node.init().await;
            node.send(
                json!({"type": "grpc_bidi_stream_send", "msg_id": 2, "stream_id": "s7",
                         "data": {"text": "x"}}),
            )
            .await;
            assert_error(&node.reply_to(2).await, 5);
            node.send(json!({"type": "grpc_bidi_stream_close", "msg_id": 3, "stream_id": "zz"}))
                .await;
            assert_error(&node.reply_to(3).await, 5);
        },
    )
    .await;
}

#[tokio::test]
async fn malformed_json_is_an_error_and_the_node_keeps_its_streams() {
    within(
        TEST_PATIENCE,
        "the whole of test malformed_json_is_an_error_and_the_node_keeps_its_streams",
        async {
            let mut node = Node::start(&[]);
            node.init().await;
            let s = node.open_echo(2).await;
            for bad in ["{not json", "[1, 2]", r#"{"src": "c1", "body": 5}"#] {
                node.send_line(bad).await;
                assert_error(&node.recv_body_any().await, 3);
            }
            assert_eq!(
                node.echo(3, &s, "still here").await["data"]["text"],
                "echo: still here"
            );
        },
    )
    .await;
}

#[tokio::test]
async fn a_request_that_does_not_fit_the_message_is_invalid_argument() {
    within(
        TEST_PATIENCE,
        "the whole of test a_request_that_does_not_fit_the_message_is_invalid_argument",
        async {
            let mut node = Node::start(&[]);
            node.init().await;
            node.send(
                json!({"type": "grpc_server_stream", "msg_id": 2, "service": "LogWatcher",
                         "method": "WatchLogs", "request": {"filter": 5}}),
            )
            .await;
            assert_error(&node.reply_to(2).await, 3);
            node.send(
                json!({"type": "grpc_server_stream", "msg_id": 3, "service": "LogWatcher",
                         "method": "WatchLogs", "request": {"limit": 1, "colour": "red"}}),
            )
            .await;
            assert_error(&node.reply_to(3).await, 3);
            let s = node.open_echo(4).await;
            node.send(
                json!({"type": "grpc_bidi_stream_send", "msg_id": 5, "stream_id": s,
                         "data": {"text": ["not", "a", "string"]}}),
            )
            .await;
            assert_error(&node.reply_to(5).await, 3);
            // The stream is still OPEN.
            assert_eq!(node.echo(6, &s, "ok").await["data"]["text"], "echo: ok");
            // The wrong kind of call for the method.
            node.send(
                json!({"type": "grpc_server_stream", "msg_id": 7, "service": "Chat",
                         "method": "BiDiChat", "request": {}}),
            )
            .await;
            assert_error(&node.reply_to(7).await, 3);
            node.send(
                json!({"type": "grpc_bidi_stream_open", "msg_id": 8, "service": "LogWatcher",
                         "method": "WatchLogs"}),
            )
            .await;
            assert_error(&node.reply_to(8).await, 3);
        },
    )
    .await;
}

#[tokio::test]
async fn an_overlong_line_is_an_error_and_the_node_goes_on() {
    within(
        TEST_PATIENCE,
        "the whole of test an_overlong_line_is_an_error_and_the_node_goes_on",
        async {
            let mut node = Node::start(&["--max-line-bytes", "200"]);
            node.init().await;
            let long = format!(
                r#"{{"src":"c1","dest":"n1","body":{{"pad":"{}"}}}}"#,
                "x".repeat(500)
            );
            node.send_line(&long).await;
            assert_error(&node.recv_body_any().await, 3);
            assert_eq!(node.open_echo(2).await, "s1");
        },
    )
    .await;
}

#[tokio::test]
async fn chat_rooms_work_through_the_stdio_front() {
    within(
        TEST_PATIENCE,
        "the whole of test chat_rooms_work_through_the_stdio_front",
        async {
            let mut node = Node::start(&[]);
            node.init().await;
            node.send(json!({"type": "grpc_bidi_stream_open", "msg_id": 2,
                         "service": "chat.v1.ChatService", "method": "Chat"}))
                .await;
            let s = node.reply_to(2).await["stream_id"].clone();
            node.send(
                json!({"type": "grpc_bidi_stream_send", "msg_id": 3, "stream_id": s,
                         "data": {"roomId": "lobby", "senderId": "alice", "text": "hi"}}),
            )
            .await;
            // The join event, then the post.
            let mut texts = Vec::new();
            while texts.last() != Some(&json!("hi")) {
                let body = node.recv_body().await;
                assert_eq!(body["type"], "grpc_bidi_stream_recv", "{body}");
                assert_eq!(body["data"]["roomId"], "lobby");
                texts.push(body["data"]["text"].clone());
            }
            node.send(
                json!({"type": "grpc_unary", "msg_id": 4, "service": "ChatService",
                         "method": "Members", "request": {"roomId": "lobby"}}),
            )
            .await;
            let members = node.reply_to(4).await;
            assert_eq!(members["type"], "grpc_unary_ok");
            assert_eq!(members["data"], json!({"memberIds": ["alice"]}));
            node.send(json!({"type": "grpc_bidi_stream_cancel", "msg_id": 5, "stream_id": s}))
                .await;
            let end = node.reply_to(5).await;
            assert_eq!(
                (end["type"].clone(), end["status"].clone()),
                (json!("grpc_stream_end"), json!("CANCELLED"))
            );
            assert_eq!(end["code"], 1);
        },
    )
    .await;
}

#[tokio::test]
async fn a_failed_call_ends_its_stream_with_the_status() {
    within(
        TEST_PATIENCE,
        "the whole of test a_failed_call_ends_its_stream_with_the_status",
        async {
            let mut node = Node::start(&[]);
            node.init().await;
            node.send(json!({"type": "grpc_bidi_stream_open", "msg_id": 2,
                         "service": "ChatService", "method": "Chat"}))
                .await;
            let s = node.reply_to(2).await["stream_id"].clone();
            // Joining needs a room and a name.
            node.send(
                json!({"type": "grpc_bidi_stream_send", "msg_id": 3, "stream_id": s,
                         "data": {"text": "who am I"}}),
            )
            .await;
            let end = node.recv_body().await;
            assert_eq!(end["type"], "grpc_stream_end", "{end}");
            assert_eq!(
                (end["status"].clone(), end["code"].clone()),
                (json!("INVALID_ARGUMENT"), json!(3))
            );
        },
    )
    .await;
}

#[tokio::test]
async fn end_of_input_half_closes_the_streams_and_the_node_exits() {
    within(
        TEST_PATIENCE,
        "the whole of test end_of_input_half_closes_the_streams_and_the_node_exits",
        async {
            let mut node = Node::start(&[]);
            node.init().await;
            let s = node.open_echo(2).await;
            node.send(
                json!({"type": "grpc_bidi_stream_send", "msg_id": 3, "stream_id": s,
                         "data": {"text": "last words"}}),
            )
            .await;
            let (rest, status) = node.finish().await;
            assert!(status.success(), "{status}");
            let types: Vec<&str> = rest
                .iter()
                .filter_map(|l| l["body"]["type"].as_str())
                .collect();
            assert_eq!(types, ["grpc_bidi_stream_recv", "grpc_stream_end"]);
            assert_eq!(rest[1]["body"]["status"], "OK");
        },
    )
    .await;
}

impl Node {
    /// The body of the next reply, whatever its envelope (errors to unparsable input have no
    /// requester).
    async fn recv_body_any(&mut self) -> Value {
        self.recv().await["body"].clone()
    }
}

#[tokio::test]
async fn at_end_of_input_a_call_that_will_not_end_is_given_drain_timeout_then_ended() {
    within(
        TEST_PATIENCE,
        "the whole of test at_end_of_input_a_call_that_will_not_end_is_given_drain_timeout_then_ended",
        async {
            let drain = Duration::from_secs(1);
            let mut node = Node::start(&["--drain-timeout", "1"]);
            node.init().await;
            // Follows the log (limit 0) for an entry that never comes: it would run forever.
            node.send(
                json!({"type": "grpc_server_stream", "msg_id": 2, "service": "LogWatcher",
                       "method": "WatchLogs", "request": {"filter": "no such entry", "limit": 0}}),
            )
            .await;
            // An echo stream, which ends as soon as it is half-closed. The node handles lines in
            // order: once this echo is answered, the watch has started.
            let s = node.open_echo(3).await;
            assert_eq!(node.echo(4, &s, "hi").await["type"], "grpc_bidi_stream_recv");

            let input_ended = Instant::now();
            let (rest, status) = node.finish().await;
            let waited = input_ended.elapsed();
            assert!(status.success(), "{status}");
            let ends: Vec<(&Value, &Value)> = rest
                .iter()
                .map(|l| &l["body"])
                .filter(|b| b["type"] == "grpc_stream_end")
                .map(|b| (&b["in_reply_to"], &b["status"]))
                .collect();
            // The echo at once, the watch only when the drain is over.
            assert_eq!(
                ends,
                [(&json!(3), &json!("OK")), (&json!(2), &json!("UNAVAILABLE"))],
                "{rest:#?}"
            );
            assert!(
                waited >= drain,
                "the node exited {waited:?} after its input ended, before --drain-timeout 1"
            );
            // Well before the default's 10 s: the flag, not the default, set the wait.
            assert!(
                waited < h2chat::stdio::DEFAULT_DRAIN_TIMEOUT,
                "the node waited {waited:?}, not --drain-timeout 1"
            );
        },
    )
    .await;
}
