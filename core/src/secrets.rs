//! The managers' key for secrets and configs, and sealing values with it.
//!
//! - **At rest.** The replicated store holds a secret's (config's) value only [`Sealed`]:
//!   XChaCha20-Poly1305 (RustCrypto's `chacha20poly1305`) under a 256-bit key, a fresh random
//!   24-byte nonce per value, and the object's id as associated data. The raft log and snapshots
//!   therefore never carry a value in plain text, and the key is never in the store.
//! - **The key.** Made by `swarm init` (from the runtime's rng: seeded in the simulator, the OS CSPRNG
//!   in the daemon) and kept in the manager's data dir (`secrets.key`, on the disk seam). A node that
//!   becomes a manager (joined with the manager token, or promoted) asks another manager for it over
//!   the control channel ([`crate::control::ControlRequest::SecretsKey`]), which the transport's
//!   mutual TLS and the gate admit only from nodes the store counts as managers; it asks again
//!   whenever it needs the key and lacks it. Workers never hold it. `--force-new-cluster` keeps the
//!   node's key. A demotion wipes the raft files, not the key file (it is useless without the store).
//! - **In flight.** The leader's dispatcher opens the values a node's tasks use and sends them with
//!   that node's assignments ([`crate::api::FilePayload`]), over the same mutual-TLS session; the
//!   agent keeps them in memory only while a task needs them.
//!
//! Nothing here prints a key or a value: `Debug` of [`Keyring`] and of every payload redacts them.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};

use crate::api::Sealed;
use crate::env::{runtime, Disk, Transport};
use crate::rpc::{self, Channel};
use crate::store::Store;

/// The key's file in the manager's data dir.
pub const KEY_FILE: &str = "secrets.key";

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The key as it is kept on disk and handed to a new manager.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyMaterial {
    /// A random name of the key (not derived from it), recorded in every value it sealed.
    pub id: String,
    /// Base64 of the 32 key bytes.
    pub key: String,
}

impl std::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyMaterial {{ id: {:?}, key: <redacted> }}", self.id)
    }
}

impl KeyMaterial {
    /// A new key from the runtime's rng.
    pub fn generate() -> KeyMaterial {
        let mut key = [0u8; 32];
        runtime::random_bytes(&mut key);
        let mut id = [0u8; 8];
        runtime::random_bytes(&mut id);
        KeyMaterial { id: id.iter().map(|b| format!("{b:02x}")).collect(), key: B64.encode(key) }
    }

    fn cipher(&self) -> Result<XChaCha20Poly1305, SecretsError> {
        let bytes = B64.decode(&self.key).map_err(|_| SecretsError::BadKey)?;
        XChaCha20Poly1305::new_from_slice(&bytes).map_err(|_| SecretsError::BadKey)
    }
}

/// Why a value could not be sealed or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretsError {
    #[error(
        "this manager does not hold the swarm's secrets key (none of the managers it asked answered with it); \
         secrets and configs cannot be created or read here"
    )]
    NoKey,
    #[error("the secrets key file is damaged")]
    BadKey,
    #[error("the value was sealed with key {found}, this manager holds key {held}")]
    OtherKey { found: String, held: String },
    #[error("the sealed value does not open (damaged, or not this object's)")]
    Damaged,
    #[error("cannot keep the secrets key: {0}")]
    Storage(String),
}

/// Seal `plain` for object `object_id`.
pub fn seal(key: &KeyMaterial, object_id: &str, plain: &[u8]) -> Result<Sealed, SecretsError> {
    let cipher = key.cipher()?;
    let mut nonce = [0u8; 24];
    runtime::random_bytes(&mut nonce);
    let ciphertext = cipher
        .encrypt(XNonce::from_slice(&nonce), Payload { msg: plain, aad: object_id.as_bytes() })
        .map_err(|_| SecretsError::Damaged)?;
    Ok(Sealed { key_id: key.id.clone(), nonce: B64.encode(nonce), ciphertext: B64.encode(ciphertext) })
}

/// Open what [`seal`] made for `object_id`.
pub fn open(key: &KeyMaterial, object_id: &str, sealed: &Sealed) -> Result<Vec<u8>, SecretsError> {
    if sealed.key_id != key.id {
        return Err(SecretsError::OtherKey { found: sealed.key_id.clone(), held: key.id.clone() });
    }
    let nonce = B64.decode(&sealed.nonce).map_err(|_| SecretsError::Damaged)?;
    let ciphertext = B64.decode(&sealed.ciphertext).map_err(|_| SecretsError::Damaged)?;
    if nonce.len() != 24 {
        return Err(SecretsError::Damaged);
    }
    key.cipher()?
        .decrypt(XNonce::from_slice(&nonce), Payload { msg: &ciphertext, aad: object_id.as_bytes() })
        .map_err(|_| SecretsError::Damaged)
}

/// Base64, as values travel in payloads and `config inspect` shows them.
pub fn encode(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

pub fn decode(text: &str) -> Option<Vec<u8>> {
    B64.decode(text).ok()
}

/// One manager's copy of the key: in memory once loaded, on its disk, fetched from another manager
/// when missing.
pub struct Keyring {
    disk: Arc<dyn Disk>,
    key: RwLock<Option<KeyMaterial>>,
    /// This node's address (not asked for its own key).
    addr: String,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let held = self.key.read().map(|k| k.as_ref().map(|k| k.id.clone())).unwrap_or_default();
        write!(f, "Keyring {{ key_id: {held:?} }}")
    }
}

impl Keyring {
    /// The keyring of a node, with the key its disk holds (if any).
    pub async fn load(disk: Arc<dyn Disk>, addr: String) -> Keyring {
        let key = match disk.read(KEY_FILE).await {
            Ok(Some(bytes)) => serde_json::from_slice::<KeyMaterial>(&bytes).ok(),
            _ => None,
        };
        Keyring { disk, key: RwLock::new(key), addr }
    }

    /// The key, if this node holds it.
    pub fn key(&self) -> Option<KeyMaterial> {
        self.key.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Keep `key` (made here or handed over by a manager), on disk first.
    pub async fn install(&self, key: KeyMaterial) -> Result<(), SecretsError> {
        key.cipher()?;
        let bytes = serde_json::to_vec(&key).map_err(|e| SecretsError::Storage(e.to_string()))?;
        self.disk.write_atomic(KEY_FILE, &bytes).await.map_err(|e| SecretsError::Storage(e.to_string()))?;
        *self.key.write().unwrap_or_else(|p| p.into_inner()) = Some(key);
        Ok(())
    }

    /// `swarm init`: make the swarm's key (a node re-initialised with `--force-new-cluster` keeps its own).
    pub async fn create_if_missing(&self) -> Result<(), SecretsError> {
        if self.key().is_some() {
            return Ok(());
        }
        self.install(KeyMaterial::generate()).await
    }

    /// The key, asking the other managers the store lists when this node lacks it.
    pub async fn ensure(&self, store: &Store, transport: &dyn Transport) -> Result<KeyMaterial, SecretsError> {
        if let Some(key) = self.key() {
            return Ok(key);
        }
        let peers: Vec<String> = store.view(|s| {
            s.nodes
                .values()
                .filter_map(|n| n.manager_status.as_ref().map(|m| m.addr.clone()))
                .filter(|addr| *addr != self.addr)
                .collect()
        });
        for addr in peers {
            let reply: Result<crate::control::ControlResult, _> = rpc::call(
                transport,
                &addr,
                Channel::Control,
                &crate::control::ControlRequest::SecretsKey,
                Duration::from_secs(5),
            )
            .await;
            if let Ok(Ok(crate::control::ControlResponse::SecretsKey(key))) = reply {
                self.install(key.clone()).await?;
                return Ok(key);
            }
        }
        Err(SecretsError::NoKey)
    }
}

// Plain tests: the rng seam is madsim's under `cargo sim`, which needs a simulation to run in.
#[cfg(all(test, not(madsim)))]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_key_and_object() {
        let key = KeyMaterial::generate();
        let sealed = seal(&key, "secret-1", b"hunter2").unwrap();
        assert!(!sealed.ciphertext.contains("hunter2") && !format!("{sealed:?}").contains(&sealed.ciphertext));
        assert_eq!(open(&key, "secret-1", &sealed).unwrap(), b"hunter2");
        assert_eq!(open(&key, "secret-2", &sealed), Err(SecretsError::Damaged), "bound to its object");
        let other = KeyMaterial::generate();
        assert!(matches!(open(&other, "secret-1", &sealed), Err(SecretsError::OtherKey { .. })));
        let forged = KeyMaterial { id: key.id.clone(), ..other };
        assert_eq!(open(&forged, "secret-1", &sealed), Err(SecretsError::Damaged));
        let again = seal(&key, "secret-1", b"hunter2").unwrap();
        assert_ne!(again.nonce, sealed.nonce, "a fresh nonce per value");
        assert!(!format!("{key:?}").contains(&key.key));
    }
}
