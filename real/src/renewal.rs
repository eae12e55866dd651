//! Node certificate renewal, as Swarm's nodes do it: each node renews its own certificate at a random
//! point between 50% and 80% of its validity (swarmkit `ca/config.go`, so a cluster's nodes do not
//! all renew at once), and at once when its role no longer matches the one its certificate names
//! (promotion, demotion). It asks a manager over mutual TLS ([`crate::bootstrap::RenewalService`])
//! with a key made for the purpose, saves the pair crash-safely, and presents the new certificate
//! from the next handshake on. A failed attempt is retried every 2 s (`GetCertRetryInterval`).
//!
//! It also renews when the managers say the node's TLS should hold something else (a root CA
//! rotation, DESIGN §6b: a certificate from the new root, then trust in the new root alone): the
//! reply carries the roots to trust, which the node takes with the certificate. After each change
//! it reports what it holds ([`ShoalNode::report_tls`]), which the rotation waits on.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rcgen::KeyPair;
use shoal_core::api::{NodeRole, NodeTlsInfo};
use shoal_core::env::runtime;
use shoal_core::env::Transport;
use shoal_core::node::ShoalNode;
use shoal_core::rpc::{self, Channel};

use crate::bootstrap::{RenewReply, RenewRequest};
use crate::tls::{cert_info, issuer_digest, CertInfo, NodeCert, TlsConfig};

/// How long one renewal call may take.
const RENEW_TIMEOUT: Duration = Duration::from_secs(20);
/// swarmkit's `GetCertRetryInterval`: the pause after a failed attempt.
const RETRY_INTERVAL: Duration = Duration::from_secs(2);
/// How often the node looks again at its role (a promotion or demotion asks for a new certificate).
const CHECK_PERIOD: Duration = Duration::from_secs(2);

/// Swarm's renewal window: between these fractions of a certificate's validity.
const RENEW_FROM: f64 = 0.5;
const RENEW_UNTIL: f64 = 0.8;

/// When (Unix seconds) to renew a certificate with `info`'s validity, `fraction` ∈ [0, 1] of the way
/// through Swarm's window.
pub fn renewal_time(info: &CertInfo, fraction: f64) -> i64 {
    let validity = (info.not_after - info.not_before).max(0) as f64;
    let share = RENEW_FROM + (RENEW_UNTIL - RENEW_FROM) * fraction.clamp(0.0, 1.0);
    info.not_before + (validity * share) as i64
}

/// Where a renewed certificate and key are kept while both files are replaced.
pub trait SaveCertificate: Send + Sync + 'static {
    fn save(&self, node: &NodeCert) -> Result<(), String>;
    /// Keep the roots the node trusts (a PEM bundle), replacing the ones kept before.
    fn save_trust(&self, ca_pem: &str) -> Result<(), String>;
}

/// One node's renewal loop.
pub struct Renewal {
    pub node: ShoalNode,
    pub transport: Arc<dyn Transport>,
    pub tls: Arc<TlsConfig>,
    pub store: Arc<dyn SaveCertificate>,
    pub current: NodeCert,
    /// Where the daemon logs what happened (its stderr).
    pub certs_dir: PathBuf,
}

fn now_secs() -> i64 {
    (runtime::unix_millis() / 1000) as i64
}

fn log(message: &str) {
    eprintln!("shoal daemon: {message}");
}

impl Renewal {
    /// What this node's TLS holds now, as the CA rotation counts it.
    fn tls_info(&self) -> NodeTlsInfo {
        let trust = self.tls.ca_cert_pem();
        NodeTlsInfo {
            trust_roots: self.tls.trust_digests(),
            cert_issuer: issuer_digest(&self.current.cert_pem, &trust).unwrap_or_default(),
        }
    }

    /// Runs until the task is aborted (the node stops or leaves).
    pub async fn run(mut self) {
        let mut planned: Option<(String, i64)> = None;
        self.node.report_tls(self.tls_info());
        let desired = self.node.desired_tls();
        loop {
            let info = match cert_info(&self.current.cert_pem) {
                Ok(info) => info,
                Err(err) => {
                    log(&format!("cannot read this node's certificate in {}: {err}", self.certs_dir.display()));
                    return;
                }
            };
            // Draw the point in the window once per certificate.
            let due = match &planned {
                Some((cert, due)) if *cert == self.current.cert_pem => *due,
                _ => {
                    let fraction = (runtime::random_u64() >> 11) as f64 / (1u64 << 53) as f64;
                    let due = renewal_time(&info, fraction);
                    planned = Some((self.current.cert_pem.clone(), due));
                    due
                }
            };
            let role = if self.node.is_manager() { NodeRole::Manager } else { NodeRole::Worker };
            let role_changed = info.role.is_some_and(|named| named != role);
            let wanted = desired.borrow().clone();
            let rotating = wanted.is_some_and(|w| w != self.tls_info());
            if now_secs() >= due || role_changed || rotating {
                let reason = if role_changed {
                    "its role changed"
                } else if rotating {
                    "the swarm's root CA is rotating"
                } else {
                    "it is due"
                };
                match self.renew().await {
                    Ok(renewed) => {
                        let valid_until = cert_info(&renewed.cert_pem).map(|i| i.not_after).unwrap_or_default();
                        log(&format!(
                            "renewed this node's certificate ({reason}); valid until Unix time {valid_until}"
                        ));
                        self.current = renewed;
                        self.node.report_tls(self.tls_info());
                        if rotating {
                            // The managers' view may lag the one the hint came from: never a hot loop.
                            tokio::time::sleep(RETRY_INTERVAL).await;
                        }
                        continue;
                    }
                    Err(err) => {
                        log(&format!("cannot renew this node's certificate yet ({reason}): {err}"));
                        tokio::time::sleep(RETRY_INTERVAL).await;
                        continue;
                    }
                }
            }
            let until_due = Duration::from_secs((due - now_secs()).max(0) as u64);
            tokio::time::sleep(until_due.min(CHECK_PERIOD)).await;
        }
    }

    /// Ask the managers, in turn, for a certificate over a new key; save it and present it.
    async fn renew(&self) -> Result<NodeCert, String> {
        let key = KeyPair::generate().map_err(|e| e.to_string())?;
        let request = RenewRequest { public_key: key.public_key_raw().to_vec() };
        let me = self.node.node_id();
        let mut last = "no manager is known".to_string();
        for manager in self.node.manager_addrs() {
            let reply: Result<RenewReply, _> =
                rpc::call(self.transport.as_ref(), &manager, Channel::Certificates, &request, RENEW_TIMEOUT).await;
            let issued = match reply {
                Ok(Ok(issued)) => issued,
                Ok(Err(reason)) => {
                    last = format!("{manager}: {reason}");
                    continue;
                }
                Err(err) => {
                    last = err.to_string();
                    continue;
                }
            };
            let named = cert_info(&issued.cert_pem).map_err(|e| e.to_string())?.node_id;
            if issued.node_id != me || named != me {
                return Err(format!("{manager} issued a certificate for node {named}, not this node ({me})"));
            }
            let renewed = NodeCert { cert_pem: issued.cert_pem, key_pem: key.serialize_pem() };
            // The roots to trust come along (they change with a CA rotation): check the pair before
            // anything is saved.
            let trust_changed = issued.ca_pem != self.tls.ca_cert_pem();
            TlsConfig::new(&issued.ca_pem, &renewed)
                .map_err(|e| format!("{manager} issued an unusable certificate or CA bundle: {e}"))?;
            if issuer_digest(&renewed.cert_pem, &issued.ca_pem).is_none() {
                return Err(format!("{manager} issued a certificate from none of the roots it sent along"));
            }
            // Saved before it is presented: a crash in between leaves a node that starts with it.
            if trust_changed {
                self.store.save_trust(&issued.ca_pem)?;
            }
            self.store.save(&renewed)?;
            if trust_changed {
                self.tls
                    .replace_credentials(&issued.ca_pem, &renewed)
                    .map_err(|e| format!("the renewed certificate is unusable: {e}"))?;
            } else {
                self.tls
                    .replace_node_cert(&renewed)
                    .map_err(|e| format!("the renewed certificate is unusable: {e}"))?;
            }
            return Ok(renewed);
        }
        Err(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_falls_between_half_and_four_fifths_of_the_validity() {
        let info = CertInfo { node_id: "n".into(), role: None, not_before: 1_000, not_after: 11_000 };
        assert_eq!(renewal_time(&info, 0.0), 6_000);
        assert_eq!(renewal_time(&info, 1.0), 9_000);
        assert_eq!(renewal_time(&info, 0.5), 7_500);
        assert_eq!(renewal_time(&info, 7.0), 9_000, "the fraction is clamped");
    }
}
