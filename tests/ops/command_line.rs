//! The command line itself, on the built binary: a command line clap refuses is exit 2 with
//! clap's message and usage; a failure once the command runs is exit 1 with `h2chat: <why>`
//! (`main.rs`; `src/client/mod.rs` has the chat client's table, whose 3 to 6 and 130
//! `client/script.rs` checks); `--help` and `--version` are not errors.

use std::process::Stdio;

use tokio::process::Command;

use crate::flags::run_h2chat;
use crate::support::process::{dies_with_the_test, ServerProcess};
use crate::support::{within, PATIENCE, TEST_PATIENCE};

/// Command lines clap refuses, each with what its message must say.
const REFUSED: &[(&[&str], &str)] = &[
    (&[], "Usage: h2chat <COMMAND>"),
    (&["frobnicate"], "unrecognized subcommand 'frobnicate'"),
    (
        &["serve", "--no-such-flag"],
        "unexpected argument '--no-such-flag'",
    ),
    (
        &["serve", "--max-rooms"],
        "a value is required for '--max-rooms",
    ),
    (&["chat"], "--room <ROOM>"),
    (&["serve", "--tls-cert", "cert.pem"], "--tls-key <TLS_KEY>"),
    (
        &["serve", "--log-format", "xml"],
        "[possible values: text, json]",
    ),
    (
        &["chat", "--room", "r", "--format", "yaml"],
        "[possible values: text, json]",
    ),
    (
        &["serve", "--keepalive-interval", "abc"],
        "invalid value 'abc' for '--keepalive-interval",
    ),
    (
        &["stdio", "--max-line-bytes", "1k"],
        "invalid value '1k' for '--max-line-bytes",
    ),
];

#[tokio::test]
async fn a_command_line_clap_refuses_exits_2_with_its_message() {
    within(
        TEST_PATIENCE,
        "the whole of test a_command_line_clap_refuses_exits_2_with_its_message",
        async {
            for (args, says) in REFUSED {
                let (code, stderr) = run_h2chat(args, &[]).await;
                assert_eq!(code, Some(2), "h2chat {args:?}: {stderr}");
                assert!(
                    stderr.contains(says),
                    "h2chat {args:?} must say {says:?}: {stderr}"
                );
                assert!(
                    !stderr.starts_with("h2chat:"),
                    "h2chat {args:?} ran instead of refusing: {stderr}"
                );
            }
        },
    )
    .await;
}

#[tokio::test]
async fn help_and_version_exit_0() {
    within(
        TEST_PATIENCE,
        "the whole of test help_and_version_exit_0",
        async {
            for args in [
                &["--help"][..],
                &["--version"],
                &["serve", "--help"],
                &["chat", "--help"],
                &["stdio", "--help"],
            ] {
                let (code, stderr) = run_h2chat(args, &[]).await;
                assert_eq!(code, Some(0), "h2chat {args:?}: {stderr}");
            }
        },
    )
    .await;
}

#[tokio::test]
async fn a_scripted_chat_with_no_name_anywhere_exits_2() {
    within(
        TEST_PATIENCE,
        "the whole of test a_scripted_chat_with_no_name_anywhere_exits_2",
        async {
            // No --name and an empty input: no first line to take the name from. Nothing
            // listens at the address: the name is asked for before any connection.
            let (code, stderr) =
                run_h2chat(&["chat", "--room", "r", "--addr", "127.0.0.1:9"], &[]).await;
            assert_eq!(code, Some(2), "{stderr}");
            assert!(stderr.contains("h2chat: no name"), "{stderr}");
        },
    )
    .await;
}

#[tokio::test]
async fn a_server_that_cannot_listen_exits_1_naming_the_address() {
    within(
        TEST_PATIENCE,
        "the whole of test a_server_that_cannot_listen_exits_1_naming_the_address",
        async {
            // The address is taken for as long as this listener lives.
            let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let addr = taken.local_addr().expect("addr").to_string();
            let (code, stderr) = run_h2chat(&["serve", "--addr", &addr], &[]).await;
            assert_eq!(code, Some(1), "{stderr}");
            assert!(
                stderr.contains("h2chat: ") && stderr.contains(&addr),
                "the message must name {addr}: {stderr}"
            );
        },
    )
    .await;
}

#[tokio::test]
async fn a_token_whose_secret_file_is_missing_exits_1() {
    within(
        TEST_PATIENCE,
        "the whole of test a_token_whose_secret_file_is_missing_exits_1",
        async {
            let missing = crate::support::TempFile::path_for("no-secret");
            let path = missing.0.to_string_lossy().into_owned();
            let (code, stderr) =
                run_h2chat(&["token", "--secret-file", &path, "--sub", "alice"], &[]).await;
            assert_eq!(code, Some(1), "{stderr}");
            assert!(
                stderr.starts_with("h2chat: ") && stderr.contains(&path),
                "{stderr}"
            );
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_whose_standard_output_fails_exits_1() {
    within(
        TEST_PATIENCE,
        "the whole of test a_chat_whose_standard_output_fails_exits_1",
        async {
            let server = ServerProcess::start(&[]).await;
            // /dev/full: every write fails with ENOSPC, the first one being the client's own join
            // event. Standard input stays open: the client must not be ending for lack of input.
            let full = std::fs::OpenOptions::new()
                .write(true)
                .open("/dev/full")
                .expect("open /dev/full");
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_h2chat"));
            let addr = server.addr.to_string();
            cmd.args(["chat", "--addr", &addr, "--room", "r", "--name", "ann"])
                .env_remove("RUST_LOG")
                .stdin(Stdio::piped())
                .stdout(Stdio::from(full))
                .stderr(Stdio::piped());
            let mut child = dies_with_the_test(&mut cmd)
                .spawn()
                .expect("start h2chat chat");
            // Held open until the client has exited (`wait_with_output` would close it).
            let _stdin = child.stdin.take();
            let out = within(
                PATIENCE,
                "the chat client to exit after its output failed",
                child.wait_with_output(),
            )
            .await
            .expect("wait for the chat client");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{stderr}");
            assert!(
                stderr.contains("h2chat: writing standard output"),
                "{stderr}"
            );
        },
    )
    .await;
}
