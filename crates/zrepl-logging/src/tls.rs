//! The TLS client configuration of the tcp outlet.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use zrepl_config::TcpOutletTls;

use crate::LoggingError;

/// Client certificate and key from `cert`/`key`, trust anchors from `ca` or, without it, the
/// system's trust store.
pub fn client_config(tls: &TcpOutletTls) -> Result<Arc<ClientConfig>, LoggingError> {
    let err = |path: &str, what: &str, e: &dyn std::fmt::Display| LoggingError::Tls {
        path: path.to_string(),
        msg: format!("{what}: {e}"),
    };
    let mut roots = RootCertStore::empty();
    match &tls.ca {
        Some(ca) => {
            let certs = CertificateDer::pem_file_iter(ca)
                .map_err(|e| err(ca, "cannot read CA certificates", &e))?;
            for c in certs {
                let c = c.map_err(|e| err(ca, "invalid CA certificate", &e))?;
                roots
                    .add(c)
                    .map_err(|e| err(ca, "invalid CA certificate", &e))?;
            }
            if roots.is_empty() {
                return Err(err(ca, "no CA certificate in file", &"empty"));
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            for c in native.certs {
                let _ = roots.add(c);
            }
            if roots.is_empty() {
                return Err(LoggingError::Tls {
                    path: "(system trust store)".into(),
                    msg: "no system root certificates found; set tls.ca".into(),
                });
            }
        }
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&tls.cert)
        .map_err(|e| err(&tls.cert, "cannot read certificate", &e))?
        .collect::<Result<_, _>>()
        .map_err(|e| err(&tls.cert, "invalid certificate", &e))?;
    if chain.is_empty() {
        return Err(err(&tls.cert, "no certificate in file", &"empty"));
    }
    let key = PrivateKeyDer::from_pem_file(&tls.key)
        .map_err(|e| err(&tls.key, "cannot read private key", &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| err(&tls.cert, "TLS setup", &e))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| err(&tls.key, "certificate and key do not fit together", &e))?;
    Ok(Arc::new(cfg))
}

/// The TLS server name: the host part of `address` (a DNS name or an IP address).
pub fn server_name(address: &str) -> Result<ServerName<'static>, LoggingError> {
    let host = crate::split_host(address)?;
    ServerName::try_from(host.to_string())
        .map_err(|e| LoggingError::Address(format!("{address}: invalid TLS server name: {e}")))
}
