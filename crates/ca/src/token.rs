//! Join tokens: `SWMTKN-1-<CA digest>-<secret>`. The digest pins the
//! cluster CA for a joining node; the secret (one per role) proves to the
//! manager which role the joiner may take.

use crate::error::CaError;

#[cfg(test)]
mod properties;

const TOKEN_PREFIX: &str = "SWMTKN-1-";

/// The two parts of a join token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// sha256 of the cluster CA certificate, lowercase hex.
    pub ca_digest: String,
    /// The role secret.
    pub secret: String,
}

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
