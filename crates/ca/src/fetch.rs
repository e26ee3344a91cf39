//! Fetching the root CA a join token pins, over a TLS connection that
//! trusts nothing until the presented CA matches the token's digest.

use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::error::CaError;
use crate::pem::{pem_encode_cert, sha256_hex};
use crate::tls::ring_provider;
use crate::tls::TLS_SERVER_NAME;

/// Connects to `addr` with TLS WITHOUT trusting anything, reads the
/// certificate chain the server presents, finds the CA certificate in it
/// whose sha256 equals `expected_digest`, checks the server's own certificate
/// was signed by it, and returns the CA as PEM.
pub async fn fetch_root_ca(
    addr: &str,
    expected_digest: &str,
    timeout: Duration,
) -> Result<String, CaError> {
    let unreachable = |source| CaError::Unreachable {
        addr: addr.to_owned(),
        source,
    };
    let timed_out = || {
        unreachable(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("timed out after {timeout:?}"),
        ))
    };
    let provider = ring_provider();
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| CaError::Tls {
            reason: e.to_string(),
        })?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyServerCert { provider }))
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let server_name = ServerName::try_from(TLS_SERVER_NAME).map_err(|e| CaError::Tls {
        reason: e.to_string(),
    })?;

    let deadline = tokio::time::Instant::now() + timeout;
    let tcp = tokio::time::timeout_at(deadline, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| timed_out())?
        .map_err(unreachable)?;
    let tls = tokio::time::timeout_at(deadline, connector.connect(server_name, tcp))
        .await
        .map_err(|_| timed_out())?
        .map_err(|source| CaError::Handshake {
            addr: addr.to_owned(),
            source,
        })?;
    let chain: Vec<CertificateDer<'static>> = tls
        .get_ref()
        .1
        .peer_certificates()
        .map(|certs| certs.iter().map(|c| c.clone().into_owned()).collect())
        .unwrap_or_default();
    drop(tls);

    let expected = expected_digest.to_ascii_lowercase();
    let ca = chain
        .iter()
        .find(|c| sha256_hex(c.as_ref()) == expected)
        .ok_or_else(|| CaError::CaMismatch {
            addr: addr.to_owned(),
        })?;
    let ca_pem = pem_encode_cert(ca.as_ref());
    // The server proved it holds the key of chain[0]; make sure that key is
    // certified by the pinned CA, so we know we talk to a cluster node.
    let leaf = chain.first().ok_or_else(|| CaError::CaMismatch {
        addr: addr.to_owned(),
    })?;
    verify_signed_by(leaf.as_ref(), ca.as_ref()).map_err(|_| CaError::CaMismatch {
        addr: addr.to_owned(),
    })?;
    Ok(ca_pem)
}

fn verify_signed_by(cert: &[u8], ca: &[u8]) -> Result<(), CaError> {
    let untrusted = |reason: String| CaError::Untrusted { reason };
    let (_, ca) = x509_parser::parse_x509_certificate(ca).map_err(|e| untrusted(e.to_string()))?;
    let (_, cert) =
        x509_parser::parse_x509_certificate(cert).map_err(|e| untrusted(e.to_string()))?;
    cert.verify_signature(Some(ca.public_key()))
        .map_err(|e| untrusted(e.to_string()))
}

/// Accepts any server certificate (the caller pins the CA by digest after
/// the handshake) but still checks the handshake signatures, so the server
/// proves it holds the key of the certificate it presents.
#[derive(Debug)]
struct AcceptAnyServerCert {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
