//! CORS: which browser origins may call the server (`--web-origin`; by default only its own).

use h2chat::services::app::AppConfig;
use http::Request;

use crate::support::{within, TestServer, TEST_PATIENCE};
use crate::webwire::{frame, post, Conn};

const CHECK: &str = "/grpc.health.v1.Health/Check";

fn preflight(origin: &str) -> Request<()> {
    Request::builder()
        .method("OPTIONS")
        .uri(format!("http://127.0.0.1{CHECK}"))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type,x-grpc-web,x-user-agent,chat-member-key,x-not-allowed",
        )
        .body(())
        .expect("request")
}

#[tokio::test]
async fn preflight_from_an_allowed_origin_succeeds_and_others_are_refused() {
    within(TEST_PATIENCE, "the test", async {
        let server = TestServer::start(AppConfig {
            web_origins: vec!["https://app.example".into()],
            ..AppConfig::default()
        })
        .await;
        let mut conn = Conn::open(server.addr).await;
        let answer = conn.exchange(preflight("https://app.example"), &[]).await;
        assert_eq!(answer.status, 204, "{answer:?}");
        let h = &answer.headers;
        assert_eq!(h["access-control-allow-origin"], "https://app.example");
        assert_eq!(h["access-control-allow-methods"], "POST");
        assert_eq!(h["access-control-max-age"], "600", "the preflight cache");
        assert_eq!(
            h["access-control-allow-headers"],
            "content-type, x-grpc-web, x-user-agent, chat-member-key"
        );
        let exposed = h["access-control-expose-headers"].to_str().expect("ascii");
        for name in [
            "grpc-status",
            "grpc-message",
            "chat-joined-seq",
            "chat-member-key",
        ] {
            assert!(
                exposed.split(", ").any(|e| e == name),
                "{name} not in {exposed}"
            );
        }
        for origin in ["https://evil.example", "http://app.example", "null"] {
            let answer = conn.exchange(preflight(origin), &[]).await;
            assert_eq!(answer.status, 403, "{origin}");
            assert!(!answer.headers.contains_key("access-control-allow-origin"));
        }
        server.shutdown().await;
    })
    .await
}

#[tokio::test]
async fn by_default_only_the_servers_own_origin_may_call() {
    within(TEST_PATIENCE, "the test", async {
        let server = TestServer::default().await;
        let own = format!("https://{}", server.addr);
        let mut conn = Conn::open(server.addr).await;
        let mut request = preflight(&own);
        *request.uri_mut() = format!("https://{}{CHECK}", server.addr)
            .parse()
            .expect("uri");
        let answer = conn.exchange(request, &[]).await;
        assert_eq!(answer.status, 204, "{answer:?}");
        let answer = conn.exchange(preflight("https://app.example"), &[]).await;
        assert_eq!(answer.status, 403);
        // A call from a refused origin never starts; one from the own origin is answered with it.
        let request = post(CHECK, "application/grpc-web")
            .header("origin", "https://app.example")
            .body(())
            .expect("request");
        let answer = conn.exchange(request, &frame(&[])).await;
        assert_eq!(answer.status, 403);
        let request = http::Request::post(format!("https://{}{CHECK}", server.addr))
            .header("content-type", "application/grpc-web")
            .header("origin", &own)
            .body(())
            .expect("request");
        let answer = conn.exchange(request, &frame(&[])).await;
        assert_eq!(answer.grpc_status(), Some(0));
        assert_eq!(answer.headers["access-control-allow-origin"], own.as_str());
        server.shutdown().await;
    })
    .await
}
