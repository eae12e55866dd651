//! The replicated state machine: typed tables with versions, all-or-nothing transactions, and a
//! change feed the controllers watch ("the store is the bus", as in swarmkit).
//!
//! [`StoreState::apply`] is a pure function of the proposal: it never reads the clock (the leader
//! stamps time into the [`Proposal`]) and it fails a whole proposal on the first conflict, leaving the
//! state untouched. Writes reach it through a [`Proposer`]: raft in a cluster, [`LocalProposer`] in
//! unit tests.

mod proposer;
mod state;

pub use proposer::{propose_with_retry, LocalProposer, ProposeError, Proposer, LOST_QUORUM_MESSAGE};
pub use state::{Action, Change, ChangeKind, Kind, Object, Proposal, StoreError, StoreState};

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use tokio::sync::{broadcast, watch};

/// How many events the change feed holds for a slow subscriber before it reports `Lagged`.
const FEED_CAPACITY: usize = 4096;

/// A batch of committed changes, or a reset after a snapshot replaced the whole state.
#[derive(Debug, Clone)]
pub enum Event {
    Committed { version: u64, changes: Arc<Vec<Change>> },
    Reset { version: u64 },
}

/// A node's copy of the state, shared by every component on the node.
#[derive(Clone)]
pub struct Store {
    state: Arc<RwLock<StoreState>>,
    /// The change feed, made by the first [`Store::subscribe`]: a broadcast channel allocates all its
    /// slots up front (~200 KB for [`FEED_CAPACITY`]), and most nodes (every worker) never watch it.
    feed: Arc<OnceLock<broadcast::Sender<Event>>>,
    version: watch::Sender<u64>,
    /// Per-node watches of the node's tasks (see [`Store::watch_node_tasks`]).
    node_watches: Arc<Mutex<BTreeMap<String, watch::Sender<u64>>>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("version", &*self.version.borrow()).finish()
    }
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

impl Store {
    pub fn new() -> Self {
        let (version, _) = watch::channel(0);
        Store {
            state: Arc::new(RwLock::new(StoreState::default())),
            feed: Arc::default(),
            version,
            node_watches: Arc::default(),
        }
    }

    /// Read the state under a short lock. Never hold what `f` borrows across an await.
    pub fn view<R>(&self, f: impl FnOnce(&StoreState) -> R) -> R {
        let state = self.state.read().expect("store lock poisoned");
        f(&state)
    }

    /// A full copy of the state (for snapshots and for controllers that reconcile everything).
    pub fn snapshot(&self) -> StoreState {
        self.view(|state| state.clone())
    }

    pub fn version(&self) -> u64 {
        *self.version.borrow()
    }

    /// Apply a committed proposal and publish its changes. A rejected proposal changes nothing.
    pub fn apply(&self, proposal: &Proposal) -> Result<u64, StoreError> {
        let watched = !self.node_watches.lock().expect("node watches lock").is_empty();
        let (version, changes, touched) = {
            let mut state = self.state.write().expect("store lock poisoned");
            let touched = if watched { nodes_touched(&state, proposal) } else { Vec::new() };
            let changes = state.apply(proposal)?;
            (state.version, changes, touched)
        };
        self.notify_nodes(touched.iter().map(String::as_str), version);
        self.publish(Event::Committed { version, changes: Arc::new(changes) }, version);
        Ok(version)
    }

    /// Watch the tasks of `node_id`: the value changes whenever a task that is, or was, on that node
    /// is created, updated or deleted, or the whole state is replaced. Lets each worker's assignment
    /// long poll sleep through the changes of other nodes' tasks instead of waking on every commit.
    pub fn watch_node_tasks(&self, node_id: &str) -> watch::Receiver<u64> {
        // One watch per node ever asked about, kept: as many as the cluster's nodes.
        let mut watches = self.node_watches.lock().expect("node watches lock");
        if let Some(tx) = watches.get(node_id) {
            return tx.subscribe();
        }
        watches.entry(node_id.to_string()).or_insert_with(|| watch::channel(self.version()).0).subscribe()
    }

    fn notify_nodes<'a>(&self, nodes: impl Iterator<Item = &'a str>, version: u64) {
        let watches = self.node_watches.lock().expect("node watches lock");
        for node in nodes {
            if let Some(tx) = watches.get(node) {
                tx.send_replace(version);
            }
        }
    }

    /// Replace the whole state (snapshot install, restart from disk).
    pub fn replace(&self, new_state: StoreState) {
        let version = new_state.version;
        *self.state.write().expect("store lock poisoned") = new_state;
        for tx in self.node_watches.lock().expect("node watches lock").values() {
            tx.send_replace(version);
        }
        self.publish(Event::Reset { version }, version);
    }

    fn publish(&self, event: Event, version: u64) {
        // No feed yet, or no subscribers, is fine: nobody is watching.
        if let Some(feed) = self.feed.get() {
            let _ = feed.send(event);
        }
        self.version.send_replace(version);
    }

    /// Watch committed changes from now on. A receiver that lags gets `Lagged` and must re-read the state.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.feed.get_or_init(|| broadcast::channel(FEED_CAPACITY).0).subscribe()
    }

    /// Watch the store version (cheap wake-ups for controllers that reconcile from a snapshot).
    pub fn watch_version(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// Wait until the store has applied at least `version`.
    pub async fn wait_for_version(&self, version: u64) {
        let mut rx = self.version.subscribe();
        // The sender lives as long as `self`, so this only ends when the version is reached.
        let _ = rx.wait_for(|v| *v >= version).await;
    }
}

/// The nodes whose tasks `proposal` would change: the node of every task it creates, updates or
/// deletes, before and after. Read before applying, while the previous node ids are still there.
fn nodes_touched(state: &StoreState, proposal: &Proposal) -> Vec<String> {
    let mut nodes = std::collections::BTreeSet::new();
    let before = |id: &str| state.tasks.get(id).map(|t| t.node_id.clone());
    for action in &proposal.actions {
        match action {
            Action::Create(Object::Task(t)) => {
                nodes.insert(t.node_id.clone());
            }
            Action::Update(Object::Task(t)) => {
                nodes.insert(t.node_id.clone());
                nodes.extend(before(&t.id));
            }
            Action::Delete { kind: Kind::Task, id } => nodes.extend(before(id)),
            _ => {}
        }
    }
    nodes.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create_network(store: &Store, id: &str) -> u64 {
        let network = crate::api::Network {
            id: id.into(),
            meta: Default::default(),
            name: id.into(),
            driver: "overlay".into(),
            subnet: String::new(),
            attachable: false,
            ingress: false,
            labels: Default::default(),
            leases: Default::default(),
        };
        store.apply(&Proposal { actions: vec![Action::Create(Object::Network(network))], stamp_ms: 1 }).unwrap()
    }

    #[test]
    fn the_change_feed_is_made_by_its_first_subscriber_and_carries_what_follows() {
        let store = Store::new();
        create_network(&store, "before");
        assert!(store.feed.get().is_none(), "no subscriber yet, so no channel");
        let mut first = store.subscribe();
        let clone = store.clone();
        let mut second = clone.subscribe();
        let version = create_network(&store, "after");
        for rx in [&mut first, &mut second] {
            match rx.try_recv() {
                Ok(Event::Committed { version: v, changes }) => {
                    assert_eq!(v, version);
                    assert_eq!(changes.len(), 1);
                    assert_eq!(changes[0].object.id(), "after");
                }
                other => panic!("expected the commit after subscribing, got {other:?}"),
            }
            assert!(rx.try_recv().is_err(), "nothing from before the subscription");
        }
        store.replace(StoreState::default());
        assert!(matches!(first.try_recv(), Ok(Event::Reset { .. })));
    }
}
