//! The root CA: generating it, loading it from the store, and acting as the
//! issuer of what it signs (node certificates in `signing`, a new root's
//! cross-signed copy in `rotation`).

use std::fmt;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber, PKCS_ECDSA_P256_SHA256,
};
use rustls::pki_types::CertificateDer;

use crate::error::CaError;
use crate::pem::{first_cert_der, pem_encode_cert, sha256_hex};

/// Common name of the cluster CA certificate.
pub const CA_COMMON_NAME: &str = "swarm-ca";
const CA_VALIDITY: Duration = Duration::from_secs(20 * 365 * 24 * 3600);
/// Certificates start this long in the past (at most a tenth of their
/// validity), to tolerate clock skew.
pub(crate) const BACKDATE: Duration = Duration::from_secs(3600);

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
    pub(crate) fn issuer(&self) -> Result<Issuer<'static, KeyPair>, CaError> {
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

    /// The CA certificate, DER.
    pub(crate) fn cert_der(&self) -> &[u8] {
        &self.cert_der
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
}

impl fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterCa")
            .field("digest", &self.digest)
            .finish_non_exhaustive()
    }
}

/// The parameters of a root CA certificate: CN "swarm-ca", 20 years.
pub(crate) fn ca_params() -> Result<CertificateParams, CaError> {
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

pub(crate) fn random_serial() -> Result<SerialNumber, CaError> {
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
