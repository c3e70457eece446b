//! TLS for the server: the certificate and key loaded from PEM files, reloadable while serving,
//! optional client certificates (mTLS), and the identity a verified client certificate names.
//!
//! ALPN offers `h2` only (RFC 7540 §3.3: gRPC clients refuse a TLS connection without it). A
//! client offering ALPN without `h2` fails the handshake (rustls sends `no_application_protocol`);
//! a client offering no ALPN at all is closed right after the handshake. Both are logged at debug.
//!
//! [`TlsAcceptor::reload`] loads the files again and, if they make a valid configuration (the key
//! matches the certificate), uses it for every new connection; connections already open keep the
//! configuration they were accepted with. A bad new pair is refused and the old one stays.

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::server::TlsStream;

use crate::grpc::tls::{crypto_provider, load_certs, load_key, load_roots, TlsError, ALPN_H2};

/// Whether clients present a certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ClientAuth {
    /// No client certificates are asked for.
    #[default]
    None,
    /// A client may present a certificate signed by the client CA; one that does not is still
    /// served, without a certificate identity.
    Optional,
    /// Every client must present a certificate signed by the client CA, or the handshake fails.
    Required,
}

/// Where the server's TLS material is. Read again on every [`TlsAcceptor::reload`].
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// The certificate chain, PEM, leaf first.
    pub cert_chain: PathBuf,
    /// The private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// The CA certificates client certificates must chain to (PEM); needed unless
    /// `client_auth` is [`ClientAuth::None`].
    pub client_ca: Option<PathBuf>,
    /// Whether clients present certificates.
    pub client_auth: ClientAuth,
}

/// Accepts TLS connections with the current configuration; see the module documentation.
pub struct TlsAcceptor {
    files: TlsFiles,
    current: RwLock<Arc<ServerConfig>>,
}

impl fmt::Debug for TlsAcceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsAcceptor")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

/// A TLS connection whose handshake is done and whose ALPN is `h2`, with what the client's
/// certificate says.
pub(in crate::grpc) struct Accepted<T> {
    /// The stream h2 speaks over (boxed: rustls' state is large, and most of a connection's life
    /// it is only forwarded to).
    pub(in crate::grpc) stream: Box<TlsStream<T>>,
    /// The identity of the verified client certificate, if one was presented.
    pub(in crate::grpc) identity: Option<Arc<str>>,
}

impl TlsAcceptor {
    /// Loads `files`. Errors name the file and what is wrong with it.
    pub fn load(files: TlsFiles) -> Result<TlsAcceptor, TlsError> {
        let config = server_config(&files)?;
        Ok(TlsAcceptor {
            files,
            current: RwLock::new(config),
        })
    }

    /// Loads the files again; on success new connections use them, on error nothing changes.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = server_config(&self.files)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = config;
        Ok(())
    }

    /// The files this acceptor loads.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// The configuration new connections get now.
    fn config(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Runs the TLS handshake on `io` and checks that ALPN chose `h2`. The caller bounds the time.
    pub(in crate::grpc) async fn accept<T>(&self, io: T) -> Result<Accepted<T>, TlsError>
    where
        T: AsyncRead + AsyncWrite + Unpin,
    {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.config());
        let stream = acceptor
            .accept(io)
            .await
            .map_err(|e| TlsError::new(format!("TLS handshake failed: {e}")))?;
        let (_, conn) = stream.get_ref();
        if conn.alpn_protocol() != Some(ALPN_H2) {
            return Err(TlsError::new(
                "the client did not negotiate h2 with ALPN; closing",
            ));
        }
        let identity = conn
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|leaf| certificate_identity(leaf.as_ref()))
            .map(Arc::from);
        Ok(Accepted {
            stream: Box::new(stream),
            identity,
        })
    }
}

/// The identity a certificate names: its first URI subject alternative name, else its first DNS
/// name, else its subject's common name. `None` for a certificate that does not parse or names
/// none of them.
pub fn certificate_identity(der: &[u8]) -> Option<String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        let names = &san.value.general_names;
        let uri = names.iter().find_map(|n| match n {
            GeneralName::URI(u) => Some(*u),
            _ => None,
        });
        let dns = names.iter().find_map(|n| match n {
            GeneralName::DNSName(d) => Some(*d),
            _ => None,
        });
        if let Some(name) = uri.or(dns) {
            return Some(name.to_string());
        }
    }
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string);
    cn
}

fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = crypto_provider();
    let chain = load_certs(&files.cert_chain, "certificate")?;
    let key = load_key(&files.key)?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::new(format!("TLS versions: {e}")))?;
    let builder = match (files.client_auth, &files.client_ca) {
        (ClientAuth::None, _) => builder.with_no_client_auth(),
        (_, None) => {
            return Err(TlsError::new(
                "client certificates are asked for but no client CA is given",
            ))
        }
        (auth, Some(ca)) => {
            let roots = Arc::new(load_roots(ca, "client CA")?);
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider);
            let verifier = match auth {
                ClientAuth::Optional => verifier.allow_unauthenticated(),
                _ => verifier,
            };
            let verifier = verifier
                .build()
                .map_err(|e| TlsError::new(format!("client CA {}: {e}", ca.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    // Checks that the key belongs to the leaf certificate.
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        TlsError::new(format!(
            "certificate {} with key {}: {e}",
            files.cert_chain.display(),
            files.key.display()
        ))
    })?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}
