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
//! - `authority`: the root CA ([`ClusterCa`]): generating and loading it.
//! - `signing`: node certificates it signs ([`ClusterCa::sign_node`]), and
//!   checking one was ([`ClusterCa::verify`]).
//! - `rotation`: cross-signing a new root ([`ClusterCa::cross_sign`]).
//! - `token`: join tokens ([`parse_token`], [`format_token`], [`token_matches`]).
//! - `identity`: a node's key and CSR ([`new_node_key`]), the role a
//!   certificate grants ([`CertRole`]), its validity and renewal time.
//! - `fetch`: fetching and pinning the root CA a join token names ([`fetch_root_ca`]).
//! - `tls`: the tonic and rustls mTLS configs, and [`peer_identity`].
//! - `pem`: PEM/DER helpers and digests.
//! - `error`: [`CaError`].
#![forbid(unsafe_code)]

mod authority;
mod error;
mod fetch;
mod identity;
mod pem;
mod rotation;
mod signing;
mod tls;
mod token;

#[cfg(test)]
mod tests;

pub use authority::{ClusterCa, CA_COMMON_NAME};
pub use error::CaError;
pub use fetch::fetch_root_ca;
pub use identity::{
    cert_identity, cert_validity, new_node_key, pem_digests, random_fraction, renewal_time,
    CertRole, NodeKey,
};
pub use signing::NODE_VALIDITY;
pub use tls::{
    client_tls, install_crypto_provider, peer_identity, rustls_client_config, rustls_server_config,
    server_tls, TLS_SERVER_NAME,
};
pub use token::{format_token, new_token_secret, parse_token, token_matches, JoinToken};
