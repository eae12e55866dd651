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
//! Node certificates expire, as Swarm's do: each is valid for the cluster's certificate expiry
//! (`--cert-expiry`, 90 days by default, at least an hour), backdated an hour for clock skew, and the
//! handshake refuses an expired one. Nodes renew theirs before that (see [`crate::renewal`]); a
//! [`TlsConfig`] takes the new certificate without a restart ([`TlsConfig::replace_node_cert`]).
//!
//! Root CA rotation (`swarm ca --rotate`, DESIGN §6b): every root this swarm ever has is named the
//! same ([`CA_COMMON_NAME`]), as swarmkit's are, and a new root is cross-signed by the current one
//! ([`ClusterCa::cross_sign`]): a certificate issued by the new root, sent with the cross-signed
//! certificate, chains to either root. A [`TlsConfig`] trusts a bundle of roots (`ca.pem` may hold
//! several) and takes a new bundle with a new certificate without a restart
//! ([`TlsConfig::replace_credentials`]); [`issuer_digest`] says which root issued a certificate.
//!
//! Crypto is rustls with the ring provider.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::ResolvesClientCert;
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
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
    #[error("not a node certificate of this swarm: {0}")]
    NotANodeCertificate(String),
}

/// Swarm's default node certificate validity (`CAConfig.NodeCertExpiry`, 2160 h).
pub const DEFAULT_CERT_EXPIRY: Duration = Duration::from_secs(2160 * 3600);
/// The shortest validity Swarm accepts for `--cert-expiry`.
pub const MIN_CERT_EXPIRY: Duration = Duration::from_secs(3600);
/// How far back a certificate's validity starts, so a peer whose clock lags still accepts it.
pub const CERT_BACKDATE: Duration = Duration::from_secs(3600);
/// The CA's own validity (swarmkit's `RootCAExpiration`, 20 years).
const CA_VALIDITY: Duration = Duration::from_secs(20 * 365 * 24 * 3600);

/// Swarm's check of `--cert-expiry`.
pub fn check_cert_expiry(expiry: Duration) -> Result<(), String> {
    if expiry < MIN_CERT_EXPIRY {
        return Err("minimum certificate expiry time is: 1h0m0s".into());
    }
    Ok(())
}

/// What a node certificate says: whom it names, as what, and when it is valid (Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub node_id: String,
    /// From the OU, as swarmkit writes it; informational (see `sign`).
    pub role: Option<NodeRole>,
    pub not_before: i64,
    pub not_after: i64,
}

/// Read a node certificate back.
pub fn cert_info(cert_pem: &str) -> Result<CertInfo, TlsError> {
    let params = CertificateParams::from_ca_cert_pem(cert_pem)?;
    let node_id = params
        .subject_alt_names
        .iter()
        .find_map(|san| match san {
            SanType::URI(uri) => uri.as_str().strip_prefix(NODE_ID_URI_PREFIX).map(str::to_string),
            _ => None,
        })
        .ok_or_else(|| TlsError::NotANodeCertificate("it names no node id".into()))?;
    let role = params.distinguished_name.get(&DnType::OrganizationalUnitName).and_then(dn_text);
    let role = match role.as_deref() {
        Some("swarm-manager") => Some(NodeRole::Manager),
        Some("swarm-worker") => Some(NodeRole::Worker),
        _ => None,
    };
    Ok(CertInfo {
        node_id,
        role,
        not_before: params.not_before.unix_timestamp(),
        not_after: params.not_after.unix_timestamp(),
    })
}

/// The text of a distinguished-name value.
fn dn_text(value: &rcgen::DnValue) -> Option<String> {
    match value {
        rcgen::DnValue::Utf8String(text) => Some(text.clone()),
        rcgen::DnValue::PrintableString(text) => Some(text.as_str().to_string()),
        rcgen::DnValue::Ia5String(text) => Some(text.as_str().to_string()),
        _ => None,
    }
}

/// `[now - CERT_BACKDATE, now + validity]` as rcgen takes it.
fn validity_from_now(validity: Duration) -> (time::OffsetDateTime, time::OffsetDateTime) {
    let now = time::OffsetDateTime::now_utc();
    let span = |d: Duration| time::Duration::try_from(d).unwrap_or(time::Duration::MAX);
    (now - span(CERT_BACKDATE), now.saturating_add(span(validity)))
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
    (params.not_before, params.not_after) = validity_from_now(CA_VALIDITY);
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

    /// `new`'s root certificate signed by this CA (swarmkit's cross-signed intermediate): same name
    /// and key as `new`'s root, so certificates `new` issues chain through it to this root.
    pub fn cross_sign(&self, new: &ClusterCa) -> Result<String, TlsError> {
        let mut params = ca_params();
        params.use_authority_key_identifier_extension = true;
        Ok(params.signed_by(&new.key, &self.signer, &self.key)?.pem())
    }

    /// A certificate (valid for [`DEFAULT_CERT_EXPIRY`]) and a fresh key for `node_id`, signed by
    /// this CA: for tests, where the key never leaves the process.
    pub fn issue(&self, node_id: &str) -> Result<NodeCert, TlsError> {
        let key = KeyPair::generate()?;
        let (not_before, not_after) = validity_from_now(DEFAULT_CERT_EXPIRY);
        let cert_pem = self.sign(node_id, None, &key, not_before, not_after)?;
        Ok(NodeCert { cert_pem, key_pem: key.serialize_pem() })
    }

    /// A certificate for `node_id` in `role`, valid for `validity` from now, over a public key the
    /// node made itself (an uncompressed P-256 point, [`KeyPair::public_key_raw`]): the node keeps
    /// its private key.
    pub fn issue_for_key(
        &self,
        node_id: &str,
        role: NodeRole,
        public_key: &[u8],
        validity: Duration,
    ) -> Result<String, TlsError> {
        let (not_before, not_after) = validity_from_now(validity);
        self.issue_for_key_between(node_id, role, public_key, not_before, not_after)
    }

    /// [`Self::issue_for_key`] with explicit bounds (tests make expired certificates with it).
    pub fn issue_for_key_between(
        &self,
        node_id: &str,
        role: NodeRole,
        public_key: &[u8],
        not_before: time::OffsetDateTime,
        not_after: time::OffsetDateTime,
    ) -> Result<String, TlsError> {
        // Possession of the matching private key is proved by every later TLS handshake.
        if public_key.len() != 65 || public_key[0] != 4 {
            return Err(TlsError::PublicKey);
        }
        self.sign(node_id, Some(role), &RawP256Key(public_key.to_vec()), not_before, not_after)
    }

    fn sign(
        &self,
        node_id: &str,
        role: Option<NodeRole>,
        key: &impl rcgen::PublicKeyData,
        not_before: time::OffsetDateTime,
        not_after: time::OffsetDateTime,
    ) -> Result<String, TlsError> {
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
        params.not_before = not_before;
        params.not_after = not_after;
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
    /// Both sides as built for the trusted roots; rebuilt when the roots change (CA rotation).
    sides: RwLock<Sides>,
    /// The trusted roots (PEM, one or more certificates).
    ca_cert_pem: RwLock<String>,
    /// What this node presents, dialling and listening; replaced when the node renews.
    presented: Arc<PresentedCert>,
}

/// The dialling and listening configurations for one set of trusted roots.
#[derive(Clone)]
struct Sides {
    client: TlsConnector,
    server: TlsAcceptor,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig").finish_non_exhaustive()
    }
}

/// The node's certificate chain and key as rustls presents them, swappable while connections come
/// and go (each handshake takes the one current at its start).
#[derive(Debug)]
struct PresentedCert(RwLock<Arc<CertifiedKey>>);

impl PresentedCert {
    fn current(&self) -> Arc<CertifiedKey> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl ResolvesClientCert for PresentedCert {
    fn resolve(&self, _root_hint_subjects: &[&[u8]], _sigschemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

impl ResolvesServerCert for PresentedCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// Every certificate in a PEM bundle (at least one).
fn pem_certs(bundle: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(bundle.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::Pem("no certificate in the CA bundle".into()));
    }
    Ok(certs)
}

/// `node`'s certificate (with any intermediate it came with), followed by the trusted roots, with
/// its key, as rustls signs with them. The roots go along so a joining node (which has only the
/// CA's digest from its token) can find and pin one.
fn certified_key(ca_cert_pem: &str, node: &NodeCert, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let pem = |e: rustls::pki_types::pem::Error| TlsError::Pem(e.to_string());
    let mut chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(node.cert_pem.as_bytes()).collect::<Result<_, _>>().map_err(pem)?;
    chain.extend(pem_certs(ca_cert_pem)?);
    let key = PrivateKeyDer::from_pem_slice(node.key_pem.as_bytes()).map_err(pem)?;
    let signing_key = provider.key_provider.load_private_key(key)?;
    let certified = CertifiedKey::new(chain, signing_key);
    // The certificate must be for this key.
    certified.keys_match()?;
    Ok(certified)
}

impl TlsConfig {
    /// Trust the roots in `ca_cert_pem` only (one, or two during a CA rotation), and present
    /// `node`'s certificate, as dialler and as listener.
    pub fn new(ca_cert_pem: &str, node: &NodeCert) -> Result<Self, TlsError> {
        let provider = provider();
        let presented = Arc::new(PresentedCert(RwLock::new(Arc::new(certified_key(ca_cert_pem, node, &provider)?))));
        let sides = Self::sides(ca_cert_pem, &presented)?;
        Ok(TlsConfig { sides: RwLock::new(sides), ca_cert_pem: RwLock::new(ca_cert_pem.to_string()), presented })
    }

    fn sides(ca_cert_pem: &str, presented: &Arc<PresentedCert>) -> Result<Sides, TlsError> {
        let mut roots = RootCertStore::empty();
        for cert in pem_certs(ca_cert_pem)? {
            roots.add(cert)?;
        }
        let roots = Arc::new(roots);
        let provider = provider();
        let client = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots.clone())
            .with_client_cert_resolver(presented.clone());
        // A client without a certificate is a joining node on its bootstrap connection; `net` serves
        // such connections only with the bootstrap handler. A certificate, if presented, must verify.
        let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
            .allow_unauthenticated()
            .build()
            .map_err(|e| TlsError::Config(rustls::Error::General(e.to_string())))?;
        let server = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(presented.clone());
        Ok(Sides { client: TlsConnector::from(Arc::new(client)), server: TlsAcceptor::from(Arc::new(server)) })
    }

    /// Present `node` from the next handshake on (a renewed certificate); connections already up
    /// keep the session they have.
    pub fn replace_node_cert(&self, node: &NodeCert) -> Result<(), TlsError> {
        let roots = self.ca_cert_pem.read().unwrap_or_else(|p| p.into_inner()).clone();
        let certified = Arc::new(certified_key(&roots, node, &provider())?);
        *self.presented.0.write().unwrap_or_else(|p| p.into_inner()) = certified;
        Ok(())
    }

    /// Trust the roots in `ca_cert_pem` and present `node` from the next handshake on (a renewal
    /// during or after a CA rotation); connections already up keep the session they have.
    pub fn replace_credentials(&self, ca_cert_pem: &str, node: &NodeCert) -> Result<(), TlsError> {
        let certified = Arc::new(certified_key(ca_cert_pem, node, &provider())?);
        let sides = Self::sides(ca_cert_pem, &self.presented)?;
        *self.presented.0.write().unwrap_or_else(|p| p.into_inner()) = certified;
        *self.sides.write().unwrap_or_else(|p| p.into_inner()) = sides;
        *self.ca_cert_pem.write().unwrap_or_else(|p| p.into_inner()) = ca_cert_pem.to_string();
        Ok(())
    }

    /// The trusted roots (PEM bundle).
    pub fn ca_cert_pem(&self) -> String {
        self.ca_cert_pem.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The digests of the trusted roots, sorted.
    pub fn trust_digests(&self) -> Vec<String> {
        bundle_digests(&self.ca_cert_pem())
    }

    fn current_sides(&self) -> Sides {
        self.sides.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Dial side: verify the listener's certificate against the cluster CA.
    pub async fn connect(&self, tcp: TcpStream) -> Result<BoxStream, String> {
        let name = ServerName::try_from(NODE_SERVER_NAME).map_err(|e| e.to_string())?;
        let client = self.current_sides().client;
        let stream = client.connect(name, tcp).await.map_err(|e| e.to_string())?;
        Ok(Box::pin(stream))
    }

    /// Listen side: verify a client certificate against the cluster CA; return the node id it names
    /// (`None`: the peer presented no certificate, or one that names no node).
    pub(crate) async fn accept(&self, tcp: TcpStream) -> Result<(BoxStream, Option<String>), String> {
        let server = self.current_sides().server;
        let stream = server.accept(tcp).await.map_err(|e| e.to_string())?;
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
        // The listener's intermediates go along: during a CA rotation its certificate comes from the
        // new root and chains to the token's (old) root through the cross-signed certificate.
        let verified = verifier.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)?;
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

/// The digests (join-token form) of every certificate in a PEM bundle, sorted.
pub fn bundle_digests(bundle: &str) -> Vec<String> {
    let mut digests: Vec<String> =
        CertificateDer::pem_slice_iter(bundle.as_bytes()).filter_map(Result::ok).map(|der| der_digest(&der)).collect();
    digests.sort();
    digests.dedup();
    digests
}

/// Which root of `bundle` issued the (first) certificate in `cert_pem` itself, by digest: the one
/// whose key verifies it directly, without intermediates. `None` if none does.
pub fn issuer_digest(cert_pem: &str, bundle: &str) -> Option<String> {
    let leaf = CertificateDer::from_pem_slice(cert_pem.as_bytes()).ok()?;
    let name = ServerName::try_from(NODE_SERVER_NAME).ok()?;
    let provider = provider();
    CertificateDer::pem_slice_iter(bundle.as_bytes()).filter_map(Result::ok).find_map(|root| {
        let mut roots = RootCertStore::empty();
        roots.add(root.clone()).ok()?;
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build().ok()?;
        verifier.verify_server_cert(&leaf, &[], &name, &[], UnixTime::now()).ok()?;
        Some(der_digest(&root))
    })
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
        let cert_pem = ca.issue_for_key("node-2", NodeRole::Worker, key.public_key_raw(), DEFAULT_CERT_EXPIRY).unwrap();
        let own = NodeCert { cert_pem, key_pem: key.serialize_pem() };
        TlsConfig::new(ca.cert_pem(), &own).unwrap();
        let der = CertificateDer::from_pem_slice(own.cert_pem.as_bytes()).unwrap();
        assert_eq!(node_id(&der).as_deref(), Some("node-2"));
        let garbage = ca.issue_for_key("node-3", NodeRole::Worker, b"garbage", DEFAULT_CERT_EXPIRY);
        assert!(matches!(garbage, Err(TlsError::PublicKey)));
    }

    fn now() -> i64 {
        time::OffsetDateTime::now_utc().unix_timestamp()
    }

    #[test]
    fn certificates_say_whom_as_what_and_until_when() {
        let ca = ClusterCa::generate().unwrap();
        let key = KeyPair::generate().unwrap();
        let two_days = Duration::from_secs(48 * 3600);
        let cert = ca.issue_for_key("node-9", NodeRole::Manager, key.public_key_raw(), two_days).unwrap();
        let info = cert_info(&cert).unwrap();
        assert_eq!((info.node_id.as_str(), info.role), ("node-9", Some(NodeRole::Manager)));
        // Backdated an hour; valid for the expiry from now.
        assert!((info.not_before - (now() - 3600)).abs() <= 5, "{info:?}");
        assert!((info.not_after - (now() + 48 * 3600)).abs() <= 5, "{info:?}");
        assert!(cert_info(ca.cert_pem()).is_err(), "the CA names no node");
        assert_eq!(
            check_cert_expiry(Duration::from_secs(3599)).unwrap_err(),
            "minimum certificate expiry time is: 1h0m0s"
        );
        assert!(check_cert_expiry(MIN_CERT_EXPIRY).is_ok());
    }

    /// A handshake between `client` and `server` over loopback: the identity the server saw.
    async fn handshake(client: &TlsConfig, server: &TlsConfig) -> Result<Option<String>, String> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accept = async {
            let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
            let (mut stream, identity) = server.accept(tcp).await?;
            // Finish the handshake from the server's side (TLS 1.3 verifies the client's certificate
            // on its first read).
            let mut byte = [0u8; 1];
            tokio::io::AsyncReadExt::read_exact(&mut stream, &mut byte).await.map_err(|e| e.to_string())?;
            Ok::<_, String>(identity)
        };
        let connect = async {
            let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
            let mut stream = client.connect(tcp).await?;
            tokio::io::AsyncWriteExt::write_all(&mut stream, b"x").await.map_err(|e| e.to_string())?;
            tokio::io::AsyncWriteExt::flush(&mut stream).await.map_err(|e| e.to_string())?;
            Ok::<_, String>(stream)
        };
        let (accepted, connected) = tokio::join!(accept, connect);
        let _stream = connected?;
        accepted
    }

    fn node_cert(ca: &ClusterCa, id: &str, not_before: i64, not_after: i64) -> NodeCert {
        let key = KeyPair::generate().unwrap();
        let at = |secs| time::OffsetDateTime::from_unix_timestamp(secs).unwrap();
        let cert_pem = ca
            .issue_for_key_between(id, NodeRole::Worker, key.public_key_raw(), at(not_before), at(not_after))
            .unwrap();
        NodeCert { cert_pem, key_pem: key.serialize_pem() }
    }

    #[tokio::test]
    async fn expired_certificates_are_refused_and_renewed_ones_take_over() {
        let ca = ClusterCa::generate().unwrap();
        let server = TlsConfig::new(ca.cert_pem(), &ca.issue("manager-1").unwrap()).unwrap();
        let valid = TlsConfig::new(ca.cert_pem(), &node_cert(&ca, "worker-1", now() - 60, now() + 3600)).unwrap();
        assert_eq!(handshake(&valid, &server).await, Ok(Some("worker-1".into())));
        let expired = TlsConfig::new(ca.cert_pem(), &node_cert(&ca, "worker-1", now() - 7200, now() - 60)).unwrap();
        let err = handshake(&expired, &server).await.unwrap_err();
        assert!(err.contains("expired") || err.contains("Expired"), "{err}");
        // The expired node renews: the same config presents the new certificate from then on.
        expired.replace_node_cert(&node_cert(&ca, "worker-1", now() - 60, now() + 3600)).unwrap();
        assert_eq!(handshake(&expired, &server).await, Ok(Some("worker-1".into())));
        // A listener's expired certificate is refused by the dialler too.
        let stale = TlsConfig::new(ca.cert_pem(), &node_cert(&ca, "manager-2", now() - 7200, now() - 60)).unwrap();
        assert!(handshake(&valid, &stale).await.is_err());
        // A certificate that does not belong to the key is refused before it is presented.
        let mut mismatched = node_cert(&ca, "worker-2", now() - 60, now() + 3600);
        mismatched.key_pem = KeyPair::generate().unwrap().serialize_pem();
        assert!(valid.replace_node_cert(&mismatched).is_err());
    }

    /// A node certificate from `ca`, with `intermediate` after it (a cross-signed root, or none).
    fn chained(ca: &ClusterCa, id: &str, intermediate: &str) -> NodeCert {
        let mut node = node_cert(ca, id, now() - 60, now() + 3600);
        if !intermediate.is_empty() {
            node.cert_pem = format!("{}\n{}", node.cert_pem.trim_end(), intermediate);
        }
        node
    }

    #[tokio::test]
    async fn a_cross_signed_root_keeps_old_and_new_certificates_talking() {
        let old = ClusterCa::generate().unwrap();
        let new = ClusterCa::generate().unwrap();
        let cross = old.cross_sign(&new).unwrap();
        let both = format!("{}{}", old.cert_pem(), new.cert_pem());
        // A node that still trusts only the old root, with an old certificate.
        let stale = TlsConfig::new(old.cert_pem(), &chained(&old, "manager-1", "")).unwrap();
        // A renewed node: a certificate from the new root, sent with the cross-signed one.
        let renewed = TlsConfig::new(&both, &chained(&new, "worker-1", &cross)).unwrap();
        assert_eq!(handshake(&renewed, &stale).await, Ok(Some("worker-1".into())));
        assert_eq!(handshake(&stale, &renewed).await, Ok(Some("manager-1".into())));
        // Without the cross-signed certificate the old root cannot vouch for the new one.
        let bare = TlsConfig::new(&both, &chained(&new, "worker-2", "")).unwrap();
        assert!(handshake(&bare, &stale).await.is_err());
        // After the rotation: trust in the new root alone still accepts renewed nodes, not old ones.
        let done = TlsConfig::new(&both, &chained(&new, "manager-2", &cross)).unwrap();
        done.replace_credentials(new.cert_pem(), &chained(&new, "manager-2", &cross)).unwrap();
        assert_eq!(done.trust_digests(), vec![new.digest()]);
        assert_eq!(handshake(&renewed, &done).await, Ok(Some("worker-1".into())));
        assert!(handshake(&stale, &done).await.is_err(), "the old root is no longer trusted");
        // Which root issued what.
        let mut digests = vec![old.digest(), new.digest()];
        digests.sort();
        assert_eq!(bundle_digests(&both), digests);
        let new_leaf = chained(&new, "n", &cross).cert_pem;
        assert_eq!(issuer_digest(&new_leaf, &both), Some(new.digest()));
        assert_eq!(issuer_digest(&chained(&old, "n", "").cert_pem, &both), Some(old.digest()));
        assert_eq!(issuer_digest(&new_leaf, old.cert_pem()), None);

        // A joining node pinned to the old root's digest accepts a renewed manager.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let join = JoinTls::new(&old.digest()).unwrap();
        let accept = async {
            let (tcp, _) = listener.accept().await.unwrap();
            let (mut stream, _) = renewed.accept(tcp).await?;
            let mut byte = [0u8; 1];
            tokio::io::AsyncReadExt::read_exact(&mut stream, &mut byte).await.map_err(|e| e.to_string())
        };
        let connect = async {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let mut stream = join.connect(tcp).await?;
            tokio::io::AsyncWriteExt::write_all(&mut stream, b"x").await.map_err(|e| e.to_string())?;
            tokio::io::AsyncWriteExt::flush(&mut stream).await.map_err(|e| e.to_string())
        };
        let (accepted, connected) = tokio::join!(accept, connect);
        connected.unwrap();
        accepted.unwrap();
        assert_eq!(
            join.pinned_ca().unwrap(),
            CertificateDer::from_pem_slice(old.cert_pem().as_bytes()).unwrap().to_vec()
        );
    }
}
