//! TLS with mandatory client certificates (rustls). The client identity is the subject CN of the
//! client's certificate; the server is verified against `ca` under the name `server_cn`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::TransportError;

pub struct TlsServerFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub struct TlsClientFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub server_cn: String,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, TransportError> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| TransportError::Config(format!("cannot read {what} {}: {e}", path.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| {
            TransportError::Config(format!("invalid PEM in {what} {}: {e}", path.display()))
        })?;
    if certs.is_empty() {
        return Err(TransportError::Config(format!(
            "{what} {} contains no certificate",
            path.display()
        )));
    }
    Ok(certs)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>, TransportError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| {
        TransportError::Config(format!("cannot read private key {}: {e}", path.display()))
    })
}

fn roots(ca: &Path) -> Result<Arc<RootCertStore>, TransportError> {
    let mut roots = RootCertStore::empty();
    for c in certs(ca, "CA file")? {
        roots.add(c).map_err(|e| {
            TransportError::Config(format!("invalid CA certificate in {}: {e}", ca.display()))
        })?;
    }
    Ok(Arc::new(roots))
}

fn config_err(what: &str) -> impl Fn(rustls::Error) -> TransportError + '_ {
    move |e| TransportError::Config(format!("{what}: {e}"))
}

/// The acceptor of a `tls` serve.
pub(crate) fn server(f: &TlsServerFiles) -> Result<tokio_rustls::TlsAcceptor, TransportError> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(&f.ca)?, provider())
        .build()
        .map_err(|e| TransportError::Config(format!("client certificate verifier: {e}")))?;
    let cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(config_err("tls server"))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs(&f.cert, "certificate")?, key(&f.key)?)
        .map_err(config_err("tls server certificate/key"))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}

/// The connector of a `tls` connect.
pub(crate) fn client(
    f: &TlsClientFiles,
) -> Result<(tokio_rustls::TlsConnector, ServerName<'static>), TransportError> {
    let cfg = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(config_err("tls client"))?
        .with_root_certificates(roots(&f.ca)?)
        .with_client_auth_cert(certs(&f.cert, "certificate")?, key(&f.key)?)
        .map_err(config_err("tls client certificate/key"))?;
    let name = ServerName::try_from(f.server_cn.clone())
        .map_err(|e| TransportError::Config(format!("invalid server_cn {:?}: {e}", f.server_cn)))?;
    Ok((tokio_rustls::TlsConnector::from(Arc::new(cfg)), name))
}

/// The subject common name of a DER certificate.
pub fn cert_common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}
