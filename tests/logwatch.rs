//! LogWatcher.WatchLogs and Chat.BiDiChat over real sockets: the in-process server for exact
//! scenarios, the `h2chat serve` binary where its own logging and `--watch-file` are the point,
//! and grpcurl as an independent client.

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use common::{require_tool, TestServer};
use h2::client::SendRequest;
use h2::RecvStream;
use h2chat::app::AppConfig;
use h2chat::logring::LogRing;
use h2chat::logwatch::LogsConfig;
use h2chat::pb::h2chat::echo::v1::EchoMessage;
use h2chat::pb::h2chat::logs::v1::{LogEntry, WatchLogsRequest};
use prost::Message;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tracing::Level;

const WATCH_LOGS: &str = "/h2chat.logs.v1.LogWatcher/WatchLogs";
const BIDI_CHAT: &str = "/h2chat.echo.v1.Chat/BiDiChat";
/// Safety net for every test; none of them waits on time otherwise.
const TEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs a test body with an overall timeout: a safety net, not a wait.
async fn within<T>(body: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(TEST_TIMEOUT, body)
        .await
        .expect("test timed out")
}

/// A raw gRPC call on h2: enough client for these tests.
struct RawCall {
    headers: http::HeaderMap,
    send: Option<h2::SendStream<Bytes>>,
    body: RecvStream,
    buf: BytesMut,
}

async fn connect(addr: &str) -> SendRequest<Bytes> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (send, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send.ready().await.expect("ready")
}

/// Starts a call; `first` is sent as the first message, and with `end` the request is closed.
/// Returns once the response headers arrived.
async fn start_call(
    client: &mut SendRequest<Bytes>,
    path: &str,
    first: Option<&impl Message>,
    end: bool,
) -> RawCall {
    start_raw(client, path, first.map(frame).unwrap_or_default(), end).await
}

/// Starts a call whose request begins with these bytes.
async fn start_raw(
    client: &mut SendRequest<Bytes>,
    path: &str,
    first: Bytes,
    end: bool,
) -> RawCall {
    let request = http::Request::post(path)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("request");
    let (response, mut send) = client.send_request(request, false).expect("send_request");
    if !first.is_empty() || end {
        send.send_data(first, end).expect("send");
    }
    let response = response.await.expect("response headers");
    assert_eq!(response.status(), 200);
    let (parts, body) = response.into_parts();
    RawCall {
        headers: parts.headers,
        send: Some(send),
        body,
        buf: BytesMut::new(),
    }
}

fn frame(msg: &impl Message) -> Bytes {
    let payload = msg.encode_to_vec();
    let mut out = BytesMut::with_capacity(payload.len() + 5);
    out.extend_from_slice(&[0]);
    out.extend_from_slice(&u32::try_from(payload.len()).expect("len").to_be_bytes());
    out.extend_from_slice(&payload);
    out.freeze()
}

impl RawCall {
    async fn recv<M: Message + Default>(&mut self) -> Option<M> {
        loop {
            if self.buf.len() >= 5 {
                let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
                let len = len as usize;
                if self.buf.len() >= 5 + len {
                    self.buf.advance(5);
                    let payload = self.buf.split_to(len);
                    return Some(M::decode(payload).expect("decode"));
                }
            }
            match self.body.data().await {
                Some(chunk) => {
                    let chunk = chunk.expect("data");
                    let _ = self.body.flow_control().release_capacity(chunk.len());
                    self.buf.extend_from_slice(&chunk);
                }
                None => return None,
            }
        }
    }

    fn send(&mut self, msg: &impl Message) {
        let send = self.send.as_mut().expect("request open");
        send.send_data(frame(msg), false).expect("send");
    }

    fn close_send(&mut self) {
        if let Some(mut send) = self.send.take() {
            send.send_data(Bytes::new(), true).expect("close");
        }
    }

    /// After the last message: (grpc-status, count) from the trailers.
    async fn trailers(&mut self) -> (String, Option<String>) {
        assert!(self.recv::<LogEntry>().await.is_none(), "no more messages");
        // A Trailers-Only response has its status in the headers.
        let t = self.body.trailers().await.expect("trailers");
        let t = t.as_ref().unwrap_or(&self.headers);
        let get = |k: &str| t.get(k).map(|v| v.to_str().unwrap_or("").to_owned());
        (get("grpc-status").unwrap_or_default(), get("count"))
    }
}

fn watch_request(filter: &str, limit: u32) -> WatchLogsRequest {
    WatchLogsRequest {
        filter: filter.into(),
        limit,
    }
}

/// An in-process server whose log watcher reads `ring` (which nothing else writes to).
async fn server_with_ring(ring: &LogRing) -> TestServer {
    TestServer::start(AppConfig {
        logs: LogsConfig {
            ring: ring.clone(),
            ..LogsConfig::default()
        },
        ..AppConfig::default()
    })
    .await
}

/// `h2chat serve` as a child process on a free port.
struct ServeProcess {
    child: Child,
    addr: String,
}

impl ServeProcess {
    async fn start(args: &[&str]) -> ServeProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_h2chat"))
            .arg("serve")
            .args(["--addr", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn h2chat serve");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        let addr = loop {
            let line = lines
                .next_line()
                .await
                .expect("stderr")
                .expect("server exited early");
            if let Some(rest) = line.split_once(" listening addr=").map(|(_, r)| r) {
                break rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned();
            }
        };
        // Keep draining stderr so the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        ServeProcess { child, addr }
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// A fresh file in the temp dir with these lines, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn with_lines(name: &str, lines: &[&str]) -> TempFile {
        let path = std::env::temp_dir().join(format!("h2chat-{}-{name}", std::process::id()));
        let mut text = lines.join("\n");
        text.push('\n');
        std::fs::write(&path, text).expect("write temp file");
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Runs grpcurl with the repository's protos (no reflection needed) and returns its stdout.
async fn grpcurl(proto: &str, data: &str, addr: &str, method: &str) -> String {
    let out = Command::new(require_tool("grpcurl"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["-plaintext", "-v", "-import-path", "proto", "-proto", proto])
        .args(["-d", data, addr, method])
        .output()
        .await
        .expect("run grpcurl");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "grpcurl failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

const WATCH_FILE_LINES: &[&str] = &[
    "ERROR disk full",
    "INFO started",
    "ERROR connection reset",
    "ERROR timeout",
];

#[tokio::test]
async fn watch_file_error_lines_arrive_in_order_then_ok_with_count() {
    within(async {
        let file = TempFile::with_lines("net.log", WATCH_FILE_LINES);
        let path = file.0.to_string_lossy().into_owned();
        let server = ServeProcess::start(&["--watch-file", &path]).await;
        let mut client = connect(&server.addr).await;
        let req = watch_request("ERROR", 3);
        let mut call = start_call(&mut client, WATCH_LOGS, Some(&req), true).await;
        let mut msgs = Vec::new();
        for _ in 0..3 {
            let entry: LogEntry = call.recv().await.expect("an entry");
            assert_eq!(entry.level, "ERROR");
            assert_eq!(entry.target, format!("file:{path}"));
            msgs.push(entry.msg);
        }
        assert_eq!(msgs, ["disk full", "connection reset", "timeout"]);
        assert_eq!(call.trailers().await, ("0".into(), Some("3".into())));
    })
    .await;
}

#[tokio::test]
async fn watch_file_error_lines_through_grpcurl() {
    within(async {
        let file = TempFile::with_lines("grpcurl.log", WATCH_FILE_LINES);
        let path = file.0.to_string_lossy().into_owned();
        let server = ServeProcess::start(&["--watch-file", &path]).await;
        let out = grpcurl(
            "logs/v1/logs.proto",
            r#"{"filter":"ERROR","limit":3}"#,
            &server.addr,
            "h2chat.logs.v1.LogWatcher/WatchLogs",
        )
        .await;
        let msgs: Vec<&str> = out
            .lines()
            .filter_map(|l| l.trim().strip_prefix("\"msg\": "))
            .collect();
        assert_eq!(
            msgs,
            ["\"disk full\",", "\"connection reset\",", "\"timeout\","]
        );
        assert_eq!(out.matches("\"level\": \"ERROR\"").count(), 3, "{out}");
        let trailers = out
            .split("Response trailers received:")
            .nth(1)
            .unwrap_or("");
        assert!(trailers.contains("count: 3"), "{out}");
    })
    .await;
}

#[tokio::test]
async fn a_server_warning_arrives_on_a_warn_watch() {
    within(async {
        let server = ServeProcess::start(&["--max-connections", "2"]).await;
        let mut client = connect(&server.addr).await;
        let req = watch_request("WARN", 1);
        let mut call = start_call(&mut client, WATCH_LOGS, Some(&req), true).await;
        // The watch is live. A second connection fills the server's connection slots, which it
        // warns about.
        let _second = TcpStream::connect(&server.addr).await.expect("connect");
        let entry: LogEntry = call.recv().await.expect("the warning");
        assert_eq!(entry.level, "WARN");
        assert!(
            entry.msg.contains("connection limit reached"),
            "{}",
            entry.msg
        );
        assert_eq!(entry.target, "h2chat::grpc::server");
        assert_eq!(call.trailers().await, ("0".into(), Some("1".into())));
    })
    .await;
}

#[tokio::test]
async fn a_level_filter_selects_that_level_and_more_severe() {
    within(async {
        let ring = LogRing::new(100);
        for (level, msg) in [
            (Level::TRACE, "t"),
            (Level::INFO, "i"),
            (Level::ERROR, "e"),
            (Level::DEBUG, "d"),
            (Level::WARN, "w"),
        ] {
            ring.push(level, "test", msg.into());
        }
        let server = server_with_ring(&ring).await;
        let mut client = connect(&server.target()).await;
        let req = watch_request("warn", 2);
        let mut call = start_call(&mut client, WATCH_LOGS, Some(&req), true).await;
        let a: LogEntry = call.recv().await.expect("entry");
        let b: LogEntry = call.recv().await.expect("entry");
        assert_eq!((a.level.as_str(), a.msg.as_str(), a.seq), ("ERROR", "e", 3));
        assert_eq!((b.level.as_str(), b.msg.as_str(), b.seq), ("WARN", "w", 5));
        assert_eq!(call.trailers().await, ("0".into(), Some("2".into())));
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn other_filter_text_matches_a_substring_of_the_message() {
    within(async {
        let ring = LogRing::new(100);
        for msg in ["disk full", "Disk ok", "the disk", "timeout"] {
            ring.push(Level::INFO, "test", msg.into());
        }
        let server = server_with_ring(&ring).await;
        let mut client = connect(&server.target()).await;
        let req = watch_request("disk", 2);
        let mut call = start_call(&mut client, WATCH_LOGS, Some(&req), true).await;
        let a: LogEntry = call.recv().await.expect("entry");
        let b: LogEntry = call.recv().await.expect("entry");
        assert_eq!((a.msg.as_str(), b.msg.as_str()), ("disk full", "the disk"));
        assert_eq!(call.trailers().await, ("0".into(), Some("2".into())));
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn retained_entries_come_first_then_live_ones() {
    within(async {
        let ring = LogRing::new(100);
        ring.push(Level::INFO, "test", "old 1".into());
        ring.push(Level::DEBUG, "test", "old 2".into());
        let server = server_with_ring(&ring).await;
        let mut client = connect(&server.target()).await;
        let mut call = start_call(&mut client, WATCH_LOGS, Some(&watch_request("", 3)), true).await;
        let a: LogEntry = call.recv().await.expect("entry");
        let b: LogEntry = call.recv().await.expect("entry");
        assert_eq!((a.msg.as_str(), b.msg.as_str()), ("old 1", "old 2"));
        ring.push(Level::TRACE, "test", "live".into());
        let c: LogEntry = call.recv().await.expect("entry");
        assert_eq!((c.msg.as_str(), c.seq), ("live", 3));
        assert_eq!(call.trailers().await, ("0".into(), Some("3".into())));
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn limit_zero_follows_until_the_client_cancels() {
    within(async {
        let ring = LogRing::new(100);
        let server = server_with_ring(&ring).await;
        let mut client = connect(&server.target()).await;
        let mut call = start_call(&mut client, WATCH_LOGS, Some(&watch_request("", 0)), true).await;
        for i in 1..=250u64 {
            ring.push(Level::INFO, "test", format!("live {i}"));
            let entry: LogEntry = call.recv().await.expect("the call goes on");
            assert_eq!(entry.seq, i);
        }
        if let Some(send) = call.send.as_mut() {
            send.send_reset(h2::Reason::CANCEL);
        }
        // The server is unharmed: the same connection serves a new watch.
        let mut again =
            start_call(&mut client, WATCH_LOGS, Some(&watch_request("", 1)), true).await;
        let first: LogEntry = again.recv().await.expect("entry");
        assert_eq!(first.seq, 151, "the oldest of the 100 retained entries");
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_watcher_that_fell_behind_is_told_how_many_entries_it_missed() {
    within(async {
        // A ring of 8: whatever a watcher has not read by the time 8 more entries arrive is gone.
        let ring = LogRing::new(8);
        let server = server_with_ring(&ring).await;
        let mut client = connect(&server.target()).await;
        let mut call = start_call(&mut client, WATCH_LOGS, Some(&watch_request("", 0)), true).await;
        ring.push(Level::INFO, "test", "first".into());
        let first: LogEntry = call.recv().await.expect("entry");
        assert_eq!(first.seq, 1);
        // 100 entries arrive before the watcher runs again (this runtime has one thread), as they
        // would while a slow client holds it back: 2..=93 leave the ring unread.
        for i in 2..=101 {
            ring.push(Level::INFO, "test", format!("e{i}"));
        }
        let notice: LogEntry = call.recv().await.expect("notice");
        assert_eq!((notice.skipped, notice.seq), (92, 0));
        assert_eq!(notice.level, "WARN");
        assert!(notice.msg.contains("skipped 92 entries"), "{}", notice.msg);
        for seq in 94..=101 {
            let entry: LogEntry = call.recv().await.expect("entry");
            assert_eq!(entry.seq, seq);
        }
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_request_that_is_not_a_watch_request_is_internal() {
    within(async {
        let server = TestServer::default().await;
        let mut client = connect(&server.target()).await;
        // One message whose payload is field 1 with wire type 7, which protobuf does not have.
        let garbage = Bytes::from_static(&[0, 0, 0, 0, 2, 0x0f, 0x01]);
        let mut call = start_raw(&mut client, WATCH_LOGS, garbage, true).await;
        let (status, _) = call.trailers().await;
        assert_eq!(status, "13");
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn bidi_chat_answers_each_message_before_the_next_and_ends_ok_on_half_close() {
    within(async {
        let server = TestServer::default().await;
        let mut client = connect(&server.target()).await;
        let mut call = start_call(&mut client, BIDI_CHAT, None::<&EchoMessage>, false).await;
        for text in ["hello", "", "wörld"] {
            call.send(&EchoMessage { text: text.into() });
            let reply: EchoMessage = call.recv().await.expect("reply");
            assert_eq!(reply.text, format!("echo: {text}"));
        }
        call.close_send();
        let (status, _) = call.trailers().await;
        assert_eq!(status, "0");
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn bidi_chat_echoes_through_grpcurl() {
    within(async {
        let server = TestServer::default().await;
        let out = grpcurl(
            "echo/v1/echo.proto",
            r#"{"text":"hello"} {"text":"again"}"#,
            &server.target(),
            "h2chat.echo.v1.Chat/BiDiChat",
        )
        .await;
        let texts: Vec<&str> = out
            .lines()
            .filter_map(|l| l.trim().strip_prefix("\"text\": "))
            .collect();
        assert_eq!(texts, ["\"echo: hello\"", "\"echo: again\""]);
        server.shutdown().await;
    })
    .await;
}
