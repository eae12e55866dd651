//! The real arm of the disk seam: [`FileDisk`], a node's files under its data directory.
//!
//! Names are checked with [`check_name`] and map to paths below the root; subdirectories are made
//! as needed. The durability contract of [`Disk`] is kept with the usual POSIX steps:
//! - `append` writes through to the page cache without fsync (the raft log batches its syncs);
//! - `sync` fsyncs the file, and also every directory whose entries changed since it was last synced
//!   on the way to it (a freshly created log file is not durable until its directory entry is);
//! - `write_atomic` writes a temp file in the same directory, fsyncs it, renames it over the name and
//!   fsyncs the directory, so a crash leaves either the old or the new content;
//! - `remove` unlinks and fsyncs the directory.
//!
//! No file handles are cached between calls: an open per append costs little next to the network,
//! and it means a rename or unlink can never leave an append writing to a file that is gone.
//!
//! All file work runs on tokio's blocking pool.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use shoal_core::env::disk::check_name;
use shoal_core::env::disk::DiskClaim;
use shoal_core::env::{Disk, DiskError};

/// Temp files of `write_atomic` end with this plus a counter; `list` hides them and `open` deletes
/// the ones a crash left behind.
const TEMP_MARKER: &str = ".shoal-tmp-";

/// Files under one data directory.
#[derive(Debug, Clone)]
pub struct FileDisk {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    temp_counter: AtomicU64,
    /// Directories with entries created by `append` since they were last fsynced.
    unsynced_dirs: Mutex<BTreeSet<PathBuf>>,
}

fn io_error(op: &'static str, name: &str, error: io::Error) -> DiskError {
    DiskError::Io { op, name: name.to_string(), reason: error.to_string() }
}

impl FileDisk {
    /// Open (creating) the data directory at `root`, and delete temp files a crash left there.
    pub async fn open(root: impl Into<PathBuf>) -> Result<Self, DiskError> {
        let root = root.into();
        let disk = FileDisk {
            inner: Arc::new(Inner {
                root: root.clone(),
                temp_counter: AtomicU64::new(0),
                unsynced_dirs: Mutex::new(BTreeSet::new()),
            }),
        };
        let display = root.display().to_string();
        blocking("open", &display, move || {
            fs::create_dir_all(&root)?;
            for (relative, path) in walk(&root)? {
                if is_temp(&relative) {
                    fs::remove_file(path)?;
                }
            }
            Ok(())
        })
        .await?;
        Ok(disk)
    }

    /// The data directory.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    fn path(&self, name: &str) -> Result<PathBuf, DiskError> {
        check_name(name)?;
        Ok(self.inner.root.join(name))
    }
}

/// Run blocking file work off the async threads, naming the operation in any error.
async fn blocking<T, F>(op: &'static str, name: &str, work: F) -> Result<T, DiskError>
where
    F: FnOnce() -> io::Result<T> + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result.map_err(|e| io_error(op, name, e)),
        Err(e) => Err(DiskError::Io { op, name: name.to_string(), reason: format!("blocking task failed: {e}") }),
    }
}

fn is_temp(relative: &str) -> bool {
    relative.rsplit('/').next().is_some_and(|file| file.contains(TEMP_MARKER))
}

/// Every regular file below `root`, as (name relative to root with `/`, path).
fn walk(root: &Path) -> io::Result<Vec<(String, PathBuf)>> {
    let mut files = Vec::new();
    let mut dirs = vec![(String::new(), root.to_path_buf())];
    while let Some((prefix, dir)) = dirs.pop() {
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let Some(file_name) = entry.file_name().to_str().map(str::to_string) else {
                continue; // Not a name this seam could have written.
            };
            let relative = if prefix.is_empty() { file_name } else { format!("{prefix}/{file_name}") };
            let kind = entry.file_type()?;
            if kind.is_dir() {
                dirs.push((relative, entry.path()));
            } else if kind.is_file() {
                files.push((relative, entry.path()));
            }
        }
    }
    Ok(files)
}

fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Create the directories between `root` and `path`'s parent; returns the directories whose entries
/// changed (the parent of each one created), which are not durable until fsynced.
fn make_parents(root: &Path, path: &Path) -> io::Result<Vec<PathBuf>> {
    let mut changed = Vec::new();
    let Some(parent) = path.parent() else {
        return Ok(changed);
    };
    let Ok(below_root) = parent.strip_prefix(root) else {
        return Ok(changed);
    };
    let mut dir = root.to_path_buf();
    for part in below_root.components() {
        let next = dir.join(part);
        match fs::create_dir(&next) {
            Ok(()) => changed.push(dir.clone()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        dir = next;
    }
    Ok(changed)
}

fn parent_of(path: &Path) -> PathBuf {
    path.parent().map(Path::to_path_buf).unwrap_or_default()
}

#[async_trait]
impl Disk for FileDisk {
    /// The advisory lock of [`crate::data_dir_lock`] on the root (the daemon takes the same lock on
    /// its data dir first thing, in `main`): the holder on record is this process's pid.
    fn claim(&self, _holder: &str) -> Result<DiskClaim, DiskError> {
        use crate::data_dir_lock::{DataDirLock, LockError};
        match DataDirLock::acquire(&self.inner.root) {
            Ok(lock) => Ok(DiskClaim::new(lock)),
            Err(LockError::InUse { pid, .. }) => Err(DiskError::InUse {
                holder: pid.map(|pid| format!("pid {pid}")).unwrap_or_else(|| "pid unknown".into()),
            }),
            Err(LockError::Io { what, path, source }) => {
                Err(DiskError::Io { op: what, name: path.display().to_string(), reason: source.to_string() })
            }
        }
    }

    async fn read(&self, name: &str) -> Result<Option<Vec<u8>>, DiskError> {
        let path = self.path(name)?;
        blocking("read", name, move || match fs::read(&path) {
            Ok(data) => Ok(Some(data)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        })
        .await
    }

    async fn write_atomic(&self, name: &str, data: &[u8]) -> Result<(), DiskError> {
        let path = self.path(name)?;
        let root = self.inner.root.clone();
        let counter = self.inner.temp_counter.fetch_add(1, Ordering::Relaxed);
        let data = data.to_vec();
        blocking("write_atomic", name, move || {
            for dir in make_parents(&root, &path)? {
                fsync_dir(&dir)?;
            }
            let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
            let temp = path.with_file_name(format!(".{file_name}{TEMP_MARKER}{counter}"));
            let written = (|| {
                let mut file = File::create(&temp)?;
                file.write_all(&data)?;
                file.sync_all()?;
                fs::rename(&temp, &path)
            })();
            if written.is_err() {
                let _ = fs::remove_file(&temp);
            }
            written?;
            fsync_dir(&parent_of(&path))
        })
        .await
    }

    async fn append(&self, name: &str, data: &[u8]) -> Result<(), DiskError> {
        let path = self.path(name)?;
        let inner = self.inner.clone();
        let data = data.to_vec();
        blocking("append", name, move || {
            let mut file = match OpenOptions::new().append(true).open(&path) {
                Ok(file) => file,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    let mut changed = make_parents(&inner.root, &path)?;
                    let file = OpenOptions::new().append(true).create(true).open(&path)?;
                    changed.push(parent_of(&path));
                    inner.unsynced_dirs.lock().unwrap_or_else(|p| p.into_inner()).extend(changed);
                    file
                }
                Err(e) => return Err(e),
            };
            file.write_all(&data)
        })
        .await
    }

    async fn sync(&self, name: &str) -> Result<(), DiskError> {
        let path = self.path(name)?;
        let inner = self.inner.clone();
        blocking("sync", name, move || {
            match File::open(&path) {
                Ok(file) => file.sync_data()?,
                // Nothing was appended, so nothing can be lost (the simulated disk agrees).
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e),
            }
            // Directories on the way to this file whose new entries are not yet durable.
            let dirs: Vec<PathBuf> = {
                let unsynced = inner.unsynced_dirs.lock().unwrap_or_else(|p| p.into_inner());
                path.ancestors().skip(1).filter(|dir| unsynced.contains(*dir)).map(Path::to_path_buf).collect()
            };
            for dir in dirs {
                fsync_dir(&dir)?;
                inner.unsynced_dirs.lock().unwrap_or_else(|p| p.into_inner()).remove(&dir);
            }
            Ok(())
        })
        .await
    }

    async fn remove(&self, name: &str) -> Result<(), DiskError> {
        let path = self.path(name)?;
        blocking("remove", name, move || {
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e),
            }
            fsync_dir(&parent_of(&path))
        })
        .await
    }

    async fn list(&self) -> Result<Vec<String>, DiskError> {
        let root = self.inner.root.clone();
        let mut names: Vec<String> = blocking("list", "", move || walk(&root))
            .await?
            .into_iter()
            .map(|(relative, _)| relative)
            .filter(|relative| !is_temp(relative))
            .collect();
        names.sort();
        Ok(names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn leftover_temp_files_are_hidden_and_cleaned() {
        let dir = tempfile::tempdir().unwrap();
        let disk = FileDisk::open(dir.path()).await.unwrap();
        disk.write_atomic("raft/vote", b"v").await.unwrap();
        fs::write(dir.path().join("raft/.vote.shoal-tmp-9"), b"half").unwrap();
        assert_eq!(disk.list().await.unwrap(), vec!["raft/vote"]);
        FileDisk::open(dir.path()).await.unwrap();
        assert!(!dir.path().join("raft/.vote.shoal-tmp-9").exists(), "open removes crash leftovers");
    }

    #[tokio::test]
    async fn data_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let disk = FileDisk::open(dir.path().join("data")).await.unwrap();
        disk.append("a/b/c/log", b"x").await.unwrap();
        disk.sync("a/b/c/log").await.unwrap();
        assert!(disk.inner.unsynced_dirs.lock().unwrap().is_empty(), "sync makes the new directories durable");
        let again = FileDisk::open(dir.path().join("data")).await.unwrap();
        assert_eq!(again.read("a/b/c/log").await.unwrap().as_deref(), Some(&b"x"[..]));
        again.sync("missing").await.expect("syncing a file never appended to is a no-op");
    }
}
