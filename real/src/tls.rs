//! Mutual TLS between peers: a cluster CA, node certificates, and the wrapper [`crate::net`] puts
//! around each TCP stream when its [`crate::net::Security`] is `Tls`.
//!
//! The trust model is Swarm's: `swarm init` makes a cluster CA ([`ClusterCa::generate`]); every node
//! gets a certificate signed by it ([`ClusterCa::issue`]) that names the node id; a node accepts a peer
//! only if the peer's certificate chains to the cluster CA, in both directions. Addresses are not
//! what is authenticated (nodes move; several share a host), so every node certificate also carries
//! the fixed DNS name [`NODE_SERVER_NAME`] that diallers verify, and the node id as a URI SAN
//! (`urn:shoal:node:<id>`) that the listener reads into [`Peer::identity`](shoal_core::env::transport::Peer).
//! The join token carries [`ClusterCa::digest`], so a joining node can check the CA it is handed.
//!
//! Crypto is rustls with the ring provider. Certificates do not expire (rcgen's default validity);
//! rotation is left to the layer that rotates join tokens.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::net::BoxStream;

/// The DNS name in every node certificate, which diallers verify in place of the address.
pub const NODE_SERVER_NAME: &str = "node.shoal.internal";
/// The URI SAN prefix that carries the node id.
pub const NODE_ID_URI_PREFIX: &str = "urn:shoal:node:";
const CA_COMMON_NAME: &str = "shoal cluster CA";

/// Why certificates or a TLS configuration could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    #[error("invalid PEM: {0}")]
    Pem(String),
    #[error("invalid node id {0:?}: ids are printable ASCII without spaces")]
    NodeId(String),
}

/// The cluster's certificate authority: its certificate (the trust root every node holds) and key
/// (which only managers hold, to issue node certificates).
pub struct ClusterCa {
    cert_pem: String,
    key: KeyPair,
    /// The CA as rcgen needs it to sign: same name, key and key identifier as `cert_pem`.
    signer: rcgen::Certificate,
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCa").field("digest", &self.digest()).finish_non_exhaustive()
    }
}

/// The CA's parameters: fixed, so that a CA reloaded from its key signs exactly as the one that was
/// generated (the issuer name and key identifier of what it signs depend only on these and the key).
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, CA_COMMON_NAME);
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params
}

impl ClusterCa {
    /// A new CA with a fresh key (at `swarm init`).
    pub fn generate() -> Result<Self, TlsError> {
        let key = KeyPair::generate()?;
        let signer = ca_params().self_signed(&key)?;
        Ok(ClusterCa { cert_pem: signer.pem(), key, signer })
    }

    /// Reload a CA from the PEM files a manager keeps in its data dir.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, TlsError> {
        let key = KeyPair::from_pem(key_pem)?;
        let signer = ca_params().self_signed(&key)?;
        CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| TlsError::Pem(e.to_string()))?;
        Ok(ClusterCa { cert_pem: cert_pem.to_string(), key, signer })
    }

    /// The CA certificate, the trust root every node holds.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA's private key; keep it on managers only.
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// SHA-256 of the CA certificate (DER), hex: what the join token carries.
    pub fn digest(&self) -> String {
        ca_digest(&self.cert_pem).unwrap_or_default()
    }

    /// A certificate and key for `node_id`, signed by this CA.
    pub fn issue(&self, node_id: &str) -> Result<NodeCert, TlsError> {
        if node_id.is_empty() || !node_id.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TlsError::NodeId(node_id.to_string()));
        }
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![NODE_SERVER_NAME.to_string()])?;
        let uri = format!("{NODE_ID_URI_PREFIX}{node_id}");
        params.subject_alt_names.push(SanType::URI(uri.try_into()?));
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, node_id);
        params.distinguished_name = name;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.signer, &self.key)?;
        Ok(NodeCert { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }
}

/// SHA-256 of the first certificate in `cert_pem` (DER), hex.
pub fn ca_digest(cert_pem: &str) -> Result<String, TlsError> {
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| TlsError::Pem(e.to_string()))?;
    let digest = ring::digest::digest(&ring::digest::SHA256, &der);
    Ok(digest.as_ref().iter().map(|b| format!("{b:02x}")).collect())
}

/// A node's certificate and private key, PEM.
#[derive(Clone)]
pub struct NodeCert {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for NodeCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeCert").finish_non_exhaustive()
    }
}

/// Both halves of mutual TLS for one node: what it presents and what it trusts.
pub struct TlsConfig {
    client: TlsConnector,
    server: TlsAcceptor,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig").finish_non_exhaustive()
    }
}

impl TlsConfig {
    /// Trust `ca_cert_pem` only, and present `node`'s certificate, as dialler and as listener.
    pub fn new(ca_cert_pem: &str, node: &NodeCert) -> Result<Self, TlsError> {
        let pem = |e: rustls::pki_types::pem::Error| TlsError::Pem(e.to_string());
        let mut roots = RootCertStore::empty();
        roots.add(CertificateDer::from_pem_slice(ca_cert_pem.as_bytes()).map_err(pem)?)?;
        let roots = Arc::new(roots);
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(node.cert_pem.as_bytes()).collect::<Result<_, _>>().map_err(pem)?;
        let key = PrivateKeyDer::from_pem_slice(node.key_pem.as_bytes()).map_err(pem)?;
        // An explicit provider, so nothing depends on which rustls features the rest of the graph
        // enables or on a process-wide default being installed.
        let provider = Arc::new(rustls::crypto::ring::default_provider());

        let client = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots.clone())
            .with_client_auth_cert(chain.clone(), key.clone_key())?;
        let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| TlsError::Config(rustls::Error::General(e.to_string())))?;
        let server = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)?;
        Ok(TlsConfig { client: TlsConnector::from(Arc::new(client)), server: TlsAcceptor::from(Arc::new(server)) })
    }

    /// Dial side: verify the listener's certificate against the cluster CA.
    pub(crate) async fn connect(&self, tcp: TcpStream) -> Result<BoxStream, String> {
        let name = ServerName::try_from(NODE_SERVER_NAME).map_err(|e| e.to_string())?;
        let stream = self.client.connect(name, tcp).await.map_err(|e| e.to_string())?;
        Ok(Box::pin(stream))
    }

    /// Listen side: require a client certificate from the cluster CA; return the node id it names.
    pub(crate) async fn accept(&self, tcp: TcpStream) -> Result<(BoxStream, Option<String>), String> {
        let stream = self.server.accept(tcp).await.map_err(|e| e.to_string())?;
        let identity = stream.get_ref().1.peer_certificates().and_then(|chain| chain.first()).and_then(node_id);
        Ok((Box::pin(stream), identity))
    }
}

/// The node id a (verified) certificate names in its URI SAN.
fn node_id(cert: &CertificateDer<'_>) -> Option<String> {
    let cert = webpki::EndEntityCert::try_from(cert).ok()?;
    let id = cert.valid_uri_names().find_map(|uri| uri.strip_prefix(NODE_ID_URI_PREFIX).map(str::to_string));
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reloaded_ca_issues_certificates_that_chain_to_the_original() {
        let ca = ClusterCa::generate().unwrap();
        let again = ClusterCa::from_pem(ca.cert_pem(), &ca.key_pem()).unwrap();
        assert_eq!(ca.digest(), again.digest());
        assert_eq!(ca.digest().len(), 64);
        let node = again.issue("node-1").unwrap();
        // Building the config parses everything; the chain itself is checked in the handshake tests.
        TlsConfig::new(ca.cert_pem(), &node).unwrap();
        let der = CertificateDer::from_pem_slice(node.cert_pem.as_bytes()).unwrap();
        assert_eq!(node_id(&der).as_deref(), Some("node-1"));
        assert!(ca.issue("bad id").is_err());
    }
}
