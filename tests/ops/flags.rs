//! Flag values that would make the server useless, or that the wire cannot carry, are refused at
//! startup: a usage error (exit 2) naming the flag and the range it allows. Host names work as
//! addresses.

use std::process::Stdio;

use h2chat::grpc::client::Channel;
use tokio::process::Command;

use crate::support::chat;
use crate::support::cli::ChatProcess;
use crate::support::process::ServerProcess;
use crate::support::PATIENCE;

/// What `h2chat ARGS` did: exit code and stderr. It must exit within [`PATIENCE`].
pub async fn run_h2chat(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_h2chat"));
    cmd.args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (name, value) in env {
        cmd.env(name, value);
    }
    let out = tokio::time::timeout(PATIENCE, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("h2chat {args:?} did not exit within {PATIENCE:?}"))
        .expect("run h2chat");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Each refused `serve` value, and what the message must say of the range.
const REFUSED_SERVE: &[(&str, &str, &str)] = &[
    ("--max-message-bytes", "0", "from 1024 to 4294967295"),
    (
        "--max-message-bytes",
        "99999999999",
        "from 1024 to 4294967295",
    ),
    (
        "--max-message-bytes",
        "4294967296",
        "from 1024 to 4294967295",
    ),
    ("--max-message-bytes", "-1", "from 1024 to 4294967295"),
    ("--max-concurrent-streams", "0", "from 1 to 4294967295"),
    ("--max-header-list-bytes", "100", "from 1024 to 4294967295"),
    ("--max-pending-accept-reset-streams", "-5", "at least 0"),
    ("--max-local-error-reset-streams", "-1", "at least 0"),
    ("--small-frame-budget-bytes", "10", "at least 65536"),
    ("--max-connections", "0", "at least 1"),
    ("--handshake-timeout", "0", "greater than 0"),
    ("--handshake-timeout", "NaN", "greater than 0"),
    ("--shutdown-grace", "-1", "at least 0"),
    ("--max-call-duration", "-0.5", "at least 0"),
    ("--keepalive-interval", "-1", "at least 0"),
    ("--keepalive-timeout", "0", "greater than 0"),
    ("--history", "0", "at least 1"),
    ("--history-bytes", "100", "at least 16384"),
    ("--history-on-join", "-1", "at least 0"),
    ("--max-rooms", "0", "at least 1"),
    ("--max-members-per-room", "0", "at least 1"),
    ("--max-joins-per-connection", "0", "at least 1"),
    ("--max-id-bytes", "0", "from 1 to 1024"),
    ("--max-text-bytes", "0", "at least 1"),
    ("--max-post-rate", "-1", "at least 0"),
    ("--post-burst", "0.5", "at least 1"),
    ("--log-history", "0", "at least 1"),
    ("--watch-poll-ms", "0", "at least 1"),
    ("--redis-timeout-ms", "0", "from 1 to 3600000"),
    ("--redis-posts-in-flight", "0", "from 1 to 4096"),
    ("--redis-scripts-in-flight", "0", "from 1 to 1048576"),
    ("--addr", "nonsense", "HOST:PORT"),
];

#[tokio::test]
async fn every_useless_serve_value_is_a_usage_error_naming_the_flag_and_range() {
    for (flag, value, range) in REFUSED_SERVE {
        // Listening on port 0, so that a value wrongly accepted cannot collide with anything;
        // `--addr` itself is the last one given.
        let (code, stderr) =
            run_h2chat(&["serve", "--addr", "127.0.0.1:0", flag, value], &[]).await;
        assert_eq!(
            code,
            Some(2),
            "serve {flag} {value} was not refused: {stderr}"
        );
        assert!(
            stderr.contains(&format!("invalid value '{value}' for '{flag} "))
                && stderr.contains(range),
            "serve {flag} {value}: the message must name the flag and `{range}`: {stderr}"
        );
    }
}

#[tokio::test]
async fn stdio_and_chat_values_are_checked_too() {
    let cases: &[(&[&str], &str)] = &[
        (&["stdio", "--max-line-bytes", "0"], "--max-line-bytes"),
        (&["stdio", "--drain-timeout", "-1"], "--drain-timeout"),
        (&["chat", "--room", "r", "--addr", "nonsense"], "--addr"),
        (&["chat", "--room", "r", "--addr", "localhost"], "--addr"),
        (&["chat", "--room", "r", "--addr", "[::1]"], "--addr"),
    ];
    for (args, flag) in cases {
        let (code, stderr) = run_h2chat(args, &[]).await;
        assert_eq!(code, Some(2), "{args:?} was not a usage error: {stderr}");
        assert!(
            stderr.contains(&format!("for '{flag} ")),
            "{args:?}: {stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_and_chat_take_a_host_name() {
    // Listens on what `localhost` resolves to (port 0: any free one).
    let server = ServerProcess::start(&["--addr", "localhost:0"]).await;
    assert!(
        server.addr.ip().is_loopback(),
        "listening on {}",
        server.addr
    );
    let ch = Channel::connect(server.addr).await.expect("connect");
    let mut watcher = chat::join(&ch, "hosts", "watcher").await;

    // The client resolves the name too.
    let target = format!("localhost:{}", server.addr.port());
    let mut bot = ChatProcess::start(&target, "hosts", Some("bot"), &[]);
    bot.send("resolved").await;
    chat::until_text(&mut watcher, "resolved").await;
    bot.close_stdin();
    let finished = bot.finish().await;
    assert_eq!(finished.code, Some(0), "{finished:?}");
}
