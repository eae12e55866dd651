//! Raft in the simulator: 1/3/5 managers under crashes, torn disk tails, partitions, full restarts
//! and quorum loss, with the raft invariants (`shoal_sim::invariants`) checked every 5 virtual ms.
//!
//! Run: `cargo test --config "build.rustflags=['--cfg','madsim']" --target-dir target/sim -p shoal-sim --test raft`
//! (a failing seed prints `MADSIM_TEST_SEED=…` to reproduce it).
#![cfg(madsim)]

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use madsim::runtime::{Handle, NodeHandle};
use shoal_core::api::{Meta, Network};
use shoal_core::env::{runtime, NodeEnv};
use shoal_core::raft::testing::NoExecutor;
use shoal_core::raft::{RaftConfig, Replica, Role};
use shoal_core::rpc::Router;
use shoal_core::store::{Action, Object, ProposeError, Proposer, Store};
use shoal_core::trace::Tracer;
use shoal_sim::disk::SimDisk;
use shoal_sim::invariants::{Observation, RaftInvariants};
use shoal_sim::net::SimNet;

fn addr(id: u64) -> String {
    format!("10.0.0.{id}:2377")
}

fn host(id: u64) -> String {
    format!("10.0.0.{id}")
}

fn config() -> RaftConfig {
    RaftConfig { snapshot_interval: 40, logs_to_keep_after_snapshot: 10, ..RaftConfig::default() }
}

fn network(name: &str) -> Action {
    Action::Create(Object::Network(Network {
        id: name.to_string(),
        meta: Meta::default(),
        name: name.to_string(),
        driver: "overlay".into(),
        subnet: String::new(),
        attachable: false,
        ingress: false,
        leases: Default::default(),
        labels: Default::default(),
    }))
}

type Registry = Arc<Mutex<BTreeMap<u64, Replica>>>;

/// A simulated cluster of managers: one madsim node, one durable disk and one raft replica each.
struct Cluster {
    handle: Handle,
    net: SimNet,
    nodes: BTreeMap<u64, NodeHandle>,
    disks: BTreeMap<u64, SimDisk>,
    live: Registry,
    invariants: Arc<Mutex<RaftInvariants>>,
    writes: u64,
}

impl Cluster {
    /// Starts `n` managers; manager 1 runs `swarm init`, the others are added through it.
    async fn start(n: u64) -> Cluster {
        let handle = Handle::current();
        let net = SimNet::new();
        let live: Registry = Default::default();
        let mut nodes = BTreeMap::new();
        let mut disks = BTreeMap::new();
        for id in 1..=n {
            // The disk outlives the node's init closure: it is what survives a crash.
            let disk = SimDisk::new();
            let (net2, disk2, live2) = (net.clone(), disk.clone(), live.clone());
            let node = handle
                .create_node()
                .name(format!("manager-{id}"))
                .ip(host(id).parse::<IpAddr>().unwrap())
                .init(move || {
                    let (net, disk, live) = (net2.clone(), disk2.clone(), live2.clone());
                    async move {
                        let transport = Arc::new(net.transport(addr(id)));
                        let env = NodeEnv {
                            addr: addr(id),
                            transport: transport.clone(),
                            disk: Arc::new(disk),
                            executor: Arc::new(NoExecutor),
                            mesh: Arc::new(shoal_core::env::mesh::NoMesh),
                            data_addr: String::new(),
                            tracer: Tracer::none(),
                        };
                        let router = Router::new();
                        let replica = Replica::start(&env, id, config(), Store::new(), router.clone())
                            .await
                            .expect("replica starts from its disk");
                        shoal_core::env::Transport::serve(transport.as_ref(), Arc::new(router)).await.unwrap();
                        live.lock().unwrap().insert(id, replica);
                        std::future::pending::<()>().await;
                    }
                })
                .build();
            nodes.insert(id, node);
            disks.insert(id, disk);
        }
        let mut cluster = Cluster { handle, net, nodes, disks, live, invariants: Default::default(), writes: 0 };
        cluster.spawn_checker();
        cluster.wait_started(&(1..=n).collect::<Vec<_>>()).await;
        cluster.replica(1).initialize().await.unwrap();
        cluster.wait_leader(&[1], Duration::from_secs(5)).await;
        for id in 2..=n {
            cluster.replica(1).add_manager(id, addr(id)).await.unwrap();
        }
        cluster
    }

    /// Polls every live replica every 5 virtual ms and checks the invariants; a violation fails
    /// the run at once.
    fn spawn_checker(&mut self) {
        let (live, invariants) = (self.live.clone(), self.invariants.clone());
        madsim::task::spawn(async move {
            loop {
                let observations: Vec<Observation> = live
                    .lock()
                    .unwrap()
                    .values()
                    .map(|r| {
                        let s = r.status();
                        Observation {
                            raft_id: s.raft_id,
                            term: s.term,
                            role: s.role,
                            last_applied: s.last_applied,
                            last_log_index: s.last_log_index,
                            store: r.store().clone(),
                        }
                    })
                    .collect();
                if let Err(violation) = invariants.lock().unwrap().check(&observations) {
                    panic!("invariant violated: {violation}");
                }
                runtime::sleep(Duration::from_millis(5)).await;
            }
        });
    }

    fn replica(&self, id: u64) -> Replica {
        self.live.lock().unwrap().get(&id).cloned().unwrap_or_else(|| panic!("manager-{id} is not running"))
    }

    async fn wait_started(&self, ids: &[u64]) {
        for _ in 0..1000 {
            if ids.iter().all(|id| self.live.lock().unwrap().contains_key(id)) {
                return;
            }
            runtime::sleep(Duration::from_millis(1)).await;
        }
        panic!("managers {ids:?} did not start");
    }

    /// Waits until all of `ids` agree on one leader among them; returns it.
    async fn wait_leader(&self, ids: &[u64], within: Duration) -> u64 {
        let deadline = runtime::now() + within;
        while runtime::now() < deadline {
            let statuses: Vec<_> = {
                let live = self.live.lock().unwrap();
                ids.iter().filter_map(|id| live.get(id).map(|r| r.status())).collect()
            };
            if statuses.len() == ids.len() {
                if let Some((leader, _)) = statuses[0].leader.clone() {
                    let agreed = statuses.iter().all(|s| s.leader.as_ref().map(|l| l.0) == Some(leader));
                    let leads = statuses.iter().any(|s| s.raft_id == leader && s.role == Role::Leader);
                    if agreed && leads {
                        return leader;
                    }
                }
            }
            runtime::sleep(Duration::from_millis(10)).await;
        }
        panic!("no leader among {ids:?} within {within:?}");
    }

    /// `count` writes through manager `via`; each must be acknowledged. Records them for the checker.
    async fn write(&mut self, via: u64, count: u64) {
        for _ in 0..count {
            self.writes += 1;
            let name = format!("net-{}", self.writes);
            let result = self.replica(via).propose(vec![network(&name)]).await;
            let version = result.unwrap_or_else(|e| {
                let statuses: Vec<_> = self.live.lock().unwrap().values().map(|r| r.status()).collect();
                panic!("write {name} through manager-{via} failed: {e}; statuses {statuses:#?}")
            });
            self.invariants.lock().unwrap().acked.acked(name, version);
        }
    }

    /// Crash manager `id`: its tasks die, and its disk loses what was not synced (with `torn`, a
    /// random part of the unsynced tail survives, as a torn write).
    fn crash(&self, id: u64, torn: bool) -> usize {
        self.live.lock().unwrap().remove(&id);
        self.handle.kill(self.nodes[&id].id());
        self.disks[&id].crash(torn)
    }

    async fn restart(&self, id: u64) {
        self.live.lock().unwrap().remove(&id);
        self.handle.restart(self.nodes[&id].id());
        self.wait_started(&[id]).await;
    }

    /// Every live store reaches the highest acknowledged version and they all agree.
    async fn converged(&self, ids: &[u64], within: Duration) {
        let target = self.invariants.lock().unwrap().acked.max_version();
        let deadline = runtime::now() + within;
        while runtime::now() < deadline {
            let stores: Vec<Store> = ids.iter().map(|id| self.replica(*id).store().clone()).collect();
            let versions: Vec<u64> = stores.iter().map(|s| s.version()).collect();
            if versions.iter().all(|v| *v >= target) && versions.windows(2).all(|w| w[0] == w[1]) {
                let first = stores[0].snapshot();
                assert!(stores.iter().all(|s| s.snapshot() == first), "stores at one version differ");
                return;
            }
            runtime::sleep(Duration::from_millis(10)).await;
        }
        let versions: Vec<u64> = ids.iter().map(|id| self.replica(*id).store().version()).collect();
        panic!("managers {ids:?} did not converge to version {target}: {versions:?}");
    }
}

#[madsim::test]
async fn one_manager_restarts_from_snapshot_and_log() {
    let mut c = Cluster::start(1).await;
    c.write(1, 100).await;
    // Only the unsynced committed-index hint can be lost; acknowledged entries were synced.
    c.crash(1, true);
    c.restart(1).await;
    c.wait_leader(&[1], Duration::from_secs(5)).await;
    // Rebuilt from snapshot + log before any new write.
    c.converged(&[1], Duration::from_secs(5)).await;
    assert!(c.replica(1).raft().metrics().borrow().snapshot.is_some(), "snapshots were taken (interval 40)");
    c.write(1, 10).await;
    c.converged(&[1], Duration::from_secs(5)).await;
}

#[madsim::test]
async fn three_managers_survive_leader_crash_and_torn_tail() {
    let mut c = Cluster::start(3).await;
    let all = [1, 2, 3];
    let leader = c.wait_leader(&all, Duration::from_secs(5)).await;
    let follower = all.iter().copied().find(|id| *id != leader).unwrap();
    c.write(follower, 60).await; // forwarded to the leader
    c.crash(leader, true);
    let rest: Vec<u64> = all.iter().copied().filter(|id| *id != leader).collect();
    let started = runtime::now();
    let new_leader = c.wait_leader(&rest, Duration::from_secs(10)).await;
    let failover = runtime::now() - started;
    // Usually 1-3 s; split votes between the two survivors (openraft 0.9 has no pre-vote) can take
    // a few more rounds. Swarm's own election timeout alone is 10 s.
    assert!(failover < Duration::from_secs(10), "fail-over took {failover:?}");
    assert_ne!(new_leader, leader);
    c.write(rest[0], 60).await;
    c.restart(leader).await;
    // The restarted node is 60+ entries behind a log purged past it: it needs a snapshot.
    c.converged(&all, Duration::from_secs(20)).await;
    c.write(leader, 5).await;
    c.converged(&all, Duration::from_secs(10)).await;
}

#[madsim::test]
async fn five_managers_minority_and_majority_partitions() {
    let mut c = Cluster::start(5).await;
    let all = [1, 2, 3, 4, 5];
    let leader = c.wait_leader(&all, Duration::from_secs(5)).await;
    c.write(leader, 20).await;

    // The leader and one follower on the minority side.
    let buddy = all.iter().copied().find(|id| *id != leader).unwrap();
    let minority = vec![leader, buddy];
    let majority: Vec<u64> = all.iter().copied().filter(|id| !minority.contains(id)).collect();
    let hosts = |ids: &[u64]| ids.iter().map(|id| host(*id)).collect::<Vec<_>>();
    c.net.partition(&hosts(&minority), &hosts(&majority));
    let new_leader = c.wait_leader(&majority, Duration::from_secs(10)).await;
    c.write(majority[1], 20).await;
    // The minority cannot commit: Swarm's lost-quorum error, within a few seconds.
    for id in &minority {
        let started = runtime::now();
        let err = c.replica(*id).propose(vec![network("minority-write")]).await.unwrap_err();
        assert_eq!(err, ProposeError::NoLeader, "manager-{id}");
        assert!(runtime::now() - started <= Duration::from_secs(5), "manager-{id} took {:?}", runtime::now() - started);
    }
    c.net.heal();
    c.wait_leader(&all, Duration::from_secs(15)).await;
    c.converged(&all, Duration::from_secs(15)).await;
    assert!(c.replica(new_leader).store().view(|s| !s.networks.contains_key("minority-write")), "never acknowledged");

    // A partition that leaves the leader with a majority changes nothing for clients.
    let leader = c.wait_leader(&all, Duration::from_secs(5)).await;
    let cut: Vec<u64> = all.iter().copied().filter(|id| *id != leader).take(2).collect();
    let rest: Vec<u64> = all.iter().copied().filter(|id| !cut.contains(id)).collect();
    c.net.partition(&hosts(&cut), &hosts(&rest));
    c.write(leader, 20).await;
    c.net.heal();
    c.converged(&all, Duration::from_secs(15)).await;
}

#[madsim::test]
async fn full_restart_of_all_managers_keeps_acknowledged_writes() {
    let mut c = Cluster::start(3).await;
    let all = [1, 2, 3];
    let leader = c.wait_leader(&all, Duration::from_secs(5)).await;
    c.write(leader, 70).await;
    for id in all {
        c.crash(id, true);
    }
    runtime::sleep(Duration::from_secs(1)).await;
    for id in all {
        c.restart(id).await;
    }
    c.wait_leader(&all, Duration::from_secs(10)).await;
    c.converged(&all, Duration::from_secs(10)).await;
    c.write(2, 10).await;
    c.converged(&all, Duration::from_secs(10)).await;
}

#[madsim::test]
async fn restart_with_lost_unsynced_tail() {
    let mut c = Cluster::start(3).await;
    let all = [1, 2, 3];
    let leader = c.wait_leader(&all, Duration::from_secs(5)).await;
    // Writes in flight while a follower crashes: whatever it had not synced is lost or torn.
    let follower = all.iter().copied().find(|id| *id != leader).unwrap();
    let writer = {
        let replica = c.replica(leader);
        madsim::task::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..40 {
                let name = format!("bg-{i}");
                if let Ok(version) = replica.propose(vec![network(&name)]).await {
                    acked.push((name, version));
                }
            }
            acked
        })
    };
    runtime::sleep(Duration::from_millis(30)).await;
    c.crash(follower, true);
    for (name, version) in writer.await.unwrap() {
        c.invariants.lock().unwrap().acked.acked(name, version);
    }
    c.restart(follower).await;
    c.write(leader, 5).await;
    c.converged(&all, Duration::from_secs(10)).await;
}

#[madsim::test]
async fn quorum_loss_fails_fast_then_recovers() {
    let mut c = Cluster::start(3).await;
    let all = [1, 2, 3];
    let leader = c.wait_leader(&all, Duration::from_secs(5)).await;
    c.write(leader, 10).await;
    let others: Vec<u64> = all.iter().copied().filter(|id| *id != leader).collect();
    for id in &others {
        c.crash(*id, false);
    }
    runtime::sleep(Duration::from_secs(3)).await;
    let started = runtime::now();
    let err = c.replica(leader).propose(vec![network("no-quorum")]).await.unwrap_err();
    let took = runtime::now() - started;
    assert_eq!(err, ProposeError::NoLeader);
    assert!(took <= Duration::from_secs(2), "a leader without quorum fails fast, took {took:?}");
    assert_eq!(
        err.to_string(),
        "The swarm does not have a leader. It's possible that too few managers are online. \
         Make sure more than half of the managers are online."
    );
    let err = c.replica(leader).remove_manager(others[0]).await.unwrap_err();
    assert_eq!(err.to_string(), "can't remove member from the raft: this would result in a loss of quorum");
    for id in &others {
        c.restart(*id).await;
    }
    c.wait_leader(&all, Duration::from_secs(15)).await;
    c.write(others[0], 10).await;
    c.converged(&all, Duration::from_secs(10)).await;
}
