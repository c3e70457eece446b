//! Every flag of `serve` and `chat` can come from the environment as `H2CHAT_<FLAG>`, is shown so
//! in `--help`, and is checked as the flag is.

use std::process::Stdio;

use h2chat::grpc::client::Channel;
use h2chat::grpc::Code;

use crate::flags::run_h2chat;
use crate::server::LoggedServer;
use crate::support::chat;
use crate::support::PATIENCE;

/// `h2chat SUBCOMMAND --help`.
async fn help(subcommand: &str) -> String {
    let out = tokio::time::timeout(
        PATIENCE,
        tokio::process::Command::new(env!("CARGO_BIN_EXE_h2chat"))
            .args([subcommand, "--help"])
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .expect("--help within PATIENCE")
    .expect("run h2chat --help");
    assert!(out.status.success(), "{subcommand} --help failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The long flags `h2chat SUBCOMMAND --help` lists, `help` and `version` left out.
fn flags_in_help(text: &str) -> Vec<&str> {
    text.lines()
        .filter_map(|l| l.trim_start().strip_prefix("--"))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|f| !matches!(*f, "help" | "version"))
        .collect()
}

#[tokio::test]
async fn help_names_the_variable_of_every_flag() {
    for subcommand in ["serve", "chat", "stdio"] {
        let text = help(subcommand).await;
        // Each option starts a line `--name <VALUE>`; its help ends in `[env: H2CHAT_NAME=]`.
        let flags = flags_in_help(&text);
        assert!(
            flags.len() >= 4,
            "{subcommand} --help lists no flags:\n{text}"
        );
        for flag in flags {
            let var = format!("[env: H2CHAT_{}=", flag.to_uppercase().replace('-', "_"));
            assert!(
                text.contains(&var),
                "{subcommand} --{flag} has no {var}]:\n{text}"
            );
        }
    }
}

#[tokio::test]
async fn the_readme_flags_table_names_every_serve_flag() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("read README.md");
    let table = readme
        .split("## Flags and limits")
        .nth(1)
        .and_then(|rest| rest.split("\n\n").nth(2))
        .expect("the README's flags table");
    for flag in flags_in_help(&help("serve").await) {
        assert!(
            table.contains(&format!("`--{flag}`")),
            "the README's flags table misses --{flag}:\n{table}"
        );
    }
}

#[tokio::test]
async fn a_value_from_the_environment_is_checked_like_the_flag() {
    let (code, stderr) = run_h2chat(
        &["serve", "--addr", "127.0.0.1:0"],
        &[("H2CHAT_MAX_ROOMS", "0")],
    )
    .await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("'--max-rooms <MAX_ROOMS>'") && stderr.contains("at least 1"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_takes_its_configuration_from_the_environment() {
    // No flag at all: the address and a limit come from the environment.
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_h2chat"));
    cmd.arg("serve")
        .env("H2CHAT_ADDR", "127.0.0.1:0")
        .env("H2CHAT_MAX_ROOMS", "1")
        .env("RUST_LOG", "info");
    let server = LoggedServer::spawn(cmd).await;
    let addr = server.addr;

    let ch = Channel::connect(addr).await.expect("connect");
    let _first = chat::join(&ch, "one", "alice").await;
    let mut second = chat::start(&ch, &chat::msg("two", "bob", "")).await;
    let status = chat::final_status(&mut second).await;
    assert_eq!(
        status.code(),
        Code::ResourceExhausted,
        "a second room past H2CHAT_MAX_ROOMS=1: {status}"
    );
}

/// The `Environment=` lines of the README's systemd example.
fn readme_unit_environment() -> Vec<(String, String)> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("read README.md");
    let block = readme
        .split("```ini\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("README has the systemd example in an ```ini block");
    block
        .lines()
        .filter_map(|l| l.strip_prefix("Environment="))
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_systemd_example_starts_the_server() {
    let vars = readme_unit_environment();
    assert!(
        vars.iter().any(|(k, _)| k == "H2CHAT_ADDR") && vars.len() >= 3,
        "the README's unit sets too little: {vars:?}"
    );
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_h2chat"));
    cmd.arg("serve");
    for (name, value) in &vars {
        cmd.env(name, value);
    }
    // Its address, but on a free port: the test must not take the README's fixed one.
    cmd.env("H2CHAT_ADDR", "127.0.0.1:0");
    let server = LoggedServer::spawn(cmd).await;
    let ch = Channel::connect(server.addr).await.expect("connect");
    let _member = chat::join(&ch, "unit", "alice").await;
}
