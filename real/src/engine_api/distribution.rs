//! `GET /distribution/{name}/json`, answered from this host's image store only — never from a
//! registry (shoal's daemon asks no registry on a client's behalf).
//!
//! The `docker` CLI asks it before `service create`/`update` (unless `--no-resolve-image`) to pin
//! the image to its manifest digest (`name:tag@sha256:…`) and record its platforms. A local image
//! knows its manifest digest only if it came from, or went to, a registry (its `RepoDigests`); the
//! engine resolves such a pinned reference locally, so that is what is answered. An image built,
//! imported or loaded here has no such digest: the answer is an error saying so, on which the CLI
//! prints Docker's warning ("could not be accessed on a registry to record its digest") and uses
//! the reference unpinned — what Docker does with an image no registry has. An image the store
//! lacks is Docker's `No such image` (404).

use bollard::Docker;
use hyper::StatusCode;
use serde_json::{json, Value};

use super::Reply;

/// `name` without its tag or digest, in its familiar form (`busybox`, not `docker.io/library/busybox`).
pub fn repository(name: &str) -> String {
    let name = name.split('@').next().unwrap_or(name);
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    let name = match name[last_slash..].rfind(':') {
        Some(colon) => &name[..last_slash + colon],
        None => name,
    };
    let name = name.strip_prefix("docker.io/").or_else(|| name.strip_prefix("index.docker.io/")).unwrap_or(name);
    name.strip_prefix("library/").unwrap_or(name).to_string()
}

/// The manifest digest of `name` among an image's `RepoDigests` (`repo@sha256:…`): the one of
/// the same repository; the digest `name` itself pins, if it is among them.
pub fn manifest_digest(name: &str, repo_digests: &[String]) -> Option<String> {
    let repo = repository(name);
    let mut same_repo = repo_digests.iter().filter_map(|d| d.split_once('@')).filter(|(r, _)| repository(r) == repo);
    match name.split_once('@') {
        Some((_, pinned)) => same_repo.find(|(_, d)| *d == pinned).map(|(_, d)| d.to_string()),
        None => same_repo.next().map(|(_, d)| d.to_string()),
    }
}

/// The answer for `name` from the engine `docker` (the one this daemon's tasks run on).
pub async fn inspect(docker: &Docker, name: &str) -> Result<Value, Reply> {
    let image = match docker.inspect_image(name).await {
        Ok(image) => image,
        Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {
            return Err(Reply::error(StatusCode::NOT_FOUND, format!("No such image: {name}")))
        }
        Err(err) => {
            return Err(Reply::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot read the image store of this node's engine: {err}"),
            ))
        }
    };
    let digest = manifest_digest(name, image.repo_digests.as_deref().unwrap_or_default()).ok_or_else(|| {
        Reply::error(
            StatusCode::NOT_FOUND,
            format!(
                "image {name} has no registry digest in this node's image store (it was built, imported or loaded \
                 here, never pushed or pulled), and shoal asks no registry: each node uses its own copy of {name}"
            ),
        )
    })?;
    let mut platform = json!({
        "architecture": image.architecture.unwrap_or_default(),
        "os": image.os.unwrap_or_default(),
    });
    if let Some(variant) = image.variant.filter(|v| !v.is_empty()) {
        platform["variant"] = json!(variant);
    }
    Ok(json!({
        "Descriptor": {
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "digest": digest,
            "size": 0,
        },
        "Platforms": [platform],
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories_lose_tag_digest_and_default_registry() {
        assert_eq!(repository("busybox"), "busybox");
        assert_eq!(repository("busybox:1.36"), "busybox");
        assert_eq!(repository("docker.io/library/busybox:latest"), "busybox");
        assert_eq!(repository("127.0.0.1:5000/team/app:v2"), "127.0.0.1:5000/team/app");
        assert_eq!(repository("127.0.0.1:5000/app@sha256:ab"), "127.0.0.1:5000/app");
    }

    #[test]
    fn the_digest_is_the_same_repositorys() {
        let digests = vec!["other/app@sha256:11".to_string(), "127.0.0.1:5000/app@sha256:22".to_string()];
        assert_eq!(manifest_digest("127.0.0.1:5000/app:latest", &digests).as_deref(), Some("sha256:22"));
        assert_eq!(manifest_digest("127.0.0.1:5000/app@sha256:22", &digests).as_deref(), Some("sha256:22"));
        assert_eq!(manifest_digest("127.0.0.1:5000/app@sha256:33", &digests), None);
        assert_eq!(manifest_digest("shoal-test/busybox:latest", &digests), None);
        assert_eq!(manifest_digest("busybox", &[]), None);
    }
}
