//! Connections a client can make the server keep: idle ones are closed, old ones retired, one
//! address can be capped, and the connection cap fits the file limit.
//!
//! The attack (issue 12): 2,000 handshaken connections that stay idle were kept forever, so
//! `--max-connections` idle sockets locked everyone out; the default cap (25,000) was above the
//! process's 20,000 file limit.

use std::process::Command;
use std::time::{Duration, Instant};

use h2chat::pb::grpc::health::v1::HealthCheckRequest;
use tokio::net::TcpStream;

use crate::harness::{message, well_behaved_check, within, Server};

/// An h2 connection whose driver reports when the server ends it.
async fn connect(
    server: &Server,
) -> (
    h2::client::SendRequest<bytes::Bytes>,
    tokio::task::JoinHandle<()>,
) {
    let tcp = TcpStream::connect(server.addr).await.expect("connect");
    let (send, conn) = h2::client::handshake(tcp).await.expect("handshake");
    let ended = tokio::spawn(async move {
        let _ = conn.await;
    });
    (send, ended)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_is_closed_after_max_connection_idle() {
    let server = Server::start(&["--max-connection-idle", "1"]);
    let started = Instant::now();
    let (_send, ended) = connect(&server).await;
    within(
        Duration::from_secs(20),
        "the idle connection to be closed",
        ended,
    )
    .await
    .expect("driver");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "not before it was idle"
    );
    well_behaved_check(server.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_connection_gets_goaway_then_is_closed_after_the_grace() {
    let server = Server::start(&[
        "--max-connection-age",
        "1",
        "--max-connection-age-grace",
        "1",
    ]);
    let started = Instant::now();
    let (send, ended) = connect(&server).await;
    // A call that never ends by itself: Health/Watch.
    let mut send = send.ready().await.expect("ready");
    let request = http::Request::post("http://localhost/grpc.health.v1.Health/Watch")
        .header("content-type", "application/grpc")
        .body(())
        .expect("request");
    let (response, mut body) = send.send_request(request, false).expect("send");
    body.send_data(message(&HealthCheckRequest::default()), true)
        .expect("body");
    let _watch = within(Duration::from_secs(20), "the Watch's headers", response)
        .await
        .expect("watch answered");
    within(
        Duration::from_secs(20),
        "the old connection to be closed",
        ended,
    )
    .await
    .expect("driver");
    let took = started.elapsed();
    // Age 0.9..1.1 s, then 1 s of grace.
    assert!(took >= Duration::from_millis(1800), "closed after {took:?}");
    well_behaved_check(server.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_over_max_connections_per_ip_is_refused_and_others_go_on() {
    let server = Server::start(&["--max-connections-per-ip", "2"]);
    let (a, _ea) = connect(&server).await;
    let (_b, _eb) = connect(&server).await;
    // The server closes the third from the same address at once.
    let (_c, ended) = connect(&server).await;
    within(
        Duration::from_secs(20),
        "the third connection to be closed",
        ended,
    )
    .await
    .expect("driver");
    // The first two go on.
    let mut send = a.ready().await.expect("ready");
    let request = http::Request::post("http://localhost/grpc.health.v1.Health/Check")
        .header("content-type", "application/grpc")
        .body(())
        .expect("request");
    let (response, mut body) = send.send_request(request, false).expect("send");
    body.send_data(message(&HealthCheckRequest::default()), true)
        .expect("body");
    let response = within(Duration::from_secs(20), "a check on the first", response)
        .await
        .expect("answered");
    assert_eq!(response.status(), 200);
}

#[test]
fn max_connections_above_the_file_limit_is_refused_at_startup() {
    let out = Command::new("prlimit")
        .args(["--nofile=256", "--"])
        .arg(env!("CARGO_BIN_EXE_h2chat"))
        .args([
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--max-connections",
            "1000",
        ])
        .output()
        .expect("run h2chat");
    assert!(!out.status.success(), "the server must not start");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("open-file limit"), "{stderr}");
    // The default under the same limit starts.
    let mut child = Command::new("prlimit")
        .args(["--nofile=256", "--"])
        .arg(env!("CARGO_BIN_EXE_h2chat"))
        .args(["serve", "--addr", "127.0.0.1:0"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run h2chat");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        matches!(child.try_wait(), Ok(None)),
        "the default cap fits the limit"
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn the_listen_backlog_is_what_the_flag_says() {
    let server = Server::start(&["--listen-backlog", "7"]);
    // For a listening socket, `ss` shows the accept queue's length as Recv-Q and its limit (the
    // backlog given to listen(2)) as Send-Q.
    let out = Command::new("ss")
        .args(["-Hltn", &format!("sport = :{}", server.addr.port())])
        .output()
        .expect("run ss (iproute2)");
    let text = String::from_utf8_lossy(&out.stdout);
    let send_q = text.split_whitespace().nth(2);
    assert_eq!(send_q, Some("7"), "ss -ltn: {text}");
}
