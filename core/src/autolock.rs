//! Autolock: a manager's data at rest under a data encryption key (DEK), itself kept under the
//! swarm's unlock key (the key-encryption key, KEK) when autolock is on — swarmkit's
//! `manager/deks.go` and `ca/keyreadwriter.go`, on the disk seam.
//!
//! - **The DEK** (32 random bytes from the runtime's rng) encrypts every raft file (log records,
//!   vote, snapshot), the secrets key (`secrets.key`) and, in the daemon, the node's TLS private
//!   keys. [`EncryptedDisk`] wraps the node's disk and does it transparently: a file it encrypts is
//!   [`MAGIC`] followed by frames `u32 LE ciphertext length | 24-byte nonce | ciphertext`
//!   (XChaCha20-Poly1305, the file's name as associated data), one frame per append or atomic
//!   write, so raft's append-and-sync log keeps its crash semantics: a torn frame at the tail is a
//!   torn record and is dropped, and the log store cuts it off as before.
//! - **`dek.json`** holds the DEK: in plain when autolock is off (as swarmkit keeps it in the TLS
//!   key's PEM headers), sealed with the KEK when it is on. Turning autolock on or off, or rotating
//!   the unlock key, therefore only re-wraps the DEK; the log is never rewritten.
//! - **The unlock key** (`SWMKEY-1-<base64 of 32 bytes>`, swarmkit's `HumanReadableKey`) lives in
//!   the cluster object, sealed with the secrets key like a secret's value ([`crate::secrets`]), so
//!   every manager sees a rotation and re-wraps its DEK. It is never in a trace, an inspect or a
//!   report: `Debug` of [`UnlockKey`] and [`Dek`] redacts them.
//! - **Locked.** A manager that restarts with a sealed DEK cannot read its raft files: it waits
//!   ([`LockGate`]) for `swarm unlock` with the key, answering every other control request with
//!   Swarm's locked error, out of raft and with no agent. A right key opens the DEK and the node
//!   starts as usual, without a restart. Workers keep their DEK in plain (Swarm locks only managers).
//!
//! Files that are not encrypted read through as they are (a data dir made before this existed);
//! they are encrypted at their next write.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::control::ControlError;
use crate::env::{runtime, Disk, DiskError};

/// The DEK's file in the node's data dir (never encrypted by the DEK itself).
pub const DEK_FILE: &str = "dek.json";
/// The first bytes of every file [`EncryptedDisk`] encrypted.
pub const MAGIC: &[u8] = b"SHOALENC1\n";
/// What unlock keys start with (swarmkit `encryption.HumanReadableKey`).
pub const UNLOCK_KEY_PREFIX: &str = "SWMKEY-1-";

const NONCE_LEN: usize = 24;
const FRAME_HEADER: usize = 4 + NONCE_LEN;
const DEK_AAD: &[u8] = b"shoal dek";
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
const B64_RAW: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD_NO_PAD;

/// Files the DEK encrypts: raft's, the secrets key, and private keys (`*key.pem`, the daemon's).
pub fn is_encrypted_name(name: &str) -> bool {
    name.starts_with("raft/") || name == crate::secrets::KEY_FILE || name.ends_with("key.pem")
}

/// Why data could not be locked or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AutolockError {
    #[error("swarm could not be unlocked: invalid key provided")]
    InvalidKey,
    #[error("{name} does not decrypt with this node's data encryption key")]
    Damaged { name: String },
    #[error("{DEK_FILE} is damaged: {reason}")]
    BadDekFile { reason: String },
    #[error("{0}")]
    Disk(#[from] DiskError),
}

/// The data encryption key.
#[derive(Clone, PartialEq, Eq)]
pub struct Dek([u8; 32]);

impl std::fmt::Debug for Dek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Dek(<redacted>)")
    }
}

impl Dek {
    pub fn generate() -> Dek {
        let mut key = [0u8; 32];
        runtime::random_bytes(&mut key);
        Dek(key)
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new((&self.0).into())
    }
}

/// The unlock key (KEK).
#[derive(Clone, PartialEq, Eq)]
pub struct UnlockKey([u8; 32]);

impl std::fmt::Debug for UnlockKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UnlockKey(<redacted>)")
    }
}

impl UnlockKey {
    pub fn generate() -> UnlockKey {
        let mut key = [0u8; 32];
        runtime::random_bytes(&mut key);
        UnlockKey(key)
    }

    /// Parses `SWMKEY-1-…` (surrounding white space ignored).
    pub fn parse(text: &str) -> Result<UnlockKey, AutolockError> {
        let body = text.trim().strip_prefix(UNLOCK_KEY_PREFIX).ok_or(AutolockError::InvalidKey)?;
        let bytes = B64_RAW.decode(body.trim_end_matches('=')).map_err(|_| AutolockError::InvalidKey)?;
        UnlockKey::from_bytes(&bytes)
    }

    /// The human-readable form, as `swarm unlock-key` prints it.
    pub fn reveal(&self) -> String {
        format!("{UNLOCK_KEY_PREFIX}{}", B64_RAW.encode(self.0))
    }

    /// The raw bytes, to seal into the cluster object.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<UnlockKey, AutolockError> {
        let key: [u8; 32] = bytes.try_into().map_err(|_| AutolockError::InvalidKey)?;
        Ok(UnlockKey(key))
    }
}

/// `dek.json`: the DEK in plain, or sealed with the unlock key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum DekFile {
    Plain { dek: String },
    Sealed { nonce: String, ciphertext: String },
}

/// What a node's disk says about its DEK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DekState {
    /// No DEK yet (a new node, or a data dir from before autolock).
    Missing,
    Plain(Dek),
    /// Autolock: the unlock key is needed.
    Locked,
}

pub async fn read_dek(disk: &dyn Disk) -> Result<DekState, AutolockError> {
    let Some(bytes) = disk.read(DEK_FILE).await? else {
        return Ok(DekState::Missing);
    };
    match serde_json::from_slice::<DekFile>(&bytes) {
        Ok(DekFile::Plain { dek }) => Ok(DekState::Plain(decode_dek(&dek)?)),
        Ok(DekFile::Sealed { .. }) => Ok(DekState::Locked),
        Err(e) => Err(AutolockError::BadDekFile { reason: e.to_string() }),
    }
}

fn decode_dek(text: &str) -> Result<Dek, AutolockError> {
    let bytes = B64.decode(text).map_err(|e| AutolockError::BadDekFile { reason: e.to_string() })?;
    let key: [u8; 32] = bytes.try_into().map_err(|_| AutolockError::BadDekFile { reason: "not 32 bytes".into() })?;
    Ok(Dek(key))
}

/// The DEK of a plain `dek.json`'s bytes (tools and tests that read a data dir by hand).
pub fn plain_dek(dek_json: &[u8]) -> Option<Dek> {
    match serde_json::from_slice::<DekFile>(dek_json).ok()? {
        DekFile::Plain { dek } => decode_dek(&dek).ok(),
        DekFile::Sealed { .. } => None,
    }
}

/// Opens a sealed `dek.json` with `key`; [`AutolockError::InvalidKey`] when it is not the key.
pub async fn unlock_dek(disk: &dyn Disk, key: &UnlockKey) -> Result<Dek, AutolockError> {
    let bytes = disk.read(DEK_FILE).await?.ok_or(AutolockError::BadDekFile { reason: "missing".into() })?;
    match serde_json::from_slice::<DekFile>(&bytes).map_err(|e| AutolockError::BadDekFile { reason: e.to_string() })? {
        DekFile::Plain { dek } => decode_dek(&dek),
        DekFile::Sealed { nonce, ciphertext } => {
            let nonce = B64.decode(nonce).map_err(|_| AutolockError::InvalidKey)?;
            let ciphertext = B64.decode(ciphertext).map_err(|_| AutolockError::InvalidKey)?;
            if nonce.len() != NONCE_LEN {
                return Err(AutolockError::InvalidKey);
            }
            let cipher = XChaCha20Poly1305::new((&key.0).into());
            let plain = cipher
                .decrypt(XNonce::from_slice(&nonce), Payload { msg: &ciphertext, aad: DEK_AAD })
                .map_err(|_| AutolockError::InvalidKey)?;
            let dek: [u8; 32] = plain.try_into().map_err(|_| AutolockError::InvalidKey)?;
            Ok(Dek(dek))
        }
    }
}

/// Keeps `dek` in `dek.json`: sealed with `key`, or in plain when `key` is `None` (autolock off).
pub async fn write_dek(disk: &dyn Disk, dek: &Dek, key: Option<&UnlockKey>) -> Result<(), AutolockError> {
    let file = match key {
        None => DekFile::Plain { dek: B64.encode(dek.0) },
        Some(key) => {
            let mut nonce = [0u8; NONCE_LEN];
            runtime::random_bytes(&mut nonce);
            let cipher = XChaCha20Poly1305::new((&key.0).into());
            let ciphertext = cipher
                .encrypt(XNonce::from_slice(&nonce), Payload { msg: &dek.0, aad: DEK_AAD })
                .map_err(|_| AutolockError::InvalidKey)?;
            DekFile::Sealed { nonce: B64.encode(nonce), ciphertext: B64.encode(ciphertext) }
        }
    };
    let bytes = serde_json::to_vec(&file).map_err(|e| AutolockError::BadDekFile { reason: e.to_string() })?;
    disk.write_atomic(DEK_FILE, &bytes).await?;
    Ok(())
}

/// One encrypted frame of `plain`, bound to file `name`.
pub fn seal_frame(dek: &Dek, name: &str, plain: &[u8]) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_LEN];
    runtime::random_bytes(&mut nonce);
    // Encryption with a valid key and nonce length cannot fail.
    let ciphertext = dek
        .cipher()
        .encrypt(XNonce::from_slice(&nonce), Payload { msg: plain, aad: name.as_bytes() })
        .expect("XChaCha20-Poly1305 encrypts any message");
    let mut out = Vec::with_capacity(FRAME_HEADER + ciphertext.len());
    out.extend_from_slice(&(ciphertext.len() as u32).to_le_bytes());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ciphertext);
    out
}

/// A whole encrypted file of `plain` (magic and one frame): what [`EncryptedDisk`] writes, and what
/// the daemon writes for its TLS keys.
pub fn seal_file(dek: &Dek, name: &str, plain: &[u8]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&seal_frame(dek, name, plain));
    out
}

/// Whether `bytes` are an encrypted file (or a torn start of one).
pub fn is_sealed_file(bytes: &[u8]) -> bool {
    bytes.starts_with(MAGIC) || (!bytes.is_empty() && MAGIC.starts_with(bytes))
}

/// The plain content of a file [`seal_file`]/[`EncryptedDisk`] wrote; a file without the magic is
/// returned as it is (written before autolock existed). A torn last frame is dropped, as a torn
/// record is; a whole first frame that does not decrypt is an error (the wrong key), never read as
/// an empty file.
pub fn open_file(dek: &Dek, name: &str, bytes: &[u8]) -> Result<Vec<u8>, AutolockError> {
    if !is_sealed_file(bytes) {
        return Ok(bytes.to_vec());
    }
    Ok(parse_frames(dek, name, bytes)?.0)
}

/// The plain content of an encrypted file and the length of its good frames (what follows is a
/// torn or garbled tail).
fn parse_frames(dek: &Dek, name: &str, bytes: &[u8]) -> Result<(Vec<u8>, usize), AutolockError> {
    let mut plain = Vec::new();
    let mut offset = MAGIC.len().min(bytes.len());
    let mut first = true;
    while offset < bytes.len() {
        let Some(header) = bytes.get(offset..offset + FRAME_HEADER) else { break };
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let Some(ciphertext) = bytes.get(offset + FRAME_HEADER..offset + FRAME_HEADER + len) else { break };
        match dek.cipher().decrypt(XNonce::from_slice(&header[4..]), Payload { msg: ciphertext, aad: name.as_bytes() })
        {
            Ok(part) => plain.extend_from_slice(&part),
            Err(_) if first => return Err(AutolockError::Damaged { name: name.to_string() }),
            Err(_) => break,
        }
        first = false;
        offset += FRAME_HEADER + len;
    }
    Ok((plain, offset))
}

/// The node's disk with [`is_encrypted_name`] files encrypted under the DEK; other files pass
/// through. Offsets callers see are those of the plain content.
pub struct EncryptedDisk {
    inner: Arc<dyn Disk>,
    dek: Dek,
    /// Files known to be in the encrypted format already (so an append need not read the file).
    sealed: Mutex<BTreeMap<String, bool>>,
}

impl EncryptedDisk {
    pub fn new(inner: Arc<dyn Disk>, dek: Dek) -> EncryptedDisk {
        EncryptedDisk { inner, dek, sealed: Mutex::new(BTreeMap::new()) }
    }

    fn known(&self, name: &str) -> Option<bool> {
        self.sealed.lock().unwrap_or_else(|p| p.into_inner()).get(name).copied()
    }

    fn set_known(&self, name: &str, sealed: Option<bool>) {
        let mut map = self.sealed.lock().unwrap_or_else(|p| p.into_inner());
        match sealed {
            Some(s) => map.insert(name.to_string(), s),
            None => map.remove(name),
        };
    }

    fn damaged(name: &str, err: AutolockError) -> DiskError {
        DiskError::Io { op: "decrypt", name: name.to_string(), reason: err.to_string() }
    }
}

#[async_trait]
impl Disk for EncryptedDisk {
    /// The data dir's claim is the disk's own: encryption changes what is in the files, not who owns them.
    fn claim(&self, holder: &str) -> Result<crate::env::disk::DiskClaim, DiskError> {
        self.inner.claim(holder)
    }

    async fn read(&self, name: &str) -> Result<Option<Vec<u8>>, DiskError> {
        let bytes = self.inner.read(name).await?;
        if !is_encrypted_name(name) {
            return Ok(bytes);
        }
        match bytes {
            None => Ok(None),
            Some(bytes) => open_file(&self.dek, name, &bytes).map(Some).map_err(|e| Self::damaged(name, e)),
        }
    }

    async fn write_atomic(&self, name: &str, data: &[u8]) -> Result<(), DiskError> {
        if !is_encrypted_name(name) {
            return self.inner.write_atomic(name, data).await;
        }
        self.set_known(name, None);
        self.inner.write_atomic(name, &seal_file(&self.dek, name, data)).await?;
        self.set_known(name, Some(true));
        Ok(())
    }

    async fn append(&self, name: &str, data: &[u8]) -> Result<(), DiskError> {
        if !is_encrypted_name(name) {
            return self.inner.append(name, data).await;
        }
        if self.known(name) != Some(true) {
            // First append here since this process opened the file: start it, or turn a plain
            // (pre-autolock) file into the encrypted format before adding to it.
            match self.inner.read(name).await? {
                Some(bytes) if bytes.starts_with(MAGIC) => {
                    // A torn last frame (a crash mid-append) is cut off first: a frame appended
                    // after it would be read as part of it, and lost with it.
                    let (_, good) = parse_frames(&self.dek, name, &bytes).map_err(|e| Self::damaged(name, e))?;
                    if good < bytes.len() {
                        self.inner.write_atomic(name, &bytes[..good]).await?;
                    }
                }
                Some(bytes) if !bytes.is_empty() && !is_sealed_file(&bytes) => {
                    self.inner.write_atomic(name, &seal_file(&self.dek, name, &bytes)).await?;
                }
                _ => {
                    // Empty, missing, or a torn magic: the magic goes with the first frame, so a
                    // crash keeps both or neither (a torn prefix of the magic reads as empty).
                    let mut bytes = MAGIC.to_vec();
                    bytes.extend_from_slice(&seal_frame(&self.dek, name, data));
                    self.inner.write_atomic(name, &[]).await?;
                    self.inner.append(name, &bytes).await?;
                    self.set_known(name, Some(true));
                    return Ok(());
                }
            }
            self.set_known(name, Some(true));
        }
        let appended = self.inner.append(name, &seal_frame(&self.dek, name, data)).await;
        if appended.is_err() {
            // A short write may have left part of a frame: the next append checks the file again.
            self.set_known(name, None);
        }
        appended
    }

    async fn sync(&self, name: &str) -> Result<(), DiskError> {
        self.inner.sync(name).await
    }

    async fn remove(&self, name: &str) -> Result<(), DiskError> {
        self.set_known(name, None);
        self.inner.remove(name).await
    }

    async fn list(&self) -> Result<Vec<String>, DiskError> {
        self.inner.list().await
    }
}

/// A locked manager's wait for `swarm unlock`: the control channel (and the daemon's local API)
/// hand keys to [`LockGate::try_unlock`]; [`LockGate::wait`] returns the DEK once one opened it.
#[derive(Clone)]
pub struct LockGate {
    disk: Arc<dyn Disk>,
    opened: watch::Sender<Option<Dek>>,
}

impl std::fmt::Debug for LockGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LockGate {{ locked: {} }}", self.is_locked())
    }
}

impl LockGate {
    pub fn new(disk: Arc<dyn Disk>) -> LockGate {
        LockGate { disk, opened: watch::channel(None).0 }
    }

    pub fn is_locked(&self) -> bool {
        self.opened.borrow().is_none()
    }

    /// `swarm unlock KEY`: Swarm's errors for a wrong key, or when already open.
    pub async fn try_unlock(&self, key: &str) -> Result<(), ControlError> {
        if !self.is_locked() {
            return Err(ControlError::FailedPrecondition(NOT_LOCKED.into()));
        }
        let key = UnlockKey::parse(key).map_err(|e| ControlError::InvalidArgument(e.to_string()))?;
        match unlock_dek(self.disk.as_ref(), &key).await {
            Ok(dek) => {
                self.opened.send_replace(Some(dek));
                Ok(())
            }
            Err(AutolockError::InvalidKey) => Err(ControlError::InvalidArgument(AutolockError::InvalidKey.to_string())),
            Err(err) => Err(ControlError::Internal(err.to_string())),
        }
    }

    /// The DEK, once a key opened it.
    pub async fn wait(&self) -> Dek {
        let mut rx = self.opened.subscribe();
        loop {
            if let Some(dek) = rx.borrow_and_update().clone() {
                return dek;
            }
            if rx.changed().await.is_err() {
                // The sender lives in `self`, so this cannot end; wait for ever rather than guess.
                std::future::pending::<()>().await;
            }
        }
    }
}

/// moby `daemon/cluster/errors.go`.
pub const LOCKED: &str =
    "Swarm is encrypted and needs to be unlocked before it can be used. Please use \"docker swarm unlock\" to unlock it.";
pub const NOT_LOCKED: &str = "swarm is not locked";

/// Serves the control channel of a locked manager: `Unlock` with the key, Swarm's locked error to
/// everything else.
pub struct LockedService {
    pub gate: LockGate,
}

#[async_trait]
impl crate::rpc::Service for LockedService {
    type Request = crate::control::ControlRequest;
    type Response = crate::control::ControlResult;
    async fn call(&self, _peer: crate::env::transport::Peer, request: Self::Request) -> Self::Response {
        match request {
            crate::control::ControlRequest::Unlock { key } => {
                self.gate.try_unlock(&key.0).await.map(|()| crate::control::ControlResponse::Done)
            }
            _ => Err(ControlError::Locked),
        }
    }
}

/// The node's DEK, making one (in plain) if the disk has none, or waiting for `swarm unlock` when
/// it is sealed. `gate` is given the locked node's wait, to serve.
pub async fn open_or_wait(disk: Arc<dyn Disk>, serve: impl FnOnce(LockGate)) -> Result<Dek, AutolockError> {
    match read_dek(disk.as_ref()).await? {
        DekState::Plain(dek) => Ok(dek),
        DekState::Missing => {
            let dek = Dek::generate();
            write_dek(disk.as_ref(), &dek, None).await?;
            Ok(dek)
        }
        DekState::Locked => {
            let gate = LockGate::new(disk);
            serve(gate.clone());
            Ok(gate.wait().await)
        }
    }
}

// Plain tests: the rng seam is madsim's under `cargo sim`, which needs a simulation to run in.
#[cfg(all(test, not(madsim)))]
mod tests {
    use super::*;
    use crate::env::MemDisk;

    #[tokio::test]
    async fn encrypted_files_read_back_and_hold_no_plain_text() {
        let mem = MemDisk::new();
        let disk = EncryptedDisk::new(Arc::new(mem.clone()), Dek::generate());
        disk.append("raft/log", b"service-web-one;").await.unwrap();
        disk.append("raft/log", b"service-web-two;").await.unwrap();
        disk.sync("raft/log").await.unwrap();
        disk.write_atomic("raft/vote", b"vote-7").await.unwrap();
        disk.write_atomic("node.json", b"plain-id").await.unwrap();
        assert_eq!(disk.read("raft/log").await.unwrap().unwrap(), b"service-web-one;service-web-two;");
        assert_eq!(disk.read("raft/vote").await.unwrap().unwrap(), b"vote-7");
        let raw = mem.raw("raft/log").unwrap();
        assert!(raw.starts_with(MAGIC) && !raw.windows(11).any(|w| w == b"service-web"));
        assert_eq!(mem.raw("node.json").unwrap(), b"plain-id", "identity stays plain");

        // A torn last frame is dropped; a wrong key is an error, not an empty log.
        let mut torn = raw.clone();
        torn.truncate(raw.len() - 3);
        mem.set_raw("raft/log", torn);
        assert_eq!(disk.read("raft/log").await.unwrap().unwrap(), b"service-web-one;");
        let other = EncryptedDisk::new(Arc::new(mem.clone()), Dek::generate());
        assert!(other.read("raft/log").await.is_err());

        // A torn frame is cut before the next append, so what follows it is not lost with it.
        let fresh = EncryptedDisk::new(Arc::new(mem.clone()), disk.dek.clone());
        fresh.append("raft/log", b"service-web-three;").await.unwrap();
        assert_eq!(fresh.read("raft/log").await.unwrap().unwrap(), b"service-web-one;service-web-three;");

        // A plain file from before is read as it is and encrypted at its next append.
        mem.set_raw("raft/old", b"legacy;".to_vec());
        assert_eq!(disk.read("raft/old").await.unwrap().unwrap(), b"legacy;");
        disk.append("raft/old", b"more;").await.unwrap();
        assert_eq!(disk.read("raft/old").await.unwrap().unwrap(), b"legacy;more;");
        assert!(mem.raw("raft/old").unwrap().starts_with(MAGIC));
    }

    #[tokio::test]
    async fn the_dek_opens_only_with_its_unlock_key() {
        let mem: Arc<dyn Disk> = Arc::new(MemDisk::new());
        let dek = Dek::generate();
        let key = UnlockKey::generate();
        let text = key.reveal();
        assert!(text.starts_with("SWMKEY-1-") && UnlockKey::parse(&text).unwrap() == key);
        assert!(!format!("{key:?}{dek:?}").contains(&text[9..]));
        write_dek(mem.as_ref(), &dek, Some(&key)).await.unwrap();
        assert_eq!(read_dek(mem.as_ref()).await.unwrap(), DekState::Locked);
        assert_eq!(unlock_dek(mem.as_ref(), &UnlockKey::generate()).await, Err(AutolockError::InvalidKey));
        assert_eq!(unlock_dek(mem.as_ref(), &key).await.unwrap(), dek);
        let gate = LockGate::new(mem.clone());
        let wrong = gate.try_unlock(&UnlockKey::generate().reveal()).await.unwrap_err();
        assert_eq!(wrong.to_string(), "swarm could not be unlocked: invalid key provided");
        assert!(gate.is_locked());
        gate.try_unlock(&text).await.unwrap();
        assert_eq!(gate.wait().await, dek);
        assert_eq!(gate.try_unlock(&text).await.unwrap_err().to_string(), "swarm is not locked");
        write_dek(mem.as_ref(), &dek, None).await.unwrap();
        assert_eq!(read_dek(mem.as_ref()).await.unwrap(), DekState::Plain(dek));
    }
}
