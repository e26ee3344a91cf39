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
//! lives in the managers' replicated store so any manager can sign. Everything
//! here uses the ring crypto provider explicitly.
//!
//! # Layout
//! - `authority`: the root CA ([`ClusterCa`]): generation, signing node
//!   certificates, verification, cross-signing a new root.
//! - `token`: join tokens ([`parse_token`], [`format_token`], [`token_matches`]).
//! - `identity`: a node's key and CSR ([`new_node_key`]), the role a
//!   certificate grants ([`CertRole`]), its validity and renewal time.
//! - `fetch`: fetching and pinning the root CA a join token names ([`fetch_root_ca`]).
//! - `tls`: the tonic and rustls mTLS configs, and [`peer_identity`].
//! - `pem`: PEM/DER helpers and digests.
#![forbid(unsafe_code)]

mod authority;
mod fetch;
mod identity;
mod pem;
mod tls;
mod token;

#[cfg(test)]
mod tests;

pub use authority::{ClusterCa, CA_COMMON_NAME, NODE_VALIDITY};
pub use fetch::fetch_root_ca;
pub use identity::{
    cert_identity, cert_validity, new_node_key, pem_digests, random_fraction, renewal_time,
    CertRole, NodeKey,
};
pub use tls::{
    client_tls, install_crypto_provider, peer_identity, rustls_client_config, rustls_server_config,
    server_tls,
};
pub use token::{format_token, new_token_secret, parse_token, token_matches, JoinToken};

/// The DNS name every node certificate carries and every client dials, so a
/// client does not need to know the node id of the manager it reaches.
pub const TLS_SERVER_NAME: &str = "shoal";

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
