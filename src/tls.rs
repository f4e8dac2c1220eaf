//! TLS for every connection: rustls with the ring provider.
//!
//! - PostgreSQL: `sslmode` and `sslrootcert` in `DATABASE_URL`, as libpq reads them (sqlx).
//! - RabbitMQ: `amqps://` in `AMQP_URL`; `AMQP_CA_FILE` adds a CA to the trusted roots.
//! - Mockstagram: `https://` in `MOCKSTAGRAM_URL`; `MOCKSTAGRAM_CA_FILE` adds a CA.
//! - The simulator serves HTTPS with `SIMULATOR_TLS_CERT_FILE` and `SIMULATOR_TLS_KEY_FILE`.
//!
//! Without a CA file, servers are checked against the system's trusted roots
//! (`/etc/ssl/certs`), and always against the host name of the URL.

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::Arc,
};

use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

/// Makes ring the process's rustls provider (once; later calls do nothing). reqwest, built
/// without a provider of its own, needs one installed before any client is built.
pub fn install_crypto_provider() {
    // Err only when a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// An HTTP client builder, with the provider installed: every reqwest client starts here.
pub fn http_client_builder() -> reqwest::ClientBuilder {
    install_crypto_provider();
    reqwest::Client::builder()
}

/// An HTTP client with reqwest's defaults (for tools and tests).
pub fn http_client() -> reqwest::Client {
    http_client_builder()
        .build()
        .expect("an HTTP client with default settings builds")
}

/// A PEM file of CA certificates that a setting names, read and checked when the setting is
/// parsed, so a missing or empty file stops the program at start naming the setting.
#[derive(Clone)]
pub struct CaFile {
    path: PathBuf,
    pem: Arc<str>,
    certificates: Arc<[CertificateDer<'static>]>,
}

impl CaFile {
    /// Reads `path`, which must hold at least one PEM certificate.
    pub fn read(path: impl AsRef<Path>) -> Result<Self, String> {
        let path = path.as_ref();
        let pem = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the CA file {}: {e}", path.display()))?;
        let certificates = CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{} is not a PEM certificate file: {e}", path.display()))?;
        if certificates.is_empty() {
            return Err(format!(
                "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                path.display()
            ));
        }
        Ok(Self {
            path: path.to_path_buf(),
            pem: pem.into(),
            certificates: certificates.into(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's text, as lapin takes it.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// The certificates, as rustls takes them.
    pub(crate) fn certificates(&self) -> &[CertificateDer<'static>] {
        &self.certificates
    }
}

impl fmt::Debug for CaFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CaFile({})", self.path.display())
    }
}

/// Parses a CA file setting (clap's value parser).
pub(crate) fn ca_file(raw: &str) -> Result<CaFile, String> {
    CaFile::read(raw.trim())
}

/// A TLS server's configuration from a PEM certificate chain (the server's certificate first)
/// and its PEM private key; errors name `settings` (the two settings that gave the files).
pub fn server_config(
    certificate: &Path,
    key: &Path,
    settings: &str,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    install_crypto_provider();
    let chain = CertificateDer::pem_file_iter(certificate)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            anyhow::anyhow!(
                "{settings}: cannot read a PEM certificate chain from {}: {e}",
                certificate.display()
            )
        })?;
    anyhow::ensure!(
        !chain.is_empty(),
        "{settings}: {} holds no PEM certificate",
        certificate.display()
    );
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        anyhow::anyhow!(
            "{settings}: cannot read a PEM private key from {}: {e}",
            key.display()
        )
    })?;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| {
            anyhow::anyhow!("{settings}: the certificate and key do not go together: {e}")
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Whether `e`, or an error it wraps, is a TLS handshake that refused the peer's certificate
/// (an issuer not trusted, a name that does not match, an expired one): what a client meets
/// when a CA of the operator's own signed the server's certificate. Handshake errors come
/// wrapped in I/O errors, whose `source` skips the error they hold, so those are opened too.
pub(crate) fn is_refused_certificate(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(err) = next {
        if matches!(
            err.downcast_ref::<rustls::Error>(),
            Some(rustls::Error::InvalidCertificate(_))
        ) {
            return true;
        }
        if let Some(inner) = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            && is_refused_certificate(inner)
        {
            return true;
        }
        next = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn self_signed() -> (String, String) {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        (cert.cert.pem(), cert.signing_key.serialize_pem())
    }

    #[test]
    fn a_refused_certificate_is_found_inside_the_errors_that_wrap_it() {
        #[derive(Debug, thiserror::Error)]
        #[error("connecting failed")]
        struct Connecting(#[source] std::io::Error);
        let refused = || rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io = || std::io::Error::new(std::io::ErrorKind::InvalidData, refused());
        assert!(is_refused_certificate(&refused()));
        assert!(is_refused_certificate(&io()));
        assert!(is_refused_certificate(&Connecting(io())));
        let other = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::General("the word certificate is not enough".into()),
        );
        assert!(!is_refused_certificate(&Connecting(other)));
        let refused_connection = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(!is_refused_certificate(&refused_connection));
    }

    #[test]
    fn a_ca_file_must_exist_and_hold_a_certificate() {
        let dir = std::env::temp_dir().join(format!("ia-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = ca_file(dir.join("missing.pem").to_str().unwrap()).unwrap_err();
        assert!(missing.contains("cannot read the CA file"), "{missing}");
        let empty = write(&dir, "empty.pem", "not a certificate\n");
        let empty = ca_file(empty.to_str().unwrap()).unwrap_err();
        assert!(empty.contains("holds no PEM certificate"), "{empty}");
        let (cert, _) = self_signed();
        let good = write(&dir, "ca.pem", &cert);
        let ca = ca_file(good.to_str().unwrap()).unwrap();
        assert_eq!(ca.certificates().len(), 1);
        assert_eq!(ca.pem(), cert);
        assert!(format!("{ca:?}").contains("ca.pem"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_server_config_needs_a_matching_certificate_and_key() {
        let dir = std::env::temp_dir().join(format!("ia-tls-unit-server-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = self_signed();
        let (_, other_key) = self_signed();
        let cert = write(&dir, "cert.pem", &cert);
        let key = write(&dir, "key.pem", &key);
        let other_key = write(&dir, "other.pem", &other_key);
        let config = server_config(&cert, &key, "SIMULATOR_TLS_*").unwrap();
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
        let mismatch = server_config(&cert, &other_key, "SIMULATOR_TLS_*").unwrap_err();
        assert!(
            mismatch.to_string().contains("do not go together"),
            "{mismatch}"
        );
        let no_key = server_config(&cert, &dir.join("none.pem"), "SIMULATOR_TLS_*").unwrap_err();
        assert!(
            no_key.to_string().starts_with("SIMULATOR_TLS_*"),
            "{no_key}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
