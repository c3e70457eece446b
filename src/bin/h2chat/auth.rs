//! The server's bearer-token flags (`--auth-*`) and the authenticator they make.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use h2chat::auth::{self, keys, AuthConfig, JwtAuthenticator};

/// The server's bearer-token flags.
#[derive(Args)]
pub(crate) struct AuthArgs {
    /// Check bearer tokens signed HS256 with the secret in this file (at least 32 bytes).
    #[arg(long, group = "auth_key")]
    auth_hs256_secret_file: Option<PathBuf>,
    /// Check bearer tokens with this public key (PEM: RSA → RS256 etc., EC → ES256/ES384,
    /// Ed25519 → EdDSA).
    #[arg(long, group = "auth_key")]
    auth_public_key: Option<PathBuf>,
    /// Check bearer tokens with the keys of this JWKS file (chosen by the token's kid).
    #[arg(long, group = "auth_key")]
    auth_jwks: Option<PathBuf>,
    /// The `iss` tokens must carry.
    #[arg(long, requires = "auth_key")]
    auth_issuer: Option<String>,
    /// The `aud` tokens must carry.
    #[arg(long, requires = "auth_key")]
    auth_audience: Option<String>,
    /// Seconds of clock skew allowed on a token's exp and nbf.
    #[arg(long, default_value_t = auth::DEFAULT_LEEWAY.as_secs())]
    auth_leeway: u64,
    /// Services that need a token, comma-separated (`*` = all).
    #[arg(long, value_delimiter = ',', default_values_t = auth::DEFAULT_SERVICES.iter().map(|s| s.to_string()))]
    auth_services: Vec<String>,
    /// Allow token authentication without TLS (tokens then cross the network in the clear: for
    /// tests and local use only).
    #[arg(long)]
    pub(crate) allow_insecure_auth: bool,
}

impl AuthArgs {
    /// The authenticator these flags ask for; `None` without a key flag.
    pub(crate) fn authenticator(
        &self,
    ) -> Result<Option<Arc<JwtAuthenticator>>, Box<dyn std::error::Error>> {
        let keys = if let Some(path) = &self.auth_hs256_secret_file {
            vec![keys::hs256_secret(path)?]
        } else if let Some(path) = &self.auth_public_key {
            vec![keys::public_key(path)?]
        } else if let Some(path) = &self.auth_jwks {
            keys::jwks(path)?
        } else {
            return Ok(None);
        };
        let config = AuthConfig {
            keys,
            issuer: self.auth_issuer.clone(),
            audience: self.auth_audience.clone(),
            leeway: Duration::from_secs(self.auth_leeway),
            services: self.auth_services.clone(),
        };
        Ok(Some(Arc::new(JwtAuthenticator::new(config)?)))
    }
}
