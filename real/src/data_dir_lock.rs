//! One daemon per data dir: an advisory lock (`flock`, through `std::fs::File::try_lock`) on
//! `<data-dir>/daemon.lock`, taken before the daemon does anything else and held until its process exits
//! (the kernel drops it when the process dies, SIGKILL included, so a crash never leaves a stale lock).
//!
//! The file carries the holder's pid, so a second `shoal daemon` on the same data dir can say who holds
//! it. The second daemon reads that file and nothing else: it neither binds, nor opens the raft log,
//! nor cleans up the processes the first daemon runs.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};

/// The lock file's name under the data dir.
pub const LOCK_FILE: &str = "daemon.lock";

/// Why the data dir could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds the lock; `pid` is what it wrote into the lock file (None if unreadable).
    #[error(
        "the data dir {} is in use by another shoal daemon, pid {} (it holds the lock on {}); stop that \
         daemon or choose another --data-dir",
        .dir.display(),
        .pid.map(|pid| pid.to_string()).unwrap_or_else(|| "unknown".into()),
        .file.display()
    )]
    InUse { dir: PathBuf, file: PathBuf, pid: Option<u32> },
    #[error("cannot lock the data dir: {what} {}: {source}", .path.display())]
    Io { what: &'static str, path: PathBuf, source: std::io::Error },
}

/// The held lock: keep it alive as long as the daemon runs.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
    path: PathBuf,
}

impl DataDirLock {
    /// Lock `data_dir` (created, mode 0700, if missing) for this process, and record our pid in the
    /// lock file. Fails at once, touching nothing else, if another process holds it.
    pub fn acquire(data_dir: &Path) -> Result<DataDirLock, LockError> {
        fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> LockError {
            let path = path.to_path_buf();
            move |source| LockError::Io { what, path, source }
        }
        if !data_dir.exists() {
            use std::os::unix::fs::DirBuilderExt as _;
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(data_dir).map_err(io("create", data_dir))?;
        }
        let path = data_dir.join(LOCK_FILE);
        // No truncation on open: until we hold the lock, the pid in it is the holder's.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io("open", &path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let pid = file.read_to_string(&mut text).ok().and_then(|_| text.trim().parse().ok());
                return Err(LockError::InUse { dir: data_dir.to_path_buf(), file: path, pid });
            }
            Err(TryLockError::Error(err)) => return Err(io("lock", &path)(err)),
        }
        file.set_len(0).map_err(io("truncate", &path))?;
        file.seek(SeekFrom::Start(0)).map_err(io("seek", &path))?;
        writeln!(file, "{}", std::process::id()).map_err(io("write", &path))?;
        file.sync_all().map_err(io("sync", &path))?;
        Ok(DataDirLock { _file: file, path })
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_dir_is_refused_with_the_holders_pid() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let held = DataDirLock::acquire(&data).unwrap();
        assert_eq!(std::fs::read_to_string(held.path()).unwrap(), format!("{}\n", std::process::id()));
        // flock locks belong to the open file description: a second open in this process conflicts
        // exactly as another process's would.
        let err = DataDirLock::acquire(&data).unwrap_err();
        match &err {
            LockError::InUse { pid, .. } => assert_eq!(*pid, Some(std::process::id())),
            other => panic!("expected InUse, got {other:?}"),
        }
        let text = err.to_string();
        assert!(text.contains(&format!("another shoal daemon, pid {} (", std::process::id())), "{text}");
        assert!(text.contains(&data.display().to_string()), "{text}");
        // The refused attempt left the holder's pid in place.
        assert_eq!(std::fs::read_to_string(held.path()).unwrap(), format!("{}\n", std::process::id()));
        drop(held);
        // Other tests of this process spawn programs: a child forked at this moment shares the open
        // file description (and so the lock) until it execs and its close-on-exec copy goes.
        let mut again = DataDirLock::acquire(&data);
        for _ in 0..100 {
            if again.is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
            again = DataDirLock::acquire(&data);
        }
        again.expect("free again once the holder is gone");
    }
}
