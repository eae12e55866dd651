//! The Engine API on TCP with client certificates (`shoal daemon --tcp ADDR --tlsverify …`): the real
//! `docker` CLI with `--tlsverify` and shoal's own CLI reach the daemon with a certificate the CA
//! signed; a client without one, with one from another CA, or without TLS at all is refused. One
//! process-executor daemon on 127.0.0.206; the certificates are made here (rcgen).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose};
use shoal::api_tls::{self, TlsFiles};
use shoal::engine_client::{Endpoint, EngineClient};

use common::{free_port, DaemonProc, BIN};

const IP: &str = "127.0.0.206";

/// A CA, and what it signs.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        Ca { cert: params.self_signed(&key).unwrap(), key }
    }

    /// A certificate for `names` (IP addresses become IP SANs), for a server or a client; written
    /// to `dir/<file>-cert.pem` and `dir/<file>-key.pem`.
    fn issue(&self, dir: &Path, file: &str, names: &[&str], usage: ExtendedKeyUsagePurpose) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, file);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        let (cert_path, key_path) = (dir.join(format!("{file}-cert.pem")), dir.join(format!("{file}-key.pem")));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    }

    fn write(&self, path: &Path) -> PathBuf {
        std::fs::write(path, self.cert.pem()).unwrap();
        path.to_path_buf()
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 temp path")
}

fn run(command: &mut Command) -> Output {
    command
        .env_remove("DOCKER_HOST")
        .env_remove("DOCKER_TLS_VERIFY")
        .env_remove("DOCKER_CERT_PATH")
        .env_remove("DOCKER_CONTEXT")
        .env_remove("SHOAL_HOST")
        .stdin(Stdio::null())
        .output()
        .expect("run the client")
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

#[test]
fn the_api_on_tcp_takes_only_clients_with_a_certificate_its_ca_signed() {
    let certs = tempfile::tempdir().unwrap();
    let dir = certs.path();
    let ca = Ca::new("shoal api test ca");
    let ca_pem = ca.write(&dir.join("ca.pem"));
    let (server_cert, server_key) = ca.issue(dir, "server", &[IP], ExtendedKeyUsagePurpose::ServerAuth);
    let (client_cert, client_key) = ca.issue(dir, "client", &[], ExtendedKeyUsagePurpose::ClientAuth);
    let stranger = Ca::new("another ca");
    let (foreign_cert, foreign_key) = stranger.issue(dir, "foreign", &[], ExtendedKeyUsagePurpose::ClientAuth);

    let addr = format!("{IP}:{}", free_port(IP));
    let daemon = DaemonProc::spawn_args(
        "tls-m1",
        IP,
        "process",
        &[
            "--tcp",
            &addr,
            "--tlsverify",
            "--tlscacert",
            path(&ca_pem),
            "--tlscert",
            path(&server_cert),
            "--tlskey",
            path(&server_key),
        ],
        None,
    );
    daemon.swarm_init();
    let host = format!("tcp://{addr}");

    // Docker's own CLI, with its TLS flags (and a config dir of its own).
    let config = tempfile::tempdir().unwrap();
    let docker = |extra: &[&str], args: &[&str]| {
        run(Command::new("docker")
            .arg("--config")
            .arg(config.path())
            .args(["-H", &host, "--tlsverify", "--tlscacert", path(&ca_pem)])
            .args(extra)
            .args(args))
    };
    let with_cert = ["--tlscert", path(&client_cert), "--tlskey", path(&client_key)];
    let ls = docker(&with_cert, &["node", "ls", "--format", "{{.Hostname}} {{.ManagerStatus}}"]);
    assert!(ls.status.success(), "docker --tlsverify node ls: {}", text(&ls));
    assert_eq!(String::from_utf8_lossy(&ls.stdout), "tls-m1 Leader\n");
    let info = docker(&with_cert, &["info", "--format", "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}"]);
    assert!(info.status.success(), "docker --tlsverify info: {}", text(&info));
    assert_eq!(String::from_utf8_lossy(&info.stdout), "active true\n");
    // A certificate from another CA: the daemon refuses the handshake.
    let foreign = docker(&["--tlscert", path(&foreign_cert), "--tlskey", path(&foreign_key)], &["node", "ls"]);
    assert!(!foreign.status.success(), "a foreign certificate got in: {}", text(&foreign));

    // shoal's CLI, with the same flags.
    let shoal = |tls: &[&str], args: &[&str]| run(Command::new(BIN).args(["-H", &host]).args(tls).args(args));
    let tls =
        ["--tlsverify", "--tlscacert", path(&ca_pem), "--tlscert", path(&client_cert), "--tlskey", path(&client_key)];
    let ls = shoal(&tls, &["node", "ls", "--format", "{{.Hostname}} {{.ManagerStatus}}"]);
    assert!(ls.status.success(), "shoal --tlsverify node ls: {}", text(&ls));
    assert_eq!(String::from_utf8_lossy(&ls.stdout), "tls-m1 Leader\n");
    // Without TLS, the port speaks no plain HTTP.
    let plain = shoal(&[], &["node", "ls"]);
    assert!(!plain.status.success(), "plain HTTP got an answer: {}", text(&plain));

    // A client that presents no certificate at all, trusting the daemon: refused.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let files = TlsFiles { ca: ca_pem.clone(), cert: client_cert.clone(), key: client_key.clone() };
    assert!(api_tls::client_config(&files).is_ok());
    let roots = {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(rustls::pki_types::CertificateDer::from(ca.cert.der().to_vec())).unwrap();
        roots
    };
    let anonymous =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    let client = EngineClient::new(Endpoint::Tcp(addr.clone())).with_tls(std::sync::Arc::new(anonymous));
    let refused = runtime.block_on(client.status());
    assert!(refused.is_err(), "a client without a certificate got an answer: {refused:?}");
    let client = EngineClient::new(Endpoint::Tcp(addr.clone())).with_tls(api_tls::client_config(&files).unwrap());
    let status = runtime.block_on(client.status()).expect("a client with a certificate gets an answer");
    assert_eq!(status.state, "active");

    // The daemon takes --tlsverify only with its certificates and --tcp; without TLS only loopback.
    let refused = run(Command::new(BIN)
        .args(["daemon", "--executor", "process", "--tcp", "0.0.0.0:2399", "--data-dir"])
        .arg(dir.join("d1"))
        .arg("--socket")
        .arg(dir.join("d1.sock")));
    assert!(!refused.status.success());
    assert!(text(&refused).contains("--tcp must be a loopback address"), "{}", text(&refused));
    drop(daemon);
}
