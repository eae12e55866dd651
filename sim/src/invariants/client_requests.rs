//! Client requests fail only where a fault explains it.
//!
//! Source: issue 13 ("with no fault injected, no request fails during a rolling update, drain,
//! scale-down or `service rm` of another service; with a node crash, only requests in flight through
//! or to the crashed node fail, and requests started after the crash is detected succeed"), and
//! DESIGN §8 (drain before any task stops; a refused connect is retried elsewhere before the client
//! sees a byte).
//!
//! Read from the run's [`ClientLog`] and the faults the runner reports. A failed request (sent at
//! `s`, its failure known at `d`, dialled via host `v`) is explained only by:
//! - **the host it dialled being out**: `v` crashed, restarted or left at or before `d`, and `s` is
//!   before the host was seen ready again (plus [`SLACK_MS`]) — a client aimed at a dead node cannot
//!   be served, whatever the mesh does;
//! - **a host going down**: some host crashed, restarted or left at `t` with `s ≤ t ≤ d` (in flight
//!   then), or with `t < s` and `s` no later than [`SLACK_MS`] after the host was *detected* down — the
//!   leader's store marked it `down` (its endpoints leave the table at that version), or it was seen
//!   ready again;
//! - **the tasks a crash killed**: until the leader's store shows none of them running (it learns of
//!   their end from the restarted node's agent, or marks the node down), then for their restart
//!   policy's delay (Swarm holds the replacement of a task that stopped for `--restart-delay`, 5 s by
//!   default, counted from when the leader sees it stop; a node marked down has its tasks replaced at
//!   once) plus [`SLACK_MS`] — a host restarted before it was detected down has its tasks reported
//!   failed only once its agent reaches a leader, which may be long after it is back;
//! - **a network fault**: a partition or link fault active at some time in `[s, d]`, or healed less
//!   than [`SLACK_MS`] before `s`;
//! - **a container fault**: a container removed behind the agent's back at `t` with `s ≤ t + SLACK_MS`
//!   and `t ≤ d`; after an image fault (slow starts, crashes, pulls failing), every later failure;
//! - **a drain that left the client's service nothing to serve with**: the leader's store shows no
//!   ready task of the service (desired and observed running, on a node not down) while one of its
//!   tasks is being drained off its node (or stopped by a drain within [`SLACK_MS`]). A task's replacement waits until the old task of its slot
//!   has stopped, as Swarm's does (swarmkit's restart supervisor, `defaultOldTaskTimeout`), so
//!   draining every node that runs a service, at once or one after the other, leaves it without a
//!   task until the replacements are up — the operator's choice, not a fault of the mesh. Excused
//!   from then until [`SLACK_MS`] after the service has a ready task again. (A drain that leaves the
//!   service a task elsewhere must lose no request.)
//!
//! With no fault at all, every failed request is a violation.

use std::collections::{BTreeMap, BTreeSet};

use shoal_core::api::{Availability, NodeState, TaskState};
use shoal_core::store::StoreState;

use super::ServiceViolation;
use crate::client::{ClientLog, RequestRecord};

/// Time allowed after a detection (or a heal, or a container fault) for the change to reach every
/// node's table.
pub const SLACK_MS: u64 = 2_000;

/// How long after a restart the host counts as out if the store never saw it down (a daemon
/// restart faster than node-down detection).
const MIN_OUTAGE_MS: u64 = 5_000;

/// A host that crashed, restarted or left.
#[derive(Debug, Clone)]
struct Outage {
    host: String,
    at_ms: u64,
    /// When it was restarted (a host that crashed or left and was not restarted is not back).
    restarted_ms: Option<u64>,
    /// When the leader's store first showed it down (or gone).
    detected_ms: Option<u64>,
    /// When it was seen ready again after its restart.
    back_ms: Option<u64>,
    /// Tasks the leader's store showed running on the host when it crashed, with the delay their
    /// restart policy holds a replacement for (empty for a leave or a daemon restart: their
    /// containers do not die).
    killed: Vec<(String, u64)>,
    /// When the store first showed none of `killed` running, and the delay that then holds their
    /// replacements (none if the node was down by then).
    learned: Option<(u64, u64)>,
}

/// A service left with no ready task by a drain.
#[derive(Debug, Clone)]
struct DrainGap {
    service: String,
    published: Vec<u16>,
    start_ms: u64,
    end_ms: Option<u64>,
}

impl DrainGap {
    /// Does a client aimed at `target` reach this service?
    fn serves(&self, target: &str) -> bool {
        let Some((host, port)) = target.rsplit_once(':') else { return false };
        host == self.service || port.parse::<u16>().is_ok_and(|port| self.published.contains(&port))
    }
}

/// How late a poll may notice a change of the store (it polls every 100 ms).
const POLL_LAG_MS: u64 = 200;

impl Outage {
    fn new(host: &str, at_ms: u64, restarted_ms: Option<u64>, killed: Vec<(String, u64)>) -> Self {
        Outage { host: host.to_string(), at_ms, restarted_ms, detected_ms: None, back_ms: None, killed, learned: None }
    }
}

#[derive(Debug, Default)]
pub struct ClientRequests {
    outages: Vec<Outage>,
    /// Network faults: (start, heal).
    network: Vec<(u64, Option<u64>)>,
    container_faults: Vec<u64>,
    image_fault_ms: Option<u64>,
    /// Services a drain left with no ready task, with when (see the module doc).
    drain_gaps: Vec<DrainGap>,
    /// Each client's target (`host:port`, or `name:port` for a client on a network).
    targets: BTreeMap<String, String>,
    /// Records of the log already checked.
    checked: usize,
    /// When the run began (ms since the Unix epoch), so violations say when in the run they were.
    run_start_ms: u64,
}

impl ClientRequests {
    /// The run began at `unix_ms` (violations are reported relative to it).
    pub fn run_started(&mut self, unix_ms: u64) {
        self.run_start_ms = unix_ms;
    }

    /// `host` left (or crashed, without knowing what ran there) at `at_ms`.
    pub fn host_fault(&mut self, host: &str, at_ms: u64) {
        self.host_crash(host, at_ms, Vec::new());
    }

    /// `host` crashed at `at_ms`, killing the containers of `killed` (task id, restart delay).
    pub fn host_crash(&mut self, host: &str, at_ms: u64, killed: Vec<(String, u64)>) {
        self.outages.push(Outage::new(host, at_ms, None, killed));
    }

    /// `host` was restarted at `at_ms`: the end of its outage, or (a running daemon restarted) an
    /// outage of its own.
    pub fn host_restart(&mut self, host: &str, at_ms: u64) {
        let open = self.outages.iter_mut().rev().find(|o| o.host == host && o.restarted_ms.is_none());
        match open {
            Some(outage) => outage.restarted_ms = Some(at_ms),
            None => self.outages.push(Outage::new(host, at_ms, Some(at_ms), Vec::new())),
        }
    }

    /// Client `name` sends its requests to `target`.
    pub fn client_target(&mut self, name: &str, target: &str) {
        self.targets.insert(name.to_string(), target.to_string());
    }

    /// What the leader's store shows of the services at `now_ms`: which a drain left with no
    /// ready task, and which have one again.
    pub fn observe_services(&mut self, now_ms: u64, state: &StoreState) {
        let node_up = |id: &str| state.nodes.get(id).is_some_and(|n| n.status.state != NodeState::Down);
        let drained = |id: &str| state.nodes.get(id).is_some_and(|n| n.spec.availability == Availability::Drain);
        let mut live: BTreeSet<&str> = BTreeSet::new();
        let mut draining: BTreeSet<&str> = BTreeSet::new();
        for task in state.tasks.values() {
            let ready = task.status.endpoint.as_ref().is_some_and(|e| e.ready);
            if task.desired_state == TaskState::Running
                && task.status.state == TaskState::Running
                && ready
                && node_up(&task.node_id)
            {
                live.insert(task.service_id.as_str());
            }
            // Being drained, or stopped by the drain since the last poll or two (tasks stop fast).
            let stopping = task.status.state <= TaskState::Running || task.status.timestamp_ms + SLACK_MS >= now_ms;
            if task.desired_state > TaskState::Running && stopping && drained(&task.node_id) {
                draining.insert(task.service_id.as_str());
            }
        }
        for service in state.services.values() {
            let open = self.drain_gaps.iter_mut().find(|g| g.service == service.spec.name && g.end_ms.is_none());
            match open {
                Some(gap) if live.contains(service.id.as_str()) => gap.end_ms = Some(now_ms),
                Some(_) => {}
                None if !live.contains(service.id.as_str()) && draining.contains(service.id.as_str()) => {
                    self.drain_gaps.push(DrainGap {
                        service: service.spec.name.clone(),
                        published: service.endpoint_ports.iter().map(|p| p.published_port).collect(),
                        start_ms: now_ms,
                        end_ms: None,
                    })
                }
                None => {}
            }
        }
    }

    /// A partition or link fault began.
    pub fn network_fault(&mut self, at_ms: u64) {
        self.network.push((at_ms, None));
    }

    /// Every network fault healed.
    pub fn heal(&mut self, at_ms: u64) {
        for (_, end) in self.network.iter_mut().filter(|(_, end)| end.is_none()) {
            *end = Some(at_ms);
        }
    }

    pub fn container_fault(&mut self, at_ms: u64) {
        self.container_faults.push(at_ms);
    }

    pub fn image_fault(&mut self, at_ms: u64) {
        self.image_fault_ms.get_or_insert(at_ms);
    }

    /// What the leader's store shows at `now_ms`: hosts down (or gone), hosts ready, and the tasks
    /// desired and observed running.
    pub fn observe(
        &mut self,
        now_ms: u64,
        down: &BTreeSet<String>,
        ready: &BTreeSet<String>,
        running: &BTreeSet<String>,
    ) {
        for outage in &mut self.outages {
            if outage.detected_ms.is_none() && down.contains(&outage.host) {
                outage.detected_ms = Some(now_ms);
            }
            let killed_gone = !outage.killed.is_empty() && outage.killed.iter().all(|(t, _)| !running.contains(t));
            if outage.learned.is_none() && killed_gone {
                let delay = match down.contains(&outage.host) {
                    true => 0,
                    false => outage.killed.iter().map(|(_, delay)| *delay).max().unwrap_or(0),
                };
                outage.learned = Some((now_ms, delay));
            }
            // Back: ready after its restart, once the store saw it down (or, if it never did, a
            // while after the restart).
            let Some(restarted) = outage.restarted_ms else { continue };
            let settled = outage.detected_ms.is_some() || now_ms >= restarted + MIN_OUTAGE_MS;
            if outage.back_ms.is_none() && settled && ready.contains(&outage.host) {
                outage.back_ms = Some(now_ms);
            }
        }
    }

    /// [`ClientRequests::observe`] the nodes of the leader's `state` among `hosts` (a host with
    /// no node, or one marked down, is down) and its running tasks, then
    /// [`ClientRequests::observe_services`].
    pub fn observe_store(&mut self, now_ms: u64, hosts: &[String], state: &StoreState) {
        let (mut down, mut ready) = (BTreeSet::new(), BTreeSet::new());
        for host in hosts {
            match state.nodes.values().find(|n| n.hostname() == host).map(|n| n.status.state) {
                None | Some(NodeState::Down) => down.insert(host.clone()),
                Some(NodeState::Ready) => ready.insert(host.clone()),
                Some(_) => false,
            };
        }
        // Desired and observed running: a task the data plane may route to.
        let running: BTreeSet<String> = state
            .tasks
            .values()
            .filter(|t| t.desired_state == TaskState::Running && t.status.state == TaskState::Running)
            .map(|t| t.id.clone())
            .collect();
        self.observe(now_ms, &down, &ready, &running);
        self.observe_services(now_ms, state);
    }

    fn explained(&self, r: &RequestRecord) -> bool {
        let (s, d) = (r.sent_ms, r.done_ms);
        let via_out =
            self.outages.iter().any(|o| o.host == r.via && o.at_ms <= d && o.back_ms.is_none_or(|b| s <= b + SLACK_MS));
        let host_down = self.outages.iter().any(|o| {
            let detected = o.detected_ms.or(o.back_ms);
            let replacing =
                !o.killed.is_empty() && o.learned.is_none_or(|(learned, delay)| s <= learned + delay + SLACK_MS);
            o.at_ms <= d && (s <= o.at_ms || detected.is_none_or(|t| s <= t + SLACK_MS) || replacing)
        });
        let network = self.network.iter().any(|(start, end)| *start <= d && end.is_none_or(|e| s <= e + SLACK_MS));
        let container = self.container_faults.iter().any(|t| *t <= d && s <= t + SLACK_MS);
        let image = self.image_fault_ms.is_some_and(|t| t <= d);
        let drained = self.targets.get(&r.client).is_some_and(|target| {
            self.drain_gaps.iter().any(|g| {
                g.serves(target) && g.start_ms <= d + POLL_LAG_MS && g.end_ms.is_none_or(|e| s <= e + SLACK_MS)
            })
        });
        via_out || host_down || network || container || image || drained
    }

    /// Check the requests finished since the last call.
    pub fn check(&mut self, log: &ClientLog) -> Result<(), ServiceViolation> {
        let fresh = log.since(self.checked);
        self.checked += fresh.len();
        for record in fresh.iter().filter(|r| !r.ok()) {
            if !self.explained(record) {
                return Err(ServiceViolation::UnexplainedFailedRequest {
                    client: record.client.clone(),
                    seq: record.seq,
                    sent_ms: record.sent_ms.saturating_sub(self.run_start_ms),
                    done_ms: record.done_ms.saturating_sub(self.run_start_ms),
                    via: record.via.clone(),
                    error: record.error.clone().unwrap_or_default(),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seq: u64, sent_ms: u64, done_ms: u64, via: &str, ok: bool) -> RequestRecord {
        RequestRecord {
            client: "load".into(),
            seq,
            sent_ms,
            done_ms,
            via: via.into(),
            answer: ok.then(|| "web.1.t1".into()),
            error: (!ok).then(|| "connection reset".into()),
        }
    }

    fn hosts(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn without_faults_any_failure_is_a_violation() {
        let log = ClientLog::default();
        let mut check = ClientRequests::default();
        log.push(record(1, 0, 10, "manager-1", true));
        assert!(check.check(&log).is_ok());
        log.push(record(2, 100, 110, "manager-1", false));
        let err = check.check(&log).unwrap_err().to_string();
        assert!(err.contains("load request 2"), "{err}");
    }

    #[test]
    fn a_crash_excuses_requests_in_flight_and_until_detection_only() {
        let log = ClientLog::default();
        let mut check = ClientRequests::default();
        check.host_fault("worker-1", 1_000);
        // In flight at the crash.
        log.push(record(1, 900, 1_200, "manager-1", false));
        // Started after the crash, before it was detected.
        log.push(record(2, 1_500, 1_600, "manager-1", false));
        assert!(check.check(&log).is_ok());
        check.observe(4_000, &hosts(&["worker-1"]), &hosts(&["manager-1"]), &hosts(&[]));
        // Within the slack after detection.
        log.push(record(3, 5_000, 5_100, "manager-1", false));
        assert!(check.check(&log).is_ok());
        // Well after detection: must succeed.
        log.push(record(4, 7_000, 7_100, "manager-1", false));
        assert!(check.check(&log).is_err());
    }

    #[test]
    fn the_tasks_a_crash_killed_excuse_until_replaced_after_their_restart_delay() {
        let log = ClientLog::default();
        let mut check = ClientRequests::default();
        let tasks = |ids: &[&str]| hosts(ids);
        check.host_crash("worker-1", 1_000, vec![("t1".into(), 5_000), ("t2".into(), 5_000)]);
        check.host_restart("worker-1", 1_000);
        // Back at once, never seen down; the store still shows t1 running (no leader heard of it).
        check.observe(7_000, &hosts(&[]), &hosts(&["worker-1"]), &tasks(&["t1"]));
        log.push(record(1, 12_000, 12_001, "manager-1", false));
        assert!(check.check(&log).is_ok(), "the store has not learned that t1 died");
        // Its agent reports both failed at 13 s: replacements wait the 5 s restart delay.
        check.observe(13_000, &hosts(&[]), &hosts(&["worker-1"]), &tasks(&["t9"]));
        log.push(record(2, 19_500, 19_501, "manager-1", false));
        assert!(check.check(&log).is_ok(), "within the restart delay and the slack");
        log.push(record(3, 20_500, 20_501, "manager-1", false));
        assert!(check.check(&log).is_err());

        // A node marked down has its tasks replaced at once: no restart delay.
        let log = ClientLog::default();
        let mut check = ClientRequests::default();
        check.host_crash("worker-1", 1_000, vec![("t1".into(), 5_000)]);
        check.observe(4_000, &hosts(&["worker-1"]), &hosts(&[]), &tasks(&[]));
        log.push(record(1, 7_000, 7_001, "manager-1", false));
        assert!(check.check(&log).is_err());
    }

    #[test]
    fn a_drain_that_leaves_a_service_no_task_excuses_its_clients_until_one_is_ready() {
        use crate::invariants::replicas_bound::tests::{service, store, task};
        use shoal_core::api::{Availability, PortConfig, PublishMode, ServiceMode, TaskEndpoint};
        let mut front = service("front", ServiceMode::Replicated { replicas: 1 });
        front.endpoint_ports = vec![PortConfig {
            protocol: "tcp".into(),
            target_port: 80,
            published_port: 8080,
            publish_mode: PublishMode::Ingress,
        }];
        let ready = |mut t: shoal_core::api::Task| {
            t.status.endpoint = Some(TaskEndpoint { ready: true, ..Default::default() });
            t
        };
        let log = ClientLog::default();
        let mut check = ClientRequests::default();
        check.client_target("load", "manager-1:8080");
        check.client_target("other", "manager-1:9090");
        let mut state = store(vec![front], vec![ready(task("t1", "front", "w1", TaskState::Running))]);
        check.observe_services(1_000, &state);
        // w1 drained: its task is to stop, and front has no other.
        state.nodes.get_mut("w1").unwrap().spec.availability = Availability::Drain;
        state.tasks.get_mut("t1").unwrap().desired_state = TaskState::Shutdown;
        check.observe_services(2_000, &state);
        log.push(record(1, 2_050, 2_060, "manager-1", false));
        assert!(check.check(&log).is_ok());
        log.push(RequestRecord { client: "other".into(), ..record(2, 2_050, 2_060, "manager-1", false) });
        assert!(check.check(&log).is_err(), "another service's client is not excused");
        // The replacement is ready on w2 at 3 s: excused until 2 s after.
        state.tasks.get_mut("t1").unwrap().status.state = TaskState::Shutdown;
        state.tasks.insert("t2".into(), ready(task("t2", "front", "w2", TaskState::Running)));
        check.observe_services(3_000, &state);
        log.push(record(3, 4_900, 4_901, "manager-1", false));
        assert!(check.check(&log).is_ok());
        log.push(record(4, 5_100, 5_101, "manager-1", false));
        assert!(check.check(&log).is_err());
    }

    #[test]
    fn a_client_aimed_at_a_dead_host_is_excused_until_it_is_back() {
        let log = ClientLog::default();
        let mut check = ClientRequests::default();
        check.host_fault("worker-1", 1_000);
        // The store still says ready before it notices: that is not "back".
        check.observe(3_000, &hosts(&[]), &hosts(&["worker-1"]), &hosts(&[]));
        check.observe(7_000, &hosts(&[]), &hosts(&["worker-1"]), &hosts(&[]));
        check.observe(8_000, &hosts(&["worker-1"]), &hosts(&[]), &hosts(&[]));
        log.push(record(1, 20_000, 20_001, "worker-1", false));
        assert!(check.check(&log).is_ok());
        check.host_restart("worker-1", 25_000);
        check.observe(30_000, &hosts(&[]), &hosts(&["worker-1"]), &hosts(&[]));
        log.push(record(2, 31_000, 31_001, "worker-1", false));
        assert!(check.check(&log).is_ok(), "within the slack after it is back");
        log.push(record(3, 40_000, 40_001, "worker-1", false));
        assert!(check.check(&log).is_err());
    }

    #[test]
    fn a_daemon_restart_never_seen_down_ends_a_while_after_the_restart() {
        let log = ClientLog::default();
        let mut check = ClientRequests::default();
        check.host_restart("worker-1", 1_000);
        check.observe(2_000, &hosts(&[]), &hosts(&["worker-1"]), &hosts(&[]));
        log.push(record(1, 3_000, 3_001, "manager-1", false));
        assert!(check.check(&log).is_ok());
        check.observe(6_000, &hosts(&[]), &hosts(&["worker-1"]), &hosts(&[]));
        log.push(record(2, 9_000, 9_001, "manager-1", false));
        assert!(check.check(&log).is_err());
    }

    #[test]
    fn network_faults_excuse_until_the_heal_and_slack() {
        let log = ClientLog::default();
        let mut check = ClientRequests::default();
        check.network_fault(1_000);
        log.push(record(1, 5_000, 5_100, "manager-1", false));
        assert!(check.check(&log).is_ok());
        check.heal(6_000);
        log.push(record(2, 7_000, 7_100, "manager-1", false));
        assert!(check.check(&log).is_ok());
        log.push(record(3, 9_000, 9_100, "manager-1", false));
        assert!(check.check(&log).is_err());
    }
}
