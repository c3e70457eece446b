//! The benches over several nodes, with tiny numbers (never a timing): `bench fanout` and `bench
//! idle` spread their connections over `--addr` and every `--peer`, and lose nothing; `idle
//! --ready-file` writes its report once every member is joined.

use std::process::Output;

use serde_json::Value;

use crate::cluster::{Node, TEST_TTL};
use crate::redis_server::RedisServer;
use crate::support::process::dies_with_the_test;
use crate::support::{within, TempFile, TEST_PATIENCE};

/// Runs `h2chat bench <args>` to the end; its one JSON line on stdout.
async fn bench(args: &[&str]) -> Value {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_h2chat"));
    cmd.arg("bench").args(args);
    let run = dies_with_the_test(&mut cmd).output();
    let out: Output = within(TEST_PATIENCE, &format!("h2chat bench {args:?}"), run)
        .await
        .expect("run h2chat bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

#[tokio::test]
async fn fanout_and_idle_spread_over_three_nodes_lose_nothing() {
    within(TEST_PATIENCE, "the test", async {
        let redis = RedisServer::start().await;
        let unlimited = ["--max-post-rate", "0"];
        let mut nodes = Vec::new();
        for _ in 0..3 {
            nodes.push(Node::start(&redis.url(), TEST_TTL, &unlimited).await);
        }
        let [a, b, c] = [0, 1, 2].map(|i| nodes[i].process.addr.to_string());
        let spread = ["--addr", &a, "--peer", &b, "--peer", &c];

        let mut args = spread.to_vec();
        args.extend([
            "fanout",
            "--rooms",
            "1",
            "--members",
            "9",
            "--messages",
            "30",
            "--rate",
            "300",
            "--timeout",
            "60",
            "--drain",
            "30",
        ]);
        args.rotate_left(spread.len());
        let r = bench(&args).await;
        assert_eq!(r["expected"], 9 * 30, "{r}");
        assert_eq!(r["lost"], 0, "{r}");
        assert_eq!(r["seq_errors"], 0, "{r}");
        assert!(r["peer_p50_us"].is_number(), "members on the peers: {r}");

        let ready = TempFile::path_for("idle-ready.json");
        let path = ready.0.to_string_lossy().into_owned();
        let mut args = spread.to_vec();
        args.extend([
            "idle",
            "--members",
            "12",
            "--conns",
            "6",
            "--members-per-room",
            "4",
            "--settle",
            "0.1",
            "--ready-file",
            &path,
        ]);
        args.rotate_left(spread.len());
        let r = bench(&args).await;
        assert_eq!(r["members"], 12, "{r}");
        let written: Value = serde_json::from_str(&std::fs::read_to_string(&ready.0).unwrap())
            .expect("the ready file is the report");
        assert_eq!(written["members"], 12);
        assert!(written["connect_and_join_s"].is_number());
    })
    .await;
}
