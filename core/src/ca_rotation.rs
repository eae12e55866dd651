//! Root CA rotation (`swarm ca --rotate`) as a state machine over the store, so that it runs the
//! same in the simulator and the daemon (DESIGN §6b). Modelled on swarmkit's
//! `manager/controlapi/ca_rotation.go` and `ca/reconciler.go`:
//!
//! 1. **Start** ([`start`]): the cluster object gets a [`RootRotation`]: the new root, the new root
//!    cross-signed by the current one, its key, and the join tokens that will take over. From then on
//!    managers sign every certificate (joins and renewals) with the new key and send the cross-signed
//!    certificate along, so peers that trust only the old root still accept it.
//! 2. **Renewal**: every node learns from its heartbeat replies what it should hold ([`desired_tls`]:
//!    trust in both roots, a certificate issued by the new one), renews, and reports what it holds
//!    ([`NodeTlsInfo`], through the agent's heartbeats into the node's description). In the simulator
//!    a node's certificate is only the issuer digest it reports, and renewing is reporting the new one.
//! 3. **Finish** ([`finish`], run by the leader's reconcile loop): once every node in the store
//!    reports a certificate issued by the new root, the new root becomes the cluster's root, the old
//!    one is dropped from trust (nodes renew once more to learn it), and the join tokens change to
//!    ones carrying the new digest — the old tokens are refused from then on, as Swarm's are. A node
//!    that is down holds the rotation until it comes back or is removed (`node rm`), as in swarmkit.
//!
//! Nothing here touches crypto: certificates and keys come in as PEM made by the daemon
//! (`shoal::tls`); in the simulator they are empty and only the digests matter.

use serde::{Deserialize, Serialize};

use crate::api::{Cluster, NodeState, NodeTlsInfo, RootRotation};
use crate::store::{Action, Object, StoreState};

/// A new root CA for [`start`]. `Debug` redacts the key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewRootCa {
    pub ca_cert_pem: String,
    pub ca_digest: String,
    pub cross_signed_pem: String,
    pub ca_key_pem: String,
}

impl std::fmt::Debug for NewRootCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewRootCa").field("ca_digest", &self.ca_digest).finish_non_exhaustive()
    }
}

/// The cluster object with a rotation to `new` under way. A rotation already under way is
/// replaced (swarmkit does the same: the newest target wins, cross-signed by the current root).
pub fn start(cluster: &Cluster, new: NewRootCa, worker_join_token: String, manager_join_token: String) -> Cluster {
    let mut cluster = cluster.clone();
    cluster.root_rotation = Some(RootRotation {
        ca_cert_pem: new.ca_cert_pem,
        ca_digest: new.ca_digest,
        cross_signed_pem: new.cross_signed_pem,
        ca_key_pem: new.ca_key_pem,
        worker_join_token,
        manager_join_token,
    });
    cluster
}

/// What every node should hold now: during a rotation trust in both roots and a certificate from
/// the new one; otherwise trust in the root alone and a certificate from it.
pub fn desired_tls(cluster: &Cluster) -> NodeTlsInfo {
    match &cluster.root_rotation {
        Some(rotation) => {
            let mut trust_roots = vec![cluster.root_ca_digest.clone(), rotation.ca_digest.clone()];
            trust_roots.sort();
            trust_roots.dedup();
            NodeTlsInfo { trust_roots, cert_issuer: rotation.ca_digest.clone() }
        }
        None => NodeTlsInfo {
            trust_roots: vec![cluster.root_ca_digest.clone()],
            cert_issuer: cluster.root_ca_digest.clone(),
        },
    }
}

/// How far the cluster is, as `swarm ca` shows it (docker/cli `progress/root_rotation.go`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaProgress {
    /// The digest of the root every node should end up trusting (the new one during a rotation).
    pub desired_root_digest: String,
    pub rotation_in_progress: bool,
    pub total: u64,
    /// Nodes whose certificate is issued by the desired issuer.
    pub certs_rotated: u64,
    /// Nodes that trust exactly the cluster's root (counted only once the rotation finished).
    pub roots_rotated: u64,
    /// Nodes not yet renewed, with their state: (hostname, id, state).
    pub waiting_for: Vec<(String, String, NodeState)>,
}

impl CaProgress {
    /// Whether every node holds a certificate from the root and trusts it alone.
    pub fn converged(&self) -> bool {
        !self.rotation_in_progress && self.certs_rotated == self.total && self.roots_rotated == self.total
    }
}

/// The progress of the current (or last) rotation over the nodes in `state`.
pub fn progress(state: &StoreState) -> Option<CaProgress> {
    let cluster = state.cluster.as_ref()?;
    let desired = desired_tls(cluster);
    let rotation_in_progress = cluster.root_rotation.is_some();
    let mut certs_rotated = 0;
    let mut roots_rotated = 0;
    let mut waiting_for = Vec::new();
    for node in state.nodes.values() {
        let info = node.description.tls_info.as_ref();
        if info.is_some_and(|i| i.cert_issuer == desired.cert_issuer) {
            certs_rotated += 1;
        } else {
            waiting_for.push((node.description.hostname.clone(), node.id.clone(), node.status.state));
        }
        if info.is_some_and(|i| i.trust_roots == desired.trust_roots) {
            roots_rotated += 1;
        }
    }
    let total = state.nodes.len() as u64;
    Some(CaProgress {
        desired_root_digest: cluster.root_rotation.as_ref().map_or(&cluster.root_ca_digest, |r| &r.ca_digest).clone(),
        rotation_in_progress,
        total,
        certs_rotated,
        // As docker/cli shows it: no root counts as rotated until every certificate is.
        roots_rotated: if rotation_in_progress { 0 } else { roots_rotated },
        waiting_for,
    })
}

/// The leader's reconciler: the write that ends the rotation, once every node in the store reports
/// a certificate issued by the new root. `None` while there is no rotation or a node is behind.
pub fn finish(state: &StoreState) -> Option<Action> {
    let cluster = state.cluster.as_ref()?;
    let rotation = cluster.root_rotation.as_ref()?;
    let converged = state
        .nodes
        .values()
        .all(|n| n.description.tls_info.as_ref().is_some_and(|i| i.cert_issuer == rotation.ca_digest));
    if !converged {
        return None;
    }
    let mut done = cluster.clone();
    let rotation = done.root_rotation.take()?;
    done.root_ca_pem = rotation.ca_cert_pem;
    done.root_ca_digest = rotation.ca_digest;
    done.root_ca_key_pem = rotation.ca_key_pem;
    done.worker_join_token = rotation.worker_join_token;
    done.manager_join_token = rotation.manager_join_token;
    Some(Action::Update(Object::Cluster(done)))
}

#[cfg(all(test, not(madsim)))]
mod tests {
    use super::*;
    use crate::api::Node;

    fn state(issuers: &[&str]) -> StoreState {
        let mut s = StoreState::default();
        s.cluster = Some(Cluster {
            id: "c".into(),
            meta: Default::default(),
            spec: Default::default(),
            worker_join_token: "old-w".into(),
            manager_join_token: "old-m".into(),
            root_ca_pem: String::new(),
            root_ca_digest: "old".into(),
            root_ca_key_pem: String::new(),
            root_rotation: None,
            unlock_key: None,
        });
        for (i, issuer) in issuers.iter().enumerate() {
            let mut node: Node = crate::scheduler::testkit::node(&format!("n{i}"));
            node.description.tls_info =
                Some(NodeTlsInfo { trust_roots: vec!["old".into()], cert_issuer: issuer.to_string() });
            s.nodes.insert(node.id.clone(), node);
        }
        s
    }

    fn new_root() -> NewRootCa {
        NewRootCa {
            ca_cert_pem: "NEW".into(),
            ca_digest: "new".into(),
            cross_signed_pem: "X".into(),
            ca_key_pem: "KEY".into(),
        }
    }

    #[test]
    fn a_rotation_finishes_only_when_every_node_reports_the_new_issuer() {
        let mut s = state(&["old", "old"]);
        assert_eq!(finish(&s), None, "no rotation, nothing to finish");
        let cluster = start(s.cluster.as_ref().unwrap(), new_root(), "new-w".into(), "new-m".into());
        assert!(!format!("{cluster:?}").contains("KEY"), "Debug must not show the new key");
        s.cluster = Some(cluster.clone());
        let desired = desired_tls(&cluster);
        assert_eq!(desired.trust_roots, vec!["new".to_string(), "old".to_string()]);
        assert_eq!(desired.cert_issuer, "new");
        assert_eq!(finish(&s), None);
        let p = progress(&s).unwrap();
        assert_eq!((p.total, p.certs_rotated, p.roots_rotated, p.rotation_in_progress), (2, 0, 0, true));
        s.nodes.get_mut("n0").unwrap().description.tls_info = Some(desired.clone());
        assert_eq!(progress(&s).unwrap().certs_rotated, 1);
        assert_eq!(finish(&s), None, "n1 still holds an old certificate");
        s.nodes.get_mut("n1").unwrap().description.tls_info = Some(desired);
        let Some(Action::Update(Object::Cluster(done))) = finish(&s) else { panic!("the rotation should finish") };
        assert_eq!(done.root_rotation, None);
        assert_eq!((done.root_ca_digest.as_str(), done.root_ca_key_pem.as_str()), ("new", "KEY"));
        assert_eq!((done.worker_join_token.as_str(), done.manager_join_token.as_str()), ("new-w", "new-m"));
        s.cluster = Some(done.clone());
        // Certificates are right; trust converges as nodes drop the old root.
        let p = progress(&s).unwrap();
        assert_eq!((p.certs_rotated, p.roots_rotated, p.converged()), (2, 0, false));
        for n in s.nodes.values_mut() {
            n.description.tls_info = Some(desired_tls(&done));
        }
        assert!(progress(&s).unwrap().converged());
    }

    #[test]
    fn a_removed_node_no_longer_holds_the_rotation() {
        let mut s = state(&["old", "old"]);
        s.cluster = Some(start(s.cluster.as_ref().unwrap(), new_root(), "w".into(), "m".into()));
        s.nodes.get_mut("n0").unwrap().description.tls_info = Some(desired_tls(s.cluster.as_ref().unwrap()));
        assert_eq!(finish(&s), None);
        s.nodes.remove("n1");
        assert!(finish(&s).is_some());
    }
}
