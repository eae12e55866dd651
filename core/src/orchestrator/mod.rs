//! The orchestrator: swarmkit's leader-side reconcilers as plain functions over the state, and the loop
//! that drives them.
//!
//! [`reconcile`] is the whole decision step: `(state, now_ms) → (actions, next wake-up)`. It runs the
//! stages in order over one [`working::Working`] pass, so later stages see what earlier ones decided:
//! 1. [`enforcer`] — tasks on deleted, down, drained nodes or nodes that no longer fit them;
//! 2. [`restart`] — tasks that stopped on their own, by restart policy (with fast-healing back-off);
//! 3. [`update`] — rolling updates and rollbacks;
//! 4. [`replicated`] — slots 1..N / one task per eligible node for global services;
//!    and [`jobs`] — replicated and global jobs (tasks run to completion, one iteration per update);
//! 5. [`rebalance`] — optional moves towards an even spread;
//! 6. [`release`] — held (`new`) tasks whose wait is over go `pending`;
//! 7. [`reaper`] — task history and removed services;
//! 8. the [`crate::scheduler`] — pending tasks get nodes (including tasks created in this pass).
//!
//! Nothing here reads the clock or draws randomness: `now_ms` comes in, task ids derive from the state
//! version. [`controller::run_leader_controllers`] is the loop the manager runs while it leads: it
//! wakes on store changes or the next timer, calls [`reconcile`], proposes the actions in bounded
//! batches, and traces what happened. The manager side only ever moves a task's observed state forward.

pub mod controller;
pub mod enforcer;
pub mod jobs;
pub mod reaper;
pub mod rebalance;
pub mod release;
pub mod replicated;
pub mod restart;
pub mod update;
pub mod working;

#[cfg(test)]
mod tests;

use crate::store::{Action, StoreState};

pub use controller::{run_leader_controllers, ControllerConfig, MAX_ACTIONS_PER_PROPOSAL};
pub use update::{rollback_service, update_service_spec, RollbackError};

/// What one reconcile pass decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Reconciliation {
    /// Task and service writes, in a safe order (services, task updates, task creates, task deletes).
    pub actions: Vec<Action>,
    /// When the state alone will not wake the loop but a timer matters (restart delay, update delay,
    /// monitor period, old-task timeout): run again at this time.
    pub next_wakeup_ms: Option<u64>,
}

/// Run every reconciler and the scheduler over `state` at `now_ms`.
pub fn reconcile(state: &StoreState, now_ms: u64) -> Reconciliation {
    let mut w = working::Working::new(state, now_ms);
    enforcer::run(&mut w);
    restart::run(&mut w);
    update::run(&mut w);
    replicated::run(&mut w);
    jobs::run(&mut w);
    rebalance::run(&mut w);
    release::run(&mut w);
    reaper::run(&mut w);
    schedule(&mut w);
    let next_wakeup_ms = w.next_wakeup_ms();
    let leases = crate::mesh::lease::lease_actions(state, w.all_tasks());
    let mut actions = leases;
    actions.extend(w.into_actions());
    // The CA rotation's reconciler (DESIGN §6b): end it once every node holds a new certificate.
    actions.extend(crate::ca_rotation::finish(state));
    Reconciliation { actions, next_wakeup_ms }
}

/// The scheduler over the pass's tasks; decisions go back into the pass.
fn schedule(w: &mut working::Working<'_>) {
    let decisions =
        crate::scheduler::schedule(&w.base.nodes, &w.base.services, w.all_tasks().collect::<Vec<_>>(), w.now_ms);
    let updated = crate::scheduler::apply_decisions(&decisions, w.now_ms, |id| w.task(id));
    for task in updated {
        w.put_task(task);
    }
}
