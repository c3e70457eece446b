//! A smoke run of each `h2chat bench` mode with tiny numbers, against the real server as a child
//! process: the report is one line of JSON, nothing is lost. Never a timing.

use std::process::Output;

use crate::support::process::{dies_with_the_test, ServerProcess};
use crate::support::{within, TempFile, TEST_PATIENCE};
use h2chat::bench::unary;
use h2chat::grpc::client::{CallOptions, Channel};
use h2chat::pb::grpc::testing::SimpleRequest;
use serde_json::Value;

/// Runs `h2chat bench <args>` to the end (at most [`TEST_PATIENCE`]).
async fn bench(args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_h2chat"));
    cmd.arg("bench").args(args);
    let run = dies_with_the_test(&mut cmd).output();
    let what = format!("h2chat bench {args:?} to finish");
    within(TEST_PATIENCE, &what, run)
        .await
        .expect("run h2chat bench")
}

/// The one JSON line a bench prints on stdout.
fn report(out: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed: {stderr}\n{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one line on stdout: {stdout}");
    serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("not JSON ({e}): {}", lines[0]))
}

fn int(r: &Value, key: &str) -> u64 {
    r[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is not an integer in {r}"))
}

fn is_number(r: &Value, key: &str) -> bool {
    r[key].is_number()
}

/// The server a fan-out bench is run against: posting unlimited, as the bench asks.
async fn chat_server() -> ServerProcess {
    ServerProcess::start(&["--max-post-rate", "0"]).await
}

#[tokio::test]
async fn fanout_flat_out_delivers_every_post_to_every_member() {
    within(
        TEST_PATIENCE,
        "the whole of test fanout_flat_out_delivers_every_post_to_every_member",
        async {
            let server = chat_server().await;
            let (addr, pid) = (server.addr.to_string(), server.pid().to_string());
            let out = bench(&[
                "fanout",
                "--addr",
                &addr,
                "--rooms",
                "2",
                "--members",
                "3",
                "--senders",
                "2",
                "--messages",
                "50",
                "--size",
                "40",
                "--conns",
                "2",
                "--server-pid",
                &pid,
                "--timeout",
                "60",
                "--drain",
                "30",
            ])
            .await;
            let r = report(&out);
            assert_eq!(r["bench"], "fanout");
            assert_eq!(r["pacing"], "acks");
            assert_eq!(int(&r, "expected"), 2 * 3 * 2 * 50);
            assert_eq!(int(&r, "delivered"), 2 * 3 * 2 * 50);
            assert_eq!(int(&r, "lost"), 0);
            assert_eq!(int(&r, "gap_events"), 0);
            assert_eq!(int(&r, "seq_errors"), 0);
            assert_eq!(int(&r, "call_errors"), 0);
            for key in [
                "p50_us",
                "p99_us",
                "max_us",
                "server_cpu_s",
                "server_user_ns_per_delivery",
                "server_sys_ns_per_delivery",
                "server_peak_rss_kib",
            ] {
                assert!(is_number(&r, key), "{key} in {r}");
            }
        },
    )
    .await;
}

#[tokio::test]
async fn a_fanout_flood_beside_stalled_members_loses_nothing_and_gives_each_stalled_one_gap() {
    within(
        TEST_PATIENCE,
        "the whole of the fanout flood smoke test",
        async {
            // A small history, so that the flood is many times what the room keeps.
            let server = ServerProcess::start(&["--max-post-rate", "0", "--history", "100"]).await;
            let (addr, pid) = (server.addr.to_string(), server.pid().to_string());
            let out = bench(&[
                "fanout",
                "--addr",
                &addr,
                "--members",
                "6",
                "--stalled",
                "2",
                "--messages",
                "3000",
                "--size",
                "40",
                "--window",
                "0",
                "--server-pid",
                &pid,
                "--timeout",
                "60",
                "--drain",
                "30",
            ])
            .await;
            let r = report(&out);
            assert_eq!(r["pacing"], "none");
            assert_eq!(int(&r, "expected"), 4 * 3000, "the four reading members");
            assert_eq!(int(&r, "lost"), 0);
            assert_eq!(int(&r, "gap_events"), 0);
            assert_eq!(int(&r, "seq_errors"), 0);
            assert_eq!(int(&r, "stalled_members"), 2);
            assert_eq!(int(&r, "stalled_with_one_gap"), 2, "{r}");
            assert_eq!(int(&r, "stalled_seq_errors"), 0);
            assert!(is_number(&r, "sender_posts_per_s"), "{r}");
        },
    )
    .await;
}

#[tokio::test]
async fn fanout_at_a_rate_delivers_every_post() {
    within(
        TEST_PATIENCE,
        "the whole of test fanout_at_a_rate_delivers_every_post",
        async {
            let server = chat_server().await;
            let out = bench(&[
                "fanout",
                "--addr",
                &server.addr.to_string(),
                "--members",
                "4",
                "--messages",
                "30",
                "--rate",
                "1000",
                "--timeout",
                "60",
                "--drain",
                "30",
            ])
            .await;
            let r = report(&out);
            assert_eq!(r["pacing"], "rate");
            assert_eq!(int(&r, "lost"), 0);
            assert!(
                r["server_cpu_s"].is_null(),
                "no --server-pid, no server figures"
            );
        },
    )
    .await;
}

#[tokio::test]
async fn a_window_much_smaller_than_the_posts_still_loses_nothing() {
    within(
        TEST_PATIENCE,
        "the whole of test a_window_much_smaller_than_the_posts_still_loses_nothing",
        async {
            let server = chat_server().await;
            let out = bench(&[
                "fanout",
                "--addr",
                &server.addr.to_string(),
                "--members",
                "3",
                "--messages",
                "200",
                "--window",
                "5",
                "--timeout",
                "60",
                "--drain",
                "30",
            ])
            .await;
            let r = report(&out);
            assert_eq!(r["window"], 5);
            assert_eq!(int(&r, "delivered"), 3 * 200);
            assert_eq!(int(&r, "lost"), 0);
        },
    )
    .await;
}

#[tokio::test]
async fn idle_reports_memory_per_connection_and_per_member() {
    within(
        TEST_PATIENCE,
        "the whole of test idle_reports_memory_per_connection_and_per_member",
        async {
            let server = chat_server().await;
            let (addr, pid) = (server.addr.to_string(), server.pid().to_string());
            let out = bench(&[
                "idle",
                "--addr",
                &addr,
                "--members",
                "6",
                "--conns",
                "3",
                "--members-per-room",
                "4",
                "--server-pid",
                &pid,
                "--settle",
                "0",
                "--timeout",
                "60",
            ])
            .await;
            let r = report(&out);
            assert_eq!(r["bench"], "idle");
            assert_eq!(int(&r, "members"), 6);
            for key in [
                "kib_per_conn",
                "kib_per_member",
                "kib_per_member_all_in",
                "join_s",
            ] {
                assert!(is_number(&r, key), "{key} in {r}");
            }
        },
    )
    .await;
}

#[tokio::test]
async fn a_bench_whose_members_cannot_join_fails_with_the_reason() {
    within(
        TEST_PATIENCE,
        "the whole of test a_bench_whose_members_cannot_join_fails_with_the_reason",
        async {
            let server = ServerProcess::start(&["--max-members-per-room", "2"]).await;
            let out = bench(&[
                "fanout",
                "--addr",
                &server.addr.to_string(),
                "--members",
                "3",
                "--timeout",
                "20",
            ])
            .await;
            assert!(!out.status.success());
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(stderr.contains("is full"), "{stderr}");
            assert!(
                out.stdout.is_empty(),
                "no report for a bench that did not run"
            );
        },
    )
    .await;
}

#[tokio::test]
async fn the_raw_h2_baseline_echoes_a_grpc_shaped_response() {
    within(
        TEST_PATIENCE,
        "the whole of test the_raw_h2_baseline_echoes_a_grpc_shaped_response",
        async {
            for flags in [&[][..], &["--coalesce-writes"][..]] {
                let raw = ServerProcess::start_command(&["bench", "raw-h2-server"], flags).await;
                let channel = Channel::connect(raw.addr).await.expect("connect");
                let req = unary::request();
                let echoed: SimpleRequest = channel
                    .unary(unary::UNARY_PATH, &req, CallOptions::default())
                    .await
                    .expect("an OK gRPC response");
                assert_eq!(echoed, req, "with {flags:?}");
            }
        },
    )
    .await;
}

#[tokio::test]
async fn write_floor_delivers_every_post_to_every_connection() {
    within(
        TEST_PATIENCE,
        "the whole of test write_floor_delivers_every_post_to_every_connection",
        async {
            let server =
                ServerProcess::start_command(&["bench", "write-floor-server"], &["--size", "20"])
                    .await;
            let (addr, pid) = (server.addr.to_string(), server.pid().to_string());
            let out = bench(&[
                "write-floor",
                "--addr",
                &addr,
                "--conns",
                "3",
                "--posts",
                "50",
                "--rate",
                "1000",
                "--size",
                "20",
                "--server-pid",
                &pid,
                "--timeout",
                "60",
            ])
            .await;
            let r = report(&out);
            assert_eq!(r["bench"], "write_floor");
            assert_eq!(int(&r, "posted"), 50);
            assert_eq!(int(&r, "expected"), 3 * 50);
            assert_eq!(int(&r, "delivered"), 3 * 50);
            assert_eq!(int(&r, "lost"), 0);
            assert_eq!(int(&r, "unmatched"), 0);
            for key in [
                "p50_us",
                "p99_us",
                "server_cpu_s",
                "server_ns_per_delivery",
                "server_user_ns_per_delivery",
                "server_sys_ns_per_delivery",
            ] {
                assert!(is_number(&r, key), "{key} in {r}");
            }
            assert!(
                int(&r, "server_write_calls") >= 3 * 50,
                "one write call per delivery at least: {r}"
            );
            assert!(
                server.terminate().await.success(),
                "the floor server stops cleanly on SIGTERM"
            );
        },
    )
    .await;
}

#[tokio::test]
async fn unary_request_checks_the_server_then_writes_the_h2load_body() {
    within(
        TEST_PATIENCE,
        "the whole of test unary_request_checks_the_server_then_writes_the_h2load_body",
        async {
            let server = ServerProcess::start(&["--interop"]).await;
            let file = TempFile::path_for("unary.bin");
            let path = file.0.to_str().expect("utf-8 temp path");
            let out = bench(&[
                "unary-request",
                "--check",
                &server.addr.to_string(),
                "--out",
                path,
            ])
            .await;
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let written = std::fs::read(&file.0).expect("request file");
            assert_eq!(written, unary::request_body());

            // The baseline echoes the request: not a SimpleResponse with a 10-byte payload.
            let raw = ServerProcess::start_command(&["bench", "raw-h2-server"], &[]).await;
            let out = bench(&[
                "unary-request",
                "--check",
                &raw.addr.to_string(),
                "--out",
                path,
            ])
            .await;
            assert!(
                !out.status.success(),
                "the check must refuse a wrong answer"
            );
        },
    )
    .await;
}
