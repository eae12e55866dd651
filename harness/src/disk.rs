//! Disk faults for real: a disk that refuses writes is a full file system. A scenario with `disk …`
//! faults gets each node's raft log dir on a small tmpfs of its own, mounted before its daemon
//! starts; `disk NODE fail-writes` fills that tmpfs with a filler file until the kernel answers
//! ENOSPC, so the daemon's next raft write fails as it would on a full disk, and `disk NODE heal`
//! removes the filler. Only the raft log is on it (the node's other files are not), which is what
//! the simulator's scenarios exercise: a manager whose log cannot take writes. Mounting needs root;
//! the run unmounts what it mounted ([`crate::cleanup`]).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The size of each node's raft tmpfs: room for a scenario's log, small enough to fill at once.
pub const SIZE: &str = "32m";

/// The filler file in a node's raft dir.
pub fn filler(dir: &Path) -> PathBuf {
    dir.join("shoal-harness-filler")
}

fn run(program: &str, args: &[&str], dir: &Path) -> Result<String, String> {
    let output = Command::new(program)
        .args(args)
        .arg(dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
    if output.status.success() {
        Ok(stderr)
    } else {
        Err(format!("{program} {} {}: {stderr}", args.join(" "), dir.display()))
    }
}

/// Mount a tmpfs of [`SIZE`] on `dir` (made if missing).
pub fn mount(dir: &Path) -> Result<(), String> {
    if !crate::netfault::have_root() {
        return Err("disk faults need root: each node's raft log goes on a tmpfs the run mounts".into());
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot make {}: {e}", dir.display()))?;
    run("mount", &["-t", "tmpfs", "-o", &format!("size={SIZE},mode=0700"), "tmpfs"], dir).map(|_| ())
}

/// Unmount what [`mount`] mounted (lazily: a daemon being killed may still hold files there).
pub fn unmount(dir: &Path) -> Result<(), String> {
    run("umount", &["-l"], dir).map(|_| ())
}

/// Fill the file system of `dir` until writes fail with ENOSPC.
pub fn fill(dir: &Path) -> Result<(), String> {
    let output = Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", filler(dir).display()))
        .arg("bs=64k")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run dd: {e}"))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if stderr.contains("No space left on device") {
        Ok(())
    } else {
        Err(format!("dd did not fill {}: {}", dir.display(), stderr.trim()))
    }
}

/// Take the filler away: the file system has room again.
pub fn free(dir: &Path) -> Result<(), String> {
    match std::fs::remove_file(filler(dir)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("cannot remove {}: {e}", filler(dir).display())),
    }
}
