//! The gRPC client against the real server over real sockets, with a test-only echo service.
//! These tests also specify the server-side gRPC layer: every exchange crosses both.
//!
//! A few tests talk to a bare h2 server instead, to make it answer what the real server never
//! would (a non-200 status, no `grpc-status`, no answer at all).

use crate::support::{within, TEST_PATIENCE};
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{Reason, RecvStream};
use h2chat::grpc::client::{CallOptions, Channel, ChannelConfig, ClientError};
use h2chat::grpc::compression::Encoding;
use h2chat::grpc::metadata::Metadata;
use h2chat::grpc::{
    BoxFuture, Call, CallResult, CloseCause, Code, Server, ServerConfig, Service, Status,
};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use prost_types::{Any, Duration as PbDuration};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use crate::support::{RefusingAddr, TestServer, PATIENCE};

const SERVICE: &str = "test.Echo";

/// What the echo service tells the test about calls it runs.
#[derive(Debug)]
enum Event {
    /// A `Hang` call is running.
    Started,
    /// A `Hang` call saw its client go away.
    Gone(CloseCause),
    /// A `Burst` call has handed all its messages to h2.
    Sent,
    /// A `Count` call waits for the test's go before reading.
    Waiting(oneshot::Sender<()>),
}

impl PartialEq for Event {
    fn eq(&self, other: &Event) -> bool {
        match (self, other) {
            (Event::Started, Event::Started) | (Event::Sent, Event::Sent) => true,
            (Event::Gone(a), Event::Gone(b)) => a == b,
            _ => false,
        }
    }
}

/// Methods:
/// - `Unary(Any) -> Any`: echoes; a `type_url` of `status/N` fails with code N and the value as
///   message; metadata `x-compress` asks for gzip responses.
/// - `ServerStream(Duration{seconds: n, nanos: code}) -> stream Duration`: n messages numbered
///   0..n, then status `code` (0 = OK).
/// - `Bidi(stream Any) -> stream Any`: answers each message before reading the next.
/// - `Hang(..)`: reports `Started`, waits for the client to go away, reports `Gone`.
/// - `Burst(Duration{seconds: n}) -> stream Duration`: n messages, then reports `Sent`.
/// - `Count(stream Any) -> Duration`: waits for the test's go, then counts the messages.
///
/// Every method echoes `x-echo-initial` in its headers and `x-echo-trailing-bin` in its trailers.
struct Echo {
    events: mpsc::UnboundedSender<Event>,
}

impl Service for Echo {
    fn name(&self) -> &'static str {
        SERVICE
    }

    fn call<'a>(&'a self, method: &'a str, call: &'a Call) -> Option<BoxFuture<'a, CallResult>> {
        echo_metadata(call);
        Some(match method {
            "Unary" => Box::pin(unary(call)),
            "ServerStream" => Box::pin(server_stream(call)),
            "Bidi" => Box::pin(bidi(call)),
            "Hang" => Box::pin(self.hang(call)),
            "Burst" => Box::pin(self.burst(call)),
            "Count" => Box::pin(self.count(call)),
            _ => return None,
        })
    }
}

fn echo_metadata(call: &Call) {
    let encoding = call.info().request_encoding.name();
    call.with_headers(|h| {
        h.copy_from(call.metadata(), "x-echo-initial");
        let _ = h.insert("x-request-encoding", encoding);
    });
    call.with_trailers(|t| t.copy_from(call.metadata(), "x-echo-trailing-bin"));
}

async fn unary(call: &Call) -> CallResult {
    let req: Any = call.recv_one().await?;
    if let Some(code) = req.type_url.strip_prefix("status/") {
        let code = Code::from_i32(code.parse().unwrap_or(2));
        return Err(Status::new(code, String::from_utf8_lossy(&req.value)));
    }
    if call.metadata().get("x-compress").is_some() {
        call.compress_responses(Encoding::Gzip);
    }
    call.send(&req).await
}

async fn server_stream(call: &Call) -> CallResult {
    let req: PbDuration = call.recv_one().await?;
    for i in 0..req.seconds {
        call.send(&PbDuration {
            seconds: i,
            nanos: 0,
        })
        .await?;
    }
    call.with_trailers(|t| t.insert("x-sent", &req.seconds.to_string()))?;
    match Code::from_i32(req.nanos) {
        Code::Ok => Ok(()),
        code => Err(Status::new(code, "failed after the stream")),
    }
}

async fn bidi(call: &Call) -> CallResult {
    while let Some(msg) = call.recv::<Any>().await? {
        call.send(&msg).await?;
    }
    Ok(())
}

impl Echo {
    async fn burst(&self, call: &Call) -> CallResult {
        let req: PbDuration = call.recv_one().await?;
        for i in 0..req.seconds {
            call.send(&PbDuration {
                seconds: i,
                nanos: 0,
            })
            .await?;
        }
        let _ = self.events.send(Event::Sent);
        Ok(())
    }

    async fn count(&self, call: &Call) -> CallResult {
        let (go_tx, go) = oneshot::channel();
        let _ = self.events.send(Event::Waiting(go_tx));
        let _ = go.await;
        let mut seconds = 0;
        while call.recv::<Any>().await?.is_some() {
            seconds += 1;
        }
        call.send(&PbDuration { seconds, nanos: 0 }).await
    }

    async fn hang(&self, call: &Call) -> CallResult {
        let _ = self.events.send(Event::Started);
        let cause = call.cancelled().await;
        let _ = self.events.send(Event::Gone(cause));
        Ok(())
    }
}

/// The real server with the echo service, on 127.0.0.1:0; it shuts down when dropped.
struct EchoServer {
    server: TestServer,
    addr: SocketAddr,
    events: mpsc::UnboundedReceiver<Event>,
}

impl EchoServer {
    async fn start() -> EchoServer {
        EchoServer::start_with(ServerConfig::default()).await
    }

    async fn start_with(config: ServerConfig) -> EchoServer {
        let (events_tx, events) = mpsc::unbounded_channel();
        let mut server = Server::new(config);
        server.add_service(Arc::new(Echo { events: events_tx }));
        let server = TestServer::serve(server).await;
        EchoServer {
            addr: server.addr,
            server,
            events,
        }
    }

    async fn channel(&self) -> Channel {
        Channel::connect(self.addr).await.expect("connect")
    }

    /// The next thing the echo service reports (at most [`PATIENCE`]).
    async fn next_event(&mut self) -> Option<Event> {
        within(
            PATIENCE,
            "an event from the echo service",
            self.events.recv(),
        )
        .await
    }

    /// Begins graceful shutdown.
    fn begin_shutdown(&mut self) {
        self.server.begin_shutdown();
    }

    /// Shuts down and asserts the server ended well.
    async fn shutdown(self) {
        self.server.shutdown().await;
    }
}

fn path(method: &str) -> String {
    format!("/{SERVICE}/{method}")
}

fn any(type_url: &str, value: impl Into<Vec<u8>>) -> Any {
    Any {
        type_url: type_url.to_string(),
        value: value.into(),
    }
}

/// Bytes that do not compress to nothing, so a large message really is large on the wire.
fn noise(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

#[tokio::test]
async fn unary_round_trip() {
    within(TEST_PATIENCE, "the whole of test unary_round_trip", async {
        let server = EchoServer::start().await;
        let ch = server.channel().await;
        let req = any("type.example/hello", "hello");
        let resp: Any = ch
            .unary(&path("Unary"), &req, CallOptions::default())
            .await
            .expect("unary");
        assert_eq!(resp, req);
        // A clone shares the connection and works as well.
        let resp: Any = ch
            .clone()
            .unary(&path("Unary"), &req, CallOptions::default())
            .await
            .expect("unary on a clone");
        assert_eq!(resp, req);
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn large_messages_cross_flow_control_windows_both_ways() {
    within(
        TEST_PATIENCE,
        "the whole of test large_messages_cross_flow_control_windows_both_ways",
        async {
            let server = EchoServer::start().await;
            // The client's windows at their HTTP/2 minimum: a 300 KB response needs several updates.
            let config = ChannelConfig {
                stream_window_bytes: 65_535,
                connection_window_bytes: 65_535,
                ..ChannelConfig::default()
            };
            let small = Channel::connect_with(server.addr, config)
                .await
                .expect("connect");
            let req = any("big", noise(300_000));
            for ch in [server.channel().await, small] {
                let resp: Any = ch
                    .unary(&path("Unary"), &req, CallOptions::default())
                    .await
                    .expect("unary");
                assert_eq!(resp, req);
            }
            server.shutdown().await;
        },
    )
    .await;
}

#[tokio::test]
async fn streaming_megabytes_each_way_with_split_halves() {
    within(
        TEST_PATIENCE,
        "the whole of test streaming_megabytes_each_way_with_split_halves",
        async {
            let server = EchoServer::start().await;
            let ch = server.channel().await;
            let call = ch
                .start(&path("Bidi"), CallOptions::default())
                .await
                .expect("start");
            let (mut tx, mut rx) = call.split();
            // 8 × 300 KB is more than the server's 1 MiB stream window and the client's: neither side
            // can get ahead of the other by more than a window, so sending and receiving must overlap.
            let msgs: Vec<Any> = (0..8u8)
                .map(|i| any(&format!("m{i}"), noise(300_000 + usize::from(i))))
                .collect();
            let sent = msgs.clone();
            let sender = tokio::spawn(async move {
                for m in &sent {
                    tx.send(m).await?;
                }
                tx.close_send()
            });
            for want in &msgs {
                let got: Option<Any> = rx.recv().await.expect("recv");
                assert_eq!(got.as_ref(), Some(want));
            }
            assert_eq!(rx.recv::<Any>().await, Ok(None));
            assert_eq!(sender.await.ok(), Some(Ok(())));
            assert_eq!(rx.status().map(Status::code), Some(Code::Ok));
            server.shutdown().await;
        },
    )
    .await;
}

#[tokio::test]
async fn server_streaming_delivers_every_message_in_order() {
    within(
        TEST_PATIENCE,
        "the whole of test server_streaming_delivers_every_message_in_order",
        async {
            let server = EchoServer::start().await;
            let ch = server.channel().await;
            let mut call = ch
                .start(&path("ServerStream"), CallOptions::default())
                .await
                .expect("start");
            let n = 10_000;
            call.send_last(&PbDuration {
                seconds: n,
                nanos: 0,
            })
            .await
            .expect("send");
            for i in 0..n {
                let msg: Option<PbDuration> = call.recv().await.expect("recv");
                assert_eq!(msg.map(|m| m.seconds), Some(i));
            }
            assert_eq!(call.recv::<PbDuration>().await, Ok(None));
            // The end is sticky.
            assert_eq!(call.recv::<PbDuration>().await, Ok(None));
            let n = n.to_string();
            assert_eq!(
                call.trailers().and_then(|t| t.get("x-sent")),
                Some(n.as_str())
            );
            server.shutdown().await;
        },
    )
    .await;
}

#[tokio::test]
async fn a_client_reading_late_still_gets_every_small_message() {
    within(
        TEST_PATIENCE,
        "the whole of test a_client_reading_late_still_gets_every_small_message",
        async {
            // Each message is its own DATA frame of a few bytes, which h2 charges against a budget until
            // the application reads it. Here the client reads only once the server has sent them all.
            let mut server = EchoServer::start().await;
            let ch = server.channel().await;
            let mut call = ch
                .start(&path("Burst"), CallOptions::default())
                .await
                .expect("start");
            let n = 50_000;
            call.send_last(&PbDuration {
                seconds: n,
                nanos: 0,
            })
            .await
            .expect("send");
            assert_eq!(server.next_event().await, Some(Event::Sent));
            // A round trip on the same connection, so that the burst has most likely arrived.
            let _: Any = ch
                .unary(&path("Unary"), &any("x", "y"), CallOptions::default())
                .await
                .expect("unary");
            for i in 0..n {
                let msg: Option<PbDuration> = call.recv().await.expect("recv");
                assert_eq!(msg.map(|m| m.seconds), Some(i));
            }
            assert_eq!(call.recv::<PbDuration>().await, Ok(None));
            server.shutdown().await;
        },
    )
    .await;
}

/// h2 closes a connection (ENHANCE_YOUR_CALM) when too many small DATA frames wait unread in it;
/// the server moves them out of h2 while the handler is busy, without opening the window.
#[tokio::test]
async fn a_handler_reading_late_still_gets_every_small_message() {
    within(
        TEST_PATIENCE,
        "the whole of test a_handler_reading_late_still_gets_every_small_message",
        async {
            // A stream window with room for the whole burst (about 650 KB): the default 64 KiB
            // would hold the client back until the handler reads, as it should.
            let mut server = EchoServer::start_with(ServerConfig {
                initial_stream_window_bytes: 1 << 20,
                ..ServerConfig::default()
            })
            .await;
            let ch = server.channel().await;
            let mut call = ch
                .start(&path("Count"), CallOptions::default())
                .await
                .expect("start");
            let n = 50_000u32;
            for i in 0..n {
                call.send(&any("", i.to_be_bytes())).await.expect("send");
            }
            call.close_send().expect("close");
            // The handler reads only now.
            let Some(Event::Waiting(go)) = server.next_event().await else {
                panic!("Count did not start");
            };
            let _ = go.send(());
            let count: Option<PbDuration> = call.recv().await.expect("recv");
            assert_eq!(count.map(|c| c.seconds), Some(i64::from(n)));
            assert_eq!(call.recv::<PbDuration>().await, Ok(None));
            server.shutdown().await;
        },
    )
    .await;
}

#[tokio::test]
async fn bidi_ping_pong_answers_each_message_before_the_next() {
    within(
        TEST_PATIENCE,
        "the whole of test bidi_ping_pong_answers_each_message_before_the_next",
        async {
            let server = EchoServer::start().await;
            let ch = server.channel().await;
            let mut call = ch
                .start(&path("Bidi"), CallOptions::default())
                .await
                .expect("start");
            for i in 0..100 {
                let ping = any("ping", format!("{i}"));
                call.send(&ping).await.expect("send");
                let pong: Option<Any> = call.recv().await.expect("recv");
                assert_eq!(pong, Some(ping));
            }
            call.close_send().expect("close");
            assert_eq!(call.recv::<Any>().await, Ok(None));
            assert_eq!(call.status().map(Status::code), Some(Code::Ok));
            server.shutdown().await;
        },
    )
    .await;
}

#[tokio::test]
async fn status_code_and_message_come_from_trailers() {
    within(
        TEST_PATIENCE,
        "the whole of test status_code_and_message_come_from_trailers",
        async {
            let server = EchoServer::start().await;
            let ch = server.channel().await;
            let text = "précondition 100% failed:\t✗ 😈\n(second line)";
            let err = ch
                .unary::<_, Any>(
                    &path("Unary"),
                    &any("status/9", text),
                    CallOptions::default(),
                )
                .await
                .err();
            assert_eq!(err, Some(Status::new(Code::FailedPrecondition, text)));

            // Messages first, then a failing status in the trailers, with trailing metadata.
            let mut call = ch
                .start(&path("ServerStream"), CallOptions::default())
                .await
                .expect("start");
            call.send_last(&PbDuration {
                seconds: 3,
                nanos: Code::Aborted.as_i32(),
            })
            .await
            .expect("send");
            for _ in 0..3 {
                assert!(matches!(call.recv::<PbDuration>().await, Ok(Some(_))));
            }
            let err = call.recv::<PbDuration>().await.err();
            assert_eq!(err.as_ref().map(Status::code), Some(Code::Aborted));
            assert_eq!(
                err.as_ref().map(Status::message),
                Some("failed after the stream")
            );
            assert_eq!(call.status(), err.as_ref());
            assert_eq!(call.trailers().and_then(|t| t.get("x-sent")), Some("3"));
            server.shutdown().await;
        },
    )
    .await;
}

#[tokio::test]
async fn unknown_method_is_a_trailers_only_unimplemented() {
    within(
        TEST_PATIENCE,
        "the whole of test unknown_method_is_a_trailers_only_unimplemented",
        async {
            let server = EchoServer::start().await;
            let ch = server.channel().await;
            let mut call = ch
                .start(&path("NoSuchMethod"), CallOptions::default())
                .await
                .expect("start");
            let err = call.headers().await.err();
            assert_eq!(err.as_ref().map(Status::code), Some(Code::Unimplemented));
            assert_eq!(call.status(), err.as_ref());
            assert!(
                call.trailers().is_some(),
                "Trailers-Only carries the trailers"
            );
            assert_eq!(call.recv::<Any>().await.err(), err);

            let err = ch
                .unary::<_, Any>("/no.Such/Service", &any("x", "y"), CallOptions::default())
                .await
                .err();
            assert_eq!(err.map(|s| s.code()), Some(Code::Unimplemented));
            server.shutdown().await;
        },
    )
    .await;
}

#[tokio::test]
async fn a_passed_deadline_is_deadline_exceeded() {
    within(
        TEST_PATIENCE,
        "the whole of test a_passed_deadline_is_deadline_exceeded",
        async {
            let server = EchoServer::start().await;
            let ch = server.channel().await;
            let opts = CallOptions {
                timeout: Some(Duration::from_millis(200)),
                ..CallOptions::default()
            };
            let err = ch
                .unary::<_, Any>(&path("Hang"), &any("x", "y"), opts)
                .await
                .err();
            assert_eq!(err.map(|s| s.code()), Some(Code::DeadlineExceeded));
            server.shutdown().await;
        },
    )
    .await;
}

#[tokio::test]
async fn the_client_enforces_the_deadline_itself_and_cancels_the_stream() {
    within(
        TEST_PATIENCE,
        "the whole of test the_client_enforces_the_deadline_itself_and_cancels_the_stream",
        async {
            // A server that takes the call and never answers: only the client's own timer can end it.
            let (seen_tx, seen_rx) = oneshot::channel();
            let addr = bare_server(|req, mut respond| async move {
                let timeout = req.headers().get("grpc-timeout").cloned();
                let reset = poll_fn(|cx| respond.poll_reset(cx)).await.ok();
                let _ = seen_tx.send((timeout, reset));
            })
            .await;
            let ch = Channel::connect(addr).await.expect("connect");
            let opts = CallOptions {
                timeout: Some(Duration::from_millis(100)),
                ..CallOptions::default()
            };
            let err = ch
                .unary::<_, Any>(&path("Unary"), &any("x", "y"), opts)
                .await
                .err();
            assert_eq!(err.map(|s| s.code()), Some(Code::DeadlineExceeded));
            let (timeout, reset) = seen_rx.await.expect("server saw the call");
            // Whatever unit the client picks, the value is the time it had left: at most 100 ms.
            let sent = timeout.map(|t| grpc_timeout(t.as_bytes()));
            assert!(
                sent.is_some_and(|t| t > Duration::ZERO && t <= Duration::from_millis(100)),
                "grpc-timeout {sent:?}"
            );
            assert_eq!(reset, Some(Reason::CANCEL));
        },
    )
    .await;
}

#[tokio::test]
async fn metadata_travels_both_ways_ascii_and_binary() {
    within(
        TEST_PATIENCE,
        "the whole of test metadata_travels_both_ways_ascii_and_binary",
        async {
            let server = EchoServer::start().await;
            let ch = server.channel().await;
            let binary = [0u8, 1, 2, 0xfe, 0xff];
            let mut metadata = Metadata::new();
            metadata
                .insert("x-echo-initial", "hello, metadata")
                .expect("ascii");
            metadata
                .insert_bin("x-echo-trailing-bin", &binary)
                .expect("binary");
            let opts = CallOptions {
                metadata,
                ..CallOptions::default()
            };
            let mut call = ch.start(&path("Unary"), opts).await.expect("start");
            call.send_last(&any("x", "y")).await.expect("send");
            let headers = call.headers().await.expect("headers");
            assert_eq!(headers.get("x-echo-initial"), Some("hello, metadata"));
            assert_eq!(headers.get("x-request-encoding"), Some("identity"));
            assert!(matches!(call.recv::<Any>().await, Ok(Some(_))));
            assert_eq!(call.recv::<Any>().await, Ok(None));
            let trailers = call.trailers().expect("trailers");
            assert_eq!(
                trailers.get_bin("x-echo-trailing-bin"),
                Some(binary.to_vec())
            );
            assert!(
                trailers.get("grpc-status").is_none(),
                "reserved names stay out"
            );
            server.shutdown().await;
        },
    )
    .await;
}

#[tokio::test]
async fn gzip_compresses_requests_and_responses() {
    within(
        TEST_PATIENCE,
        "the whole of test gzip_compresses_requests_and_responses",
        async {
            let server = EchoServer::start().await;
            let ch = server.channel().await;
            let mut metadata = Metadata::new();
            metadata.insert("x-compress", "1").expect("metadata");
            let opts = CallOptions {
                metadata,
                encoding: Some(Encoding::Gzip),
                accept_compressed: true,
                ..CallOptions::default()
            };
            let req = any("compressible", vec![b'a'; 200_000]);
            let mut call = ch.start(&path("Unary"), opts).await.expect("start");
            call.send_last(&req).await.expect("send");
            let headers = call.headers().await.expect("headers");
            assert_eq!(headers.get("x-request-encoding"), Some("gzip"));
            assert_eq!(call.encoding(), Encoding::Gzip);
            assert_eq!(call.recv::<Any>().await, Ok(Some(req)));
            assert_eq!(call.recv::<Any>().await, Ok(None));
            server.shutdown().await;
        },
    )
    .await;
}

#[tokio::test]
async fn a_compressed_request_has_the_flag_and_grpc_encoding() {
    within(
        TEST_PATIENCE,
        "the whole of test a_compressed_request_has_the_flag_and_grpc_encoding",
        async {
            let (seen_tx, seen_rx) = oneshot::channel();
            let addr = bare_server(|req, respond| async move {
                let encoding = req.headers().get("grpc-encoding").cloned();
                let first = req.into_body().data().await.and_then(Result::ok);
                let _ = seen_tx.send((encoding, first.and_then(|b| b.first().copied())));
                drop(respond);
            })
            .await;
            let ch = Channel::connect(addr).await.expect("connect");
            let opts = CallOptions {
                encoding: Some(Encoding::Deflate),
                ..CallOptions::default()
            };
            let _ = ch
                .unary::<_, Any>(&path("Unary"), &any("x", vec![7; 1000]), opts)
                .await;
            let (encoding, flag) = seen_rx.await.expect("server saw the call");
            assert_eq!(encoding, Some(HeaderValue::from_static("deflate")));
            assert_eq!(flag, Some(1));
        },
    )
    .await;
}

#[tokio::test]
async fn an_oversize_response_is_resource_exhausted() {
    within(
        TEST_PATIENCE,
        "the whole of test an_oversize_response_is_resource_exhausted",
        async {
            let server = EchoServer::start().await;
            let ch = server.channel().await;
            let opts = CallOptions {
                max_recv_message_bytes: Some(1_000),
                ..CallOptions::default()
            };
            let err = ch
                .unary::<_, Any>(&path("Unary"), &any("big", noise(2_000)), opts)
                .await
                .err();
            assert_eq!(err.map(|s| s.code()), Some(Code::ResourceExhausted));
            server.shutdown().await;
        },
    )
    .await;
}

#[tokio::test]
async fn dropping_a_call_cancels_it_on_the_server() {
    within(
        TEST_PATIENCE,
        "the whole of test dropping_a_call_cancels_it_on_the_server",
        async {
            let mut server = EchoServer::start().await;
            let ch = server.channel().await;
            let call = ch
                .start(&path("Hang"), CallOptions::default())
                .await
                .expect("start");
            assert_eq!(server.next_event().await, Some(Event::Started));
            drop(call);
            assert_eq!(
                server.next_event().await,
                Some(Event::Gone(CloseCause::Reset(Reason::CANCEL)))
            );
            server.shutdown().await;
        },
    )
    .await;
}

#[tokio::test]
async fn dropping_both_halves_cancels_the_call_but_one_does_not() {
    within(
        TEST_PATIENCE,
        "the whole of test dropping_both_halves_cancels_the_call_but_one_does_not",
        async {
            let mut server = EchoServer::start().await;
            let ch = server.channel().await;
            let call = ch
                .start(&path("Hang"), CallOptions::default())
                .await
                .expect("start");
            assert_eq!(server.next_event().await, Some(Event::Started));
            let (tx, rx) = call.split();
            drop(rx);
            // The call is still alive: a second call on the connection completes first.
            let resp: Any = ch
                .unary(&path("Unary"), &any("x", "y"), CallOptions::default())
                .await
                .expect("unary");
            assert_eq!(resp.type_url, "x");
            assert!(
                server.events.try_recv().is_err(),
                "the server saw no cancel"
            );
            drop(tx);
            assert_eq!(
                server.next_event().await,
                Some(Event::Gone(CloseCause::Reset(Reason::CANCEL)))
            );
            server.shutdown().await;
        },
    )
    .await;
}

#[tokio::test]
async fn cancel_resets_the_stream_and_reports_cancelled() {
    within(
        TEST_PATIENCE,
        "the whole of test cancel_resets_the_stream_and_reports_cancelled",
        async {
            let mut server = EchoServer::start().await;
            let ch = server.channel().await;
            let mut call = ch
                .start(&path("Hang"), CallOptions::default())
                .await
                .expect("start");
            assert_eq!(server.next_event().await, Some(Event::Started));
            call.cancel();
            assert_eq!(
                server.next_event().await,
                Some(Event::Gone(CloseCause::Reset(Reason::CANCEL)))
            );
            let err = call.recv::<Any>().await.err();
            assert_eq!(err.map(|s| s.code()), Some(Code::Cancelled));
            let err = call.send(&any("x", "y")).await.err();
            assert_eq!(err.map(|s| s.code()), Some(Code::Cancelled));
            server.shutdown().await;
        },
    )
    .await;
}

#[tokio::test]
async fn a_cancel_from_the_sending_half_ends_the_receiving_half() {
    within(
        TEST_PATIENCE,
        "the whole of test a_cancel_from_the_sending_half_ends_the_receiving_half",
        async {
            let mut server = EchoServer::start().await;
            let ch = server.channel().await;
            let call = ch
                .start(&path("Hang"), CallOptions::default())
                .await
                .expect("start");
            assert_eq!(server.next_event().await, Some(Event::Started));
            let (mut tx, mut rx) = call.split();
            let receiver = tokio::spawn(async move { rx.recv::<Any>().await });
            tx.cancel();
            let got = receiver.await.ok().map(|r| r.map_err(|s| s.code()));
            assert_eq!(got, Some(Err(Code::Cancelled)));
            assert_eq!(
                server.next_event().await,
                Some(Event::Gone(CloseCause::Reset(Reason::CANCEL)))
            );
            server.shutdown().await;
        },
    )
    .await;
}

#[tokio::test]
async fn a_send_waits_for_the_servers_window_and_gives_up_at_the_deadline() {
    within(
        TEST_PATIENCE,
        "the whole of test a_send_waits_for_the_servers_window_and_gives_up_at_the_deadline",
        async {
            // A server that takes the call and never reads it: after one window the client must wait
            // (h2 would otherwise buffer the whole message), until its deadline.
            let (seen_tx, seen_rx) = oneshot::channel();
            let addr = bare_server(|req, mut respond| async move {
                let reset = poll_fn(|cx| respond.poll_reset(cx)).await.ok();
                drop(req);
                let _ = seen_tx.send(reset);
            })
            .await;
            let ch = Channel::connect(addr).await.expect("connect");
            let opts = CallOptions {
                timeout: Some(Duration::from_millis(200)),
                ..CallOptions::default()
            };
            let mut call = ch.start(&path("Unary"), opts).await.expect("start");
            let err = call.send(&any("big", noise(4_000_000))).await.err();
            assert_eq!(err.map(|s| s.code()), Some(Code::DeadlineExceeded));
            assert_eq!(seen_rx.await.ok(), Some(Some(Reason::CANCEL)));
            let err = call.recv::<Any>().await.err();
            assert_eq!(err.map(|s| s.code()), Some(Code::DeadlineExceeded));
        },
    )
    .await;
}

#[tokio::test]
async fn server_shutdown_ends_live_calls_with_unavailable() {
    within(
        TEST_PATIENCE,
        "the whole of test server_shutdown_ends_live_calls_with_unavailable",
        async {
            let mut server = EchoServer::start().await;
            let ch = server.channel().await;
            let mut call = ch
                .start(&path("Hang"), CallOptions::default())
                .await
                .expect("start");
            assert_eq!(server.next_event().await, Some(Event::Started));
            server.begin_shutdown();
            let err = call.recv::<Any>().await.err();
            assert_eq!(err.map(|s| s.code()), Some(Code::Unavailable));
            server.shutdown().await;
        },
    )
    .await;
}

#[tokio::test]
async fn requests_that_are_not_grpc_get_bare_http_statuses() {
    within(
        TEST_PATIENCE,
        "the whole of test requests_that_are_not_grpc_get_bare_http_statuses",
        async {
            let server = EchoServer::start().await;
            let ch = server.channel().await;
            let cases = [
                ("GET", "application/grpc", StatusCode::METHOD_NOT_ALLOWED),
                (
                    "POST",
                    "application/json",
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ),
            ];
            for (method, content_type, want) in cases {
                let req = Request::builder()
                    .method(method)
                    .uri(path("Unary"))
                    .header("content-type", content_type)
                    .body(())
                    .expect("request");
                let (response, _stream) = ch.send_request(req, true).await.expect("send");
                let response = response.await.expect("response");
                assert_eq!(response.status(), want, "{method} {content_type}");
            }
            server.shutdown().await;
        },
    )
    .await;
}

#[tokio::test]
async fn a_non_grpc_http_error_maps_to_a_grpc_code() {
    within(
        TEST_PATIENCE,
        "the whole of test a_non_grpc_http_error_maps_to_a_grpc_code",
        async {
            let addr = bare_server(|_req, mut respond| async move {
                let mut response = Response::new(());
                *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                let _ = respond.send_response(response, true);
            })
            .await;
            let ch = Channel::connect(addr).await.expect("connect");
            let err = ch
                .unary::<_, Any>(&path("Unary"), &any("x", "y"), CallOptions::default())
                .await
                .err();
            assert_eq!(err.as_ref().map(Status::code), Some(Code::Unavailable));
            assert!(err.is_some_and(|s| s.message().contains("503")));
        },
    )
    .await;
}

#[tokio::test]
async fn trailers_without_grpc_status_are_unknown() {
    within(
        TEST_PATIENCE,
        "the whole of test trailers_without_grpc_status_are_unknown",
        async {
            let addr = bare_server(|_req, mut respond| async move {
                let Ok(mut stream) = respond.send_response(grpc_response(), false) else {
                    return;
                };
                let _ = stream.send_trailers(HeaderMap::new());
            })
            .await;
            let ch = Channel::connect(addr).await.expect("connect");
            let err = ch
                .unary::<_, Any>(&path("Unary"), &any("x", "y"), CallOptions::default())
                .await
                .err();
            assert_eq!(err.map(|s| s.code()), Some(Code::Unknown));
        },
    )
    .await;
}

#[tokio::test]
async fn the_client_splits_comma_joined_bin_trailers() {
    within(
        TEST_PATIENCE,
        "the whole of test the_client_splits_comma_joined_bin_trailers",
        async {
            let addr = bare_server(|_req, mut respond| async move {
                let Ok(mut stream) = respond.send_response(grpc_response(), false) else {
                    return;
                };
                // Field 1 (seconds), varint 42.
                let _ = stream.send_data(Bytes::from_static(&[0, 0, 0, 0, 2, 0x08, 42]), false);
                let mut trailers = HeaderMap::new();
                trailers.insert("grpc-status", HeaderValue::from_static("0"));
                // Two values joined by a comma, as a proxy may join repeated headers.
                trailers.insert("x-joined-bin", HeaderValue::from_static("AQI=,AwQ"));
                let _ = stream.send_trailers(trailers);
            })
            .await;
            let ch = Channel::connect(addr).await.expect("connect");
            let mut call = ch
                .start(&path("Unary"), CallOptions::default())
                .await
                .expect("start");
            call.send_last(&any("x", "y")).await.expect("send");
            let resp: PbDuration = call.recv().await.expect("OK").expect("a message");
            assert_eq!(resp.seconds, 42);
            assert!(call.recv::<PbDuration>().await.expect("OK").is_none());
            let trailers = call.trailers().expect("trailers");
            assert_eq!(
                trailers.get_all_bin("x-joined-bin"),
                Some(vec![vec![1, 2], vec![3, 4]])
            );
            assert_eq!(trailers.get_bin("x-joined-bin"), Some(vec![1, 2]));
        },
    )
    .await;
}

#[tokio::test]
async fn a_stream_ending_without_trailers_is_internal() {
    within(
        TEST_PATIENCE,
        "the whole of test a_stream_ending_without_trailers_is_internal",
        async {
            let addr = bare_server(|_req, mut respond| async move {
                let Ok(mut stream) = respond.send_response(grpc_response(), false) else {
                    return;
                };
                let _ = stream.send_data(Bytes::from_static(&[0, 0, 0, 0, 0]), true);
            })
            .await;
            let ch = Channel::connect(addr).await.expect("connect");
            let mut call = ch
                .start(&path("Unary"), CallOptions::default())
                .await
                .expect("start");
            call.send_last(&any("x", "y")).await.expect("send");
            assert_eq!(call.recv::<Any>().await, Ok(Some(Any::default())));
            let err = call.recv::<Any>().await.err();
            assert_eq!(err.map(|s| s.code()), Some(Code::Internal));
        },
    )
    .await;
}

#[tokio::test]
async fn connect_io_speaks_grpc_over_any_transport() {
    within(
        TEST_PATIENCE,
        "the whole of test connect_io_speaks_grpc_over_any_transport",
        async {
            let (client_io, server_io) = tokio::io::duplex(64 << 10);
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(server_io).await else {
                    return;
                };
                if let Some(Ok((_req, respond))) = conn.accept().await {
                    tokio::spawn(answer_one_message(respond));
                }
                while let Some(Ok(_)) = conn.accept().await {}
            });
            let ch = Channel::connect_io(client_io).await.expect("handshake");
            let resp: PbDuration = ch
                .unary(
                    &path("Unary"),
                    &PbDuration::default(),
                    CallOptions::default(),
                )
                .await
                .expect("unary");
            assert_eq!(resp.seconds, 42);
        },
    )
    .await;
}

#[tokio::test]
async fn a_refused_connection_is_unavailable() {
    within(
        TEST_PATIENCE,
        "the whole of test a_refused_connection_is_unavailable",
        async {
            let nowhere = RefusingAddr::new();
            let err = Channel::connect(nowhere.addr).await.err();
            assert!(matches!(err, Some(ClientError::Connect(_))), "{err:?}");
            let status = err.map(Status::from);
            assert_eq!(status.map(|s| s.code()), Some(Code::Unavailable));
        },
    )
    .await;
}

/// A `grpc-timeout` value read per the spec: 1 to 8 ASCII digits, then one unit of
/// `H M S m u n`. Panics on anything else.
fn grpc_timeout(value: &[u8]) -> Duration {
    let (unit, digits) = value.split_last().expect("a grpc-timeout value");
    assert!(
        (1..=8).contains(&digits.len()) && digits.iter().all(u8::is_ascii_digit),
        "grpc-timeout {value:?}: 1 to 8 digits"
    );
    let n: u64 = std::str::from_utf8(digits)
        .ok()
        .and_then(|d| d.parse().ok())
        .expect("digits");
    match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => panic!("grpc-timeout {value:?}: unknown unit"),
    }
}

/// Response headers of a gRPC call.
fn grpc_response() -> Response<()> {
    let mut response = Response::new(());
    response
        .headers_mut()
        .insert("content-type", HeaderValue::from_static("application/grpc"));
    response
}

/// Answers a call with headers, one `Duration { seconds: 42 }` and OK trailers.
async fn answer_one_message(mut respond: SendResponse<Bytes>) {
    let Ok(mut stream) = respond.send_response(grpc_response(), false) else {
        return;
    };
    // Field 1 (seconds), varint 42.
    let _ = stream.send_data(Bytes::from_static(&[0, 0, 0, 0, 2, 0x08, 42]), false);
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let _ = stream.send_trailers(trailers);
}

/// A bare h2 server on 127.0.0.1:0 that hands its first request to `handler` and keeps the
/// connection going.
async fn bare_server<F, Fut>(handler: F) -> SocketAddr
where
    F: FnOnce(Request<RecvStream>, SendResponse<Bytes>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let Ok((socket, _)) = listener.accept().await else {
            return;
        };
        let Ok(mut conn) = h2::server::handshake(socket).await else {
            return;
        };
        if let Some(Ok((req, respond))) = conn.accept().await {
            tokio::spawn(handler(req, respond));
        }
        while let Some(Ok(_)) = conn.accept().await {}
    });
    addr
}
