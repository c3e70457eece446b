//! `h2chat token`: HS256 tokens for development and tests, signed with the server's secret file.
//! Not an identity provider: in production, tokens come from one, and the server checks them with
//! its public key or JWKS.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde::Serialize;

/// What goes into a minted token.
#[derive(Clone, Debug, Default)]
pub struct TokenRequest {
    /// `sub`.
    pub sub: String,
    /// `name`, if any.
    pub name: Option<String>,
    /// `rooms` patterns, if any.
    pub rooms: Option<Vec<String>>,
    /// `iss`, if any.
    pub issuer: Option<String>,
    /// `aud`, if any.
    pub audience: Option<String>,
    /// Lifetime from now (`exp` = now + ttl).
    pub ttl: Duration,
    /// Valid only from this long from now (`nbf`), if set.
    pub not_before: Option<Duration>,
}

#[derive(Serialize)]
struct Minted<'a> {
    sub: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rooms: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
    iat: u64,
    exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    nbf: Option<u64>,
}

/// An HS256 token for `request`, signed with `secret`.
pub fn hs256(secret: &[u8], request: &TokenRequest) -> Result<String, String> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let claims = Minted {
        sub: &request.sub,
        name: request.name.as_deref(),
        rooms: request.rooms.as_deref(),
        iss: request.issuer.as_deref(),
        aud: request.audience.as_deref(),
        iat: now,
        exp: now.saturating_add(request.ttl.as_secs()),
        nbf: request.not_before.map(|d| now.saturating_add(d.as_secs())),
    };
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .map_err(|e| format!("signing the token: {e}"))
}
