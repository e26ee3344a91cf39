//! The root CA: generating it, loading it from the store, signing node
//! certificates with it, checking a certificate was signed by it, and
//! cross-signing a new root during a rotation.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
    PKCS_ECDSA_P256_SHA256,
};
use rustls::pki_types::CertificateDer;

use crate::identity::{identity_of, CertRole};
use crate::pem::{cert_der_from, first_cert_der, pem_encode_cert, sha256_hex};
use crate::{CaError, TLS_SERVER_NAME};

/// Common name of the cluster CA certificate.
pub const CA_COMMON_NAME: &str = "swarm-ca";
const CA_VALIDITY: Duration = Duration::from_secs(20 * 365 * 24 * 3600);
/// How long node certificates last unless `swarm update --cert-expiry` says
/// otherwise (Docker's default, 2160h).
pub const NODE_VALIDITY: Duration = Duration::from_secs(90 * 24 * 3600);
/// Certificates start this long in the past (at most a tenth of their
/// validity), to tolerate clock skew.
const BACKDATE: Duration = Duration::from_secs(3600);

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

    /// `new_root`'s certificate signed by this CA (same subject and key as
    /// the new root), PEM: during a root rotation, a node that trusts only
    /// this (old) root verifies certificates of the new root through it, so
    /// nodes on either root accept each other (swarmkit's cross-signed
    /// intermediate).
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
