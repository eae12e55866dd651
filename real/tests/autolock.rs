//! Autolock on a real daemon (DESIGN §6c), as a user meets it: `swarm init --autolock` prints the
//! unlock key; after a SIGKILL and a restart the manager is locked — every command answers Swarm's
//! locked error — until `swarm unlock` reads the key from stdin; then the service is still there.
//! On disk, neither the raft files hold the service's name nor any file a plain PEM private key.
//! Docker executor with the local test image (its container keeps running while the manager is
//! locked, as Swarm's do), daemon on 127.0.0.140.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

mod common;

use common::{require_docker, wait_for, CleanupContainers, DaemonProc, BIN};

const SERVICE: &str = "autolock-svc-5e1b";
const LOCKED: &str =
    "Swarm is encrypted and needs to be unlocked before it can be used. Please use \"docker swarm unlock\" to unlock it.";

fn files_under(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn contains(bytes: &[u8], needle: &str) -> bool {
    bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// `shoal swarm unlock` with `key` on stdin: (success, stdout + stderr).
fn unlock(daemon: &DaemonProc, key: &str) -> (bool, String) {
    let mut child = Command::new(BIN)
        .arg("-H")
        .arg(daemon.host())
        .args(["swarm", "unlock"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run shoal swarm unlock");
    child.stdin.take().unwrap().write_all(format!("{key}\n").as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

#[test]
fn a_locked_manager_refuses_to_serve_until_unlocked_and_keeps_nothing_in_plain() {
    require_docker();
    let _cleanup = CleanupContainers(SERVICE);
    let mut manager = DaemonProc::spawn_with("al-m1", "127.0.0.140", "docker", None);
    let addr = manager.addr.clone();
    let init = manager.must(&["swarm", "init", "--autolock", "--advertise-addr", &addr, "--listen-addr", &addr]);
    assert!(init.contains("To unlock a swarm manager after it restarts, run the `shoal swarm unlock`\ncommand and provide the following key:\n\n    SWMKEY-1-"), "{init}");
    assert!(init.ends_with("Remember to store this key in a password manager, since without it you\nwill not be able to restart the manager.\n"), "{init}");
    let key = manager.must(&["swarm", "unlock-key", "-q"]).trim().to_string();
    assert!(key.starts_with("SWMKEY-1-") && init.contains(&key), "{key}");
    assert!(manager.must(&["info"]).contains("  Autolock Managers: true\n"));
    let (ok, text) = unlock(&manager, &key);
    assert!(!ok && text.contains("Error: swarm is not locked"), "{text}");

    let created = manager.must(&["service", "create", "--name", SERVICE, "shoal-test/busybox:latest", "sleep", "3600"]);
    assert!(created.ends_with("verify: Service converged\n"), "{created}");

    manager.kill();
    manager.start();
    let info = wait_for(Duration::from_secs(20), "the manager to come up locked", || {
        let info = manager.must(&["info"]);
        info.contains(" Swarm: locked\n").then_some(info)
    });
    assert!(!info.contains("NodeID"), "{info}");
    for args in [&["node", "ls"][..], &["service", "ls"], &["swarm", "unlock-key"]] {
        let err = manager.shoal(args).expect_err("a locked manager serves nothing");
        assert!(err.contains(LOCKED), "`shoal {}`: {err}", args.join(" "));
    }
    let err = manager.shoal(&["swarm", "leave"]).expect_err("a locked manager does not leave unforced");
    assert!(err.contains("Swarm is encrypted and locked. Please unlock it first or use `--force`"), "{err}");
    let (ok, text) = unlock(&manager, "SWMKEY-1-notthekeyatallnotthekeyatallnotthekeyatall0");
    assert!(!ok && text.contains("swarm could not be unlocked: invalid key provided"), "{text}");

    // On disk while locked: the raft files hold no plain entry, no file a plain private key.
    let data = manager.dir.path().join("data");
    let mut files = Vec::new();
    files_under(&data, &mut files);
    let raft: Vec<_> = files.iter().filter(|p| p.to_string_lossy().contains("/raft/")).collect();
    assert!(!raft.is_empty(), "raft files in {files:?}");
    for path in &raft {
        assert!(!contains(&std::fs::read(path).unwrap(), SERVICE), "{} holds the service name", path.display());
    }
    for path in &files {
        let bytes = std::fs::read(path).unwrap_or_default();
        assert!(!contains(&bytes, "PRIVATE KEY-----"), "{} holds a plain private key", path.display());
    }

    let (ok, text) = unlock(&manager, &key);
    assert!(ok, "unlock: {text}\n{}", manager.log());
    let services = wait_for(Duration::from_secs(30), "the service after unlock", || {
        manager.shoal(&["service", "ls", "--format", "{{.Name}} {{.Replicas}}"]).ok().filter(|s| s.contains("1/1"))
    });
    assert_eq!(services, format!("{SERVICE} 1/1\n"));
    assert_eq!(manager.must(&["swarm", "unlock-key", "-q"]).trim(), key);

    // Rotation, then autolock off: `unlock-key` says so, as Docker does.
    let rotated = manager.must(&["swarm", "unlock-key", "--rotate"]);
    assert!(rotated.starts_with("Successfully rotated manager unlock key.\n\nTo unlock a swarm manager"), "{rotated}");
    assert!(!rotated.contains(&key));
    assert_eq!(manager.must(&["swarm", "update", "--autolock=false"]), "Swarm updated.\n");
    let err = manager.shoal(&["swarm", "unlock-key"]).expect_err("no key while autolock is off");
    assert!(err.contains("no unlock key is set"), "{err}");
    // The manager re-wraps its data key in plain within a couple of seconds of the change.
    std::thread::sleep(Duration::from_secs(3));
    manager.kill();
    manager.start();
    wait_for(Duration::from_secs(30), "the manager to come up unlocked", || {
        manager.shoal(&["service", "ls", "--format", "{{.Name}}"]).ok().filter(|s| s.contains(SERVICE))
    });
    manager.must(&["service", "rm", SERVICE]);
}
