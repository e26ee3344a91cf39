//! The cluster CA: node certificates, join tokens and the mTLS configs every
//! node-to-node gRPC connection uses.
//!
//! `swarm init` creates a self-signed ECDSA P-256 CA ([`ClusterCa::generate`]).
//! Trust model: a join token `SWMTKN-1-<CA digest>-<secret>` pins the CA by
//! the sha256 of its certificate, so a joining node can fetch the root over
//! an unauthenticated TLS connection ([`fetch_root_ca`]) and check it against
//! the token before trusting anything; the secret (one per role) then proves
//! to the manager that the joiner may have a certificate of that role. A node
//! generates its own key and sends only a CSR ([`new_node_key`]); the manager
//! signs a certificate whose subject carries the node id (CN) and role (OU
//! `swarm-manager` / `swarm-worker`) ([`ClusterCa::sign_node`]), and services
//! read both back from the verified peer certificate ([`peer_identity`]). Key
//! material never leaves the node that made it, except the CA key, which
//! lives in the managers' replicated store so any manager can sign.
//!
//! Everything here uses the ring crypto provider explicitly.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
    PKCS_ECDSA_P256_SHA256,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

#[cfg(test)]
mod tests;
#[cfg(test)]
mod token_properties;

/// The DNS name every node certificate carries and every client dials, so a
/// client does not need to know the node id of the manager it reaches.
pub const TLS_SERVER_NAME: &str = "shoal";

/// Common name of the cluster CA certificate.
pub const CA_COMMON_NAME: &str = "swarm-ca";

const TOKEN_PREFIX: &str = "SWMTKN-1-";
const CA_VALIDITY: Duration = Duration::from_secs(20 * 365 * 24 * 3600);
/// How long node certificates last unless `swarm update --cert-expiry` says
/// otherwise (Docker's default, 2160h).
pub const NODE_VALIDITY: Duration = Duration::from_secs(90 * 24 * 3600);
/// Certificates start this long in the past (at most a tenth of their
/// validity), to tolerate clock skew.
const BACKDATE: Duration = Duration::from_secs(3600);
/// A node renews its certificate at a random point between these fractions
/// of its validity (swarmkit's `CertLowerRotationRange`/`CertUpperRotationRange`),
/// so a cluster's nodes do not all renew at once.
const RENEW_FROM: f64 = 0.5;
const RENEW_UNTIL: f64 = 0.8;

/// Errors of the cluster CA, token handling and TLS setup.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// Key or certificate generation failed in rcgen.
    #[error("{what}: {source}")]
    Generate {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
    /// A PEM/DER input could not be parsed or is not what it should be.
    #[error("invalid {what}: {reason}")]
    Parse { what: &'static str, reason: String },
    /// The node id cannot go into a certificate.
    #[error("invalid node id {node_id:?}: must be non-empty and use only a-z, 0-9, '-' and '.'")]
    InvalidNodeId { node_id: String },
    /// The join token is malformed.
    #[error("invalid join token: must look like SWMTKN-1-<64 hex digits>-<secret>")]
    InvalidToken,
    /// A certificate was not issued by this CA, or is expired.
    #[error("certificate not trusted by the cluster CA: {reason}")]
    Untrusted { reason: String },
    /// The manager could not be reached (connect failed or timed out).
    #[error("cannot reach manager at {addr}: {source}")]
    Unreachable {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// TCP connected but the TLS handshake failed.
    #[error("TLS handshake with manager at {addr} failed: {source}")]
    Handshake {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// The manager's CA is not the one the join token pins.
    #[error(
        "the manager at {addr} presented a CA that does not match the join token (token for another cluster?)"
    )]
    CaMismatch { addr: String },
    /// Building a TLS configuration failed.
    #[error("build TLS config: {reason}")]
    Tls { reason: String },
}

/// The role a node certificate grants, carried in the subject's OU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CertRole {
    Manager,
    Worker,
}

/// The cluster CA: certificate, private key and the digest tokens pin.
#[derive(Clone)]
pub struct ClusterCa {
    /// The self-signed CA certificate, PEM.
    cert_pem: String,
    /// The CA private key (PKCS#8 PEM); lives in the replicated store.
    key_pem: String,
    /// The CA certificate, DER (what the digest is computed over).
    cert_der: Vec<u8>,
    /// sha256 of `cert_der`, lowercase hex.
    digest: String,
}

/// A node's freshly generated key and the CSR sent to a manager for signing.
#[derive(Clone)]
pub struct NodeKey {
    /// The node's private key (PKCS#8 PEM); never leaves the node.
    pub key_pem: String,
    /// PKCS#10 certificate request for `key_pem`.
    pub csr_pem: String,
}

/// The two parts of a join token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// sha256 of the cluster CA certificate, lowercase hex.
    pub ca_digest: String,
    /// The role secret.
    pub secret: String,
}

// === impl CertRole ===

impl CertRole {
    /// The OU string in certificates.
    pub fn as_str(self) -> &'static str {
        match self {
            CertRole::Manager => "swarm-manager",
            CertRole::Worker => "swarm-worker",
        }
    }

    fn from_ou(ou: &str) -> Option<CertRole> {
        match ou {
            "swarm-manager" => Some(CertRole::Manager),
            "swarm-worker" => Some(CertRole::Worker),
            _ => None,
        }
    }
}

impl fmt::Display for CertRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<CertRole> for shoal_api::pb::NodeRole {
    fn from(role: CertRole) -> Self {
        match role {
            CertRole::Manager => shoal_api::pb::NodeRole::Manager,
            CertRole::Worker => shoal_api::pb::NodeRole::Worker,
        }
    }
}

impl From<shoal_api::pb::NodeRole> for CertRole {
    fn from(role: shoal_api::pb::NodeRole) -> Self {
        match role {
            shoal_api::pb::NodeRole::Manager => CertRole::Manager,
            shoal_api::pb::NodeRole::Worker => CertRole::Worker,
        }
    }
}

// === impl ClusterCa ===

impl ClusterCa {
    /// Creates a new self-signed CA: CN "swarm-ca", ECDSA P-256, 20 years.
    pub fn generate() -> Result<ClusterCa, CaError> {
        let key =
            KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|source| CaError::Generate {
                what: "generate CA key",
                source,
            })?;
        let cert = ca_params()?
            .self_signed(&key)
            .map_err(|source| CaError::Generate {
                what: "self-sign CA certificate",
                source,
            })?;
        Ok(ClusterCa::new(
            cert.pem(),
            key.serialize_pem(),
            cert.der().to_vec(),
        ))
    }

    /// `new_root`'s certificate signed by this CA (same subject and key as
    /// the new root), PEM: during a root rotation, a node that trusts only
    /// this (old) root verifies certificates of the new root through it, so
    /// nodes on either root accept each other (swarmkit's cross-signed
    /// intermediate).
    /// This CA as the issuer of the certificates it signs.
    fn issuer(&self) -> Result<Issuer<'static, KeyPair>, CaError> {
        let key = KeyPair::from_pem(&self.key_pem).map_err(|e| CaError::Parse {
            what: "CA key",
            reason: e.to_string(),
        })?;
        Issuer::from_ca_cert_der(&CertificateDer::from(self.cert_der.as_slice()), key).map_err(
            |source| CaError::Generate {
                what: "load CA as issuer",
                source,
            },
        )
    }

    pub fn cross_sign(&self, new_root: &ClusterCa) -> Result<String, CaError> {
        let new_key = KeyPair::from_pem(&new_root.key_pem).map_err(|e| CaError::Parse {
            what: "new CA key",
            reason: e.to_string(),
        })?;
        let issuer = self.issuer()?;
        let cert = ca_params()?
            .signed_by(&new_key, &issuer)
            .map_err(|source| CaError::Generate {
                what: "cross-sign the new root CA",
                source,
            })?;
        Ok(cert.pem())
    }

    /// Loads a CA from its certificate and key (as stored by [`Self::cert_pem`]
    /// and [`Self::key_pem`]); checks the certificate is a CA and the key is
    /// its key.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<ClusterCa, CaError> {
        let der = first_cert_der(cert_pem, "CA certificate")?;
        let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|e| CaError::Parse {
            what: "CA certificate",
            reason: e.to_string(),
        })?;
        if !cert.is_ca() {
            return Err(CaError::Parse {
                what: "CA certificate",
                reason: "not a CA certificate (basicConstraints CA is not set)".into(),
            });
        }
        let key = KeyPair::from_pem(key_pem).map_err(|e| CaError::Parse {
            what: "CA key",
            reason: e.to_string(),
        })?;
        if key.public_key_raw() != cert.public_key().subject_public_key.data.as_ref() {
            return Err(CaError::Parse {
                what: "CA key",
                reason: "it does not belong to the CA certificate".into(),
            });
        }
        let cert_pem = pem_encode_cert(&der);
        Ok(ClusterCa::new(cert_pem, key_pem.to_owned(), der))
    }

    fn new(cert_pem: String, key_pem: String, cert_der: Vec<u8>) -> ClusterCa {
        let digest = sha256_hex(&cert_der);
        ClusterCa {
            cert_pem,
            key_pem,
            cert_der,
            digest,
        }
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA private key, PEM. Store it only in the managers' replicated store.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// sha256 of the CA certificate DER, lowercase hex (64 chars).
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// Signs a node certificate for `csr_pem` (node key stays on the node):
    /// CN = node_id, OU = role, SANs: DNS node_id, DNS [`TLS_SERVER_NAME`]
    /// plus `addrs` (IPs, names or `host:port`), validity 90 days, client and
    /// server auth. Only the CSR's public key is used; its subject and
    /// extensions are ignored.
    pub fn sign_node(
        &self,
        csr_pem: &str,
        node_id: &str,
        role: CertRole,
        addrs: &[String],
    ) -> Result<String, CaError> {
        self.sign_node_valid_for(csr_pem, node_id, role, addrs, NODE_VALIDITY)
    }

    /// [`Self::sign_node`] with a certificate lasting `validity`.
    pub fn sign_node_valid_for(
        &self,
        csr_pem: &str,
        node_id: &str,
        role: CertRole,
        addrs: &[String],
        validity: Duration,
    ) -> Result<String, CaError> {
        if !valid_node_id(node_id) {
            return Err(CaError::InvalidNodeId {
                node_id: node_id.to_owned(),
            });
        }
        let csr =
            CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| CaError::Parse {
                what: "certificate signing request",
                reason: e.to_string(),
            })?;

        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, node_id);
        dn.push(DnType::OrganizationalUnitName, role.as_str());
        params.distinguished_name = dn;
        params.subject_alt_names = node_sans(node_id, addrs)?;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial()?);
        let now = SystemTime::now();
        params.not_before = (now - BACKDATE.min(validity / 10)).into();
        params.not_after = (now + validity).into();

        let issuer = self.issuer()?;
        let request = CertificateSigningRequestParams {
            params,
            public_key: csr.public_key,
        };
        let cert = request
            .signed_by(&issuer)
            .map_err(|source| CaError::Generate {
                what: "sign node certificate",
                source,
            })?;
        Ok(cert.pem())
    }

    /// Checks that `cert` (PEM or DER) was signed by this CA and is within its
    /// validity period, and returns its (node id, role).
    pub fn verify(&self, cert: &[u8]) -> Result<(String, CertRole), CaError> {
        let (_, ca) =
            x509_parser::parse_x509_certificate(&self.cert_der).map_err(|e| CaError::Parse {
                what: "CA certificate",
                reason: e.to_string(),
            })?;
        let der = cert_der_from(cert)?;
        let (_, node) = x509_parser::parse_x509_certificate(&der).map_err(|e| CaError::Parse {
            what: "node certificate",
            reason: e.to_string(),
        })?;
        node.verify_signature(Some(ca.public_key()))
            .map_err(|e| CaError::Untrusted {
                reason: format!("signature check against the CA key failed: {e}"),
            })?;
        if !node.validity().is_valid() {
            return Err(CaError::Untrusted {
                reason: format!(
                    "outside its validity period ({} to {})",
                    node.validity().not_before,
                    node.validity().not_after
                ),
            });
        }
        identity_of(&node)
    }
}

impl fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterCa")
            .field("digest", &self.digest)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeKey").finish_non_exhaustive()
    }
}

/// The parameters of a root CA certificate: CN "swarm-ca", 20 years.
fn ca_params() -> Result<CertificateParams, CaError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_COMMON_NAME);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.serial_number = Some(random_serial()?);
    let now = SystemTime::now();
    params.not_before = (now - BACKDATE).into();
    params.not_after = (now + CA_VALIDITY).into();
    Ok(params)
}

// === node keys and identities ===

/// Generates a node's P-256 key and a CSR for it.
pub fn new_node_key() -> Result<NodeKey, CaError> {
    let key =
        KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|source| CaError::Generate {
            what: "generate node key",
            source,
        })?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "swarm-node");
    params.distinguished_name = dn;
    let csr = params
        .serialize_request(&key)
        .and_then(|csr| csr.pem())
        .map_err(|source| CaError::Generate {
            what: "create certificate signing request",
            source,
        })?;
    Ok(NodeKey {
        key_pem: key.serialize_pem(),
        csr_pem: csr,
    })
}

/// The validity period (not before, not after) of a certificate (PEM or DER).
pub fn cert_validity(cert: &[u8]) -> Result<(SystemTime, SystemTime), CaError> {
    let der = cert_der_from(cert)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|e| CaError::Parse {
        what: "node certificate",
        reason: e.to_string(),
    })?;
    let at = |t: x509_parser::time::ASN1Time| {
        let secs = t.timestamp();
        if secs < 0 {
            SystemTime::UNIX_EPOCH
        } else {
            SystemTime::UNIX_EPOCH + Duration::from_secs(secs as u64)
        }
    };
    Ok((
        at(cert.validity().not_before),
        at(cert.validity().not_after),
    ))
}

/// When a certificate valid from `not_before` to `not_after` should be
/// renewed: at `position` (0 to 1, drawn at random by the caller) of the way
/// between half and 80% of its validity, as swarmkit's
/// `calculateRandomExpiry`. A certificate already past that point (or with
/// no validity at all) is due at `not_before`, i.e. now.
pub fn renewal_time(not_before: SystemTime, not_after: SystemTime, position: f64) -> SystemTime {
    let life = not_after
        .duration_since(not_before)
        .unwrap_or(Duration::ZERO);
    let position = if position.is_finite() {
        position.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let fraction = RENEW_FROM + (RENEW_UNTIL - RENEW_FROM) * position;
    not_before + life.mul_f64(fraction)
}

/// A uniformly random number in [0, 1) from the system's secure generator
/// (0.5 if it fails).
pub fn random_fraction() -> f64 {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 8];
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

/// sha256 of each certificate in `pem`, lowercase hex, in order (how a node
/// tells which roots it trusts; the first is the one that signs).
pub fn pem_digests(pem: &str) -> Result<Vec<String>, CaError> {
    Ok(cert_chain_der(pem, "certificate")?
        .iter()
        .map(|der| sha256_hex(der))
        .collect())
}

/// Node id and role from a certificate (PEM or DER) issued by this CA. This
/// only parses; use [`ClusterCa::verify`] or a verifying TLS layer to check
/// who issued it.
pub fn cert_identity(cert_der: &[u8]) -> Result<(String, CertRole), CaError> {
    let der = cert_der_from(cert_der)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|e| CaError::Parse {
        what: "node certificate",
        reason: e.to_string(),
    })?;
    identity_of(&cert)
}

fn identity_of(
    cert: &x509_parser::certificate::X509Certificate<'_>,
) -> Result<(String, CertRole), CaError> {
    let bad = |reason: String| CaError::Parse {
        what: "node certificate",
        reason,
    };
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .ok_or_else(|| bad("no common name (node id) in the subject".into()))?
        .as_str()
        .map_err(|e| bad(format!("common name: {e}")))?;
    let ou = cert
        .subject()
        .iter_organizational_unit()
        .next()
        .ok_or_else(|| bad("no organizational unit (role) in the subject".into()))?
        .as_str()
        .map_err(|e| bad(format!("organizational unit: {e}")))?;
    let role = CertRole::from_ou(ou).ok_or_else(|| {
        bad(format!(
            "unknown role {ou:?} (want swarm-manager or swarm-worker)"
        ))
    })?;
    if cn.is_empty() {
        return Err(bad("empty common name (node id)".into()));
    }
    Ok((cn.to_owned(), role))
}

// === join tokens ===

/// A new role secret: 25 lowercase base36 characters.
pub fn new_token_secret() -> String {
    shoal_api::id::new_id()
}

/// `SWMTKN-1-<digest>-<secret>`.
pub fn format_token(ca_digest: &str, secret: &str) -> String {
    format!("{TOKEN_PREFIX}{ca_digest}-{secret}")
}

/// Parses `SWMTKN-1-<64 hex digits>-<secret>` (surrounding whitespace is
/// ignored; the digest may be in either case).
pub fn parse_token(token: &str) -> Result<JoinToken, CaError> {
    let rest = token
        .trim()
        .strip_prefix(TOKEN_PREFIX)
        .ok_or(CaError::InvalidToken)?;
    let (digest, secret) = rest.split_once('-').ok_or(CaError::InvalidToken)?;
    if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(CaError::InvalidToken);
    }
    if secret.is_empty() || !secret.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(CaError::InvalidToken);
    }
    Ok(JoinToken {
        ca_digest: digest.to_ascii_lowercase(),
        secret: secret.to_owned(),
    })
}

/// True when the token pins `ca_digest` and carries `secret` (the secret is
/// compared in constant time).
pub fn token_matches(token: &JoinToken, ca_digest: &str, secret: &str) -> bool {
    let digest_ok = token.ca_digest.eq_ignore_ascii_case(ca_digest);
    let secret_ok = constant_time_eq(token.secret.as_bytes(), secret.as_bytes());
    digest_ok & secret_ok
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

// === fetching the root CA ===

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

// === tonic TLS configs ===

/// Installs ring as the process-wide rustls provider (tonic's server builds
/// its config from the process default). Safe to call more than once.
pub fn install_crypto_provider() {
    // Err means a provider is already installed; that is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn ring_provider() -> Arc<CryptoProvider> {
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
fn root_store(pem: &str) -> Result<rustls::RootCertStore, CaError> {
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

// === helpers ===

fn valid_node_id(node_id: &str) -> bool {
    !node_id.is_empty()
        && node_id.len() <= 63
        && node_id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

/// SANs for a node certificate: its id, the shared server name, and each
/// address (an IP, a name, or `host:port` of either).
fn node_sans(node_id: &str, addrs: &[String]) -> Result<Vec<SanType>, CaError> {
    let dns = |name: &str| -> Result<SanType, CaError> {
        let ia5 = name
            .to_owned()
            .try_into()
            .map_err(|e: rcgen::Error| CaError::Parse {
                what: "certificate address",
                reason: format!("{name:?}: {e}"),
            })?;
        Ok(SanType::DnsName(ia5))
    };
    let mut sans = vec![dns(node_id)?, dns(TLS_SERVER_NAME)?];
    for addr in addrs {
        let addr = addr.trim();
        if addr.is_empty() {
            continue;
        }
        let san = if let Ok(ip) = addr.parse::<IpAddr>() {
            SanType::IpAddress(ip)
        } else if let Ok(sa) = addr.parse::<SocketAddr>() {
            SanType::IpAddress(sa.ip())
        } else {
            let host = match addr.rsplit_once(':') {
                Some((host, port)) if port.parse::<u16>().is_ok() => host,
                _ => addr,
            };
            match host.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => dns(host)?,
            }
        };
        if !sans.contains(&san) {
            sans.push(san);
        }
    }
    Ok(sans)
}

fn random_serial() -> Result<SerialNumber, CaError> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| CaError::Tls {
            reason: "system random number generator failed".into(),
        })?;
    bytes[0] &= 0x7f; // positive
    bytes[0] |= 0x01; // and no leading zero byte
    Ok(SerialNumber::from_slice(&bytes))
}

fn sha256_hex(data: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, data);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn pem_encode_cert(der: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::with_capacity(der.len().div_ceil(3) * 4);
    for chunk in der.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                b64.push('=');
            }
        }
    }
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        // The alphabet is ASCII, so every chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// DER of a certificate given as PEM or DER.
fn cert_der_from(cert: &[u8]) -> Result<Vec<u8>, CaError> {
    if cert.trim_ascii_start().starts_with(b"-----BEGIN") {
        CertificateDer::from_pem_slice(cert)
            .map(|c| c.as_ref().to_vec())
            .map_err(|e| CaError::Parse {
                what: "certificate PEM",
                reason: e.to_string(),
            })
    } else {
        Ok(cert.to_vec())
    }
}

fn cert_chain_der(pem: &str, what: &'static str) -> Result<Vec<Vec<u8>>, CaError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(|c| c.map(|c| c.as_ref().to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CaError::Parse {
            what,
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(CaError::Parse {
            what,
            reason: "no CERTIFICATE block in the PEM".into(),
        });
    }
    Ok(certs)
}

fn first_cert_der(pem: &str, what: &'static str) -> Result<Vec<u8>, CaError> {
    Ok(cert_chain_der(pem, what)?.swap_remove(0))
}

fn check_key(key_pem: &str) -> Result<(), CaError> {
    rustls::pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map(drop)
        .map_err(|e| CaError::Parse {
            what: "node key",
            reason: e.to_string(),
        })
}
