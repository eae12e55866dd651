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
//! Listeners also take connections that present no client certificate: those are a joining node's
//! bootstrap connection, which [`crate::net`] hands only to the bootstrap handler (certificate
//! issuance), never to the cluster's services. The joining side dials with [`JoinTls`], which trusts
//! the listener only if its chain contains a CA whose digest is the one in the join token.
//!
//! Crypto is rustls with the ring provider. Certificates do not expire (rcgen's default validity);
//! rotation is left to the layer that rotates join tokens.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use shoal_core::api::NodeRole;
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
    #[error("invalid public key: expected an uncompressed P-256 point of 65 bytes")]
    PublicKey,
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

    /// The CA certificate's digest in join-token form (see [`ca_digest`]).
    pub fn digest(&self) -> String {
        ca_digest(&self.cert_pem).unwrap_or_default()
    }

    /// A certificate and a fresh key for `node_id`, signed by this CA (for tests and `swarm init`,
    /// where the key never leaves this process).
    pub fn issue(&self, node_id: &str) -> Result<NodeCert, TlsError> {
        let key = KeyPair::generate()?;
        let cert_pem = self.sign(node_id, None, &key)?;
        Ok(NodeCert { cert_pem, key_pem: key.serialize_pem() })
    }

    /// A certificate for `node_id` in `role` over a public key the node made itself (an uncompressed
    /// P-256 point, [`KeyPair::public_key_raw`]): the joining node keeps its private key.
    pub fn issue_for_key(&self, node_id: &str, role: NodeRole, public_key: &[u8]) -> Result<String, TlsError> {
        // Possession of the matching private key is proved by every later TLS handshake.
        if public_key.len() != 65 || public_key[0] != 4 {
            return Err(TlsError::PublicKey);
        }
        self.sign(node_id, Some(role), &RawP256Key(public_key.to_vec()))
    }

    fn sign(&self, node_id: &str, role: Option<NodeRole>, key: &impl rcgen::PublicKeyData) -> Result<String, TlsError> {
        if node_id.is_empty() || !node_id.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TlsError::NodeId(node_id.to_string()));
        }
        let mut params = CertificateParams::new(vec![NODE_SERVER_NAME.to_string()])?;
        let uri = format!("{NODE_ID_URI_PREFIX}{node_id}");
        params.subject_alt_names.push(SanType::URI(uri.try_into()?));
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, node_id);
        // Informational, as swarmkit's OU: what the node was when the certificate was issued. Who may
        // do what is decided from the store (core `auth`), so promotion needs no new certificate.
        if let Some(role) = role {
            let ou = if role == NodeRole::Manager { "swarm-manager" } else { "swarm-worker" };
            name.push(DnType::OrganizationalUnitName, ou);
        }
        params.distinguished_name = name;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(key, &self.signer, &self.key)?;
        Ok(cert.pem())
    }
}

/// A P-256 public key sent by a joining node, as rcgen signs it.
struct RawP256Key(Vec<u8>);

impl rcgen::PublicKeyData for RawP256Key {
    fn der_bytes(&self) -> &[u8] {
        &self.0
    }
    fn algorithm(&self) -> &rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

/// The digest of the first certificate in `cert_pem`, in join-token form: SHA-256 of the DER, in
/// base 36 ([`shoal_core::tokens::digest_from_sha256`]), as swarmkit puts it in `SWMTKN-1-…`.
pub fn ca_digest(cert_pem: &str) -> Result<String, TlsError> {
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| TlsError::Pem(e.to_string()))?;
    Ok(der_digest(&der))
}

fn der_digest(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let mut sha = [0u8; 32];
    sha.copy_from_slice(digest.as_ref());
    shoal_core::tokens::digest_from_sha256(&sha)
}

fn provider() -> Arc<CryptoProvider> {
    // An explicit provider, so nothing depends on which rustls features the rest of the graph
    // enables or on a process-wide default being installed.
    Arc::new(rustls::crypto::ring::default_provider())
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
        let mut chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(node.cert_pem.as_bytes()).collect::<Result<_, _>>().map_err(pem)?;
        // The CA goes along with the node certificate, so a joining node (which has only the CA's
        // digest from its token) can find it in the handshake and pin it.
        chain.push(CertificateDer::from_pem_slice(ca_cert_pem.as_bytes()).map_err(pem)?);
        let key = PrivateKeyDer::from_pem_slice(node.key_pem.as_bytes()).map_err(pem)?;
        let provider = provider();

        let client = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots.clone())
            .with_client_auth_cert(chain.clone(), key.clone_key())?;
        // A client without a certificate is a joining node on its bootstrap connection; `net` serves
        // such connections only with the bootstrap handler. A certificate, if presented, must verify.
        let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
            .allow_unauthenticated()
            .build()
            .map_err(|e| TlsError::Config(rustls::Error::General(e.to_string())))?;
        let server = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)?;
        Ok(TlsConfig { client: TlsConnector::from(Arc::new(client)), server: TlsAcceptor::from(Arc::new(server)) })
    }

    /// Dial side: verify the listener's certificate against the cluster CA.
    pub async fn connect(&self, tcp: TcpStream) -> Result<BoxStream, String> {
        let name = ServerName::try_from(NODE_SERVER_NAME).map_err(|e| e.to_string())?;
        let stream = self.client.connect(name, tcp).await.map_err(|e| e.to_string())?;
        Ok(Box::pin(stream))
    }

    /// Listen side: verify a client certificate against the cluster CA; return the node id it names
    /// (`None`: the peer presented no certificate, or one that names no node).
    pub(crate) async fn accept(&self, tcp: TcpStream) -> Result<(BoxStream, Option<String>), String> {
        let stream = self.server.accept(tcp).await.map_err(|e| e.to_string())?;
        let identity = stream.get_ref().1.peer_certificates().and_then(|chain| chain.first()).and_then(node_id);
        Ok((Box::pin(stream), identity))
    }
}

/// The dialling side of a joining node's bootstrap connection: no client certificate, and trust in
/// the listener only through the CA digest of the join token (swarmkit fetches the root CA and
/// compares digests, `ca/certificates.go` `GetRemoteCA`; here the CA comes in the handshake itself).
pub struct JoinTls {
    connector: TlsConnector,
    verifier: Arc<PinnedCaVerifier>,
}

impl std::fmt::Debug for JoinTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinTls").field("digest", &self.verifier.digest).finish_non_exhaustive()
    }
}

impl JoinTls {
    /// Trust a listener whose chain holds a CA with this token-form digest, and that CA only.
    pub fn new(ca_digest: &str) -> Result<Self, TlsError> {
        let provider = provider();
        let verifier = Arc::new(PinnedCaVerifier {
            digest: ca_digest.to_string(),
            provider: provider.clone(),
            seen: std::sync::Mutex::new(Seen::default()),
        });
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone())
            .with_no_client_auth();
        Ok(JoinTls { connector: TlsConnector::from(Arc::new(client)), verifier })
    }

    pub async fn connect(&self, tcp: TcpStream) -> Result<BoxStream, String> {
        let name = ServerName::try_from(NODE_SERVER_NAME).map_err(|e| e.to_string())?;
        let stream = self.connector.connect(name, tcp).await.map_err(|e| e.to_string())?;
        Ok(Box::pin(stream))
    }

    /// The CA certificate (DER) the listener proved it belongs to, once a handshake succeeded.
    pub fn pinned_ca(&self) -> Option<Vec<u8>> {
        self.verifier.lock().pinned.clone()
    }

    /// Whether a listener presented no CA with the token's digest (another swarm's manager, or an
    /// impostor): the caller reports Swarm's "remote CA does not match fingerprint".
    pub fn ca_mismatch(&self) -> bool {
        self.verifier.lock().mismatch
    }
}

#[derive(Default)]
struct Seen {
    pinned: Option<Vec<u8>>,
    mismatch: bool,
}

#[derive(Debug)]
struct PinnedCaVerifier {
    digest: String,
    provider: Arc<CryptoProvider>,
    seen: std::sync::Mutex<Seen>,
}

impl std::fmt::Debug for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Seen").field("mismatch", &self.mismatch).finish_non_exhaustive()
    }
}

impl PinnedCaVerifier {
    fn lock(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(ca) = intermediates.iter().find(|cert| der_digest(cert) == self.digest) else {
            self.lock().mismatch = true;
            return Err(rustls::Error::General(format!(
                "remote CA does not match fingerprint. Expected: {}",
                self.digest
            )));
        };
        // The pinned CA becomes the only root, and the listener's certificate must chain to it.
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        let verified = verifier.verify_server_cert(end_entity, &[], server_name, ocsp_response, now)?;
        self.lock().pinned = Some(ca.to_vec());
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
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
        assert_eq!(ca.digest().len(), 50);
        let token = shoal_core::tokens::generate(&ca.digest());
        assert_eq!(shoal_core::tokens::parse(&token).unwrap().0, ca.digest());
        let node = again.issue("node-1").unwrap();
        // Building the config parses everything; the chain itself is checked in the handshake tests.
        TlsConfig::new(ca.cert_pem(), &node).unwrap();
        let der = CertificateDer::from_pem_slice(node.cert_pem.as_bytes()).unwrap();
        assert_eq!(node_id(&der).as_deref(), Some("node-1"));
        assert!(ca.issue("bad id").is_err());
        // A node's own key: the CA signs its public half.
        let key = KeyPair::generate().unwrap();
        let cert_pem = ca.issue_for_key("node-2", NodeRole::Worker, key.public_key_raw()).unwrap();
        let own = NodeCert { cert_pem, key_pem: key.serialize_pem() };
        TlsConfig::new(ca.cert_pem(), &own).unwrap();
        let der = CertificateDer::from_pem_slice(own.cert_pem.as_bytes()).unwrap();
        assert_eq!(node_id(&der).as_deref(), Some("node-2"));
        assert!(matches!(ca.issue_for_key("node-3", NodeRole::Worker, b"garbage"), Err(TlsError::PublicKey)));
    }
}
