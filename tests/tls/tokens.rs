//! Bearer tokens: every bad token is UNAUTHENTICATED before any handler runs (a counting service
//! proves the handler never started), good tokens name the chat member, and a token that expires
//! ends the call.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use h2chat::auth::{keys, AuthConfig, JwtAuthenticator};
use h2chat::grpc::client::{CallOptions, Channel};
use h2chat::grpc::server::ClientAuth;
use h2chat::grpc::{BoxFuture, Call, CallResult, Code, Service, Status};
use h2chat::pb::chat::v1::ChatMessage;
use h2chat::pb::grpc::health::v1::{HealthCheckRequest, HealthCheckResponse};
use h2chat::services::app::{self, AppConfig};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use crate::harness::{connect, health, within, Pki, TlsServer};

/// The secret every HS256 test server checks with.
pub const SECRET: &[u8] = b"a test secret that is long enough for HS256";
/// The service the counting handler answers as; it needs a token.
const COUNTED: &str = "test.Counted";
const COUNTED_PATH: &str = "/test.Counted/Check";

/// Counts the calls its handler started.
struct Counted(Arc<AtomicUsize>);

impl Service for Counted {
    fn name(&self) -> &'static str {
        COUNTED
    }

    fn call<'a>(&'a self, _method: &'a str, call: &'a Call) -> Option<BoxFuture<'a, CallResult>> {
        Some(Box::pin(async move {
            self.0.fetch_add(1, Ordering::SeqCst);
            let _: HealthCheckRequest = call.recv_one().await?;
            call.send(&HealthCheckResponse { status: 1 }).await
        }))
    }
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Claims for `sub` valid for an hour.
pub fn claims(sub: &str) -> Value {
    json!({ "sub": sub, "exp": now() + 3600 })
}

/// An HS256 token over `claims` signed with `secret`.
pub fn hs256(secret: &[u8], claims: &Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .expect("sign")
}

/// Call options carrying `authorization: <value>`.
pub fn bearer(value: &str) -> CallOptions {
    let mut options = CallOptions::default();
    options
        .metadata
        .insert("authorization", value)
        .expect("authorization metadata");
    options
}

/// Token checking with `keys`, no issuer or audience, no leeway, on the default services and the
/// counted one.
pub fn auth_config(keys: Vec<keys::Key>) -> AuthConfig {
    let mut services: Vec<String> = h2chat::auth::DEFAULT_SERVICES
        .iter()
        .map(|s| s.to_string())
        .collect();
    services.push(COUNTED.to_string());
    AuthConfig {
        keys,
        issuer: None,
        audience: None,
        leeway: Duration::ZERO,
        services,
    }
}

/// A TLS server checking tokens as `auth` says, with the counted service.
pub struct AuthServer {
    pub server: TlsServer,
    pub pki: Pki,
    handled: Arc<AtomicUsize>,
}

impl AuthServer {
    pub async fn start(name: &str, auth: AuthConfig) -> AuthServer {
        let pki = Pki::new(name);
        let authenticator = JwtAuthenticator::new(auth).expect("authenticator");
        let config = AppConfig {
            auth: Some(Arc::new(authenticator)),
            ..AppConfig::default()
        };
        let mut server = app::build(config);
        let handled = Arc::new(AtomicUsize::new(0));
        server.add_service(Arc::new(Counted(handled.clone())));
        let server = TlsServer::start_with(server, pki.tls_files(ClientAuth::None), false).await;
        AuthServer {
            server,
            pki,
            handled,
        }
    }

    /// An HS256 server.
    pub async fn hs256(name: &str) -> AuthServer {
        let dir = crate::pki::TempDir::new(name);
        let secret = dir.write("secret", SECRET);
        AuthServer::start(
            name,
            auth_config(vec![keys::hs256_secret(&secret).expect("secret")]),
        )
        .await
    }

    pub async fn channel(&self) -> Channel {
        connect(self.server.addr, &self.pki.client()).await
    }

    /// How many times the counted handler started.
    pub fn handled(&self) -> usize {
        self.handled.load(Ordering::SeqCst)
    }

    /// Calls the counted service with `options`.
    pub async fn counted(&self, channel: &Channel, options: CallOptions) -> Result<(), Status> {
        within(
            "counted call",
            channel.unary::<_, HealthCheckResponse>(
                COUNTED_PATH,
                &HealthCheckRequest::default(),
                options,
            ),
        )
        .await
        .map(|_| ())
    }
}

/// Asserts the call was refused UNAUTHENTICATED with a message containing `why`.
fn assert_unauthenticated(result: Result<(), Status>, why: &str) {
    let status = result.expect_err("the call must be refused");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(
        status.message().contains(why),
        "expected {why:?} in {:?}",
        status.message()
    );
}

/// `header.payload.signature` with the parts given as JSON (header, payload) and raw signature.
fn forge(header: &Value, payload: &Value, signature: &str) -> String {
    format!(
        "{}.{}.{signature}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(payload.to_string())
    )
}

#[tokio::test]
async fn bad_tokens_are_unauthenticated_before_any_handler_runs() {
    let s = AuthServer::hs256("bad-tokens").await;
    let channel = s.channel().await;
    let good = hs256(SECRET, &claims("alice"));
    let parts: Vec<&str> = good.split('.').collect();
    let tampered_payload = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(claims("mallory").to_string()),
        parts[2]
    );
    let mut sig = parts[2].as_bytes().to_vec();
    sig[10] = if sig[10] == b'A' { b'B' } else { b'A' };
    let tampered_sig = format!(
        "{}.{}.{}",
        parts[0],
        parts[1],
        String::from_utf8_lossy(&sig)
    );
    let none = forge(&json!({"alg": "none", "typ": "JWT"}), &claims("alice"), "");
    let expired = hs256(SECRET, &json!({"sub": "alice", "exp": now() - 120}));
    let early = hs256(
        SECRET,
        &json!({"sub": "alice", "exp": now() + 3600, "nbf": now() + 1800}),
    );
    let other_secret = hs256(
        b"another secret, also long enough for HS256!",
        &claims("alice"),
    );
    let no_exp = hs256(SECRET, &json!({"sub": "alice"}));
    let string_nbf = hs256(
        SECRET,
        &json!({"sub": "alice", "exp": now() + 3600, "nbf": "99999999999"}),
    );
    let cases: Vec<(Option<String>, &str)> = vec![
        (None, "missing token"),
        (Some("Basic YWxpY2U6cHc=".into()), "expected Bearer"),
        (Some("Bearer garbage".into()), "malformed token"),
        (Some("Bearer a.b.c".into()), "malformed token"),
        (
            Some(format!("Bearer {tampered_payload}")),
            "bad token signature",
        ),
        (
            Some(format!("Bearer {tampered_sig}")),
            "bad token signature",
        ),
        (
            Some(format!("Bearer {other_secret}")),
            "bad token signature",
        ),
        (
            Some(format!("Bearer {none}")),
            "wrong token algorithm \"none\"",
        ),
        (Some(format!("Bearer {expired}")), "token expired"),
        (Some(format!("Bearer {early}")), "not yet valid"),
        (Some(format!("Bearer {no_exp}")), "exp"),
        (Some(format!("Bearer {string_nbf}")), "nbf"),
        (
            Some(format!(
                "Bearer {}",
                "a".repeat(h2chat::auth::MAX_TOKEN_BYTES)
            )),
            "longer than 8192 bytes",
        ),
    ];
    for (value, why) in &cases {
        let options = value.as_deref().map(bearer).unwrap_or_default();
        assert_unauthenticated(s.counted(&channel, options).await, why);
    }
    assert_eq!(s.handled(), 0, "no handler may run for a refused token");
    // A chat join is refused the same way, and nobody joins the room.
    let mut call = within(
        "start chat",
        channel.start(
            "/chat.v1.ChatService/Chat",
            bearer(&format!("Bearer {expired}")),
        ),
    )
    .await
    .expect("start");
    let _ = call
        .send(&ChatMessage {
            room_id: "r".into(),
            sender_id: "alice".into(),
            ..Default::default()
        })
        .await;
    let refused = within("chat refusal", call.headers())
        .await
        .expect_err("refused");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    // The good token works, and the handler runs once.
    s.counted(&channel, bearer(&format!("Bearer {good}")))
        .await
        .expect("a good token is served");
    assert_eq!(s.handled(), 1);
    s.server.shutdown().await;
}

#[tokio::test]
async fn a_refusal_is_trailers_only() {
    let s = AuthServer::hs256("trailers-only").await;
    let channel = s.channel().await;
    let request = http::Request::post(COUNTED_PATH)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("request");
    let (response, _send) = within("send", channel.send_request(request, true))
        .await
        .expect("send");
    let response = within("response", response).await.expect("response");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers().get("grpc-status").map(|v| v.as_bytes()),
        Some(&b"16"[..]),
        "{:?}",
        response.headers()
    );
    assert!(
        response.body().is_end_stream(),
        "no body after a Trailers-Only refusal"
    );
    assert_eq!(s.handled(), 0);
    s.server.shutdown().await;
}

#[tokio::test]
async fn a_token_expired_within_the_leeway_is_accepted_and_one_past_it_is_not() {
    let dir = crate::pki::TempDir::new("leeway");
    let secret = dir.write("secret", SECRET);
    let mut auth = auth_config(vec![keys::hs256_secret(&secret).expect("secret")]);
    auth.leeway = std::time::Duration::from_secs(300);
    let s = AuthServer::start("leeway", auth).await;
    let channel = s.channel().await;
    let expired = |ago: i64| {
        let t = hs256(SECRET, &json!({"sub": "a", "exp": now() - ago}));
        bearer(&format!("Bearer {t}"))
    };
    assert_unauthenticated(s.counted(&channel, expired(400)).await, "token expired");
    assert_eq!(s.handled(), 0);
    s.counted(&channel, expired(120))
        .await
        .expect("expired 120 s ago, within a leeway of 300 s");
    s.server.shutdown().await;
}

#[tokio::test]
async fn issuer_and_audience_are_checked_when_configured() {
    let dir = crate::pki::TempDir::new("iss-aud");
    let secret = dir.write("secret", SECRET);
    let mut auth = auth_config(vec![keys::hs256_secret(&secret).expect("secret")]);
    auth.issuer = Some("https://issuer.test".into());
    auth.audience = Some("h2chat".into());
    let s = AuthServer::start("iss-aud", auth).await;
    let channel = s.channel().await;
    let token = |iss: &str, aud: &str| {
        let t = hs256(
            SECRET,
            &json!({"sub": "a", "exp": now() + 60, "iss": iss, "aud": aud}),
        );
        bearer(&format!("Bearer {t}"))
    };
    assert_unauthenticated(
        s.counted(&channel, token("https://evil.test", "h2chat"))
            .await,
        "wrong token issuer",
    );
    assert_unauthenticated(
        s.counted(&channel, token("https://issuer.test", "other"))
            .await,
        "wrong token audience",
    );
    let no_iss = hs256(
        SECRET,
        &json!({"sub": "a", "exp": now() + 60, "aud": "h2chat"}),
    );
    assert_unauthenticated(
        s.counted(&channel, bearer(&format!("Bearer {no_iss}")))
            .await,
        "iss",
    );
    assert_eq!(s.handled(), 0);
    s.counted(&channel, token("https://issuer.test", "h2chat"))
        .await
        .expect("right iss and aud");
    s.server.shutdown().await;
}

/// An RSA key pair: (private PKCS#8 PEM, public SPKI PEM).
fn rsa_pair() -> (String, String) {
    use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
    let private = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).expect("RSA key");
    let public = rsa::RsaPublicKey::from(&private);
    (
        private
            .to_pkcs8_pem(LineEnding::LF)
            .expect("pem")
            .to_string(),
        public.to_public_key_pem(LineEnding::LF).expect("pem"),
    )
}

#[tokio::test]
async fn rs256_is_fixed_by_the_key_and_hs256_with_the_public_key_is_refused() {
    let (private_pem, public_pem) = rsa_pair();
    let dir = crate::pki::TempDir::new("rsa");
    let public = dir.write("public.pem", &public_pem);
    let s = AuthServer::start(
        "rsa",
        auth_config(vec![keys::public_key(&public).expect("key")]),
    )
    .await;
    let channel = s.channel().await;
    // The classic confusion: HMAC "keyed" with the public key the server trusts.
    let confused = hs256(public_pem.as_bytes(), &claims("alice"));
    assert_unauthenticated(
        s.counted(&channel, bearer(&format!("Bearer {confused}")))
            .await,
        "wrong token algorithm \"HS256\"",
    );
    let none = forge(&json!({"alg": "none"}), &claims("alice"), "");
    assert_unauthenticated(
        s.counted(&channel, bearer(&format!("Bearer {none}"))).await,
        "wrong token algorithm",
    );
    assert_eq!(s.handled(), 0);
    let signed = encode(
        &Header::new(Algorithm::RS256),
        &claims("alice"),
        &EncodingKey::from_rsa_pem(private_pem.as_bytes()).expect("key"),
    )
    .expect("sign");
    s.counted(&channel, bearer(&format!("Bearer {signed}")))
        .await
        .expect("RS256 is accepted");
    s.server.shutdown().await;
}

#[tokio::test]
async fn es256_and_eddsa_public_keys_and_a_jwks_file() {
    let es = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("EC key");
    let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("Ed key");
    let dir = crate::pki::TempDir::new("ec-ed");
    for (name, pair, alg) in [("es", &es, Algorithm::ES256), ("ed", &ed, Algorithm::EdDSA)] {
        let public = dir.write(&format!("{name}.pem"), pair.public_key_pem());
        let s = AuthServer::start(
            name,
            auth_config(vec![keys::public_key(&public).expect("key")]),
        )
        .await;
        let channel = s.channel().await;
        let key = match alg {
            Algorithm::ES256 => EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()),
            _ => EncodingKey::from_ed_pem(pair.serialize_pem().as_bytes()),
        }
        .expect("encoding key");
        let signed = encode(&Header::new(alg), &claims("alice"), &key).expect("sign");
        s.counted(&channel, bearer(&format!("Bearer {signed}")))
            .await
            .expect("accepted");
        let hs = hs256(pair.public_key_pem().as_bytes(), &claims("alice"));
        assert_unauthenticated(
            s.counted(&channel, bearer(&format!("Bearer {hs}"))).await,
            "wrong token algorithm",
        );
        s.server.shutdown().await;
    }
    // A JWKS file with two keys: the token's kid picks one.
    let (private_pem, public_pem) = rsa_pair();
    let jwk_of = |pem: &str, kid: &str| {
        let key = rsa::pkcs8::DecodePublicKey::from_public_key_pem(pem).expect("public");
        let key: rsa::RsaPublicKey = key;
        use rsa::traits::PublicKeyParts;
        json!({"kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig",
               "n": URL_SAFE_NO_PAD.encode(key.n().to_bytes_be()),
               "e": URL_SAFE_NO_PAD.encode(key.e().to_bytes_be())})
    };
    let (_, other_public) = rsa_pair();
    let jwks = dir.write(
        "jwks.json",
        json!({"keys": [jwk_of(&other_public, "old"), jwk_of(&public_pem, "new")]}).to_string(),
    );
    let s = AuthServer::start("jwks", auth_config(keys::jwks(&jwks).expect("jwks"))).await;
    let channel = s.channel().await;
    let key = EncodingKey::from_rsa_pem(private_pem.as_bytes()).expect("key");
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("new".into());
    let signed = encode(&header, &claims("alice"), &key).expect("sign");
    s.counted(&channel, bearer(&format!("Bearer {signed}")))
        .await
        .expect("kid new");
    header.kid = Some("old".into());
    let wrong_kid = encode(&header, &claims("alice"), &key).expect("sign");
    assert_unauthenticated(
        s.counted(&channel, bearer(&format!("Bearer {wrong_kid}")))
            .await,
        "bad token signature",
    );
    header.kid = Some("nope".into());
    let unknown = encode(&header, &claims("alice"), &key).expect("sign");
    assert_unauthenticated(
        s.counted(&channel, bearer(&format!("Bearer {unknown}")))
            .await,
        "unknown token key id",
    );
    s.server.shutdown().await;
}

#[tokio::test]
async fn health_and_reflection_stay_open_without_a_token() {
    let s = AuthServer::hs256("open").await;
    let channel = s.channel().await;
    health(&channel, CallOptions::default())
        .await
        .expect("health needs no token");
    let out = within(
        "grpcurl list",
        tokio::process::Command::new(crate::harness::require_tool("grpcurl"))
            .arg("-cacert")
            .arg(&s.pki.files.ca)
            .args([&s.server.target(), "list"])
            .output(),
    )
    .await
    .expect("grpcurl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("chat.v1.ChatService"));
    // The chat service itself is closed.
    let members = within(
        "members",
        channel.unary::<_, h2chat::pb::chat::v1::MembersResponse>(
            "/chat.v1.ChatService/Members",
            &h2chat::pb::chat::v1::MembersRequest {
                room_id: "r".into(),
            },
            CallOptions::default(),
        ),
    )
    .await;
    assert_eq!(members.expect_err("closed").code(), Code::Unauthenticated);
    s.server.shutdown().await;
}
