//! Optional TLS: the gateway's listener (HTTPS and `wss://`) and its gRPC
//! channels to nodes (`https://`), both with rustls on the `ring` provider.
//!
//! Certificates and keys are PEM files. The server side offers HTTP/1.1
//! over ALPN (WebSocket upgrades are HTTP/1.1). A handshake is bounded by
//! `Limits::header_read_timeout`, like the request head that follows it, so
//! a client that opens a connection and says nothing holds it only that long.

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::Error;

/// A server certificate chain and its private key, as PEM files.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The rustls server configuration of `files`.
pub fn server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, Error> {
    let certs = read_certs(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| Error::Tls {
        path: files.key.clone(),
        reason: format!("no private key: {e}"),
    })?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| Error::Tls {
        path: files.cert.clone(),
        reason: e.to_string(),
    })?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| Error::Tls {
        path: files.cert.clone(),
        reason: e.to_string(),
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The certificates of a PEM file (at least one).
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| Error::Tls {
            path: path.to_owned(),
            reason: format!("unreadable certificates: {e}"),
        })?;
    if certs.is_empty() {
        return Err(Error::Tls {
            path: path.to_owned(),
            reason: "no certificate in the file".into(),
        });
    }
    Ok(certs)
}

/// The gRPC client side: channels to nodes verify the nodes' certificates
/// against the CA certificates in `ca` (a PEM file).
pub fn node_client_config(ca: &Path) -> Result<tonic::transport::ClientTlsConfig, Error> {
    let pem = std::fs::read(ca).map_err(|e| Error::Tls {
        path: ca.to_owned(),
        reason: e.to_string(),
    })?;
    // Checked here, so a wrong file fails at start rather than on the first
    // call.
    read_certs(ca)?;
    Ok(tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(pem)))
}
