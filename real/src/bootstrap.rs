//! How a node gets its certificate: the bootstrap exchange of `swarm join`, before the node has any
//! identity the cluster would accept.
//!
//! 1. The joining node parses its token (`SWMTKN-1-<CA digest>-<secret>`) and dials the manager with
//!    [`Security::Join`]: TLS with no client certificate, trusting the manager only if its handshake
//!    chain holds a CA with the token's digest — otherwise "remote CA does not match fingerprint".
//! 2. It sends [`BootstrapRequest::IssueCertificate`]: the token and the public half of a key it just
//!    made (the private key never leaves the node).
//! 3. The manager ([`BootstrapService`], the transport's handler for connections without a client
//!    certificate) checks the token against its store (`tokens::check`: the CA digest, then whether it
//!    is the current worker or manager token — a rotated one is refused), picks the node id, and signs
//!    a certificate naming it with the cluster CA key kept in the cluster object.
//! 4. From then on the node dials and listens with mutual TLS under that certificate; its core `Join`
//!    reaches the dispatcher authenticated, which takes the certificate's node id as the node's id.
//!
//! Renewal ([`RenewalService`], on [`Channel::Certificates`](shoal_core::rpc::Channel::Certificates)) is the same signing for a node that
//! already has a certificate: it calls over mutual TLS with the public half of a new key, and gets a
//! certificate for the node id its current one names, in its current role, valid for the cluster's
//! `--cert-expiry`. A removed node is refused by the gate (see `shoal_core::auth`).
//!
//! During a root CA rotation (DESIGN §6b) both sign with the new root's key ([`signing_ca`]): the
//! certificate comes with the new root cross-signed by the old one, and the CA bundle handed over
//! holds both roots, the old one first (a joining node's token still names it).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rcgen::KeyPair;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use shoal_core::api::{Cluster, NodeRole};
use shoal_core::auth::acts_as_manager;
use shoal_core::env::transport::Peer;
use shoal_core::env::{Handler, Transport};
use shoal_core::node::ShoalNode;
use shoal_core::rpc;

use crate::net::{Security, TcpConfig, TcpTransport};
use crate::tls::{ca_digest, ClusterCa, JoinTls, NodeCert};

/// How long the whole bootstrap exchange may take.
pub const BOOTSTRAP_TIMEOUT: Duration = Duration::from_secs(20);

/// What a node without a certificate may ask.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum BootstrapRequest {
    IssueCertificate {
        token: String,
        /// The node's public key: an uncompressed P-256 point.
        public_key: Vec<u8>,
    },
}

/// A certificate issued to a joining node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IssuedCertificate {
    pub node_id: String,
    pub role: NodeRole,
    pub cert_pem: String,
    pub ca_pem: String,
}

type BootstrapReply = Result<IssuedCertificate, String>;

/// What a joining node comes away with: its identity, certificate and key, and the cluster CA.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub node_id: String,
    pub role: NodeRole,
    pub ca_pem: String,
    pub node: NodeCert,
}

/// Steps 1–2 on the joining side: get a certificate from the manager at `remote`. `listen_addr` is the
/// joining node's own address (outgoing connections are made from its IP).
pub async fn request_certificate(remote: &str, listen_addr: &str, token: &str) -> Result<Credentials, String> {
    // A malformed token is refused before anything is sent, as Docker's CLI does.
    let (digest, _) = shoal_core::tokens::parse(token).map_err(|e| e.to_string())?;
    let join = Arc::new(JoinTls::new(digest).map_err(|e| e.to_string())?);
    let transport = TcpTransport::with_config(TcpConfig {
        security: Security::Join(join.clone()),
        ..TcpConfig::new(listen_addr.to_string())
    });
    let key = KeyPair::generate().map_err(|e| e.to_string())?;
    let request =
        BootstrapRequest::IssueCertificate { token: token.to_string(), public_key: key.public_key_raw().to_vec() };
    let body = serde_json::to_vec(&request).map_err(|e| e.to_string())?;
    let reply = transport.call(remote, body, BOOTSTRAP_TIMEOUT).await;
    transport.shutdown();
    let mismatch = || format!("remote CA does not match fingerprint. Expected: {digest}");
    let reply = match reply {
        Ok(reply) => reply,
        Err(_) if join.ca_mismatch() => return Err(mismatch()),
        Err(err) => return Err(err.to_string()),
    };
    let issued = serde_json::from_slice::<BootstrapReply>(&reply)
        .map_err(|e| format!("garbled certificate reply from {remote}: {e}"))??;
    // The CA handed over must be the one the handshake was pinned to, and the token's.
    let pinned = join.pinned_ca().ok_or_else(mismatch)?;
    let handed = CertificateDer::from_pem_slice(issued.ca_pem.as_bytes()).map_err(|e| e.to_string())?;
    if ca_digest(&issued.ca_pem).ok().as_deref() != Some(digest) || handed.as_ref() != pinned.as_slice() {
        return Err(mismatch());
    }
    let node = NodeCert { cert_pem: issued.cert_pem, key_pem: key.serialize_pem() };
    // Building the TLS configuration checks that the certificate and key belong together.
    crate::tls::TlsConfig::new(&issued.ca_pem, &node)
        .map_err(|e| format!("the issued certificate is unusable: {e}"))?;
    Ok(Credentials { node_id: issued.node_id, role: issued.role, ca_pem: issued.ca_pem, node })
}

/// Step 3 on a manager: serves connections that present no client certificate.
pub struct BootstrapService {
    pub node: ShoalNode,
}

impl BootstrapService {
    fn issue(&self, request: BootstrapRequest) -> BootstrapReply {
        let BootstrapRequest::IssueCertificate { token, public_key } = request;
        // A demoted manager's store is stale; only a manager's tokens are current.
        if !self.node.is_manager() {
            return Err("this node is not a swarm manager; join through a manager's address".into());
        }
        let cluster = self
            .node
            .store()
            .view(|s| s.cluster.clone())
            .ok_or_else(|| "this manager holds no cluster state yet; try again".to_string())?;
        let role = shoal_core::tokens::check(&token, &cluster).map_err(|e| e.to_string())?;
        let signing = signing_ca(&cluster)?;
        let node_id = shoal_core::api::new_id();
        let cert_pem =
            signing.ca.issue_for_key(&node_id, role, &public_key, cert_expiry(&cluster)).map_err(|e| e.to_string())?;
        Ok(IssuedCertificate { node_id, role, cert_pem: signing.chain(cert_pem), ca_pem: signing.trust })
    }
}

/// What a manager signs certificates with now.
pub struct SigningCa {
    /// The CA whose key signs: the new root's during a rotation, else the root's.
    pub ca: ClusterCa,
    /// What goes after the node's certificate: the cross-signed new root during a rotation.
    pub intermediate: String,
    /// The roots a node should trust (PEM bundle): both during a rotation, the old one first.
    pub trust: String,
}

impl SigningCa {
    /// A certificate followed by the intermediate it needs.
    pub fn chain(&self, cert_pem: String) -> String {
        if self.intermediate.is_empty() {
            cert_pem
        } else {
            format!("{}\n{}", cert_pem.trim_end(), self.intermediate.trim_end()) + "\n"
        }
    }
}

/// The CA that signs in `cluster` now (DESIGN §6b).
pub fn signing_ca(cluster: &Cluster) -> Result<SigningCa, String> {
    if cluster.root_ca_key_pem.is_empty() {
        return Err("this swarm has no cluster CA key to sign certificates with".into());
    }
    match &cluster.root_rotation {
        Some(rotation) => {
            let ca = ClusterCa::from_pem(&rotation.ca_cert_pem, &rotation.ca_key_pem)
                .map_err(|e| format!("the new root CA of the rotation under way is unusable: {e}"))?;
            let trust = format!("{}\n{}\n", cluster.root_ca_pem.trim_end(), rotation.ca_cert_pem.trim_end());
            Ok(SigningCa { ca, intermediate: rotation.cross_signed_pem.clone(), trust })
        }
        None => {
            let ca = ClusterCa::from_pem(&cluster.root_ca_pem, &cluster.root_ca_key_pem).map_err(|e| e.to_string())?;
            Ok(SigningCa { ca, intermediate: String::new(), trust: cluster.root_ca_pem.clone() })
        }
    }
}

/// The new root for `swarm ca --rotate` (made by the daemon of the manager the CLI talks to): a
/// fresh CA, cross-signed by the cluster's current root.
pub fn new_root_for(cluster: &Cluster) -> Result<shoal_core::ca_rotation::NewRootCa, String> {
    if cluster.root_ca_key_pem.is_empty() {
        return Err("this swarm has no cluster CA key to cross-sign a new root with".into());
    }
    let current = ClusterCa::from_pem(&cluster.root_ca_pem, &cluster.root_ca_key_pem).map_err(|e| e.to_string())?;
    let new = ClusterCa::generate().map_err(|e| format!("cannot make the new root CA: {e}"))?;
    let cross_signed_pem = current.cross_sign(&new).map_err(|e| format!("cannot cross-sign the new root CA: {e}"))?;
    Ok(shoal_core::ca_rotation::NewRootCa {
        ca_cert_pem: new.cert_pem().to_string(),
        ca_digest: new.digest(),
        cross_signed_pem,
        ca_key_pem: new.key_pem(),
    })
}

/// How long the certificates this cluster issues are valid.
fn cert_expiry(cluster: &Cluster) -> Duration {
    Duration::from_millis(cluster.spec.node_cert_expiry_ms)
}

/// What a member node sends on [`Channel::Certificates`](shoal_core::rpc::Channel::Certificates) to renew its certificate.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RenewRequest {
    /// The public half of the node's new key: an uncompressed P-256 point.
    pub public_key: Vec<u8>,
}

/// A renewed certificate, or why there is none.
pub type RenewReply = Result<IssuedCertificate, String>;

/// Renewal on a manager: a fresh certificate for the node whose certificate the caller presented.
pub struct RenewalService {
    pub node: ShoalNode,
}

impl RenewalService {
    fn renew(&self, identity: Option<String>, request: RenewRequest) -> RenewReply {
        let node_id = identity.ok_or("renewing a certificate needs the node's current certificate")?;
        if !self.node.is_manager() {
            return Err("this node is not a swarm manager; renew through a manager".into());
        }
        let (cluster, node) = self.node.store().view(|s| (s.cluster.clone(), s.nodes.get(&node_id).cloned()));
        let cluster = cluster.ok_or("this manager holds no cluster state yet; try again")?;
        let node = node.ok_or_else(|| format!("node {node_id} is not a member of this swarm"))?;
        let signing = signing_ca(&cluster)?;
        let role = if acts_as_manager(&node) { NodeRole::Manager } else { NodeRole::Worker };
        let cert_pem = signing
            .ca
            .issue_for_key(&node_id, role, &request.public_key, cert_expiry(&cluster))
            .map_err(|e| e.to_string())?;
        Ok(IssuedCertificate { node_id, role, cert_pem: signing.chain(cert_pem), ca_pem: signing.trust })
    }
}

#[async_trait]
impl rpc::Service for RenewalService {
    type Request = RenewRequest;
    type Response = RenewReply;

    async fn call(&self, peer: Peer, request: RenewRequest) -> RenewReply {
        self.renew(peer.identity, request)
    }
}

#[async_trait]
impl Handler for BootstrapService {
    async fn handle(&self, _peer: Peer, request: Vec<u8>) -> Vec<u8> {
        let reply: BootstrapReply = match serde_json::from_slice::<BootstrapRequest>(&request) {
            Ok(request) => self.issue(request),
            Err(_) => Err("a certificate signed by the cluster CA is required; without one, a node may only ask \
                           for its certificate with a join token"
                .into()),
        };
        serde_json::to_vec(&reply).unwrap_or_default()
    }
}
