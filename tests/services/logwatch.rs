//! LogWatcher.WatchLogs over real sockets: the in-process server for exact scenarios, the `h2chat serve` binary where its own logging and `--watch-file` are the point,
//! and grpcurl as an independent client.

use crate::support::{within, TEST_PATIENCE};

use crate::support::process::ServerProcess;
use crate::support::{grpcurl, TempFile, TestServer};
use bytes::Bytes;
use h2chat::grpc::{CallOptions, Channel, ClientCall, Code};
use h2chat::pb::h2chat::logs::v1::{LogEntry, WatchLogsRequest};
use h2chat::services::app::AppConfig;
use h2chat::services::logs::ring::LogRing;
use h2chat::services::logs::LogsConfig;
use tokio::net::TcpStream;
use tracing::Level;

const WATCH_LOGS: &str = "/h2chat.logs.v1.LogWatcher/WatchLogs";

async fn connect(addr: &str) -> Channel {
    Channel::connect(addr).await.expect("connect")
}

/// Starts a WatchLogs call and returns once its response headers arrived: the watch is live.
async fn watch(ch: &Channel, filter: &str, limit: u32) -> ClientCall {
    let mut call = ch
        .start(WATCH_LOGS, CallOptions::default())
        .await
        .expect("start");
    call.send_last(&watch_request(filter, limit))
        .await
        .expect("send");
    call.headers().await.expect("headers");
    call
}

async fn next_entry(call: &mut ClientCall) -> LogEntry {
    call.recv::<LogEntry>()
        .await
        .expect("call goes on")
        .expect("an entry")
}

/// After the last entry: the call ends OK; returns its `count` trailer.
async fn ends_ok_with_count(call: &mut ClientCall) -> String {
    let end = call.recv::<LogEntry>().await.expect("ends OK");
    assert!(end.is_none(), "no more entries");
    let trailers = call.trailers().expect("trailers");
    trailers.get("count").expect("count trailer").to_owned()
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

/// Runs grpcurl (which learns the schema by reflection) and returns its stdout.
async fn grpcurl(data: &str, addr: &str, method: &str) -> String {
    grpcurl::ok(&["-plaintext", "-v", "-d", data, addr, method]).await
}

const WATCH_FILE_LINES: &[&str] = &[
    "ERROR disk full",
    "INFO started",
    "ERROR connection reset",
    "ERROR timeout",
];

#[tokio::test]
async fn watch_file_error_lines_arrive_in_order_then_ok_with_count() {
    within(
        TEST_PATIENCE,
        "the whole of test watch_file_error_lines_arrive_in_order_then_ok_with_count",
        async {
            let file = TempFile::with_lines("net.log", WATCH_FILE_LINES);
            let path = file.0.to_string_lossy().into_owned();
            let server = ServerProcess::start(&["--watch-file", &path]).await;
            let ch = connect(&server.addr.to_string()).await;
            let mut call = watch(&ch, "ERROR", 3).await;
            let mut msgs = Vec::new();
            for _ in 0..3 {
                let entry = next_entry(&mut call).await;
                assert_eq!(entry.level, "ERROR");
                assert_eq!(entry.target, format!("file:{path}"));
                msgs.push(entry.msg);
            }
            assert_eq!(msgs, ["disk full", "connection reset", "timeout"]);
            assert_eq!(ends_ok_with_count(&mut call).await, "3");
        },
    )
    .await;
}

#[tokio::test]
async fn watch_file_error_lines_through_grpcurl() {
    within(
        TEST_PATIENCE,
        "the whole of test watch_file_error_lines_through_grpcurl",
        async {
            let file = TempFile::with_lines("grpcurl.log", WATCH_FILE_LINES);
            let path = file.0.to_string_lossy().into_owned();
            let server = ServerProcess::start(&["--watch-file", &path]).await;
            let out = grpcurl(
                r#"{"filter":"ERROR","limit":3}"#,
                &server.addr.to_string(),
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
        },
    )
    .await;
}

#[tokio::test]
async fn a_server_warning_arrives_on_a_warn_watch() {
    within(
        TEST_PATIENCE,
        "the whole of test a_server_warning_arrives_on_a_warn_watch",
        async {
            let server = ServerProcess::start(&["--max-connections", "2"]).await;
            let ch = connect(&server.addr.to_string()).await;
            let mut call = watch(&ch, "WARN", 1).await;
            // The watch is live. A second connection fills the server's connection slots, which it
            // warns about.
            let _second = TcpStream::connect(server.addr).await.expect("connect");
            let entry = next_entry(&mut call).await;
            assert_eq!(entry.level, "WARN");
            assert!(
                entry.msg.contains("connection limit reached"),
                "{}",
                entry.msg
            );
            assert_eq!(entry.target, "h2chat::grpc::server::listen");
            assert_eq!(ends_ok_with_count(&mut call).await, "1");
        },
    )
    .await;
}

#[tokio::test]
async fn a_level_filter_selects_that_level_and_more_severe() {
    within(
        TEST_PATIENCE,
        "the whole of test a_level_filter_selects_that_level_and_more_severe",
        async {
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
            let ch = connect(&server.target()).await;
            let mut call = watch(&ch, "warn", 2).await;
            let a = next_entry(&mut call).await;
            let b = next_entry(&mut call).await;
            assert_eq!((a.level.as_str(), a.msg.as_str(), a.seq), ("ERROR", "e", 3));
            assert_eq!((b.level.as_str(), b.msg.as_str(), b.seq), ("WARN", "w", 5));
            assert_eq!(ends_ok_with_count(&mut call).await, "2");
            server.shutdown().await;
        },
    )
    .await;
}

#[tokio::test]
async fn other_filter_text_matches_a_substring_of_the_message() {
    within(
        TEST_PATIENCE,
        "the whole of test other_filter_text_matches_a_substring_of_the_message",
        async {
            let ring = LogRing::new(100);
            for msg in ["disk full", "Disk ok", "the disk", "timeout"] {
                ring.push(Level::INFO, "test", msg.into());
            }
            let server = server_with_ring(&ring).await;
            let ch = connect(&server.target()).await;
            let mut call = watch(&ch, "disk", 2).await;
            let a = next_entry(&mut call).await;
            let b = next_entry(&mut call).await;
            assert_eq!((a.msg.as_str(), b.msg.as_str()), ("disk full", "the disk"));
            assert_eq!(ends_ok_with_count(&mut call).await, "2");
            server.shutdown().await;
        },
    )
    .await;
}

#[tokio::test]
async fn retained_entries_come_first_then_live_ones() {
    within(
        TEST_PATIENCE,
        "the whole of test retained_entries_come_first_then_live_ones",
        async {
            let ring = LogRing::new(100);
            ring.push(Level::INFO, "test", "old 1".into());
            ring.push(Level::DEBUG, "test", "old 2".into());
            let server = server_with_ring(&ring).await;
            let ch = connect(&server.target()).await;
            let mut call = watch(&ch, "", 3).await;
            let a = next_entry(&mut call).await;
            let b = next_entry(&mut call).await;
            assert_eq!((a.msg.as_str(), b.msg.as_str()), ("old 1", "old 2"));
            ring.push(Level::TRACE, "test", "live".into());
            let c = next_entry(&mut call).await;
            assert_eq!((c.msg.as_str(), c.seq), ("live", 3));
            assert_eq!(ends_ok_with_count(&mut call).await, "3");
            server.shutdown().await;
        },
    )
    .await;
}

#[tokio::test]
async fn limit_zero_follows_until_the_client_cancels() {
    within(
        TEST_PATIENCE,
        "the whole of test limit_zero_follows_until_the_client_cancels",
        async {
            let ring = LogRing::new(100);
            let server = server_with_ring(&ring).await;
            let ch = connect(&server.target()).await;
            let mut call = watch(&ch, "", 0).await;
            for i in 1..=250u64 {
                ring.push(Level::INFO, "test", format!("live {i}"));
                assert_eq!(next_entry(&mut call).await.seq, i);
            }
            call.cancel();
            // The server is unharmed: the same connection serves a new watch.
            let mut again = watch(&ch, "", 1).await;
            let first = next_entry(&mut again).await;
            assert_eq!(first.seq, 151, "the oldest of the 100 retained entries");
            server.shutdown().await;
        },
    )
    .await;
}

#[tokio::test]
async fn a_watcher_that_fell_behind_is_told_how_many_entries_it_missed() {
    within(
        TEST_PATIENCE,
        "the whole of test a_watcher_that_fell_behind_is_told_how_many_entries_it_missed",
        async {
            // A ring of 8: whatever a watcher has not read by the time 8 more entries arrive is gone.
            let ring = LogRing::new(8);
            let server = server_with_ring(&ring).await;
            let ch = connect(&server.target()).await;
            let mut call = watch(&ch, "", 0).await;
            ring.push(Level::INFO, "test", "first".into());
            assert_eq!(next_entry(&mut call).await.seq, 1);
            // 100 entries arrive before the watcher runs again (this runtime has one thread), as they
            // would while a slow client holds it back: 2..=93 leave the ring unread.
            for i in 2..=101 {
                ring.push(Level::INFO, "test", format!("e{i}"));
            }
            let notice = next_entry(&mut call).await;
            assert_eq!((notice.skipped, notice.seq), (92, 0));
            assert_eq!(notice.level, "WARN");
            assert!(notice.msg.contains("skipped 92 entries"), "{}", notice.msg);
            for seq in 94..=101 {
                assert_eq!(next_entry(&mut call).await.seq, seq);
            }
            server.shutdown().await;
        },
    )
    .await;
}

#[tokio::test]
async fn a_request_that_is_not_a_watch_request_is_internal() {
    within(
        TEST_PATIENCE,
        "the whole of test a_request_that_is_not_a_watch_request_is_internal",
        async {
            let server = TestServer::default().await;
            let ch = connect(&server.target()).await;
            let mut call = ch
                .start(WATCH_LOGS, CallOptions::default())
                .await
                .expect("start");
            // One message whose payload is field 1 with wire type 7, which protobuf does not have.
            let garbage = Bytes::from_static(&[0, 0, 0, 0, 2, 0x0f, 0x01]);
            call.send_raw(garbage).await.expect("send");
            call.close_send().expect("close");
            let status = call.recv::<LogEntry>().await.expect_err("fails");
            assert_eq!(status.code(), Code::Internal);
            server.shutdown().await;
        },
    )
    .await;
}
