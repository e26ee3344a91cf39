//! PEM and DER plumbing shared by the CA's modules: digests, encoding a
//! certificate as PEM, reading certificate chains and keys.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use crate::error::CaError;

pub(crate) fn sha256_hex(data: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, data);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn pem_encode_cert(der: &[u8]) -> String {
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
pub(crate) fn cert_der_from(cert: &[u8]) -> Result<Vec<u8>, CaError> {
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

pub(crate) fn cert_chain_der(pem: &str, what: &'static str) -> Result<Vec<Vec<u8>>, CaError> {
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

pub(crate) fn first_cert_der(pem: &str, what: &'static str) -> Result<Vec<u8>, CaError> {
    Ok(cert_chain_der(pem, what)?.swap_remove(0))
}

pub(crate) fn check_key(key_pem: &str) -> Result<(), CaError> {
    rustls::pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map(drop)
        .map_err(|e| CaError::Parse {
            what: "node key",
            reason: e.to_string(),
        })
}
