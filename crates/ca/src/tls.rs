//! The mTLS configurations every node-to-node connection uses, built from a
//! node's key material: tonic's server and client configs, the rustls
//! configs of the node listener and of channels to managers (swapped per
//! connection after a renewal), and reading the verified peer's identity
//! back from a request.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::error::CaError;
use crate::identity::{cert_identity, CertRole};
use crate::pem::{cert_chain_der, check_key, pem_encode_cert};

/// The DNS name every node certificate carries and every client dials, so a
/// client does not need to know the node id of the manager it reaches.
pub const TLS_SERVER_NAME: &str = "shoal";

/// Installs ring as the process-wide rustls provider (tonic's server builds
/// its config from the process default). Safe to call more than once.
pub fn install_crypto_provider() {
    // Err means a provider is already installed; that is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub(crate) fn ring_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// tonic server TLS: our chain (node cert + CA, so [`fetch_root_ca`] can find
/// the CA) and key; client certificates from the CA are verified but
/// OPTIONAL at the TLS layer (the join RPC has none): services check peers
/// with [`peer_identity`].
pub fn server_tls(ca_pem: &str, cert_pem: &str, key_pem: &str) -> Result<ServerTlsConfig, CaError> {
    install_crypto_provider();
    let roots = cert_chain_der(ca_pem, "CA certificate")?;
    let chain = cert_chain_der(cert_pem, "node certificate")?;
    check_key(key_pem)?;
    let mut chain_pem = String::new();
    for cert in &chain {
        chain_pem.push_str(&pem_encode_cert(cert));
    }
    let mut roots_pem = String::new();
    for root in &roots {
        if !chain.contains(root) {
            chain_pem.push_str(&pem_encode_cert(root));
        }
        roots_pem.push_str(&pem_encode_cert(root));
    }
    Ok(ServerTlsConfig::new()
        .identity(Identity::from_pem(chain_pem, key_pem))
        .client_ca_root(Certificate::from_pem(roots_pem))
        .client_auth_optional(true))
}

/// tonic client TLS trusting only the cluster CA, dialling the name
/// [`TLS_SERVER_NAME`] every node certificate carries; with `identity`
/// (cert PEM, key PEM) for mTLS.
pub fn client_tls(
    ca_pem: &str,
    identity: Option<(&str, &str)>,
) -> Result<ClientTlsConfig, CaError> {
    install_crypto_provider();
    let roots = cert_chain_der(ca_pem, "CA certificate")?;
    let mut config = ClientTlsConfig::new()
        .ca_certificates(
            roots
                .iter()
                .map(|root| Certificate::from_pem(pem_encode_cert(root))),
        )
        .domain_name(TLS_SERVER_NAME);
    if let Some((cert_pem, key_pem)) = identity {
        cert_chain_der(cert_pem, "node certificate")?;
        check_key(key_pem)?;
        config = config.identity(Identity::from_pem(cert_pem, key_pem));
    }
    Ok(config)
}

/// Every certificate of `pem` (one root, or several during a CA rotation)
/// as a root store.
pub(crate) fn root_store(pem: &str) -> Result<rustls::RootCertStore, CaError> {
    let mut roots = rustls::RootCertStore::empty();
    for der in cert_chain_der(pem, "CA certificate")? {
        roots
            .add(CertificateDer::from(der))
            .map_err(|e| CaError::Tls {
                reason: format!("trust the CA certificate: {e}"),
            })?;
    }
    Ok(roots)
}

fn private_key(key_pem: &str) -> Result<rustls::pki_types::PrivateKeyDer<'static>, CaError> {
    rustls::pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| {
        CaError::Parse {
            what: "node key",
            reason: e.to_string(),
        }
    })
}

/// The node listener's rustls config, as [`server_tls`] but built here so a
/// node can swap it for each new connection after a renewal: our chain (node
/// certificate + the roots of `ca_pem`, so [`fetch_root_ca`] finds the CA),
/// client certificates from any root of `ca_pem` verified but optional,
/// HTTP/2 by ALPN.
pub fn rustls_server_config(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<rustls::ServerConfig, CaError> {
    let tls = |e: rustls::Error| CaError::Tls {
        reason: e.to_string(),
    };
    let provider = ring_provider();
    let roots = Arc::new(root_store(ca_pem)?);
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
            .allow_unauthenticated()
            .build()
            .map_err(|e| CaError::Tls {
                reason: e.to_string(),
            })?;
    let mut chain: Vec<CertificateDer<'static>> = cert_chain_der(cert_pem, "node certificate")?
        .into_iter()
        .map(CertificateDer::from)
        .collect();
    for root in cert_chain_der(ca_pem, "CA certificate")? {
        if !chain.iter().any(|c| c.as_ref() == root.as_slice()) {
            chain.push(CertificateDer::from(root));
        }
    }
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(tls)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, private_key(key_pem)?)
        .map_err(tls)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// The rustls config of this node's connections to managers: trusts the
/// roots of `ca_pem`, presents the node certificate, HTTP/2 by ALPN. Dial
/// [`TLS_SERVER_NAME`].
pub fn rustls_client_config(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<rustls::ClientConfig, CaError> {
    let tls = |e: rustls::Error| CaError::Tls {
        reason: e.to_string(),
    };
    let chain: Vec<CertificateDer<'static>> = cert_chain_der(cert_pem, "node certificate")?
        .into_iter()
        .map(CertificateDer::from)
        .collect();
    let mut config = rustls::ClientConfig::builder_with_provider(ring_provider())
        .with_safe_default_protocol_versions()
        .map_err(tls)?
        .with_root_certificates(root_store(ca_pem)?)
        .with_client_auth_cert(chain, private_key(key_pem)?)
        .map_err(tls)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// The verified peer's (node id, role) from a tonic request (the TLS layer
/// already checked the certificate against the cluster CA).
pub fn peer_identity<T>(req: &tonic::Request<T>) -> Result<(String, CertRole), tonic::Status> {
    let unauthenticated =
        || tonic::Status::unauthenticated("a node certificate from this cluster's CA is required");
    let certs = req.peer_certs().ok_or_else(unauthenticated)?;
    let leaf = certs.first().ok_or_else(unauthenticated)?;
    cert_identity(leaf.as_ref()).map_err(|_| unauthenticated())
}
