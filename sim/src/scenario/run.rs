//! Playing a scenario against a simulated cluster with one seed (madsim builds only).
//!
//! The supervisor is a single task on virtual time: it runs the steps in order, and whenever it
//! waits — for `after:`/`wait:`, for an expectation, or for a control request to answer — it polls
//! every [`POLL`] of virtual time: due timers fire (the end of a `partition … for T`) and the safety
//! invariants are checked — raft's on every live manager, the orchestration ones on the leader's
//! store. After the last step comes the liveness phase:
//! the network is healed (crashed hosts stay down unless a step restarted them), the `eventually:`
//! expectations must hold within their bounds, and every service must converge to its spec.
//!
//! Everything here is deterministic: ordered maps only, virtual time only, the seed decides all.
//! A run happens on a fresh thread with a fresh madsim runtime; for bit-for-bit reproduction
//! across runs use one process per run (see the `shoal-sim` binary), since tokio's `select!`
//! fairness rng is seeded per process.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use shoal_core::api::{Task, TaskState};
use shoal_core::control::{ControlRequest, ControlResult};
use shoal_core::env::runtime;
use shoal_core::orchestrator::restart::restart_delay;

use super::drive::{self, Driver};
use super::expect::{judge_lookup, Expectation, Timed};
use super::fault::{Fault, ImageFault, Side, Target};
use super::parse::{Action, ClientStep, Final, PlantedBug, Scenario, Step};
use super::Outcome;
use crate::client::{self, ClientHandle, ClientLog};
use crate::cluster::{ClusterShape, SimCluster, CLIENT_HOST};
use crate::executor::Behavior;
use crate::invariants::{ClientRequests, Observation, RaftInvariants, ServiceInvariants};
use crate::linearizability;
use crate::net::LinkPolicy;
use crate::trace::SimTrace;

/// How often, in virtual time, invariants are checked and timers fire while the supervisor waits.
pub const POLL: Duration = Duration::from_millis(100);

/// Virtual time a run may take before it is cut off as a liveness failure.
pub const MAX_VIRTUAL: Duration = Duration::from_secs(3600);

/// How often the workload of `control_workload: true` sends a call.
pub const WORKLOAD_PERIOD: Duration = Duration::from_millis(250);

/// What one run produced.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub scenario: String,
    pub file: String,
    pub seed: u64,
    pub outcome: Outcome,
    /// Virtual milliseconds from the start of the run to its end.
    pub virtual_ms: u64,
    pub trace_hash: u64,
    pub trace_events: usize,
    /// The whole trace as JSONL.
    pub trace_jsonl: String,
}

/// A supervisor action due at a virtual instant.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Timer {
    Heal,
    /// The host's disk takes writes again.
    DiskHeal(String),
}

/// Why the steps stopped early.
type Stop = Outcome;

/// Every safety checker of a run.
#[derive(Debug, Default)]
struct Checks {
    services: ServiceInvariants,
    raft: RaftInvariants,
    clients: ClientRequests,
    /// Every simulated client's requests.
    log: ClientLog,
}

struct Runner<'a> {
    scenario: &'a Scenario,
    cluster: SimCluster,
    invariants: Checks,
    /// (due at, virtual ms since start; timer), in due order.
    timers: Vec<(u64, Timer)>,
    behaviors: BTreeMap<String, Behavior>,
    /// Hosts crashed so far, the latest last.
    crashed: Vec<String>,
    /// Simulated clients running, by name.
    clients: BTreeMap<String, ClientHandle>,
    start: runtime::Instant,
    /// The host the current `run:` step is sent to (`on:`), if any.
    on: Option<String>,
}

/// Virtual milliseconds since `start`.
fn since(start: runtime::Instant) -> u64 {
    runtime::now().saturating_duration_since(start).as_millis() as u64
}

/// One poll: fire due timers, then check the raft invariants on every live manager and the
/// orchestration invariants on the leader's store.
fn poll(
    cluster: &SimCluster,
    invariants: &mut Checks,
    timers: &mut Vec<(u64, Timer)>,
    start: runtime::Instant,
) -> Result<(), Stop> {
    let now = since(start);
    while timers.first().is_some_and(|(at, _)| *at <= now) {
        let (_, timer) = timers.remove(0);
        match timer {
            Timer::Heal => {
                cluster.heal();
                invariants.clients.heal(runtime::unix_millis());
            }
            Timer::DiskHeal(host) => cluster.disk_heal(&host),
        }
    }
    let observations: Vec<Observation> = cluster
        .node_names()
        .iter()
        .filter_map(|name| {
            let node = cluster.node(name)?;
            let status = node.replica()?.status();
            Some(Observation {
                raft_id: status.raft_id,
                term: status.term,
                role: status.role,
                last_applied: status.last_applied,
                last_log_index: status.last_log_index,
                store: node.store().clone(),
            })
        })
        .collect();
    if let Err(violation) = invariants.raft.check(&observations) {
        cluster.note("invariant.violation", json!({ "violation": violation.to_string() }));
        return Err(Outcome::Safety(violation.to_string()));
    }
    let now_ms = runtime::unix_millis();
    let leader_state = cluster.store_of_leader();
    if leader_state.is_none() || !cluster.leader_can_commit() {
        // The time-bounded properties wait for a leader that can act (see `ServiceInvariants`).
        invariants.services.pause(now_ms);
    }
    if let Some(state) = leader_state {
        let cut_off = cluster.cut_off_from_leader();
        if let Err(violation) = invariants.services.check(now_ms, &state, &cut_off) {
            cluster.note("invariant.violation", json!({ "violation": violation.to_string() }));
            return Err(Outcome::Safety(violation.to_string()));
        }
        invariants.clients.observe_store(now_ms, &cluster.node_names(), &state);
    }
    if let Err(violation) = invariants.clients.check(&invariants.log) {
        cluster.note("invariant.violation", json!({ "violation": violation.to_string() }));
        return Err(Outcome::Safety(violation.to_string()));
    }
    if now > MAX_VIRTUAL.as_millis() as u64 {
        return Err(Outcome::Liveness(format!("the run exceeded {} s of virtual time", MAX_VIRTUAL.as_secs())));
    }
    Ok(())
}

/// Desired and observed running: a task the data plane may route to.
fn is_running(task: &Task) -> bool {
    task.desired_state == TaskState::Running && task.status.state == TaskState::Running
}

impl Runner<'_> {
    fn at(&self, step: &Step) -> String {
        format!("{}:{}", self.scenario.file, step.line)
    }

    fn poll(&mut self) -> Result<(), Stop> {
        poll(&self.cluster, &mut self.invariants, &mut self.timers, self.start)
    }

    /// Let `duration` of virtual time pass, polling.
    async fn sleep(&mut self, duration: Duration) -> Result<(), Stop> {
        let deadline = runtime::now() + duration;
        loop {
            self.poll()?;
            let now = runtime::now();
            if now >= deadline {
                return Ok(());
            }
            runtime::sleep(POLL.min(deadline - now)).await;
        }
    }

    /// Send a control request (to the node on host `on` only, if given), polling while it is in flight.
    async fn send(&mut self, request: ControlRequest) -> Result<ControlResult, Stop> {
        let on = self.on.clone();
        let Runner { cluster, invariants, timers, start, .. } = self;
        let mut call: std::pin::Pin<Box<dyn std::future::Future<Output = ControlResult> + '_>> = match &on {
            Some(host) => Box::pin(cluster.control_on(host, request)),
            None => Box::pin(cluster.control(request)),
        };
        loop {
            match runtime::timeout(POLL, &mut call).await {
                Ok(result) => return Ok(result),
                Err(_) => poll(cluster, invariants, timers, *start)?,
            }
        }
    }

    /// Send requests at once, polling while they are in flight; their answers in order.
    async fn send_concurrently(&mut self, requests: Vec<ControlRequest>) -> Result<Vec<ControlResult>, Stop> {
        let Runner { cluster, invariants, timers, start, .. } = self;
        let mut call = Box::pin(cluster.control_concurrently(requests));
        loop {
            match runtime::timeout(POLL, &mut call).await {
                Ok(answers) => return Ok(answers),
                Err(_) => poll(cluster, invariants, timers, *start)?,
            }
        }
    }

    /// Poll until `expectation` holds, or fail after `within`.
    async fn wait_for(&mut self, expectation: &Expectation, within: Duration, place: &str) -> Result<(), Stop> {
        let deadline = runtime::now() + within;
        loop {
            self.poll()?;
            let leader = self.cluster.leader();
            let state = self.cluster.store_of_leader();
            let verdict = match expectation {
                Expectation::PortClosed { addr } | Expectation::PortAnswers { addr, .. } => {
                    let answer = self.probe(addr).await?;
                    expectation.check_probe(answer)
                }
                Expectation::NameResolves { name, node, network }
                | Expectation::NameUnknown { name, node, network } => {
                    let answer = match self.resolver_of(network, node) {
                        Ok(resolver) => self.lookup(node, &resolver, name).await?,
                        Err(err) => Err(err),
                    };
                    judge_lookup(expectation, name, answer)
                }
                _ => expectation
                    .check_client(state.as_ref(), &self.invariants.log)
                    .unwrap_or_else(|| expectation.check(state.as_ref(), leader.as_deref())),
            };
            match verdict {
                Ok(()) => {
                    self.cluster
                        .note("step.expect", json!({"at": place, "expect": expectation.to_string(), "ok": true}));
                    return Ok(());
                }
                Err(seen) if runtime::now() >= deadline => {
                    self.cluster
                        .note("step.expect", json!({"at": place, "expect": expectation.to_string(), "seen": seen}));
                    return Err(Outcome::Liveness(format!(
                        "{place}: expected `{expectation}` within {} s; saw: {seen}",
                        within.as_secs_f64()
                    )));
                }
                Err(_) => runtime::sleep(POLL).await,
            }
        }
    }

    /// Resolve a target to a host name.
    fn host(&self, target: &Target) -> Result<String, String> {
        match target {
            Target::Host(name) if self.cluster.node_names().contains(name) => Ok(name.clone()),
            Target::Host(name) => Err(format!("no host {name:?} (hosts: {})", self.cluster.node_names().join(", "))),
            Target::Leader => self.cluster.leader().ok_or_else(|| "no manager is leader".to_string()),
            Target::Crashed => self.crashed.last().cloned().ok_or_else(|| "no host has crashed".to_string()),
            Target::Follower => {
                let leader = self.cluster.leader();
                self.cluster
                    .node_names()
                    .into_iter()
                    .find(|name| {
                        Some(name) != leader.as_ref() && self.cluster.node(name).is_some_and(|n| n.is_manager())
                    })
                    .ok_or_else(|| "no manager besides the leader is up".to_string())
            }
        }
    }

    /// The tasks the leader's store shows running on `host` (their containers die if it crashes),
    /// each with the delay its restart policy would hold its replacement for.
    fn killed_by_crash(&self, host: &str) -> Vec<(String, u64)> {
        let Some(state) = self.cluster.store_of_leader() else { return Vec::new() };
        let Some(node) = state.nodes.values().find(|n| n.hostname() == host) else { return Vec::new() };
        state
            .tasks
            .values()
            .filter(|t| t.node_id == node.id && is_running(t))
            .map(|t| {
                let policy =
                    state.services.get(&t.service_id).map(|s| s.spec.task.restart_policy.clone()).unwrap_or_default();
                (t.id.clone(), restart_delay(t, &policy).0)
            })
            .collect()
    }

    fn hosts(&self, targets: &[Target]) -> Result<Vec<String>, String> {
        targets.iter().map(|t| self.host(t)).collect()
    }

    async fn fault(&mut self, fault: &Fault, place: &str) -> Result<(), String> {
        match fault {
            Fault::Crash(target) => {
                let host = self.host(target)?;
                self.invariants.clients.host_crash(&host, runtime::unix_millis(), self.killed_by_crash(&host));
                self.cluster.crash(&host);
                self.crashed.retain(|h| h != &host);
                self.crashed.push(host);
            }
            Fault::Restart(target) => {
                let host = self.host(target)?;
                self.invariants.clients.host_restart(&host, runtime::unix_millis());
                self.cluster.restart(&host);
                self.crashed.retain(|h| h != &host);
            }
            Fault::Leave { target, force } => {
                let host = self.host(target)?;
                self.invariants.clients.host_fault(&host, runtime::unix_millis());
                self.cluster.leave(&host, *force).await.map_err(|err| format!("{host} could not leave: {err}"))?;
            }
            Fault::Partition { side, other, one_way, duration } => {
                let side = self.hosts(side)?;
                let other = match other {
                    Side::Rest => self.cluster.node_names().into_iter().filter(|h| !side.contains(h)).collect(),
                    Side::Hosts(targets) => self.hosts(targets)?,
                };
                self.invariants.clients.network_fault(runtime::unix_millis());
                if *one_way {
                    self.cluster.cut_one_way(&side, &other);
                } else {
                    self.cluster.partition(&side, &other);
                }
                if let Some(duration) = duration {
                    let due = since(self.start) + duration.as_millis() as u64;
                    let at = self.timers.partition_point(|(t, _)| *t <= due);
                    self.timers.insert(at, (due, Timer::Heal));
                }
            }
            Fault::Heal => {
                self.cluster.heal();
                self.invariants.clients.heal(runtime::unix_millis());
            }
            Fault::DiskFailWrites { target, duration } => {
                let host = self.host(target)?;
                self.cluster.disk_fail_writes(&host);
                if let Some(duration) = duration {
                    let due = since(self.start) + duration.as_millis() as u64;
                    let at = self.timers.partition_point(|(t, _)| *t <= due);
                    self.timers.insert(at, (due, Timer::DiskHeal(host)));
                }
            }
            Fault::DiskHeal(target) => {
                let host = self.host(target)?;
                self.cluster.disk_heal(&host);
            }
            Fault::SecondDaemon(_) => return Err("a second daemon is started by the step itself".into()),
            Fault::Link { a, b, delay_min, delay_max, loss } => {
                let (a, b) = (self.host(a)?, self.host(b)?);
                self.invariants.clients.network_fault(runtime::unix_millis());
                self.cluster.set_link(&a, &b, LinkPolicy { delay_min: *delay_min, delay_max: *delay_max, loss: *loss });
            }
            Fault::ContainerRemove { service, slot } => {
                let state = self.cluster.store_of_leader().ok_or("no leader to ask where the task runs")?;
                let (task, host) = drive::fault_target(&state, service, *slot, &[TaskState::Running])?;
                let executor = self
                    .cluster
                    .executor(&host)
                    .ok_or_else(|| format!("task {service}.{slot} is on unknown host {host:?}"))?;
                self.invariants.clients.container_fault(runtime::unix_millis());
                if !executor.remove_behind_back(&task.status.container_id) {
                    return Err(format!("container {} of {service}.{slot} is not on {host}", task.status.container_id));
                }
                self.cluster.note(
                    "fault.container_remove",
                    json!({"at": place, "task": task.name(), "host": host, "container": task.status.container_id}),
                );
            }
            Fault::ContainerUnhealthy { service, slot } => {
                let state = self.cluster.store_of_leader().ok_or("no leader to ask where the task runs")?;
                let (task, host) =
                    drive::fault_target(&state, service, *slot, &[TaskState::Starting, TaskState::Running])?;
                let executor = self
                    .cluster
                    .executor(&host)
                    .ok_or_else(|| format!("task {service}.{slot} is on unknown host {host:?}"))?;
                self.invariants.clients.container_fault(runtime::unix_millis());
                if !executor.fail_health(&task.status.container_id) {
                    return Err(format!(
                        "container {} of {service}.{slot} on {host} does not run with a health check",
                        task.status.container_id
                    ));
                }
                self.cluster.note(
                    "fault.container_unhealthy",
                    json!({"at": place, "task": task.name(), "host": host, "container": task.status.container_id}),
                );
            }
            Fault::Image { image, fault } => {
                let behavior = self.behaviors.entry(image.clone()).or_default();
                match fault {
                    ImageFault::SlowStart(d) => behavior.start_delay = *d,
                    ImageFault::CrashAfter { after, exit_code } => {
                        behavior.exit_after = Some(*after);
                        behavior.exit_code = *exit_code;
                    }
                    ImageFault::PullFails => behavior.pull_fails = true,
                    ImageFault::Exposes(ports) => behavior.exposes = Some(ports.clone()),
                    ImageFault::Listens(ports) => behavior.listens = ports.clone(),
                    ImageFault::AnswersAfter(d) => behavior.answer_delay = *d,
                    ImageFault::ExitsOnSigterm => behavior.exits_on_sigterm = true,
                    ImageFault::Unhealthy => behavior.health_fails = true,
                }
                if fault.is_fault() {
                    self.invariants.clients.image_fault(runtime::unix_millis());
                }
                let behavior = behavior.clone();
                for executor in self.cluster.executors().values() {
                    executor.set_behavior(image, behavior.clone());
                }
                self.cluster
                    .note("fault.image", json!({"at": place, "image": image, "behavior": format!("{behavior:?}")}));
            }
        }
        Ok(())
    }

    async fn step(&mut self, step: &Step) -> Result<(), Stop> {
        let place = self.at(step);
        if !step.after.is_zero() {
            self.sleep(step.after).await?;
        }
        match &step.action {
            Action::Run { command, on, .. } => {
                self.on = match on {
                    Some(target) => Some(self.host(target).map_err(|e| Outcome::Liveness(format!("{place}: {e}")))?),
                    None => None,
                };
                let scenario = self.scenario;
                let result = drive::run_command(self, &scenario.file, command).await;
                self.on = None;
                let result = result?;
                drive::conclude(self, &place, step, &result)
            }
            // Two daemons on one data dir is a safety violation, not a step that failed.
            Action::Fault(Fault::SecondDaemon(target)) => {
                self.cluster
                    .note("step.fault", json!({"at": place, "fault": "second daemon", "target": format!("{target}")}));
                let host = self.host(target).map_err(|e| Outcome::Liveness(format!("{place}: {e}")))?;
                // "Second" means beside a running one: a host that restarts first finishes its start.
                if !self.cluster.wait_up(&host, Duration::from_secs(30)).await {
                    return Err(Outcome::Liveness(format!("{place}: {host} runs no daemon to start a second beside")));
                }
                match self.cluster.start_second_daemon(&host).await {
                    Ok(_refusal) => Ok(()),
                    Err(violation) => Err(Outcome::Safety(format!("{place}: {violation}"))),
                }
            }
            Action::Fault(fault) => {
                self.cluster.note("step.fault", json!({"at": place, "fault": format!("{fault:?}")}));
                match self.fault(fault, &place).await {
                    Ok(()) => Ok(()),
                    Err(err) if step.may_fail => {
                        self.cluster.note("step.fault_failed", json!({"at": place, "error": err, "may_fail": true}));
                        Ok(())
                    }
                    Err(err) => Err(Outcome::Liveness(format!("{place}: fault failed: {err}"))),
                }
            }
            Action::Wait(duration) => self.sleep(*duration).await,
            Action::Client(client) => {
                self.cluster.note("step.client", json!({"at": place, "client": client.to_string()}));
                self.client(client).map_err(|err| Outcome::Liveness(format!("{place}: {err}")))
            }
            Action::Expect(Timed { expectation, within }) => self.wait_for(expectation, *within, &place).await,
        }
    }

    async fn liveness(&mut self) -> Result<(), Stop> {
        self.timers.clear();
        self.cluster.note("phase.liveness", json!({}));
        self.cluster.heal();
        self.invariants.clients.heal(runtime::unix_millis());
        self.cluster.heal_disks();
        let finals: Vec<Timed> = self
            .scenario
            .expect
            .iter()
            .filter_map(|f| match f {
                Final::Eventually(timed) => Some(timed.clone()),
                Final::Always(_) => None,
            })
            .collect();
        let place = format!("{} (eventually)", self.scenario.file);
        for timed in &finals {
            self.wait_for(&timed.expectation, timed.within, &place).await?;
        }
        if self.scenario.converge {
            let within = self.scenario.converge_within;
            let deadline = runtime::now() + within;
            loop {
                self.poll()?;
                let verdict = match self.cluster.store_of_leader() {
                    Some(state) => super::converge::converged(&state),
                    None => Err("no leader".to_string()),
                };
                match verdict {
                    Ok(()) => break,
                    Err(seen) if runtime::now() >= deadline => {
                        return Err(Outcome::Liveness(format!(
                            "{}: services did not converge to their specs within {} s after the faults healed: {seen}",
                            self.scenario.file,
                            within.as_secs_f64()
                        )))
                    }
                    Err(_) => runtime::sleep(POLL).await,
                }
            }
        }
        for (_, client) in std::mem::take(&mut self.clients) {
            client.stop();
        }
        self.cluster.note("phase.done", json!({}));
        Ok(())
    }

    /// Start or stop a simulated client.
    fn client(&mut self, step: &ClientStep) -> Result<(), String> {
        match step {
            ClientStep::Start(spec) => {
                if self.clients.contains_key(&spec.name) {
                    return Err(format!("client {} is already running", spec.name));
                }
                if spec.from != CLIENT_HOST && !self.cluster.node_names().contains(&spec.from) {
                    return Err(format!(
                        "client {} cannot run on {:?}: no such host (hosts: {CLIENT_HOST}, {})",
                        spec.name,
                        spec.from,
                        self.cluster.node_names().join(", ")
                    ));
                }
                let resolver = match &spec.network {
                    Some(network) => Some(self.resolver_of(network, &spec.from)?),
                    None => None,
                };
                let tracer =
                    shoal_core::trace::Tracer::new(spec.from.clone(), Arc::new(self.cluster.trace_log().clone()));
                let (handle, run) = client::start(
                    spec.clone(),
                    resolver,
                    self.cluster.mesh().clone(),
                    self.invariants.log.clone(),
                    tracer,
                );
                self.cluster.spawn_on(&spec.from, run);
                self.invariants.clients.client_target(&spec.name, &spec.target);
                self.clients.insert(spec.name.clone(), handle);
                Ok(())
            }
            ClientStep::Stop(name) => {
                let client = self.clients.remove(name).ok_or_else(|| {
                    format!("no client {name} is running (running: {:?})", self.clients.keys().collect::<Vec<_>>())
                })?;
                client.stop();
                Ok(())
            }
        }
    }

    /// The mesh resolver of `network` on host `host` (`gateway:53` of the host's lease), from the
    /// leader's store.
    fn resolver_of(&self, network: &str, host: &str) -> Result<String, String> {
        let state = self.cluster.store_of_leader().ok_or("no leader to ask for the network's lease")?;
        let net = state
            .networks
            .values()
            .find(|n| n.name == network || n.id == network)
            .ok_or_else(|| format!("network {network} does not exist"))?;
        let node = state
            .nodes
            .values()
            .find(|n| n.hostname() == host)
            .ok_or_else(|| format!("node {host} is not in the swarm"))?;
        let lease = net
            .leases
            .get(&node.id)
            .ok_or_else(|| format!("network {network} has no lease on {host} (no task on it runs there)"))?;
        let base: std::net::Ipv4Addr = lease
            .split('/')
            .next()
            .and_then(|ip| ip.parse().ok())
            .ok_or_else(|| format!("lease {lease:?} of {network} on {host} is not a CIDR"))?;
        Ok(format!("{}:53", std::net::Ipv4Addr::from(u32::from(base) + 1)))
    }

    /// Resolve `name` as a container on `host` would, polling while the query is in flight.
    async fn lookup(
        &mut self,
        host: &str,
        resolver: &str,
        name: &str,
    ) -> Result<Result<Vec<std::net::Ipv4Addr>, String>, Stop> {
        let (mesh, owner) = (self.cluster.mesh().clone(), crate::mesh_net::Owner::container(host, "probe"));
        let (resolver, name) = (resolver.to_string(), name.to_string());
        let mut call = Box::pin(async move { client::resolve(&mesh, &owner, &resolver, &name, 1).await });
        loop {
            match runtime::timeout(POLL, &mut call).await {
                Ok(answer) => return Ok(answer),
                Err(_) => self.poll()?,
            }
        }
    }

    /// One request to `addr` from the client host, polling while it is in flight: the answer, or why
    /// there was none.
    async fn probe(&mut self, addr: &str) -> Result<Result<String, String>, Stop> {
        let mesh = self.cluster.mesh().clone();
        let mut call: std::pin::Pin<Box<dyn std::future::Future<Output = Result<String, String>> + Send>> =
            match addr.strip_suffix("/udp") {
                Some(addr) => Box::pin(client::probe_udp(mesh, CLIENT_HOST.to_string(), addr.to_string())),
                None => Box::pin(client::probe(mesh, CLIENT_HOST.to_string(), addr.to_string())),
            };
        loop {
            match runtime::timeout(POLL, &mut call).await {
                Ok(answer) => return Ok(answer),
                Err(_) => self.poll()?,
            }
        }
    }
}

/// The simulator's cluster under the runner's shared `run:` logic ([`super::drive`]): requests go
/// to the cluster (to one node's for `on:` steps), polling the invariants while they are in flight.
impl Driver for Runner<'_> {
    type Stop = Stop;

    async fn control(&mut self, request: ControlRequest) -> Result<ControlResult, Stop> {
        self.send(request).await
    }

    async fn control_concurrently(&mut self, requests: Vec<ControlRequest>) -> Result<Vec<ControlResult>, Stop> {
        self.send_concurrently(requests).await
    }

    fn note(&mut self, kind: &str, fields: serde_json::Value) {
        self.cluster.note(kind, fields);
    }
}

/// Play `scenario` in the current madsim runtime. `trace` receives the cluster's trace as soon as
/// the cluster exists, so a panicking run still leaves its trace behind.
pub async fn play(scenario: &Scenario, trace: Arc<Mutex<Option<SimTrace>>>) -> (Outcome, u64) {
    let start = runtime::now();
    let start_unix_ms = runtime::unix_millis();
    let shape = ClusterShape { managers: scenario.cluster.managers, workers: scenario.cluster.workers };
    let mut config = crate::cluster::settings_for_sim();
    config.mesh.drain = scenario.mesh_drain;
    config.plant_stale_leader_reads = scenario.planted_bug == Some(PlantedBug::StaleLeaderReads);
    let cluster = match SimCluster::start_with(shape, config).await {
        Ok(cluster) => cluster,
        Err(err) => {
            return (Outcome::Crash(format!("{}: the cluster did not start: {err}", scenario.file)), since(start))
        }
    };
    *trace.lock().expect("trace slot") = Some(cluster.trace_log().clone());
    cluster.note("scenario.start", json!({"name": scenario.name, "file": scenario.file}));
    let mut runner = Runner {
        scenario,
        cluster,
        invariants: Checks::default(),
        timers: Vec::new(),
        behaviors: BTreeMap::new(),
        crashed: Vec::new(),
        clients: BTreeMap::new(),
        start,
        on: None,
    };
    runner.invariants.clients.run_started(start_unix_ms);
    let workload = scenario.control_workload.then(|| runner.cluster.start_workload(WORKLOAD_PERIOD));
    let mut outcome = Outcome::Pass;
    for step in &scenario.steps {
        if let Err(stop) = runner.step(step).await {
            outcome = stop;
            break;
        }
    }
    if outcome.is_pass() {
        if let Err(stop) = runner.liveness().await {
            outcome = stop;
        }
    }
    drop(workload);
    if !matches!(outcome, Outcome::Crash(_) | Outcome::Safety(_)) {
        if let Err(violation) = check_linearizable(&runner.cluster, start_unix_ms) {
            outcome = violation;
        }
    }
    runner.cluster.note("scenario.end", json!({"result": outcome.label()}));
    (outcome, since(start))
}

/// The `linearizable` invariant, on the whole run's control calls (a search over the history, so
/// once, at the end, rather than on every poll).
fn check_linearizable(cluster: &SimCluster, start_unix_ms: u64) -> Result<(), Stop> {
    let calls = cluster.control_history().calls();
    let answered = calls.iter().filter(|c| c.returned.is_some()).count();
    match linearizability::check(&calls, start_unix_ms, linearizability::BUDGET_PER_OBJECT) {
        Ok(summary) => {
            cluster.note(
                "linearizability.checked",
                json!({"calls": calls.len(), "answered": answered, "objects": summary.objects,
                    "operations": summary.operations, "inconclusive": summary.inconclusive}),
            );
            Ok(())
        }
        Err(violation) => {
            cluster.note("invariant.violation", json!({ "violation": violation.to_string() }));
            Err(Outcome::Safety(violation.to_string()))
        }
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panic with a non-string payload".to_string())
}

/// Run `scenario` with `seed` in a fresh madsim runtime on a fresh thread (one simulation per
/// thread). A panic inside the simulation becomes [`Outcome::Crash`].
pub fn run_seed(scenario: &Scenario, seed: u64) -> RunReport {
    let owned = scenario.clone();
    let slot: Arc<Mutex<Option<SimTrace>>> = Arc::new(Mutex::new(None));
    let thread_slot = slot.clone();
    let joined = std::thread::Builder::new()
        .name(format!("sim-seed-{seed}"))
        .spawn(move || {
            let runtime = madsim::runtime::Runtime::with_seed_and_config(seed, madsim::Config::default());
            std::panic::catch_unwind(AssertUnwindSafe(|| runtime.block_on(play(&owned, thread_slot))))
                .map_err(|payload| panic_message(payload.as_ref()))
        })
        .map(|handle| handle.join());
    let (outcome, virtual_ms) = match joined {
        Ok(Ok(Ok((outcome, virtual_ms)))) => (outcome, virtual_ms),
        Ok(Ok(Err(message))) => (Outcome::Crash(format!("panic in the simulation: {message}")), 0),
        Ok(Err(payload)) => {
            (Outcome::Crash(format!("panic in the simulation: {}", panic_message(payload.as_ref()))), 0)
        }
        Err(err) => (Outcome::Crash(format!("could not start the simulation thread: {err}")), 0),
    };
    let trace = slot.lock().expect("trace slot").take().unwrap_or_default();
    let trace_events = trace.len();
    RunReport {
        scenario: scenario.name.clone(),
        file: scenario.file.clone(),
        seed,
        outcome,
        virtual_ms,
        trace_hash: trace.hash(),
        trace_events,
        trace_jsonl: trace.to_jsonl(),
    }
}
