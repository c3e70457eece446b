//! What an operator reads at `info`: one line per join and leave (room, name, reason, peer), per
//! refused call (status, why), per shutdown phase, per limit hit — rate-limited, names escaped;
//! `--log-format json`; a `RUST_LOG` that does not parse stops the server at startup.

use h2chat::grpc::client::{CallOptions, Channel};
use h2chat::grpc::Code;

use crate::flags::run_h2chat;
use crate::server::LoggedServer;
use crate::support::chat;

/// Calls a method nobody serves and checks it is UNIMPLEMENTED.
pub async fn call_unknown_method(ch: &Channel) {
    let mut call = ch
        .start("/no.Such/Method", CallOptions::default())
        .await
        .expect("start a call");
    assert_eq!(
        chat::final_status(&mut call).await.code(),
        Code::Unimplemented
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_leaves_and_refusals_are_one_line_each_with_names_escaped() {
    let mut server = LoggedServer::start(&[], &[]).await;
    let ch = Channel::connect(server.addr).await.expect("connect");
    // A name with a quote and a non-ASCII letter: written escaped, in quotes.
    let name = "bob \"the\" bü";
    let member = chat::join(&ch, "ops room", name).await;
    let joined = server.expect_log(|l| l.contains(" joined ")).await;
    assert!(joined.contains(r#"room="ops room""#), "{joined}");
    assert!(joined.contains(r#"name="bob \"the\" bü""#), "{joined}");
    assert!(joined.contains("peer=127.0.0.1:"), "{joined}");

    let mut twin = chat::start(&ch, &chat::msg("ops room", name, "")).await;
    assert_eq!(
        chat::final_status(&mut twin).await.code(),
        Code::AlreadyExists
    );
    let failed = server.expect_log(|l| l.contains("call failed")).await;
    assert!(
        failed.contains("code=AlreadyExists") && failed.contains("why="),
        "{failed}"
    );

    call_unknown_method(&ch).await;
    let refused = server.expect_log(|l| l.contains("call refused")).await;
    assert!(
        refused.contains(r#"path="/no.Such/Method""#) && refused.contains("code=Unimplemented"),
        "{refused}"
    );

    drop(member);
    let left = server.expect_log(|l| l.contains(" left ")).await;
    assert!(
        left.contains(r#"name="bob \"the\" bü""#) && left.contains("reason="),
        "{left}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_logs_each_phase() {
    let server = LoggedServer::start(&[], &[]).await;
    let ch = Channel::connect(server.addr).await.expect("connect");
    let _member = chat::join(&ch, "r", "stays").await;
    let (status, log) = server.terminate().await;
    assert!(status.success(), "{status}");
    let phases = [
        "shutting down: no new connections",
        "left room=\"r\" name=\"stays\" reason=\"server_shutting_down\"",
        "shutting down: every connection closed",
        "shut down",
    ];
    let mut at = 0;
    for phase in phases {
        at += log[at..]
            .iter()
            .position(|l| l.contains(phase))
            .unwrap_or_else(|| panic!("no {phase:?} after line {at}:\n{log:#?}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_refused_calls_is_rate_limited_in_the_log() {
    const CALLS: usize = 100;
    let server = LoggedServer::start(&[], &[]).await;
    let ch = Channel::connect(server.addr).await.expect("connect");
    let started = std::time::Instant::now();
    for _ in 0..CALLS {
        call_unknown_method(&ch).await;
    }
    let seconds = started.elapsed().as_secs() as usize + 1;
    let (_, log) = server.terminate().await;
    let lines = log.iter().filter(|l| l.contains("call refused")).count();
    // Ten a second at most (a second may start in the middle of the flood).
    assert!(
        lines >= 1 && lines <= 10 * (seconds + 1) && lines < CALLS,
        "{lines} lines for {CALLS} refused calls in about {seconds} s"
    );
}

#[tokio::test]
async fn an_invalid_rust_log_is_a_startup_error() {
    for bad in ["bogus===", "h2chat=debg"] {
        let (code, stderr) =
            run_h2chat(&["serve", "--addr", "127.0.0.1:0"], &[("RUST_LOG", bad)]).await;
        assert_ne!(code, Some(0), "RUST_LOG={bad} accepted");
        assert!(code.is_some(), "RUST_LOG={bad}: killed, did not exit");
        assert!(
            stderr.contains("invalid RUST_LOG") && stderr.contains(bad),
            "{stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_a_line() {
    let mut server = LoggedServer::start(&["--log-format", "json"], &[]).await;
    let ch = Channel::connect(server.addr).await.expect("connect");
    let _member = chat::join(&ch, "j", "ann").await;
    let joined = server.expect_log(|l| l.contains("joined")).await;
    let value: serde_json::Value = serde_json::from_str(&joined).expect("a JSON line");
    assert_eq!(value["level"], "INFO", "{joined}");
    assert_eq!(value["fields"]["message"], "joined", "{joined}");
    // Fields recorded with `?` keep their quotes inside the JSON string.
    assert_eq!(value["fields"]["name"], "\"ann\"", "{joined}");
    for line in &server.log {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    }
}
