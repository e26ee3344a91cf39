use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use shoal_api::pb::node_ca_client::NodeCaClient;
use shoal_api::pb::node_ca_server::{NodeCa, NodeCaServer};
use shoal_api::pb::{IssueNodeCertificateRequest, IssueNodeCertificateResponse};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint, Server};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, UnixTime};
use tonic::transport::ClientTlsConfig;

use super::*;
use crate::pem::{cert_chain_der, first_cert_der, pem_encode_cert, sha256_hex};
use crate::tls::{ring_provider, root_store};

// === tokens ===

#[test]
fn token_round_trip() {
    let digest = "ab".repeat(32);
    let secret = new_token_secret();
    assert_eq!(secret.len(), 25);
    assert!(secret
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
    let token = format_token(&digest, &secret);
    assert_eq!(token, format!("SWMTKN-1-{digest}-{secret}"));
    let parsed = parse_token(&format!("  {token}\n")).unwrap();
    assert_eq!(
        parsed,
        JoinToken {
            ca_digest: digest.clone(),
            secret: secret.clone()
        }
    );
    assert!(token_matches(&parsed, &digest, &secret));
    assert!(!token_matches(&parsed, &digest, &new_token_secret()));
    assert!(!token_matches(&parsed, &digest, ""));
    assert!(!token_matches(&parsed, &"cd".repeat(32), &secret));
}

#[test]
fn malformed_tokens_are_rejected() {
    let digest = "0f".repeat(32);
    for bad in [
        String::new(),
        "SWMTKN-1-".to_string(),
        format!("SWMTKN-2-{digest}-abc"),
        format!("SWMTKN-1-{digest}"),
        format!("SWMTKN-1-{digest}-"),
        format!("SWMTKN-1-{}-abc", &digest[..63]),
        format!("SWMTKN-1-{}zz-abc", &digest[..62]),
        format!("SWMTKN-1-{digest}-ab-c"),
        format!("{digest}-abc"),
    ] {
        let err = parse_token(&bad).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid join token: must look like SWMTKN-1-<64 hex digits>-<secret>",
            "{bad:?}"
        );
    }
}

// === certificates ===

#[test]
fn ca_signs_node_certificates() {
    let ca = ClusterCa::generate().unwrap();
    assert_eq!(ca.digest().len(), 64);
    assert!(ca
        .digest()
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));

    // Reloading keeps the digest; a mismatched key is refused.
    let again = ClusterCa::from_pem(ca.cert_pem(), ca.key_pem()).unwrap();
    assert_eq!(again.digest(), ca.digest());
    let other = ClusterCa::generate().unwrap();
    let err = ClusterCa::from_pem(ca.cert_pem(), other.key_pem()).unwrap_err();
    assert!(err.to_string().contains("does not belong"), "{err}");
    assert_ne!(other.digest(), ca.digest());

    let node = new_node_key().unwrap();
    let addrs = vec![
        "10.0.0.1:2377".to_string(),
        "manager-1.example".to_string(),
        "::1".to_string(),
    ];
    let cert = ca
        .sign_node(&node.csr_pem, "node1abc", CertRole::Manager, &addrs)
        .unwrap();
    assert_eq!(
        cert_identity(cert.as_bytes()).unwrap(),
        ("node1abc".to_string(), CertRole::Manager)
    );
    assert_eq!(
        ca.verify(cert.as_bytes()).unwrap(),
        ("node1abc".to_string(), CertRole::Manager)
    );
    // DER works too.
    let der = CertificateDer::from_pem_slice(cert.as_bytes()).unwrap();
    assert_eq!(cert_identity(der.as_ref()).unwrap().1, CertRole::Manager);

    // Subject, SANs, validity.
    let (_, x509) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
    let san = x509.subject_alternative_name().unwrap().unwrap();
    let names: Vec<String> = san
        .value
        .general_names
        .iter()
        .map(|n| n.to_string())
        .collect();
    for want in ["node1abc", "shoal", "manager-1.example"] {
        assert!(
            names.iter().any(|n| n.contains(want)),
            "{want} in {names:?}"
        );
    }
    assert_eq!(names.len(), 5, "{names:?}");
    let days =
        (x509.validity().not_after.timestamp() - x509.validity().not_before.timestamp()) / 86400;
    assert_eq!(days, 90);

    // A worker cert, and a cert from another CA.
    let worker = other
        .sign_node(&node.csr_pem, "node2", CertRole::Worker, &[])
        .unwrap();
    assert_eq!(
        cert_identity(worker.as_bytes()).unwrap(),
        ("node2".to_string(), CertRole::Worker)
    );
    let err = ca.verify(worker.as_bytes()).unwrap_err();
    assert!(matches!(err, CaError::Untrusted { .. }), "{err}");

    // Bad inputs.
    assert!(matches!(
        ca.sign_node("not a csr", "n", CertRole::Worker, &[]),
        Err(CaError::Parse { .. })
    ));
    assert!(matches!(
        ca.sign_node(&node.csr_pem, "", CertRole::Worker, &[]),
        Err(CaError::InvalidNodeId { .. })
    ));
    assert!(cert_identity(b"garbage").is_err());
}

#[test]
fn role_strings() {
    assert_eq!(CertRole::Manager.to_string(), "swarm-manager");
    assert_eq!(CertRole::Worker.to_string(), "swarm-worker");
}

// === TLS ===

/// Echoes the caller's node id (from its certificate) in `node_id`.
struct Echo;

#[tonic::async_trait]
impl NodeCa for Echo {
    async fn issue_node_certificate(
        &self,
        request: tonic::Request<IssueNodeCertificateRequest>,
    ) -> Result<tonic::Response<IssueNodeCertificateResponse>, tonic::Status> {
        let (node_id, role) = peer_identity(&request)?;
        Ok(tonic::Response::new(IssueNodeCertificateResponse {
            node_id,
            role: shoal_api::pb::NodeRole::from(role) as i32,
            ..Default::default()
        }))
    }

    async fn join_raft(
        &self,
        request: tonic::Request<shoal_api::pb::JoinRaftRequest>,
    ) -> Result<tonic::Response<shoal_api::pb::JoinRaftResponse>, tonic::Status> {
        peer_identity(&request)?;
        Ok(tonic::Response::new(shoal_api::pb::JoinRaftResponse {}))
    }

    async fn renew_node_certificate(
        &self,
        request: tonic::Request<shoal_api::pb::RenewNodeCertificateRequest>,
    ) -> Result<tonic::Response<IssueNodeCertificateResponse>, tonic::Status> {
        let (node_id, role) = peer_identity(&request)?;
        Ok(tonic::Response::new(IssueNodeCertificateResponse {
            node_id,
            role: shoal_api::pb::NodeRole::from(role) as i32,
            ..Default::default()
        }))
    }

    async fn node_certificate_status(
        &self,
        request: tonic::Request<shoal_api::pb::NodeCertificateStatusRequest>,
    ) -> Result<tonic::Response<shoal_api::pb::NodeCertificateStatusResponse>, tonic::Status> {
        peer_identity(&request)?;
        Ok(tonic::Response::new(Default::default()))
    }
}

/// A cluster CA, a manager serving `Echo` with mTLS on 127.0.0.1:0.
struct Fixture {
    ca: ClusterCa,
    addr: SocketAddr,
    shutdown: CancellationToken,
    server: tokio::task::JoinHandle<()>,
}

impl Fixture {
    async fn start() -> Fixture {
        let ca = ClusterCa::generate().unwrap();
        let key = new_node_key().unwrap();
        let cert = ca
            .sign_node(
                &key.csr_pem,
                "manager1",
                CertRole::Manager,
                &["127.0.0.1".to_string()],
            )
            .unwrap();
        let tls = server_tls(ca.cert_pem(), &cert, &key.key_pem).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let server = tokio::spawn(async move {
            Server::builder()
                .tls_config(tls)
                .unwrap()
                .add_service(NodeCaServer::new(Echo))
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    stop.cancelled_owned(),
                )
                .await
                .unwrap();
        });
        Fixture {
            ca,
            addr,
            shutdown,
            server,
        }
    }

    /// A node identity (cert, key) signed by `ca`.
    fn identity(ca: &ClusterCa, node_id: &str, role: CertRole) -> (String, String) {
        let key = new_node_key().unwrap();
        let cert = ca.sign_node(&key.csr_pem, node_id, role, &[]).unwrap();
        (cert, key.key_pem)
    }

    async fn connect(&self, tls: ClientTlsConfig) -> Result<Channel, tonic::transport::Error> {
        Endpoint::from_shared(format!("https://{}", self.addr))
            .unwrap()
            .tls_config(tls)?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(5))
            .connect()
            .await
    }

    async fn call(&self, tls: ClientTlsConfig) -> Result<IssueNodeCertificateResponse, String> {
        let channel = self
            .connect(tls)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        NodeCaClient::new(channel)
            .issue_node_certificate(IssueNodeCertificateRequest::default())
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.server.await.unwrap();
    }
}

#[tokio::test]
async fn mtls_carries_node_identity() {
    let fx = Fixture::start().await;

    // A node with a certificate from the cluster CA is identified.
    let (cert, key) = Fixture::identity(&fx.ca, "worker7", CertRole::Worker);
    let tls = client_tls(fx.ca.cert_pem(), Some((&cert, &key))).unwrap();
    let resp = fx.call(tls).await.unwrap();
    assert_eq!(resp.node_id, "worker7");
    assert_eq!(resp.role, shoal_api::pb::NodeRole::Worker as i32);

    // No client certificate: TLS connects, the service says unauthenticated.
    let tls = client_tls(fx.ca.cert_pem(), None).unwrap();
    let err = fx.call(tls).await.unwrap_err();
    assert_eq!(
        err,
        "Unauthenticated: a node certificate from this cluster's CA is required"
    );

    // A client certificate from another CA is refused (handshake or call).
    let other = ClusterCa::generate().unwrap();
    let (cert, key) = Fixture::identity(&other, "intruder", CertRole::Manager);
    let tls = client_tls(fx.ca.cert_pem(), Some((&cert, &key))).unwrap();
    assert!(fx.call(tls).await.is_err());

    // A client trusting another CA does not accept the server.
    let tls = client_tls(other.cert_pem(), None).unwrap();
    assert!(fx.connect(tls).await.is_err());

    fx.stop().await;
}

#[tokio::test]
async fn fetch_root_ca_pins_the_digest() {
    let fx = Fixture::start().await;
    let addr = fx.addr.to_string();

    let pem = fetch_root_ca(&addr, fx.ca.digest(), Duration::from_secs(5))
        .await
        .unwrap();
    let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
    assert_eq!(sha256_hex(der.as_ref()), fx.ca.digest());
    // The PEM we produce round-trips through the usual parsers.
    assert_eq!(pem, fx.ca.cert_pem().replace("\r\n", "\n"));
    assert_eq!(
        ClusterCa::from_pem(&pem, fx.ca.key_pem()).unwrap().digest(),
        fx.ca.digest()
    );

    let other = ClusterCa::generate().unwrap();
    let err = fetch_root_ca(&addr, other.digest(), Duration::from_secs(5))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "the manager at {addr} presented a CA that does not match the join token (token for another cluster?)"
        )
    );

    fx.stop().await;

    // Nothing listening.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = listener.local_addr().unwrap().to_string();
    drop(listener);
    let err = fetch_root_ca(&dead, other.digest(), Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(matches!(err, CaError::Unreachable { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with(&format!("cannot reach manager at {dead}: ")),
        "{err}"
    );
}

#[test]
fn pem_encoding_matches_rcgen() {
    let ca = ClusterCa::generate().unwrap();
    let der = first_cert_der(ca.cert_pem(), "CA").unwrap();
    assert_eq!(pem_encode_cert(&der), ca.cert_pem().replace("\r\n", "\n"));
}

// === renewal and rotation ===

#[test]
fn certificates_last_the_validity_they_are_signed_for() {
    let ca = ClusterCa::generate().unwrap();
    let key = new_node_key().unwrap();
    let cert = ca
        .sign_node_valid_for(
            &key.csr_pem,
            "n1",
            CertRole::Worker,
            &[],
            Duration::from_secs(60),
        )
        .unwrap();
    let (not_before, not_after) = cert_validity(cert.as_bytes()).unwrap();
    let now = SystemTime::now();
    // Backdated by a tenth of the validity (not an hour), lasting a minute from now.
    let life = not_after.duration_since(not_before).unwrap();
    assert!(
        (Duration::from_secs(65)..=Duration::from_secs(67)).contains(&life),
        "{life:?}"
    );
    let left = not_after.duration_since(now).unwrap();
    assert!(left <= Duration::from_secs(60) && left >= Duration::from_secs(55));
    assert!(ca.verify(cert.as_bytes()).is_ok());

    // Renewal falls between half and 80% of the life.
    assert_eq!(
        renewal_time(not_before, not_after, 0.0),
        not_before + life / 2
    );
    assert_eq!(
        renewal_time(not_before, not_after, 1.0),
        not_before + life.mul_f64(0.8)
    );
}

/// Verifies `chain` (leaf first) as a client certificate against `roots`.
fn verify_client(roots: &str, chain: &str) -> Result<(), rustls::Error> {
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(root_store(roots).unwrap()),
        ring_provider(),
    )
    .build()
    .unwrap();
    let certs: Vec<CertificateDer<'static>> = cert_chain_der(chain, "chain")
        .unwrap()
        .into_iter()
        .map(CertificateDer::from)
        .collect();
    verifier
        .verify_client_cert(&certs[0], &certs[1..], UnixTime::now())
        .map(drop)
}

#[test]
fn a_cross_signed_new_root_is_accepted_by_nodes_that_trust_only_the_old_one() {
    let old = ClusterCa::generate().unwrap();
    let new = ClusterCa::generate().unwrap();
    let cross = old.cross_sign(&new).unwrap();
    let key = new_node_key().unwrap();
    let leaf = new
        .sign_node(&key.csr_pem, "n1", CertRole::Worker, &[])
        .unwrap();

    // Without the cross-signed root, a node on the old root refuses it.
    assert!(verify_client(old.cert_pem(), &leaf).is_err());
    // With it, the old root verifies the new certificate.
    let chain = format!("{leaf}{cross}");
    verify_client(old.cert_pem(), &chain).unwrap();
    // Nodes on the new root, or on both, accept either form.
    verify_client(new.cert_pem(), &leaf).unwrap();
    verify_client(new.cert_pem(), &chain).unwrap();
    let bundle = format!("{}{}", new.cert_pem(), old.cert_pem());
    verify_client(&bundle, &leaf).unwrap();
    let old_leaf = old
        .sign_node(&key.csr_pem, "n2", CertRole::Worker, &[])
        .unwrap();
    verify_client(&bundle, &old_leaf).unwrap();
    assert!(verify_client(new.cert_pem(), &old_leaf).is_err());
    assert_eq!(
        pem_digests(&bundle).unwrap(),
        [new.digest().to_string(), old.digest().to_string()]
    );

    // Both rustls configs take the chain and the bundle.
    rustls_server_config(&bundle, &chain, &key.key_pem).unwrap();
    rustls_client_config(&bundle, &chain, &key.key_pem).unwrap();
}

proptest::proptest! {
    /// Renewal lands in [50%, 80%] of any validity, whatever the position
    /// (out of range and NaN included), and never panics.
    #[test]
    fn renewal_time_stays_in_the_window(
        start in 0u64..4_000_000_000,
        life in 0u64..1_000_000_000,
        position in proptest::num::f64::ANY,
    ) {
        let not_before = SystemTime::UNIX_EPOCH + Duration::from_secs(start);
        let not_after = not_before + Duration::from_secs(life);
        let at = renewal_time(not_before, not_after, position);
        let life = Duration::from_secs(life);
        proptest::prop_assert!(at >= not_before + life.mul_f64(0.5) - Duration::from_millis(1));
        proptest::prop_assert!(at <= not_before + life.mul_f64(0.8) + Duration::from_millis(1));
        // A validity that ends before it starts renews at once.
        proptest::prop_assert_eq!(renewal_time(not_after + Duration::from_secs(1), not_before, position), not_after + Duration::from_secs(1));
    }

    /// The certificate parsers take any input without panicking.
    #[test]
    fn certificate_parsers_never_panic(input in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
        let _ = cert_validity(&input);
        let _ = cert_identity(&input);
        let text = String::from_utf8_lossy(&input);
        let _ = pem_digests(&text);
        let pem = format!("-----BEGIN CERTIFICATE-----\n{text}\n-----END CERTIFICATE-----\n");
        let _ = pem_digests(&pem);
        let _ = cert_validity(pem.as_bytes());
    }

    #[test]
    fn random_fractions_are_in_zero_one(_n in 0u8..50) {
        let f = random_fraction();
        proptest::prop_assert!((0.0..1.0).contains(&f));
    }
}
