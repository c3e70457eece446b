//! TLS for the client: which servers it trusts (the system's roots, or a CA file), an optional
//! client certificate for mTLS, and ALPN `h2`, without which a connection is refused.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::client::TlsStream;

use super::ClientError;
use crate::grpc::tls::{crypto_provider, load_certs, load_key, load_roots, TlsError, ALPN_H2};

/// How the client speaks TLS. Cheap to clone.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<ClientConfig>,
    server_name: Option<String>,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Trusts the certificates in `ca` (PEM), or the system's roots when `None`; presents the
    /// certificate chain and key of `identity` (PEM files) when the server asks for one.
    pub fn new(ca: Option<&Path>, identity: Option<(&Path, &Path)>) -> Result<ClientTls, TlsError> {
        let roots = match ca {
            Some(path) => load_roots(path, "CA")?,
            None => system_roots()?,
        };
        let builder = ClientConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_error(format!("TLS versions: {e}")))?
            .with_root_certificates(roots);
        let mut config = match identity {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => builder
                .with_client_auth_cert(load_certs(cert, "client certificate")?, load_key(key)?)
                .map_err(|e| {
                    tls_error(format!(
                        "client certificate {} with key {}: {e}",
                        cert.display(),
                        key.display()
                    ))
                })?,
        };
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        Ok(ClientTls {
            config: Arc::new(config),
            server_name: None,
        })
    }

    /// Checks the server's certificate against `name` instead of the host the client connects to.
    pub fn with_server_name(mut self, name: impl Into<String>) -> ClientTls {
        self.server_name = Some(name.into());
        self
    }

    /// Runs the TLS handshake over `io` with the server `host` (a name or an IP address, unless
    /// [`with_server_name`](ClientTls::with_server_name) overrides it), and checks that ALPN chose
    /// `h2`.
    pub async fn connect<T>(&self, io: T, host: &str) -> Result<TlsStream<T>, ClientError>
    where
        T: AsyncRead + AsyncWrite + Unpin,
    {
        let name = self.server_name.as_deref().unwrap_or(host);
        let name = ServerName::try_from(name.to_string())
            .map_err(|e| ClientError::Tls(format!("server name {name:?}: {e}")))?;
        let connector = tokio_rustls::TlsConnector::from(self.config.clone());
        let stream = connector
            .connect(name, io)
            .await
            .map_err(|e| ClientError::Tls(format!("TLS handshake: {e}")))?;
        if stream.get_ref().1.alpn_protocol() != Some(ALPN_H2) {
            return Err(ClientError::Tls(
                "the server did not negotiate h2 with ALPN".into(),
            ));
        }
        Ok(stream)
    }
}

/// The host part of `host:port` (brackets of an IPv6 address removed).
pub fn host_of(addr: &str) -> &str {
    let host = match addr.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => addr,
    };
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

fn tls_error(message: String) -> TlsError {
    TlsError::new(message)
}

/// The operating system's trusted roots.
fn system_roots() -> Result<RootCertStore, TlsError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map(|e| format!(": {e}"))
            .unwrap_or_default();
        return Err(tls_error(format!(
            "no trusted root certificates found on this system{why}; give a CA file"
        )));
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::host_of;

    #[test]
    fn the_host_is_the_address_without_its_port() {
        assert_eq!(host_of("localhost:50051"), "localhost");
        assert_eq!(host_of("127.0.0.1:1"), "127.0.0.1");
        assert_eq!(host_of("[::1]:443"), "::1");
        assert_eq!(host_of("example.org"), "example.org");
    }
}
