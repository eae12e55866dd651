//! `POST /images/create` — an image pull — sent to the Docker engine directly (hyper over the
//! engine's socket) rather than through bollard, for one reason: the registry credentials.
//!
//! The engine decodes the `X-Registry-Auth` header as URL-safe base64 (Go's `base64.URLEncoding`, as
//! Docker's CLI encodes it) and, on a pull, silently drops a header it cannot decode. bollard 0.18
//! encodes it with the standard alphabet, so credentials whose JSON contains `?`, `>` or `~` at some
//! offsets came out with `+` or `/` and the pull went out anonymous — checked against dockerd
//! 20.10 ("no basic auth credentials"). Everything else still goes through bollard.
//!
//! The engine is found as bollard's local defaults find it: `DOCKER_HOST` (`unix://PATH` or
//! `tcp://HOST:PORT`, plain HTTP), else `/var/run/docker.sock`.

use std::path::PathBuf;

use base64::engine::general_purpose::URL_SAFE;
use base64::Engine as _;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use shoal_core::api::RegistryAuth;

/// Where the engine's API listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineAddr {
    Unix(PathBuf),
    Tcp(String),
}

impl EngineAddr {
    /// From `DOCKER_HOST` as bollard reads it; the local socket when unset.
    pub fn from_env() -> Result<EngineAddr, String> {
        match std::env::var("DOCKER_HOST") {
            Ok(host) if !host.is_empty() => EngineAddr::parse(&host),
            _ => Ok(EngineAddr::Unix(PathBuf::from("/var/run/docker.sock"))),
        }
    }

    pub fn parse(host: &str) -> Result<EngineAddr, String> {
        if let Some(path) = host.strip_prefix("unix://") {
            Ok(EngineAddr::Unix(PathBuf::from(path)))
        } else if let Some(addr) = host.strip_prefix("tcp://").or_else(|| host.strip_prefix("http://")) {
            Ok(EngineAddr::Tcp(addr.trim_end_matches('/').to_string()))
        } else {
            Err(format!("DOCKER_HOST={host}: shoal pulls images through unix:// or plain tcp:// engine addresses only"))
        }
    }
}

/// How a pull ended, when it did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullFailure {
    /// The engine answered an error status before pulling (`status`, its `message`): 404 when the
    /// registry has no such repository or tag.
    Refused { status: u16, message: String },
    /// The pull started and the engine reported an error in its progress stream.
    Failed(String),
    /// The engine could not be reached or its answer not read.
    Engine(String),
}

/// The engine's `X-Registry-Auth` value for `auth`: Docker's `AuthConfig` as JSON, URL-safe base64.
pub fn encode_auth(auth: &RegistryAuth) -> String {
    let mut config = serde_json::Map::new();
    let mut put = |key: &str, value: &str| {
        if !value.is_empty() {
            config.insert(key.to_string(), serde_json::Value::String(value.to_string()));
        }
    };
    put("username", &auth.username);
    put("password", &auth.password);
    put("serveraddress", &auth.server_address);
    put("identitytoken", &auth.identity_token);
    URL_SAFE.encode(serde_json::Value::Object(config).to_string())
}

/// One line of the engine's progress stream (or its error answer).
#[derive(Debug, Deserialize)]
struct Progress {
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

/// Pull `reference` (a tag or digest is expected: a bare name pulls every tag) through the engine at
/// `addr` speaking API `version` (`1.41`), with `auth` when given. Returns once the engine is done.
pub async fn pull(
    addr: &EngineAddr,
    version: &str,
    reference: &str,
    auth: Option<&RegistryAuth>,
) -> Result<(), PullFailure> {
    let engine = |what: &str, e: &dyn std::fmt::Display| PullFailure::Engine(format!("{what}: {e}"));
    let query = serde_urlencoded::to_string([("fromImage", reference)]).map_err(|e| engine("encode the image", &e))?;
    // The engine passes the client's name on to the registry (`UpstreamClient(shoal/…)` in its log).
    let mut request = hyper::Request::post(format!("/v{version}/images/create?{query}"))
        .header("Host", "docker")
        .header("User-Agent", concat!("shoal/", env!("CARGO_PKG_VERSION")));
    if let Some(auth) = auth.filter(|auth| !auth.is_empty()) {
        request = request.header("X-Registry-Auth", encode_auth(auth));
    }
    let request = request.body(Empty::<Bytes>::new()).map_err(|e| engine("build the pull request", &e))?;
    let response = match addr {
        EngineAddr::Unix(path) => {
            let stream = tokio::net::UnixStream::connect(path)
                .await
                .map_err(|e| engine(&format!("cannot reach the Docker engine at {}", path.display()), &e))?;
            send(TokioIo::new(stream), request).await?
        }
        EngineAddr::Tcp(host) => {
            let stream = tokio::net::TcpStream::connect(host)
                .await
                .map_err(|e| engine(&format!("cannot reach the Docker engine at {host}"), &e))?;
            send(TokioIo::new(stream), request).await?
        }
    };
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.map_err(|e| engine("read the engine's pull answer", &e))?;
    let body = body.to_bytes();
    let text = String::from_utf8_lossy(&body);
    if !(200..300).contains(&status) {
        let message = serde_json::from_str::<Progress>(&text)
            .ok()
            .and_then(|p| p.message)
            .unwrap_or_else(|| text.trim().to_string());
        return Err(PullFailure::Refused { status, message });
    }
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if let Some(error) = serde_json::from_str::<Progress>(line).ok().and_then(|p| p.error) {
            return Err(PullFailure::Failed(error));
        }
    }
    Ok(())
}

async fn send<T>(
    io: TokioIo<T>,
    request: hyper::Request<Empty<Bytes>>,
) -> Result<hyper::Response<hyper::body::Incoming>, PullFailure>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let engine = |what: &str, e: &dyn std::fmt::Display| PullFailure::Engine(format!("{what}: {e}"));
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(io).await.map_err(|e| engine("talk to the Docker engine", &e))?;
    // The connection is driven until the answer is read, then dropped with this request.
    tokio::spawn(connection);
    sender.send_request(request).await.map_err(|e| engine("send the pull to the Docker engine", &e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_url_safe_base64_of_docker_auth_config() {
        let auth = RegistryAuth {
            server_address: "127.0.0.1:5000".into(),
            username: "bob".into(),
            password: "p?>~p?>~p?>~".into(),
            identity_token: String::new(),
        };
        let encoded = encode_auth(&auth);
        assert!(!encoded.contains('+') && !encoded.contains('/'), "{encoded}");
        let json: serde_json::Value = serde_json::from_slice(&URL_SAFE.decode(&encoded).unwrap()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"username": "bob", "password": "p?>~p?>~p?>~", "serveraddress": "127.0.0.1:5000"})
        );
    }

    #[test]
    fn engine_addresses() {
        assert_eq!(EngineAddr::parse("unix:///run/d.sock"), Ok(EngineAddr::Unix("/run/d.sock".into())));
        assert_eq!(EngineAddr::parse("tcp://127.0.0.1:2375"), Ok(EngineAddr::Tcp("127.0.0.1:2375".into())));
        assert!(EngineAddr::parse("ssh://host").unwrap_err().contains("ssh://host"));
    }
}
