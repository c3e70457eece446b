//! Bearer tokens: `authorization: Bearer <JWT>` checked before any handler runs, as the gRPC
//! server's [`Authenticator`].
//!
//! A call to a service that needs a token (by default chat and the log watcher; health and
//! reflection stay open) without a valid one is refused UNAUTHENTICATED, with a message saying
//! why: missing, malformed, bad signature, wrong algorithm, expired, not yet valid, wrong issuer or
//! audience. The algorithm is fixed by the key ([`keys`]), never by the token. A token must carry
//! `sub` and `exp`; `iss` and `aud` are required when the server is told to check them.
//!
//! The call then runs as a [`Principal`] named by the token's `name` claim (else `sub`), which
//! expires with the token: the server ends a call still running then UNAUTHENTICATED "token
//! expired". Its [`Claims`] travel with it, for services to read (chat reads `rooms`).

pub mod keys;
pub mod mint;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;

use crate::grpc::server::{AuthRequest, Authenticator, Principal};
use crate::grpc::Status;
use keys::Key;

/// Default clock skew allowed on `exp` and `nbf`.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);
/// The services that need a token unless told otherwise.
pub const DEFAULT_SERVICES: &[&str] = &["chat.v1.ChatService", "h2chat.logs.v1.LogWatcher"];
/// Longest `authorization` value looked at, in bytes (a header list is bounded anyway; this keeps
/// the work per call small).
pub const MAX_TOKEN_BYTES: usize = 8 << 10;

/// How tokens are checked.
#[derive(Clone, Debug)]
pub struct AuthConfig {
    /// The keys a token may be signed with (one, or a JWKS set).
    pub keys: Vec<Key>,
    /// The `iss` a token must carry, if set.
    pub issuer: Option<String>,
    /// The `aud` a token must carry, if set.
    pub audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: Duration,
    /// The services that need a token; `*` stands for all.
    pub services: Vec<String>,
}

/// The claims h2chat reads from a token. Unknown claims are ignored.
#[derive(Clone, Debug, Deserialize)]
pub struct Claims {
    /// Who the token is for. (Defaults here only so that a missing `sub` or `exp` is reported as
    /// missing by the validation, which requires both.)
    #[serde(default)]
    pub sub: String,
    /// The name to show, if not `sub`.
    #[serde(default)]
    pub name: Option<String>,
    /// When the token expires (seconds since the Unix epoch).
    #[serde(default)]
    pub exp: u64,
    /// The rooms the holder may join: names, or `prefix*` patterns; all rooms when absent.
    #[serde(default)]
    pub rooms: Option<Rooms>,
}

/// The `rooms` claim: one pattern, or a list of them.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum Rooms {
    /// One name or pattern.
    One(String),
    /// Several names or patterns.
    Many(Vec<String>),
}

impl Claims {
    /// The name the holder goes by: `name`, else `sub`.
    pub fn display_name(&self) -> &str {
        self.name
            .as_deref()
            .filter(|n| !n.is_empty())
            .unwrap_or(&self.sub)
    }

    /// Whether the token lets its holder into `room`: no `rooms` claim allows every room; else a
    /// pattern equal to the room, or ending in `*` with the room starting with what precedes it.
    pub fn allows_room(&self, room: &str) -> bool {
        let patterns: &[String] = match &self.rooms {
            None => return true,
            Some(Rooms::One(one)) => std::slice::from_ref(one),
            Some(Rooms::Many(many)) => many,
        };
        patterns.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => room.starts_with(prefix),
            None => p == room,
        })
    }
}

/// Checks bearer tokens; see the module documentation.
pub struct JwtAuthenticator {
    config: AuthConfig,
    /// One validation per key, its algorithms fixed by the key.
    validations: Vec<Validation>,
}

impl fmt::Debug for JwtAuthenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtAuthenticator")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl JwtAuthenticator {
    /// An authenticator checking tokens as `config` says. Errors: no key.
    pub fn new(config: AuthConfig) -> Result<JwtAuthenticator, String> {
        if config.keys.is_empty() {
            return Err("token authentication needs a key".into());
        }
        let validations = config
            .keys
            .iter()
            .map(|key| validation(&config, key))
            .collect();
        Ok(JwtAuthenticator {
            config,
            validations,
        })
    }

    fn needs_token(&self, service: &str) -> bool {
        self.config
            .services
            .iter()
            .any(|s| s == "*" || s == service)
    }

    /// Checks a token and returns its claims; the error is the refusal's status.
    pub fn check(&self, token: &str) -> Result<Claims, Status> {
        let alg = header_alg(token)?;
        let (key, validation) = self.key_for(token, &alg)?;
        if !key.algorithms.iter().any(|a| alg_name(*a) == alg) {
            return Err(Status::unauthenticated(format!(
                "wrong token algorithm {:?}; the server's key allows {}",
                short(&alg),
                key.algorithms
                    .iter()
                    .map(|a| alg_name(*a))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        jsonwebtoken::decode::<Claims>(token, &key.key, validation)
            .map(|data| data.claims)
            .map_err(|e| Status::unauthenticated(describe(e.kind())))
    }

    /// The key a token names (`kid`), or the only key.
    fn key_for(&self, token: &str, alg: &str) -> Result<(&Key, &Validation), Status> {
        let pairs = || self.config.keys.iter().zip(&self.validations);
        if self.config.keys.len() == 1 {
            return pairs().next().ok_or_else(|| Status::internal("no key"));
        }
        let kid = header_kid(token);
        let Some(kid) = kid else {
            // Among several keys, the one whose algorithms fit; the first wins.
            return pairs()
                .find(|(k, _)| k.algorithms.iter().any(|a| alg_name(*a) == alg))
                .ok_or_else(|| {
                    Status::unauthenticated(format!(
                        "wrong token algorithm {:?}; no key of the server allows it",
                        short(alg)
                    ))
                });
        };
        pairs()
            .find(|(k, _)| k.kid.as_deref() == Some(kid.as_str()))
            .ok_or_else(|| {
                Status::unauthenticated(format!("unknown token key id {:?}", short(&kid)))
            })
    }

    /// The principal a valid token makes, expiring with it.
    fn principal(&self, claims: Claims) -> Principal {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let exp = Duration::from_secs(claims.exp).saturating_add(self.config.leeway);
        let left = exp.saturating_sub(now);
        let name = claims.display_name().to_string();
        let principal = Principal::new(name);
        let principal = match Instant::now().checked_add(left) {
            Some(at) => principal.expiring(at, "token expired"),
            None => principal,
        };
        principal.with_attributes(claims)
    }
}

impl Authenticator for JwtAuthenticator {
    fn authenticate(&self, request: &AuthRequest<'_>) -> Result<Option<Arc<Principal>>, Status> {
        if !self.needs_token(request.service) {
            return Ok(None);
        }
        let checked = self.check_request(request);
        if checked.is_err() && crate::grpc::server::stats::is_enabled() {
            let reason = match request.metadata.get("authorization") {
                None => "missing",
                Some(_) => "invalid",
            };
            metrics::counter!("h2chat_auth_token_rejections_total", "reason" => reason)
                .increment(1);
        }
        checked
    }
}

impl JwtAuthenticator {
    /// The principal of a call to a service that needs a token, or why it is refused.
    fn check_request(&self, request: &AuthRequest<'_>) -> Result<Option<Arc<Principal>>, Status> {
        let Some(value) = request.metadata.get("authorization") else {
            return Err(Status::unauthenticated(format!(
                "missing token: {} needs authorization: Bearer <JWT>",
                request.service
            )));
        };
        if value.len() > MAX_TOKEN_BYTES {
            return Err(Status::unauthenticated(format!(
                "malformed token: longer than {MAX_TOKEN_BYTES} bytes"
            )));
        }
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                Status::unauthenticated("malformed authorization: expected Bearer <JWT>")
            })?;
        let claims = self.check(token)?;
        Ok(Some(Arc::new(self.principal(claims))))
    }
}

fn validation(config: &AuthConfig, key: &Key) -> Validation {
    let mut v = Validation::new(key.algorithms.first().copied().unwrap_or(Algorithm::HS256));
    v.algorithms = key.algorithms.clone();
    v.leeway = config.leeway.as_secs();
    v.validate_nbf = true;
    let mut required = vec!["exp", "sub"];
    if let Some(iss) = &config.issuer {
        v.set_issuer(&[iss]);
        required.push("iss");
    }
    match &config.audience {
        Some(aud) => {
            v.set_audience(&[aud]);
            required.push("aud");
        }
        None => v.validate_aud = false,
    }
    v.set_required_spec_claims(&required);
    v
}

/// The JSON of a token's header, decoded by hand so that any `alg` (`none` too) can be named.
fn header_json(token: &str) -> Result<serde_json::Value, Status> {
    let malformed = |why: &str| Status::unauthenticated(format!("malformed token: {why}"));
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed("not three dot-separated parts"));
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| malformed("the header is not base64url"))?;
    serde_json::from_slice(&bytes).map_err(|_| malformed("the header is not JSON"))
}

fn header_alg(token: &str) -> Result<String, Status> {
    header_json(token)?
        .get("alg")
        .and_then(|a| a.as_str())
        .map(str::to_string)
        .ok_or_else(|| Status::unauthenticated("malformed token: the header has no alg"))
}

fn header_kid(token: &str) -> Option<String> {
    header_json(token)
        .ok()?
        .get("kid")
        .and_then(|k| k.as_str())
        .map(str::to_string)
}

fn alg_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::HS256 => "HS256",
        Algorithm::HS384 => "HS384",
        Algorithm::HS512 => "HS512",
        Algorithm::RS256 => "RS256",
        Algorithm::RS384 => "RS384",
        Algorithm::RS512 => "RS512",
        Algorithm::PS256 => "PS256",
        Algorithm::PS384 => "PS384",
        Algorithm::PS512 => "PS512",
        Algorithm::ES256 => "ES256",
        Algorithm::ES384 => "ES384",
        Algorithm::EdDSA => "EdDSA",
    }
}

/// At most 32 characters of something the client sent, for a message.
fn short(s: &str) -> String {
    s.chars().take(32).collect()
}

/// Why a token was refused, in a few words.
fn describe(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::InvalidSignature => "bad token signature".into(),
        ErrorKind::ExpiredSignature => "token expired".into(),
        ErrorKind::ImmatureSignature => "token not yet valid (nbf is in the future)".into(),
        ErrorKind::InvalidIssuer => "wrong token issuer".into(),
        ErrorKind::InvalidAudience => "wrong token audience".into(),
        ErrorKind::InvalidAlgorithm => "wrong token algorithm for the server's key".into(),
        ErrorKind::MissingRequiredClaim(c) => format!("the token has no {c} claim"),
        ErrorKind::InvalidClaimFormat(c) => format!("malformed token: the {c} claim"),
        ErrorKind::InvalidEcdsaKey | ErrorKind::InvalidEddsaKey | ErrorKind::InvalidRsaKey(_) => {
            "bad token signature".into()
        }
        ErrorKind::Json(_) => "malformed token: the claims are not what h2chat needs".into(),
        _ => "malformed token".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(rooms: Option<Rooms>) -> Claims {
        Claims {
            sub: "alice".into(),
            name: None,
            exp: 0,
            rooms,
        }
    }

    #[test]
    fn rooms_are_names_or_prefix_patterns() {
        assert!(claims(None).allows_room("any"));
        let c = claims(Some(Rooms::Many(vec!["team-*".into(), "lobby".into()])));
        assert!(c.allows_room("team-red"));
        assert!(c.allows_room("lobby"));
        assert!(!c.allows_room("lobby2"));
        assert!(!c.allows_room("ops"));
        assert!(claims(Some(Rooms::One("*".into()))).allows_room("x"));
    }

    #[test]
    fn the_header_alg_is_read_whatever_it_says() {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#);
        assert_eq!(
            header_alg(&format!("{header}.e30.")).ok().as_deref(),
            Some("none")
        );
        assert!(header_alg("garbage").is_err());
    }
}
