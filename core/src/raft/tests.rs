//! Unit tests of the raft module on plain tokio: openraft's storage suite, the record file's crash
//! behaviour, and small clusters over the in-process transport.

use std::sync::Arc;
use std::time::Duration;

use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, RaftLogReader, StorageError, Vote};

use super::log_store::{encode_record, replay, Record};
use super::state_machine::SmHandle;
use super::testing::{node_env, LocalNet, MemDisk};
use super::*;
use crate::api::{Meta, Network};
use crate::env::Disk;
use crate::rpc::Router;
use crate::store::{Action, Object, ProposeError, Proposer, Store, StoreError};

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, SmHandle, ()> for Builder {
    async fn build(&self) -> Result<((), LogStore, SmHandle), StorageError<RaftId>> {
        let disk: Arc<dyn Disk> = Arc::new(MemDisk::new());
        let log = LogStore::open(disk.clone()).await?;
        let sm = StateMachine::open(disk, Store::new()).await?;
        Ok(((), log, SmHandle::new(sm)))
    }
}

#[test]
fn openraft_storage_suite() {
    Suite::test_all(Builder).expect("openraft's storage suite");
}

fn log_id(term: u64, index: u64) -> LogId<RaftId> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn network(name: &str) -> Object {
    Object::Network(Network {
        id: format!("id-{name}"),
        meta: Meta::default(),
        name: name.to_string(),
        driver: "overlay".into(),
        subnet: String::new(),
        attachable: false,
        ingress: false,
        labels: Default::default(),
        leases: Default::default(),
    })
}

fn entry(term: u64, index: u64) -> Entry<TypeConfig> {
    let proposal = Proposal { actions: vec![Action::Create(network(&format!("n{index}")))], stamp_ms: index };
    Entry { log_id: log_id(term, index), payload: EntryPayload::Normal(proposal) }
}

async fn indexes(log: &mut LogStore) -> Vec<u64> {
    log.try_get_log_entries(..).await.unwrap().iter().map(|e| e.log_id.index).collect()
}

#[tokio::test]
async fn log_survives_reopen_with_vote_truncate_and_committed() {
    let disk = MemDisk::new();
    let mut log = LogStore::open(Arc::new(disk.clone())).await.unwrap();
    log.blocking_append((1..=5).map(|i| entry(1, i))).await.unwrap();
    log.save_vote(&Vote::new(2, 3)).await.unwrap();
    log.truncate(log_id(1, 4)).await.unwrap();
    log.blocking_append([entry(2, 4)]).await.unwrap();
    log.save_committed(Some(log_id(2, 4))).await.unwrap();
    log.blocking_append([entry(2, 5)]).await.unwrap();
    drop(log);

    let mut log = LogStore::open(Arc::new(disk.clone())).await.unwrap();
    assert_eq!(indexes(&mut log).await, vec![1, 2, 3, 4, 5]);
    let entries = log.try_get_log_entries(4..).await.unwrap();
    assert_eq!(entries[0].log_id, log_id(2, 4), "the truncated entry was replaced");
    assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(2, 3)));
    assert_eq!(log.read_committed().await.unwrap(), Some(log_id(2, 4)));
    assert_eq!(log.torn_bytes, 0);
}

#[tokio::test]
async fn crash_loses_only_unsynced_bytes_and_torn_tail_is_cut() {
    let disk = MemDisk::new();
    let mut log = LogStore::open(Arc::new(disk.clone())).await.unwrap();
    log.blocking_append((1..=3).map(|i| entry(1, i))).await.unwrap();
    // A torn write: half a record after the synced ones.
    let mut bytes = disk.raw(LOG_FILE).unwrap();
    let good = bytes.len();
    let record = encode_record(&Record::Entry(entry(1, 4)));
    bytes.extend_from_slice(&record[..record.len() / 2]);
    disk.set_raw(LOG_FILE, bytes);

    let mut log = LogStore::open(Arc::new(disk.clone())).await.unwrap();
    assert_eq!(indexes(&mut log).await, vec![1, 2, 3]);
    assert_eq!(log.torn_bytes, record.len() / 2);
    assert_eq!(disk.raw(LOG_FILE).unwrap().len(), good, "the torn tail is cut off the file");
    // Appends after the cut must be readable after the next restart.
    log.blocking_append([entry(1, 4)]).await.unwrap();
    let mut log = LogStore::open(Arc::new(disk.clone())).await.unwrap();
    assert_eq!(indexes(&mut log).await, vec![1, 2, 3, 4]);
}

#[tokio::test]
async fn bad_crc_and_garbage_end_the_log_without_panicking() {
    let disk = MemDisk::new();
    let mut log = LogStore::open(Arc::new(disk.clone())).await.unwrap();
    log.blocking_append((1..=3).map(|i| entry(1, i))).await.unwrap();
    let mut bytes = disk.raw(LOG_FILE).unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 0x55; // flip bits inside the last record's payload
    disk.set_raw(LOG_FILE, bytes);
    let mut log = LogStore::open(Arc::new(disk.clone())).await.unwrap();
    assert_eq!(indexes(&mut log).await, vec![1, 2]);

    // Pure garbage, and a header claiming an absurd length.
    for garbage in [vec![0xff; 13], vec![0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0, 1, 2]] {
        let replayed = replay(&garbage);
        assert!(replayed.entries.is_empty());
        assert_eq!(replayed.torn_bytes, garbage.len());
    }
}

#[tokio::test]
async fn unsynced_committed_hint_is_lost_safely_on_crash() {
    let disk = MemDisk::new();
    let mut log = LogStore::open(Arc::new(disk.clone())).await.unwrap();
    log.blocking_append((1..=3).map(|i| entry(1, i))).await.unwrap();
    log.save_committed(Some(log_id(1, 3))).await.unwrap();
    disk.crash(false);
    let mut log = LogStore::open(Arc::new(disk.clone())).await.unwrap();
    assert_eq!(indexes(&mut log).await, vec![1, 2, 3]);
    assert_eq!(log.read_committed().await.unwrap(), None, "the hint was never synced");
}

#[tokio::test]
async fn purge_compacts_the_file() {
    let disk = MemDisk::new();
    let mut log = LogStore::open(Arc::new(disk.clone())).await.unwrap();
    log.blocking_append((1..=100).map(|i| entry(1, i))).await.unwrap();
    let before = disk.raw(LOG_FILE).unwrap().len();
    log.purge(log_id(1, 90)).await.unwrap();
    let after = disk.raw(LOG_FILE).unwrap().len();
    assert!(after * 5 < before, "compaction shrinks the file ({before} -> {after})");
    let mut log = LogStore::open(Arc::new(disk.clone())).await.unwrap();
    assert_eq!(indexes(&mut log).await, (91..=100).collect::<Vec<_>>());
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 90)));
    assert_eq!(state.last_log_id, Some(log_id(1, 100)));
}

#[tokio::test]
async fn state_machine_applies_rejects_and_snapshots() {
    let disk: Arc<dyn Disk> = Arc::new(MemDisk::new());
    let store = Store::new();
    let mut sm = SmHandle::new(StateMachine::open(disk.clone(), store.clone()).await.unwrap());
    let dup = Entry { log_id: log_id(1, 3), payload: entry(1, 1).payload };
    let replies = sm.apply([entry(1, 1), entry(1, 2), dup]).await.unwrap();
    assert_eq!(replies[0], Ok(1));
    assert_eq!(replies[1], Ok(2));
    assert!(matches!(replies[2], Err(StoreError::AlreadyExists { .. })), "rejected, yet applied: {replies:?}");
    let (applied, _) = sm.applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id(1, 3)));

    use openraft::RaftSnapshotBuilder;
    let snapshot = sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
    assert_eq!(snapshot.meta.last_log_id, Some(log_id(1, 3)));

    // A fresh store on the same disk starts from the snapshot.
    let store2 = Store::new();
    let mut sm2 = SmHandle::new(StateMachine::open(disk.clone(), store2.clone()).await.unwrap());
    assert_eq!(store2.snapshot(), store.snapshot());
    assert_eq!(sm2.applied_state().await.unwrap().0, Some(log_id(1, 3)));
    assert!(sm2.get_current_snapshot().await.unwrap().is_some());
}

struct Node {
    disk: MemDisk,
    replica: Replica,
}

fn fast_config() -> RaftConfig {
    RaftConfig {
        heartbeat_interval_ms: 50,
        election_timeout_min_ms: 200,
        election_timeout_max_ms: 400,
        snapshot_interval: 20,
        logs_to_keep_after_snapshot: 5,
        propose_timeout_ms: 1500,
        forward_timeout_ms: 1000,
    }
}

async fn start_node(net: &LocalNet, id: u64, disk: MemDisk) -> Node {
    let addr = format!("10.0.0.{id}:2377");
    let transport = Arc::new(net.transport(&addr));
    let env = node_env(&addr, transport.clone(), Arc::new(disk.clone()));
    let router = Router::new();
    let replica = Replica::start(&env, id, fast_config(), Store::new(), router.clone()).await.unwrap();
    crate::env::Transport::serve(transport.as_ref(), Arc::new(router.clone())).await.unwrap();
    Node { disk, replica }
}

async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..400 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_managers_forward_snapshot_and_refuse_quorum_loss() {
    let net = LocalNet::new();
    let mut nodes = Vec::new();
    for id in 1..=3 {
        nodes.push(start_node(&net, id, MemDisk::new()).await);
    }
    nodes[0].replica.initialize().await.unwrap();
    assert_eq!(nodes[0].replica.initialize().await, Err(ReplicaError::AlreadyInitialized));
    wait_until("leader", || nodes[0].replica.is_leader()).await;
    nodes[0].replica.add_manager(2, "10.0.0.2:2377").await.unwrap();
    // Added through a follower: forwarded to the leader.
    nodes[1].replica.add_manager(3, "10.0.0.3:2377").await.unwrap();
    assert_eq!(nodes[0].replica.status().voters.len(), 3);

    // Writes through a follower are forwarded; enough of them to snapshot and purge.
    for i in 0..50 {
        let proposer: &dyn Proposer = &nodes[(i % 3) as usize].replica;
        let version = proposer.propose(vec![Action::Create(network(&format!("w{i}")))]).await.unwrap();
        assert_eq!(version, i + 1);
    }
    let dup = nodes[2].replica.propose(vec![Action::Create(network("w0"))]).await;
    assert!(matches!(dup, Err(ProposeError::Rejected(_))), "{dup:?}");
    wait_until("all applied", || nodes.iter().all(|n| n.replica.store().version() == 50)).await;
    let snapshots = nodes[0].replica.raft().metrics().borrow().snapshot;
    assert!(snapshots.is_some(), "a snapshot was taken after 20 entries");

    // Stop node 3: removing node 2 would leave 1 reachable of 2 — refused, with Swarm's words.
    net.isolate("10.0.0.3:2377");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let err = nodes[0].replica.remove_manager(2).await.unwrap_err();
    assert_eq!(err.to_string(), "can't remove member from the raft: this would result in a loss of quorum");
    assert_eq!(nodes[0].replica.remove_manager(9).await, Err(ReplicaError::NotMember));
    net.heal();
    tokio::time::sleep(Duration::from_millis(300)).await;
    nodes[1].replica.remove_manager(3).await.unwrap();
    assert_eq!(nodes[0].replica.status().voters.len(), 2);

    // Restart node 2 from its disk: it rebuilds its store from snapshot + log.
    let disk = nodes[1].disk.clone();
    nodes[1].replica.shutdown().await.unwrap();
    net.stop("10.0.0.2:2377");
    nodes[1] = start_node(&net, 2, disk).await;
    nodes[0].replica.propose(vec![Action::Create(network("after"))]).await.unwrap();
    wait_until("restarted node caught up", || nodes[1].replica.store().version() == 51).await;
    assert_eq!(nodes[1].replica.store().snapshot(), nodes[0].replica.store().snapshot());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_quorum_fails_fast_then_recovers_and_force_new_cluster_keeps_state() {
    let net = LocalNet::new();
    let mut nodes = Vec::new();
    for id in 1..=3 {
        nodes.push(start_node(&net, id, MemDisk::new()).await);
    }
    nodes[0].replica.initialize().await.unwrap();
    wait_until("leader", || nodes[0].replica.is_leader()).await;
    nodes[0].replica.add_manager(2, "10.0.0.2:2377").await.unwrap();
    nodes[0].replica.add_manager(3, "10.0.0.3:2377").await.unwrap();
    for i in 0..5 {
        nodes[0].replica.propose(vec![Action::Create(network(&format!("x{i}")))]).await.unwrap();
    }
    // Two of three managers gone.
    net.isolate("10.0.0.2:2377");
    net.isolate("10.0.0.3:2377");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = tokio::time::Instant::now();
    let err = nodes[0].replica.propose(vec![Action::Create(network("lost"))]).await.unwrap_err();
    assert_eq!(err, ProposeError::NoLeader);
    assert!(started.elapsed() <= Duration::from_millis(2000), "failed fast: {:?}", started.elapsed());
    assert!(err.to_string().contains("Make sure more than half of the managers are online."));

    // force-new-cluster on node 1: a one-manager cluster with the state it had.
    let disk = nodes[0].disk.clone();
    let before = nodes[0].replica.store().snapshot();
    nodes[0].replica.shutdown().await.unwrap();
    net.stop("10.0.0.1:2377");
    let addr = "10.0.0.1:2377";
    let transport = Arc::new(net.transport(addr));
    let env = node_env(addr, transport.clone(), Arc::new(disk));
    let router = Router::new();
    let store = Store::new();
    let (replica, recovered) = force_new_cluster(&env, 1, fast_config(), store.clone(), router.clone()).await.unwrap();
    crate::env::Transport::serve(transport.as_ref(), Arc::new(router)).await.unwrap();
    assert!(recovered.store_version >= before.version);
    wait_until("forced leader", || replica.is_leader()).await;
    assert_eq!(replica.status().voters.len(), 1);
    let version = replica.propose(vec![Action::Create(network("after-force"))]).await.unwrap();
    assert_eq!(version, before.version + 1, "the recovered state is kept: {recovered:?}");
    assert!(store.view(|s| s.networks.contains_key("id-x4")));
}
