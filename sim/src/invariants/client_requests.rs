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
//!   and `t ≤ d`; after an image fault (slow starts, crashes, pulls failing), every later failure.
//!
//! With no fault at all, every failed request is a violation.

use std::collections::BTreeSet;

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
        via_out || host_down || network || container || image
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
