//! Graceful shutdown: SIGTERM and SIGINT of the `h2chat serve` binary end live calls with
//! UNAVAILABLE, stop accepting and exit 0; `--shutdown-grace` bounds the wait for a handler that
//! will not end.

use std::time::Duration;

use h2chat::grpc::{Server, ServerConfig};
use h2chat::pb::h2chat::echo::v1::EchoMessage;
use tokio::net::TcpStream;

use crate::connections::Lingering;
use crate::support::process::ServerProcess;
use crate::support::wire::{message, Code, WireClient};
use crate::support::{within, TestServer, PATIENCE, TEST_PATIENCE};

const BIDI_CHAT: &str = "/h2chat.echo.v1.Chat/BiDiChat";

#[tokio::test]
async fn sigterm_and_sigint_end_live_calls_stop_accepting_and_exit_0() {
    within(
        TEST_PATIENCE,
        "the whole of test sigterm_and_sigint_end_live_calls_stop_accepting_and_exit_0",
        async {
            for (name, signal) in [("SIGTERM", libc::SIGTERM), ("SIGINT", libc::SIGINT)] {
                let mut server = ServerProcess::start(&["--shutdown-grace", "10"]).await;
                let addr = server.addr;
                let mut client = WireClient::connect(addr).await;
                let mut live = client.start(BIDI_CHAT, &[]).await;
                live.send(message(&EchoMessage { text: "hi".into() }), false);
                let reply: EchoMessage = live.next_message().await.expect("a reply");
                assert_eq!(reply.text, "echo: hi");

                server.signal(signal);
                let (status, _) = live.finish().await;
                assert_eq!(status.code(), Code::Unavailable, "{name}: {status}");
                assert_eq!(status.message(), "server shutting down", "{name}");
                server
                    .expect_log("that it stops accepting", |l| {
                        l.contains("shutting down: no new connections")
                    })
                    .await;
                let exit = server.wait(PATIENCE).await;
                assert_eq!(exit.code(), Some(0), "{name}: {exit}");
                let refused = TcpStream::connect(addr).await;
                assert!(refused.is_err(), "{name}: still accepting after exit");
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn shutdown_grace_bounds_the_wait_for_a_handler_that_will_not_end() {
    within(
        TEST_PATIENCE,
        "the whole of test shutdown_grace_bounds_the_wait_for_a_handler_that_will_not_end",
        async {
            let (lingering, mut dropped, release) = Lingering::new();
            let mut server = Server::new(ServerConfig {
                shutdown_grace: Duration::from_millis(300),
                ..ServerConfig::default()
            });
            server.add_service(lingering);
            let mut server = TestServer::serve(server).await;
            let mut client = WireClient::connect(server.addr).await;
            let mut call = client.start("/test.Lingering/Linger", &[]).await;
            call.send(message(&EchoMessage::default()), false);
            call.headers().await;

            server.begin_shutdown();
            let (status, _) = call.finish().await;
            assert_eq!(status.code(), Code::Unavailable, "{status}");
            within(PATIENCE, "the server to drop the handler", dropped.recv())
                .await
                .expect("server alive");
            // The handler has not let go, and will not before the test says so: the server stops
            // all the same once the grace is over (shutdown() fails the test if it waits longer
            // than PATIENCE, far past the grace).
            server.shutdown().await;
            release.release();
        },
    )
    .await;
}
