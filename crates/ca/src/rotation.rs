//! Root rotation (`swarm ca --rotate`): the new root's certificate signed by
//! the old one, so nodes that trust either root accept each other while the
//! cluster moves over.

use rcgen::KeyPair;

use crate::authority::{ca_params, ClusterCa};
use crate::error::CaError;

impl ClusterCa {
    /// `new_root`'s certificate signed by this CA (same subject and key as
    /// the new root), PEM: during a root rotation, a node that trusts only
    /// this (old) root verifies certificates of the new root through it, so
    /// nodes on either root accept each other (swarmkit's cross-signed
    /// intermediate).
    pub fn cross_sign(&self, new_root: &ClusterCa) -> Result<String, CaError> {
        let new_key = KeyPair::from_pem(new_root.key_pem()).map_err(|e| CaError::Parse {
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
}
