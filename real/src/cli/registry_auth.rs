//! `--with-registry-auth`: this client's credentials for an image's registry, found as Docker's CLI
//! finds them (`cli/command/registry.go` `RetrieveAuthTokenFromImage`, `cli/config/configfile`):
//!
//! - the registry is the image reference's first component when it looks like a host (has a `.` or a
//!   `:`, or is `localhost`), else Docker Hub, whose config key is `https://index.docker.io/v1/`;
//! - the config file is `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`; no file means no
//!   credentials (an anonymous pull), as with Docker;
//! - a credential helper named for the registry in `credHelpers`, else the `credsStore` one, is asked
//!   (`docker-credential-NAME get`); otherwise the `auths` entry whose key is the registry, or whose
//!   host is (`https://127.0.0.1:5000/v2/` matches `127.0.0.1:5000`): `auth` is base64 `user:password`,
//!   `identitytoken` an OAuth token;
//! - nothing found is no credentials, not an error (Docker sends an empty `AuthConfig`).
//!
//! The credentials go to the manager with the spec and from there to the nodes that pull; nothing
//! here prints them.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::Deserialize;
use shoal_core::api::RegistryAuth;

/// Docker Hub's key in `config.json`.
pub const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

/// The registry `image` is pulled from, as `config.json` keys it: `127.0.0.1:5000`, or
/// [`DOCKER_HUB_KEY`] for Docker Hub images (`busybox`, `library/redis:7`, `docker.io/x/y`).
pub fn registry_key(image: &str) -> String {
    match image.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => {
            if matches!(first, "docker.io" | "index.docker.io" | "registry-1.docker.io") {
                DOCKER_HUB_KEY.to_string()
            } else {
                first.to_string()
            }
        }
        _ => DOCKER_HUB_KEY.to_string(),
    }
}

/// Docker's `ConvertToHostname`: a config key without scheme and path.
fn hostname(key: &str) -> &str {
    let key = key.strip_prefix("http://").or_else(|| key.strip_prefix("https://")).unwrap_or(key);
    key.split('/').next().unwrap_or(key)
}

#[derive(Debug, Default, Deserialize)]
struct ConfigFile {
    #[serde(default)]
    auths: std::collections::BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credsStore")]
    creds_store: String,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    identitytoken: String,
}

/// Where the client's Docker config lives: `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
pub fn config_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".docker/config.json"))
}

/// This client's credentials for `image`'s registry (empty when it has none).
pub fn for_image(image: &str) -> Result<RegistryAuth, String> {
    let Some(path) = config_path() else { return Ok(RegistryAuth::default()) };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(RegistryAuth::default()),
        Err(e) => return Err(format!("cannot read registry credentials from {}: {e}", path.display())),
    };
    lookup(&text, &registry_key(image), &|helper, server| helper_credentials(Path::new(helper), server))
        .map_err(|e| format!("cannot read registry credentials from {}: {e}", path.display()))
}

/// The credentials `config` (a `config.json`) holds for the registry `key`; `helper(program, key)`
/// asks a credential helper.
pub fn lookup(
    config: &str,
    key: &str,
    helper: &dyn Fn(&str, &str) -> Result<RegistryAuth, String>,
) -> Result<RegistryAuth, String> {
    let config: ConfigFile = serde_json::from_str(config).map_err(|e| format!("not a Docker config file: {e}"))?;
    let helper_name = config
        .cred_helpers
        .iter()
        .find(|(registry, _)| hostname(registry) == hostname(key))
        .map(|(_, name)| name.clone())
        .or_else(|| Some(config.creds_store.clone()).filter(|s| !s.is_empty()));
    if let Some(name) = helper_name {
        return helper(&format!("docker-credential-{name}"), key);
    }
    let entry = config
        .auths
        .iter()
        .find(|(k, _)| *k == key)
        .or_else(|| config.auths.iter().find(|(k, _)| hostname(k) == hostname(key)));
    let Some((_, entry)) = entry else { return Ok(RegistryAuth::default()) };
    let (mut username, mut password) = (entry.username.clone(), entry.password.clone());
    if !entry.auth.is_empty() {
        let decoded = STANDARD
            .decode(entry.auth.trim())
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or_else(|| format!("the \"auth\" entry of {key} is not base64 of user:password"))?;
        let (user, pass) = decoded
            .split_once(':')
            .ok_or_else(|| format!("the \"auth\" entry of {key} is not base64 of user:password"))?;
        (username, password) = (user.to_string(), pass.to_string());
    }
    Ok(RegistryAuth {
        server_address: key.to_string(),
        username,
        password,
        identity_token: entry.identitytoken.clone(),
    })
}

/// What a credential helper answers to `get`.
#[derive(Debug, Deserialize)]
struct HelperAnswer {
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

/// Ask the credential helper `program` (`docker-credential-pass`, found on `PATH`, or a path) for
/// `server`'s credentials, as Docker's CLI does: the address on stdin, JSON on stdout. A helper
/// that has none ("credentials not found") gives none; the user name `<token>` marks an identity
/// token.
pub fn helper_credentials(program: &Path, server: &str) -> Result<RegistryAuth, String> {
    let shown = program.display();
    let mut child = Command::new(program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run the credential helper {shown}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(server.as_bytes()).map_err(|e| format!("cannot talk to the credential helper {shown}: {e}"))?;
    }
    let output = child.wait_with_output().map_err(|e| format!("the credential helper {shown} failed: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        if stdout.contains("credentials not found") {
            return Ok(RegistryAuth::default());
        }
        // The helper's own words, never its stdout beyond that (it could hold a secret).
        return Err(format!(
            "the credential helper {shown} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let answer: HelperAnswer = serde_json::from_str(&stdout)
        .map_err(|e| format!("the credential helper {shown} answered something other than credentials: {e}"))?;
    let mut auth = RegistryAuth { server_address: server.to_string(), ..RegistryAuth::default() };
    if answer.username == "<token>" {
        auth.identity_token = answer.secret;
    } else {
        auth.username = answer.username;
        auth.password = answer.secret;
    }
    Ok(auth)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_helper(_: &str, _: &str) -> Result<RegistryAuth, String> {
        panic!("no credential helper is configured")
    }

    #[test]
    fn registry_of_an_image() {
        assert_eq!(registry_key("127.0.0.1:5000/busybox:t1"), "127.0.0.1:5000");
        assert_eq!(registry_key("registry.example.com/team/app@sha256:abc"), "registry.example.com");
        assert_eq!(registry_key("localhost/app"), "localhost");
        assert_eq!(registry_key("busybox"), DOCKER_HUB_KEY);
        assert_eq!(registry_key("library/redis:7"), DOCKER_HUB_KEY);
        assert_eq!(registry_key("docker.io/library/redis:7"), DOCKER_HUB_KEY);
    }

    #[test]
    fn auths_entries_by_key_or_host() {
        let config = r#"{"auths": {
            "127.0.0.1:5000": {"auth": "YWxpY2U6czNjcjp0"},
            "https://registry.example.com/v2/": {"auth": "Ym9iOnB3"},
            "https://index.docker.io/v1/": {"identitytoken": "tok"}
        }}"#;
        let local = lookup(config, "127.0.0.1:5000", &no_helper).unwrap();
        assert_eq!((local.username.as_str(), local.password.as_str()), ("alice", "s3cr:t"), "split at the first ':'");
        assert_eq!(local.server_address, "127.0.0.1:5000");
        let example = lookup(config, "registry.example.com", &no_helper).unwrap();
        assert_eq!((example.username.as_str(), example.password.as_str()), ("bob", "pw"));
        assert_eq!(lookup(config, DOCKER_HUB_KEY, &no_helper).unwrap().identity_token, "tok");
        assert!(lookup(config, "127.0.0.1:6000", &no_helper).unwrap().is_empty(), "no entry, no credentials");
    }

    #[test]
    fn bad_config_is_refused_with_the_reason() {
        assert!(lookup("{", "x", &no_helper).unwrap_err().contains("not a Docker config file"));
        let bad = r#"{"auths": {"127.0.0.1:5000": {"auth": "bm9jb2xvbg=="}}}"#;
        assert!(lookup(bad, "127.0.0.1:5000", &no_helper).unwrap_err().contains("127.0.0.1:5000"));
    }

    #[test]
    fn credential_helpers_come_first() {
        let config = r#"{"credsStore": "pass", "credHelpers": {"127.0.0.1:5000": "local"},
                         "auths": {"127.0.0.1:5000": {"auth": "YTpi"}}}"#;
        let asked = |program: &str, server: &str| {
            Ok(RegistryAuth { server_address: server.into(), username: program.into(), ..Default::default() })
        };
        assert_eq!(lookup(config, "127.0.0.1:5000", &asked).unwrap().username, "docker-credential-local");
        assert_eq!(lookup(config, "other:1", &asked).unwrap().username, "docker-credential-pass");
    }

    #[test]
    fn a_credential_helper_is_run_as_docker_runs_it() {
        let dir = tempfile::tempdir().unwrap();
        let helper = dir.path().join("docker-credential-test");
        std::fs::write(
            &helper,
            "#!/bin/sh\nread server\n[ \"$1\" = get ] || exit 2\ncase $server in\n  \
             reg:1) echo '{\"ServerURL\":\"reg:1\",\"Username\":\"carol\",\"Secret\":\"pw\"}' ;;\n  \
             tok:1) echo '{\"ServerURL\":\"tok:1\",\"Username\":\"<token>\",\"Secret\":\"t\"}' ;;\n  \
             *) echo 'credentials not found in native keychain'; exit 1 ;;\nesac\n",
        )
        .unwrap();
        std::fs::set_permissions(&helper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let auth = helper_credentials(&helper, "reg:1").unwrap();
        assert_eq!(
            (auth.username.as_str(), auth.password.as_str(), auth.server_address.as_str()),
            ("carol", "pw", "reg:1")
        );
        assert_eq!(helper_credentials(&helper, "tok:1").unwrap().identity_token, "t");
        assert!(helper_credentials(&helper, "none:1").unwrap().is_empty());
        assert!(helper_credentials(&dir.path().join("missing"), "x").unwrap_err().contains("cannot run"));
    }
}
