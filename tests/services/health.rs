//! `grpc.health.v1.Health` against the real server: grpcurl, Check, List, Watch, slow watchers
//! and graceful shutdown.

use crate::support::{within, TEST_PATIENCE};
use std::net::SocketAddr;
use std::sync::Arc;

use crate::support::wire::{message, Code, WireCall, WireClient};
use crate::support::{grpcurl, TestServer};
use h2chat::grpc::{Server, ServerConfig};
use h2chat::pb::grpc::health::v1::health_check_response::ServingStatus;
use h2chat::pb::grpc::health::v1::{
    HealthCheckRequest, HealthCheckResponse, HealthListRequest, HealthListResponse,
};
use h2chat::services::health::{self, HealthHandle};
use h2chat::services::interop::InteropService;

const CHECK: &str = "/grpc.health.v1.Health/Check";
const WATCH: &str = "/grpc.health.v1.Health/Watch";
const LIST: &str = "/grpc.health.v1.Health/List";

/// A server like the shipped one (interop and health services) whose health handle the test
/// holds.
struct HandleServer {
    server: TestServer,
    addr: SocketAddr,
    health: HealthHandle,
}

impl HandleServer {
    async fn start() -> HandleServer {
        let mut server = Server::new(ServerConfig::default());
        server.add_service(Arc::new(InteropService::new()));
        let health = health::install(&mut server);
        let server = TestServer::serve(server).await;
        HandleServer {
            addr: server.addr,
            server,
            health,
        }
    }

    async fn shutdown(self) {
        self.server.shutdown().await;
    }
}

fn status_of(resp: &HealthCheckResponse) -> ServingStatus {
    ServingStatus::try_from(resp.status).expect("a known status")
}

async fn watch(client: &mut WireClient, service: &str) -> WireCall {
    let mut call = client.start(WATCH, &[]).await;
    call.send(
        message(&HealthCheckRequest {
            service: service.to_owned(),
        }),
        true,
    );
    call
}

async fn next_status(call: &mut WireCall) -> ServingStatus {
    let resp: HealthCheckResponse = call.next_message().await.expect("a status");
    status_of(&resp)
}

async fn check(client: &mut WireClient, service: &str) -> Result<ServingStatus, Code> {
    let mut call = client.start(CHECK, &[]).await;
    call.send(
        message(&HealthCheckRequest {
            service: service.to_owned(),
        }),
        true,
    );
    let resp: Option<HealthCheckResponse> = call.next_message().await;
    let (status, _) = call.finish().await;
    match resp {
        Some(r) if status.code() == Code::Ok => Ok(status_of(&r)),
        _ => Err(status.code()),
    }
}

async fn grpcurl(target: &str, data: Option<&str>) -> String {
    let mut args = vec![
        "-plaintext",
        "-import-path",
        "proto",
        "-proto",
        "grpc/health/v1/health.proto",
    ];
    if let Some(d) = data {
        args.extend(["-d", d]);
    }
    args.extend([target, "grpc.health.v1.Health/Check"]);
    grpcurl::ok(&args).await
}

#[tokio::test]
async fn grpcurl_check_answers_serving() {
    within(
        TEST_PATIENCE,
        "the whole of test grpcurl_check_answers_serving",
        async {
            let server = TestServer::default().await;
            let whole = grpcurl(&server.target(), None).await;
            assert!(whole.contains("\"status\": \"SERVING\""), "{whole}");
            let one = grpcurl(
                &server.target(),
                Some(r#"{"service": "grpc.testing.TestService"}"#),
            )
            .await;
            assert!(one.contains("\"status\": \"SERVING\""), "{one}");
            server.shutdown().await;
        },
    )
    .await;
}

#[tokio::test]
async fn every_service_is_registered_serving_at_startup() {
    within(
        TEST_PATIENCE,
        "the whole of test every_service_is_registered_serving_at_startup",
        async {
            let server = TestServer::default().await;
            let mut client = WireClient::connect(server.addr).await;
            for service in ["", "grpc.testing.TestService", "grpc.health.v1.Health"] {
                assert_eq!(
                    check(&mut client, service).await,
                    Ok(ServingStatus::Serving),
                    "{service:?}"
                );
            }
            let mut call = client.start(LIST, &[]).await;
            call.send(message(&HealthListRequest {}), true);
            let list: HealthListResponse = call.next_message().await.expect("a list");
            let mut names: Vec<_> = list.statuses.keys().cloned().collect();
            names.sort();
            // Every service the README lists, and "" for the whole server.
            let expected = [
                "",
                "chat.v1.ChatService",
                "grpc.health.v1.Health",
                "grpc.reflection.v1.ServerReflection",
                "grpc.reflection.v1alpha.ServerReflection",
                "grpc.testing.TestService",
                "h2chat.echo.v1.Chat",
                "h2chat.logs.v1.LogWatcher",
            ];
            assert_eq!(names, expected);
            assert!(list
                .statuses
                .values()
                .all(|s| status_of(s) == ServingStatus::Serving));
            server.shutdown().await;
        },
    )
    .await;
}

#[tokio::test]
async fn check_on_an_unknown_service_is_not_found() {
    within(
        TEST_PATIENCE,
        "the whole of test check_on_an_unknown_service_is_not_found",
        async {
            let server = TestServer::default().await;
            let mut client = WireClient::connect(server.addr).await;
            assert_eq!(
                check(&mut client, "no.such.Service").await,
                Err(Code::NotFound)
            );
            server.shutdown().await;
        },
    )
    .await;
}

#[tokio::test]
async fn status_changes_reach_check_and_watch() {
    within(
        TEST_PATIENCE,
        "the whole of test status_changes_reach_check_and_watch",
        async {
            let server = HandleServer::start().await;
            let mut client = WireClient::connect(server.addr).await;
            let mut call = watch(&mut client, "grpc.testing.TestService").await;
            assert_eq!(next_status(&mut call).await, ServingStatus::Serving);
            server
                .health
                .set_status("grpc.testing.TestService", ServingStatus::NotServing);
            assert_eq!(next_status(&mut call).await, ServingStatus::NotServing);
            assert_eq!(
                check(&mut client, "grpc.testing.TestService").await,
                Ok(ServingStatus::NotServing)
            );
            server.shutdown().await;
        },
    )
    .await;
}

/// Watch on an unknown name answers SERVICE_UNKNOWN and keeps the call open: when the name is
/// registered later, its status arrives on the same call.
#[tokio::test]
async fn watch_on_an_unknown_service_stays_open() {
    within(
        TEST_PATIENCE,
        "the whole of test watch_on_an_unknown_service_stays_open",
        async {
            let server = HandleServer::start().await;
            let mut client = WireClient::connect(server.addr).await;
            let mut call = watch(&mut client, "later.Service").await;
            assert_eq!(next_status(&mut call).await, ServingStatus::ServiceUnknown);
            assert_eq!(
                check(&mut client, "later.Service").await,
                Err(Code::NotFound)
            );
            server
                .health
                .set_status("later.Service", ServingStatus::Serving);
            assert_eq!(next_status(&mut call).await, ServingStatus::Serving);
            server.shutdown().await;
        },
    )
    .await;
}

#[tokio::test]
async fn watch_refuses_a_message_sized_service_name() {
    within(
        TEST_PATIENCE,
        "the whole of test watch_refuses_a_message_sized_service_name",
        async {
            let server = TestServer::default().await;
            let mut client = WireClient::connect(server.addr).await;
            let mut call =
                watch(&mut client, &"x".repeat(health::MAX_SERVICE_NAME_BYTES + 1)).await;
            assert_eq!(call.finish().await.0.code(), Code::InvalidArgument);
            server.shutdown().await;
        },
    )
    .await;
}

/// A watcher that does not read holds the server to one message in flight (its window is one
/// message) and, however often the status changes meanwhile, gets only the latest one next.
#[tokio::test]
async fn slow_watcher_gets_only_the_latest_status() {
    within(
        TEST_PATIENCE,
        "the whole of test slow_watcher_gets_only_the_latest_status",
        async {
            const ONE_MESSAGE: u32 = 7; // 5-byte prefix + a 2-byte HealthCheckResponse
            let server = HandleServer::start().await;
            let mut client = WireClient::connect_with_window(server.addr, ONE_MESSAGE).await;
            let mut call = watch(&mut client, "").await;
            call.headers().await;
            for i in 0..1000 {
                let status = if i % 2 == 0 {
                    ServingStatus::NotServing
                } else {
                    ServingStatus::Serving
                };
                server.health.set_status("", status);
                // Lets the watcher run, so it does try to send each change.
                tokio::task::yield_now().await;
            }
            server.health.set_status("", ServingStatus::Unknown);

            let mut seen = Vec::new();
            while seen.last() != Some(&ServingStatus::Unknown) {
                seen.push(next_status(&mut call).await);
                assert!(seen.len() <= 3, "a slow watcher got a queue: {seen:?}");
            }
            assert_eq!(seen.first(), Some(&ServingStatus::Serving), "{seen:?}");
            server.shutdown().await;
        },
    )
    .await;
}

/// On graceful shutdown every watcher hears NOT_SERVING before its call ends UNAVAILABLE. On a
/// multi-threaded runtime, as the shipped server runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_sends_not_serving_to_every_watcher_before_closing() {
    within(
        TEST_PATIENCE,
        "the whole of test shutdown_sends_not_serving_to_every_watcher_before_closing",
        async {
            let server = TestServer::default().await;
            let mut client = WireClient::connect(server.addr).await;
            let mut watchers = Vec::new();
            for service in ["", "grpc.testing.TestService", "grpc.health.v1.Health"] {
                let mut call = watch(&mut client, service).await;
                assert_eq!(next_status(&mut call).await, ServingStatus::Serving);
                watchers.push((service, call));
            }
            let stopping = tokio::spawn(server.shutdown());
            for (service, call) in &mut watchers {
                assert_eq!(
                    next_status(call).await,
                    ServingStatus::NotServing,
                    "{service:?}"
                );
                let (status, _) = call.finish().await;
                assert_eq!(status.code(), Code::Unavailable, "{service:?}: {status}");
            }
            stopping.await.expect("server stopped");
        },
    )
    .await;
}

/// Shutdown also reaches the statuses themselves, and nothing turns them back.
#[tokio::test]
async fn shutdown_leaves_every_status_not_serving() {
    within(
        TEST_PATIENCE,
        "the whole of test shutdown_leaves_every_status_not_serving",
        async {
            let server = HandleServer::start().await;
            let mut client = WireClient::connect(server.addr).await;
            let mut call = watch(&mut client, "").await;
            assert_eq!(next_status(&mut call).await, ServingStatus::Serving);
            let health = server.health.clone();
            let stopping = tokio::spawn(server.shutdown());
            assert_eq!(next_status(&mut call).await, ServingStatus::NotServing);
            stopping.await.expect("server stopped");
            health.set_status("grpc.testing.TestService", ServingStatus::Serving);
            let statuses = health.statuses();
            assert_eq!(statuses.len(), 3, "{statuses:?}");
            assert!(
                statuses.values().all(|s| *s == ServingStatus::NotServing),
                "{statuses:?}"
            );
        },
    )
    .await;
}
