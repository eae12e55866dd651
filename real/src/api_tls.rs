//! The Engine API on TCP with client certificates: Docker's `--tlsverify` model. The daemon
//! (`shoal daemon --tcp ADDR --tlsverify --tlscacert ca.pem --tlscert cert.pem --tlskey key.pem`)
//! presents its certificate and accepts only clients whose certificate chains to `--tlscacert`; a
//! client (`shoal --tlsverify -H tcp://HOST:PORT …`, or `docker --tlsverify …`) presents its own and
//! trusts the daemon only if its certificate chains to the same CA and names the host it dialled.
//! These are the operator's certificates (as Docker's are), not the swarm's CA: the API is how an
//! operator reaches a daemon, the swarm's CA how nodes reach each other.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// The three files of `--tlscacert`, `--tlscert`, `--tlskey`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    /// Docker's defaults: `ca.pem`, `cert.pem`, `key.pem` in `$DOCKER_CERT_PATH`, else `~/.docker`.
    pub fn default_dir() -> PathBuf {
        match std::env::var_os("DOCKER_CERT_PATH").filter(|p| !p.is_empty()) {
            Some(dir) => PathBuf::from(dir),
            None => std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default().join(".docker"),
        }
    }

    /// The given paths, each defaulting to its file in [`TlsFiles::default_dir`].
    pub fn or_defaults(ca: Option<PathBuf>, cert: Option<PathBuf>, key: Option<PathBuf>) -> TlsFiles {
        let dir = TlsFiles::default_dir();
        TlsFiles {
            ca: ca.unwrap_or_else(|| dir.join("ca.pem")),
            cert: cert.unwrap_or_else(|| dir.join("cert.pem")),
            key: key.unwrap_or_else(|| dir.join("key.pem")),
        }
    }
}

/// Why TLS could not be set up: names the file and what was wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ApiTlsError(pub String);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, ApiTlsError> {
    std::fs::read(path).map_err(|e| ApiTlsError(format!("could not read {what} {}: {e}", path.display())))
}

fn certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, ApiTlsError> {
    let pem = read(path, what)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| ApiTlsError(format!("{what} {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(ApiTlsError(format!("{what} {}: no certificate in it", path.display())));
    }
    Ok(certs)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>, ApiTlsError> {
    PrivateKeyDer::from_pem_slice(&read(path, "key")?).map_err(|e| ApiTlsError(format!("key {}: {e}", path.display())))
}

fn roots(path: &Path) -> Result<Arc<RootCertStore>, ApiTlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certs(path, "CA certificate")? {
        roots.add(cert).map_err(|e| ApiTlsError(format!("CA certificate {}: {e}", path.display())))?;
    }
    Ok(Arc::new(roots))
}

/// The daemon's side: present `cert`/`key`, require a client certificate that chains to `ca`.
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, ApiTlsError> {
    let provider = provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(&files.ca)?, provider.clone())
        .build()
        .map_err(|e| ApiTlsError(format!("CA certificate {}: {e}", files.ca.display())))?;
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ApiTlsError(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs(&files.cert, "certificate")?, key(&files.key)?)
        .map_err(|e| {
            ApiTlsError(format!("certificate {} with key {}: {e}", files.cert.display(), files.key.display()))
        })?;
    Ok(Arc::new(config))
}

/// The client's side: trust daemons whose certificate chains to `ca`, present `cert`/`key`.
pub fn client_config(files: &TlsFiles) -> Result<Arc<ClientConfig>, ApiTlsError> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ApiTlsError(e.to_string()))?
        .with_root_certificates(roots(&files.ca)?)
        .with_client_auth_cert(certs(&files.cert, "certificate")?, key(&files.key)?)
        .map_err(|e| {
            ApiTlsError(format!("certificate {} with key {}: {e}", files.cert.display(), files.key.display()))
        })?;
    Ok(Arc::new(config))
}

/// The name a client verifies the daemon's certificate against: the host of `host:port` (an IP, or
/// a DNS name).
pub fn server_name(addr: &str) -> Result<ServerName<'static>, ApiTlsError> {
    let host = match addr.rsplit_once(':') {
        Some((host, _)) => host.trim_start_matches('[').trim_end_matches(']'),
        None => addr,
    };
    ServerName::try_from(host.to_string()).map_err(|e| ApiTlsError(format!("invalid host {host:?}: {e}")))
}
