//! An in-memory disk that survives a node crash but keeps only what was synced: the simulator's
//! disk (`shoal_sim::disk::MemDisk`) and the stand-in for raft's unit tests and benchmarks.
//!
//! Each file remembers how many of its bytes are durable. [`MemDisk::crash`] cuts every file back to
//! its durable length — optionally keeping a random part of the unsynced tail, as a torn write would —
//! which is what a power cut does to a real log file. [`MemDisk::fail_writes`] makes every write fail
//! until it is healed, as a full or failing disk does (an append may leave a torn prefix of its bytes,
//! as a short write on a full file system does); reads keep working. Memory only: no I/O.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::disk::{check_name, DiskClaim};
use super::{runtime, Disk, DiskError};
use async_trait::async_trait;

#[derive(Debug, Clone, Default)]
struct MemFile {
    data: Vec<u8>,
    durable_len: usize,
    /// A file created by `append` and never synced does not survive a crash at all.
    durable: bool,
}

/// One node's disk. Clone it into the node's init closure so it outlives crashes.
#[derive(Clone, Default)]
pub struct MemDisk {
    files: Arc<Mutex<BTreeMap<String, MemFile>>>,
    /// While set, every write fails with this reason.
    failing: Arc<Mutex<Option<String>>>,
    /// Who holds the disk's [`Disk::claim`], if anyone, and which claim it is.
    claimed_by: Arc<Mutex<Claimed>>,
}

#[derive(Debug, Default)]
struct Claimed {
    /// Claims made so far (each guard knows its own number).
    made: u64,
    holder: Option<(u64, String)>,
}

/// Releases a [`MemDisk`]'s claim when the holder drops it — only its own: a dead holder's guard may
/// be dropped after [`MemDisk::release_claim`] and a new daemon's claim.
struct MemClaim {
    claimed: Arc<Mutex<Claimed>>,
    number: u64,
}

impl Drop for MemClaim {
    fn drop(&mut self) {
        let mut claimed = self.claimed.lock().unwrap_or_else(|p| p.into_inner());
        if claimed.holder.as_ref().is_some_and(|(number, _)| *number == self.number) {
            claimed.holder = None;
        }
    }
}

impl std::fmt::Debug for MemDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemDisk").finish_non_exhaustive()
    }
}

impl MemDisk {
    pub fn new() -> Self {
        Self::default()
    }

    fn with<R>(&self, f: impl FnOnce(&mut BTreeMap<String, MemFile>) -> R) -> R {
        f(&mut self.files.lock().expect("mem disk lock"))
    }

    /// A crash: every unsynced byte is lost. With `torn`, a random prefix of each unsynced tail
    /// survives (a torn write), so readers must cope with a partial last record.
    /// Returns how many bytes were lost.
    pub fn crash(&self, torn: bool) -> usize {
        self.with(|files| {
            let mut lost: usize = files.values().filter(|f| !f.durable).map(|f| f.data.len()).sum();
            files.retain(|_, file| file.durable);
            for file in files.values_mut() {
                let tail = file.data.len() - file.durable_len;
                let keep = if torn && tail > 0 { (runtime::random_u64() % tail as u64) as usize } else { 0 };
                lost += tail - keep;
                file.data.truncate(file.durable_len + keep);
                file.durable_len = file.data.len();
            }
            lost
        })
    }

    /// Bytes written but not yet synced, over all files.
    pub fn unsynced_bytes(&self) -> usize {
        self.with(|files| files.values().map(|f| f.data.len() - f.durable_len).sum())
    }

    /// Overwrite a file's bytes as they are, durably (to plant torn or garbled data in tests).
    pub fn set_raw(&self, name: &str, data: Vec<u8>) {
        self.with(|files| {
            files.insert(name.to_string(), MemFile { durable_len: data.len(), data, durable: true });
        })
    }

    /// A file's bytes as they are now.
    pub fn raw(&self, name: &str) -> Option<Vec<u8>> {
        self.with(|files| files.get(name).map(|f| f.data.clone()))
    }

    /// From now on every write (append, sync, atomic replace, remove) fails with `reason`, until
    /// called again with `None`. Reads still work.
    pub fn fail_writes(&self, reason: Option<String>) {
        *self.failing.lock().expect("mem disk lock") = reason;
    }

    /// The reason writes fail, while they do.
    pub fn write_failure(&self) -> Option<String> {
        self.failing.lock().expect("mem disk lock").clone()
    }

    fn check_writable(&self, op: &'static str, name: &str) -> Result<(), DiskError> {
        match self.write_failure() {
            Some(reason) => Err(DiskError::Io { op, name: name.to_string(), reason }),
            None => Ok(()),
        }
    }

    /// The holder's process died: its claim goes at once, as the kernel drops a dead process's
    /// advisory lock (madsim may drop the dead host's tasks, and the guard in them, only later).
    pub fn release_claim(&self) {
        self.claimed_by.lock().unwrap_or_else(|p| p.into_inner()).holder = None;
    }

    /// Total bytes stored.
    pub fn total_bytes(&self) -> usize {
        self.with(|files| files.values().map(|f| f.data.len()).sum())
    }
}

#[async_trait]
impl Disk for MemDisk {
    fn claim(&self, holder: &str) -> Result<DiskClaim, DiskError> {
        let mut claimed = self.claimed_by.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, holder)) = claimed.holder.as_ref() {
            return Err(DiskError::InUse { holder: holder.clone() });
        }
        claimed.made += 1;
        let number = claimed.made;
        claimed.holder = Some((number, holder.to_string()));
        Ok(DiskClaim::new(MemClaim { claimed: self.claimed_by.clone(), number }))
    }

    async fn read(&self, name: &str) -> Result<Option<Vec<u8>>, DiskError> {
        check_name(name)?;
        Ok(self.with(|files| files.get(name).map(|f| f.data.clone())))
    }

    async fn write_atomic(&self, name: &str, data: &[u8]) -> Result<(), DiskError> {
        check_name(name)?;
        self.check_writable("write", name)?;
        self.with(|files| {
            files.insert(name.to_string(), MemFile { data: data.to_vec(), durable_len: data.len(), durable: true })
        });
        Ok(())
    }

    async fn append(&self, name: &str, data: &[u8]) -> Result<(), DiskError> {
        check_name(name)?;
        if let Err(err) = self.check_writable("append", name) {
            // A short write: part of the bytes may land (unsynced) before the disk refuses the rest.
            let keep = (runtime::random_u64() % (data.len() as u64 + 1)) as usize;
            self.with(|files| files.entry(name.to_string()).or_default().data.extend_from_slice(&data[..keep]));
            return Err(err);
        }
        self.with(|files| files.entry(name.to_string()).or_default().data.extend_from_slice(data));
        Ok(())
    }

    async fn sync(&self, name: &str) -> Result<(), DiskError> {
        check_name(name)?;
        self.check_writable("sync", name)?;
        self.with(|files| {
            if let Some(file) = files.get_mut(name) {
                file.durable_len = file.data.len();
                file.durable = true;
            }
        });
        Ok(())
    }

    async fn remove(&self, name: &str) -> Result<(), DiskError> {
        check_name(name)?;
        self.check_writable("remove", name)?;
        self.with(|files| files.remove(name));
        Ok(())
    }

    async fn list(&self) -> Result<Vec<String>, DiskError> {
        Ok(self.with(|files| files.keys().cloned().collect()))
    }
}
