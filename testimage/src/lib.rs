//! The local test image, `shoal-test/busybox:latest`, built when the Docker engine lacks it, so
//! that the Docker tests pass on a machine that has Rust and a running engine and nothing else
//! prepared. One place for it: the test crates (`shoal`'s tests, `shoal-harness`) call
//! [`require`], `.ci/run` and the benchmark scripts run the `shoal-test-image` binary.
//!
//! The image is Debian's `busybox-static` — its static `/bin/busybox` plus a symlink per applet,
//! `/etc/passwd` and `/etc/group` for root — imported from a tarball with `docker import`. Nothing
//! is pulled and no registry is contacted. Without `busybox-static` the build fails saying what to
//! install (`apt-get install busybox-static`); a test never skips for want of the image.
//! `SHOAL_TEST_BUSYBOX=/path/to/static/busybox` points at another static busybox (hosts without
//! dpkg).

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;

/// The image every Docker test runs.
pub const TEST_IMAGE: &str = "shoal-test/busybox:latest";

/// The environment variable that names a static busybox to use instead of busybox-static's.
pub const BUSYBOX_ENV: &str = "SHOAL_TEST_BUSYBOX";

/// Why the test image could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(
        "the Docker tests need the local image {TEST_IMAGE}, which is built from Debian's busybox-static, and \
         busybox-static is not installed: install it (`apt-get install busybox-static`) and run the tests \
         again (or set {BUSYBOX_ENV} to a statically linked busybox); nothing is pulled"
    )]
    NoBusybox,
    #[error(
        "{0} is dynamically linked: the test image {TEST_IMAGE} needs a static busybox (Debian's \
         busybox-static; `apt-get install busybox-static`)"
    )]
    NotStatic(PathBuf),
    #[error("{path}: {reason}")]
    Busybox { path: PathBuf, reason: String },
    #[error("`{command}` failed: {reason} (is a Docker engine running, and may this user talk to it?)")]
    Docker { command: String, reason: String },
    #[error("building {TEST_IMAGE}: {0}")]
    Io(#[from] std::io::Error),
    #[error("the freshly built {TEST_IMAGE} does not run `sh -c 'echo ok'`: {0}")]
    Broken(String),
}

/// Whether [`ensure`] found the image or built it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ensured {
    Present,
    Built,
}

/// One build at a time in this process (the tests of one binary run on several threads).
static BUILDING: Mutex<()> = Mutex::new(());

/// The test image is on the engine afterwards: found, or built from busybox-static.
pub fn ensure() -> Result<Ensured, ImageError> {
    let _one_at_a_time = BUILDING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if image_id(TEST_IMAGE)?.is_some() {
        return Ok(Ensured::Present);
    }
    build(TEST_IMAGE)?;
    Ok(Ensured::Built)
}

/// [`ensure`] for tests: panics with what is missing and how to get it.
pub fn require() {
    if let Err(err) = ensure() {
        panic!("{err}");
    }
}

/// The id of `image` on the engine, `None` if it has no such image; an error if docker does not answer.
fn image_id(image: &str) -> Result<Option<String>, ImageError> {
    let output = docker(&["image", "inspect", "--format", "{{.Id}}", image])?;
    if output.status.success() {
        return Ok(Some(String::from_utf8_lossy(&output.stdout).trim().to_string()));
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    if stderr.contains("No such image") {
        return Ok(None);
    }
    Err(ImageError::Docker { command: format!("docker image inspect {image}"), reason: stderr.trim().to_string() })
}

fn docker<S: AsRef<OsStr>>(args: &[S]) -> Result<std::process::Output, ImageError> {
    let command = || {
        let words: Vec<String> = args.iter().map(|a| a.as_ref().to_string_lossy().into_owned()).collect();
        format!("docker {}", words.join(" "))
    };
    Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| ImageError::Docker { command: command(), reason: e.to_string() })
}

fn docker_ok<S: AsRef<OsStr>>(args: &[S]) -> Result<String, ImageError> {
    let output = docker(args)?;
    if !output.status.success() {
        let words: Vec<String> = args.iter().map(|a| a.as_ref().to_string_lossy().into_owned()).collect();
        return Err(ImageError::Docker {
            command: format!("docker {}", words.join(" ")),
            reason: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// busybox-static's binary (or [`BUSYBOX_ENV`]'s), checked to be statically linked.
pub fn static_busybox() -> Result<PathBuf, ImageError> {
    find_static_busybox(std::env::var_os(BUSYBOX_ENV).map(PathBuf::from), "busybox-static")
}

/// `chosen`, else the busybox that Debian's `package` installed; statically linked.
fn find_static_busybox(chosen: Option<PathBuf>, package: &str) -> Result<PathBuf, ImageError> {
    let path = match chosen {
        Some(path) => path,
        None => {
            let listed = Command::new("dpkg-query").args(["-L", package]).stderr(Stdio::null()).output();
            let listed = match listed {
                Ok(output) if output.status.success() => String::from_utf8_lossy(&output.stdout).into_owned(),
                _ => return Err(ImageError::NoBusybox),
            };
            let found = listed.lines().find(|l| *l == "/bin/busybox" || *l == "/usr/bin/busybox");
            PathBuf::from(found.ok_or(ImageError::NoBusybox)?)
        }
    };
    let bytes = fs::read(&path).map_err(|e| ImageError::Busybox { path: path.clone(), reason: e.to_string() })?;
    match elf_is_dynamic(&bytes) {
        Ok(false) => Ok(path),
        Ok(true) => Err(ImageError::NotStatic(path)),
        Err(reason) => Err(ImageError::Busybox { path, reason: reason.to_string() }),
    }
}

/// Whether an ELF executable asks for a program interpreter (`PT_INTERP`), i.e. is dynamically
/// linked; 32- and 64-bit, either byte order.
fn elf_is_dynamic(bytes: &[u8]) -> Result<bool, &'static str> {
    const PT_INTERP: u32 = 3;
    if bytes.get(..4) != Some(b"\x7fELF") {
        return Err("not an ELF executable");
    }
    let wide = match bytes.get(4) {
        Some(1) => false,
        Some(2) => true,
        _ => return Err("unknown ELF class"),
    };
    let little = match bytes.get(5) {
        Some(1) => true,
        Some(2) => false,
        _ => return Err("unknown ELF byte order"),
    };
    let read = |at: usize, len: usize| -> Result<u64, &'static str> {
        let field = bytes.get(at..at + len).ok_or("truncated ELF header")?;
        let fold = |acc: u64, b: &u8| (acc << 8) | u64::from(*b);
        Ok(if little { field.iter().rev().fold(0, fold) } else { field.iter().fold(0, fold) })
    };
    let (phoff, phentsize, phnum) = if wide {
        (read(0x20, 8)?, read(0x36, 2)?, read(0x38, 2)?)
    } else {
        (read(0x1c, 4)?, read(0x2a, 2)?, read(0x2c, 2)?)
    };
    for index in 0..phnum {
        let at = usize::try_from(phoff + index * phentsize).map_err(|_| "program header out of range")?;
        if read(at, 4)? == u64::from(PT_INTERP) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Build the image `tag` from a root filesystem of busybox and its applets.
fn build(tag: &str) -> Result<(), ImageError> {
    let busybox = static_busybox()?;
    let work = tempfile::Builder::new().prefix("shoal-test-image-").tempdir()?;
    let rootfs = work.path().join("rootfs");
    for dir in ["bin", "etc", "tmp", "proc", "sys", "dev", "root"] {
        fs::create_dir_all(rootfs.join(dir))?;
    }
    fs::set_permissions(rootfs.join("tmp"), fs::Permissions::from_mode(0o1777))?;
    let target = rootfs.join("bin/busybox");
    fs::copy(&busybox, &target)?;
    fs::set_permissions(&target, fs::Permissions::from_mode(0o755))?;
    let applets = Command::new(&busybox)
        .arg("--list")
        .output()
        .map_err(|e| ImageError::Busybox { path: busybox.clone(), reason: format!("--list: {e}") })?;
    for applet in String::from_utf8_lossy(&applets.stdout).lines().map(str::trim) {
        if !applet.is_empty() && applet != "busybox" && !applet.contains('/') {
            symlink("busybox", rootfs.join("bin").join(applet))?;
        }
    }
    if !rootfs.join("bin/sh").exists() {
        return Err(ImageError::Busybox { path: busybox, reason: "its --list names no `sh` applet".into() });
    }
    fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")?;
    fs::write(rootfs.join("etc/group"), "root:x:0:\n")?;
    let tarball = work.path().join("rootfs.tar");
    let tar = Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .args(["--numeric-owner", "--owner=0", "--group=0", "-cf"])
        .arg(&tarball)
        .arg(".")
        .output()?;
    if !tar.status.success() {
        return Err(ImageError::Io(std::io::Error::other(format!(
            "tar of the root filesystem failed: {}",
            String::from_utf8_lossy(&tar.stderr).trim()
        ))));
    }
    let tarball = tarball.to_string_lossy().into_owned();
    let id = docker_ok(&["import", "--change", "ENV PATH=/bin", "--change", r#"CMD ["/bin/sh"]"#, &tarball])?;
    let ran = docker(&["run", "--rm", "--network", "none", &id, "sh", "-c", "echo ok"])?;
    if String::from_utf8_lossy(&ran.stdout).trim() != "ok" {
        let _ = docker(&["image", "rm", &id]);
        return Err(ImageError::Broken(String::from_utf8_lossy(&ran.stderr).trim().to_string()));
    }
    docker_ok(&["tag", &id, tag])?;
    // Another process may have built and tagged one at the same time: keep one image, not two.
    if image_id(tag)?.as_deref() != Some(id.as_str()) {
        let _ = docker(&["image", "rm", &id]);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ELF header with one program header of type `kind`, 64-bit little-endian.
    fn elf64(kind: u32) -> Vec<u8> {
        let mut bytes = vec![0u8; 0x40 + 0x38];
        bytes[..4].copy_from_slice(b"\x7fELF");
        bytes[4] = 2;
        bytes[5] = 1;
        bytes[0x20..0x28].copy_from_slice(&0x40u64.to_le_bytes());
        bytes[0x36..0x38].copy_from_slice(&0x38u16.to_le_bytes());
        bytes[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        bytes[0x40..0x44].copy_from_slice(&kind.to_le_bytes());
        bytes
    }

    /// The same, 32-bit big-endian.
    fn elf32_be(kind: u32) -> Vec<u8> {
        let mut bytes = vec![0u8; 0x34 + 0x20];
        bytes[..4].copy_from_slice(b"\x7fELF");
        bytes[4] = 1;
        bytes[5] = 2;
        bytes[0x1c..0x20].copy_from_slice(&0x34u32.to_be_bytes());
        bytes[0x2a..0x2c].copy_from_slice(&0x20u16.to_be_bytes());
        bytes[0x2c..0x2e].copy_from_slice(&1u16.to_be_bytes());
        bytes[0x34..0x38].copy_from_slice(&kind.to_be_bytes());
        bytes
    }

    #[test]
    fn an_interpreter_header_means_dynamic() {
        assert_eq!(elf_is_dynamic(&elf64(3)), Ok(true));
        assert_eq!(elf_is_dynamic(&elf64(1)), Ok(false));
        assert_eq!(elf_is_dynamic(&elf32_be(3)), Ok(true));
        assert_eq!(elf_is_dynamic(&elf32_be(1)), Ok(false));
    }

    #[test]
    fn this_test_binary_is_dynamic_and_garbage_is_refused() {
        // Rust test binaries link glibc dynamically on the Linux hosts shoal's tests run on.
        let me = fs::read(std::env::current_exe().unwrap()).unwrap();
        assert_eq!(elf_is_dynamic(&me), Ok(true));
        assert_eq!(elf_is_dynamic(b"#!/bin/sh\n"), Err("not an ELF executable"));
        let mut cut = elf64(3);
        cut.truncate(0x42);
        assert_eq!(elf_is_dynamic(&cut), Err("truncated ELF header"));
    }

    #[test]
    fn a_missing_or_dynamic_busybox_is_refused_with_what_to_install() {
        let err = find_static_busybox(None, "shoal-no-such-package").unwrap_err();
        assert!(matches!(err, ImageError::NoBusybox), "{err}");
        assert!(err
            .to_string()
            .contains("busybox-static is not installed: install it (`apt-get install busybox-static`)"));
        let err = find_static_busybox(Some(std::env::current_exe().unwrap()), "busybox-static").unwrap_err();
        assert!(matches!(err, ImageError::NotStatic(_)), "{err}");
        assert!(err.to_string().contains("apt-get install busybox-static"), "{err}");
        let err = find_static_busybox(Some("/nonexistent/busybox".into()), "busybox-static").unwrap_err();
        assert!(err.to_string().starts_with("/nonexistent/busybox: "), "{err}");
    }

    /// The build itself, under a tag of this test's own (the shared test image is left alone):
    /// needs a Docker engine and busybox-static, and fails saying so without them.
    #[test]
    fn builds_an_image_that_runs_busybox_applets() {
        let tag = format!("shoal-test/busybox-build-check:{}", std::process::id());
        build(&tag).unwrap_or_else(|e| panic!("{e}"));
        let ran = docker(&["run", "--rm", "--network", "none", &tag, "sh", "-c", "id -u; ls /bin | grep -cx wget"]);
        let id = image_id(&tag);
        let _ = docker(&["image", "rm", &tag]);
        let ran = ran.unwrap();
        assert_eq!(String::from_utf8_lossy(&ran.stdout), "0\n1\n", "{}", String::from_utf8_lossy(&ran.stderr));
        assert!(id.unwrap().is_some());
        assert_eq!(image_id(&tag).unwrap(), None, "the check's image is removed");
    }
}
