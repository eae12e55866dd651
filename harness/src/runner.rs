//! Playing a scenario file against a real cluster, as the simulator's runner plays it against a
//! simulated one: the same parsed steps, the same control requests (through the daemons' sockets),
//! the same expectations and orchestration invariants (on the leader's store, read through the
//! control API every [`POLL`]), election safety from the daemons' own `events.jsonl`, the same
//! liveness phase (heal, `eventually:`, every service converged) and the same outcomes and exit
//! codes. Time is real: `after:`, `wait:` and `within` budgets hold as written.
//!
//! What a `run:` step does with its command is the simulator's own code
//! ([`shoal_sim::scenario::drive`]); this runner supplies how requests reach the daemons. Clients
//! send real HTTP requests ([`crate::client`]) and the simulator's `client-requests` invariant and
//! `client …` expectations judge them.
//!
//! Faults happen for real ([`crate::cluster`], [`crate::netfault`], [`crate::relay`],
//! [`crate::disk`], [`crate::images`]); what cannot be done on the cluster at hand (an attached
//! cluster's daemons, addresses and disks; an image the engine itself has) is reported as skipped,
//! never faked.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use shoal_core::api::TaskState;
use shoal_core::control::{ControlRequest, ControlResult};
use shoal_core::store::StoreState;
use shoal_core::trace::TraceEvent;
use shoal_sim::client::{ClientLog, ANSWER_TIMEOUT, CONNECT_TIMEOUT, RESOLVE_TIMEOUT};
use shoal_sim::invariants::{ClientRequests, ServiceInvariants};
use shoal_sim::scenario::drive::{self, Driver};
use shoal_sim::scenario::expect::{Expectation, Timed};
use shoal_sim::scenario::fault::{Fault, ImageFault, Side, Target};
use shoal_sim::scenario::parse::{Action, ClientStep, Final, Step, CLIENT_HOST};
use shoal_sim::scenario::{Outcome, Scenario};

use crate::cleanup::{AttachedLedger, Ledger};
use crate::client::{Dial, Names, Netns, RealClient, Route};
use crate::cluster::{Attached, ClusterOptions, Executor, RealCluster};

use crate::images::StandIn;
/// The file `container unhealthy` creates in a real container (`docker exec … touch`): a scenario's
/// health command checks it (`--health-cmd "test ! -e /tmp/unhealthy"`, which passes in the simulator
/// until the same fault).
pub use crate::images::UNHEALTHY_MARK;
use crate::relay::Relays;
use crate::{disk, images, netfault};

/// The label on the containers the harness runs itself (clients on a network): the run's id.
pub const LABEL_HARNESS_RUN: &str = "com.shoal.harness.run";

/// The network namespace of a running container.
async fn netns_of_container(container: &str) -> Result<Netns, String> {
    let output = tokio::process::Command::new("docker")
        .args(["inspect", "--format", "{{.State.Pid}}", container])
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| format!("cannot run docker inspect: {e}"))?;
    let pid: u32 = String::from_utf8_lossy(&output.stdout).trim().parse().unwrap_or(0);
    if !output.status.success() || pid == 0 {
        return Err(format!("container {container} is not running"));
    }
    Netns::of_pid(pid)
}

/// The network namespace of a running container attached to Docker network `bridge` (a name lookup
/// is what any container there would see).
async fn netns_on_bridge(bridge: &str) -> Result<Netns, String> {
    let output = tokio::process::Command::new("docker")
        .args(["network", "inspect", "--format", "{{range $id, $c := .Containers}}{{$id}} {{end}}", bridge])
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| format!("cannot run docker network inspect: {e}"))?;
    if !output.status.success() {
        return Err(format!("no bridge {bridge} on this engine"));
    }
    for id in String::from_utf8_lossy(&output.stdout).split_whitespace() {
        if let Ok(netns) = netns_of_container(id).await {
            return Ok(netns);
        }
    }
    Err(format!("no container runs on bridge {bridge}"))
}

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

/// Election safety from the daemons' traces: at most one leader per term. The same events say who
/// leads now, as the simulator knows it from the replicas themselves (not from a manager's `node
/// ls`, which a leader that just lost its disk or its quorum still answers as leader).
#[derive(Debug, Default)]
struct Elections {
    /// Bytes of each node's events.jsonl read so far.
    read: BTreeMap<String, u64>,
    leaders: BTreeMap<u64, String>,
    /// Each node's last raft role and term.
    roles: BTreeMap<String, (u64, String)>,
}

impl Elections {
    /// Whether the daemons' events say anything of raft (they do once read).
    fn knows(&self) -> bool {
        !self.roles.is_empty()
    }

    /// The node of the highest term whose last raft state is `Leader`, among the running daemons;
    /// `None` when no daemon's events are read (an attached cluster) or none leads.
    fn leader(&self, cluster: &RealCluster) -> Option<String> {
        self.roles
            .iter()
            .filter(|(node, (_, role))| {
                role == "Leader" && cluster.index(node).is_some_and(|i| cluster.nodes[i].is_up())
            })
            .max_by_key(|(_, (term, _))| *term)
            .map(|(node, _)| node.clone())
    }

    fn check(&mut self, cluster: &RealCluster) -> Result<(), String> {
        use std::io::{Read, Seek, SeekFrom};
        for node in &cluster.nodes {
            let Some(events) = &node.events else { continue };
            let Ok(mut file) = std::fs::File::open(events) else { continue };
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
                if event.kind == "raft.state" {
                    let role = event.fields.get("role").and_then(|r| r.as_str()).unwrap_or_default();
                    let term = event.fields.get("term").and_then(|t| t.as_u64()).unwrap_or(0);
                    self.roles.insert(event.node.clone(), (term, role.to_string()));
                }
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
    /// The `client-requests` invariant, told of every fault as the simulator's runner tells it.
    client_checks: ClientRequests,
    /// Every client's requests.
    log: ClientLog,
    clients: BTreeMap<String, RealClient>,
    /// The containers of the clients on a network (client name → container name).
    client_containers: BTreeMap<String, String>,
    /// The run's id (its containers carry [`LABEL_HARNESS_RUN`]).
    run_id: String,
    names: Names,
    /// The relays of a run with link delays (set up before the daemons started).
    relays: Option<Relays>,
    /// Due heals (`partition … for T`).
    heal_at: Vec<Instant>,
    /// The cut links now, as (from host, to host), until the next heal.
    cut: std::collections::BTreeSet<(String, String)>,
    /// Due disk heals (`disk NODE fail-writes for T`).
    disk_heal_at: Vec<(Instant, String)>,
    /// The node the current `run:` step goes to (`on:`).
    on: Option<usize>,
    crashed: Vec<String>,
    notes: Vec<TraceEvent>,
    skipped: Vec<String>,
    comment: String,
    /// Image tags this run made (name → image id), for image faults.
    tags: BTreeMap<String, String>,
    /// What the stand-in each tag points to does.
    stand_ins: BTreeMap<String, StandIn>,
    /// The last leader state read by a poll.
    last_state: Option<(String, StoreState)>,
}

impl Runner<'_> {
    fn note(&mut self, kind: &str, fields: serde_json::Value) {
        self.notes.push(TraceEvent { time_ms: unix_ms(), node: "supervisor".into(), kind: kind.into(), fields });
    }

    /// Every network fault ends: the run's cut and loss rules go, the relays' delays drop to zero
    /// (their nat rules stay: connections keep going through the relays).
    fn heal(&mut self) -> Result<(), String> {
        self.heal_at.clear();
        self.cut.clear();
        netfault::remove_filter_rules(&self.comment)?;
        if let Some(relays) = &self.relays {
            relays.clear();
        }
        self.client_checks.heal(unix_ms());
        self.note("fault.heal", json!({}));
        Ok(())
    }

    /// The node ids of the hosts cut off from `leader` (a host name) in either direction now.
    fn cut_off_from(&self, leader: &str) -> std::collections::BTreeSet<String> {
        self.cluster
            .nodes
            .iter()
            .filter(|node| {
                self.cut.contains(&(leader.to_string(), node.name.clone()))
                    || self.cut.contains(&(node.name.clone(), leader.to_string()))
            })
            .map(|node| node.node_id.clone())
            .collect()
    }

    /// The raft log's file system of `host` has room again.
    fn disk_heal(&mut self, host: &str) -> Result<(), String> {
        self.disk_heal_at.retain(|(_, h)| h != host);
        let i = self.cluster.index(host).ok_or("unknown host")?;
        disk::free(&crate::cluster::raft_dir(&self.cluster.nodes[i].data_dir()))?;
        self.note("fault.disk_heal", json!({"host": host}));
        Ok(())
    }

    /// One poll: due heals, then the invariants.
    async fn poll(&mut self) -> Result<(), Outcome> {
        let now = Instant::now();
        if self.heal_at.iter().any(|at| *at <= now) {
            self.heal().map_err(|err| Outcome::Crash(format!("could not heal: {err}")))?;
        }
        let due: Vec<String> = self.disk_heal_at.iter().filter(|(at, _)| *at <= now).map(|(_, h)| h.clone()).collect();
        for host in due {
            self.disk_heal(&host).map_err(|err| Outcome::Crash(format!("could not heal the disk of {host}: {err}")))?;
        }
        if let Err(violation) = self.elections.check(&self.cluster) {
            self.note("invariant.violation", json!({"violation": violation}));
            return Err(Outcome::Safety(violation));
        }
        // The daemons' own events say who leads (as the simulator's replicas do); without them (an
        // attached cluster), `node ls` does.
        let events_leader = self.elections.leader(&self.cluster);
        if events_leader.is_some() {
            self.cluster.set_leader_hint(events_leader.clone());
        }
        let read = self.cluster.leader_state().await.and_then(|(listed, state)| {
            let leader = if self.elections.knows() { events_leader } else { listed };
            let leader = leader.ok_or_else(|| "no manager is leader".to_string())?;
            Ok((leader, state))
        });
        match read {
            Ok((leader, state)) => {
                if !self.elections.knows() {
                    self.cluster.set_leader_hint(Some(leader.clone()));
                }
                let cut_off = self.cut_off_from(&leader);
                if let Err(violation) = self.services.check(unix_ms(), &state, &cut_off) {
                    self.note("invariant.violation", json!({"violation": violation.to_string()}));
                    return Err(Outcome::Safety(violation.to_string()));
                }
                self.client_checks.observe_store(unix_ms(), &self.cluster.names(), &state);
                self.last_state = Some((leader, state));
            }
            Err(_) => {
                // No leader answered a linearizable read: none can commit, so the time-bounded
                // properties wait (see `ServiceInvariants`).
                self.services.pause(unix_ms());
                self.last_state = None;
            }
        }
        if let Err(violation) = self.client_checks.check(&self.log) {
            self.note("invariant.violation", json!({"violation": violation.to_string()}));
            return Err(Outcome::Safety(violation.to_string()));
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
                Expectation::NameResolves { name, node, network }
                | Expectation::NameUnknown { name, node, network } => {
                    let answer = match self.bridge_of(network, node) {
                        Ok((bridge, resolver)) => match netns_on_bridge(&bridge).await {
                            Ok(netns) => crate::client::resolve(&netns, resolver, name, 1).await,
                            Err(err) => Err(err),
                        },
                        Err(err) => Err(err),
                    };
                    // As the simulator judges its lookups.
                    shoal_sim::scenario::expect::judge_lookup(expectation, name, answer)
                }
                Expectation::PortAnswers { addr, .. } | Expectation::PortClosed { addr } if addr.ends_with("/udp") => {
                    let target = addr.trim_end_matches("/udp");
                    let answer = match self.route(target, CLIENT_HOST) {
                        Ok(route) => crate::client::probe_udp(&route, &self.names).await,
                        Err(err) => Err(err),
                    };
                    expectation.check_probe(answer)
                }
                Expectation::PortAnswers { addr, .. } | Expectation::PortClosed { addr } => {
                    let answer = match self.route(addr, CLIENT_HOST) {
                        Ok(route) => crate::client::probe(&route, &self.names).await,
                        Err(err) => Err(err),
                    };
                    expectation.check_probe(answer)
                }
                _ => {
                    let (leader, state) = match &self.last_state {
                        Some((leader, state)) => (Some(leader.as_str()), Some(state)),
                        None => (None, None),
                    };
                    expectation.check_client(state, &self.log).unwrap_or_else(|| expectation.check(state, leader))
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

    /// The address a client or probe dials for `target` (`NODE:PORT`), sent from `from` (a node's
    /// address, or none for the client host).
    fn route(&self, target: &str, from: &str) -> Result<Route, String> {
        let (host, port) = target.rsplit_once(':').ok_or_else(|| format!("{target:?} is not HOST:PORT"))?;
        let port: u16 = port.parse().map_err(|_| format!("{target:?} has no port number"))?;
        let ip = match self.cluster.index(host) {
            Some(i) => self.cluster.nodes[i].ip.clone(),
            None => host.to_string(),
        };
        let ip: std::net::Ipv4Addr =
            ip.parse().map_err(|_| format!("no host {host:?} (hosts: {})", self.cluster.names().join(", ")))?;
        if !ip.is_loopback() {
            return Err(format!("{target}: this harness sends traffic to loopback addresses only"));
        }
        let source = match from {
            CLIENT_HOST => None,
            node => {
                let i = self.cluster.index(node).ok_or_else(|| format!("no host {node:?} to send from"))?;
                Some(self.cluster.nodes[i].ip.parse().map_err(|_| format!("{node} has no IPv4 address"))?)
            }
        };
        Ok(Route { addr: std::net::SocketAddr::new(ip.into(), port), source })
    }

    /// Network `network`'s bridge on `host`, from its lease in the leader's store (as last read):
    /// the bridge's Docker name and its resolver's address (the gateway, port 53).
    fn bridge_of(&self, network: &str, host: &str) -> Result<(String, SocketAddr), String> {
        let (_, state) = self.last_state.as_ref().ok_or("no leader to ask for the network's lease")?;
        let net = state
            .networks
            .values()
            .find(|n| n.name == network || n.id == network)
            .ok_or_else(|| format!("network {network} does not exist"))?;
        let i = self.cluster.index(host).ok_or_else(|| format!("no host {host:?}"))?;
        let bridge = shoal_core::mesh::lease::bridge_for(net, &self.cluster.nodes[i].node_id)
            .ok_or_else(|| format!("network {network} has no lease on {host} (no task on it runs there)"))?;
        let gateway: Ipv4Addr =
            bridge.gateway.parse().map_err(|_| format!("bridge {} has no IPv4 gateway", bridge.name))?;
        Ok((bridge.name, SocketAddr::new(gateway.into(), 53)))
    }

    /// Start a container of the run on `network`'s bridge on `host`, with the mesh resolver as its
    /// DNS server as shoal's tasks have: a client's requests are sent from its network namespace.
    async fn client_container(
        &mut self,
        client: &str,
        network: &str,
        host: &str,
    ) -> Result<(String, Netns, SocketAddr), String> {
        let _ = self.poll().await;
        let (bridge, resolver) = self.bridge_of(network, host)?;
        let image = images::sleeper()?;
        let name = format!("shoal-harness-{}-{client}", self.run_id);
        let output = tokio::process::Command::new("docker")
            .args(["run", "-d", "--name", &name, "--network", &bridge, "--dns", &resolver.ip().to_string()])
            .args(["--label", &format!("{LABEL_HARNESS_RUN}={}", self.run_id), &image])
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| format!("cannot run docker run: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "could not start client {client}'s container on {bridge}: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        let netns = netns_of_container(&name).await?;
        Ok((name, netns, resolver))
    }

    /// Start or stop a client.
    async fn client(&mut self, step: &ClientStep, place: &str) -> Result<(), String> {
        match step {
            ClientStep::Start(spec) => {
                if self.clients.contains_key(&spec.name) {
                    return Err(format!("client {} is already running", spec.name));
                }
                if spec.keepalive {
                    self.note(
                        "client.note",
                        json!({"client": spec.name, "note": "keepalive: the stand-in server (busybox httpd) closes each connection after its answer, so every request opens a new one"}),
                    );
                }
                let dial = match &spec.network {
                    Some(network) => {
                        let (name, port) = spec
                            .target
                            .rsplit_once(':')
                            .ok_or_else(|| format!("{:?} is not NAME:PORT", spec.target))?;
                        let port: u16 = port.parse().map_err(|_| format!("{:?} has no port number", spec.target))?;
                        let (container, netns, resolver) =
                            self.client_container(&spec.name, network, &spec.from).await?;
                        self.note(
                            "client.container",
                            json!({"at": place, "client": spec.name, "container": container, "network": network, "host": spec.from, "resolver": resolver.to_string()}),
                        );
                        self.client_containers.insert(spec.name.clone(), container);
                        Dial::Container { netns, resolver, name: name.to_string(), port }
                    }
                    None => Dial::Host(self.route(&spec.target, &spec.from)?),
                };
                let client = crate::client::start(spec.clone(), dial, self.names.clone(), self.log.clone());
                self.clients.insert(spec.name.clone(), client);
                Ok(())
            }
            ClientStep::Stop(name) => {
                let client = self.clients.remove(name).ok_or_else(|| {
                    format!("no client {name} is running (running: {:?})", self.clients.keys().collect::<Vec<_>>())
                })?;
                client.stop();
                // Its container goes once the requests in flight are done (their sockets are in it).
                if let Some(container) = self.client_containers.remove(name) {
                    tokio::spawn(async move {
                        client.settled(CONNECT_TIMEOUT + ANSWER_TIMEOUT + RESOLVE_TIMEOUT).await;
                        let _ = tokio::process::Command::new("docker")
                            .args(["rm", "-f", &container])
                            .stdout(Stdio::null())
                            .stderr(Stdio::null())
                            .status()
                            .await;
                    });
                }
                Ok(())
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

    /// Why a fault cannot be done on this cluster, if it cannot: an attached cluster's daemons are
    /// not the harness's to kill, and its addresses and disks not its to cut or fill.
    fn unsupported(&self, fault: &Fault) -> Option<&'static str> {
        if self.cluster.owned {
            return None;
        }
        match fault {
            Fault::Crash(_) | Fault::Restart(_) | Fault::SecondDaemon(_) => {
                Some("the cluster was not started by this run (--cluster): its daemons are not the harness's to kill or start")
            }
            Fault::Partition { .. } | Fault::Link { .. } | Fault::Heal => {
                Some("the cluster was not started by this run (--cluster): its addresses are not the harness's to cut (iptables, as root)")
            }
            Fault::DiskFailWrites { .. } | Fault::DiskHeal(_) => {
                Some("the cluster was not started by this run (--cluster): its raft logs are not on a file system the harness mounted")
            }
            Fault::ContainerRemove { .. } | Fault::ContainerUnhealthy { .. } | Fault::Leave { .. } | Fault::Image { .. } => {
                None
            }
        }
    }

    async fn fault(&mut self, fault: &Fault, place: &str) -> Result<(), String> {
        if let Some(why) = self.unsupported(fault) {
            self.skip(place, &format!("{fault:?}"), why);
            return Ok(());
        }
        match fault {
            Fault::Crash(target) => {
                let host = self.host(target).await?;
                let i = self.cluster.index(&host).ok_or("unknown host")?;
                self.client_checks.host_fault(&host, unix_ms());
                let pid = self.cluster.kill(i).ok_or_else(|| format!("{host} is not running"))?;
                let containers = self.kill_containers(&host);
                self.note("fault.crash", json!({"host": host, "pid": pid, "containers_killed": containers}));
                self.crashed.retain(|h| h != &host);
                self.crashed.push(host);
            }
            Fault::Restart(target) => {
                let host = self.host(target).await?;
                let i = self.cluster.index(&host).ok_or("unknown host")?;
                self.client_checks.host_restart(&host, unix_ms());
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
                self.client_checks.host_fault(&host, unix_ms());
                let result = self.cluster.leave(i, *force).await;
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
                self.client_checks.network_fault(unix_ms());
                for a in &side {
                    for b in &other {
                        netfault::drop_rule(&self.comment, &self.ip(a), &self.ip(b), None)?;
                        self.cut.insert((a.clone(), b.clone()));
                        if !one_way {
                            netfault::drop_rule(&self.comment, &self.ip(b), &self.ip(a), None)?;
                            self.cut.insert((b.clone(), a.clone()));
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
                self.client_checks.network_fault(unix_ms());
                if !delay_max.is_zero() {
                    let relays = self.relays.as_ref().ok_or(
                        "no relays in this run (they are set up before the daemons start, for scenarios with link delays)",
                    )?;
                    let ip = |h: &str| self.ip(h).parse::<std::net::Ipv4Addr>().map_err(|e| format!("{h}: {e}"));
                    relays.set_delay(ip(&a)?, ip(&b)?, (*delay_min, *delay_max));
                }
                if *loss > 0.0 {
                    self.cluster.ledger.lock().expect("ledger").rule_comment = Some(self.comment.clone());
                    let (ip_a, ip_b) = (self.ip(&a), self.ip(&b));
                    netfault::drop_rule(&self.comment, &ip_a, &ip_b, Some(*loss))?;
                    netfault::drop_rule(&self.comment, &ip_b, &ip_a, Some(*loss))?;
                }
                self.note(
                    "fault.link",
                    json!({"a": a, "b": b, "loss": loss, "delay_min_ms": delay_min.as_millis() as u64, "delay_max_ms": delay_max.as_millis() as u64}),
                );
            }
            Fault::DiskFailWrites { target, duration } => {
                let host = self.host(target).await?;
                let i = self.cluster.index(&host).ok_or("unknown host")?;
                let raft = crate::cluster::raft_dir(&self.cluster.nodes[i].data_dir());
                disk::fill(&raft)?;
                self.note(
                    "fault.disk_fail_writes",
                    json!({"host": host, "how": "the raft log's tmpfs filled (ENOSPC)"}),
                );
                if let Some(duration) = duration {
                    self.disk_heal_at.push((Instant::now() + *duration, host));
                }
            }
            Fault::DiskHeal(target) => {
                let host = self.host(target).await?;
                self.disk_heal(&host)?;
            }
            Fault::SecondDaemon(_) => return Err("a second daemon is started by the step itself".into()),
            Fault::ContainerRemove { service, slot } => {
                let _ = self.poll().await;
                let (_, state) = self.last_state.as_ref().ok_or("no leader to ask where the task runs")?;
                let (task, host) = drive::fault_target(state, service, *slot, &[TaskState::Running])?;
                if self.cluster.options.executor != Executor::Docker {
                    self.skip(
                        place,
                        "container remove",
                        "only the Docker executor's containers can be removed behind the agent's back here",
                    );
                    return Ok(());
                }
                self.client_checks.container_fault(unix_ms());
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
            Fault::ContainerUnhealthy { service, slot } => {
                // A real container's health is what its command says: the harness creates the file
                // UNHEALTHY_MARK in the container, which a scenario's `--health-cmd "test ! -e
                // /tmp/unhealthy"` checks (the simulator's checks of that command pass until the fault).
                let _ = self.poll().await;
                let (_, state) = self.last_state.as_ref().ok_or("no leader to ask where the task runs")?;
                let (task, _) = drive::fault_target(state, service, *slot, &[TaskState::Starting, TaskState::Running])?;
                if self.cluster.options.executor != Executor::Docker {
                    self.skip(place, "container unhealthy", "only the Docker executor runs health checks");
                    return Ok(());
                }
                self.client_checks.container_fault(unix_ms());
                let output = Process::new("docker")
                    .args(["exec", &task.status.container_id, "touch", UNHEALTHY_MARK])
                    .output()
                    .map_err(|e| format!("cannot run docker exec: {e}"))?;
                if !output.status.success() {
                    return Err(format!(
                        "docker exec {} touch {UNHEALTHY_MARK} ({service}.{slot}): {}",
                        task.status.container_id,
                        String::from_utf8_lossy(&output.stderr).trim()
                    ));
                }
                self.note(
                    "fault.container_unhealthy",
                    json!({"at": place, "task": task.name(), "container": task.status.container_id, "mark": UNHEALTHY_MARK}),
                );
            }
            Fault::Image { image, fault } if !self.tags.contains_key(image) => {
                if fault.is_fault() {
                    self.skip(
                        place,
                        &format!("image {image} {fault:?}"),
                        "the image is the engine's own, not one this run tagged",
                    );
                } else {
                    self.note(
                        "fault.image",
                        json!({"at": place, "image": image, "behavior": format!("{fault:?}"), "note": "the engine's own image, not one this run tagged: it behaves as it does"}),
                    );
                }
            }
            Fault::Image { image, fault: ImageFault::PullFails } => {
                // With `--pull never`, an image the engine lacks is a failed pull.
                let id = self.tags[image].clone();
                self.client_checks.image_fault(unix_ms());
                images::untag(image, &id)?;
                self.tags.remove(image);
                self.cluster.ledger.lock().expect("ledger").image_tags.retain(|(n, _)| n != image);
                self.note(
                    "fault.image",
                    json!({"at": place, "image": image, "behavior": "pull fails (image removed from the engine)"}),
                );
            }
            Fault::Image { image, fault } => {
                // The name now points to a stand-in that behaves so (containers started from now on,
                // as in the simulator).
                let mut stand_in = self.stand_ins.get(image).cloned().unwrap_or_default();
                match fault {
                    ImageFault::SlowStart(d) => stand_in.start_delay = *d,
                    ImageFault::AnswersAfter(d) => stand_in.answer_delay = *d,
                    ImageFault::CrashAfter { after, exit_code } => stand_in.exit_after = Some((*after, *exit_code)),
                    ImageFault::Unhealthy => stand_in.unhealthy = true,
                    ImageFault::Exposes(ports) => stand_in.serve(ports),
                    ImageFault::Listens(ports) => stand_in.listens = ports.clone(),
                    // Every stand-in exits at once on SIGTERM.
                    ImageFault::ExitsOnSigterm | ImageFault::PullFails => {}
                }
                if fault.is_fault() {
                    self.client_checks.image_fault(unix_ms());
                }
                let id = images::stand_in(&stand_in)?;
                images::tag(&id, image)?;
                self.tags.insert(image.clone(), id.clone());
                let mut ledger = self.cluster.ledger.lock().expect("ledger");
                ledger.image_tags.retain(|(n, _)| n != image);
                ledger.image_tags.push((image.clone(), id.clone()));
                drop(ledger);
                self.note(
                    "fault.image",
                    json!({"at": place, "image": image, "behavior": format!("{stand_in:?}"), "stand_in": stand_in.tag(), "id": id}),
                );
                self.stand_ins.insert(image.clone(), stand_in);
            }
        }
        Ok(())
    }

    async fn step(&mut self, step: &Step) -> Result<(), Outcome> {
        let place = format!("{}:{}", self.scenario.file, step.line);
        if !step.after.is_zero() {
            self.sleep(step.after).await?;
        }
        match &step.action {
            Action::Run { command, on, .. } => {
                self.on = match on {
                    Some(target) => {
                        let host = self.host(target).await.map_err(|e| Outcome::Liveness(format!("{place}: {e}")))?;
                        self.cluster.index(&host)
                    }
                    None => None,
                };
                let scenario = self.scenario;
                let result = drive::run_command(self, &scenario.file, command).await;
                self.on = None;
                let Ok(result) = result;
                drive::conclude(self, &place, step, &result)
            }
            // Two daemons on one data dir is a safety violation, not a step that failed.
            Action::Fault(fault @ Fault::SecondDaemon(target)) if self.unsupported(fault).is_none() => {
                self.note("step.fault", json!({"at": place, "fault": "second daemon", "target": format!("{target}")}));
                let host = self.host(target).await.map_err(|e| Outcome::Liveness(format!("{place}: {e}")))?;
                let i = self.cluster.index(&host).ok_or_else(|| Outcome::Liveness(format!("{place}: unknown host")))?;
                match self.cluster.start_second_daemon(i).await {
                    Ok(refusal) => {
                        self.note("fault.second_daemon", json!({"host": host, "refused": refusal}));
                        Ok(())
                    }
                    Err(violation) => Err(Outcome::Safety(format!("{place}: {violation}"))),
                }
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
                self.note("step.client", json!({"at": place, "client": client.to_string()}));
                self.client(client, &place).await.map_err(|err| Outcome::Liveness(format!("{place}: {err}")))
            }
            Action::Expect(Timed { expectation, within }) => self.wait_for(expectation, *within, &place).await,
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
        for (_, client) in std::mem::take(&mut self.clients) {
            client.stop();
        }
        self.note("phase.done", json!({}));
        Ok(())
    }
}

/// The daemons under the runners' shared `run:` logic ([`drive`]): requests go to the leader as
/// last seen, or to one node alone for an `on:` step; what a run creates on a cluster it attached
/// to is listed for removal at the end.
impl Driver for Runner<'_> {
    type Stop = std::convert::Infallible;

    async fn control(&mut self, request: ControlRequest) -> Result<ControlResult, Self::Stop> {
        let created = match &request {
            ControlRequest::ServiceCreate { spec } => Some(("service", spec.name.clone())),
            ControlRequest::NetworkCreate { name, .. } => Some(("network", name.clone())),
            _ => None,
        };
        let result = match self.on {
            Some(i) => self.cluster.control_on(i, request).await,
            None => self.cluster.control(request).await,
        };
        if let (Some((what, name)), Ok(_)) = (created, &result) {
            if let Some(attached) = &mut self.cluster.ledger.lock().expect("ledger").attached {
                match what {
                    "service" => attached.services.push(name),
                    _ => attached.networks.push(name),
                }
            }
        }
        Ok(result)
    }

    async fn control_concurrently(&mut self, requests: Vec<ControlRequest>) -> Result<Vec<ControlResult>, Self::Stop> {
        // All at once (`node demote m2 & node promote m2`).
        let calls = requests.into_iter().map(|r| self.cluster.control(r));
        Ok(futures_util::future::join_all(calls).await)
    }

    fn note(&mut self, kind: &str, fields: serde_json::Value) {
        Runner::note(self, kind, fields);
    }
}

pub use shoal_sim::scenario::converge::converged;

/// Every daemon's events.jsonl, the harness's notes and every client request (`client.request`,
/// as the simulator traces them, at the time each finished), in time order.
fn merged_trace(cluster: &RealCluster, notes: &[TraceEvent], log: &ClientLog) -> Vec<TraceEvent> {
    let mut events: Vec<TraceEvent> = notes.to_vec();
    for node in &cluster.nodes {
        let Some(path) = &node.events else { continue };
        if let Ok(text) = std::fs::read_to_string(path) {
            events.extend(text.lines().filter_map(|line| serde_json::from_str::<TraceEvent>(line).ok()));
        }
    }
    events.extend(log.since(0).into_iter().map(|record| TraceEvent {
        time_ms: record.done_ms,
        node: CLIENT_HOST.into(),
        kind: "client.request".into(),
        fields: serde_json::to_value(&record).unwrap_or_default(),
    }));
    events.sort_by_key(|e| e.time_ms);
    events
}

/// A fresh id for a run: the harness's pid and the time.
pub fn run_id() -> String {
    format!("{:x}{:04x}", std::process::id(), (unix_ms() & 0xffff) as u16)
}

/// Whether a step of the scenario is a link fault with a delay (the run then needs relays).
pub fn has_link_delays(scenario: &Scenario) -> bool {
    scenario
        .steps
        .iter()
        .any(|s| matches!(&s.action, Action::Fault(Fault::Link { delay_max, .. }) if !delay_max.is_zero()))
}

/// Whether the scenario has disk faults (each node's raft log then goes on a tmpfs).
pub fn has_disk_faults(scenario: &Scenario) -> bool {
    scenario.steps.iter().any(|s| matches!(&s.action, Action::Fault(Fault::DiskFailWrites { .. } | Fault::DiskHeal(_))))
}

/// Refuse what this machine cannot do, before anything starts: network and disk faults without
/// root (on a cluster the run starts; on an attached one they are skipped).
pub fn preflight(scenario: &Scenario, executor: Executor, attached: bool) -> Result<(), String> {
    let needs_root =
        scenario.steps.iter().any(|s| matches!(&s.action, Action::Fault(Fault::Partition { .. } | Fault::Link { .. })))
            || has_disk_faults(scenario);
    let in_network = scenario.steps.iter().any(|s| match &s.action {
        Action::Client(ClientStep::Start(spec)) => spec.network.is_some(),
        Action::Expect(Timed { expectation, .. }) => {
            matches!(expectation, Expectation::NameResolves { .. } | Expectation::NameUnknown { .. })
        }
        _ => false,
    });
    if in_network && !netfault::have_root() {
        return Err(format!(
            "{}: clients and name lookups inside a network send from a container's network namespace (setns): they need root",
            scenario.file
        ));
    }
    if needs_root && !attached && !netfault::have_root() {
        return Err(format!(
            "{}: partitions and link faults are iptables rules on the loopback addresses (and relays reached through nat rules), disk faults a tmpfs the run mounts: they need root; run as root (the rules carry the comment shoal-run-<id> and are removed afterwards)",
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
        for image in images::served_images(scenario) {
            images::stand_in(&StandIn::for_image(&image, true))?;
        }
        let others = images::shoal_bridges();
        if !attached && images::uses_bridges(scenario) && !others.is_empty() {
            return Err(format!(
                "{}: another shoal cluster's bridges are on this Docker engine ({}); shoal's ingress network is always 10.0.0.0/16, so this run's bridges would overlap theirs and its tasks be rejected — run it when that cluster is gone",
                scenario.file,
                others.join(", ")
            ));
        }
    }
    Ok(())
}

/// Play `scenario` once, on a fresh cluster or (`target`) on one already running; everything the
/// run made is cleaned up before it returns (also when it fails). `ledger` is registered with the
/// signal handler by the caller.
pub async fn play(
    scenario: &Scenario,
    options: &ClusterOptions,
    target: Option<&[Attached]>,
    run: u32,
    ledger: Arc<Mutex<Ledger>>,
) -> RealReport {
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
    let mut stand_ins = BTreeMap::new();
    ledger.lock().expect("ledger").run_label = Some(id.clone());
    if options.executor == Executor::Docker {
        let served = images::served_images(scenario);
        for image in images::scenario_images(scenario) {
            if images::image_id(&image).is_some() {
                continue;
            }
            let stand_in = StandIn::for_image(&image, served.contains(&image));
            let tagged = images::stand_in(&stand_in).and_then(|id| images::tag(&id, &image).map(|()| id));
            match tagged {
                Ok(id) => {
                    ledger.lock().expect("ledger").image_tags.push((image.clone(), id.clone()));
                    tags.insert(image.clone(), id);
                    stand_ins.insert(image, stand_in);
                }
                Err(err) => {
                    ledger.lock().expect("ledger").clean();
                    return report(Outcome::Crash(err), Vec::new(), skipped);
                }
            }
        }
    }
    let (managers, workers) = (scenario.cluster.managers, scenario.cluster.workers);
    let mut relays = None;
    if target.is_none() && has_link_delays(scenario) {
        // Before the daemons start, so that every connection between them goes through a relay.
        let ips: Vec<std::net::Ipv4Addr> =
            (0..managers + workers).filter_map(|i| crate::cluster::node_ip(&options.net, i).parse().ok()).collect();
        ledger.lock().expect("ledger").rule_comment = Some(comment.clone());
        match Relays::start(&ips, &comment).await {
            Ok(started) => relays = Some(started),
            Err(err) => {
                skipped.extend(ledger.lock().expect("ledger").clean());
                return report(
                    Outcome::Crash(format!("{}: the relays did not start: {err}", scenario.file)),
                    Vec::new(),
                    skipped,
                );
            }
        }
    }
    let mut options = options.clone();
    options.raft_tmpfs = target.is_none() && has_disk_faults(scenario);
    let made = match target {
        Some(daemons) => {
            let managers_sockets = daemons.iter().map(|d| d.socket.clone()).collect();
            ledger.lock().expect("ledger").attached = Some(AttachedLedger {
                shoal_bin: options.shoal_bin.clone(),
                managers: managers_sockets,
                ..AttachedLedger::default()
            });
            RealCluster::attach(options, daemons, managers, workers, ledger.clone()).await
        }
        None => RealCluster::start(options, managers, workers, &id, ledger.clone()).await,
    };
    let cluster = match made {
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
        client_checks: ClientRequests::default(),
        log: ClientLog::default(),
        clients: BTreeMap::new(),
        client_containers: BTreeMap::new(),
        run_id: id.clone(),
        names: Names::default(),
        relays,
        heal_at: Vec::new(),
        cut: Default::default(),
        disk_heal_at: Vec::new(),
        on: None,
        crashed: Vec::new(),
        notes: Vec::new(),
        skipped: Vec::new(),
        comment,
        tags,
        stand_ins,
        last_state: None,
    };
    runner.client_checks.run_started(unix_ms());
    let world = if runner.cluster.owned { "real" } else { "real (attached cluster)" };
    runner.note("scenario.start", json!({"name": scenario.name, "file": scenario.file, "run_id": id, "world": world}));
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
    for (_, client) in std::mem::take(&mut runner.clients) {
        client.stop();
    }
    runner.note("scenario.end", json!({"result": outcome.label()}));
    // Requests in flight finish within their timeouts; their records belong in the trace.
    if !runner.log.since(0).is_empty() {
        tokio::time::sleep(shoal_sim::client::CONNECT_TIMEOUT.min(Duration::from_secs(1))).await;
    }
    let trace = merged_trace(&runner.cluster, &runner.notes, &runner.log);
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
