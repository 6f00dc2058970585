//! TLS for the listener: `--tls-cert` and `--tls-key` (PEM) made into a rustls
//! `ServerConfig`, which `start` binds with actix-web's `listen_rustls_0_23`.
//!
//! The crypto provider is named here (ring) rather than taken from a process-wide default,
//! so nothing else linked into the binary can change it. TLS 1.2 and 1.3, rustls's safe
//! defaults; ALPN `http/1.1` (actix-web adds it). Every failure names the file it is about,
//! and stops the server at start.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Reads the certificate chain at `cert` and the private key at `key`, both PEM.
pub fn server_config(cert: &Path, key: &Path) -> anyhow::Result<ServerConfig> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("cannot read the TLS certificate {}", cert.display()))?;
    if chain.is_empty() {
        bail!(
            "the TLS certificate file {} holds no certificate (PEM `BEGIN CERTIFICATE`)",
            cert.display()
        );
    }
    let private = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("cannot read a TLS private key from {}", key.display()))?;
    ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .context("the TLS provider supports no protocol version")?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .with_context(|| {
            format!(
                "the TLS key {} cannot serve the certificate {}",
                key.display(),
                cert.display()
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_file_is_named() {
        let dir = std::env::temp_dir();
        let cert = dir.join("roomcast-no-such-cert.pem");
        let key = dir.join("roomcast-no-such-key.pem");
        let err = format!("{:#}", server_config(&cert, &key).unwrap_err());
        assert!(err.contains(&cert.display().to_string()), "{err}");
    }
}
