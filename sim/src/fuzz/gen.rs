//! Generated cases: a cluster shape, a list of abstract operations and faults, and the seed of
//! the run. proptest generates and shrinks the abstract [`Case`]; [`Case::scenario`] realises it
//! as a [`Scenario`] — the type the YAML parser produces — through a small model of the cluster
//! that keeps every generated scenario valid:
//!
//! - Node and service fields are indices taken modulo what exists at that point, so any shrink
//!   of the list (dropping operations, smaller numbers, a smaller cluster) still realises.
//!   Operations that make no sense there (scaling when there is no service, restarting when
//!   nothing crashed, draining the last active node) are skipped.
//! - **Quorum.** A majority of managers may crash (or be cut off): writes then fail, which is
//!   allowed — from the first fault on, `run:` steps carry `may_fail: true`, and only safety is
//!   checked until the end. Every crashed host is restarted and the network healed before the
//!   liveness phase, so liveness is only ever required of a whole, connected cluster.
//! - **Roles.** `leader` is used as a target only when nothing is crashed and nothing is
//!   partitioned (so a leader is sure to be elected), right after `expect: leader exists`; while
//!   such a crashed leader is down no other host crashes, so `restart crashed` names it.
//! - **Role flips and disks.** A demote/promote pair of one manager runs back to back or at once
//!   (`node demote m & node promote m`: a promotion of a node being demoted); after one at once the
//!   model no longer knows the node's role, so writes from then on may fail. A disk refuses writes
//!   for a while (`disk NODE fail-writes for N s`, a named host or the leader) and heals itself.
//! - **The end.** Let the faults still in force act for [`FAULT_TAIL`] (a partition as the last
//!   operation would otherwise be healed at once), heal (network and disks), restart every crashed
//!   host, wait for a leader and let the cluster settle,
//!   reactivate every drained node, move services off the crashing image, then strict writes
//!   (a `probe` service) and the liveness phase: `probe` runs, and every service converges to its
//!   spec. The safety invariants are checked on every poll of the whole run.
//! - **Traffic** ([`GenConfig::traffic`]). Before the operations, a service `front` publishes port
//!   8080 and a simulated client sends it 10 requests/s through `manager-1` for the whole run; no
//!   operation touches `front` itself, but drains, promotions, crashes and cuts reach its tasks and
//!   the mesh, and the `client-requests` invariant allows a failed request only where a fault
//!   explains it.

use std::collections::BTreeSet;
use std::time::Duration;

use proptest::prelude::*;

use crate::scenario::expect::{Expectation, Timed};
use crate::scenario::fault::{Fault, ImageFault, Side, Target};
use crate::scenario::parse::{Action, ClientStep, Final, Run, Scenario, Shape, Step};

/// The service that carries a case's client traffic (never touched by an operation).
pub const TRAFFIC_SERVICE: &str = "front";

/// The images services use; `nginx:slow` and `nginx:crashy` are slow or crashing once an
/// operation says so.
pub const IMAGES: [&str; 4] = ["nginx:1.25", "nginx:1.26", "nginx:slow", "nginx:crashy"];
/// How long the faults still in force after the last operation act before the end heals them.
pub const FAULT_TAIL: Duration = Duration::from_secs(10);

/// What services are moved to at the end when the crashing image was used.
pub const FINAL_IMAGE: &str = "nginx:1.27";
const SLOW: &str = "nginx:slow";
const CRASHY: &str = "nginx:crashy";

/// A deliberately broken property, for testing the fuzzer itself (that failures are found,
/// shrunk and written out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sabotage {
    /// Every drain is followed by an expectation that the node is active within 1 s — which
    /// cannot hold, so any case with a drain fails; the minimal case is one drain.
    DrainIsFatal,
    /// Every case runs with a bug planted in the control API (`planted_bug: stale-leader-reads`):
    /// a deposed leader serves stale reads, which the linearizability check must find.
    StaleLeaderReads,
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenConfig {
    /// Manager counts to choose from (shrinks towards the first).
    pub managers: Vec<usize>,
    pub max_workers: usize,
    pub max_ops: usize,
    pub sabotage: Option<Sabotage>,
    /// Run a service under a simulated client's load through the whole case.
    pub traffic: bool,
    /// Run the control workload (reads, and writes of a node label) through the whole case
    /// (`control_workload: true`), so the linearizability check has reads and writes to check.
    pub control_workload: bool,
}

impl Default for GenConfig {
    fn default() -> Self {
        GenConfig {
            managers: vec![1, 3, 5],
            max_workers: 6,
            max_ops: 16,
            sabotage: None,
            traffic: true,
            control_workload: true,
        }
    }
}

impl GenConfig {
    /// Small shapes and short sequences (the CI budget).
    pub fn small() -> Self {
        GenConfig {
            managers: vec![1, 3],
            max_workers: 3,
            max_ops: 10,
            sabotage: None,
            traffic: true,
            control_workload: true,
        }
    }
}

/// One abstract operation; numbers are indices or raw values the realisation maps into range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpKind {
    Create {
        global: bool,
        replicas: u8,
        image: u8,
    },
    Scale {
        service: u8,
        replicas: u8,
    },
    Update {
        service: u8,
        image: u8,
        parallelism: u8,
        start_first: bool,
    },
    Remove {
        service: u8,
    },
    Drain {
        node: u8,
    },
    Activate {
        node: u8,
    },
    Promote {
        node: u8,
    },
    Demote {
        node: u8,
    },
    /// Demote a manager and promote it again: back to back, or both at once.
    RoleFlip {
        node: u8,
        concurrent: bool,
    },
    /// A host's disk refuses writes for `secs`.
    DiskFail {
        node: u8,
        secs: u8,
    },
    /// The leader's disk refuses writes for `secs`.
    DiskFailLeader {
        secs: u8,
    },
    NetworkCreate,
    Crash {
        node: u8,
    },
    CrashLeader,
    Restart {
        pick: u8,
    },
    Partition {
        side: u16,
        other: Option<u16>,
        one_way: bool,
        secs: Option<u8>,
    },
    IsolateLeader {
        one_way: bool,
        secs: Option<u8>,
    },
    Heal,
    Link {
        a: u8,
        b: u8,
        delay_ms: u8,
        spread_ms: u8,
        loss: u8,
    },
    ContainerRemove {
        service: u8,
        slot: u8,
    },
    SlowImage {
        secs: u8,
    },
    CrashingImage {
        secs: u8,
    },
    Wait {
        secs: u8,
    },
}

/// Which kind of thing an operation is, for coverage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Area {
    /// A control-API call (`service create`, `node promote`, …).
    Command,
    /// A fault or a repair (`crash`, `partition`, `heal`, …).
    Fault,
    /// Virtual time passing.
    Wait,
}

/// Every command label [`OpKind::label`] gives, in the order coverage lists them.
pub const COMMAND_KINDS: [&str; 13] = [
    "service create",
    "service create global",
    "service scale",
    "service update",
    "service update start-first",
    "service rm",
    "node drain",
    "node activate",
    "node promote",
    "node demote",
    "node demote+promote",
    "node demote&promote at once",
    "network create",
];

/// Every fault label [`OpKind::label`] gives, in the order coverage lists them.
pub const FAULT_KINDS: [&str; 14] = [
    "crash",
    "crash leader",
    "restart",
    "partition",
    "partition one-way",
    "isolate leader",
    "isolate leader one-way",
    "heal",
    "link delay/loss",
    "disk fail-writes",
    "disk fail-writes leader",
    "container rm",
    "image slow-start",
    "image crash-after",
];

impl OpKind {
    /// What the operation exercises: its area and a short label (one of [`COMMAND_KINDS`] or
    /// [`FAULT_KINDS`]).
    pub fn label(&self) -> (Area, &'static str) {
        use Area::{Command, Fault, Wait};
        match self {
            OpKind::Create { global: true, .. } => (Command, "service create global"),
            OpKind::Create { .. } => (Command, "service create"),
            OpKind::Scale { .. } => (Command, "service scale"),
            OpKind::Update { start_first: true, .. } => (Command, "service update start-first"),
            OpKind::Update { .. } => (Command, "service update"),
            OpKind::Remove { .. } => (Command, "service rm"),
            OpKind::Drain { .. } => (Command, "node drain"),
            OpKind::Activate { .. } => (Command, "node activate"),
            OpKind::Promote { .. } => (Command, "node promote"),
            OpKind::Demote { .. } => (Command, "node demote"),
            OpKind::RoleFlip { concurrent: false, .. } => (Command, "node demote+promote"),
            OpKind::RoleFlip { concurrent: true, .. } => (Command, "node demote&promote at once"),
            OpKind::NetworkCreate => (Command, "network create"),
            OpKind::DiskFail { .. } => (Fault, "disk fail-writes"),
            OpKind::DiskFailLeader { .. } => (Fault, "disk fail-writes leader"),
            OpKind::Crash { .. } => (Fault, "crash"),
            OpKind::CrashLeader => (Fault, "crash leader"),
            OpKind::Restart { .. } => (Fault, "restart"),
            OpKind::Partition { one_way: false, .. } => (Fault, "partition"),
            OpKind::Partition { one_way: true, .. } => (Fault, "partition one-way"),
            OpKind::IsolateLeader { one_way: false, .. } => (Fault, "isolate leader"),
            OpKind::IsolateLeader { one_way: true, .. } => (Fault, "isolate leader one-way"),
            OpKind::Heal => (Fault, "heal"),
            OpKind::Link { .. } => (Fault, "link delay/loss"),
            OpKind::ContainerRemove { .. } => (Fault, "container rm"),
            OpKind::SlowImage { .. } => (Fault, "image slow-start"),
            OpKind::CrashingImage { .. } => (Fault, "image crash-after"),
            OpKind::Wait { .. } => (Wait, "wait"),
        }
    }
}

/// What one case exercised once realised (skipped operations left out).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Exercised {
    pub managers: usize,
    pub workers: usize,
    /// The commands, in order (labels from [`COMMAND_KINDS`]).
    pub commands: Vec<&'static str>,
    /// The faults, in order (labels from [`FAULT_KINDS`]).
    pub faults: Vec<&'static str>,
    /// `wait` operations.
    pub waits: usize,
}

impl Exercised {
    /// The cluster shape, `M=3 W=2`.
    pub fn shape(&self) -> String {
        format!("M={} W={}", self.managers, self.workers)
    }

    /// One line: `commands: service create x2, node drain; faults: crash leader, heal` (a kind
    /// repeated shows its count).
    pub fn describe(&self) -> String {
        fn counted(labels: &[&str]) -> String {
            let mut out: Vec<(&str, usize)> = Vec::new();
            for label in labels {
                match out.iter_mut().find(|(l, _)| l == label) {
                    Some((_, n)) => *n += 1,
                    None => out.push((label, 1)),
                }
            }
            if out.is_empty() {
                return "none".into();
            }
            out.iter()
                .map(|(l, n)| if *n == 1 { l.to_string() } else { format!("{l} x{n}") })
                .collect::<Vec<_>>()
                .join(", ")
        }
        format!("commands: {}; faults: {}", counted(&self.commands), counted(&self.faults))
    }
}

/// An operation and the virtual time before it (`after:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    pub gap_ms: u32,
    pub kind: OpKind,
}

/// One generated case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Case {
    pub managers: usize,
    pub workers: usize,
    pub ops: Vec<Op>,
    /// The simulation seed (not shrunk: a smaller case keeps its seed, which keeps the random
    /// schedule that made it fail as close as possible).
    pub seed: u64,
}

fn op_kind() -> impl Strategy<Value = OpKind> {
    let secs = || proptest::option::of(1u8..=30);
    prop_oneof![
        4 => (any::<bool>(), 1u8..=6, 0u8..4).prop_map(|(global, replicas, image)| OpKind::Create { global, replicas, image }),
        3 => (any::<u8>(), 0u8..=6).prop_map(|(service, replicas)| OpKind::Scale { service, replicas }),
        3 => (any::<u8>(), 0u8..4, 0u8..3, any::<bool>()).prop_map(|(service, image, parallelism, start_first)| {
            OpKind::Update { service, image, parallelism, start_first }
        }),
        1 => any::<u8>().prop_map(|service| OpKind::Remove { service }),
        2 => any::<u8>().prop_map(|node| OpKind::Drain { node }),
        1 => any::<u8>().prop_map(|node| OpKind::Activate { node }),
        1 => any::<u8>().prop_map(|node| OpKind::Promote { node }),
        1 => any::<u8>().prop_map(|node| OpKind::Demote { node }),
        2 => (any::<u8>(), any::<bool>()).prop_map(|(node, concurrent)| OpKind::RoleFlip { node, concurrent }),
        2 => (any::<u8>(), 1u8..=20).prop_map(|(node, secs)| OpKind::DiskFail { node, secs }),
        1 => (1u8..=20).prop_map(|secs| OpKind::DiskFailLeader { secs }),
        1 => Just(OpKind::NetworkCreate),
        3 => any::<u8>().prop_map(|node| OpKind::Crash { node }),
        2 => Just(OpKind::CrashLeader),
        3 => any::<u8>().prop_map(|pick| OpKind::Restart { pick }),
        3 => (any::<u16>(), proptest::option::of(any::<u16>()), any::<bool>(), secs())
            .prop_map(|(side, other, one_way, secs)| OpKind::Partition { side, other, one_way, secs }),
        3 => (proptest::bool::weighted(0.25), secs()).prop_map(|(one_way, secs)| OpKind::IsolateLeader { one_way, secs }),
        2 => Just(OpKind::Heal),
        2 => (any::<u8>(), any::<u8>(), any::<u8>(), any::<u8>(), 0u8..4)
            .prop_map(|(a, b, delay_ms, spread_ms, loss)| OpKind::Link { a, b, delay_ms, spread_ms, loss }),
        2 => (any::<u8>(), any::<u8>()).prop_map(|(service, slot)| OpKind::ContainerRemove { service, slot }),
        1 => (1u8..=15).prop_map(|secs| OpKind::SlowImage { secs }),
        1 => (1u8..=30).prop_map(|secs| OpKind::CrashingImage { secs }),
        2 => (1u8..=30).prop_map(|secs| OpKind::Wait { secs }),
    ]
}

/// The strategy for whole cases.
pub fn case_strategy(config: &GenConfig) -> impl Strategy<Value = Case> {
    let managers = if config.managers.is_empty() { vec![1] } else { config.managers.clone() };
    let op = (0u32..=6, op_kind()).prop_map(|(gap, kind)| Op { gap_ms: gap * 500, kind });
    (
        proptest::sample::select(managers),
        0..=config.max_workers,
        proptest::collection::vec(op, 0..=config.max_ops),
        (1u64..=u32::MAX as u64).no_shrink(),
    )
        .prop_map(|(managers, workers, ops, seed)| Case { managers, workers, ops, seed })
}

/// A crashed host as the model knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Down {
    Host(String),
    /// Whichever manager led when `crash leader` ran.
    Leader,
}

#[derive(Debug, Clone)]
struct Service {
    name: String,
    global: bool,
    replicas: u64,
    removed: bool,
    crashy: bool,
}

/// What the realisation knows of the cluster. Writes may fail once faults began, so roles,
/// availability and services are what the cluster would have if they succeeded; crashes and
/// partitions (which cannot fail) are known exactly.
struct Model {
    hosts: Vec<String>,
    managers: BTreeSet<String>,
    down: Vec<Down>,
    drained: BTreeSet<String>,
    ever_drained: BTreeSet<String>,
    services: Vec<Service>,
    networks: usize,
    partitioned: bool,
    links: bool,
    faulted: bool,
    crashy_image: bool,
    /// A disk refused writes at some point (every disk is healed at the end).
    disk_faults: bool,
    steps: Vec<Step>,
    sabotage: Option<Sabotage>,
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn host(name: &str) -> Target {
    Target::Host(name.to_string())
}

impl Model {
    fn new(case: &Case, config: &GenConfig) -> Model {
        let mut hosts: Vec<String> = (1..=case.managers.max(1)).map(|i| format!("manager-{i}")).collect();
        let managers = hosts.iter().cloned().collect();
        hosts.extend((1..=case.workers).map(|i| format!("worker-{i}")));
        Model {
            hosts,
            managers,
            down: Vec::new(),
            drained: BTreeSet::new(),
            ever_drained: BTreeSet::new(),
            services: Vec::new(),
            networks: 0,
            partitioned: false,
            links: false,
            faulted: false,
            crashy_image: false,
            disk_faults: false,
            steps: Vec::new(),
            sabotage: config.sabotage,
        }
    }

    fn step(&mut self, after: Duration, action: Action, may_fail: bool) {
        self.steps.push(Step { after, action, line: 0, may_fail });
    }

    fn run(&mut self, after: Duration, text: String, may_fail: bool) {
        let Run(command) = text.parse().unwrap_or_else(|err| panic!("generated command {text:?} parses: {err}"));
        let action =
            Action::Run { command: Box::new(command), text, expect_error: None, expect_output: None, on: None };
        self.step(after, action, may_fail);
    }

    /// A write in the middle of the run: allowed to fail once a fault happened.
    fn write(&mut self, after: Duration, text: String) {
        let may_fail = self.faulted;
        self.run(after, text, may_fail);
    }

    fn fault(&mut self, after: Duration, fault: Fault) {
        self.step(after, Action::Fault(fault), false);
    }

    fn expect(&mut self, after: Duration, expectation: Expectation, within: Duration) {
        self.step(after, Action::Expect(Timed { expectation, within }), false);
    }

    fn live_services(&self, replicated_only: bool) -> Vec<usize> {
        (0..self.services.len())
            .filter(|&i| !(self.services[i].removed || replicated_only && self.services[i].global))
            .collect()
    }

    fn is_down(&self, name: &str) -> bool {
        self.down.iter().any(|d| *d == Down::Host(name.to_string()))
    }

    /// The hosts of a bit mask (bit i = host i).
    fn mask(&self, bits: u16) -> Vec<String> {
        self.hosts.iter().enumerate().filter(|(i, _)| bits & (1 << i) != 0).map(|(_, h)| h.clone()).collect()
    }

    /// A leader is sure to be elected: nothing crashed, nothing cut.
    fn whole(&self) -> bool {
        self.down.is_empty() && !self.partitioned
    }

    /// Realise one operation; `false` if it was skipped.
    fn apply(&mut self, op: &Op) -> bool {
        let after = Duration::from_millis(op.gap_ms as u64);
        let n = self.hosts.len();
        let pick = |i: u8| self.hosts[i as usize % n].clone();
        match &op.kind {
            OpKind::Create { global, replicas, image } => {
                let name = format!("s{}", self.services.len() + 1);
                let image = IMAGES[*image as usize % IMAGES.len()];
                let mode = if *global { "--mode global".to_string() } else { format!("--replicas {replicas}") };
                self.write(after, format!("service create --name {name} {mode} {image}"));
                self.services.push(Service {
                    name,
                    global: *global,
                    replicas: *replicas as u64,
                    removed: false,
                    crashy: image == CRASHY,
                });
            }
            OpKind::Scale { service, replicas } => {
                let live = self.live_services(true);
                let Some(&i) = live.get(*service as usize % live.len().max(1)) else { return false };
                self.services[i].replicas = *replicas as u64;
                let name = self.services[i].name.clone();
                self.write(after, format!("service scale {name}={replicas}"));
            }
            OpKind::Update { service, image, parallelism, start_first } => {
                let live = self.live_services(false);
                let Some(&i) = live.get(*service as usize % live.len().max(1)) else { return false };
                let image = IMAGES[*image as usize % IMAGES.len()];
                self.services[i].crashy |= image == CRASHY;
                let mut text = format!("service update --image {image}");
                if *parallelism != 1 {
                    text.push_str(&format!(" --update-parallelism {parallelism}"));
                }
                if *start_first {
                    text.push_str(" --update-order start-first");
                }
                text.push_str(&format!(" {}", self.services[i].name));
                self.write(after, text);
            }
            OpKind::Remove { service } => {
                let live = self.live_services(false);
                let Some(&i) = live.get(*service as usize % live.len().max(1)) else { return false };
                self.services[i].removed = true;
                let name = self.services[i].name.clone();
                self.write(after, format!("service rm {name}"));
            }
            OpKind::Drain { node } => {
                let name = pick(*node);
                // Keep one active node, so services can always be placed.
                if self.drained.contains(&name) || self.drained.len() + 1 >= n {
                    return false;
                }
                self.drained.insert(name.clone());
                self.ever_drained.insert(name.clone());
                self.write(after, format!("node update --availability drain {name}"));
                if self.sabotage == Some(Sabotage::DrainIsFatal) {
                    let active = Expectation::NodeAvailability {
                        node: name,
                        availability: shoal_core::api::Availability::Active,
                    };
                    self.expect(Duration::ZERO, active, secs(1));
                }
            }
            OpKind::Activate { node } => {
                let drained: Vec<String> = self.drained.iter().cloned().collect();
                let Some(name) = drained.get(*node as usize % drained.len().max(1)).cloned() else { return false };
                self.drained.remove(&name);
                self.write(after, format!("node update --availability active {name}"));
            }
            OpKind::Promote { node } => {
                let workers: Vec<String> = self.hosts.iter().filter(|h| !self.managers.contains(*h)).cloned().collect();
                let Some(name) = workers.get(*node as usize % workers.len().max(1)).cloned() else { return false };
                self.managers.insert(name.clone());
                self.write(after, format!("node promote {name}"));
            }
            OpKind::Demote { node } => {
                let managers: Vec<String> = self.managers.iter().cloned().collect();
                if managers.len() <= 1 {
                    return false;
                }
                let name = managers[*node as usize % managers.len()].clone();
                self.managers.remove(&name);
                self.write(after, format!("node demote {name}"));
            }
            OpKind::RoleFlip { node, concurrent } => {
                let managers: Vec<String> = self.managers.iter().cloned().collect();
                if managers.len() <= 1 {
                    return false;
                }
                let name = managers[*node as usize % managers.len()].clone();
                if *concurrent {
                    // Either may come first: the node ends a manager or a worker, and the demotion
                    // may be refused (promoted meanwhile); from here on the model cannot tell.
                    self.run(after, format!("node demote {name} & node promote {name}"), true);
                    self.faulted = true;
                } else {
                    self.write(after, format!("node demote {name}"));
                    self.write(Duration::ZERO, format!("node promote {name}"));
                }
            }
            OpKind::DiskFail { node, secs: s } => {
                let name = pick(*node);
                let fault = Fault::DiskFailWrites { target: host(&name), duration: Some(secs(*s as u64)) };
                self.fault(after, fault);
                self.disk_faults = true;
                self.faulted = true;
            }
            OpKind::DiskFailLeader { secs: s } => {
                if !self.whole() {
                    return false;
                }
                self.expect(after, Expectation::LeaderExists, secs(60));
                let fault = Fault::DiskFailWrites { target: Target::Leader, duration: Some(secs(*s as u64)) };
                self.fault(Duration::ZERO, fault);
                self.disk_faults = true;
                self.faulted = true;
            }
            OpKind::NetworkCreate => {
                self.networks += 1;
                let text = format!("network create --driver overlay net{}", self.networks);
                self.write(after, text);
            }
            OpKind::Crash { node } => {
                let name = pick(*node);
                if self.is_down(&name) || self.down.contains(&Down::Leader) {
                    return false;
                }
                self.fault(after, Fault::Crash(host(&name)));
                self.down.push(Down::Host(name));
                self.faulted = true;
            }
            OpKind::CrashLeader => {
                if !self.whole() {
                    return false;
                }
                self.expect(after, Expectation::LeaderExists, secs(60));
                self.fault(Duration::ZERO, Fault::Crash(Target::Leader));
                self.down.push(Down::Leader);
                self.faulted = true;
            }
            OpKind::Restart { pick } => {
                if self.down.is_empty() {
                    return false;
                }
                let at = *pick as usize % self.down.len();
                let target = match self.down.remove(at) {
                    Down::Host(name) => host(&name),
                    Down::Leader => Target::Crashed,
                };
                self.fault(after, Fault::Restart(target));
            }
            OpKind::Partition { side, other, one_way, secs: for_secs } => {
                let side_hosts = self.mask(*side);
                if side_hosts.is_empty() || side_hosts.len() == n {
                    return false;
                }
                let other = match other.map(|o| self.mask(o & !side)) {
                    Some(hosts) if !hosts.is_empty() => Side::Hosts(hosts.iter().map(|h| host(h)).collect()),
                    _ => Side::Rest,
                };
                let fault = Fault::Partition {
                    side: side_hosts.iter().map(|h| host(h)).collect(),
                    other,
                    one_way: *one_way,
                    duration: for_secs.map(|s| secs(s as u64)),
                };
                self.fault(after, fault);
                self.partitioned = true;
                self.faulted = true;
            }
            OpKind::IsolateLeader { one_way, secs: for_secs } => {
                if !self.whole() || n < 2 {
                    return false;
                }
                self.expect(after, Expectation::LeaderExists, secs(60));
                let fault = Fault::Partition {
                    side: vec![Target::Leader],
                    other: Side::Rest,
                    one_way: *one_way,
                    duration: for_secs.map(|s| secs(s as u64)),
                };
                self.fault(Duration::ZERO, fault);
                self.partitioned = true;
                self.faulted = true;
            }
            OpKind::Heal => {
                if !self.partitioned && !self.links {
                    return false;
                }
                self.fault(after, Fault::Heal);
                self.partitioned = false;
                self.links = false;
            }
            OpKind::Link { a, b, delay_ms, spread_ms, loss } => {
                let (a, b) = (pick(*a), pick(*b));
                if a == b {
                    return false;
                }
                let delay_min = Duration::from_millis(1 + *delay_ms as u64 % 100);
                let delay_max = delay_min + Duration::from_millis(*spread_ms as u64 % 200);
                let loss = [0.0, 0.05, 0.1, 0.2][*loss as usize % 4];
                self.fault(after, Fault::Link { a: host(&a), b: host(&b), delay_min, delay_max, loss });
                self.links = true;
                self.faulted = true;
            }
            OpKind::ContainerRemove { service, slot } => {
                let live: Vec<usize> =
                    self.live_services(true).into_iter().filter(|&i| self.services[i].replicas > 0).collect();
                let Some(&i) = live.get(*service as usize % live.len().max(1)) else { return false };
                let slot = 1 + *slot as u64 % self.services[i].replicas;
                let fault = Fault::ContainerRemove { service: self.services[i].name.clone(), slot };
                // The task may not be running at that moment (starting, moved, its node down).
                self.step(after, Action::Fault(fault), true);
            }
            OpKind::SlowImage { secs: s } => {
                let fault = ImageFault::SlowStart(secs(*s as u64));
                self.fault(after, Fault::Image { image: SLOW.into(), fault });
            }
            OpKind::CrashingImage { secs: s } => {
                let fault = ImageFault::CrashAfter { after: secs(*s as u64), exit_code: 1 };
                self.fault(after, Fault::Image { image: CRASHY.into(), fault });
                self.crashy_image = true;
            }
            OpKind::Wait { secs: s } => {
                self.step(after, Action::Wait(secs(*s as u64)), false);
            }
        }
        true
    }

    /// Let the last faults act, heal, restart, settle, undo what would keep services from
    /// converging, then strict writes.
    fn finish(&mut self) {
        if self.partitioned || self.links || !self.down.is_empty() {
            // A partition, a cut or a crash as the last operation would otherwise be healed at once
            // and test nothing: the cluster lives with it for a while first (an election, writes on
            // the majority side, reads of a deposed leader).
            self.step(Duration::ZERO, Action::Wait(FAULT_TAIL), false);
        }
        if self.partitioned || self.links {
            self.fault(Duration::ZERO, Fault::Heal);
        }
        if self.disk_faults {
            for name in self.hosts.clone() {
                self.fault(Duration::ZERO, Fault::DiskHeal(host(&name)));
            }
        }
        while let Some(down) = self.down.pop() {
            let target = match down {
                Down::Host(name) => host(&name),
                Down::Leader => Target::Crashed,
            };
            self.fault(Duration::ZERO, Fault::Restart(target));
        }
        self.expect(Duration::ZERO, Expectation::LeaderExists, secs(60));
        if self.faulted {
            self.step(Duration::ZERO, Action::Wait(secs(10)), false);
        }
        for name in self.ever_drained.clone() {
            self.run(Duration::ZERO, format!("node update --availability active {name}"), false);
        }
        if self.crashy_image {
            // The service may not exist (its create failed, or it was removed): may fail.
            for i in 0..self.services.len() {
                if self.services[i].crashy {
                    let text = format!("service update --image {FINAL_IMAGE} {}", self.services[i].name);
                    self.run(Duration::ZERO, text, true);
                }
            }
        }
        self.run(Duration::ZERO, "service create --name probe --replicas 2 nginx:1.25".into(), false);
    }
}

impl Case {
    /// A one-line description (shape, operation count, seed).
    pub fn summary(&self) -> String {
        format!("M={} W={} {} ops seed {}", self.managers, self.workers, self.ops.len(), self.seed)
    }

    /// What the case exercises once realised: its shape, and the commands and faults of the
    /// operations that were not skipped, in order (see [`OpKind::label`]).
    pub fn exercised(&self, config: &GenConfig) -> Exercised {
        let mut model = Model::new(self, config);
        let mut exercised = Exercised { managers: self.managers.max(1), workers: self.workers, ..Exercised::default() };
        for op in &self.ops {
            if model.apply(op) {
                match op.kind.label() {
                    (Area::Command, label) => exercised.commands.push(label),
                    (Area::Fault, label) => exercised.faults.push(label),
                    (Area::Wait, _) => exercised.waits += 1,
                }
            }
        }
        exercised
    }

    /// The case as a scenario (see the module docs for the rules that keep it valid).
    pub fn scenario(&self, config: &GenConfig) -> Scenario {
        let mut model = Model::new(self, config);
        if config.traffic {
            model.run(
                Duration::ZERO,
                format!("service create --name {TRAFFIC_SERVICE} --replicas 2 -p 8080:80 nginx:1.25"),
                false,
            );
            let running = Expectation::ServiceRunning { service: TRAFFIC_SERVICE.into(), count: 2, image: None };
            model.expect(Duration::ZERO, running, secs(60));
            let client = crate::client::ClientSpec {
                name: "load".into(),
                target: "manager-1:8080".into(),
                from: crate::scenario::parse::CLIENT_HOST.into(),
                rate: 10.0,
                keepalive: false,
                network: None,
            };
            model.step(Duration::ZERO, Action::Client(ClientStep::Start(client)), false);
        }
        let applied = self.ops.iter().filter(|op| model.apply(op)).count();
        model.finish();
        let mut expect = vec![
            Final::Eventually(Timed {
                expectation: Expectation::ServiceRunning { service: "probe".into(), count: 2, image: None },
                within: secs(120),
            }),
            Final::Always("replicas-bound".into()),
            Final::Always("task-state-forward".into()),
            Final::Always("no-running-task-on-drained-node".into()),
            Final::Always("linearizable".into()),
        ];
        if config.traffic {
            expect.push(Final::Always("client-requests".into()));
        }
        Scenario {
            name: format!(
                "fuzz: M={} W={}, {applied} operations and faults (case seed {})",
                self.managers, self.workers, self.seed
            ),
            cluster: Shape { managers: self.managers.max(1), workers: self.workers },
            steps: model.steps,
            expect,
            converge: true,
            converge_within: secs(180),
            mesh_drain: true,
            control_workload: config.control_workload,
            planted_bug: match config.sabotage {
                Some(Sabotage::StaleLeaderReads) => Some(crate::scenario::parse::PlantedBug::StaleLeaderReads),
                _ => None,
            },
            file: "generated".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

    use super::*;
    use crate::scenario::render::render;

    fn runner(seed: u8) -> TestRunner {
        TestRunner::new_with_rng(Config::default(), TestRng::from_seed(RngAlgorithm::ChaCha, &[seed; 32]))
    }

    /// Every generated scenario renders to YAML that parses back to it, restarts every host it
    /// crashed, and ends with the strict probe.
    #[test]
    fn generated_scenarios_are_valid_and_round_trip() {
        let config = GenConfig::default();
        let strategy = case_strategy(&config);
        let mut runner = runner(7);
        let mut faults = 0;
        for _ in 0..300 {
            let case = strategy.new_tree(&mut runner).expect("a case").current();
            let scenario = case.scenario(&config);
            let text = render(&scenario, &[case.summary()]);
            let mut parsed = Scenario::parse(&text, "generated").unwrap_or_else(|e| panic!("{e}\n{text}"));
            for step in &mut parsed.steps {
                step.line = 0;
            }
            assert_eq!(parsed, scenario, "{text}");
            let (mut crashed, mut restarted) = (0, 0);
            for step in &scenario.steps {
                match &step.action {
                    Action::Fault(Fault::Crash(_)) => crashed += 1,
                    Action::Fault(Fault::Restart(_)) => restarted += 1,
                    Action::Fault(_) => faults += 1,
                    _ => {}
                }
            }
            assert_eq!(crashed, restarted, "every crashed host is restarted:\n{text}");
            let last = scenario.steps.last().expect("steps");
            assert!(
                matches!(&last.action, Action::Run { text, .. } if text.starts_with("service create --name probe"))
            );
            assert!(!last.may_fail);
        }
        assert!(faults > 300, "faults are generated ({faults})");
    }

    /// The operation mix covers quick role flips (a demote/promote pair back to back, and a promote
    /// of a node being demoted) and disk write failures that heal, on named hosts and the leader.
    #[test]
    fn the_mix_covers_role_flips_and_disk_failures() {
        let config = GenConfig::default();
        let strategy = case_strategy(&config);
        let mut runner = runner(3);
        let (mut pairs, mut at_once, mut disk_hosts, mut disk_leader) = (0, 0, 0, 0);
        for _ in 0..300 {
            let scenario = strategy.new_tree(&mut runner).expect("a case").current().scenario(&config);
            for (i, step) in scenario.steps.iter().enumerate() {
                match &step.action {
                    Action::Run { text, .. } if text.contains(" & node promote ") => at_once += 1,
                    Action::Run { text, .. } if text.starts_with("node demote ") => {
                        let name = text.trim_start_matches("node demote ");
                        let next = scenario.steps.get(i + 1).map(|s| &s.action);
                        if matches!(next, Some(Action::Run { text, .. }) if *text == format!("node promote {name}")) {
                            pairs += 1;
                        }
                    }
                    Action::Fault(Fault::DiskFailWrites { target, duration: Some(_) }) => match target {
                        Target::Leader => disk_leader += 1,
                        _ => disk_hosts += 1,
                    },
                    Action::Fault(Fault::DiskFailWrites { duration: None, .. }) => {
                        panic!("a disk fault that never heals")
                    }
                    _ => {}
                }
            }
        }
        assert!(
            pairs > 10 && at_once > 10 && disk_hosts > 10 && disk_leader > 5,
            "{pairs} {at_once} {disk_hosts} {disk_leader}"
        );
    }

    #[test]
    fn leader_targets_only_when_a_leader_is_sure() {
        let case = Case {
            managers: 3,
            workers: 1,
            ops: vec![
                Op { gap_ms: 0, kind: OpKind::Crash { node: 1 } },
                Op { gap_ms: 0, kind: OpKind::CrashLeader },
                Op { gap_ms: 0, kind: OpKind::Restart { pick: 0 } },
                Op { gap_ms: 0, kind: OpKind::CrashLeader },
                Op { gap_ms: 0, kind: OpKind::Crash { node: 0 } },
                Op { gap_ms: 0, kind: OpKind::Create { global: false, replicas: 2, image: 0 } },
            ],
            seed: 1,
        };
        let scenario = case.scenario(&GenConfig::default());
        let text = render(&scenario, &[]);
        // The first crash-leader is skipped (manager-2 is down), the second follows a leader check,
        // the named crash after it is skipped, and the create may fail (faults began).
        assert_eq!(text.matches("fault: crash leader").count(), 1, "{text}");
        assert!(text.contains("  - expect: leader exists within 60s\n  - fault: crash leader\n"), "{text}");
        assert!(!text.contains("fault: crash manager-1"), "{text}");
        assert!(text.contains("fault: restart crashed"), "{text}");
        assert!(
            text.contains("  - run: service create --name s1 --replicas 2 nginx:1.25\n    may_fail: true\n"),
            "{text}"
        );
    }

    #[test]
    fn drain_keeps_one_active_node_and_is_undone_at_the_end() {
        let drain = |node| Op { gap_ms: 500, kind: OpKind::Drain { node } };
        let case = Case { managers: 1, workers: 1, ops: vec![drain(0), drain(1)], seed: 9 };
        let text = render(&case.scenario(&GenConfig::default()), &[]);
        assert_eq!(text.matches("--availability drain").count(), 1, "{text}");
        assert!(text.contains("  - after: 500ms\n    run: node update --availability drain manager-1\n"), "{text}");
        assert!(text.contains("run: node update --availability active manager-1"), "{text}");
    }
}
