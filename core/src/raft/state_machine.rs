//! The raft state machine: committed proposals applied to the node's [`Store`], membership tracked,
//! and snapshots of the whole [`StoreState`] + membership as JSON.
//!
//! The store itself is volatile; what survives a restart is the last snapshot (`raft/snapshot`,
//! written with `write_atomic` before openraft may purge the log behind it) and the log. On start the
//! snapshot is loaded into the store and openraft re-applies the committed log after it.

use std::io::Cursor;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta,
    StorageError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

use super::{storage_err, ApplyResult, RaftId, TypeConfig};
use crate::env::Disk;
use crate::store::{Store, StoreState};

/// The current snapshot: meta + body, replaced atomically.
pub const SNAPSHOT_FILE: &str = "raft/snapshot";

type Membership = StoredMembership<RaftId, BasicNode>;

/// What a snapshot carries, on the wire and on disk.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotBody {
    pub last_applied: Option<LogId<RaftId>>,
    pub membership: Membership,
    pub state: StoreState,
}

/// The snapshot file: openraft's meta and the body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotFile {
    pub meta: SnapshotMeta<RaftId, BasicNode>,
    pub body: SnapshotBody,
}

impl SnapshotFile {
    /// Reads the snapshot file, if any. A garbled file is an error: `write_atomic` never leaves a
    /// partial one, so it means real corruption.
    pub async fn load(disk: &dyn Disk) -> Result<Option<SnapshotFile>, StorageError<RaftId>> {
        let err = |e: &dyn std::fmt::Display| storage_err(ErrorSubject::Snapshot(None), ErrorVerb::Read, e);
        match disk.read(SNAPSHOT_FILE).await.map_err(|e| err(&e))? {
            None => Ok(None),
            Some(bytes) => Ok(Some(serde_json::from_slice(&bytes).map_err(|e| err(&e))?)),
        }
    }

    pub async fn save(&self, disk: &dyn Disk) -> Result<(), StorageError<RaftId>> {
        let err = |e: &dyn std::fmt::Display| {
            storage_err(ErrorSubject::Snapshot(Some(self.meta.signature())), ErrorVerb::Write, e)
        };
        let bytes = serde_json::to_vec(self).map_err(|e| err(&e))?;
        disk.write_atomic(SNAPSHOT_FILE, &bytes).await.map_err(|e| err(&e))
    }

    // openraft's trait methods fix the error type; boxing it here would only unbox it at the caller.
    #[allow(clippy::result_large_err)]
    fn to_snapshot(&self) -> Result<Snapshot<TypeConfig>, StorageError<RaftId>> {
        let bytes = serde_json::to_vec(&self.body)
            .map_err(|e| storage_err(ErrorSubject::Snapshot(Some(self.meta.signature())), ErrorVerb::Read, e))?;
        Ok(Snapshot { meta: self.meta.clone(), snapshot: Box::new(Cursor::new(bytes)) })
    }
}

/// Applies a proposal-carrying entry to a store state, for replaying a log outside raft
/// (force-new-cluster). Rejected proposals change nothing, as in the state machine.
pub fn replay_entry(state: &mut StoreState, entry: &Entry<TypeConfig>) {
    if let EntryPayload::Normal(proposal) = &entry.payload {
        let _ = state.apply(proposal);
    }
}

/// openraft's state machine over the node's [`Store`].
#[derive(Clone)]
pub struct StateMachine {
    disk: Arc<dyn Disk>,
    store: Store,
    last_applied: Option<LogId<RaftId>>,
    membership: Membership,
    current: Option<SnapshotFile>,
    /// The last log id of the snapshot on disk. An async lock because snapshot builders run in
    /// their own task: an old build must never overwrite a newer installed snapshot (the log behind
    /// the newer one may already be purged).
    saved: SavedSnapshot,
}

type SavedSnapshot = Arc<tokio::sync::Mutex<Option<LogId<RaftId>>>>;

/// Saves `file` unless the disk already holds a snapshot at least as new.
async fn save_if_newer(
    saved: &SavedSnapshot,
    disk: &dyn Disk,
    file: &SnapshotFile,
) -> Result<(), StorageError<RaftId>> {
    let mut saved = saved.lock().await;
    if saved.is_some() && *saved >= file.meta.last_log_id {
        return Ok(());
    }
    file.save(disk).await?;
    *saved = file.meta.last_log_id;
    Ok(())
}

impl std::fmt::Debug for StateMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateMachine").field("last_applied", &self.last_applied).finish_non_exhaustive()
    }
}

impl StateMachine {
    /// Loads the last snapshot from `disk` into `store` (or empties the store when there is none),
    /// so that openraft can re-apply the log after it.
    pub async fn open(disk: Arc<dyn Disk>, store: Store) -> Result<StateMachine, StorageError<RaftId>> {
        let current = SnapshotFile::load(disk.as_ref()).await?;
        let (last_applied, membership) = match &current {
            Some(file) => {
                store.replace(file.body.state.clone());
                (file.body.last_applied, file.body.membership.clone())
            }
            None => {
                store.replace(StoreState::default());
                (None, Membership::default())
            }
        };
        let saved = Arc::new(tokio::sync::Mutex::new(current.as_ref().and_then(|f| f.meta.last_log_id)));
        Ok(StateMachine { disk, store, last_applied, membership, current, saved })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }
}

/// Builds a snapshot from a copy of the state taken between two applies.
pub struct SnapshotBuilder {
    disk: Arc<dyn Disk>,
    body: SnapshotBody,
    saved: SavedSnapshot,
    /// Where the built snapshot is published back to the state machine's `current`.
    sink: Arc<std::sync::Mutex<Option<SnapshotFile>>>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<RaftId>> {
        let last = self.body.last_applied;
        let meta = SnapshotMeta {
            last_log_id: last,
            last_membership: self.body.membership.clone(),
            snapshot_id: match last {
                Some(id) => format!("{}-{}-{}", id.leader_id.term, id.leader_id.node_id, id.index),
                None => "empty".to_string(),
            },
        };
        let file = SnapshotFile { meta, body: self.body.clone() };
        // Durable before openraft learns of it, because it will purge the log behind it.
        save_if_newer(&self.saved, self.disk.as_ref(), &file).await?;
        let snapshot = file.to_snapshot()?;
        *self.sink.lock().expect("snapshot sink lock") = Some(file);
        Ok(snapshot)
    }
}

/// The state machine as openraft drives it: `StateMachine` plus the slot where snapshot builders
/// (which openraft runs in their own task) publish what they built.
#[derive(Clone)]
pub struct SmHandle {
    sm: StateMachine,
    built: Arc<std::sync::Mutex<Option<SnapshotFile>>>,
}

impl SmHandle {
    pub fn new(sm: StateMachine) -> Self {
        SmHandle { sm, built: Arc::new(std::sync::Mutex::new(None)) }
    }

    /// Picks up a snapshot a builder finished since the last call.
    fn collect_built(&mut self) {
        if let Some(file) = self.built.lock().expect("snapshot sink lock").take() {
            let newer = match (&self.sm.current, file.meta.last_log_id) {
                (Some(cur), last) => cur.meta.last_log_id < last,
                (None, _) => true,
            };
            if newer {
                self.sm.current = Some(file);
            }
        }
    }
}

impl RaftStateMachine<TypeConfig> for SmHandle {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId<RaftId>>, Membership), StorageError<RaftId>> {
        Ok((self.sm.last_applied, self.sm.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<ApplyResult>, StorageError<RaftId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut replies = Vec::new();
        for entry in entries {
            self.sm.last_applied = Some(entry.log_id);
            let reply = match entry.payload {
                EntryPayload::Blank => Ok(self.sm.store.version()),
                EntryPayload::Normal(proposal) => self.sm.store.apply(&proposal),
                EntryPayload::Membership(membership) => {
                    self.sm.membership = StoredMembership::new(Some(entry.log_id), membership);
                    Ok(self.sm.store.version())
                }
            };
            replies.push(reply);
        }
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        // Called between applies, so the copy is exactly the state at `last_applied`.
        SnapshotBuilder {
            disk: self.sm.disk.clone(),
            body: SnapshotBody {
                last_applied: self.sm.last_applied,
                membership: self.sm.membership.clone(),
                state: self.sm.store.snapshot(),
            },
            saved: self.sm.saved.clone(),
            sink: self.built.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError<RaftId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<RaftId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<RaftId>> {
        let bytes = snapshot.into_inner();
        let mut body: SnapshotBody = serde_json::from_slice(&bytes)
            .map_err(|e| storage_err(ErrorSubject::Snapshot(Some(meta.signature())), ErrorVerb::Read, e))?;
        // The meta is authoritative (it is what openraft checked against its log).
        body.last_applied = meta.last_log_id;
        body.membership = meta.last_membership.clone();
        let file = SnapshotFile { meta: meta.clone(), body };
        save_if_newer(&self.sm.saved, self.sm.disk.as_ref(), &file).await?;
        self.sm.store.replace(file.body.state.clone());
        self.sm.last_applied = file.body.last_applied;
        self.sm.membership = file.body.membership.clone();
        self.sm.current = Some(file);
        // A builder that finished earlier holds an older state; drop it.
        self.built.lock().expect("snapshot sink lock").take();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError<RaftId>> {
        self.collect_built();
        self.sm.current.as_ref().map(SnapshotFile::to_snapshot).transpose()
    }
}
