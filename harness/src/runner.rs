//! Playing a scenario file against a real cluster, as the simulator's runner plays it against a
//! simulated one: the same parsed steps, the same control requests (through the daemons' sockets),
//! the same expectations and orchestration invariants (on the leader's store, read through the
//! control API every [`POLL`]), election safety from the daemons' own `events.jsonl`, the same
//! liveness phase (heal, `eventually:`, every service converged) and the same outcomes and exit
//! codes. Time is real: `after:`, `wait:` and `within` budgets hold as written.
//!
//! Faults happen for real ([`crate::cluster`], [`crate::netfault`]); what the real world cannot do
//! here (torn disk writes, link delays without netem, slow-starting images) is reported as skipped,
//! never faked.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use shoal_core::api::TaskState;
use shoal_core::control::{ControlError, ControlRequest, ControlResponse, ControlResult, ServiceView};
use shoal_core::stack::NAMESPACE_LABEL;
use shoal_core::store::StoreState;
use shoal_core::trace::TraceEvent;
use shoal_sim::invariants::ServiceInvariants;
use shoal_sim::scenario::cli::{Command, StackCommand};
use shoal_sim::scenario::expect::{Expectation, Timed};
use shoal_sim::scenario::fault::{Fault, ImageFault, Side, Target};
use shoal_sim::scenario::parse::{Action, Final, Step};
use shoal_sim::scenario::stack::load_compose;
use shoal_sim::scenario::{Outcome, Scenario};

use crate::cleanup::Ledger;
use crate::cluster::{ClusterOptions, Executor, RealCluster};
use crate::{images, netfault};

/// How often invariants are checked and timers fire while the runner waits.
pub const POLL: Duration = Duration::from_millis(500);

/// What one real run produced.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RealReport {
    pub scenario: String,
    pub file: String,
    pub run: u32,
    pub run_id: String,
    pub outcome: Outcome,
    pub wall_ms: u64,
    /// Faults not done, with why.
    pub skipped: Vec<String>,
    /// The merged trace (every daemon's events.jsonl and the harness's notes), as JSONL.
    #[serde(skip)]
    pub trace_jsonl: String,
    pub trace_events: usize,
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Election safety from the daemons' traces: at most one leader per term.
#[derive(Debug, Default)]
struct Elections {
    /// Bytes of each node's events.jsonl read so far.
    read: BTreeMap<String, u64>,
    leaders: BTreeMap<u64, String>,
}

impl Elections {
    fn check(&mut self, cluster: &RealCluster) -> Result<(), String> {
        use std::io::{Read, Seek, SeekFrom};
        for node in &cluster.nodes {
            let Ok(mut file) = std::fs::File::open(node.events_file()) else { continue };
            let offset = self.read.entry(node.name.clone()).or_default();
            if file.seek(SeekFrom::Start(*offset)).is_err() {
                continue;
            }
            let mut text = String::new();
            if file.read_to_string(&mut text).is_err() {
                continue;
            }
            // Only whole lines; a line being written is read next time.
            let whole = text.rfind('\n').map(|i| i + 1).unwrap_or(0);
            *offset += whole as u64;
            for line in text[..whole].lines() {
                let Ok(event) = serde_json::from_str::<TraceEvent>(line) else { continue };
                if event.kind == "raft.state" && event.fields.get("role").and_then(|r| r.as_str()) == Some("Leader") {
                    let term = event.fields.get("term").and_then(|t| t.as_u64()).unwrap_or(0);
                    let leader = self.leaders.entry(term).or_insert_with(|| event.node.clone());
                    if *leader != event.node {
                        return Err(format!(
                            "election safety: nodes {leader} and {} are both leader of term {term} (their events.jsonl)",
                            event.node
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

struct Runner<'a> {
    scenario: &'a Scenario,
    cluster: RealCluster,
    services: ServiceInvariants,
    elections: Elections,
    /// Due heals (`partition … for T`).
    heal_at: Vec<Instant>,
    crashed: Vec<String>,
    notes: Vec<TraceEvent>,
    skipped: Vec<String>,
    comment: String,
    /// Image tags this run made (name → image id), for image faults.
    tags: BTreeMap<String, String>,
    /// The last leader state read by a poll.
    last_state: Option<(String, StoreState)>,
}

fn short(result: &ControlResult) -> serde_json::Value {
    match result {
        Ok(response) => {
            json!({"ok": format!("{response:?}").split(['(', ' ', '{']).next().unwrap_or("").to_lowercase()})
        }
        Err(err) => json!({"error": err.to_string()}),
    }
}

impl Runner<'_> {
    fn note(&mut self, kind: &str, fields: serde_json::Value) {
        self.notes.push(TraceEvent { time_ms: unix_ms(), node: "supervisor".into(), kind: kind.into(), fields });
    }

    fn heal(&mut self) -> Result<(), String> {
        self.heal_at.clear();
        netfault::remove_rules(&self.comment)?;
        self.note("fault.heal", json!({}));
        Ok(())
    }

    /// One poll: due heals, then the invariants.
    async fn poll(&mut self) -> Result<(), Outcome> {
        let now = Instant::now();
        if self.heal_at.iter().any(|at| *at <= now) {
            self.heal_at.retain(|at| *at > now);
            if let Err(err) = netfault::remove_rules(&self.comment) {
                return Err(Outcome::Crash(format!("could not heal: {err}")));
            }
            self.note("fault.heal", json!({}));
        }
        if let Err(violation) = self.elections.check(&self.cluster) {
            self.note("invariant.violation", json!({"violation": violation}));
            return Err(Outcome::Safety(violation));
        }
        match self.cluster.leader_state().await {
            Ok((leader, state)) => {
                if let Err(violation) = self.services.check(unix_ms(), &state) {
                    self.note("invariant.violation", json!({"violation": violation.to_string()}));
                    return Err(Outcome::Safety(violation.to_string()));
                }
                self.last_state = Some((leader, state));
            }
            Err(_) => {
                // No leader answered a linearizable read: none can commit, so the time-bounded
                // properties wait (see `ServiceInvariants`).
                self.services.pause(unix_ms());
                self.last_state = None;
            }
        }
        Ok(())
    }

    async fn sleep(&mut self, duration: Duration) -> Result<(), Outcome> {
        let deadline = Instant::now() + duration;
        loop {
            self.poll().await?;
            let now = Instant::now();
            if now >= deadline {
                return Ok(());
            }
            tokio::time::sleep(POLL.min(deadline - now)).await;
        }
    }

    async fn wait_for(&mut self, expectation: &Expectation, within: Duration, place: &str) -> Result<(), Outcome> {
        let deadline = Instant::now() + within;
        loop {
            self.poll().await?;
            let verdict = match expectation {
                Expectation::ClientOk { .. }
                | Expectation::ClientFailedAtMost { .. }
                | Expectation::ClientReachesEvery { .. }
                | Expectation::ClientAnsweredOnlyBy { .. }
                | Expectation::PortClosed { .. }
                | Expectation::PortAnswers { .. }
                | Expectation::NameResolves { .. }
                | Expectation::NameUnknown { .. } => {
                    let why = "the simulator's clients and probes (its containers' request protocol) are not run against real clusters yet";
                    self.note("step.skipped", json!({"at": place, "expect": expectation.to_string(), "why": why}));
                    self.skipped.push(format!("{place}: expect `{expectation}`: skipped ({why})"));
                    return Ok(());
                }
                _ => {
                    let (leader, state) = match &self.last_state {
                        Some((leader, state)) => (Some(leader.as_str()), Some(state)),
                        None => (None, None),
                    };
                    expectation.check(state, leader)
                }
            };
            match verdict {
                Ok(()) => {
                    self.note("step.expect", json!({"at": place, "expect": expectation.to_string(), "ok": true}));
                    return Ok(());
                }
                Err(seen) if Instant::now() >= deadline => {
                    self.note("step.expect", json!({"at": place, "expect": expectation.to_string(), "seen": seen}));
                    return Err(Outcome::Liveness(format!(
                        "{place}: expected `{expectation}` within {} s; saw: {seen}",
                        within.as_secs_f64()
                    )));
                }
                Err(_) => tokio::time::sleep(POLL).await,
            }
        }
    }

    fn leader(&self) -> Option<String> {
        self.last_state.as_ref().map(|(leader, _)| leader.clone())
    }

    async fn host(&mut self, target: &Target) -> Result<String, String> {
        match target {
            Target::Host(name) if self.cluster.index(name).is_some() => Ok(name.clone()),
            Target::Host(name) => Err(format!("no host {name:?} (hosts: {})", self.cluster.names().join(", "))),
            Target::Crashed => self.crashed.last().cloned().ok_or_else(|| "no host has crashed".to_string()),
            Target::Leader | Target::Follower => {
                // Ask now: the leader may have changed since the last poll.
                let _ = self.poll().await;
                let leader = self.leader();
                if let Target::Leader = target {
                    return leader.ok_or_else(|| "no manager is leader".to_string());
                }
                self.cluster
                    .nodes
                    .iter()
                    .find(|n| n.manager && n.is_up() && Some(&n.name) != leader.as_ref())
                    .map(|n| n.name.clone())
                    .ok_or_else(|| "no manager besides the leader is up".to_string())
            }
        }
    }

    async fn hosts(&mut self, targets: &[Target]) -> Result<Vec<String>, String> {
        let mut hosts = Vec::new();
        for t in targets {
            hosts.push(self.host(t).await?);
        }
        Ok(hosts)
    }

    fn ip(&self, host: &str) -> String {
        self.cluster.index(host).map(|i| self.cluster.nodes[i].ip.clone()).unwrap_or_default()
    }

    async fn run_command(&mut self, command: &Command) -> ControlResult {
        match command {
            Command::Request(request) => self.cluster.control(request.clone()).await,
            Command::Sequence(requests) => {
                let mut last = Ok(ControlResponse::Done);
                for request in requests {
                    last = self.cluster.control(request.clone()).await;
                    if last.is_err() {
                        break;
                    }
                }
                last
            }
            Command::ServiceUpdate { service, changes } => {
                let current =
                    match self.cluster.control(ControlRequest::ServiceInspect { service: service.clone() }).await {
                        Ok(ControlResponse::Service(view)) => view.service,
                        Ok(other) => return Err(ControlError::Internal(format!("service inspect answered {other:?}"))),
                        Err(err) => return Err(err),
                    };
                let mut spec = current.spec.clone();
                changes.apply(&mut spec);
                self.cluster
                    .control(ControlRequest::ServiceUpdate {
                        service: current.id.clone(),
                        version: current.meta.version,
                        spec,
                    })
                    .await
            }
            Command::Stack(stack) => self.stack(stack).await,
            Command::Concurrent(requests) => {
                // All at once (`node demote m2 & node promote m2`); the first failure, if any.
                let mut calls: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = ControlResult> + '_>>> =
                    requests.iter().map(|r| Box::pin(self.cluster.control(r.clone())) as _).collect();
                let mut answers: Vec<Option<ControlResult>> = vec![None; calls.len()];
                std::future::poll_fn(|cx| {
                    for (call, answer) in calls.iter_mut().zip(answers.iter_mut()) {
                        if answer.is_none() {
                            if let std::task::Poll::Ready(result) = call.as_mut().poll(cx) {
                                *answer = Some(result);
                            }
                        }
                    }
                    if answers.iter().all(Option::is_some) {
                        std::task::Poll::Ready(())
                    } else {
                        std::task::Poll::Pending
                    }
                })
                .await;
                let answers: Vec<ControlResult> = answers.into_iter().flatten().collect();
                let failed = answers.iter().find(|a| a.is_err()).cloned();
                failed.unwrap_or_else(|| answers.into_iter().last().unwrap_or(Ok(ControlResponse::Done)))
            }
        }
    }

    /// `stack …`: what docker/cli does client-side, decided by [`shoal_core::stack`] (as the
    /// simulator's runner and the `shoal` CLI do).
    async fn stack(&mut self, command: &StackCommand) -> ControlResult {
        let services = match self.cluster.control(ControlRequest::ServiceList).await? {
            ControlResponse::Services(views) => views,
            other => return Err(ControlError::Internal(format!("service ls answered {other:?}"))),
        };
        let in_stack = |name: &str| -> Vec<ServiceView> {
            services.iter().filter(|v| shoal_core::stack::in_stack(&v.service.spec.labels, name)).cloned().collect()
        };
        let networks = || async {
            match self.cluster.control(ControlRequest::NetworkList).await? {
                ControlResponse::Networks(networks) => Ok(networks),
                other => Err(ControlError::Internal(format!("network ls answered {other:?}"))),
            }
        };
        match command {
            StackCommand::Ls => Ok(ControlResponse::Services(
                services.iter().filter(|v| v.service.spec.labels.contains_key(NAMESPACE_LABEL)).cloned().collect(),
            )),
            StackCommand::Services(name) => Ok(ControlResponse::Services(in_stack(name))),
            StackCommand::Ps(name) => {
                let members = in_stack(name);
                if members.is_empty() {
                    return Err(ControlError::NotFound(format!("nothing found in stack: {name}")));
                }
                let mut tasks = Vec::new();
                for view in members {
                    match self
                        .cluster
                        .control(ControlRequest::TaskList { service: Some(view.service.id), node: None })
                        .await?
                    {
                        ControlResponse::Tasks(more) => tasks.extend(more),
                        other => return Err(ControlError::Internal(format!("task ls answered {other:?}"))),
                    }
                }
                Ok(ControlResponse::Tasks(tasks))
            }
            StackCommand::Deploy { stack, file, prune } => {
                let plan = load_compose(&self.scenario.file, file, stack).map_err(ControlError::InvalidArgument)?;
                let networks = networks().await?;
                let current: Vec<_> = services.iter().map(|v| v.service.clone()).collect();
                let steps = shoal_core::stack::deploy_steps(&plan, &networks, &current, *prune)
                    .map_err(|err| ControlError::FailedPrecondition(err.to_string()))?;
                for step in steps {
                    let result = self.cluster.control(step.request()).await;
                    self.note("stack.step", json!({"step": step.message(), "ok": result.is_ok()}));
                    result?;
                }
                Ok(ControlResponse::Done)
            }
            StackCommand::Rm(stacks) => {
                let networks = networks().await?;
                let current: Vec<_> = services.iter().map(|v| v.service.clone()).collect();
                let mut first_error = None;
                for name in stacks {
                    for step in shoal_core::stack::remove_steps(name, &networks, &current) {
                        let result = self.cluster.control(step.request()).await;
                        self.note("stack.step", json!({"step": step.message(), "ok": result.is_ok()}));
                        if let Err(err) = result {
                            first_error.get_or_insert(err);
                        }
                    }
                }
                first_error.map_or(Ok(ControlResponse::Done), Err)
            }
        }
    }

    fn skip(&mut self, place: &str, what: &str, why: &str) {
        self.note("fault.skipped", json!({"at": place, "fault": what, "why": why}));
        self.skipped.push(format!("{place}: {what}: skipped ({why})"));
    }

    /// `docker kill` of every container of node `host` (a host crash kills its containers, as the
    /// simulator's crash does), or with the process executor SIGKILL of its tasks' process groups;
    /// returns how many.
    fn kill_containers(&self, host: &str) -> usize {
        let Some(i) = self.cluster.index(host) else { return 0 };
        if self.cluster.options.executor == Executor::Process {
            let registry = self.cluster.nodes[i].dir.join("data").join("processes.json");
            return crate::cleanup::kill_process_groups(&registry);
        }
        let filter = format!("label={}={}", shoal_core::env::executor::LABEL_NODE_ID, self.cluster.nodes[i].node_id);
        let ids = Process::new("docker")
            .args(["ps", "-q", "--filter", &filter])
            .stderr(Stdio::null())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).split_whitespace().map(str::to_string).collect::<Vec<_>>())
            .unwrap_or_default();
        if !ids.is_empty() {
            let _ = Process::new("docker").arg("kill").args(&ids).stdout(Stdio::null()).stderr(Stdio::null()).status();
        }
        ids.len()
    }

    async fn fault(&mut self, fault: &Fault, place: &str) -> Result<(), String> {
        match fault {
            Fault::Crash(target) => {
                let host = self.host(target).await?;
                let i = self.cluster.index(&host).ok_or("unknown host")?;
                let pid = self.cluster.kill(i).ok_or_else(|| format!("{host} is not running"))?;
                let containers = self.kill_containers(&host);
                self.note("fault.crash", json!({"host": host, "pid": pid, "containers_killed": containers}));
                self.crashed.retain(|h| h != &host);
                self.crashed.push(host);
            }
            Fault::Restart(target) => {
                let host = self.host(target).await?;
                let i = self.cluster.index(&host).ok_or("unknown host")?;
                if self.cluster.nodes[i].is_up() {
                    // A restart of a running host: it goes down first, as in the simulator.
                    self.cluster.kill(i);
                    self.kill_containers(&host);
                }
                self.cluster.spawn(i).await.map_err(|e| e.to_string())?;
                self.note("fault.restart", json!({"host": host}));
                self.crashed.retain(|h| h != &host);
            }
            Fault::Leave { target, force } => {
                let host = self.host(target).await?;
                let i = self.cluster.index(&host).ok_or("unknown host")?;
                let result = self.cluster.local(i, shoal::local_api::LocalRequest::SwarmLeave { force: *force }).await;
                self.note("fault.leave", json!({"host": host, "force": force, "ok": result.is_ok()}));
                result.map_err(|err| format!("{host} could not leave: {err}"))?;
            }
            Fault::Partition { side, other, one_way, duration } => {
                let side = self.hosts(side).await?;
                let other: Vec<String> = match other {
                    Side::Rest => self.cluster.names().into_iter().filter(|h| !side.contains(h)).collect(),
                    Side::Hosts(targets) => self.hosts(targets).await?,
                };
                self.cluster.ledger.lock().expect("ledger").rule_comment = Some(self.comment.clone());
                for a in &side {
                    for b in &other {
                        netfault::drop_rule(&self.comment, &self.ip(a), &self.ip(b), None)?;
                        if !one_way {
                            netfault::drop_rule(&self.comment, &self.ip(b), &self.ip(a), None)?;
                        }
                    }
                }
                if *one_way {
                    self.note("fault.cut_one_way", json!({"from": side, "to": other}));
                } else {
                    self.note("fault.partition", json!({"a": side, "b": other}));
                }
                if let Some(duration) = duration {
                    self.heal_at.push(Instant::now() + *duration);
                }
            }
            Fault::Heal => self.heal()?,
            Fault::Link { a, b, delay_min, delay_max, loss } => {
                let (a, b) = (self.host(a).await?, self.host(b).await?);
                if !delay_max.is_zero() {
                    let why = if netfault::have_netem() {
                        "link delays need a tc netem qdisc per address pair, which this harness does not set up yet"
                    } else {
                        "no netem on this kernel"
                    };
                    self.skip(place, &format!("delay {delay_min:?}..{delay_max:?} on {a}<->{b}"), why);
                }
                if *loss > 0.0 {
                    self.cluster.ledger.lock().expect("ledger").rule_comment = Some(self.comment.clone());
                    let (ip_a, ip_b) = (self.ip(&a), self.ip(&b));
                    netfault::drop_rule(&self.comment, &ip_a, &ip_b, Some(*loss))?;
                    netfault::drop_rule(&self.comment, &ip_b, &ip_a, Some(*loss))?;
                    self.note("fault.link", json!({"a": a, "b": b, "loss": loss}));
                }
            }
            Fault::ContainerRemove { service, slot } => {
                let _ = self.poll().await;
                let (_, state) = self.last_state.as_ref().ok_or("no leader to ask where the task runs")?;
                let task = state
                    .tasks
                    .values()
                    .find(|t| {
                        t.service_name == *service
                            && t.slot == *slot
                            && t.desired_state == TaskState::Running
                            && t.status.state == TaskState::Running
                    })
                    .ok_or_else(|| format!("no running task {service}.{slot}"))?
                    .clone();
                let host = state.nodes.get(&task.node_id).map(|n| n.hostname().to_string()).unwrap_or_default();
                if self.cluster.options.executor != Executor::Docker {
                    self.skip(
                        place,
                        "container remove",
                        "only the Docker executor's containers can be removed behind the agent's back here",
                    );
                    return Ok(());
                }
                let output = Process::new("docker")
                    .args(["rm", "-f", &task.status.container_id])
                    .output()
                    .map_err(|e| format!("cannot run docker rm: {e}"))?;
                if !output.status.success() {
                    return Err(format!(
                        "docker rm -f {} ({service}.{slot} on {host}): {}",
                        task.status.container_id,
                        String::from_utf8_lossy(&output.stderr).trim()
                    ));
                }
                self.note(
                    "fault.container_remove",
                    json!({"at": place, "task": task.name(), "host": host, "container": task.status.container_id}),
                );
            }
            Fault::Image { image, fault } => match fault {
                ImageFault::PullFails => match self.tags.get(image).cloned() {
                    // With `--pull never`, an image the engine lacks is a failed pull.
                    Some(id) => {
                        images::untag(image, &id)?;
                        self.cluster.ledger.lock().expect("ledger").image_tags.retain(|(n, _)| n != image);
                        self.note("fault.image", json!({"at": place, "image": image, "behavior": "pull fails (image removed from the engine)"}));
                    }
                    None => self.skip(
                        place,
                        &format!("image {image} pull fails"),
                        "the image is the engine's own, not one this run tagged",
                    ),
                },
                ImageFault::SlowStart(_) => self.skip(
                    place,
                    &format!("image {image} slow start"),
                    "the Docker engine cannot delay a container's start",
                ),
                ImageFault::CrashAfter { after, exit_code } => match self.tags.get(image).cloned() {
                    // The name now points to a stand-in that exits with the code after the delay.
                    Some(_) => {
                        let id = images::crashing(*after, *exit_code)?;
                        images::tag(&id, image)?;
                        self.tags.insert(image.clone(), id.clone());
                        let mut ledger = self.cluster.ledger.lock().expect("ledger");
                        ledger.image_tags.retain(|(n, _)| n != image);
                        ledger.image_tags.push((image.clone(), id));
                        drop(ledger);
                        self.note(
                            "fault.image",
                            json!({"at": place, "image": image, "behavior": format!("exits {exit_code} after {after:?}")}),
                        );
                    }
                    None => self.skip(
                        place,
                        &format!("image {image} crash after"),
                        "the image is the engine's own, not one this run tagged",
                    ),
                },
                other => self.skip(
                    place,
                    &format!("image {image} {other:?}"),
                    "a trait of the simulator's containers (its request protocol), not of the stand-in image",
                ),
            },
            // Faults the scenario language gains later (disk faults: torn writes, lost unsynced
            // bytes) are skipped until done for real here — a SIGKILLed daemon's writes survive in
            // the page cache, so they cannot happen by themselves.
            #[allow(unreachable_patterns)]
            other => self.skip(place, &format!("{other:?}"), "not done on real clusters (yet)"),
        }
        Ok(())
    }

    async fn step(&mut self, step: &Step) -> Result<(), Outcome> {
        let place = format!("{}:{}", self.scenario.file, step.line);
        if !step.after.is_zero() {
            self.sleep(step.after).await?;
        }
        match &step.action {
            Action::Run { on: Some(target), text, .. } => {
                let why = "steps sent to one node (`on:`) are not played on real clusters yet";
                self.note("step.skipped", json!({"at": place, "run": text, "on": target.to_string(), "why": why}));
                self.skipped.push(format!("{place}: run `{text}` on {target}: skipped ({why})"));
                Ok(())
            }
            Action::Run { command, text, expect_error, expect_output, on: None } => {
                let result = self.run_command(command).await;
                let mut note = short(&result);
                note["at"] = json!(place);
                note["run"] = json!(text);
                self.note("step.run", note);
                match (&result, expect_error) {
                    (Err(_), None) if step.may_fail => return Ok(()),
                    (Ok(_), Some(want)) => {
                        return Err(Outcome::Liveness(format!(
                            "{place}: `{text}` should fail with {want:?}, but it succeeded"
                        )))
                    }
                    (Err(err), Some(want)) if !err.to_string().contains(want.as_str()) => {
                        return Err(Outcome::Liveness(format!(
                            "{place}: `{text}` should fail with {want:?}, but failed with: {err}"
                        )))
                    }
                    (Err(err), None) => return Err(Outcome::Liveness(format!("{place}: `{text}` failed: {err}"))),
                    _ => {}
                }
                if let (Ok(response), Some(want)) = (&result, expect_output) {
                    let output = serde_json::to_string(response).unwrap_or_default();
                    if !output.contains(want.as_str()) {
                        return Err(Outcome::Liveness(format!(
                            "{place}: output of `{text}` should contain {want:?}; it was {}",
                            output.chars().take(400).collect::<String>()
                        )));
                    }
                }
                Ok(())
            }
            Action::Fault(fault) => {
                self.note("step.fault", json!({"at": place, "fault": format!("{fault:?}")}));
                match self.fault(fault, &place).await {
                    Ok(()) => Ok(()),
                    Err(err) if step.may_fail => {
                        self.note("step.fault_failed", json!({"at": place, "error": err, "may_fail": true}));
                        Ok(())
                    }
                    Err(err) => Err(Outcome::Liveness(format!("{place}: fault failed: {err}"))),
                }
            }
            Action::Wait(duration) => self.sleep(*duration).await,
            Action::Client(client) => {
                let why = "simulated clients are not run against real clusters yet";
                self.note("step.skipped", json!({"at": place, "client": client.to_string(), "why": why}));
                self.skipped.push(format!("{place}: client {client}: skipped ({why})"));
                Ok(())
            }
            Action::Expect(Timed { expectation, within }) => self.wait_for(expectation, *within, &place).await,
            #[allow(unreachable_patterns)]
            other => {
                let why = "a kind of step the real harness does not play yet";
                self.note("step.skipped", json!({"at": place, "step": format!("{other:?}"), "why": why}));
                self.skipped.push(format!("{place}: {other:?}: skipped ({why})"));
                Ok(())
            }
        }
    }

    async fn liveness(&mut self) -> Result<(), Outcome> {
        self.note("phase.liveness", json!({}));
        self.heal().map_err(|e| Outcome::Crash(format!("could not heal: {e}")))?;
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
            let deadline = Instant::now() + within;
            loop {
                self.poll().await?;
                let verdict = match &self.last_state {
                    Some((_, state)) => converged(state),
                    None => Err("no leader".to_string()),
                };
                match verdict {
                    Ok(()) => break,
                    Err(seen) if Instant::now() >= deadline => {
                        return Err(Outcome::Liveness(format!(
                            "{}: services did not converge to their specs within {} s after the faults healed: {seen}",
                            self.scenario.file,
                            within.as_secs_f64()
                        )))
                    }
                    Err(_) => tokio::time::sleep(POLL).await,
                }
            }
        }
        self.note("phase.done", json!({}));
        Ok(())
    }
}

pub use shoal_sim::scenario::converge::converged;

/// Every daemon's events.jsonl and the harness's notes, in time order.
fn merged_trace(cluster: &RealCluster, notes: &[TraceEvent]) -> Vec<TraceEvent> {
    let mut events: Vec<TraceEvent> = notes.to_vec();
    for node in &cluster.nodes {
        if let Ok(text) = std::fs::read_to_string(node.events_file()) {
            events.extend(text.lines().filter_map(|line| serde_json::from_str::<TraceEvent>(line).ok()));
        }
    }
    events.sort_by_key(|e| e.time_ms);
    events
}

/// A fresh id for a run: the harness's pid and the time.
pub fn run_id() -> String {
    format!("{:x}{:04x}", std::process::id(), (unix_ms() & 0xffff) as u16)
}

/// Refuse what this machine cannot do, before anything starts: network faults without root.
pub fn preflight(scenario: &Scenario, executor: Executor) -> Result<(), String> {
    let needs_root = scenario.steps.iter().any(|s| {
        matches!(&s.action, Action::Fault(Fault::Partition { .. }) | Action::Fault(Fault::Link { loss: _, .. }))
    });
    if needs_root && !netfault::have_root() {
        return Err(format!(
            "{}: partitions and lossy links are iptables rules on the loopback addresses, which need root; run as root (the rules carry the comment shoal-run-<id> and are removed afterwards)",
            scenario.file
        ));
    }
    if executor == Executor::Process {
        let unusable: Vec<String> =
            images::scenario_images(scenario).into_iter().filter(|i| i != "process" && !i.starts_with('/')).collect();
        if !unusable.is_empty() {
            return Err(format!(
                "{}: with --executor process an image is `process` (the command is the program) or a host program's path; this scenario names {} — run it with the Docker executor",
                scenario.file,
                unusable.join(", ")
            ));
        }
    }
    if executor == Executor::Docker {
        images::sleeper()?;
        let others = images::shoal_bridges();
        if images::uses_bridges(scenario) && !others.is_empty() {
            return Err(format!(
                "{}: another shoal cluster's bridges are on this Docker engine ({}); shoal's ingress network is always 10.0.0.0/16, so this run's bridges would overlap theirs and its tasks be rejected — run it when that cluster is gone",
                scenario.file,
                others.join(", ")
            ));
        }
    }
    Ok(())
}

/// Play `scenario` once on a fresh cluster; everything the run made is cleaned up before it
/// returns (also when it fails). `ledger` is registered with the signal handler by the caller.
pub async fn play(scenario: &Scenario, options: &ClusterOptions, run: u32, ledger: Arc<Mutex<Ledger>>) -> RealReport {
    let started = Instant::now();
    let id = run_id();
    let comment = format!("shoal-run-{id}");
    let mut skipped = Vec::new();
    let mut tags = BTreeMap::new();
    let report = |outcome: Outcome, trace: Vec<TraceEvent>, skipped: Vec<String>| {
        let trace_jsonl: String =
            trace.iter().filter_map(|e| serde_json::to_string(e).ok()).map(|l| l + "\n").collect();
        RealReport {
            scenario: scenario.name.clone(),
            file: scenario.file.clone(),
            run,
            run_id: id.clone(),
            outcome,
            wall_ms: started.elapsed().as_millis() as u64,
            skipped,
            trace_events: trace.len(),
            trace_jsonl,
        }
    };
    if options.executor == Executor::Docker {
        let sleeper = match images::sleeper() {
            Ok(id) => id,
            Err(err) => return report(Outcome::Crash(err), Vec::new(), skipped),
        };
        for image in images::scenario_images(scenario) {
            if images::image_id(&image).is_some() {
                continue;
            }
            if let Err(err) = images::tag(&sleeper, &image) {
                ledger.lock().expect("ledger").clean();
                return report(Outcome::Crash(err), Vec::new(), skipped);
            }
            ledger.lock().expect("ledger").image_tags.push((image.clone(), sleeper.clone()));
            tags.insert(image, sleeper.clone());
        }
    }
    let cluster = match RealCluster::start(
        options.clone(),
        scenario.cluster.managers,
        scenario.cluster.workers,
        &id,
        ledger.clone(),
    )
    .await
    {
        Ok(cluster) => cluster,
        Err(err) => {
            let problems = ledger.lock().expect("ledger").clean();
            skipped.extend(problems);
            return report(
                Outcome::Crash(format!("{}: the cluster did not start: {err}", scenario.file)),
                Vec::new(),
                skipped,
            );
        }
    };
    let mut runner = Runner {
        scenario,
        cluster,
        services: ServiceInvariants::default(),
        elections: Elections::default(),
        heal_at: Vec::new(),
        crashed: Vec::new(),
        notes: Vec::new(),
        skipped: Vec::new(),
        comment,
        tags,
        last_state: None,
    };
    runner.note("scenario.start", json!({"name": scenario.name, "file": scenario.file, "run_id": id, "world": "real"}));
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
    runner.note("scenario.end", json!({"result": outcome.label()}));
    let trace = merged_trace(&runner.cluster, &runner.notes);
    let skipped = std::mem::take(&mut runner.skipped);
    drop(runner);
    let problems = ledger.lock().expect("ledger").clean();
    for problem in problems {
        eprintln!("cleanup: {problem}");
    }
    report(outcome, trace, skipped)
}

/// Where a run's trace goes: `DIR/<file stem>-run<N>.jsonl`.
pub fn trace_path(dir: &Path, file: &str, run: u32) -> PathBuf {
    let stem =
        Path::new(file).file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "scenario".into());
    dir.join(format!("{stem}-run{run}.jsonl"))
}
