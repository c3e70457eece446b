//! What TLS and tokens count, scraped from the real binary's `--metrics-addr`: a failed TLS
//! handshake, calls refused for a missing or an invalid token.

use h2chat::grpc::client::{CallOptions, Channel};
use h2chat::grpc::Code;
use h2chat::pb::chat::v1::{MembersRequest, MembersResponse};

use crate::harness::{connect, health, within, Pki, ServerProcess};
use crate::reload::path;
use crate::scrape::Scrape;
use crate::tokens::{bearer, SECRET};

#[tokio::test]
async fn tls_failures_and_token_refusals_are_counted() {
    let pki = Pki::new("metrics");
    let secret = pki.dir.write("jwt.secret", SECRET);
    let server = ServerProcess::start(&[
        "--tls-cert",
        path(&pki.files.cert),
        "--tls-key",
        path(&pki.files.key),
        "--auth-hs256-secret-file",
        path(&secret),
        "--metrics-addr",
        "127.0.0.1:0",
    ])
    .await;
    // The port the server got (logged before "listening"), not one picked and released first.
    let metrics = server.logged_addr("serving metrics");
    let fresh = Scrape::get(metrics).await;
    assert_eq!(fresh.must("h2chat_tls_handshake_failures_total", &[]), 0.0);
    // A plaintext HTTP/2 client on the TLS port.
    if let Ok(plain) = within("plaintext connect", Channel::connect(server.addr)).await {
        let _ = health(&plain, CallOptions::default()).await;
    }
    let channel = connect(server.addr, &pki.client()).await;
    let members = |options: CallOptions| {
        let channel = channel.clone();
        async move {
            within(
                "Members",
                channel.unary::<_, MembersResponse>(
                    "/chat.v1.ChatService/Members",
                    &MembersRequest {
                        room_id: "r".into(),
                    },
                    options,
                ),
            )
            .await
        }
    };
    let missing = members(CallOptions::default()).await;
    assert_eq!(missing.expect_err("no token").code(), Code::Unauthenticated);
    let invalid = members(bearer("Bearer not.a.token")).await;
    assert_eq!(
        invalid.expect_err("bad token").code(),
        Code::Unauthenticated
    );
    let s = Scrape::get(metrics).await;
    assert_eq!(s.must("h2chat_tls_handshake_failures_total", &[]), 1.0);
    for reason in ["missing", "invalid"] {
        assert_eq!(
            s.must("h2chat_auth_token_rejections_total", &[("reason", reason)]),
            1.0,
            "{reason}"
        );
    }
    assert_eq!(
        s.must(
            "h2chat_calls_refused_total",
            &[("reason", "unauthenticated")]
        ),
        2.0
    );
}
