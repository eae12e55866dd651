//! Secrets and configs (`docker secret …`, `docker config …`): named blobs a service's tasks get as
//! read-only files. Shapes follow swarmkit's `api/objects.proto` (`Secret`, `Config`) and
//! `api/types.proto` (`SecretReference`, `ConfigReference`, `FileTarget`).
//!
//! The store never holds a value in plain text: [`Sealed`] is the value encrypted with the managers'
//! key (see [`crate::secrets`]), so neither the raft log nor a snapshot carries it. Only a manager
//! opens it, to send it to the nodes that run a task using it ([`FilePayload`], in the dispatcher's
//! assignments), or — configs only — to show it in `config inspect`. `Debug` never prints a value.

use serde::{Deserialize, Serialize};

use super::{Labels, Meta};

/// A value sealed with the managers' key: XChaCha20-Poly1305, the object's id as associated data
/// (a sealed value copied onto another object does not open).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    /// Which key sealed it (its fingerprint), so a manager holding another key says so.
    pub key_id: String,
    /// Base64 of the 24-byte nonce.
    pub nonce: String,
    /// Base64 of ciphertext ‖ tag.
    pub ciphertext: String,
}

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sealed {{ key_id: {:?}, {} bytes }}", self.key_id, self.ciphertext.len())
    }
}

/// `docker secret create`: name, labels, driver (empty = the store's own), template driver.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretSpec {
    pub name: String,
    #[serde(default)]
    pub labels: Labels,
    /// A secrets driver plugin; shoal has none, so this stays empty (as `Driver:` shows it).
    #[serde(default)]
    pub driver: String,
    /// `--template-driver`: `golang` or empty.
    #[serde(default)]
    pub templating: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Secret {
    pub id: String,
    pub meta: Meta,
    pub spec: SecretSpec,
    pub sealed: Sealed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    pub id: String,
    pub meta: Meta,
    /// Configs have the same spec as secrets (no driver).
    pub spec: SecretSpec,
    pub sealed: Sealed,
}

/// Which of the two a reference or payload is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileKind {
    Secret,
    Config,
}

impl FileKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FileKind::Secret => "secret",
            FileKind::Config => "config",
        }
    }
}

/// A service's use of a secret or config (`--secret source=pw,target=db_pw,uid=0,gid=0,mode=0400`):
/// swarmkit's `SecretReference`/`ConfigReference` with its `FileTarget`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileReference {
    /// The secret's (config's) id, filled in by the control API from the name.
    pub id: String,
    /// The secret's (config's) name.
    pub name: String,
    /// The file: a secret's is relative to `/run/secrets/` (or absolute), a config's is an absolute path.
    pub target: String,
    pub uid: String,
    pub gid: String,
    /// Permission bits (Docker's default 0444).
    pub mode: u32,
}

impl FileReference {
    /// Docker's defaults for `--secret NAME` / `--config NAME`: the target is the name (a config's at
    /// `/<name>`), owned by 0:0, mode 0444.
    pub fn new(kind: FileKind, name: &str) -> FileReference {
        let target = match kind {
            FileKind::Secret => name.to_string(),
            FileKind::Config => format!("/{name}"),
        };
        FileReference {
            id: String::new(),
            name: name.to_string(),
            target,
            uid: "0".into(),
            gid: "0".into(),
            mode: 0o444,
        }
    }

    /// Where the file appears in the container.
    pub fn container_path(&self, kind: FileKind) -> String {
        match kind {
            FileKind::Secret if !self.target.starts_with('/') => format!("/run/secrets/{}", self.target),
            FileKind::Config if !self.target.starts_with('/') => format!("/{}", self.target),
            _ => self.target.clone(),
        }
    }
}

/// An opened value on its way to a node that runs a task using it (the dispatcher's assignments).
/// Never stored; `Debug` hides the value.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilePayload {
    pub kind: FileKind,
    pub id: String,
    /// Base64 of the value.
    pub data: String,
    /// Made with `--template-driver golang`: the node expands it for the task (`crate::template`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub templated: bool,
}

impl std::fmt::Debug for FilePayload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FilePayload {{ kind: {:?}, id: {:?}, data: <redacted> }}", self.kind, self.id)
    }
}

/// `--secret` / `--config` as docker/cli reads them (`opts.SecretOpt`, `opts.ConfigOpt`): a bare
/// name, or CSV `source=,target=,uid=,gid=,mode=` (`src` for `source`; `mode` in Go's base-0
/// notation, so `0400` is octal). The target defaults to the source.
pub fn parse_file_reference(kind: FileKind, value: &str) -> Result<FileReference, String> {
    if !value.contains('=') && !value.contains(',') {
        if value.is_empty() {
            return Err("source is required".into());
        }
        return Ok(FileReference::new(kind, value));
    }
    let mut reference = FileReference::new(kind, "");
    let mut target = None;
    for field in value.split(',') {
        let Some((key, v)) = field.split_once('=') else {
            return Err(format!("invalid field '{field}' must be a key=value pair"));
        };
        match key.to_ascii_lowercase().as_str() {
            "source" | "src" => reference.name = v.to_string(),
            "target" => target = Some(v.to_string()),
            "uid" => reference.uid = v.to_string(),
            "gid" => reference.gid = v.to_string(),
            "mode" => reference.mode = parse_mode(v).ok_or_else(|| format!("invalid mode specified: {v}"))?,
            _ => return Err(format!("invalid field in {} request: {key}", kind.as_str())),
        }
    }
    if reference.name.is_empty() {
        return Err("source is required".into());
    }
    reference.target = match target.filter(|t| !t.is_empty()) {
        Some(t) => t,
        None => FileReference::new(kind, &reference.name).target,
    };
    Ok(reference)
}

/// Go's `strconv.ParseUint(v, 0, 32)`: `0x…` hex, `0o…`/leading `0` octal, else decimal.
fn parse_mode(v: &str) -> Option<u32> {
    let v = v.trim();
    if let Some(hex) = v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        return u32::from_str_radix(hex, 16).ok();
    }
    if let Some(oct) = v.strip_prefix("0o").or_else(|| v.strip_prefix("0O")) {
        return u32::from_str_radix(oct, 8).ok();
    }
    if v.len() > 1 && v.starts_with('0') {
        return u32::from_str_radix(&v[1..], 8).ok();
    }
    v.parse().ok()
}

/// swarmkit's name rule for secrets and configs (`validateConfigOrSecretAnnotations`).
pub fn check_file_object_name(name: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.';
    let ends_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if name.is_empty()
        || name.len() > 64
        || !name.chars().all(ok_char)
        || !ends_ok(name.chars().next())
        || !ends_ok(name.chars().last())
    {
        return Err(
            "invalid name, only 64 [a-zA-Z0-9-_.] characters allowed, and the start and end character must be [a-zA-Z0-9]"
                .into(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_swarmkit_and_paths_docker() {
        assert!(check_file_object_name("db_pw.v1").is_ok());
        for bad in ["", "-x", "x-", "a/b", &"a".repeat(65)] {
            assert!(check_file_object_name(bad).is_err(), "{bad:?}");
        }
        let secret = FileReference::new(FileKind::Secret, "pw");
        assert_eq!((secret.container_path(FileKind::Secret), secret.mode), ("/run/secrets/pw".into(), 0o444));
        let config = FileReference::new(FileKind::Config, "app.conf");
        assert_eq!(config.container_path(FileKind::Config), "/app.conf");
        let parsed = parse_file_reference(FileKind::Secret, "source=pw,target=db/pw,uid=70,gid=80,mode=0400").unwrap();
        assert_eq!((parsed.name.as_str(), parsed.target.as_str(), parsed.uid.as_str()), ("pw", "db/pw", "70"));
        assert_eq!((parsed.gid.as_str(), parsed.mode), ("80", 0o400));
        assert_eq!(parse_file_reference(FileKind::Config, "src=app,mode=292").unwrap().mode, 0o444);
        assert_eq!(parse_file_reference(FileKind::Config, "src=app").unwrap().target, "/app");
        assert_eq!(parse_file_reference(FileKind::Secret, "target=x").unwrap_err(), "source is required");
        assert_eq!(
            parse_file_reference(FileKind::Secret, "source=a,size=1").unwrap_err(),
            "invalid field in secret request: size"
        );
        let payload =
            FilePayload { kind: FileKind::Secret, id: "s1".into(), data: "aHVudGVyMg==".into(), templated: false };
        assert!(!format!("{payload:?}").contains("aHVudGVyMg"));
    }
}
