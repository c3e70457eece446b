//! gRPC-Web on the same port and router as gRPC, read from the wire.

use crate::support::{within, TestServer, TEST_PATIENCE};
use crate::webwire::{frame, post, text_chunks, Conn};

const CHECK: &str = "/grpc.health.v1.Health/Check";
const WATCH: &str = "/grpc.health.v1.Health/Watch";
/// `HealthCheckResponse { status: SERVING }` encoded.
const SERVING: [u8; 2] = [0x08, 0x01];

/// `HealthCheckRequest { service }` encoded.
fn health_request(service: &str) -> Vec<u8> {
    let mut out = vec![0x0a, service.len() as u8];
    out.extend_from_slice(service.as_bytes());
    out
}

#[tokio::test]
async fn unary_call_ends_with_a_trailers_frame_in_the_body() {
    within(TEST_PATIENCE, "the test", async {
        let server = TestServer::default().await;
        let mut conn = Conn::open(server.addr).await;
        for content_type in ["application/grpc-web", "application/grpc-web+proto"] {
            let request = post(CHECK, content_type).body(()).expect("request");
            let answer = conn.exchange(request, &frame(&health_request(""))).await;
            assert_eq!(answer.status, 200);
            assert_eq!(answer.headers["content-type"], content_type);
            assert_eq!(answer.messages, vec![SERVING.to_vec()]);
            assert!(answer.trailers_frame, "no trailers frame: {answer:?}");
            assert_eq!(answer.trailers["grpc-status"], "0");
            assert!(
                !answer.http_trailers,
                "HTTP/2 trailers sent to a gRPC-Web client"
            );
        }
        server.shutdown().await;
    })
    .await
}

#[tokio::test]
async fn text_bodies_are_base64_both_ways_in_padded_chunks() {
    within(TEST_PATIENCE, "the test", async {
        let server = TestServer::default().await;
        let mut conn = Conn::open(server.addr).await;
        for content_type in [
            "application/grpc-web-text",
            "application/grpc-web-text+proto",
        ] {
            // The request in chunks of 2 bytes: every chunk but the last is padded.
            let body = text_chunks(&frame(&health_request("")), 2);
            assert!(body[..body.len() - 4].contains(&b'='));
            let request = post(CHECK, content_type).body(()).expect("request");
            let answer = conn.exchange(request, &body).await;
            assert_eq!(answer.headers["content-type"], content_type);
            assert_eq!(answer.messages, vec![SERVING.to_vec()]);
            assert_eq!(answer.trailers["grpc-status"], "0");
            assert!(!answer.http_trailers);
        }
        server.shutdown().await;
    })
    .await
}

#[tokio::test]
async fn broken_base64_is_internal() {
    within(TEST_PATIENCE, "the test", async {
        let server = TestServer::default().await;
        let mut conn = Conn::open(server.addr).await;
        let request = post(CHECK, "application/grpc-web-text")
            .body(())
            .expect("request");
        let answer = conn.exchange(request, b"AAAA!AAA").await;
        assert_eq!(answer.grpc_status(), Some(13), "{answer:?}");
        server.shutdown().await;
    })
    .await
}

#[tokio::test]
async fn server_stream_sends_messages_then_the_status_in_the_body() {
    within(TEST_PATIENCE, "the test", async {
        let server = TestServer::default().await;
        let mut conn = Conn::open(server.addr).await;
        // Watch never ends by itself: the deadline ends it, after the first status.
        let request = post(WATCH, "application/grpc-web+proto")
            .header("grpc-timeout", "300m")
            .body(())
            .expect("request");
        let answer = conn.exchange(request, &frame(&health_request(""))).await;
        assert_eq!(answer.messages, vec![SERVING.to_vec()]);
        assert_eq!(answer.trailers["grpc-status"], "4", "{answer:?}");
        assert!(answer.trailers.contains_key("grpc-message"));
        assert!(!answer.http_trailers);
        server.shutdown().await;
    })
    .await
}

#[tokio::test]
async fn an_error_before_any_message_may_be_trailers_only() {
    within(TEST_PATIENCE, "the test", async {
        let server = TestServer::default().await;
        let mut conn = Conn::open(server.addr).await;
        let request = post("/grpc.health.v1.Health/Nope", "application/grpc-web+proto")
            .body(())
            .expect("request");
        let answer = conn.exchange(request, &frame(&[])).await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.headers["content-type"], "application/grpc-web+proto");
        assert_eq!(answer.headers["grpc-status"], "12");
        assert!(answer.messages.is_empty() && !answer.trailers_frame);
        let request = post(CHECK, "application/grpc-web")
            .body(())
            .expect("request");
        let answer = conn
            .exchange(request, &frame(&health_request("nope")))
            .await;
        assert_eq!(answer.grpc_status(), Some(5), "{answer:?}");
        server.shutdown().await;
    })
    .await
}

#[tokio::test]
async fn lookalike_content_types_are_refused_with_415() {
    within(TEST_PATIENCE, "the test", async {
        let server = TestServer::default().await;
        let mut conn = Conn::open(server.addr).await;
        for content_type in [
            "application/grpcfoo",
            "application/grpc-webfoo",
            "text/plain",
        ] {
            let request = post(CHECK, content_type).body(()).expect("request");
            let answer = conn.exchange(request, &frame(&health_request(""))).await;
            assert_eq!(answer.status, 415, "{content_type}");
        }
        // gRPC itself still gets HTTP/2 trailers.
        let request = post(CHECK, "application/grpc").body(()).expect("request");
        let answer = conn.exchange(request, &frame(&health_request(""))).await;
        assert!(answer.http_trailers && !answer.trailers_frame);
        server.shutdown().await;
    })
    .await
}

#[tokio::test]
async fn the_page_is_served_at_slash_and_other_gets_are_405() {
    within(TEST_PATIENCE, "the test", async {
        let server = TestServer::default().await;
        let mut conn = Conn::open(server.addr).await;
        let get = |path: &str| {
            http::Request::get(format!("http://127.0.0.1{path}"))
                .body(())
                .expect("request")
        };
        let answer = conn.exchange_raw(get("/")).await;
        assert_eq!(answer.0, 200);
        assert!(answer.1["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
        assert_eq!(answer.2, h2chat::services::page::PAGES[0].body);
        let answer = conn.exchange_raw(get("/app.js")).await;
        assert_eq!(answer.0, 200);
        let answer = conn.exchange_raw(get("/chat.v1.ChatService/Members")).await;
        assert_eq!(answer.0, 405);
        server.shutdown().await;
    })
    .await
}
