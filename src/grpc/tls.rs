//! What TLS on both sides shares: the crypto provider (ring, the only one compiled in), ALPN
//! `h2`, and PEM files read through `rustls-pki-types`. The server's acceptor is in
//! [`server::tls`](crate::grpc::server::tls), the client's connector in
//! [`client::tls`](crate::grpc::client::tls).

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The one ALPN protocol offered and accepted.
pub const ALPN_H2: &[u8] = b"h2";

/// Why TLS material could not be loaded, in words that name the file.
#[derive(Debug)]
pub struct TlsError(String);

impl TlsError {
    /// An error saying `message`.
    pub fn new(message: impl Into<String>) -> TlsError {
        TlsError(message.into())
    }
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsError {}

/// The rustls crypto provider: ring.
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError(format!("{what} {}: {e}", path.display())))
}

/// Every certificate in a PEM file; an error if there is none. `what` names the file in errors.
pub fn load_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path, what)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError(format!("{what} {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(TlsError(format!(
            "{what} {}: no PEM certificate in it",
            path.display()
        )));
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) in a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path, "key")?;
    PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| TlsError(format!("key {}: {e}", path.display())))
}

/// A root store holding every certificate of a PEM file.
pub fn load_roots(path: &Path, what: &str) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path, what)? {
        roots
            .add(cert)
            .map_err(|e| TlsError(format!("{what} {}: {e}", path.display())))?;
    }
    Ok(roots)
}
