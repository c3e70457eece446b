//! What the chat client proves itself with: TLS settings and a bearer token, read again on every
//! connection attempt so that a rotated token file is picked up by the next reconnect.

use std::path::PathBuf;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::grpc::client::CallOptions;
use crate::grpc::Status;

/// The request metadata carrying a bearer token.
pub const AUTHORIZATION: &str = "authorization";

/// Where the bearer token comes from.
#[derive(Clone, Debug)]
pub enum TokenSource {
    /// A file holding the token (surrounding whitespace ignored), read on every connection.
    File(PathBuf),
    /// The token itself (e.g. from `H2CHAT_TOKEN`).
    Value(String),
}

impl TokenSource {
    /// The token now. Errors say which file could not be read, or that it is empty.
    pub fn read(&self) -> Result<String, String> {
        let token = match self {
            TokenSource::Value(token) => token.trim().to_string(),
            TokenSource::File(path) => std::fs::read_to_string(path)
                .map_err(|e| format!("token file {}: {e}", path.display()))?
                .trim()
                .to_string(),
        };
        if token.is_empty() {
            return Err("the token is empty".into());
        }
        Ok(token)
    }

    /// Call options carrying `authorization: Bearer <token>` with the token read now.
    pub fn call_options(&self) -> Result<CallOptions, Status> {
        let token = self.read().map_err(Status::unauthenticated)?;
        let mut options = CallOptions::default();
        options
            .metadata
            .insert(AUTHORIZATION, &format!("Bearer {token}"))?;
        Ok(options)
    }
}

/// The name a token says its holder has (its `name` claim, else `sub`), read without checking the
/// signature: the client only uses it to know its own name in the room; the server checks.
pub fn token_name(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    ["name", "sub"].iter().find_map(|claim| {
        claims
            .get(claim)
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(claims: &str) -> String {
        format!("e30.{}.sig", URL_SAFE_NO_PAD.encode(claims.as_bytes()))
    }

    #[test]
    fn the_name_is_the_name_claim_else_the_subject() {
        assert_eq!(
            token_name(&token(r#"{"sub":"a","name":"Al"}"#)).as_deref(),
            Some("Al")
        );
        assert_eq!(token_name(&token(r#"{"sub":"a"}"#)).as_deref(), Some("a"));
        assert_eq!(token_name("garbage"), None);
    }
}
