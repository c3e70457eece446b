//! Serving over TLS: ALPN `h2`, real clients (h2chat's own, grpcurl, grpcio, `h2chat chat`), and
//! what is refused without harming anyone else.

use std::ffi::OsStr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use h2chat::grpc::client::{CallOptions, Channel};
use h2chat::grpc::server::ClientAuth;
use h2chat::grpc::Code;
use h2chat::services::app::AppConfig;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{connect, health, require_tool, within, Pki, TlsServer};

/// A rustls client trusting the test CA that offers these ALPN protocols.
fn raw_client(pki: &Pki, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    raw_client_with(pki, alpn, rustls::DEFAULT_VERSIONS)
}

/// [`raw_client`] speaking only the given TLS versions.
fn raw_client_with(
    pki: &Pki,
    alpn: &[&[u8]],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in h2chat::grpc::tls::load_certs(&pki.files.ca, "CA").expect("CA") {
        roots.add(cert).expect("root");
    }
    let mut config =
        rustls::ClientConfig::builder_with_provider(h2chat::grpc::tls::crypto_provider())
            .with_protocol_versions(versions)
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

fn localhost() -> ServerName<'static> {
    ServerName::try_from("localhost").expect("name")
}

#[tokio::test]
async fn grpc_over_tls_negotiates_h2_and_serves_calls() {
    let pki = Pki::new("serves");
    let server = TlsServer::start(AppConfig::default(), pki.tls_files(ClientAuth::None)).await;
    let channel = connect(server.addr, &pki.client()).await;
    let reply = health(&channel, CallOptions::default())
        .await
        .expect("health");
    assert_eq!(reply.status, 1, "SERVING");
    // The certificate is for 127.0.0.1 and localhost: both names check.
    let by_name = pki.client().with_server_name("localhost");
    let channel = connect(server.addr, &by_name).await;
    health(&channel, CallOptions::default())
        .await
        .expect("health by name");
    server.shutdown().await;
}

#[tokio::test]
async fn tls_1_2_and_1_3_both_negotiate_h2() {
    let pki = Pki::new("versions");
    let server = TlsServer::start(AppConfig::default(), pki.tls_files(ClientAuth::None)).await;
    for (version, name) in [
        (&rustls::version::TLS12, "1.2"),
        (&rustls::version::TLS13, "1.3"),
    ] {
        let tcp = TcpStream::connect(server.addr).await.expect("tcp");
        let connector = raw_client_with(&pki, &[b"h2"], &[version]);
        let stream = within("handshake", connector.connect(localhost(), tcp))
            .await
            .unwrap_or_else(|e| panic!("TLS {name}: {e}"));
        let conn = stream.get_ref().1;
        assert_eq!(conn.alpn_protocol(), Some(&b"h2"[..]), "TLS {name}");
        assert_eq!(conn.protocol_version(), Some(version.version), "TLS {name}");
        let channel = within(
            "HTTP/2 handshake",
            Channel::connect_io_to(stream, &server.target(), true, Default::default()),
        )
        .await
        .expect("HTTP/2");
        health(&channel, CallOptions::default())
            .await
            .unwrap_or_else(|e| panic!("TLS {name}: {e:?}"));
    }
    server.shutdown().await;
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_certificate_cannot_connect() {
    let pki = Pki::new("untrusted");
    let other = Pki::new("other-ca");
    let server = TlsServer::start(AppConfig::default(), pki.tls_files(ClientAuth::None)).await;
    let tried = within(
        "untrusted connect",
        Channel::connect_tls(&server.target(), &other.client(), Default::default()),
    )
    .await;
    let err = tried.expect_err("a certificate from an unknown CA is refused");
    assert!(err.to_string().contains("tls"), "{err}");
    server.shutdown().await;
}

#[tokio::test]
async fn grpcurl_lists_services_over_tls_with_cacert() {
    let pki = Pki::new("grpcurl");
    let server = TlsServer::start(AppConfig::default(), pki.tls_files(ClientAuth::None)).await;
    let out = within(
        "grpcurl list",
        tokio::process::Command::new(require_tool("grpcurl"))
            .arg("-cacert")
            .arg(&pki.files.ca)
            .args([&server.target(), "list"])
            .output(),
    )
    .await
    .expect("run grpcurl");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "grpcurl failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for service in ["chat.v1.ChatService", "grpc.health.v1.Health"] {
        assert!(
            stdout.lines().any(|l| l == service),
            "{service} missing:\n{stdout}"
        );
    }
    server.shutdown().await;
}

#[tokio::test]
async fn a_plaintext_client_on_the_tls_port_fails_and_the_server_keeps_serving() {
    let pki = Pki::new("plain-on-tls");
    let server = TlsServer::start(AppConfig::default(), pki.tls_files(ClientAuth::None)).await;
    // The HTTP/2 preface is not a TLS ClientHello: the server closes the connection.
    let plain = within("plaintext connect", Channel::connect(server.addr)).await;
    if let Ok(plain) = plain {
        let err = health(&plain, CallOptions::default())
            .await
            .expect_err("plaintext on the TLS port must fail");
        assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    }
    let channel = connect(server.addr, &pki.client()).await;
    health(&channel, CallOptions::default())
        .await
        .expect("a TLS client is still served");
    server.shutdown().await;
}

#[tokio::test]
async fn an_http1_alpn_client_is_refused_in_the_handshake() {
    let pki = Pki::new("http1");
    let server = TlsServer::start(AppConfig::default(), pki.tls_files(ClientAuth::None)).await;
    let tcp = TcpStream::connect(server.addr).await.expect("tcp");
    let handshake = within(
        "http/1.1 handshake",
        raw_client(&pki, &[b"http/1.1"]).connect(localhost(), tcp),
    )
    .await;
    let err = handshake.expect_err("a client offering only http/1.1 is refused");
    assert!(
        err.to_string().to_lowercase().contains("application"),
        "expected a no_application_protocol alert, got {err}"
    );
    let channel = connect(server.addr, &pki.client()).await;
    health(&channel, CallOptions::default())
        .await
        .expect("still serving");
    server.shutdown().await;
}

#[tokio::test]
async fn a_tls_client_without_alpn_is_closed_after_the_handshake() {
    let pki = Pki::new("no-alpn");
    let server = TlsServer::start(AppConfig::default(), pki.tls_files(ClientAuth::None)).await;
    let tcp = TcpStream::connect(server.addr).await.expect("tcp");
    let mut stream = within("handshake", raw_client(&pki, &[]).connect(localhost(), tcp))
        .await
        .expect("the handshake itself succeeds without ALPN");
    // Whatever the client sends, the server closes: it will not guess the protocol.
    let _ = stream.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
    let mut buf = [0u8; 64];
    let read = within("the server to close", stream.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "expected the connection closed, read {read:?}"
    );
    let channel = connect(server.addr, &pki.client()).await;
    health(&channel, CallOptions::default())
        .await
        .expect("still serving");
    server.shutdown().await;
}

#[tokio::test]
async fn a_silent_client_is_closed_at_the_handshake_timeout() {
    let pki = Pki::new("silent");
    let mut config = AppConfig::default();
    config.server.handshake_timeout = Duration::from_millis(300);
    let server = TlsServer::start(config, pki.tls_files(ClientAuth::None)).await;
    let mut tcp = TcpStream::connect(server.addr).await.expect("tcp");
    let mut buf = [0u8; 16];
    let read = within("the server to drop a silent client", tcp.read(&mut buf)).await;
    assert!(matches!(read, Ok(0) | Err(_)), "read {read:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn plaintext_is_served_only_on_its_own_address() {
    let pki = Pki::new("plain-addr");
    let server = TlsServer::start_with(
        h2chat::services::app::build(AppConfig::default()),
        pki.tls_files(ClientAuth::None),
        true,
    )
    .await;
    let plain_addr = server.plain_addr.expect("a plaintext address");
    let plain = within("plaintext connect", Channel::connect(plain_addr))
        .await
        .expect("plaintext connect");
    health(&plain, CallOptions::default())
        .await
        .expect("plaintext health");
    let tls = connect(server.addr, &pki.client()).await;
    health(&tls, CallOptions::default())
        .await
        .expect("TLS health");
    server.shutdown().await;
}

/// The interop client (grpcio over the gRPC C core) with `grpc.ssl_channel_credentials`, every
/// server-side case in one run.
#[tokio::test]
async fn grpcio_runs_every_interop_case_over_tls() {
    let python = require_tool("python3");
    let pki = Pki::new("interop");
    // The interop cases call grpc.testing.TestService, served only when asked for.
    let config = AppConfig {
        interop: true,
        ..AppConfig::default()
    };
    let server = TlsServer::start(config, pki.tls_files(ClientAuth::None)).await;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/client.py");
    let stubs = pki.dir.path("stubs");
    let out = tokio::time::timeout(
        Duration::from_secs(300),
        tokio::process::Command::new(python)
            .arg(&script)
            .arg(server.target())
            .arg("all")
            .arg("--stubs")
            .arg(&stubs)
            .arg("--tls-ca")
            .arg(&pki.files.ca)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the interop client hung")
    .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "interop over TLS failed:\n{stdout}{stderr}"
    );
    assert_eq!(
        stdout.lines().filter(|l| l.ends_with(": PASS")).count(),
        18,
        "every case passes:\n{stdout}"
    );
    server.shutdown().await;
}

/// `h2chat chat --ca`, scripted: joins over TLS, posts, sees its own post come back, leaves.
#[tokio::test]
async fn h2chat_chat_over_tls_posts_and_sees_its_post() {
    let pki = Pki::new("chat");
    let server = TlsServer::start(AppConfig::default(), pki.tls_files(ClientAuth::None)).await;
    let target = server.target();
    let args = [
        "--addr", &target, "--room", "tls-room", "--name", "alice", "--ca",
    ];
    let mut args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    args.push(pki.files.ca.as_os_str());
    let (code, out, err) = crate::cli::chat(&args, "hello over tls\n").await;
    assert_eq!(code, Some(0), "h2chat chat failed: {out}{err}");
    assert!(out.contains("alice: hello over tls"), "{out}");
    server.shutdown().await;
}
