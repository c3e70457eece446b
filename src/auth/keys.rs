//! The keys tokens are checked with, and the algorithms each allows: fixed by the key, never by
//! the token. An HS256 secret allows HS256 only; an RSA public key the RS and PS algorithms; an
//! EC key ES256 and ES384; an Ed25519 key EdDSA. So a token signed with HMAC "using" an RSA
//! public key as its secret is refused (wrong algorithm), and `alg: none` is never accepted.

use std::fmt;
use std::path::Path;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey};

/// Shortest HS256 secret accepted, in bytes (RFC 7518 §3.2: at least the hash's size).
pub const MIN_HS256_SECRET_BYTES: usize = 32;

/// One key and the algorithms a token checked with it may use.
#[derive(Clone)]
pub struct Key {
    /// The key id (`kid`) a token names it by, if it has one (from a JWKS file).
    pub kid: Option<String>,
    /// The key.
    pub key: DecodingKey,
    /// What a token's `alg` must be one of.
    pub algorithms: Vec<Algorithm>,
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("algorithms", &self.algorithms)
            .finish_non_exhaustive()
    }
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{what} {}: {e}", path.display()))
}

/// The HS256 secret in a file (surrounding whitespace, e.g. a final newline, removed).
pub fn hs256_secret(path: &Path) -> Result<Key, String> {
    let bytes = read(path, "HS256 secret file")?;
    let secret = bytes.trim_ascii();
    if secret.len() < MIN_HS256_SECRET_BYTES {
        return Err(format!(
            "HS256 secret file {}: {} bytes; at least {MIN_HS256_SECRET_BYTES} are needed",
            path.display(),
            secret.len()
        ));
    }
    Ok(Key {
        kid: None,
        key: DecodingKey::from_secret(secret),
        algorithms: vec![Algorithm::HS256],
    })
}

/// A public key in a PEM file: RSA (RS256 and the rest of its family), EC (ES256, ES384) or
/// Ed25519 (EdDSA), whichever it is.
pub fn public_key(path: &Path) -> Result<Key, String> {
    let pem = read(path, "public key")?;
    let key = DecodingKey::from_rsa_pem(&pem)
        .or_else(|_| DecodingKey::from_ec_pem(&pem))
        .or_else(|_| DecodingKey::from_ed_pem(&pem))
        .map_err(|_| {
            format!(
                "public key {}: not a PEM RSA, EC or Ed25519 public key",
                path.display()
            )
        })?;
    let algorithms = key.family().algorithms().to_vec();
    Ok(Key {
        kid: None,
        key,
        algorithms,
    })
}

/// Every key of a JWKS file (`{"keys": [...]}`); a key's `alg`, when given, narrows its family.
pub fn jwks(path: &Path) -> Result<Vec<Key>, String> {
    let text = read(path, "JWKS file")?;
    let set: JwkSet =
        serde_json::from_slice(&text).map_err(|e| format!("JWKS file {}: {e}", path.display()))?;
    let mut keys = Vec::with_capacity(set.keys.len());
    for jwk in &set.keys {
        let kid = jwk.common.key_id.clone();
        let key = DecodingKey::from_jwk(jwk).map_err(|e| {
            format!(
                "JWKS file {}: key {}: {e}",
                path.display(),
                kid.as_deref().unwrap_or("without kid")
            )
        })?;
        let family = key.family().algorithms().to_vec();
        let named = jwk
            .common
            .key_algorithm
            .and_then(|a| serde_json::to_value(a).ok())
            .and_then(|v| v.as_str().and_then(|s| s.parse::<Algorithm>().ok()));
        let algorithms = match named {
            Some(alg) if family.contains(&alg) => vec![alg],
            Some(alg) => {
                return Err(format!(
                    "JWKS file {}: key {}: alg {alg:?} does not fit its key type",
                    path.display(),
                    kid.as_deref().unwrap_or("without kid")
                ))
            }
            None => family,
        };
        keys.push(Key {
            kid,
            key,
            algorithms,
        });
    }
    if keys.is_empty() {
        return Err(format!("JWKS file {}: no keys in it", path.display()));
    }
    Ok(keys)
}
