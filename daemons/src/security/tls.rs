//! Certificates, keys and rustls configurations, from PEM files.
//!
//! rustls runs on the `ring` provider, named explicitly so that no other
//! crate's choice of provider changes ours. TLS 1.2 and 1.3 with rustls'
//! safe defaults; certificates are verified with webpki against the CA
//! file named in the configuration (never the system's roots: proxies and
//! servers belong to one operator, who runs their CA).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;

/// A TLS file or setting that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {what} {path}: {source}")]
    Pem {
        what: &'static str,
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("{what} {path} holds no certificate (expected PEM `BEGIN CERTIFICATE` blocks)")]
    NoCertificate { what: &'static str, path: PathBuf },
    #[error("CA file {path}: {source}")]
    BadCa {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("{what}: {source}")]
    Rustls {
        what: &'static str,
        source: rustls::Error,
    },
    #[error("client CA {path}: {source}")]
    Verifier {
        path: PathBuf,
        source: rustls::server::VerifierBuilderError,
    },
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate of a PEM file (a chain: leaf first).
pub fn load_certs(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = |source| TlsError::Pem {
        what,
        path: path.to_owned(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(pem)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            what,
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|source| TlsError::Pem {
        what: "private key",
        path: path.to_owned(),
        source,
    })
}

/// The CA certificates of a PEM file, as trust anchors.
pub fn load_roots(what: &'static str, path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(what, path)? {
        roots.add(cert).map_err(|source| TlsError::BadCa {
            path: path.to_owned(),
            source,
        })?;
    }
    Ok(roots)
}

/// The server's side: its certificate and key, and optionally the CA
/// that client certificates must chain to (`require`: a client without a
/// certificate is refused; otherwise one it presents is still verified).
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
    require: bool,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let certs = load_certs("certificate", cert)?;
    let key = load_key(key)?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Rustls {
            what: "TLS versions",
            source,
        })?;
    let builder = match client_ca {
        Some(ca) => {
            let roots = Arc::new(load_roots("client CA", ca)?);
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider());
            let verifier = if require {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            let verifier = verifier.build().map_err(|source| TlsError::Verifier {
                path: ca.to_owned(),
                source,
            })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(certs, key)
        .map_err(|source| TlsError::Rustls {
            what: "the server certificate and key do not go together",
            source,
        })?;
    Ok(Arc::new(config))
}

/// The proxy's side: the CA the server's certificate must chain to, and
/// optionally a client certificate and key (mutual TLS).
pub fn client_config(
    ca: &Path,
    identity: Option<(&Path, &Path)>,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let roots = load_roots("CA", ca)?;
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Rustls {
            what: "TLS versions",
            source,
        })?
        .with_root_certificates(roots);
    let config = match identity {
        Some((cert, key)) => {
            let certs = load_certs("client certificate", cert)?;
            let key = load_key(key)?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|source| TlsError::Rustls {
                    what: "the client certificate and key do not go together",
                    source,
                })?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// What went wrong in a handshake, as a metric label: a missing client
/// certificate, one that does not verify, or anything else (`tls`).
pub fn failure_reason(e: &std::io::Error) -> &'static str {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::NoCertificatesPresented) => "no_client_cert",
        Some(rustls::Error::InvalidCertificate(_)) => "bad_client_cert",
        _ => "tls",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_empty_files_name_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("nope.pem");
        let err = client_config(&missing, None)
            .expect_err("missing CA")
            .to_string();
        assert!(err.contains("nope.pem"), "{err}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a pem\n").expect("write");
        let err = client_config(&empty, None)
            .expect_err("empty CA")
            .to_string();
        assert!(
            err.contains("holds no certificate") && err.contains("empty.pem"),
            "{err}"
        );
        let err = server_config(&empty, &empty, None, false)
            .expect_err("no cert")
            .to_string();
        assert!(err.contains("empty.pem"), "{err}");
    }
}
