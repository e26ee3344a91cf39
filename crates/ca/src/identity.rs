//! A node's side of its certificate: the role it grants, the node's own key
//! and CSR, reading the identity and validity back from a certificate, and
//! when to renew it.

use std::fmt;
use std::time::{Duration, SystemTime};

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PKCS_ECDSA_P256_SHA256};

use crate::error::CaError;
use crate::pem::{cert_chain_der, cert_der_from, sha256_hex};

/// A node renews its certificate at a random point between these fractions
/// of its validity (swarmkit's `CertLowerRotationRange`/`CertUpperRotationRange`),
/// so a cluster's nodes do not all renew at once.
const RENEW_FROM: f64 = 0.5;
const RENEW_UNTIL: f64 = 0.8;

/// The role a node certificate grants, carried in the subject's OU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CertRole {
    Manager,
    Worker,
}

/// A node's freshly generated key and the CSR sent to a manager for signing.
#[derive(Clone)]
pub struct NodeKey {
    /// The node's private key (PKCS#8 PEM); never leaves the node.
    pub key_pem: String,
    /// PKCS#10 certificate request for `key_pem`.
    pub csr_pem: String,
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

    pub(crate) fn from_ou(ou: &str) -> Option<CertRole> {
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

impl fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeKey").finish_non_exhaustive()
    }
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

pub(crate) fn identity_of(
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
