//! The disk seam: a node's data directory as a flat set of named files.
//!
//! Two kinds of write, because crash-safety depends on the difference:
//! - [`Disk::write_atomic`] replaces a whole file and is durable when it returns (temp file, fsync,
//!   rename, fsync of the directory). Used for the vote, snapshots, node identity.
//! - [`Disk::append`] adds to the end of a file and is *not* durable until [`Disk::sync`] returns.
//!   Used for the raft log. A crash loses every appended byte that was not synced; the simulated disk
//!   models exactly that.

use async_trait::async_trait;

/// A disk operation failed. Storage failures are fatal for raft; the message says which file and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiskError {
    #[error("invalid file name {name:?}: names are relative, without `..`")]
    InvalidName { name: String },
    #[error("{op} {name}: {reason}")]
    Io { op: &'static str, name: String, reason: String },
    /// Another daemon holds the data dir ([`Disk::claim`]).
    #[error("the data dir is in use by another shoal daemon ({holder}); stop that daemon or choose another data dir")]
    InUse { holder: String },
}

/// A daemon's claim on its data dir ([`Disk::claim`]): held while this value lives, released when it
/// is dropped — and when the process holding it dies, as the kernel drops an advisory lock.
pub struct DiskClaim(#[allow(dead_code)] Box<dyn Send + Sync>);

impl DiskClaim {
    /// A claim that lasts as long as `guard`.
    pub fn new(guard: impl Send + Sync + 'static) -> Self {
        DiskClaim(Box::new(guard))
    }
}

impl std::fmt::Debug for DiskClaim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DiskClaim")
    }
}

/// A node's durable storage.
#[async_trait]
pub trait Disk: Send + Sync + 'static {
    /// The whole content of `name` as the node would read it now, or `None` if it does not exist.
    async fn read(&self, name: &str) -> Result<Option<Vec<u8>>, DiskError>;
    /// Replace `name` with `data`, durably and atomically (all of the old or all of the new survives).
    async fn write_atomic(&self, name: &str, data: &[u8]) -> Result<(), DiskError>;
    /// Append `data` to `name` (creating it). Not durable until [`Disk::sync`].
    async fn append(&self, name: &str, data: &[u8]) -> Result<(), DiskError>;
    /// Make every append to `name` so far durable.
    async fn sync(&self, name: &str) -> Result<(), DiskError>;
    /// Remove `name` durably; removing a missing file is not an error.
    async fn remove(&self, name: &str) -> Result<(), DiskError>;
    /// The names of all files, sorted.
    async fn list(&self) -> Result<Vec<String>, DiskError>;
    /// Claim the data dir for one daemon, before it touches anything else: a second claim while the
    /// first is held fails at once with [`DiskError::InUse`] naming the holder, and changes nothing.
    /// `holder` says who claims (the simulator records it; the daemon's disk records its pid).
    fn claim(&self, holder: &str) -> Result<DiskClaim, DiskError>;
}

/// Checks that a file name stays inside the data directory.
pub fn check_name(name: &str) -> Result<(), DiskError> {
    let bad = name.is_empty()
        || name.starts_with('/')
        || name.split('/').any(|part| part.is_empty() || part == "." || part == "..");
    if bad {
        return Err(DiskError::InvalidName { name: name.to_string() });
    }
    Ok(())
}
