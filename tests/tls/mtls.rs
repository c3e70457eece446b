//! Client certificates (mTLS): required and optional, the certificate's identity as the call's
//! peer identity and, without tokens, as the chat member's name.

use h2chat::grpc::client::{CallOptions, Channel, ClientCall};
use h2chat::grpc::server::ClientAuth;
use h2chat::grpc::{Code, Status};
use h2chat::pb::chat::v1::{ChatMessage, EventKind};
use h2chat::services::app::AppConfig;

use crate::harness::{connect, health, join_chat, require_tool, within, Pki, TlsServer};
use crate::pki::{write_client, Ca};

/// Joins `room` as `sender`, with no token.
async fn join(channel: &Channel, room: &str, sender: &str) -> Result<ClientCall, Status> {
    join_chat(channel, CallOptions::default(), room, sender).await
}

async fn joined_name(call: &mut ClientCall) -> String {
    let event = within("the join event", call.recv::<ChatMessage>())
        .await
        .expect("an event")
        .expect("an event");
    assert_eq!(event.kind, EventKind::Joined as i32);
    event.sender_id
}

/// A channel to `server` with `tls`, or the error of its first call.
async fn try_health(
    server: &TlsServer,
    tls: &h2chat::grpc::client::ClientTls,
) -> Result<(), String> {
    let channel = within(
        "connect",
        Channel::connect_tls(&server.target(), tls, Default::default()),
    )
    .await
    .map_err(|e| e.to_string())?;
    health(&channel, CallOptions::default())
        .await
        .map(|_| ())
        .map_err(|s| s.to_string())
}

#[tokio::test]
async fn required_client_certificates_refuse_clients_without_one() {
    let pki = Pki::new("mtls-required");
    let server = TlsServer::start(AppConfig::default(), pki.tls_files(ClientAuth::Required)).await;
    assert!(
        try_health(&server, &pki.client()).await.is_err(),
        "no certificate, no service"
    );
    let stranger = Ca::new("another CA").client("eve", None);
    let (cert, key) = write_client(&pki.dir, "eve", &stranger);
    assert!(
        try_health(&server, &pki.client_with(&cert, &key))
            .await
            .is_err(),
        "a certificate from another CA is refused"
    );
    let alice = pki
        .ca
        .client("alice-cn", Some("spiffe://h2chat.test/alice"));
    let (cert, key) = write_client(&pki.dir, "alice", &alice);
    let channel = connect(server.addr, &pki.client_with(&cert, &key)).await;
    health(&channel, CallOptions::default())
        .await
        .expect("served with a certificate");
    // The URI SAN is the identity, and without tokens it is the member's name.
    let mut call = join(&channel, "lobby", "")
        .await
        .expect("joins without a sender_id");
    assert_eq!(joined_name(&mut call).await, "spiffe://h2chat.test/alice");
    let denied = join(&channel, "lobby", "bob")
        .await
        .err()
        .unwrap_or_else(|| panic!("denied"));
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    // grpcurl with the same pair.
    let out = within(
        "grpcurl list",
        tokio::process::Command::new(require_tool("grpcurl"))
            .arg("-cacert")
            .arg(&pki.files.ca)
            .arg("-cert")
            .arg(&cert)
            .arg("-key")
            .arg(&key)
            .args([&server.target(), "list"])
            .output(),
    )
    .await
    .expect("grpcurl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    server.shutdown().await;
}

#[tokio::test]
async fn optional_client_certificates_name_those_who_present_one() {
    let pki = Pki::new("mtls-optional");
    let server = TlsServer::start(AppConfig::default(), pki.tls_files(ClientAuth::Optional)).await;
    // Without a certificate: served, and the name is whatever the client says.
    let anonymous = connect(server.addr, &pki.client()).await;
    let mut call = join(&anonymous, "lobby", "guest").await.expect("joins");
    assert_eq!(joined_name(&mut call).await, "guest");
    let empty = join(&anonymous, "lobby", "")
        .await
        .err()
        .unwrap_or_else(|| panic!("a name is needed"));
    assert_eq!(empty.code(), Code::InvalidArgument);
    // With one: the common name, as there is no SAN.
    let carol = pki.ca.client("carol", None);
    let (cert, key) = write_client(&pki.dir, "carol", &carol);
    let channel = connect(server.addr, &pki.client_with(&cert, &key)).await;
    let mut call = join(&channel, "carols", "carol")
        .await
        .expect("carol joins as carol");
    assert_eq!(joined_name(&mut call).await, "carol");
    let denied = join(&channel, "carols", "guest2")
        .await
        .err()
        .unwrap_or_else(|| panic!("denied"));
    assert_eq!(denied.code(), Code::PermissionDenied);
    // A certificate from another CA is refused even when certificates are optional.
    let stranger = Ca::new("another CA").client("eve", None);
    let (cert, key) = write_client(&pki.dir, "eve", &stranger);
    assert!(try_health(&server, &pki.client_with(&cert, &key))
        .await
        .is_err());
    server.shutdown().await;
}

#[test]
fn the_identity_is_the_uri_san_else_the_dns_san_else_the_common_name() {
    use h2chat::grpc::server::tls::certificate_identity;
    let ca = Ca::new("ids");
    let uri = ca.client("cn", Some("spiffe://x/y"));
    assert_eq!(
        certificate_identity(&uri.cert_der).as_deref(),
        Some("spiffe://x/y")
    );
    let cn = ca.client("just-cn", None);
    assert_eq!(
        certificate_identity(&cn.cert_der).as_deref(),
        Some("just-cn")
    );
    let server = ca.server();
    assert_eq!(
        certificate_identity(&server.cert_der).as_deref(),
        Some("localhost")
    );
    assert_eq!(certificate_identity(b"not a certificate"), None);
}
