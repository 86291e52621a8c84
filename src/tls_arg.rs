//! `--tls-cert` / `--tls-key`: optional TLS (rustls) for a process's
//! client-facing listeners — ChatService (gRPC) and the gateway (HTTPS,
//! `wss://`). Both flags or neither; PEM files. The internal replication
//! service stays as it is: its callers prove themselves with the cluster
//! secret, and it listens where only the cluster should reach it.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use missive_gateway::tls::{self, TlsFiles};

/// A certificate chain and key for the client-facing listeners.
#[derive(Debug, Clone, clap::Args)]
pub struct TlsArgs {
    /// The certificate chain (PEM) to serve TLS with; needs --tls-key.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM); needs --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

impl TlsArgs {
    /// The files, when TLS is on.
    pub fn files(&self) -> Option<TlsFiles> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => None,
        }
    }

    /// ChatService's TLS configuration, when TLS is on.
    pub fn grpc(&self) -> anyhow::Result<Option<tonic::transport::ServerTlsConfig>> {
        let Some(f) = self.files() else {
            return Ok(None);
        };
        let cert =
            std::fs::read(&f.cert).with_context(|| format!("reading {}", f.cert.display()))?;
        let key = std::fs::read(&f.key).with_context(|| format!("reading {}", f.key.display()))?;
        // Parsed here too, so a bad file stops the start with its name
        // rather than failing every handshake later.
        tls::server_config(&f)?;
        Ok(Some(
            tonic::transport::ServerTlsConfig::new()
                .identity(tonic::transport::Identity::from_pem(cert, key)),
        ))
    }

    /// The gateway listener's TLS configuration, when TLS is on.
    pub fn gateway(
        &self,
    ) -> anyhow::Result<Option<Arc<missive_gateway::tls::rustls::ServerConfig>>> {
        self.files()
            .map(|f| tls::server_config(&f))
            .transpose()
            .map_err(Into::into)
    }
}
