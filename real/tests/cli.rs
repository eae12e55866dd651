//! The CLI's shapes and parsers against Docker's goldens (docker/cli testdata, quoted in
//! /work/shared/reference/swarm-cli-shapes.md), flag parsing and refusals, and the CLI's Engine API
//! client against a daemon's API (answers, Docker's errors, garbled input).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use clap::Parser;
use shoal::cli::args::{Cli, Command, NetworkCommand, ServiceCommand};
use shoal::cli::listing::Listing;
use shoal::cli::{render, spec};
use shoal::daemon::{Bootstrap, Daemon, NodeLauncher, NodeSettings, RunningNode};
use shoal::engine_api;
use shoal::engine_client::{ApiError, Endpoint, EngineClient};
use shoal::format::{self, Table};
use shoal::local_api::{self, LocalAnswer, LocalError, LocalHandler, LocalRequest, LocalResult};
use shoal_core::api::{
    Availability, ManagerStatus, Meta, Node, NodeDescription, NodeRole, NodeSpec, NodeState, NodeStatus, PublishMode,
    RestartBackoff, ServiceMode, Task, TaskSpec, TaskState, TaskStatus, UpdateOrder,
};
use shoal_core::control::{ControlRequest, NodeView};
use shoal_core::trace::TraceSink;
use tokio::io::AsyncWriteExt;

// ---------------------------------------------------------------- tables

#[test]
fn table_pads_like_docker_tabwriter() {
    // Golden `stack-services-without-format.golden`.
    let mut table = Table::new(["ID", "NAME", "MODE", "REPLICAS", "IMAGE", "PORTS"]);
    table.row(["id-foo", "name-foo", "replicated", "0/2", "busybox:latest", "*:30000->3232/tcp"]);
    assert_eq!(
        table.render(),
        "ID        NAME       MODE         REPLICAS   IMAGE            PORTS\n\
         id-foo    name-foo   replicated   0/2        busybox:latest   *:30000->3232/tcp\n"
    );
}

#[test]
fn table_network_ls_golden() {
    let mut table = Table::new(["NETWORK ID", "NAME", "DRIVER", "SCOPE"]);
    table.row(["123454321", "network_1", "09.7.01", "global"]);
    assert_eq!(table.render(), "NETWORK ID   NAME        DRIVER    SCOPE\n123454321    network_1   09.7.01   global\n");
}

fn node(id: &str, hostname: &str, role: NodeRole, engine: &str) -> Node {
    Node {
        id: id.into(),
        meta: Meta::default(),
        spec: NodeSpec { desired_role: role, availability: Availability::Active, labels: BTreeMap::new() },
        description: NodeDescription {
            hostname: hostname.into(),
            engine_version: engine.into(),
            ..NodeDescription::default()
        },
        status: NodeStatus { state: NodeState::Ready, message: String::new(), addr: "127.0.0.1".into() },
        role,
        manager_status: (role == NodeRole::Manager)
            .then(|| ManagerStatus { raft_id: 1, addr: "127.0.0.1:2377".into() }),
    }
}

#[test]
fn node_ls_matches_golden() {
    // Golden `node-list-sort.golden`: natural sort by hostname, `*` on self, Leader/Reachable.
    let nodes = vec![
        NodeView {
            node: node("nodeID1", "node-2-foo", NodeRole::Manager, "."),
            leader: true,
            reachability: "reachable".into(),
        },
        NodeView {
            node: node("nodeID2", "node-10-foo", NodeRole::Manager, "18.03.0-ce"),
            leader: false,
            reachability: "reachable".into(),
        },
        NodeView {
            node: node("nodeID3", "node-1-foo", NodeRole::Worker, "1.13.0"),
            leader: false,
            reachability: "".into(),
        },
    ];
    let text = render::node_list(nodes, "nodeID1").render(None, false).unwrap();
    assert_eq!(
        text,
        "ID          HOSTNAME      STATUS    AVAILABILITY   MANAGER STATUS   ENGINE VERSION\n\
         nodeID3     node-1-foo    Ready     Active                          1.13.0\n\
         nodeID1 *   node-2-foo    Ready     Active         Leader           .\n\
         nodeID2     node-10-foo   Ready     Active         Reachable        18.03.0-ce\n"
    );
}

#[test]
fn node_ls_json_and_quiet() {
    let nodes = vec![NodeView {
        node: node("k8f4w7qtzpj5sqzclcqafw35g", "docker-desktop", NodeRole::Manager, "23.0.3"),
        leader: true,
        reachability: "reachable".into(),
    }];
    let listing = render::node_list(nodes, "k8f4w7qtzpj5sqzclcqafw35g");
    assert_eq!(
        listing.render(Some("json"), false).unwrap(),
        "{\"Availability\":\"Active\",\"EngineVersion\":\"23.0.3\",\"Hostname\":\"docker-desktop\",\
         \"ID\":\"k8f4w7qtzpj5sqzclcqafw35g\",\"ManagerStatus\":\"Leader\",\"Self\":true,\"Status\":\"Ready\",\
         \"TLSStatus\":\"Ready\"}\n"
    );
    assert_eq!(listing.render(None, true).unwrap(), "k8f4w7qtzpj5sqzclcqafw35g\n");
    assert_eq!(listing.render(Some("{{.Hostname}}: {{.Status}}"), false).unwrap(), "docker-desktop: Ready\n");
    assert_eq!(
        listing.render(Some("table {{.Hostname}}\\t{{.Status}}"), false).unwrap(),
        "HOSTNAME         STATUS\ndocker-desktop   Ready\n"
    );
    assert!(listing.render(Some("{{.Nope}}"), false).is_err());
}

fn task(id: &str, slot: u64, created_ms: u64, state: TaskState, err: &str, ts_ms: u64) -> Task {
    // Through serde, so fields the core adds later (with serde defaults) need no change here.
    let spec = TaskSpec { image: "myimage:mytag".into(), ..TaskSpec::default() };
    let status = TaskStatus { state, err: err.into(), timestamp_ms: ts_ms, ..TaskStatus::default() };
    serde_json::from_value(serde_json::json!({
        "id": id,
        "meta": Meta { version: 1, created_at_ms: created_ms, updated_at_ms: created_ms },
        "service_id": "service-id",
        "service_name": "service-name-foo",
        "slot": slot,
        "node_id": "node-id-bar",
        "spec_version": 1,
        "spec": spec,
        "desired_state": "ready",
        "status": status,
    }))
    .unwrap()
}

#[test]
fn task_table_indents_older_tasks_like_golden() {
    // Golden `task-print-with-indentation.golden`.
    let now = 10 * 3_600_000;
    let two_hours_ago = now - 2 * 3_600_000;
    let tasks = vec![
        task("id-bar", 1, 1, TaskState::Failed, "", two_hours_ago),
        task("id-foo", 1, 2, TaskState::Failed, "", two_hours_ago),
    ];
    let hosts = BTreeMap::from([("node-id-bar".to_string(), "node-name-bar".to_string())]);
    let text = render::task_list(tasks, &hosts, now, true).render(None, false).unwrap();
    assert_eq!(
        text,
        "ID        NAME                     IMAGE           NODE            DESIRED STATE   CURRENT STATE        ERROR     PORTS\n\
         id-foo    service-name-foo.1       myimage:mytag   node-name-bar   Ready           Failed 2 hours ago             \n\
         id-bar     \\_ service-name-foo.1   myimage:mytag   node-name-bar   Ready           Failed 2 hours ago             \n"
    );
    // JSON output carries the plain name; the indentation is a table thing.
    let tasks = vec![task("id-bar", 1, 1, TaskState::Failed, "", 0), task("id-foo", 1, 2, TaskState::Failed, "", 0)];
    let json = render::task_list(tasks, &hosts, now, true).render(Some("json"), false).unwrap();
    assert!(json.lines().all(|l| l.contains("\"Name\":\"service-name-foo.1\"")), "{json}");
}

#[test]
fn task_error_is_quoted_and_truncated() {
    assert_eq!(render::task_error("", true), "");
    assert_eq!(render::task_error("a task error", true), "\"a task error\"");
    assert_eq!(
        render::task_error("No such image: redis@sha256:6b1a2c3d4e5f", true),
        "\"No such image: redis@sha256:6…\""
    );
    assert_eq!(
        render::task_error("No such image: redis@sha256:6b1a2c3d4e5f", false),
        "\"No such image: redis@sha256:6b1a2c3d4e5f\""
    );
}

#[test]
fn service_ls_replicas_and_ports() {
    use shoal_core::api::{PortConfig, PublishMode};
    let ports = vec![
        PortConfig { protocol: "tcp".into(), target_port: 80, published_port: 80, publish_mode: PublishMode::Ingress },
        PortConfig { protocol: "tcp".into(), target_port: 81, published_port: 81, publish_mode: PublishMode::Ingress },
        PortConfig { protocol: "udp".into(), target_port: 53, published_port: 53, publish_mode: PublishMode::Host },
    ];
    assert_eq!(render::ingress_ports(&ports), "*:80-81->80-81/tcp");
    assert_eq!(render::short_image("nginx:alpine@sha256:abc"), "nginx:alpine");
    assert_eq!(render::short_image("nginx@sha256:abc"), "nginx@sha256:abc");
}

// ---------------------------------------------------------------- messages

#[test]
fn swarm_init_and_join_token_messages() {
    assert_eq!(
        render::init_message("nodeID", "SWMTKN-1-abc", "127.0.0.1:2377"),
        "Swarm initialized: current node (nodeID) is now a manager.\n\n\
         To add a worker to this swarm, run the following command:\n\n    \
         shoal swarm join --token SWMTKN-1-abc 127.0.0.1:2377\n\n\
         To add a manager to this swarm, run 'shoal swarm join-token manager' and follow the instructions.\n"
    );
    // Golden `jointoken-worker.golden`, with shoal for docker.
    assert_eq!(
        render::join_command("worker", "worker-join-token", "127.0.0.1"),
        "To add a worker to this swarm, run the following command:\n\n    \
         shoal swarm join --token worker-join-token 127.0.0.1\n\n"
    );
}

#[test]
fn info_inactive() {
    let status = local_api::SwarmStatus {
        state: "inactive".into(),
        node_id: String::new(),
        node_addr: String::new(),
        error: String::new(),
        version: String::new(),
    };
    assert_eq!(render::info(&status, None), " Swarm: inactive\n");
}

#[test]
fn node_joined_at_is_go_time() {
    assert_eq!(render::format_unix_ms(1_257_894_000_000), "2009-11-10 23:00:00 +0000 utc");
}

// ---------------------------------------------------------------- durations and sizes

#[test]
fn human_durations_match_go_units() {
    let cases = [
        (0, "Less than a second"),
        (999, "Less than a second"),
        (1_000, "1 second"),
        (45_000, "45 seconds"),
        (60_000, "About a minute"),
        (180_000, "3 minutes"),
        (3_600_000, "About an hour"),
        (2 * 3_600_000, "2 hours"),
        (3 * 86_400_000, "3 days"),
        (3 * 7 * 86_400_000, "3 weeks"),
        (90 * 86_400_000, "3 months"),
        (800 * 86_400_000, "2 years"),
    ];
    for (ms, want) in cases {
        assert_eq!(format::human_duration(Duration::from_millis(ms)), want, "{ms} ms");
    }
    assert_eq!(format::state_since("running", 0, 200), "Running less than a second ago");
    assert_eq!(format::state_since("running", 0, 180_000), "Running 3 minutes ago");
}

#[test]
fn go_duration_strings() {
    assert_eq!(format::go_duration(0), "0s");
    assert_eq!(format::go_duration(300), "300ms");
    assert_eq!(format::go_duration(10_000), "10s");
    assert_eq!(format::go_duration(1_500), "1.5s");
    assert_eq!(format::go_duration(90_000), "1m30s");
    assert_eq!(format::go_duration(3_600_000), "1h0m0s");
}

#[test]
fn parse_durations() {
    assert_eq!(format::parse_duration("5s"), Ok(5_000));
    assert_eq!(format::parse_duration("1m30s"), Ok(90_000));
    assert_eq!(format::parse_duration("300ms"), Ok(300));
    assert_eq!(format::parse_duration("1.5s"), Ok(1_500));
    assert_eq!(format::parse_duration("2h"), Ok(7_200_000));
    assert_eq!(format::parse_duration("0"), Ok(0));
    for bad in ["", "5", "5x", "-1s", "s", "1m30"] {
        assert!(format::parse_duration(bad).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn parse_memory_and_cpus() {
    assert_eq!(format::parse_memory("512M"), Ok(512 << 20));
    assert_eq!(format::parse_memory("512m"), Ok(512 << 20));
    assert_eq!(format::parse_memory("1G"), Ok(1 << 30));
    assert_eq!(format::parse_memory("1gb"), Ok(1 << 30));
    assert_eq!(format::parse_memory("1GiB"), Ok(1 << 30));
    assert_eq!(format::parse_memory("64k"), Ok(64 << 10));
    assert_eq!(format::parse_memory("1024"), Ok(1024));
    assert_eq!(format::parse_memory("1.5G"), Ok(3 << 29));
    for bad in ["", "G", "12X", "-1M", "1 GB extra"] {
        assert!(format::parse_memory(bad).is_err(), "{bad:?} accepted");
    }
    assert_eq!(format::parse_cpus("0.5"), Ok(500_000_000));
    assert_eq!(format::parse_cpus("2"), Ok(2_000_000_000));
    assert!(format::parse_cpus("half").is_err());
    assert!(format::parse_cpus("-1").is_err());
    assert_eq!(format::bytes_size(10 << 20), "10MiB");
    assert_eq!(format::bytes_size(3 << 29), "1.5GiB");
    assert_eq!(format::bytes_size(512), "512B");
    assert_eq!(format::cpus(500_000_000), "0.5");
}

#[test]
fn natural_order() {
    let mut names = vec!["node-10-foo", "node-2-foo", "node-1-foo"];
    names.sort_by(|a, b| format::natural_cmp(a, b));
    assert_eq!(names, ["node-1-foo", "node-2-foo", "node-10-foo"]);
}

// ---------------------------------------------------------------- flags

/// `--format` is Go's text/template with docker/cli's functions, over Docker's field names.
#[test]
fn format_templates_are_go_templates_with_docker_functions() {
    let listing = render::node_list(
        vec![
            NodeView {
                node: node("id1", "alpha", NodeRole::Manager, "27.0"),
                leader: true,
                reachability: "reachable".into(),
            },
            NodeView {
                node: node("id2", "beta-node", NodeRole::Worker, "27.0"),
                leader: false,
                reachability: "".into(),
            },
        ],
        "id2",
    );
    let render = |format: &str| listing.render(Some(format), false).unwrap();
    assert_eq!(render("{{if .Self}}me{{else}}{{.Hostname | upper}}{{end}}"), "ALPHA\nme\n");
    assert_eq!(render("{{json .Hostname}} {{len .ID}}"), "\"alpha\" 3\n\"beta-node\" 3\n");
    assert_eq!(
        render("{{join (split .Hostname \"-\") \"+\"}}|{{truncate .Hostname 3}}|{{pad .ID 1 2}}|{{title .Status}}"),
        "alpha|alp| id1  |Ready\nbeta+node|bet| id2  |Ready\n"
    );
    assert_eq!(render("{{printf \"%-6s|\" .Hostname}}{{lower .Availability}}"), "alpha |active\nbeta-node|active\n");
    // A parse error and an unknown function are refused, not printed.
    assert!(listing.render(Some("{{.Hostname"), false).unwrap_err().to_string().contains("template"));
    assert!(listing.render(Some("{{nosuch .ID}}"), false).is_err());
}

/// `inspect --format` walks nested objects, ranges maps in key order and indexes them.
#[test]
fn inspect_format_ranges_and_indexes() {
    let value = serde_json::json!({"Spec": {"Labels": {"b": "2", "a": "1"}, "Name": "web"}, "Ports": [80, 443]});
    let expand = |t: &str| shoal::cli::listing::expand_value(t, &value).unwrap();
    assert_eq!(expand("{{range $k, $v := .Spec.Labels}}{{$k}}={{$v}};{{end}}"), "a=1;b=2;");
    assert_eq!(expand("{{index .Spec.Labels \"b\"}} {{index .Ports 1}} {{.Spec.Labels}}"), "2 443 map[a:1 b:2]");
    assert_eq!(expand("{{json .Spec}}"), r#"{"Labels":{"a":"1","b":"2"},"Name":"web"}"#);
    assert_eq!(expand("{{range .Ports}}{{.}},{{end}}"), "80,443,");
}

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("shoal").chain(args.iter().copied()))
}

/// The spec `service create FLAGS busybox` sends.
fn create_spec_with(flags: &[&str]) -> Result<shoal_core::api::ServiceSpec, spec::SpecError> {
    let mut argv = vec!["service", "create"];
    argv.extend_from_slice(flags);
    argv.push("busybox");
    let cli = parse(&argv).unwrap();
    let Command::Service(ServiceCommand::Create(args)) = cli.command else { panic!("not service create") };
    spec::create_spec(&args)
}

/// The spec `service update FLAGS web` sends when the service's spec is `current`.
fn update_spec_with(
    current: &shoal_core::api::ServiceSpec,
    flags: &[&str],
) -> Result<shoal_core::api::ServiceSpec, spec::SpecError> {
    let mut argv = vec!["service", "update"];
    argv.extend_from_slice(flags);
    argv.push("web");
    let cli = parse(&argv).unwrap();
    let Command::Service(ServiceCommand::Update(args)) = cli.command else { panic!("not service update") };
    spec::update_spec(current, &args)
}

#[test]
fn service_create_flags_build_the_spec() {
    let cli = parse(&[
        "service",
        "create",
        "--name",
        "web",
        "--replicas",
        "3",
        "-e",
        "A=1",
        "--constraint",
        "node.role==worker",
        "--limit-memory",
        "512M",
        "--limit-cpu",
        "0.5",
        "--restart-delay",
        "1m30s",
        "--update-order",
        "start-first",
        "--update-parallelism",
        "2",
        "-p",
        "8080:80",
        "--label",
        "tier=front",
        "--container-label",
        "slot={{.Task.Slot}}",
        "--hostname",
        "{{.Node.Hostname}}-{{.Task.Slot}}",
        "-d",
        "busybox:latest",
        "sleep",
        "-x",
        "100",
    ])
    .unwrap();
    let Command::Service(ServiceCommand::Create(args)) = cli.command else { panic!("not service create") };
    assert!(args.common.detach);
    let spec = spec::create_spec(&args).unwrap();
    assert_eq!(spec.name, "web");
    assert_eq!(spec.mode, ServiceMode::Replicated { replicas: 3 });
    assert_eq!(spec.task.image, "busybox:latest");
    assert_eq!(spec.task.args, ["sleep", "-x", "100"]);
    assert_eq!(spec.task.env, ["A=1"]);
    assert_eq!(spec.task.placement.constraints, ["node.role==worker"]);
    assert_eq!(spec.task.resources.limits.memory_bytes, 512 << 20);
    assert_eq!(spec.task.resources.limits.nano_cpus, 500_000_000);
    assert_eq!(spec.task.restart_policy.delay_ms, 90_000);
    assert_eq!(spec.task.restart_policy.backoff, RestartBackoff::Fixed, "Swarm's fixed delay unless asked");
    assert_eq!(spec.update_config.order, UpdateOrder::StartFirst);
    assert_eq!(spec.update_config.parallelism, 2);
    assert_eq!(spec.ports[0].published_port, 8080);
    assert_eq!(spec.ports[0].target_port, 80);
    assert_eq!(spec.labels.get("tier").map(String::as_str), Some("front"));
    assert_eq!(spec.task.container_labels.get("slot").map(String::as_str), Some("{{.Task.Slot}}"));
    assert!(!spec.labels.contains_key("slot"), "container labels are not service labels");
    assert_eq!(spec.task.hostname, "{{.Node.Hostname}}-{{.Task.Slot}}");
    // Untouched settings keep Swarm's defaults.
    assert_eq!(spec.task.stop_grace_period_ms, 10_000);
    assert_eq!(spec.rollback_config.monitor_ms, 5_000);
}

#[test]
fn bad_flag_values_name_the_flag() {
    for (flag, value) in [
        ("--restart-delay", "5x"),
        ("--limit-memory", "lots"),
        ("--limit-cpu", "half"),
        ("--update-max-failure-ratio", "2"),
        ("--restart-condition", "sometimes"),
        ("--restart-backoff", "linear"),
    ] {
        let err = parse(&["service", "create", flag, value, "busybox"]).unwrap_err().to_string();
        assert!(err.contains(flag), "{flag}: {err}");
    }
    let err = parse(&["swarm", "init", "--availability", "gone"]).unwrap_err().to_string();
    assert!(err.contains("--availability"), "{err}");
    assert!(parse(&["swarm", "join", "127.0.0.1:2377"]).is_err(), "join without --token");
}

/// Container options: create sets them, update adds and removes them as Docker's flags do, and a
/// malformed value names its flag.
#[test]
fn container_option_flags() {
    let create = create_spec_with;
    let spec = create(&[
        "--cap-add",
        "NET_ADMIN",
        "--cap-drop",
        "MKNOD",
        "--init",
        "--read-only",
        "--stop-signal",
        "SIGINT",
        "--sysctl",
        "kernel.msgmax=65536",
        "--ulimit",
        "nofile=1024:2048",
        "--ulimit",
        "nproc=512",
        "--dns",
        "10.9.9.9",
        "--dns-search",
        "corp.example",
        "--dns-option",
        "ndots:2",
        "--host",
        "db:10.0.0.5",
    ])
    .unwrap();
    let options = &spec.task.options;
    assert_eq!(
        (options.cap_add.as_slice(), options.cap_drop.as_slice()),
        (&["NET_ADMIN".to_string()][..], &["MKNOD".to_string()][..])
    );
    assert_eq!((options.init, options.read_only, options.stop_signal.as_str()), (Some(true), true, "SIGINT"));
    assert_eq!(options.sysctls.get("kernel.msgmax").map(String::as_str), Some("65536"));
    let limits: Vec<(&str, i64, i64)> = options.ulimits.iter().map(|u| (u.name.as_str(), u.soft, u.hard)).collect();
    assert_eq!(limits, [("nofile", 1024, 2048), ("nproc", 512, 512)]);
    assert_eq!(
        (options.dns.as_slice(), options.dns_search.as_slice()),
        (&["10.9.9.9".to_string()][..], &["corp.example".to_string()][..])
    );
    assert_eq!(
        (options.dns_options.as_slice(), options.hosts.as_slice()),
        (&["ndots:2".to_string()][..], &["db:10.0.0.5".to_string()][..])
    );

    let updated = update_spec_with(
        &spec,
        &[
            "--cap-add",
            "MKNOD",
            "--read-only=false",
            "--sysctl-rm",
            "kernel.msgmax",
            "--ulimit-add",
            "nofile=4096",
            "--ulimit-rm",
            "nproc",
            "--dns-rm",
            "10.9.9.9",
            "--host-add",
            "cache:10.0.0.6",
            "--host-rm",
            "db:10.0.0.5",
        ],
    )
    .unwrap();
    let options = &updated.task.options;
    assert_eq!(options.cap_add, ["NET_ADMIN", "MKNOD"]);
    assert!(options.cap_drop.is_empty(), "adding a capability takes it off the drop list");
    assert!(!options.read_only && options.sysctls.is_empty() && options.dns.is_empty());
    let limits: Vec<(&str, i64, i64)> = options.ulimits.iter().map(|u| (u.name.as_str(), u.soft, u.hard)).collect();
    assert_eq!(limits, [("nofile", 4096, 4096)]);
    assert_eq!(options.hosts, ["cache:10.0.0.6"]);

    // `--log-driver` with its `--log-opt`s; on update `--log-opt` alone changes nothing (Docker's).
    let logged =
        create(&["--log-driver", "json-file", "--log-opt", "max-size=10m", "--log-opt", "max-file=3"]).unwrap();
    let driver = logged.task.options.log_driver.clone().expect("a log driver");
    assert_eq!(driver.name, "json-file");
    assert_eq!(
        driver.options.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
        ["max-file=3", "max-size=10m"]
    );
    let same = update_spec_with(&logged, &["--log-opt", "max-size=1m"]).unwrap();
    assert_eq!(same.task.options.log_driver, logged.task.options.log_driver);
    let replaced = update_spec_with(&logged, &["--log-driver", "none"]).unwrap();
    let driver = replaced.task.options.log_driver.expect("a log driver");
    assert_eq!((driver.name.as_str(), driver.options.len()), ("none", 0));

    for (flag, value) in
        [("--ulimit", "nofile=lots"), ("--ulimit", "nofile=9:1"), ("--sysctl", "novalue"), ("--host", "db")]
    {
        let err = create(&[flag, value]).unwrap_err().to_string();
        assert!(err.contains(flag.trim_start_matches('-')), "{flag} {value}: {err}");
    }
}

#[test]
fn global_mode_refuses_replicas() {
    let cli = parse(&["service", "create", "--mode", "global", "--replicas", "2", "busybox"]).unwrap();
    let Command::Service(ServiceCommand::Create(args)) = cli.command else { panic!("not service create") };
    let err = spec::create_spec(&args).unwrap_err();
    assert_eq!(err.to_string(), "replicas can only be used with replicated or replicated-job mode");
}

/// `--mode replicated-job|global-job` with `--replicas`/`--max-concurrent`, as Docker's CLI and
/// daemon combine them, and the jobs' on-failure restart default.
#[test]
fn job_modes_take_dockers_defaults_and_errors() {
    let create = create_spec_with;
    use shoal_core::api::{RestartCondition, ServiceMode as M};
    let mode = |args: &[&str]| create(args).unwrap().mode;
    assert_eq!(mode(&["--mode", "replicated-job"]), M::ReplicatedJob { max_concurrent: 1, total_completions: 1 });
    assert_eq!(
        mode(&["--mode", "replicated-job", "--replicas", "4"]),
        M::ReplicatedJob { max_concurrent: 4, total_completions: 4 }
    );
    assert_eq!(
        mode(&["--mode", "replicated-job", "--replicas", "4", "--max-concurrent", "2"]),
        M::ReplicatedJob { max_concurrent: 2, total_completions: 4 }
    );
    assert_eq!(
        mode(&["--mode", "replicated-job", "--max-concurrent", "3"]),
        M::ReplicatedJob { max_concurrent: 3, total_completions: 3 }
    );
    assert_eq!(mode(&["--mode", "global-job"]), M::GlobalJob);
    let job = create(&["--mode", "global-job"]).unwrap();
    assert_eq!(job.task.restart_policy.condition, RestartCondition::OnFailure);
    let asked = create(&["--mode", "replicated-job", "--restart-condition", "any"]).unwrap();
    assert_eq!(asked.task.restart_policy.condition, RestartCondition::Any);
    assert_eq!(create(&[]).unwrap().task.restart_policy.condition, RestartCondition::Any, "services keep any");
    let err = |args: &[&str]| create(args).unwrap_err().to_string();
    assert_eq!(err(&["--max-concurrent", "2"]), "max-concurrent can only be used with replicated-job mode");
    assert_eq!(
        err(&["--mode", "global-job", "--replicas", "2"]),
        "replicas can only be used with replicated or replicated-job mode"
    );
    // `--mount`: Docker's flag error, then the mount in the spec.
    assert_eq!(
        err(&["--mount", "type=volume,source=x"]),
        "invalid argument \"type=volume,source=x\" for \"--mount\" flag: target is required"
    );
    let mounted = create(&["--mount", "source=data,target=/data", "--mount", "type=tmpfs,target=/tmp/x"]).unwrap();
    assert_eq!(mounted.task.mounts.len(), 2);
    // `service update --replicas/--max-concurrent/--mount-add/--mount-rm` on a job.
    let cli = parse(&[
        "service",
        "update",
        "--replicas",
        "6",
        "--max-concurrent",
        "3",
        "--mount-add",
        "source=new,target=/data",
        "--mount-rm",
        "/tmp/x",
        "web",
    ])
    .unwrap();
    let Command::Service(ServiceCommand::Update(args)) = cli.command else { panic!("not service update") };
    let mut job = mounted.clone();
    job.mode = M::ReplicatedJob { max_concurrent: 1, total_completions: 1 };
    let updated = spec::update_spec(&job, &args).unwrap();
    assert_eq!(updated.mode, M::ReplicatedJob { max_concurrent: 3, total_completions: 6 });
    assert_eq!(
        updated.task.mounts.iter().map(|m| (m.source.as_str(), m.target.as_str())).collect::<Vec<_>>(),
        [("new", "/data")]
    );
    let err = spec::update_spec(&mounted, &args).unwrap_err().to_string();
    assert_eq!(err, "max-concurrent can only be used with replicated-job mode");
}

/// `service ls` shows jobs as docker/cli does: mode with a space, `running/desired (K/N completed)`.
#[test]
fn service_ls_shows_jobs_as_docker() {
    use shoal_core::api::ServiceMode as M;
    let view = |name: &str, mode: M, running: u64, desired: u64, completed: u64| {
        let mut spec = shoal_core::api::ServiceSpec::new(name, "busybox");
        spec.mode = mode;
        let service = shoal_core::api::Service {
            id: format!("id-{name}"),
            meta: Default::default(),
            spec,
            previous_spec: None,
            spec_version: 1,
            update_status: None,
            endpoint_ports: vec![],
            job_status: None,
        };
        shoal_core::control::ServiceView { service, running, desired, completed }
    };
    let listing = render::service_list(vec![
        view("job1", M::ReplicatedJob { max_concurrent: 3, total_completions: 10 }, 2, 3, 5),
        view("job2", M::GlobalJob, 1, 1, 3),
    ]);
    let out = listing.render(Some("{{.Mode}}|{{.Replicas}}"), false).unwrap();
    assert_eq!(out, "replicated job|2/3 (5/10 completed)\nglobal job|1/1 (3/4 completed)\n");
}

#[test]
fn service_update_flags_modify_the_spec() {
    let mut current = shoal_core::api::ServiceSpec::new("web", "busybox:1");
    current.task.env = vec!["A=1".into(), "B=2".into()];
    current.task.placement.constraints = vec!["node.role==worker".into()];
    let cli = parse(&[
        "service",
        "update",
        "--image",
        "busybox:2",
        "--env-add",
        "A=9",
        "--env-rm",
        "B",
        "--constraint-rm",
        "node.role==worker",
        "--constraint-add",
        "node.labels.zone==east",
        "--replicas",
        "4",
        "--force",
        "web",
    ])
    .unwrap();
    let Command::Service(ServiceCommand::Update(args)) = cli.command else { panic!("not service update") };
    let spec = spec::update_spec(&current, &args).unwrap();
    assert_eq!(spec.task.image, "busybox:2");
    assert_eq!(spec.task.env, ["A=9"]);
    assert_eq!(spec.task.placement.constraints, ["node.labels.zone==east"]);
    assert_eq!(spec.mode, ServiceMode::Replicated { replicas: 4 });
    assert_eq!(spec.task.force_update, current.task.force_update + 1);

    // The exponential back-off is a choice made per service, and can be undone.
    let cli = parse(&["service", "update", "--restart-backoff", "exponential", "web"]).unwrap();
    let Command::Service(ServiceCommand::Update(args)) = cli.command else { panic!("not service update") };
    let backing_off = spec::update_spec(&current, &args).unwrap();
    assert_eq!(backing_off.task.restart_policy.backoff, RestartBackoff::Exponential);
    let cli = parse(&["service", "update", "--restart-backoff", "fixed", "web"]).unwrap();
    let Command::Service(ServiceCommand::Update(args)) = cli.command else { panic!("not service update") };
    assert_eq!(spec::update_spec(&backing_off, &args).unwrap().task.restart_policy.backoff, RestartBackoff::Fixed);

    // `--args` and `--entrypoint` split like a shell, as Docker's ShlexOpt does.
    let cli = Cli::try_parse_from(["shoal", "service", "update", "--args", r#"sh -c "exit 1""#, "web"]).unwrap();
    let Command::Service(ServiceCommand::Update(args)) = cli.command else { panic!("not service update") };
    assert_eq!(spec::update_spec(&current, &args).unwrap().task.args, ["sh", "-c", "exit 1"]);
    let cli = Cli::try_parse_from(["shoal", "service", "update", "--args", r#"sh -c "unclosed"#, "web"]).unwrap();
    let Command::Service(ServiceCommand::Update(args)) = cli.command else { panic!("not service update") };
    assert!(spec::update_spec(&current, &args).unwrap_err().to_string().starts_with("invalid --args"));
}

#[test]
fn endpoint_mode_networks_and_ports_flags() {
    use shoal_core::api::EndpointMode;
    let cli = parse(&["service", "create", "--name", "db", "--endpoint-mode", "dnsrr", "--network", "app", "busybox"]);
    let Command::Service(ServiceCommand::Create(args)) = cli.unwrap().command else { panic!("not service create") };
    let created = spec::create_spec(&args).unwrap();
    assert_eq!(created.endpoint_mode, EndpointMode::Dnsrr);
    assert_eq!(created.task.networks, ["app"]);
    let plain = parse(&["service", "create", "busybox"]).unwrap();
    let Command::Service(ServiceCommand::Create(args)) = plain.command else { panic!("not service create") };
    assert_eq!(spec::create_spec(&args).unwrap().endpoint_mode, EndpointMode::Vip, "Swarm's default");
    assert!(parse(&["service", "create", "--endpoint-mode", "ipvs", "busybox"]).is_err(), "only vip and dnsrr");

    let cli = parse(&[
        "service",
        "update",
        "--endpoint-mode",
        "vip",
        "--network-add",
        "front",
        "--network-rm",
        "app",
        "--publish-add",
        "8080:80",
        "--publish-add",
        "published=5353,target=53,protocol=udp,mode=host",
        "db",
    ]);
    let Command::Service(ServiceCommand::Update(args)) = cli.unwrap().command else { panic!("not service update") };
    let updated = spec::update_spec(&created, &args).unwrap();
    assert_eq!(updated.endpoint_mode, EndpointMode::Vip);
    assert_eq!(updated.task.networks, ["front"]);
    let ports: Vec<_> =
        updated.ports.iter().map(|p| (p.published_port, p.target_port, p.protocol.as_str(), p.publish_mode)).collect();
    assert_eq!(ports, [(8080, 80, "tcp", PublishMode::Ingress), (5353, 53, "udp", PublishMode::Host)]);
    let cli = parse(&["service", "update", "--publish-rm", "80", "db"]);
    let Command::Service(ServiceCommand::Update(args)) = cli.unwrap().command else { panic!("not service update") };
    let removed = spec::update_spec(&updated, &args).unwrap();
    assert_eq!(removed.ports.len(), 1, "--publish-rm takes the TCP port 80 away: {:?}", removed.ports);
    assert_eq!(removed.ports[0].target_port, 53);

    let net = parse(&["network", "create", "-d", "overlay", "--subnet", "10.213.0.0/16", "app"]).unwrap();
    assert!(matches!(
        net.command,
        Command::Network(NetworkCommand::Create { ref subnet, .. }) if subnet == &["10.213.0.0/16".to_string()]
    ));
}

#[test]
fn publish_syntax() {
    let port = spec::parse_port("published=8080,target=80,protocol=udp,mode=host").unwrap();
    assert_eq!((port.published_port, port.target_port, port.protocol.as_str()), (8080, 80, "udp"));
    assert_eq!(spec::parse_port("80").unwrap().published_port, 0);
    assert_eq!(spec::parse_port("53:53/udp").unwrap().protocol, "udp");
    assert!(spec::parse_port("http").is_err());
    assert!(spec::parse_port("1:2/icmp").is_err());
}

#[test]
fn host_endpoints() {
    assert_eq!(Endpoint::parse("unix:///tmp/x.sock"), Ok(Endpoint::Unix("/tmp/x.sock".into())));
    assert_eq!(Endpoint::parse("tcp://127.0.0.1:2375"), Ok(Endpoint::Tcp("127.0.0.1:2375".into())));
    assert!(Endpoint::parse("http://x").is_err());
    assert!(Endpoint::parse("tcp://nohost").is_err());
}

// ---------------------------------------------------------------- the Engine API as the CLI's client sees it

/// A daemon that leaves the swarm whatever it is asked, and refuses control requests as a
/// non-member does.
struct Echo;

#[async_trait]
impl LocalHandler for Echo {
    async fn handle(&self, request: LocalRequest) -> LocalResult {
        match request {
            LocalRequest::Control { .. } => Err(LocalError::Refused(
                "This node is not a swarm manager. Use \"shoal swarm init\" or \"shoal swarm join\" to connect \
                 this node to swarm and try again."
                    .into(),
            )),
            _ => Ok(LocalAnswer::Left),
        }
    }
}

#[tokio::test]
async fn client_reads_answers_and_errors_and_the_socket_survives_garbage() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shoal.sock");
    let listener = engine_api::bind(&path).await.unwrap();
    let api = Arc::new(engine_api::EngineApi::new(Arc::new(Echo), "host".into()));
    let server = tokio::spawn(engine_api::serve_unix(listener, api));
    // Garbage on the wire: an HTTP error or a closed connection, and the daemon still answers.
    let mut raw = tokio::net::UnixStream::connect(&path).await.unwrap();
    raw.write_all(b"{{{ garbage\r\n\r\n").await.unwrap();
    let mut reply = String::new();
    let _ = tokio::io::AsyncReadExt::read_to_string(&mut raw, &mut reply).await;
    assert!(reply.is_empty() || reply.starts_with("HTTP/1.1 4"), "{reply}");
    let client = EngineClient::new(Endpoint::Unix(path.clone()));
    client.swarm_leave(true).await.unwrap();
    // A body that is not a spec: Docker's 400 with its message.
    let bad = client.call(hyper::Method::POST, "/services/create", Some(&serde_json::json!([1]))).await;
    assert!(matches!(bad, Err(ApiError::Daemon { status: 400, .. })), "{bad:?}");
    // The daemon's refusal in shoal's words for shoal's client (Docker's for Docker's).
    let refused = client.control(ControlRequest::NodeList).await.unwrap_err();
    assert_eq!(refused.daemon_message().map(|m| m.contains("\"shoal swarm init\"")), Some(true), "{refused:?}");
    let missing = EngineClient::new(Endpoint::Unix(dir.path().join("nobody.sock"))).status().await.unwrap_err();
    assert!(missing.to_string().starts_with("Cannot connect to the shoal daemon at unix://"), "{missing}");
    server.abort();
}

// ---------------------------------------------------------------- daemon lifecycle (no cluster)

struct NeverStarts;

#[async_trait]
impl NodeLauncher for NeverStarts {
    async fn has_state(&self, _node_dir: &std::path::Path) -> bool {
        false
    }
    async fn start(
        &self,
        _node_dir: &std::path::Path,
        _settings: &NodeSettings,
        _tracer: Arc<dyn TraceSink>,
        _bootstrap: Bootstrap,
    ) -> Result<Arc<dyn RunningNode>, String> {
        Err("cannot join the swarm at 127.0.0.1:1: connection refused".into())
    }
}

#[tokio::test]
async fn inactive_daemon_refuses_like_docker() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Arc::new(Daemon::new(dir.path(), "host-1".into(), Arc::new(NeverStarts)).unwrap());
    daemon.resume().await;
    let status = daemon.handle(LocalRequest::SwarmStatus).await;
    assert!(matches!(status, Ok(LocalAnswer::Status(ref s)) if s.state == "inactive"), "{status:?}");
    let control = daemon.handle(LocalRequest::Control { request: Box::new(ControlRequest::NodeList) }).await;
    assert_eq!(
        control.unwrap_err().to_string(),
        "This node is not a swarm manager. Use \"shoal swarm init\" or \"shoal swarm join\" to connect this node \
         to swarm and try again."
    );
    let leave = daemon.handle(LocalRequest::SwarmLeave { force: false }).await;
    assert_eq!(leave.unwrap_err().to_string(), "This node is not part of a swarm");
    let join = daemon
        .handle(LocalRequest::SwarmJoin(local_api::JoinRequest {
            remote_addr: "127.0.0.1:1".into(),
            token: "SWMTKN-1-x".into(),
            advertise_addr: "127.0.0.1".into(),
            listen_addr: "127.0.0.1:0".into(),
            availability: Availability::Active,
            data_path_addr: String::new(),
            data_path_port: None,
        }))
        .await;
    assert!(join.unwrap_err().to_string().contains("connection refused"));
    // A failed join leaves the daemon inactive, with no state to resume.
    let status = daemon.handle(LocalRequest::SwarmStatus).await;
    assert!(matches!(status, Ok(LocalAnswer::Status(ref s)) if s.state == "inactive"), "{status:?}");
    assert!(!dir.path().join("daemon.json").exists());
    assert!(dir.path().join("events.jsonl").exists());
}

#[test]
fn data_path_addresses_with_swarms_checks() {
    use shoal::daemon::{data_addr, NodeSettings};
    assert_eq!(data_addr("", None, "127.0.0.2:2377").unwrap(), "127.0.0.2:4789", "advertise IP, Swarm's port");
    assert_eq!(data_addr("", Some(0), "127.0.0.2:2377").unwrap(), "127.0.0.2:4789", "0 is the default");
    assert_eq!(data_addr("127.0.0.9", Some(24789), "127.0.0.2:2377").unwrap(), "127.0.0.9:24789");
    assert_eq!(
        data_addr("", Some(80), "127.0.0.2:2377").unwrap_err(),
        "Datapath port number is not in valid range (1024-49151) : 80"
    );
    assert_eq!(
        data_addr("", Some(49152), "127.0.0.2:2377").unwrap_err(),
        "Datapath port number is not in valid range (1024-49151) : 49152"
    );
    for bad in ["0.0.0.0", "127.0.0.9:4789", "nonsense"] {
        assert_eq!(
            data_addr(bad, None, "127.0.0.2:2377").unwrap_err(),
            "data path address must be a non-zero IP address or network interface (without a port number)",
            "{bad}"
        );
    }
    // A daemon.json written before the data plane resumes with the default data address.
    let old: NodeSettings = serde_json::from_str(
        r#"{"hostname":"h","advertise_addr":"127.0.0.4:2377","listen_addr":"127.0.0.4:2377","availability":"active"}"#,
    )
    .unwrap();
    assert_eq!(old.data_addr(), "127.0.0.4:4789");
}

#[test]
fn dns_upstreams_from_resolv_conf_and_flags() {
    use shoal::node_launcher::{dns_upstream, host_resolvers};
    let conf = "# generated\nsearch example.internal\nnameserver 192.0.2.53\nnameserver ::1\nnameserver bogus\noptions ndots:1\n";
    assert_eq!(host_resolvers(conf), ["192.0.2.53:53", "[::1]:53"]);
    assert!(host_resolvers("").is_empty());
    assert_eq!(dns_upstream("127.0.0.53").unwrap(), "127.0.0.53:53");
    assert_eq!(dns_upstream("127.0.0.53:5353").unwrap(), "127.0.0.53:5353");
    assert!(dns_upstream("resolver.example").unwrap_err().contains("not an IP address"));
}

#[test]
fn listen_and_advertise_addresses() {
    use shoal::daemon::{advertise_addr, listen_addr};
    assert_eq!(listen_addr("").unwrap(), "0.0.0.0:2377");
    assert_eq!(listen_addr("127.0.0.2").unwrap(), "127.0.0.2:2377");
    assert!(listen_addr("eth0:x").is_err());
    assert_eq!(advertise_addr("127.0.0.2", "0.0.0.0:2377", None).unwrap(), "127.0.0.2:2377");
    assert_eq!(advertise_addr("", "127.0.0.3:4000", None).unwrap(), "127.0.0.3:4000");
    assert_eq!(
        advertise_addr("0.0.0.0", "0.0.0.0:2377", None).unwrap_err(),
        "advertise address must be a non-zero IP address or network interface (with optional port number)"
    );
    // From an unspecified listen address, the address this host would use towards the manager.
    assert_eq!(advertise_addr("", "0.0.0.0:2377", Some("127.0.0.5:2377")).unwrap(), "127.0.0.1:2377");
}

#[test]
fn listing_without_rows_prints_the_header() {
    let listing = Listing {
        default_format: "table {{.ID}}\t{{.Name}}",
        headers: &[("ID", "ID"), ("Name", "NAME")],
        rows: vec![],
        indented: vec![],
    };
    assert_eq!(listing.render(None, false).unwrap(), "ID        NAME\n");
}

// ---------------------------------------------------------------- stacks

// The compose conversion itself is tested in shoal-core (`core/tests/stack_compose.rs`).

#[test]
fn stack_ls_golden() {
    // Golden `stack-list-sort-natural.golden`.
    let mut views = Vec::new();
    for stack in ["service-name-10-foo", "service-name-1-foo", "service-name-2-foo"] {
        let mut spec = shoal_core::api::ServiceSpec::new(format!("{stack}_web"), "busybox");
        spec.labels.insert("com.docker.stack.namespace".into(), stack.into());
        let service: shoal_core::api::Service = serde_json::from_value(serde_json::json!({
            "id": "x", "meta": Meta::default(), "spec": spec, "previous_spec": null, "spec_version": 1,
            "update_status": null, "endpoint_ports": [],
        }))
        .unwrap();
        views.push(shoal_core::control::ServiceView { service, running: 0, desired: 1, completed: 0 });
    }
    assert_eq!(
        render::stack_list(&views).render(None, false).unwrap(),
        "NAME                  SERVICES\nservice-name-1-foo    1\nservice-name-2-foo    1\nservice-name-10-foo   1\n"
    );
}

#[test]
fn progress_lines_like_docker() {
    use shoal::cli::slot_line;
    assert_eq!(
        slot_line(1, 1, TaskState::Running, ""),
        "1/1: running   [==================================================>]"
    );
    assert_eq!(
        slot_line(1, 1, TaskState::Pending, "no suitable node (scheduling constraints not satisfied on 5 nodes)"),
        "1/1: no suitable node (scheduling constraints not satisfied on 5 nodes)"
    );
    assert!(slot_line(2, 3, TaskState::Preparing, "").starts_with("2/3: preparing ["));
}

/// Issue 14, item 6: a slot whose task failed shows the failure while its replacement waits (restart
/// delay) or starts, as Docker's line does, not `new` or `assigned` forever.
#[test]
fn progress_shows_why_a_slots_last_task_failed() {
    use shoal::cli::progress;
    use shoal_core::api::{Service, ServiceSpec};

    let mut spec = ServiceSpec::new("service-name-foo", "myimage:mytag");
    spec.mode = ServiceMode::Replicated { replicas: 3 };
    let service = Service {
        id: "service-id".into(),
        meta: Meta::default(),
        spec,
        previous_spec: None,
        spec_version: 1,
        update_status: None,
        endpoint_ports: vec![],
        job_status: None,
    };
    let desired = |mut t: Task, d: TaskState| {
        t.desired_state = d;
        t
    };
    let tasks = vec![
        // Slot 1 crash-loops: the failed task is retired, its replacement waits for the restart delay.
        desired(task("crashed", 1, 1, TaskState::Failed, "task: non-zero exit (1)", 10), TaskState::Shutdown),
        desired(task("waiting", 1, 11, TaskState::New, "", 11), TaskState::Running),
        // Slot 2's image is refused; the replacement is already assigned.
        desired(task("refused-1", 2, 1, TaskState::Rejected, "No such image: old:error", 5), TaskState::Shutdown),
        desired(task("refused-2", 2, 6, TaskState::Rejected, "No such image: myimage:mytag", 9), TaskState::Shutdown),
        desired(task("retry", 2, 10, TaskState::Assigned, "", 10), TaskState::Running),
        // Slot 3 runs; a failure before that does not hide it.
        desired(task("failed-before", 3, 1, TaskState::Failed, "task: non-zero exit (2)", 3), TaskState::Shutdown),
        desired(task("fine", 3, 4, TaskState::Running, "", 4), TaskState::Running),
    ];
    let p = progress(&service, 3, &tasks);
    assert_eq!(
        p.slots,
        [
            "1/3: task: non-zero exit (1)",
            "2/3: No such image: myimage:mytag",
            "3/3: running   [==================================================>]",
        ]
    );
    assert_eq!(p.running, 1);

    // A failure of an older task spec (the one an update replaces) is not this spec's story.
    let mut updated = service.clone();
    updated.spec.task.image = "myimage:v2".into();
    let mut fresh = desired(task("v2", 1, 20, TaskState::Assigned, "", 20), TaskState::Running);
    fresh.spec = updated.spec.task.clone();
    let p = progress(&updated, 1, &[tasks[0].clone(), fresh]);
    assert!(p.slots[0].starts_with("1/1: assigned  [="), "{:?}", p.slots);

    // Docker's truncation: one line, at most 75 characters.
    let long = format!("first line\n{}", "x".repeat(100));
    let line = shoal::cli::slot_line(1, 1, TaskState::Rejected, &long);
    let shown = line.strip_prefix("1/1: ").unwrap();
    assert_eq!(shown.chars().count(), 75);
    assert!(shown.starts_with("first line xxx") && shown.ends_with("x…"), "{shown}");
}

#[test]
fn listen_defaults_to_the_advertised_port() {
    use shoal::daemon::default_listen;
    assert_eq!(default_listen("", ""), "0.0.0.0:2377");
    assert_eq!(default_listen("", "127.0.0.1"), "0.0.0.0:2377");
    assert_eq!(default_listen("", "127.0.0.1:24011"), "0.0.0.0:24011");
    assert_eq!(default_listen("127.0.0.2:5000", "127.0.0.1:24011"), "127.0.0.2:5000");
}

#[test]
fn unnamed_service_gets_a_name_from_its_image() {
    let cli = parse(&["service", "create", "registry.local/team/busybox:1.36", "true"]).unwrap();
    let Command::Service(ServiceCommand::Create(args)) = cli.command else { panic!("not service create") };
    let spec = spec::create_spec(&args).unwrap();
    assert!(spec.name.starts_with("busybox-") && spec.name.len() == "busybox-".len() + 6, "{}", spec.name);
}

// ---------------------------------------------------------------- filters

#[test]
fn list_filters_like_docker() {
    use shoal::cli::filters::{self, Filters};
    let parse =
        |flags: &[&str], keys: &[&str]| Filters::parse(&flags.iter().map(|f| f.to_string()).collect::<Vec<_>>(), keys);
    assert_eq!(parse(&["foo=bar"], filters::NODE_KEYS).unwrap_err(), "invalid filter 'foo'");
    assert!(parse(&["role"], filters::NODE_KEYS).unwrap_err().starts_with("bad format of filter"));

    let mut labelled = node("w2id", "worker-2", NodeRole::Worker, "1");
    labelled.spec.labels.insert("zone".into(), "east".into());
    let views: Vec<NodeView> =
        [node("m1id", "manager-1", NodeRole::Manager, "1"), node("w1id", "worker-1", NodeRole::Worker, "1"), labelled]
            .into_iter()
            .map(|node| NodeView { node, leader: false, reachability: String::new() })
            .collect();
    let hosts = |flags: &[&str]| -> Vec<String> {
        let filters = parse(flags, filters::NODE_KEYS).unwrap();
        filters::nodes(views.clone(), &filters).unwrap().iter().map(|v| v.node.hostname().to_string()).collect()
    };
    assert_eq!(hosts(&["role=manager"]), ["manager-1"]);
    assert_eq!(hosts(&["name=worker"]), ["worker-1", "worker-2"], "names match by prefix");
    assert_eq!(hosts(&["name=manager", "name=worker-1"]), ["manager-1", "worker-1"], "one key's values: either");
    assert_eq!(hosts(&["name=worker", "node.label=zone=east"]), ["worker-2"], "keys: all");
    assert_eq!(hosts(&["node.label=zone"]), ["worker-2"]);
    assert_eq!(hosts(&["id=w1"]), ["worker-1"]);
    let bad_role = filters::nodes(views.clone(), &parse(&["role=boss"], filters::NODE_KEYS).unwrap()).unwrap_err();
    assert_eq!(bad_role, "Invalid filter 'role=boss'");

    let tasks = vec![task("t1", 1, 1, TaskState::Running, "", 1), task("t2", 2, 1, TaskState::Running, "", 1)];
    let mut tasks = tasks;
    tasks[1].desired_state = TaskState::Shutdown;
    tasks[0].desired_state = TaskState::Running;
    let ids = |flags: &[&str]| -> Vec<String> {
        let filters = parse(flags, filters::TASK_KEYS).unwrap();
        filters::tasks(tasks.clone(), &filters, &BTreeMap::new()).unwrap().into_iter().map(|t| t.id).collect()
    };
    assert_eq!(ids(&["desired-state=running"]), ["t1"]);
    assert_eq!(ids(&["desired-state=running", "desired-state=shutdown"]), ["t1", "t2"]);
    assert_eq!(ids(&["name=service-name-foo.2"]), ["t2"]);
}

// ---------------------------------------------------------------- inspect

#[test]
fn inspect_json_has_docker_api_shapes() {
    use shoal::cli::inspect;
    use shoal::cli::listing::expand_value;
    use shoal_core::api::{PortConfig, PublishMode, Service, ServiceSpec};
    use shoal_core::control::ServiceView;

    let mut spec = ServiceSpec::new("web", "nginx:1.25");
    spec.mode = ServiceMode::Replicated { replicas: 3 };
    spec.task.args = vec!["-g".into(), "daemon off;".into()];
    spec.ports = vec![PortConfig {
        protocol: "tcp".into(),
        target_port: 80,
        published_port: 0,
        publish_mode: PublishMode::Ingress,
    }];
    let mut endpoint = spec.ports.clone();
    endpoint[0].published_port = 30000;
    let service = Service {
        id: "svcid".into(),
        meta: Meta { version: 7, created_at_ms: 1_700_000_000_000, updated_at_ms: 1_700_000_000_500 },
        spec,
        previous_spec: None,
        spec_version: 1,
        update_status: None,
        job_status: None,
        endpoint_ports: endpoint,
    };
    let value = inspect::service(&ServiceView { service, running: 3, desired: 3, completed: 0 });
    let field = |template: &str| expand_value(template, &value).unwrap();
    assert_eq!(field("{{.ID}} {{.Spec.Name}} {{.Version.Index}}"), "svcid web 7");
    assert_eq!(field("{{json .Spec.Mode}}"), r#"{"Replicated":{"Replicas":3}}"#);
    assert_eq!(field("{{.Spec.TaskTemplate.ContainerSpec.Image}}"), "nginx:1.25");
    assert_eq!(field("{{json .Spec.TaskTemplate.ContainerSpec.Args}}"), r#"["-g","daemon off;"]"#);
    assert_eq!(field("{{.Spec.UpdateConfig.Monitor}}"), "5000000000", "durations in ns");
    assert_eq!(
        field("{{json .Spec.TaskTemplate.RestartPolicy}}"),
        r#"{"Backoff":"fixed","Condition":"any","Delay":5000000000,"MaxAttempts":0,"Window":0}"#
    );
    assert_eq!(field("{{.CreatedAt}}"), "2023-11-14T22:13:20Z");
    assert_eq!(
        field("{{json .Endpoint.Ports}}"),
        r#"[{"Protocol":"tcp","PublishMode":"ingress","PublishedPort":30000,"TargetPort":80}]"#
    );
    assert!(value.get("PreviousSpec").is_none() && value.get("UpdateStatus").is_none(), "omitted when empty");

    let manager = node("m1id", "manager-1", NodeRole::Manager, "1.0");
    let value = inspect::node(&NodeView { node: manager, leader: true, reachability: "reachable".into() });
    let field = |template: &str| expand_value(template, &value).unwrap();
    assert_eq!(
        field("{{.Description.Hostname}} {{.Spec.Role}} {{.Spec.Availability}} {{.Status.State}}"),
        "manager-1 manager active ready"
    );
    assert_eq!(
        field("{{.Status.Addr}} {{.ManagerStatus.Addr}} {{.ManagerStatus.Leader}}"),
        "127.0.0.1 127.0.0.1:2377 true"
    );
    let worker = node("w1id", "worker-1", NodeRole::Worker, "1.0");
    let value = inspect::node(&NodeView { node: worker, leader: false, reachability: String::new() });
    assert!(value.get("ManagerStatus").is_none(), "a worker has no manager status");
}

#[test]
fn env_files_workdir_and_user() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.env");
    std::fs::write(&file, "# settings\nA=1\n\n  B=two words\nPATH\nSHOAL_SURELY_UNSET_VAR\n").unwrap();
    let file = file.to_string_lossy().to_string();
    let Command::Service(ServiceCommand::Create(args)) =
        parse(&["service", "create", "--env-file", &file, "-e", "A=9", "-w", "/srv", "-u", "nobody:nogroup", "img"])
            .unwrap()
            .command
    else {
        panic!("not service create")
    };
    let spec = spec::create_spec(&args).unwrap();
    let path = std::env::var("PATH").unwrap();
    assert_eq!(spec.task.env, ["A=1".to_string(), "B=two words".into(), format!("PATH={path}"), "A=9".into()]);
    assert_eq!((spec.task.workdir.as_str(), spec.task.user.as_str()), ("/srv", "nobody:nogroup"));
    let missing = spec::env_file("/no/such/file").unwrap_err().to_string();
    assert!(missing.starts_with("open /no/such/file: "), "{missing}");
    let bad = dir.path().join("bad.env");
    std::fs::write(&bad, "OK=1\nA B=2\n").unwrap();
    let err = spec::env_file(&bad.to_string_lossy()).unwrap_err().to_string();
    assert!(err.ends_with("bad.env:2: variable 'A B' contains whitespaces"), "{err}");
}

/// Issue 14, item 8: the compose file the README's real-hosts example deploys is on the page, is the
/// one in `tests/data`, and converts as `stack deploy` converts it: two `process` services, one of
/// them on workers only. (The example itself was run as written on two daemons; see the README.)
#[test]
fn readme_compose_example_is_shown_and_deploys() {
    let readme = include_str!("../../README.md");
    let file = include_str!("data/readme-compose.yml");
    let start = readme.find("cat > /tmp/shoal/compose.yml <<'EOF'\n").expect("the README writes the compose file");
    let shown = &readme[start..].split_once('\n').expect("heredoc body").1;
    let shown = &shown[..shown.find("\nEOF\n").expect("heredoc end") + 1];
    assert_eq!(shown, file, "README's compose file and tests/data/readme-compose.yml differ");
    assert!(readme.contains("stack deploy -c /tmp/shoal/compose.yml app"), "the example deploys that file");

    let env = BTreeMap::new();
    let no_env_file = |_: &str| None;
    let input = shoal_core::stack::ComposeInput {
        stack: "app",
        path: "compose.yml",
        text: file,
        env: &env,
        env_file: &no_env_file,
    };
    let plan = shoal_core::stack::convert(&input).expect("the README's compose file converts");
    let services: Vec<(&str, &str, &ServiceMode)> =
        plan.services.iter().map(|s| (s.name.as_str(), s.task.image.as_str(), &s.mode)).collect();
    assert_eq!(
        services,
        [
            ("app_api", "process", &ServiceMode::Replicated { replicas: 2 }),
            ("app_batch", "process", &ServiceMode::Replicated { replicas: 1 }),
        ]
    );
    assert_eq!(plan.services[0].task.args, ["sh", "-c", "echo api up; exec sleep 3600"]);
    assert_eq!(plan.services[1].task.placement.constraints, ["node.role == worker"]);
    assert!(plan.ignored.is_empty() && plan.warnings.is_empty(), "{plan:?}");
}

#[test]
fn health_flags_as_docker_applies_them() {
    use shoal_core::api::HealthConfig;
    let create = create_spec_with;
    let spec = create(&[
        "--health-cmd",
        "wget -q localhost",
        "--health-interval",
        "2s",
        "--health-timeout",
        "1s",
        "--health-retries",
        "4",
        "--health-start-period",
        "500ms",
    ])
    .unwrap();
    let check = spec.task.healthcheck.clone().unwrap();
    assert_eq!(
        check,
        HealthConfig {
            test: vec!["CMD-SHELL".into(), "wget -q localhost".into()],
            interval_ms: 2_000,
            timeout_ms: 1_000,
            retries: 4,
            start_period_ms: 500
        }
    );
    assert_eq!(create(&[]).unwrap().task.healthcheck, None, "no flag: the image's own HEALTHCHECK");
    assert_eq!(create(&["--no-healthcheck"]).unwrap().task.healthcheck, Some(HealthConfig::none()));
    let err = create(&["--no-healthcheck", "--health-retries", "2"]).unwrap_err().to_string();
    assert_eq!(err, "--no-healthcheck conflicts with --health-* options");

    // Update changes only the fields given; an empty command goes back to the image's.
    let update = update_spec_with;
    let updated = update(&spec, &["--health-retries", "9"]).unwrap();
    assert_eq!(updated.task.healthcheck, Some(HealthConfig { retries: 9, ..check.clone() }));
    let inherit = update(&spec, &["--health-cmd", ""]).unwrap();
    assert_eq!(inherit.task.healthcheck.unwrap().test, Vec::<String>::new());
    let off = update(&spec, &["--no-healthcheck"]).unwrap();
    assert_eq!(off.task.healthcheck, Some(HealthConfig::none()));
    let back_on = update(&off, &["--health-interval", "3s"]).unwrap();
    assert_eq!(back_on.task.healthcheck, Some(HealthConfig { interval_ms: 3_000, ..HealthConfig::default() }));
    assert_eq!(update(&spec, &["--replicas", "2"]).unwrap().task.healthcheck, Some(check), "untouched");
}

#[test]
fn node_ls_tls_status_compares_each_node_with_what_the_swarm_wants() {
    use shoal_core::api::NodeTlsInfo;
    let tls = |issuer: &str| NodeTlsInfo { trust_roots: vec!["old".into()], cert_issuer: issuer.into() };
    let mut renewed = node("n1", "renewed", NodeRole::Manager, "1");
    renewed.description.tls_info = Some(tls("new"));
    let mut stale = node("n2", "stale", NodeRole::Worker, "1");
    stale.description.tls_info = Some(tls("old"));
    let silent = node("n3", "silent", NodeRole::Worker, "1");
    let views = [renewed, stale, silent]
        .into_iter()
        .map(|node| NodeView { node, leader: false, reachability: String::new() })
        .collect::<Vec<_>>();
    let listing = render::node_list_with_tls(views, "n1", Some(&tls("new")));
    assert_eq!(
        listing.render(Some("{{.Hostname}}: {{.TLSStatus}}"), false).unwrap(),
        "renewed: Ready\nsilent: Unknown\nstale: Needs Rotation\n"
    );
}
