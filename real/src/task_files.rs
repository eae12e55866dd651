//! Secrets and configs on a Docker node: each task's files are written to a directory of its own
//! on a tmpfs (`/dev/shm/shoal-files/<task id>/`, mode 0700, so never on the persistent disk and
//! readable by root only on the host), with the owner and permission bits the service asked for,
//! and bind-mounted read-only at their paths in the container (`/run/secrets/<target>`, a config's
//! target). The directory goes when the container exits or is removed, and is rewritten if the
//! container is created again. Docker's own swarm mode does the same with a tmpfs per container.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use shoal_core::env::ContainerFile;

/// Where the task directories go: `/dev/shm` (a tmpfs on Linux), else the temp dir.
pub fn default_root() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.join("shoal-files")
    } else {
        std::env::temp_dir().join("shoal-files")
    }
}

/// A task directory name from the task id (anything but `[A-Za-z0-9._-]` becomes `_`).
fn dir_name(task: &str) -> String {
    task.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' }).collect()
}

/// Write `files` for `task` under `root`; the `host:container:ro` binds that mount them.
pub fn materialize(root: &Path, task: &str, files: &[ContainerFile]) -> Result<Vec<String>, String> {
    if files.is_empty() {
        return Ok(Vec::new());
    }
    let dir = root.join(dir_name(task));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| format!("cannot make {}: {e}", dir.display()))?;
    let mut binds = Vec::with_capacity(files.len());
    for (i, file) in files.iter().enumerate() {
        if !file.path.starts_with('/') || file.path.contains(':') || file.path.split('/').any(|p| p == "..") {
            return Err(format!("invalid file target {:?}: an absolute path without '..' or ':'", file.path));
        }
        let host = dir.join(i.to_string());
        std::fs::write(&host, &file.data).map_err(|e| format!("cannot write {}: {e}", host.display()))?;
        std::os::unix::fs::chown(&host, Some(file.uid), Some(file.gid))
            .map_err(|e| format!("cannot give {} to {}:{}: {e}", file.path, file.uid, file.gid))?;
        std::fs::set_permissions(&host, std::fs::Permissions::from_mode(file.mode & 0o7777))
            .map_err(|e| format!("cannot set the mode of {}: {e}", file.path))?;
        binds.push(format!("{}:{}:ro", host.display(), file.path));
    }
    Ok(binds)
}

/// Task directories under `root` older than `min_age` (candidates for [`forget`] once no container
/// of theirs is left: a daemon that was killed could not remove them).
pub fn stale_tasks(root: &Path, min_age: std::time::Duration) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(root) else { return Vec::new() };
    entries
        .flatten()
        .filter(|e| {
            e.metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age >= min_age)
        })
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect()
}

/// Remove `task`'s files (nothing if it had none).
pub fn forget(root: &Path, task: &str) {
    let _ = std::fs::remove_dir_all(root.join(dir_name(task)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_get_their_mode_and_go_when_forgotten() {
        let root = std::env::temp_dir().join(format!("shoal-task-files-{}", std::process::id()));
        use std::os::unix::fs::MetadataExt;
        // Owned by whoever runs the test (chown to oneself works without root).
        std::fs::create_dir_all(&root).unwrap();
        let mine = std::fs::metadata(&root).unwrap();
        let (uid, gid) = (mine.uid(), mine.gid());
        let file = ContainerFile {
            path: "/run/secrets/pw".into(),
            uid,
            gid,
            mode: 0o400,
            data: b"hunter2".to_vec(),
            secret: true,
        };
        let binds = materialize(&root, "task/1", std::slice::from_ref(&file)).unwrap();
        let host = root.join("task_1").join("0");
        assert_eq!(binds, [format!("{}:/run/secrets/pw:ro", host.display())]);
        assert_eq!(std::fs::read(&host).unwrap(), b"hunter2");
        assert_eq!(std::fs::metadata(&host).unwrap().permissions().mode() & 0o777, 0o400);
        assert_eq!(std::fs::metadata(root.join("task_1")).unwrap().permissions().mode() & 0o777, 0o700);
        let bad = ContainerFile { path: "/run/../etc/x".into(), ..file };
        assert!(materialize(&root, "t2", &[bad]).is_err());
        forget(&root, "task/1");
        assert!(!root.join("task_1").exists());
        let _ = std::fs::remove_dir_all(&root);
    }
}
