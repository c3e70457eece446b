//! `h2chat serve --tls-self-signed`: a certificate for `localhost` (and 127.0.0.1, ::1) made at
//! startup with rcgen, for trying the chat page in a browser without a CA. The browser warns
//! about it once; the SHA-256 fingerprint printed at startup is what to compare before accepting.

use std::path::PathBuf;

use rustls::crypto::hash::HashAlgorithm;

/// Where the certificate and key were written (a directory of this process's own in the temp
/// dir, so the reloadable acceptor can read them like any other pair), and the fingerprint.
pub struct SelfSigned {
    /// The certificate, PEM.
    pub cert: PathBuf,
    /// Its private key, PEM.
    pub key: PathBuf,
    /// SHA-256 of the certificate's DER, as colon-separated hex.
    pub fingerprint: String,
}

/// Makes the certificate and writes it out.
pub fn make() -> Result<SelfSigned, Box<dyn std::error::Error>> {
    let names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    let certified = rcgen::generate_simple_self_signed(names)?;
    let dir = std::env::temp_dir().join(format!("h2chat-self-signed-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, certified.cert.pem())?;
    std::fs::write(&key, certified.signing_key.serialize_pem())?;
    let sha256 = rustls::crypto::ring::default_provider()
        .cipher_suites
        .iter()
        .filter_map(|suite| suite.tls13())
        .map(|suite| suite.common.hash_provider)
        .find(|hash| hash.algorithm() == HashAlgorithm::SHA256)
        .ok_or("no SHA-256 in the crypto provider")?;
    let digest = sha256.hash(certified.cert.der());
    let fingerprint = digest
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":");
    Ok(SelfSigned {
        cert,
        key,
        fingerprint,
    })
}
