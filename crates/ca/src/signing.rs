//! Signing node certificates with the root CA, and checking a certificate
//! was signed by it.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime};

use rcgen::{
    CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, KeyUsagePurpose, SanType,
};

use crate::authority::{random_serial, ClusterCa, BACKDATE};
use crate::error::CaError;
use crate::identity::{identity_of, CertRole};
use crate::pem::cert_der_from;
use crate::tls::TLS_SERVER_NAME;

/// How long node certificates last unless `swarm update --cert-expiry` says
/// otherwise (Docker's default, 2160h).
pub const NODE_VALIDITY: Duration = Duration::from_secs(90 * 24 * 3600);

impl ClusterCa {
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
            x509_parser::parse_x509_certificate(self.cert_der()).map_err(|e| CaError::Parse {
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
