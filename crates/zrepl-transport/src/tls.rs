//! TLS with mandatory client certificates (rustls). The client identity is the subject CN of the
//! client's certificate (exactly one CN; see [`cert_common_name`]); the server is verified
//! against `ca` under the name `server_cn`. Certificates outside their validity period are
//! refused on both sides (webpki checks `notBefore`/`notAfter` against the clock).
//!
//! Renewed certificates, keys and CAs are used without a restart: [`Reloading`] compares the
//! files' metadata before every handshake and rebuilds the configuration when one changed
//! (zrepl#202). A file that does not load keeps the previous configuration in use and is
//! reported once per change.

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

/// The subject common name of a DER certificate: the client identity. A certificate with no CN
/// or with several is refused (zrepl 0.7 takes the last CN, an earlier version of ours the
/// first: with two, which identity a client gets would depend on a detail nobody checks).
pub fn cert_common_name(der: &[u8]) -> Result<String, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("cannot parse the certificate: {e}"))?;
    let cns: Vec<_> = cert.subject().iter_common_name().collect();
    match cns.as_slice() {
        [] => Err("the certificate has no common name".into()),
        [cn] => cn
            .as_str()
            .map(str::to_string)
            .map_err(|e| format!("the certificate's common name is not a string: {e}")),
        more => Err(format!(
            "the certificate has {} common names; exactly one is required",
            more.len()
        )),
    }
}

/// What identifies a version of a file: a renewed file differs in at least one of these.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    modified: Option<std::time::SystemTime>,
    len: u64,
    ino: u64,
}

fn stamp(p: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(p).ok()?;
    Some(Stamp {
        modified: m.modified().ok(),
        len: m.len(),
        ino: m.ino(),
    })
}

/// A TLS configuration built from files, rebuilt when they change.
pub struct Reloading<T> {
    what: String,
    files: Vec<PathBuf>,
    build: Box<dyn Fn() -> Result<T, TransportError> + Send + Sync>,
    state: std::sync::Mutex<(Vec<Option<Stamp>>, T)>,
}

impl<T: Clone> Reloading<T> {
    /// Builds the configuration now (an error here is a config error: nothing runs yet).
    pub(crate) fn new(
        what: impl Into<String>,
        files: Vec<PathBuf>,
        build: impl Fn() -> Result<T, TransportError> + Send + Sync + 'static,
    ) -> Result<Self, TransportError> {
        let stamps = files.iter().map(|f| stamp(f)).collect();
        let t = build()?;
        Ok(Reloading {
            what: what.into(),
            files,
            build: Box::new(build),
            state: std::sync::Mutex::new((stamps, t)),
        })
    }

    /// The configuration for the next handshake: rebuilt first if a file changed since the
    /// last look. If the changed files do not load (a renewal half written, a key that does not
    /// match), the previous configuration stays in use and the error is logged once.
    pub(crate) fn current(&self) -> T {
        let stamps: Vec<Option<Stamp>> = self.files.iter().map(|f| stamp(f)).collect();
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.0 != stamps {
            st.0 = stamps;
            match (self.build)() {
                Ok(t) => {
                    tracing::info!(tls = %self.what, "certificate files changed: reloaded");
                    st.1 = t;
                }
                Err(e) => tracing::warn!(
                    tls = %self.what,
                    error = %e,
                    "certificate files changed but do not load; still using the previous ones"
                ),
            }
        }
        st.1.clone()
    }
}
