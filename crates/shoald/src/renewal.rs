//! Certificate renewal and removal. A member renews its node certificate
//! before it expires, at a random point between half and 80% of its validity
//! (as swarmkit does, so a cluster's nodes do not all renew at once), over
//! its mTLS channel to the managers: it proves its current certificate, gets
//! one for the same node id and role, writes it and swaps it in for every new
//! connection, without a restart. Every [`STATUS_EVERY`] it also asks a
//! manager whether its certificate still stands: a node `node rm` removed is
//! refused, says so in its log and leaves the swarm; a node whose certificate
//! an older root signed (after `swarm ca --rotate`) renews at once.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use shoal_api::pb::node_ca_client::NodeCaClient;
use shoal_api::pb::{
    IssueNodeCertificateResponse, NodeCertificateStatusRequest, RenewNodeCertificateRequest,
};
use shoal_ca as ca;
use shoal_manager::{join, NodeCertificates};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::Status;

use crate::daemon::Daemon;
use crate::node::{self, Membership};
use crate::tls;

/// How often a member asks whether its certificate still stands.
const STATUS_EVERY: Duration = Duration::from_secs(5);
/// How soon a failed renewal is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// Renews this node's certificate before expiry, until `shutdown` (None) or
/// until the managers refuse it because `node rm` removed the node (the
/// refusal: the caller makes the node leave the swarm).
pub async fn renew_certificates(
    daemon: Arc<Daemon>,
    shutdown: CancellationToken,
) -> Option<Status> {
    let mut position = ca::random_fraction();
    let mut retry_at: Option<Instant> = None;
    let mut status = tokio::time::interval(STATUS_EVERY);
    status.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let due = match (retry_at, daemon.tls.certificates()) {
            (Some(at), _) => at,
            (None, Some(certs)) => renewal_due(&certs, position),
            // Not a member (any more): nothing to renew.
            (None, None) => Instant::now() + Duration::from_secs(3600),
        };
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep_until(due) => {
                match daemon.renew_before_expiry().await {
                    Ok(()) => {
                        position = ca::random_fraction();
                        retry_at = None;
                    }
                    Err(s) if join::is_removed_status(&s) => return Some(s),
                    Err(s) => {
                        tracing::warn!(error = %s.message(), "node certificate renewal failed; retrying in {RETRY_AFTER:?}");
                        retry_at = Some(Instant::now() + RETRY_AFTER);
                    }
                }
            }
            _ = status.tick() => {
                match daemon.certificate_status().await {
                    Err(s) if join::is_removed_status(&s) => return Some(s),
                    Err(s) => tracing::debug!(error = %s.message(), "certificate status unknown"),
                    Ok(None) => {}
                    Ok(Some(why)) => {
                        if retry_at.is_none() {
                            tracing::info!("{why}: renewing the node certificate now");
                            retry_at = Some(Instant::now());
                        }
                    }
                }
            }
        }
    }
}

/// When `certs` is due for renewal, at `position` (0 to 1) of the renewal window.
fn renewal_due(certs: &NodeCertificates, position: f64) -> Instant {
    let Ok((not_before, not_after)) = ca::cert_validity(certs.cert_pem.as_bytes()) else {
        return Instant::now();
    };
    let at = ca::renewal_time(not_before, not_after, position);
    Instant::now()
        + at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO)
}

/// True when a certificate valid until `not_after` lasts longer (by more
/// than a tenth, so clock skew and signing time do not count) than the
/// `expiry_ms` the cluster gives certificates now (0: unknown).
fn outlives_expiry(not_after: SystemTime, now: SystemTime, expiry_ms: u64) -> bool {
    if expiry_ms == 0 {
        return false;
    }
    let expiry = Duration::from_millis(expiry_ms);
    not_after > now + expiry + expiry / 10
}

impl Daemon {
    /// A fresh key and a certificate: for the role the node's spec names, or
    /// (`keep_role`, a renewal before expiry) for the role it holds.
    pub(crate) async fn renew_certificate(
        &self,
        channel: Channel,
        keep_role: bool,
    ) -> Result<(NodeCertificates, IssueNodeCertificateResponse), Status> {
        let key = shoal_ca::new_node_key().map_err(|e| Status::internal(e.to_string()))?;
        let resp = NodeCaClient::new(channel)
            .renew_node_certificate(RenewNodeCertificateRequest {
                csr_pem: key.csr_pem.clone(),
                advertise_addr: self.manager_addr(),
                keep_role,
            })
            .await?
            .into_inner();
        let certs = NodeCertificates {
            ca_pem: resp.ca_certificate_pem.clone(),
            cert_pem: resp.certificate_pem.clone(),
            key_pem: key.key_pem,
        };
        Ok((certs, resp))
    }

    /// Where this node's CA calls go: its own listener for a manager (it
    /// signs with its own replica of the CA), its managers for a worker.
    fn ca_channel(&self) -> Result<Channel, Status> {
        match self.membership() {
            Membership::Manager => tls::manager_channel(&self.manager_addr(), &self.tls)
                .map_err(|e| Status::internal(format!("{e:#}"))),
            Membership::Worker => self
                .role
                .upstream()
                .map(|u| u.channel())
                .ok_or_else(|| Status::unavailable("no channel to the managers")),
            Membership::None => Err(Status::failed_precondition("not in a swarm")),
        }
    }

    /// A fresh key and certificate for the same node id and role, written
    /// and served from now on.
    async fn renew_before_expiry(self: &Arc<Self>) -> Result<(), Status> {
        // A promotion or demotion renews too: one at a time.
        let _guard = self.membership_lock.lock().await;
        let current = self.node_certificates()?;
        let (_, held) = ca::cert_identity(current.cert_pem.as_bytes())
            .map_err(|e| Status::internal(e.to_string()))?;
        let (certs, resp) = self.renew_certificate(self.ca_channel()?, true).await?;
        if ca::CertRole::from(resp.role()) != held {
            // A role change is under way; the role follower takes its certificate.
            return Ok(());
        }
        node::save_certificates(&self.cfg.data_root, &certs)
            .map_err(|e| Status::internal(format!("{e:#}")))?;
        self.tls
            .install(&certs)
            .map_err(|e| Status::internal(format!("{e:#}")))?;
        let expires = ca::cert_validity(certs.cert_pem.as_bytes())
            .map(|(_, until)| humantime::format_rfc3339_seconds(until).to_string())
            .unwrap_or_default();
        tracing::info!(role = %held, %expires, "node certificate renewed");
        Ok(())
    }

    /// Why this node's certificate should be renewed now, if it should:
    /// another root CA than the one it chains to, or a validity past what
    /// the cluster now gives (`swarm update --cert-expiry` shortened it).
    /// Refused once the node was removed.
    async fn certificate_status(&self) -> Result<Option<&'static str>, Status> {
        let current = self.node_certificates()?;
        let resp = NodeCaClient::new(self.ca_channel()?)
            .node_certificate_status(NodeCertificateStatusRequest {})
            .await?
            .into_inner();
        let digests = |pem: &str| ca::pem_digests(pem).map_err(|e| Status::internal(e.to_string()));
        let ours = digests(&current.ca_pem)?;
        if ours.first() != Some(&resp.root_ca_digest) {
            return Ok(Some("the cluster's root CA changed"));
        }
        if ours != digests(&resp.trusted_roots_pem)? {
            return Ok(Some("the cluster's trusted roots changed"));
        }
        let (_, not_after) = ca::cert_validity(current.cert_pem.as_bytes())
            .map_err(|e| Status::internal(e.to_string()))?;
        if outlives_expiry(not_after, SystemTime::now(), resp.node_cert_expiry_ms) {
            return Ok(Some(
                "the cluster's certificate expiry is shorter than this certificate's",
            ));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests;
