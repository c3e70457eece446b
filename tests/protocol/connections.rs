//! Connection-level limits over real sockets: `--max-connections` (extra clients wait, a closed
//! connection frees its slot), `--handshake-timeout` (a socket that never sends the preface is
//! closed), and `--max-concurrent-streams` as a cap on running handlers, not only on h2 streams.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use bytes::Bytes;
use h2chat::grpc::{BoxFuture, Call, CallResult, Server, ServerConfig, Service};
use h2chat::pb::h2chat::echo::v1::EchoMessage;
use h2chat::services::app::AppConfig;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::support::wire::{message, Code, WireClient};
use crate::support::{within, TestServer, PATIENCE, TEST_PATIENCE};

const BIDI_CHAT: &str = "/h2chat.echo.v1.Chat/BiDiChat";

fn echo(text: &str) -> EchoMessage {
    EchoMessage { text: text.into() }
}

/// One echo round trip on a live call.
async fn round_trip(call: &mut crate::support::wire::WireCall, text: &str) {
    call.send(message(&echo(text)), false);
    let reply: EchoMessage = call.next_message().await.expect("a reply");
    assert_eq!(reply.text, format!("echo: {text}"));
}

#[tokio::test]
async fn past_max_connections_a_client_waits_until_a_connection_closes() {
    within(
        TEST_PATIENCE,
        "the whole of test past_max_connections_a_client_waits_until_a_connection_closes",
        async {
            let server = TestServer::start(AppConfig {
                server: ServerConfig {
                    max_connections: 1,
                    ..ServerConfig::default()
                },
                ..AppConfig::default()
            })
            .await;
            let mut first = WireClient::connect(server.addr).await;
            let mut live = first.start(BIDI_CHAT, &[]).await;
            round_trip(&mut live, "first").await;

            // A second client: TCP connects (the kernel's backlog), but the server does not take
            // it while the first holds the only slot. Its h2 handshake is local; its call waits.
            let tcp = TcpStream::connect(server.addr).await.expect("connect");
            let (send, conn) = h2::client::handshake(tcp).await.expect("client preface");
            let driver = tokio::spawn(conn);
            let waiting = tokio::spawn(async move {
                let mut send = send.ready().await.expect("ready");
                let req = http::Request::post(format!("http://localhost{BIDI_CHAT}"))
                    .header("content-type", "application/grpc")
                    .header("te", "trailers")
                    .body(())
                    .expect("request");
                let (response, mut body) = send.send_request(req, false).expect("send request");
                body.send_data(message(&echo("second")), true)
                    .expect("send data");
                let response = response.await.expect("response headers");
                response.status()
            });
            // The server's own activity is the clock: many round trips on the first connection
            // later, the second call still has no answer.
            for i in 0..50 {
                round_trip(&mut live, &format!("busy {i}")).await;
            }
            assert!(
                !waiting.is_finished(),
                "the second connection was served past max-connections 1"
            );

            // The first connection closes: its slot goes to the waiting client.
            live.send(Bytes::new(), true);
            assert_eq!(live.finish().await.0.code(), Code::Ok);
            drop(live);
            drop(first);
            let status = within(PATIENCE, "the waiting client's answer", waiting)
                .await
                .expect("second call task");
            assert_eq!(status, 200);
            driver.abort();
            server.shutdown().await;
        },
    )
    .await;
}

#[tokio::test]
async fn a_socket_that_never_sends_the_preface_is_closed_after_the_handshake_timeout() {
    within(
        TEST_PATIENCE,
        "the whole of test a_socket_that_never_sends_the_preface_is_closed_after_the_handshake_timeout",
        async {
            let server = TestServer::start(AppConfig {
                server: ServerConfig {
                    handshake_timeout: Duration::from_millis(200),
                    ..ServerConfig::default()
                },
                ..AppConfig::default()
            })
            .await;
            // A client that did its handshake in time is kept.
            let mut client = WireClient::connect(server.addr).await;
            let mut silent = TcpStream::connect(server.addr).await.expect("connect");
            // The server writes its SETTINGS, then closes when the preface does not come.
            let mut got = Vec::new();
            let read = within(
                PATIENCE,
                "the server to close a socket that never sent the preface",
                silent.read_to_end(&mut got),
            )
            .await;
            assert!(
                read.is_ok() || read.as_ref().is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
                "{read:?}"
            );
            let mut call = client.start(BIDI_CHAT, &[]).await;
            round_trip(&mut call, "still here").await;
            call.send(Bytes::new(), true);
            assert_eq!(call.finish().await.0.code(), Code::Ok);
            server.shutdown().await;
        },
    )
    .await;
}

/// A service whose `Linger` handler sends headers and waits forever; when the server drops it (the client reset
/// the stream), it says so and then does not let go until the test releases it: a handler
/// still running after its stream is gone.
pub(crate) struct Lingering {
    dropping: mpsc::UnboundedSender<()>,
    release: Arc<(Mutex<bool>, Condvar)>,
}

impl Lingering {
    /// The service, what it says when a handler is dropped, and the switch that releases them.
    pub(crate) fn new() -> (Arc<Lingering>, mpsc::UnboundedReceiver<()>, Release) {
        let (dropping, dropped) = mpsc::unbounded_channel();
        let release = Arc::new((Mutex::new(false), Condvar::new()));
        let service = Arc::new(Lingering {
            dropping,
            release: release.clone(),
        });
        (service, dropped, Release(release))
    }
}

/// Lets every lingering handler (and those to come) finish.
pub(crate) struct Release(Arc<(Mutex<bool>, Condvar)>);

impl Release {
    pub(crate) fn release(&self) {
        let (lock, released) = &*self.0;
        if let Ok(mut free) = lock.lock() {
            *free = true;
        }
        released.notify_all();
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        self.release();
    }
}

struct Linger {
    dropping: mpsc::UnboundedSender<()>,
    release: Arc<(Mutex<bool>, Condvar)>,
}

impl Drop for Linger {
    fn drop(&mut self) {
        let _ = self.dropping.send(());
        let (lock, released) = &*self.release;
        // The wait blocks this thread, as a handler that will not end would; `block_in_place`
        // first hands this worker's queued tasks to another thread. Without it, a task woken
        // from here (the connection writing the call's trailers) waits in this worker's LIFO
        // slot, which no other worker takes, until the wait ends.
        tokio::task::block_in_place(|| {
            let Ok(guard) = lock.lock() else { return };
            // Bounded: a broken test must not block a runtime thread for ever.
            let _ = released.wait_timeout_while(guard, TEST_PATIENCE, |free| !*free);
        });
    }
}

impl Service for Lingering {
    fn name(&self) -> &'static str {
        "test.Lingering"
    }

    fn call<'a>(&'a self, method: &'a str, call: &'a Call) -> Option<BoxFuture<'a, CallResult>> {
        match method {
            "Linger" => {
                let linger = Linger {
                    dropping: self.dropping.clone(),
                    release: self.release.clone(),
                };
                Some(Box::pin(async move {
                    let _linger = linger;
                    call.send_headers()?;
                    std::future::pending::<()>().await;
                    Ok(())
                }))
            }
            "Quick" => Some(Box::pin(async move { call.send_headers() })),
            _ => None,
        }
    }
}

/// The lesson of CVE-2023-44487: a reset frees h2's stream slot at once, while the handler may
/// still run; the server caps running handlers too, and refuses a call past the cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn max_concurrent_streams_caps_running_handlers_not_only_open_streams() {
    within(
        TEST_PATIENCE,
        "the whole of test max_concurrent_streams_caps_running_handlers_not_only_open_streams",
        async {
            let (lingering, mut dropped, release) = Lingering::new();
            let mut server = Server::new(ServerConfig {
                max_concurrent_streams: 1,
                ..ServerConfig::default()
            });
            server.add_service(lingering);
            let server = TestServer::serve(server).await;
            let mut client = WireClient::connect(server.addr).await;
            let mut first = client.start("/test.Lingering/Linger", &[]).await;
            first.send(message(&echo("")), false);
            first.headers().await;
            first.cancel();
            // The server has stopped the handler, which has not finished yet.
            within(
                PATIENCE,
                "the server to drop the reset call's handler",
                dropped.recv(),
            )
            .await
            .expect("server alive");
            // h2's one stream slot is free again, the one handler slot is not.
            let mut second = client.start("/test.Lingering/Quick", &[]).await;
            second.send(message(&echo("")), true);
            let (status, _) = second.finish().await;
            assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
            assert!(
                status.message().contains("too many running calls"),
                "{status}"
            );

            // The handler lets go: its slot is free, and the next call runs.
            release.release();
            let run_again = async {
                loop {
                    let mut third = client.start("/test.Lingering/Quick", &[]).await;
                    third.send(message(&echo("")), true);
                    let (status, _) = third.finish().await;
                    match status.code() {
                        Code::Ok => return,
                        // The lingering task may not have ended yet.
                        Code::ResourceExhausted => tokio::task::yield_now().await,
                        _ => panic!("{status}"),
                    }
                }
            };
            within(
                PATIENCE,
                "a call to run once the handler slot is free",
                run_again,
            )
            .await;
            server.shutdown().await;
        },
    )
    .await;
}

#[tokio::test]
async fn a_header_list_over_max_header_list_bytes_is_refused_and_the_connection_goes_on() {
    within(
        TEST_PATIENCE,
        "the whole of test a_header_list_over_max_header_list_bytes_is_refused_and_the_connection_goes_on",
        async {
            let server = TestServer::start(AppConfig {
                server: ServerConfig {
                    max_header_list_bytes: 1024,
                    ..ServerConfig::default()
                },
                ..AppConfig::default()
            })
            .await;
            let mut client = WireClient::connect(server.addr).await;
            let big = "x".repeat(2000);
            let mut call = client.start(BIDI_CHAT, &[("x-big", &big)]).await;
            // h2 answers 431 before any handler sees the call.
            assert_eq!(
                call.http_status().await,
                http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            );
            // A header list under the limit on the same connection is served.
            let small = "x".repeat(500);
            let mut call = client.start(BIDI_CHAT, &[("x-small", &small)]).await;
            round_trip(&mut call, "fits").await;
            call.send(Bytes::new(), true);
            assert_eq!(call.finish().await.0.code(), Code::Ok);
            server.shutdown().await;
        },
    )
    .await;
}
