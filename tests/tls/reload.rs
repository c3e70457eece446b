//! Reloading the certificate without a restart: SIGHUP to the real binary; new connections get
//! the new certificate, open ones keep going, a bad new pair keeps the old one.

use h2chat::grpc::client::{CallOptions, Channel, ClientTls};
use tokio::net::TcpStream;

use crate::harness::{health, within, Pki, ServerProcess};

/// A temp path as the `&str` a command line takes.
pub fn path(p: &std::path::Path) -> &str {
    p.to_str().expect("temp paths are UTF-8")
}

/// A channel to `addr` and the DER of the certificate the server presented on it.
async fn connect_seeing(addr: std::net::SocketAddr, tls: &ClientTls) -> (Channel, Vec<u8>) {
    let tcp = TcpStream::connect(addr).await.expect("tcp");
    let stream = within("TLS handshake", tls.connect(tcp, "127.0.0.1"))
        .await
        .expect("TLS handshake");
    let leaf = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.as_ref().to_vec())
        .expect("a server certificate");
    let channel = within(
        "HTTP/2 handshake",
        Channel::connect_io_to(stream, &addr.to_string(), true, Default::default()),
    )
    .await
    .expect("HTTP/2 handshake");
    (channel, leaf)
}

#[tokio::test]
async fn sighup_reloads_the_certificate_for_new_connections_only() {
    let pki = Pki::new("reload");
    let first = pki.ca.server();
    std::fs::write(&pki.files.cert, &first.cert_pem).expect("write");
    std::fs::write(&pki.files.key, &first.key_pem).expect("write");
    let mut server = ServerProcess::start(&[
        "--tls-cert",
        path(&pki.files.cert),
        "--tls-key",
        path(&pki.files.key),
    ])
    .await;
    let client = pki.client();
    let (old, seen) = connect_seeing(server.addr, &client).await;
    assert_eq!(seen, first.cert_der, "the first certificate");
    health(&old, CallOptions::default()).await.expect("served");

    let second = pki.ca.server();
    std::fs::write(&pki.files.cert, &second.cert_pem).expect("write");
    std::fs::write(&pki.files.key, &second.key_pem).expect("write");
    server.signal(libc::SIGHUP);
    server
        .expect_log("the reload", |l| l.contains("TLS certificate reloaded"))
        .await;
    let (new, seen) = connect_seeing(server.addr, &client).await;
    assert_eq!(
        seen, second.cert_der,
        "a new connection sees the new certificate"
    );
    assert_ne!(second.cert_der, first.cert_der);
    health(&new, CallOptions::default())
        .await
        .expect("new connection served");
    health(&old, CallOptions::default())
        .await
        .expect("the old connection keeps going");

    // A key that does not belong to the certificate: refused, the second pair stays.
    let third = pki.ca.server();
    std::fs::write(&pki.files.cert, &third.cert_pem).expect("write");
    std::fs::write(&pki.files.key, &second.key_pem).expect("write");
    server.signal(libc::SIGHUP);
    server
        .expect_log("the refused reload", |l| {
            l.contains("TLS certificate not reloaded")
        })
        .await;
    let (after_bad, seen) = connect_seeing(server.addr, &client).await;
    assert_eq!(
        seen, second.cert_der,
        "a bad pair keeps the previous certificate"
    );
    health(&after_bad, CallOptions::default())
        .await
        .expect("served");
    // A corrupt file: the same.
    std::fs::write(&pki.files.key, "-----BEGIN PRIVATE KEY-----\ngarbage\n").expect("write");
    server.signal(libc::SIGHUP);
    server
        .expect_log("the refused reload", |l| {
            l.contains("TLS certificate not reloaded")
        })
        .await;
    let (_, seen) = connect_seeing(server.addr, &client).await;
    assert_eq!(seen, second.cert_der);
    health(&old, CallOptions::default())
        .await
        .expect("the first connection still goes");
}
