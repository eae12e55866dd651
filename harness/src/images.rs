//! Images for a real run. Scenarios name images the simulator makes up (`nginx:1.25`, the voting
//! app's); daemons run with `--pull never` and nothing is ever pulled, so for every image a
//! scenario names that the engine lacks, the run tags a local *stand-in*, built from the local test
//! image `shoal-test/busybox:latest` (itself built from busybox-static when missing, by
//! `shoal_testimage`) with `docker build --pull=false`. A stand-in's containers behave as the
//! simulator's containers of that image do ([`StandIn`]):
//!
//! - they sleep until stopped, or serve (and EXPOSE, so the daemons' VIP listeners take those
//!   ports, as the simulator's images expose theirs): busybox `httpd` on each TCP port, answering `GET /` with
//!   the container's hostname (its short id), and `udp-answer` (a static program of this crate,
//!   `standin/udp_answer.rs`, built by the build script: busybox has no UDP server) answering each
//!   datagram on each UDP port with it;
//! - they exit at once (143) on SIGTERM, as the simulator's do (a bare `sleep` as PID 1 ignores
//!   SIGTERM, and every stop would wait out the grace period);
//! - the image faults: `slow-start T` waits T before serving, and the image's HEALTHCHECK passes
//!   only from then on, so the task stays `starting` for T as the simulator's start does;
//!   `answers-after T` answers each request after T (a CGI script that sleeps); `crash-after T exit
//!   C` exits with C after T; `unhealthy` creates `/tmp/unhealthy` at start (which the scenarios'
//!   `--health-cmd "test ! -e /tmp/unhealthy"` checks) and has a HEALTHCHECK that checks it too.
//!
//! Stand-ins are kept as `shoal-harness/stand-in:<hash of what they do>` (labelled
//! `com.shoal.harness=stand-in`), so each is built once; the run removes the tags it put on the
//! scenario's image names, and only those (see [`crate::cleanup`]).

use std::process::{Command, Stdio};
use std::time::Duration;

use shoal_sim::scenario::cli::{Command as StepCommand, StackCommand};
use shoal_sim::scenario::fault::Fault;
use shoal_sim::scenario::parse::Action;
use shoal_sim::scenario::stack::load_compose;
use shoal_sim::scenario::Scenario;

use shoal_core::control::ControlRequest;

pub const BASE_IMAGE: &str = shoal_testimage::TEST_IMAGE;
/// The repository of every stand-in image.
pub const STAND_IN_REPO: &str = "shoal-harness/stand-in";
/// The file whose presence makes a stand-in's health checks fail (`container unhealthy`,
/// `image X unhealthy`).
pub const UNHEALTHY_MARK: &str = "/tmp/unhealthy";
/// The file a slow-starting stand-in creates once it serves (its HEALTHCHECK waits for it).
const STARTED_MARK: &str = "/tmp/started";
/// The UDP server copied into serving stand-ins (built by build.rs).
const UDP_ANSWER: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/udp-answer"));

/// What the containers of one stand-in do: the behaviour the simulator gives containers of the
/// image it stands for (`shoal_sim::executor::Behavior`), as far as a real container can have it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StandIn {
    /// TCP ports served with HTTP (none and no UDP port: the containers only sleep).
    pub tcp: Vec<u16>,
    /// UDP ports answered with the hostname.
    pub udp: Vec<u16>,
    /// TCP ports also served with HTTP but not EXPOSEd (`image X listens …`): the daemons find
    /// them in the containers' socket tables.
    pub listens: Vec<u16>,
    /// `slow-start`: time before serving; the task is `starting` meanwhile (the HEALTHCHECK).
    pub start_delay: Duration,
    /// `answers-after`: time before each HTTP answer.
    pub answer_delay: Duration,
    /// `crash-after T exit C`: exit with C this long after serving began.
    pub exit_after: Option<(Duration, i64)>,
    /// `unhealthy`: health checks fail from the start.
    pub unhealthy: bool,
}

impl StandIn {
    /// The stand-in for `image` at the start of a run: one that serves the image's ports (HTTP on
    /// 80 and what the simulator says the image exposes) when `serves`, else one that sleeps.
    pub fn for_image(image: &str, serves: bool) -> StandIn {
        let mut stand_in = StandIn::default();
        if serves {
            // Port 80 always: the scenarios' made-up images are web servers unless the simulator's
            // table of well-known images says more.
            let mut ports = vec![("tcp".to_string(), 80)];
            ports.extend(shoal_sim::executor::exposed_ports_of(image));
            stand_in.serve(&ports);
        }
        stand_in
    }

    /// Serve these ports (`(protocol, port)`) and no others from now on (`image X exposes …`).
    pub fn serve(&mut self, ports: &[(String, u16)]) {
        self.tcp.clear();
        self.udp.clear();
        for (protocol, port) in ports {
            let list = if protocol == "udp" { &mut self.udp } else { &mut self.tcp };
            if !list.contains(port) {
                list.push(*port);
            }
        }
    }

    /// The container's program (`/stand-in/run.sh`).
    fn script(&self) -> String {
        let seconds = |d: Duration| format!("{:.3}", d.as_secs_f64());
        let mut script = String::from("trap 'exit 143' TERM\n");
        if self.unhealthy {
            script += &format!("touch {UNHEALTHY_MARK}\n");
        }
        if !self.start_delay.is_zero() {
            script += &format!("sleep {} & wait $!\n", seconds(self.start_delay));
        }
        script += &format!("touch {STARTED_MARK}\n");
        // On the host's network (a service with no network and no published port; its interfaces
        // include the engine's docker0) a server would take the host's ports: it only sleeps there.
        let serves = !self.tcp.is_empty() || !self.udp.is_empty() || !self.listens.is_empty();
        if serves {
            script += "if [ ! -e /sys/class/net/docker0 ]; then\n";
        }
        if !self.tcp.is_empty() || !self.listens.is_empty() {
            script += "mkdir -p /www/cgi-bin\n";
            if self.answer_delay.is_zero() {
                script += "hostname > /www/index.html\n";
            } else {
                // No index.html: httpd runs cgi-bin/index.cgi for `GET /`.
                script += "cp /stand-in/index.cgi /www/cgi-bin/index.cgi\n";
            }
            for port in self.tcp.iter().chain(&self.listens) {
                script += &format!("httpd -f -p {port} -h /www &\n");
            }
        }
        if !self.udp.is_empty() {
            let ports: Vec<String> = self.udp.iter().map(u16::to_string).collect();
            script += &format!("/stand-in/udp-answer {} &\n", ports.join(" "));
        }
        if serves {
            script += "fi\n";
        }
        match self.exit_after {
            Some((after, code)) => script += &format!("sleep {} & wait $!\nexit {code}\n", seconds(after)),
            None => script += "sleep 1000000 & wait\n",
        }
        script
    }

    fn dockerfile(&self) -> String {
        let mut dockerfile =
            format!("FROM {BASE_IMAGE}\nCOPY stand-in /stand-in/\nCMD [\"sh\", \"/stand-in/run.sh\"]\n");
        dockerfile += "LABEL com.shoal.harness=stand-in\n";
        // What it serves, it EXPOSEs: the daemons read the image's ports for the service's VIP
        // listeners, as the simulator's images expose theirs.
        for port in &self.tcp {
            dockerfile += &format!("EXPOSE {port}/tcp\n");
        }
        for port in &self.udp {
            dockerfile += &format!("EXPOSE {port}/udp\n");
        }
        if self.unhealthy {
            dockerfile +=
                &format!("HEALTHCHECK --interval=1s --timeout=2s --retries=3 CMD test ! -e {UNHEALTHY_MARK}\n");
        } else if !self.start_delay.is_zero() {
            // Failures before the start count for nothing (the start period); the first pass makes
            // the container healthy, and the agent reports the task running.
            let period = self.start_delay + Duration::from_secs(60);
            dockerfile += &format!(
                "HEALTHCHECK --interval=500ms --timeout=2s --start-period={}s --retries=3 CMD test -e {STARTED_MARK}\n",
                period.as_secs()
            );
        }
        dockerfile
    }

    fn cgi(&self) -> String {
        format!(
            "#!/bin/sh\nsleep {:.3}\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\nhostname\n",
            self.answer_delay.as_secs_f64()
        )
    }

    /// The image's tag: what it does, hashed (FNV-1a), so a changed stand-in gets a new image.
    pub fn tag(&self) -> String {
        let mut hash: u64 = 0xcbf29ce484222325;
        for bytes in [self.dockerfile().as_bytes(), self.script().as_bytes(), self.cgi().as_bytes(), UDP_ANSWER] {
            for byte in bytes {
                hash ^= u64::from(*byte);
                hash = hash.wrapping_mul(0x100000001b3);
            }
        }
        format!("{STAND_IN_REPO}:{hash:016x}")
    }
}

/// The image id of `name` on the engine, if it has it.
pub fn image_id(name: &str) -> Option<String> {
    let output = Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", name])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    output.status.success().then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// The image id of the stand-in `stand_in`, built from the local test image if the engine lacks it.
pub fn stand_in(stand_in: &StandIn) -> Result<String, String> {
    let tag = stand_in.tag();
    if let Some(id) = image_id(&tag) {
        return Ok(id);
    }
    shoal_testimage::ensure().map_err(|e| e.to_string())?;
    let context =
        std::env::temp_dir().join(format!("shoal-real-image-{}-{}", std::process::id(), &tag[tag.len() - 16..]));
    let built = (|| {
        let files = context.join("stand-in");
        std::fs::create_dir_all(&files).map_err(|e| format!("cannot make {}: {e}", files.display()))?;
        let write = |name: &str, bytes: &[u8], mode: u32| {
            use std::os::unix::fs::PermissionsExt;
            let path = files.join(name);
            std::fs::write(&path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                .map_err(|e| format!("cannot chmod {}: {e}", path.display()))
        };
        write("run.sh", stand_in.script().as_bytes(), 0o755)?;
        write("index.cgi", stand_in.cgi().as_bytes(), 0o755)?;
        write("udp-answer", UDP_ANSWER, 0o755)?;
        std::fs::write(context.join("Dockerfile"), stand_in.dockerfile())
            .map_err(|e| format!("cannot write the Dockerfile: {e}"))?;
        let output = Command::new("docker")
            .args(["build", "--pull=false", "-q", "-t", &tag])
            .arg(&context)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run docker build: {e}"))?;
        if !output.status.success() {
            return Err(format!("docker build of {tag} failed: {}", String::from_utf8_lossy(&output.stderr).trim()));
        }
        image_id(&tag).ok_or_else(|| format!("docker build made no {tag}"))
    })();
    let _ = std::fs::remove_dir_all(&context);
    built
}

/// The plain sleeping stand-in's id.
pub fn sleeper() -> Result<String, String> {
    stand_in(&StandIn::default())
}

/// Every image the scenario's steps name (services, updates, compose files, image faults).
pub fn scenario_images(scenario: &Scenario) -> Vec<String> {
    let mut images = Vec::new();
    let mut add = |image: &str| {
        if !image.is_empty() && !images.iter().any(|i| i == image) {
            images.push(image.to_string());
        }
    };
    for step in &scenario.steps {
        match &step.action {
            Action::Run { command, expect_error: None, .. } => match command.as_ref() {
                StepCommand::Request(ControlRequest::ServiceCreate { spec }) => add(&spec.task.image),
                StepCommand::ServiceUpdate { changes, .. } => {
                    if let Some(image) = &changes.image {
                        add(image);
                    }
                }
                StepCommand::Stack(StackCommand::Deploy { stack, file, .. }) => {
                    if let Ok(plan) = load_compose(&scenario.file, file, stack) {
                        for spec in &plan.services {
                            add(&spec.task.image);
                        }
                    }
                }
                _ => {}
            },
            Action::Fault(Fault::Image { image, .. }) => add(image),
            _ => {}
        }
    }
    images
}

/// Whether the scenario sends traffic to its services (clients, `port …` expectations): its images
/// must then answer requests.
pub fn sends_traffic(scenario: &Scenario) -> bool {
    use shoal_sim::scenario::expect::Expectation;
    let probes = |e: &Expectation| matches!(e, Expectation::PortAnswers { .. } | Expectation::PortClosed { .. });
    scenario.steps.iter().any(|step| match &step.action {
        Action::Client(_) => true,
        Action::Expect(timed) => probes(&timed.expectation),
        _ => false,
    })
}

/// The images the serving stand-in stands for: in a scenario that sends traffic, every image but
/// those only of services on the host's network (no published port, no network), where a server
/// on port 80 would take the host's port.
pub fn served_images(scenario: &Scenario) -> Vec<String> {
    if !sends_traffic(scenario) {
        return Vec::new();
    }
    let mut bridged = Vec::new();
    let mut host_only = Vec::new();
    let mut image_of = std::collections::BTreeMap::new();
    for step in &scenario.steps {
        if let Action::Run { command, .. } = &step.action {
            match command.as_ref() {
                StepCommand::Request(ControlRequest::ServiceCreate { spec }) => {
                    image_of.insert(spec.name.clone(), spec.task.image.clone());
                    if spec.ports.is_empty() && spec.task.networks.is_empty() {
                        host_only.push(spec.task.image.clone());
                    } else {
                        bridged.push(spec.task.image.clone());
                    }
                }
                // A service put on a network or given a port later serves there.
                StepCommand::ServiceUpdate { service, changes }
                    if !changes.network_add.is_empty() || !changes.publish_add.is_empty() =>
                {
                    bridged.extend(changes.image.clone().or_else(|| image_of.get(service).cloned()));
                }
                _ => {}
            }
        }
    }
    scenario_images(scenario).into_iter().filter(|i| bridged.contains(i) || !host_only.contains(i)).collect()
}

/// Tag the image `id` as `name`.
pub fn tag(id: &str, name: &str) -> Result<(), String> {
    let output = Command::new("docker")
        .args(["tag", id, name])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run docker tag: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!("docker tag {name} failed: {}", String::from_utf8_lossy(&output.stderr).trim()))
    }
}

/// Remove the tag `name` if it points to `id` (an image fault "pull fails": the engine lacks it).
pub fn untag(name: &str, id: &str) -> Result<(), String> {
    if image_id(name).as_deref() != Some(id) {
        return Err(format!("{name} is not an image this run tagged"));
    }
    let output = Command::new("docker")
        .args(["rmi", "--no-prune", name])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run docker rmi: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!("docker rmi {name} failed: {}", String::from_utf8_lossy(&output.stderr).trim()))
    }
}

/// Whether the scenario's tasks need bridges (published ports, networks, stacks).
pub fn uses_bridges(scenario: &Scenario) -> bool {
    scenario.steps.iter().any(|step| match &step.action {
        Action::Run { command, .. } => match command.as_ref() {
            StepCommand::Request(ControlRequest::ServiceCreate { spec }) => {
                !spec.ports.is_empty() || !spec.task.networks.is_empty()
            }
            StepCommand::Request(ControlRequest::NetworkCreate { .. }) => true,
            StepCommand::ServiceUpdate { changes, .. } => !changes.publish_add.is_empty(),
            StepCommand::Stack(StackCommand::Deploy { .. }) => true,
            _ => false,
        },
        _ => false,
    })
}

/// Docker networks that shoal daemons made (they carry shoal's node label) — of another cluster,
/// when called before this run's cluster exists.
pub fn shoal_bridges() -> Vec<String> {
    let filter = format!("label={}", shoal_core::env::executor::LABEL_NODE_ID);
    Command::new("docker")
        .args(["network", "ls", "--filter", &filter, "--format", "{{.Name}}"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}
