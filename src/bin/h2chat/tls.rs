//! The server's TLS: its flags (`--tls-cert`, `--tls-self-signed`, mTLS, `--plaintext-addr`),
//! the acceptor they make, and its reload on SIGHUP.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, ValueEnum};
use h2chat::grpc::server::{ClientAuth, TlsAcceptor, TlsFiles};

use crate::flags::{self, ListenAddr};
use crate::self_signed;

/// The server's TLS flags.
#[derive(Args)]
pub(crate) struct TlsArgs {
    /// Serve TLS on --addr with this certificate chain (PEM, leaf first); SIGHUP reloads it.
    #[arg(long, requires = "tls_key", conflicts_with = "tls_self_signed")]
    tls_cert: Option<PathBuf>,
    /// Serve TLS on --addr with a certificate for localhost made at startup (its SHA-256
    /// fingerprint is printed): for trying the chat page at https://localhost:PORT/.
    #[arg(long)]
    tls_self_signed: bool,
    /// The private key of --tls-cert (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// CA certificates (PEM) that client certificates must chain to (mTLS).
    #[arg(long, requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// Whether clients must present a certificate signed by --tls-client-ca.
    #[arg(long, value_enum, requires = "tls_client_ca")]
    tls_client_auth: Option<ClientAuthArg>,
    /// With TLS on --addr, also serve plaintext HTTP/2 on this address, HOST:PORT (off unless
    /// given).
    #[arg(long, requires = "tls_cert", value_parser = flags::listen_addr)]
    pub(crate) plaintext_addr: Option<ListenAddr>,
}

#[derive(Clone, Copy, ValueEnum)]
enum ClientAuthArg {
    /// Clients may present a certificate.
    Optional,
    /// Clients must present a certificate.
    Required,
}

impl TlsArgs {
    /// The TLS acceptor these flags ask for, loaded; `None` without --tls-cert.
    pub(crate) fn acceptor(&self) -> Result<Option<Arc<TlsAcceptor>>, Box<dyn std::error::Error>> {
        let made;
        let (cert, key) = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => (cert, key),
            _ if self.tls_self_signed => {
                made = self_signed::make()?;
                tracing::info!(
                    fingerprint = %made.fingerprint,
                    cert = %made.cert.display(),
                    "TLS with a self-signed certificate for localhost made at startup: compare \
                     its SHA-256 fingerprint with the browser's before accepting it"
                );
                (&made.cert, &made.key)
            }
            _ => return Ok(None),
        };
        let client_auth = match (&self.tls_client_ca, self.tls_client_auth) {
            (None, _) => ClientAuth::None,
            (Some(_), Some(ClientAuthArg::Optional)) => ClientAuth::Optional,
            // A client CA without a word on it means the CA is there to be used.
            (Some(_), Some(ClientAuthArg::Required) | None) => ClientAuth::Required,
        };
        let files = TlsFiles {
            cert_chain: cert.clone(),
            key: key.clone(),
            client_ca: self.tls_client_ca.clone(),
            client_auth,
        };
        Ok(Some(Arc::new(TlsAcceptor::load(files)?)))
    }
}

/// Reloads the TLS certificate and key on every SIGHUP, for new connections; a bad pair is
/// refused with an error and the old one stays.
pub(crate) fn reload_on_hangup(tls: Arc<TlsAcceptor>) {
    let mut hangups = h2chat::signal::hangups();
    tokio::spawn(async move {
        while hangups.next().await {
            match tls.reload() {
                Ok(()) => tracing::info!(
                    cert = %tls.files().cert_chain.display(),
                    "SIGHUP: TLS certificate reloaded; new connections use it"
                ),
                Err(e) => tracing::error!(
                    error = %e,
                    "SIGHUP: TLS certificate not reloaded; still serving the previous one"
                ),
            }
        }
    });
}
