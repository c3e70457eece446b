//! How a call lives and ends, seen from a probe service's handlers: deadlines (`grpc-timeout`
//! and the server's cap), cancellation, metadata in both directions, response compression.

use crate::support::{within, TestServer, PATIENCE, TEST_PATIENCE};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::wire::{message, Code, WireClient};
use h2chat::grpc::compression::Encoding;
use h2chat::grpc::{BoxFuture, Call, CallResult, Server, ServerConfig, Service, Status};
use h2chat::pb::grpc::testing::Empty;
use tokio::sync::mpsc;

/// Test methods, each a handler that shows one thing.
struct Probe {
    /// Told the name of a handler when its future is dropped (the handler was stopped).
    stopped: mpsc::UnboundedSender<&'static str>,
}

/// Sends its name when dropped, i.e. when the handler holding it is stopped.
struct StopGuard(mpsc::UnboundedSender<&'static str>, &'static str);

impl Drop for StopGuard {
    fn drop(&mut self) {
        let _ = self.0.send(self.1);
    }
}

impl Service for Probe {
    fn name(&self) -> &'static str {
        "test.Probe"
    }

    fn call<'a>(&'a self, method: &'a str, call: &'a Call) -> Option<BoxFuture<'a, CallResult>> {
        Some(match method {
            "Hang" => Box::pin(self.hang(call)),
            "Deadline" => Box::pin(deadline(call)),
            "Metadata" => Box::pin(metadata(call)),
            "Gzip" => Box::pin(gzip(call, false)),
            "LateGzip" => Box::pin(gzip(call, true)),
            _ => return None,
        })
    }
}

impl Probe {
    /// Sends headers, then waits forever; only the server can end it.
    async fn hang(&self, call: &Call) -> CallResult {
        let _guard = StopGuard(self.stopped.clone(), "Hang");
        call.send_headers()?;
        std::future::pending::<()>().await;
        Ok(())
    }
}

/// Reports the time left until the call's deadline, in whole seconds, in trailer `x-left-s`.
async fn deadline(call: &Call) -> CallResult {
    let left = call
        .info()
        .deadline
        .map(|d| d.saturating_duration_since(Instant::now()).as_secs());
    let text = left.map_or("none".to_owned(), |s| s.to_string());
    call.with_trailers(|t| t.insert("x-left-s", &text))?;
    Ok(())
}

/// Echoes `x-ascii` in the headers (with a binary `x-initial-bin` of its own), `x-pad-bin`,
/// `x-nopad-bin` and every value of `x-joined-bin` in the trailers (binary ones re-encoded), says
/// in `x-bad-bin-reads` how a malformed `x-bad-bin` read and in `x-reserved-seen` whether any
/// reserved header reached it, and checks that it cannot set reserved headers itself.
async fn metadata(call: &Call) -> CallResult {
    let md = call.metadata();
    let ascii = md.get("x-ascii").unwrap_or("").to_owned();
    let pad = md.get_bin("x-pad-bin").unwrap_or_default();
    let nopad = md.get_bin("x-nopad-bin").unwrap_or_default();
    let joined = md.get_all_bin("x-joined-bin").unwrap_or_default();
    let bad = if md.get_bin("x-bad-bin").is_some() {
        "decoded"
    } else {
        "absent"
    };
    let reserved_seen = md.iter().any(|(name, _)| {
        let n = name.as_str();
        n.starts_with("grpc-") || n == "te" || n == "content-type" || n == "user-agent"
    });
    for name in [
        "grpc-status",
        "grpc-message",
        "content-type",
        "te",
        ":status",
    ] {
        if call.with_headers(|h| h.insert(name, "x")).is_ok()
            || call.with_trailers(|t| t.insert(name, "x")).is_ok()
        {
            return Err(Status::internal(format!("handler could set {name}")));
        }
    }
    call.with_headers(|h| {
        h.insert("x-ascii", &ascii)?;
        h.insert_bin("x-initial-bin", &[0xff, 0x00, 0x7f])
    })?;
    call.with_trailers(|t| {
        t.insert_bin("x-pad-bin", &pad)?;
        t.insert_bin("x-nopad-bin", &nopad)?;
        for value in &joined {
            t.insert_bin("x-joined-bin", value)?;
        }
        t.insert("x-bad-bin-reads", bad)?;
        t.insert("x-reserved-seen", if reserved_seen { "yes" } else { "no" })
    })?;
    call.send(&Empty {}).await
}

/// Asks for gzip responses (after the headers went, when `late`) and sends one message.
async fn gzip(call: &Call, late: bool) -> CallResult {
    if late {
        call.send_headers()?;
    }
    call.compress_responses(Encoding::Gzip);
    call.send(&Empty {}).await
}

struct ProbeServer {
    server: TestServer,
    addr: SocketAddr,
    stopped: mpsc::UnboundedReceiver<&'static str>,
}

impl ProbeServer {
    async fn start(config: ServerConfig) -> ProbeServer {
        let (tx, stopped) = mpsc::unbounded_channel();
        let mut server = Server::new(config);
        server.add_service(Arc::new(Probe { stopped: tx }));
        let server = TestServer::serve(server).await;
        ProbeServer {
            addr: server.addr,
            server,
            stopped,
        }
    }

    /// Waits (at most [`PATIENCE`]) until a handler has been stopped and returns its name.
    async fn handler_stopped(&mut self) -> &'static str {
        within(PATIENCE, "a handler to be stopped", self.stopped.recv())
            .await
            .expect("server alive")
    }

    async fn shutdown(self) {
        self.server.shutdown().await;
    }
}

#[tokio::test]
async fn expired_deadline_ends_the_call_and_stops_the_handler() {
    within(
        TEST_PATIENCE,
        "the whole of test expired_deadline_ends_the_call_and_stops_the_handler",
        async {
            let mut server = ProbeServer::start(ServerConfig::default()).await;
            let mut client = WireClient::connect(server.addr).await;
            for timeout in ["20m", "1n", "5000u"] {
                let mut call = client
                    .start("/test.Probe/Hang", &[("grpc-timeout", timeout)])
                    .await;
                call.send(message(&Empty {}), false);
                let (status, _) = call.finish().await;
                assert_eq!(status.code(), Code::DeadlineExceeded, "{timeout}: {status}");
                // The client never half-closed: the server also resets the stream (NO_ERROR),
                // so the client stops sending.
                assert_eq!(call.server_reset().await, h2::Reason::NO_ERROR, "{timeout}");
                assert_eq!(server.handler_stopped().await, "Hang", "{timeout}");
            }
            server.shutdown().await;
        },
    )
    .await;
}

#[tokio::test]
async fn max_call_duration_caps_calls_without_a_deadline() {
    within(
        TEST_PATIENCE,
        "the whole of test max_call_duration_caps_calls_without_a_deadline",
        async {
            let config = ServerConfig {
                max_call_duration: Some(Duration::from_millis(20)),
                ..ServerConfig::default()
            };
            let mut server = ProbeServer::start(config).await;
            let mut client = WireClient::connect(server.addr).await;
            let mut call = client.start("/test.Probe/Hang", &[]).await;
            call.send(message(&Empty {}), true);
            let (status, _) = call.finish().await;
            assert_eq!(status.code(), Code::DeadlineExceeded, "{status}");
            assert_eq!(server.handler_stopped().await, "Hang");
            server.shutdown().await;
        },
    )
    .await;
}

/// Every unit of `grpc-timeout` becomes the handler's deadline; the server's cap wins when it
/// is sooner.
#[tokio::test]
async fn grpc_timeout_units_reach_the_handler_as_its_deadline() {
    within(
        TEST_PATIENCE,
        "the whole of test grpc_timeout_units_reach_the_handler_as_its_deadline",
        async {
            let capped = ServerConfig {
                max_call_duration: Some(Duration::from_secs(3600)),
                ..ServerConfig::default()
            };
            for (config, timeout, want_s) in [
                (ServerConfig::default(), Some("2H"), Some(7200)),
                (ServerConfig::default(), Some("3M"), Some(180)),
                (ServerConfig::default(), Some("90S"), Some(90)),
                (ServerConfig::default(), Some("45000m"), Some(45)),
                (ServerConfig::default(), Some("30000000u"), Some(30)),
                (ServerConfig::default(), Some("99999999n"), Some(0)),
                (ServerConfig::default(), None, None),
                (capped.clone(), Some("2H"), Some(3600)),
                (capped.clone(), None, Some(3600)),
                (capped, Some("10S"), Some(10)),
            ] {
                let server = ProbeServer::start(config).await;
                let mut client = WireClient::connect(server.addr).await;
                let headers: Vec<(&str, &str)> = timeout
                    .map(|t| vec![("grpc-timeout", t)])
                    .unwrap_or_default();
                let mut call = client.start("/test.Probe/Deadline", &headers).await;
                call.send(message(&Empty {}), true);
                let (status, trailers) = call.finish().await;
                assert_eq!(status.code(), Code::Ok, "{timeout:?}: {status}");
                let left = trailers
                    .get("x-left-s")
                    .and_then(|v| v.to_str().ok())
                    .expect("x-left-s");
                match want_s {
                    None => assert_eq!(left, "none", "{timeout:?}"),
                    // Whole seconds left, read a moment after the call began: at most the full amount,
                    // and far more than the next smaller unit would give.
                    Some(want) => {
                        let left: u64 = left.parse().expect("seconds");
                        assert!(
                            left <= want && left + want / 10 + 2 >= want,
                            "{timeout:?}: {left}s left, want {want}"
                        );
                    }
                }
                server.shutdown().await;
            }
        },
    )
    .await;
}

#[tokio::test]
async fn malformed_grpc_timeout_is_refused_with_a_clear_status() {
    within(
        TEST_PATIENCE,
        "the whole of test malformed_grpc_timeout_is_refused_with_a_clear_status",
        async {
            let server = ProbeServer::start(ServerConfig::default()).await;
            let mut client = WireClient::connect(server.addr).await;
            for bad in ["1x", "123456789S", "S", "-1S", "1.5S"] {
                let mut call = client
                    .start("/test.Probe/Deadline", &[("grpc-timeout", bad)])
                    .await;
                call.send(message(&Empty {}), true);
                let (status, _) = call.finish().await;
                assert_eq!(status.code(), Code::Internal, "{bad}: {status}");
                assert!(status.message().contains("grpc-timeout"), "{bad}: {status}");
            }
            server.shutdown().await;
        },
    )
    .await;
}

#[tokio::test]
async fn client_cancel_stops_the_handler() {
    within(
        TEST_PATIENCE,
        "the whole of test client_cancel_stops_the_handler",
        async {
            let mut server = ProbeServer::start(ServerConfig::default()).await;
            let mut client = WireClient::connect(server.addr).await;
            let mut call = client.start("/test.Probe/Hang", &[]).await;
            call.send(message(&Empty {}), false);
            // The headers prove the handler is running.
            call.headers().await;
            call.cancel();
            assert_eq!(server.handler_stopped().await, "Hang");
            server.shutdown().await;
        },
    )
    .await;
}

#[tokio::test]
async fn metadata_reaches_handlers_without_reserved_headers_and_comes_back() {
    within(
        TEST_PATIENCE,
        "the whole of test metadata_reaches_handlers_without_reserved_headers_and_comes_back",
        async {
            let server = ProbeServer::start(ServerConfig::default()).await;
            let mut client = WireClient::connect(server.addr).await;
            let mut call = client
                .start(
                    "/test.Probe/Metadata",
                    &[
                        ("x-ascii", "hello world"),
                        ("x-pad-bin", "AQI="),
                        ("x-nopad-bin", "AQI"),
                        // Two values joined by a comma, as a proxy may join repeated headers.
                        ("x-joined-bin", "AQI=,AwQ"),
                        ("x-bad-bin", "not*base64"),
                        ("grpc-custom", "reserved"),
                        ("user-agent", "wire-test"),
                    ],
                )
                .await;
            call.send(message(&Empty {}), true);
            let headers = call.headers().await.clone();
            assert_eq!(
                headers.get("x-ascii").map(|v| v.as_bytes()),
                Some(&b"hello world"[..])
            );
            assert_eq!(headers.get_all("content-type").iter().count(), 1);
            assert_eq!(headers["content-type"], "application/grpc");
            let (status, trailers) = call.finish().await;
            assert_eq!(status.code(), Code::Ok, "{status}");
            assert_eq!(trailers.get_all("grpc-status").iter().count(), 1);
            assert_eq!(trailers["x-pad-bin"], "AQI", "sent unpadded");
            assert_eq!(trailers["x-nopad-bin"], "AQI");
            assert_eq!(trailers["x-reserved-seen"], "no");
            let joined: Vec<_> = trailers.get_all("x-joined-bin").iter().collect();
            assert_eq!(
                joined,
                ["AQI", "AwQ"],
                "split, then each re-encoded unpadded"
            );
            assert_eq!(trailers["x-bad-bin-reads"], "absent");
            // Base64 of ff 00 7f, unpadded.
            assert_eq!(headers["x-initial-bin"], "/wB/");
            server.shutdown().await;
        },
    )
    .await;
}

/// A handler's choice of compression yields to what the client accepts, and to the headers
/// having gone without `grpc-encoding`.
#[tokio::test]
async fn response_compression_needs_the_client_to_accept_it_and_unsent_headers() {
    within(
        TEST_PATIENCE,
        "the whole of test response_compression_needs_the_client_to_accept_it_and_unsent_headers",
        async {
            let server = ProbeServer::start(ServerConfig::default()).await;
            let mut client = WireClient::connect(server.addr).await;
            for (method, accept, want_compressed) in [
                ("Gzip", "identity,gzip", true),
                ("Gzip", "deflate", false),
                ("Gzip", "identity", false),
                ("LateGzip", "gzip", false),
            ] {
                let mut call = client
                    .start(
                        &format!("/test.Probe/{method}"),
                        &[("grpc-accept-encoding", accept)],
                    )
                    .await;
                call.send(message(&Empty {}), true);
                let encoding = call.headers().await.get("grpc-encoding").cloned();
                let frame = call.next_frame().await.expect("a response");
                assert_eq!(frame.compressed, want_compressed, "{method} {accept}");
                assert_eq!(encoding.is_some(), want_compressed, "{method} {accept}");
                assert_eq!(call.finish().await.0.code(), Code::Ok);
            }
            server.shutdown().await;
        },
    )
    .await;
}
