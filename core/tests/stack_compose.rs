//! `stack deploy`'s conversion against real compose files (`tests/compose/`, see its README for
//! provenance) and against malformed ones: what a user would see in `stack services`, which keys
//! are reported as ignored, and `file:line:` refusals. Ends with a property test: no input panics.

use std::collections::BTreeMap;

use proptest::prelude::*;
use shoal_core::api::{
    FailureAction, HealthConfig, MountType, PublishMode, RestartCondition, ServiceMode, ServiceSpec, UpdateOrder,
};
use shoal_core::stack::{convert, ComposeError, ComposeInput, StackPlan};

fn no_env_file(_: &str) -> Option<String> {
    None
}

fn convert_with(path: &str, text: &str, env: &[(&str, &str)]) -> Result<StackPlan, ComposeError> {
    let env: BTreeMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    convert(&ComposeInput { stack: "s", path, text, env: &env, env_file: &no_env_file })
}

fn example(name: &str) -> StackPlan {
    let path = format!("{}/tests/compose/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("example file");
    convert_with(name, &text, &[]).unwrap_or_else(|e| panic!("{e}"))
}

/// A `stack services`-like row: NAME MODE REPLICAS IMAGE PORTS (ingress ports only, as Docker).
fn row(spec: &ServiceSpec) -> String {
    let (mode, replicas) = match spec.mode {
        ServiceMode::Replicated { replicas } => ("replicated", replicas.to_string()),
        ServiceMode::Global => ("global", "-".to_string()),
        ServiceMode::ReplicatedJob { max_concurrent, total_completions } => {
            ("replicated-job", format!("{max_concurrent}/{total_completions}"))
        }
        ServiceMode::GlobalJob => ("global-job", "-".to_string()),
    };
    let ports: Vec<String> = spec
        .ports
        .iter()
        .filter(|p| p.publish_mode == PublishMode::Ingress)
        .map(|p| format!("*:{}->{}/{}", p.published_port, p.target_port, p.protocol))
        .collect();
    format!("{} {mode} {replicas} {} {}", spec.name, spec.task.image, ports.join(",")).trim_end().to_string()
}

fn rows(plan: &StackPlan) -> Vec<String> {
    plan.services.iter().map(row).collect()
}

fn service<'a>(plan: &'a StackPlan, name: &str) -> &'a ServiceSpec {
    plan.services.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("no service {name}"))
}

fn network_names(plan: &StackPlan) -> Vec<&str> {
    plan.networks.iter().map(|n| n.name.as_str()).collect()
}

#[test]
fn voting_app() {
    let plan = example("voting-app.yml");
    assert_eq!(
        rows(&plan),
        [
            "s_redis replicated 1 redis:alpine",
            "s_db replicated 1 postgres:15-alpine",
            "s_vote replicated 2 dockersamples/examplevotingapp_vote *:5000->80/tcp",
            "s_result replicated 1 dockersamples/examplevotingapp_result *:5001->80/tcp",
            "s_worker replicated 2 dockersamples/examplevotingapp_worker",
        ]
    );
    assert_eq!(network_names(&plan), ["s_frontend", "s_backend"]);
    assert!(plan.networks.iter().all(|n| n.driver == "overlay"
        && !n.external
        && n.labels.get("com.docker.stack.namespace").map(String::as_str) == Some("s")));
    assert_eq!(service(&plan, "s_db").task.env, ["POSTGRES_USER=postgres", "POSTGRES_PASSWORD=postgres"]);
    assert_eq!(service(&plan, "s_worker").task.networks, ["s_frontend", "s_backend"]);
    assert!(plan.services.iter().all(|s| s.labels.get("com.docker.stack.namespace").map(String::as_str) == Some("s")));
    assert!(plan.ignored.is_empty(), "{:?}", plan.ignored);
    assert!(plan.deprecated.is_empty() && plan.warnings.is_empty());
    // `db-data:/var/lib/postgresql/data`: the stack's own volume, labelled with its namespace.
    let db = &service(&plan, "s_db").task.mounts[0];
    assert_eq!((db.source.as_str(), db.target.as_str()), ("s_db-data", "/var/lib/postgresql/data"));
    assert_eq!(
        db.volume.as_ref().and_then(|v| v.labels.get("com.docker.stack.namespace")).map(String::as_str),
        Some("s")
    );
}

#[test]
fn voting_app_2017() {
    let plan = example("voting-app-2017.yml");
    assert_eq!(
        rows(&plan),
        [
            // Services without dependencies first (file order), then those that depend on them.
            "s_redis replicated 1 redis:alpine *:0->6379/tcp",
            "s_db replicated 1 postgres:9.4",
            "s_worker replicated 1 dockersamples/examplevotingapp_worker",
            "s_visualizer replicated 1 dockersamples/visualizer:stable *:8080->8080/tcp",
            "s_vote replicated 2 dockersamples/examplevotingapp_vote:before *:5000->80/tcp",
            "s_result replicated 1 dockersamples/examplevotingapp_result:before *:5001->80/tcp",
        ]
    );
    assert_eq!(service(&plan, "s_vote").depends_on, ["s_redis"]);
    // The visualizer names no network, so it joins the stack's default one.
    assert_eq!(network_names(&plan), ["s_frontend", "s_backend", "s_default"]);
    assert_eq!(service(&plan, "s_visualizer").task.networks, ["s_default"]);
    let redis = service(&plan, "s_redis");
    assert_eq!((redis.update_config.parallelism, redis.update_config.delay_ms), (2, 10_000));
    assert_eq!(redis.task.restart_policy.condition, RestartCondition::OnFailure);
    let worker = service(&plan, "s_worker");
    assert_eq!(worker.task.placement.constraints, ["node.role == manager"]);
    assert_eq!(worker.labels.get("APP").map(String::as_str), Some("VOTING"));
    let policy = &worker.task.restart_policy;
    assert_eq!((policy.delay_ms, policy.max_attempts, policy.window_ms), (10_000, 3, 120_000));
    assert_eq!(service(&plan, "s_visualizer").task.stop_grace_period_ms, 90_000);
    // depends_on is dropped silently, as docker/cli does.
    assert!(plan.ignored.is_empty(), "{:?}", plan.ignored);
}

#[test]
fn swarmprom() {
    let plan = example("swarmprom.yml");
    assert_eq!(
        rows(&plan),
        [
            "s_dockerd-exporter global - stefanprodan/caddy",
            "s_cadvisor global - google/cadvisor",
            "s_grafana replicated 1 stefanprodan/swarmprom-grafana:5.3.4",
            "s_alertmanager replicated 1 stefanprodan/swarmprom-alertmanager:v0.14.0",
            "s_unsee replicated 1 cloudflare/unsee:v0.8.0",
            "s_node-exporter global - stefanprodan/swarmprom-node-exporter:v0.16.0",
            "s_prometheus replicated 1 stefanprodan/swarmprom-prometheus:v2.5.0",
            "s_caddy replicated 1 stefanprodan/caddy *:3000->3000/tcp,*:9090->9090/tcp,*:9093->9093/tcp,*:9094->9094/tcp",
        ]
    );
    assert_eq!(network_names(&plan), ["s_net"]);
    assert!(plan.networks[0].attachable);
    let grafana = service(&plan, "s_grafana");
    // `${ADMIN_USER:-admin}` with no ADMIN_USER set.
    assert_eq!(
        grafana.task.env,
        ["GF_SECURITY_ADMIN_USER=admin", "GF_SECURITY_ADMIN_PASSWORD=admin", "GF_USERS_ALLOW_SIGN_UP=false"]
    );
    assert_eq!(grafana.task.placement.constraints, ["node.role == manager"]);
    assert_eq!(grafana.task.resources.limits.memory_bytes, 128 << 20);
    assert_eq!(grafana.task.resources.reservations.memory_bytes, 64 << 20);
    // `$$` is a literal `$`; `{{.Node.ID}}` is Swarm's template, left alone.
    let exporter = service(&plan, "s_node-exporter");
    assert!(exporter
        .task
        .args
        .contains(&"--collector.filesystem.ignored-mount-points=^/(sys|proc|dev|host|etc)($|/)".into()));
    assert_eq!(exporter.task.env, ["NODE_ID={{.Node.ID}}"]);
    assert_eq!(service(&plan, "s_prometheus").task.args[2], "--storage.tsdb.retention=24h");
    assert_eq!(service(&plan, "s_cadvisor").task.args, ["-logtostderr", "-docker_only"]);
    assert!(plan.ignored.is_empty(), "{:?}", plan.ignored);
    // caddy's healthcheck, `test` as a list taken as written.
    assert_eq!(
        service(&plan, "s_caddy").task.healthcheck,
        Some(HealthConfig {
            test: vec!["CMD".into(), "curl".into(), "-f".into(), "http://localhost:3000".into()],
            interval_ms: 5_000,
            timeout_ms: 1_000,
            retries: 5,
            start_period_ms: 0,
        })
    );
    assert_eq!(service(&plan, "s_grafana").task.healthcheck, None, "no healthcheck: the image's");
    // Configs: every one defined is created under the stack's name from its file; the long syntax's
    // target is kept.
    let configs: Vec<(&str, Option<&str>)> =
        plan.configs.iter().map(|c| (c.name.as_str(), c.file.as_deref())).collect();
    assert_eq!(
        configs,
        [
            ("s_caddy_config", Some("./caddy/Caddyfile")),
            ("s_dockerd_config", Some("./dockerd-exporter/Caddyfile")),
            ("s_node_rules", Some("./prometheus/rules/swarm_node.rules.yml")),
            ("s_task_rules", Some("./prometheus/rules/swarm_task.rules.yml")),
        ]
    );
    let exporter_configs = &service(&plan, "s_dockerd-exporter").task.configs;
    assert_eq!(exporter_configs.len(), 1);
    assert_eq!(
        (exporter_configs[0].name.as_str(), exporter_configs[0].target.as_str(), exporter_configs[0].mode),
        ("s_dockerd_config", "/etc/caddy/Caddyfile", 0o444)
    );

    // With the variables set, they win over the defaults.
    let text = std::fs::read_to_string(format!("{}/tests/compose/swarmprom.yml", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let plan = convert_with("swarmprom.yml", &text, &[("ADMIN_USER", "root"), ("PROMETHEUS_RETENTION", "7d")]).unwrap();
    assert_eq!(service(&plan, "s_caddy").task.env[0], "ADMIN_USER=root");
    assert_eq!(service(&plan, "s_prometheus").task.args[2], "--storage.tsdb.retention=7d");
}

#[test]
fn atsea_shop() {
    let plan = example("atsea-shop.yml");
    assert_eq!(
        rows(&plan),
        [
            "s_reverse_proxy replicated 1 dockersamples/atseasampleshopapp_reverse_proxy *:80->80/tcp,*:443->443/tcp",
            "s_database replicated 1 dockersamples/atsea_db",
            "s_appserver replicated 2 dockersamples/atsea_app",
            "s_visualizer replicated 1 dockersamples/visualizer:stable *:8001->8080/tcp",
            "s_payment_gateway replicated 1 dockersamples/atseasampleshopapp_payment_gateway",
        ]
    );
    assert_eq!(network_names(&plan), ["s_front-tier", "s_back-tier", "s_payment", "s_default"]);
    let app = service(&plan, "s_appserver");
    assert_eq!(app.update_config.parallelism, 2);
    assert_eq!(app.update_config.failure_action, FailureAction::Rollback);
    let policy = &app.task.restart_policy;
    assert_eq!(
        (policy.condition, policy.delay_ms, policy.max_attempts, policy.window_ms),
        (RestartCondition::OnFailure, 5_000, 3, 120_000)
    );
    assert_eq!(app.task.networks, ["s_front-tier", "s_back-tier", "s_payment"]);
    assert_eq!(
        service(&plan, "s_payment_gateway").task.placement.constraints,
        ["node.role == worker", "node.labels.pcidss == yes"]
    );
    // The encrypted overlay's driver_opts are not modelled: warned, never silently lost.
    assert_eq!(plan.ignored, ["networks.driver_opts"]);
    // Secrets are all external: kept by their own names, and the deploy refuses while they are
    // missing, as Docker does (services in name order: appserver first).
    assert!(plan.secrets.iter().all(|s| s.external && s.labels.is_empty()));
    let proxy = &service(&plan, "s_reverse_proxy").task.secrets;
    let targets: Vec<(&str, &str)> = proxy.iter().map(|r| (r.name.as_str(), r.target.as_str())).collect();
    assert_eq!(targets, [("revprox_cert", "revprox_cert"), ("revprox_key", "revprox_key")]);
    let gateway = &service(&plan, "s_payment_gateway").task.secrets[0];
    assert_eq!((gateway.name.as_str(), gateway.target.as_str()), ("staging_token", "payment_token"));
    let no_file = |_: &str| -> Result<Vec<u8>, String> { panic!("external secrets are never read") };
    let err = shoal_core::stack::file_object_steps(&plan, &[], &[], &no_file).unwrap_err();
    assert_eq!(err.to_string(), "service appserver: secret not found: postgres_password");
    let existing: Vec<shoal_core::api::Secret> = ["postgres_password", "staging_token", "revprox_key", "revprox_cert"]
        .iter()
        .map(|name| shoal_core::api::Secret {
            id: format!("id-{name}"),
            meta: Default::default(),
            spec: shoal_core::api::SecretSpec { name: name.to_string(), ..Default::default() },
            sealed: Default::default(),
        })
        .collect();
    let steps = shoal_core::stack::file_object_steps(&plan, &existing, &[], &no_file).unwrap();
    assert!(steps.is_empty(), "external secrets are never created: {steps:?}");
}

#[test]
fn dogvscat_proxy_global() {
    let plan = example("dogvscat-proxy-global.yml");
    assert_eq!(
        rows(&plan),
        [
            "s_traefik-init replicated 1 traefik:1.7-alpine",
            "s_traefik global - traefik:1.7-alpine *:8080->8080/tcp",
            "s_consul replicated 1 consul",
            "s_dockersocket global - tecnativa/docker-socket-proxy",
        ]
    );
    // `name: proxy` keeps its name; the others are prefixed.
    assert_eq!(network_names(&plan), ["proxy", "s_traefik-consul", "s_traefik-docker"]);
    let traefik = service(&plan, "s_traefik");
    let ports: Vec<(u16, u16, PublishMode)> =
        traefik.ports.iter().map(|p| (p.published_port, p.target_port, p.publish_mode)).collect();
    assert_eq!(ports, [(80, 80, PublishMode::Host), (443, 443, PublishMode::Host), (8080, 8080, PublishMode::Ingress)]);
    assert_eq!(traefik.labels.get("traefik.port").map(String::as_str), Some("8080"));
    assert_eq!(traefik.task.networks, ["proxy", "s_traefik-consul", "s_traefik-docker"]);
    let init = service(&plan, "s_traefik-init");
    assert_eq!(init.task.args.len(), 16);
    assert_eq!(init.task.args[2], "--logLevel=\"DEBUG\"");
    assert_eq!(init.task.restart_policy.condition, RestartCondition::OnFailure);
    assert_eq!(service(&plan, "s_consul").task.args, ["agent", "-server", "-bootstrap-expect=1"]);
    assert_eq!(service(&plan, "s_dockersocket").task.env, ["NETWORKS=1", "SERVICES=1", "TASKS=1"]);
    assert_eq!(service(&plan, "s_dockersocket").task.placement.constraints, ["node.role == manager"]);
    // `logging` arrives through the `<<: *default-opts` merge: options for the engine's default
    // driver (no `driver` given), on every service.
    assert_eq!(plan.ignored, ["networks.driver_opts"]);
    for name in ["s_traefik-init", "s_traefik", "s_consul", "s_dockersocket"] {
        let driver = service(&plan, name).task.options.log_driver.clone().expect("logging options");
        assert_eq!(
            (driver.name.as_str(), driver.options.get("max-size").map(String::as_str)),
            ("", Some("1m")),
            "{name}"
        );
    }
    // A top-level volume with a driver and options: scoped to the stack, labelled, its driver kept.
    let consul = &service(&plan, "s_consul").task.mounts;
    assert_eq!(consul.len(), 1);
    assert_eq!(
        (consul[0].kind, consul[0].source.as_str(), consul[0].target.as_str()),
        (MountType::Volume, "s_consul", "/consul/data")
    );
    let options = consul[0].volume.as_ref().expect("volume options");
    assert_eq!(options.driver, "local");
    assert_eq!(options.labels.get("com.docker.stack.namespace").map(String::as_str), Some("s"));
}

#[test]
fn swarmpit() {
    let plan = example("swarmpit.yml");
    assert_eq!(
        rows(&plan),
        [
            "s_app replicated 1 swarmpit/swarmpit:latest *:888->8080/tcp",
            "s_db replicated 1 couchdb:2.3.0",
            "s_influxdb replicated 1 influxdb:1.7",
            "s_agent global - swarmpit/agent:latest",
        ]
    );
    let app = service(&plan, "s_app");
    assert_eq!(app.task.resources.limits.nano_cpus, 500_000_000);
    assert_eq!(app.task.resources.limits.memory_bytes, 1024 << 20);
    assert_eq!(app.task.resources.reservations.nano_cpus, 250_000_000);
    assert_eq!(app.task.env, ["SWARMPIT_DB=http://db:5984", "SWARMPIT_INFLUXDB=http://influxdb:8086"]);
    assert_eq!(service(&plan, "s_agent").labels.get("swarmpit.agent").map(String::as_str), Some("true"));
    assert_eq!(network_names(&plan), ["s_net"]);
    assert!(plan.ignored.is_empty(), "{:?}", plan.ignored);
    // The short syntax: a host path is a read-only bind mount, a declared name a stack volume.
    let socket = &app.task.mounts[0];
    assert_eq!(
        (socket.kind, socket.source.as_str(), socket.target.as_str(), socket.read_only),
        (MountType::Bind, "/var/run/docker.sock", "/var/run/docker.sock", true)
    );
    let db = &service(&plan, "s_db").task.mounts[0];
    assert_eq!(
        (db.kind, db.source.as_str(), db.target.as_str(), db.read_only),
        (MountType::Volume, "s_db-data", "/opt/couchdb/data", false)
    );
}

/// The env files the docker/cli fixture names (its loader tests write them the same way).
fn full_env_file(file: &str) -> Option<String> {
    match file {
        "./example1.env" => Some("# comment\nFOO=foo_from_env_file\nBAZ=baz_from_env_file\n".to_string()),
        "./example2.env" => Some("BAR=bar_from_env_file_2\n".to_string()),
        _ => None,
    }
}

/// The docker/cli loader fixture uses a network it never declares; `stack deploy` refuses it
/// exactly so (docker/cli `convert/service.go`).
#[test]
fn docker_cli_full_example_is_refused_like_docker() {
    let path = format!("{}/tests/compose/docker-cli-full-example.yml", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(path).unwrap();
    let env = BTreeMap::new();
    let input = ComposeInput { stack: "s", path: "full-example.yml", text: &text, env: &env, env_file: &full_env_file };
    let err = convert(&input).unwrap_err().to_string();
    assert_eq!(
        err,
        "full-example.yml:212: services.foo.networks.other-other-network: service \"foo\" refers to undefined \
         network \"other-other-network\": declare it under the top-level networks key"
    );
}

/// The same fixture with that network declared: every key `stack deploy` reads, converted.
#[test]
fn docker_cli_full_example() {
    let path = format!("{}/tests/compose/docker-cli-full-example.yml", env!("CARGO_MANIFEST_DIR"));
    // It also mounts a volume it never declares and a CSI (`cluster`) volume shoal has not.
    let text = std::fs::read_to_string(path)
        .unwrap()
        .replace("\nnetworks:\n", "\nnetworks:\n  other-other-network:\n")
        .replace("\nvolumes:\n", "\nvolumes:\n  datavolume:\n")
        .replace("      - type: cluster\n        source: group:mygroup\n        target: /srv\n", "");
    let env: BTreeMap<String, String> = [("QUX".to_string(), "qux_from_env".to_string())].into();
    let plan =
        convert(&ComposeInput { stack: "s", path: "full.yml", text: &text, env: &env, env_file: &full_env_file })
            .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(plan.services.len(), 1);
    let foo = &plan.services[0];
    assert_eq!(row(foo).split(' ').take(4).collect::<Vec<_>>(), ["s_foo", "replicated", "6", "redis"]);
    assert_eq!(foo.task.command, ["/code/entrypoint.sh", "-p", "3000"]);
    assert_eq!(foo.task.args, ["bundle", "exec", "thin", "-p", "3000"]);
    // env_file first, `environment` overriding it; QUX (no value) from the environment.
    assert_eq!(
        foo.task.env,
        ["FOO=foo_from_env_file", "BAZ=baz_from_service_def", "BAR=bar_from_env_file_2", "QUX=qux_from_env"]
    );
    for config in [&foo.update_config, &foo.rollback_config] {
        assert_eq!(config.parallelism, 3);
        assert_eq!(config.delay_ms, 10_000);
        assert_eq!(config.failure_action, FailureAction::Continue);
        assert_eq!(config.monitor_ms, 60_000);
        assert_eq!(config.max_failure_ratio, 0.3);
        assert_eq!(config.order, UpdateOrder::StartFirst);
    }
    assert_eq!(foo.task.resources.limits.nano_cpus, 1_000_000);
    assert_eq!(foo.task.resources.limits.memory_bytes, 50 << 20);
    assert_eq!(foo.task.resources.reservations.nano_cpus, 100_000);
    assert_eq!(foo.task.resources.reservations.memory_bytes, 20 << 20);
    let policy = &foo.task.restart_policy;
    assert_eq!(
        (policy.condition, policy.delay_ms, policy.max_attempts, policy.window_ms),
        (RestartCondition::OnFailure, 5_000, 3, 120_000)
    );
    assert_eq!(foo.task.placement.constraints, ["node=foo"]);
    assert_eq!(foo.task.placement.preferences, ["spread=node.labels.az"]);
    assert_eq!(foo.task.placement.max_replicas_per_node, 5);
    assert_eq!(foo.task.stop_grace_period_ms, 20_000);
    assert_eq!((foo.task.workdir.as_str(), foo.task.user.as_str()), ("/code", "someone"));
    // `test` as a string runs with the shell.
    assert_eq!(
        foo.task.healthcheck,
        Some(HealthConfig {
            test: vec!["CMD-SHELL".into(), "echo \"hello world\"".into()],
            interval_ms: 10_000,
            timeout_ms: 1_000,
            retries: 5,
            start_period_ms: 15_000,
        })
    );
    // `deploy.labels` label the service; the service's own `labels` its containers (with the stack's).
    assert_eq!(foo.labels.get("FOO").map(String::as_str), Some("BAR"));
    let container_labels = &foo.task.container_labels;
    assert_eq!(container_labels.get("com.example.number").map(String::as_str), Some("42"));
    assert_eq!(container_labels.get("com.example.empty-label").map(String::as_str), Some(""));
    assert_eq!(container_labels.get("com.docker.stack.namespace").map(String::as_str), Some("s"));
    assert!(!foo.labels.contains_key("com.example.number"));
    assert_eq!(foo.task.hostname, "foo");
    // Container options: capabilities, DNS, hosts, read-only root, stop signal, sysctls, ulimits.
    let options = &foo.task.options;
    assert_eq!(options.cap_add, ["ALL"]);
    assert_eq!(options.cap_drop, ["NET_ADMIN", "SYS_ADMIN"]);
    assert_eq!(options.dns, ["8.8.8.8", "9.9.9.9"]);
    assert_eq!(options.dns_search, ["dc1.example.com", "dc2.example.com"]);
    assert_eq!(
        options.hosts,
        ["somehost:162.242.195.82", "otherhost:50.31.209.229", "host.docker.internal:host-gateway"]
    );
    assert!(options.read_only);
    assert_eq!(options.stop_signal, "SIGUSR1");
    assert_eq!(options.sysctls.get("net.core.somaxconn").map(String::as_str), Some("1024"));
    let limits: Vec<(&str, i64, i64)> = options.ulimits.iter().map(|u| (u.name.as_str(), u.soft, u.hard)).collect();
    assert_eq!(limits, [("nproc", 65535, 65535), ("nofile", 20000, 40000)]);
    // Ports: ranges expand, host IPs are dropped.
    let ports: Vec<(u16, u16)> = foo.ports.iter().map(|p| (p.published_port, p.target_port)).collect();
    let mut want = vec![(0, 3000)];
    want.extend((3001..=3005).map(|t| (0, t)));
    want.extend([(8000, 8000), (9090, 8080), (9091, 8081), (49100, 22), (8001, 8001)]);
    want.extend((5000..=5010).map(|p| (p, p)));
    assert_eq!(ports, want);
    // Declared and used networks only; external ones keep their own names and are never created.
    assert_eq!(network_names(&plan), ["s_other-other-network", "s_some-network", "s_other-network"]);
    // Every volume syntax of the fixture: anonymous, absolute and relative binds (from the file's
    // directory when the file is named by an absolute path, as given otherwise; `~` stays for the
    // engine to refuse), a named volume, long-syntax bind and tmpfs.
    let mounts: Vec<(MountType, &str, &str)> =
        foo.task.mounts.iter().map(|m| (m.kind, m.source.as_str(), m.target.as_str())).collect();
    assert_eq!(
        mounts,
        [
            (MountType::Volume, "", "/var/lib/mysql"),
            (MountType::Bind, "/opt/data", "/var/lib/mysql"),
            (MountType::Bind, ".", "/code"),
            (MountType::Bind, "./static", "/var/www/html"),
            (MountType::Bind, "~/configs", "/etc/configs/"),
            (MountType::Volume, "s_datavolume", "/var/lib/mysql"),
            (MountType::Bind, "./opt", "/opt"),
            (MountType::Tmpfs, "", "/opt"),
        ]
    );
    let driver = foo.task.options.log_driver.clone().expect("logging");
    assert_eq!(
        (driver.name.as_str(), driver.options.get("syslog-address").map(String::as_str)),
        ("syslog", Some("tcp://192.168.0.42:123"))
    );
    // Compose aliases are kept per network: the mesh resolver answers them there.
    assert_eq!(
        foo.network_aliases.get("s_some-network").map(Vec::as_slice),
        Some(["alias1".to_string(), "alias3".to_string()].as_slice())
    );
    assert_eq!(
        plan.ignored,
        [
            "build",
            "cgroup_parent",
            "deploy.endpoint_mode",
            "deploy.resources.limits.pids",
            "deploy.resources.reservations.generic_resources",
            "devices",
            "domainname",
            "external_links",
            "ipc",
            "links",
            "mac_address",
            "network_mode",
            "networks.driver_opts",
            "networks.ipam.config (all but the first)",
            "networks.ipam.driver",
            "networks.ipv4_address",
            "networks.ipv6_address",
            "pid",
            "privileged",
            "restart",
            "security_opt",
            "stdin_open",
            "tmpfs",
            "tty",
        ]
    );
    // Secrets and configs, both syntaxes: short takes the key as target, long keeps uid/gid and reads
    // `mode: 0440` as octal, as Docker's YAML 1.1 parser does.
    let secrets: Vec<(&str, &str, &str, u32)> =
        foo.task.secrets.iter().map(|r| (r.name.as_str(), r.target.as_str(), r.uid.as_str(), r.mode)).collect();
    assert_eq!(secrets, [("my_secret", "my_secret", "103", 0o440), ("s_secret1", "secret1", "0", 0o444)]);
    let configs: Vec<(&str, &str, &str, u32)> =
        foo.task.configs.iter().map(|r| (r.name.as_str(), r.target.as_str(), r.gid.as_str(), r.mode)).collect();
    assert_eq!(configs, [("my_config", "/my_config", "103", 0o440), ("s_config1", "/config1", "0", 0o444)]);
    let defined: Vec<(&str, bool)> = plan.secrets.iter().map(|s| (s.name.as_str(), s.external)).collect();
    assert_eq!(defined, [("s_secret1", false), ("my_secret", true), ("secret3", true), ("bar", false)]);
    assert_eq!(plan.secrets[0].labels.get("foo").map(String::as_str), Some("bar"));
    assert_eq!(plan.secrets[0].labels.get("com.docker.stack.namespace").map(String::as_str), Some("s"));
    // Deploying: the defined ones are read and created (in file order, secrets then configs); `bar`
    // has no file, which the deploy refuses by name.
    let read = |file: &str| -> Result<Vec<u8>, String> { Ok(format!("contents of {file}").into_bytes()) };
    let mine = |name: &str| shoal_core::api::Secret {
        id: name.into(),
        meta: Default::default(),
        spec: shoal_core::api::SecretSpec { name: name.into(), ..Default::default() },
        sealed: Default::default(),
    };
    let config = |name: &str| shoal_core::api::Config {
        id: name.into(),
        meta: Default::default(),
        spec: shoal_core::api::SecretSpec { name: name.into(), ..Default::default() },
        sealed: Default::default(),
    };
    let err =
        shoal_core::stack::file_object_steps(&plan, &[mine("my_secret")], &[config("my_config")], &read).unwrap_err();
    assert_eq!(err.to_string(), "secret bar: file is required (or declare it external)");
    let steps = shoal_core::stack::file_object_steps(
        &plan,
        &[mine("my_secret"), mine("bar")],
        &[config("my_config"), config("foo")],
        &read,
    )
    .unwrap();
    let lines: Vec<String> = steps.iter().map(shoal_core::stack::StackStep::message).collect();
    assert_eq!(lines, ["Creating secret s_secret1", "Creating config s_config1"]);
    let err = shoal_core::stack::file_object_steps(&plan, &[mine("bar")], &[config("my_config")], &read).unwrap_err();
    assert_eq!(err.to_string(), "service foo: secret not found: my_secret");
    assert_eq!(plan.deprecated.len(), 2);
    assert!(plan.deprecated[0].starts_with("container_name: "));
    assert!(plan.deprecated[1].starts_with("expose: "));
}

/// Unknown keys are warned about at their own line and skipped; the rest of the file deploys.
#[test]
fn unknown_keys_warn_at_their_line() {
    let text = "services:\n  a:\n    image: x\n    colour: blue\n    deploy:\n      replicas: 2\n      flavour: 1\n\
                frobs: 1\n";
    let plan = convert_with("compose.yml", text, &[]).unwrap();
    assert_eq!(
        plan.warnings,
        [
            "compose.yml:8: unknown key \"frobs\" in the top level ignored (expected version, services, networks, \
             volumes, secrets, configs or an x- extension)",
            "compose.yml:4: unknown key \"colour\" in services.a ignored (expected a version 3 service key)",
            "compose.yml:7: unknown key \"flavour\" in services.a.deploy ignored (expected mode, replicas, labels, \
             placement, resources, restart_policy, update_config, rollback_config, endpoint_mode)",
        ]
    );
    assert_eq!(plan.services[0].mode, shoal_core::api::ServiceMode::Replicated { replicas: 2 });
}

/// `depends_on` (list or mapping) names the stack's services; undefined names and cycles are refused
/// at the line of the `depends_on`, and the plan says Swarm would have ignored it.
#[test]
fn depends_on_orders_and_is_checked() {
    let text = concat!(
        "services:\n  web:\n    image: x\n    depends_on: [api]\n",
        "  api:\n    image: x\n    depends_on:\n      db:\n        condition: service_started\n",
        "  db:\n    image: x\n",
    );
    let plan = convert_with("c.yml", text, &[]).unwrap();
    assert_eq!(service(&plan, "s_web").depends_on, ["s_api"]);
    assert_eq!(service(&plan, "s_api").depends_on, ["s_db"]);
    assert!(service(&plan, "s_db").depends_on.is_empty());
    let order: Vec<&str> = plan.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(order, ["s_db", "s_api", "s_web"], "dependencies are created first");
    assert!(plan.warnings.iter().any(|w| w.contains("Docker Swarm ignores depends_on")), "{:?}", plan.warnings);
    let lenient = convert_with("c.yml", "services:\n  web:\n    image: x\n    depends_on: [nope]\n", &[]).unwrap();
    assert!(lenient.services[0].depends_on.is_empty());
    assert_eq!(lenient.warnings[0], "c.yml:4: service \"web\" depends on undefined service \"nope\": ignored");
    let err = |text: &str| convert_with("c.yml", text, &[]).unwrap_err().to_string();
    assert_eq!(
        err("services:\n  a:\n    image: x\n    depends_on: [b]\n  b:\n    image: x\n    depends_on: [a]\n"),
        "c.yml:4: services.a.depends_on: dependency cycle: a -> b -> a"
    );
}

/// `networks.<n>.ipam.config[0].subnet` becomes the network's subnet; a bad one is refused at its line.
#[test]
fn ipam_subnets_are_applied() {
    let text = concat!(
        "services:\n  a:\n    image: x\n    networks: [back]\nnetworks:\n  back:\n    ipam:\n",
        "      driver: default\n      config:\n        - subnet: 10.77.0.0/16\n",
    );
    let plan = convert_with("c.yml", text, &[]).unwrap();
    assert_eq!(plan.networks[0].subnet, "10.77.0.0/16");
    let create = shoal_core::stack::StackStep::CreateNetwork(plan.networks[0].clone()).request();
    assert!(
        matches!(&create, shoal_core::control::ControlRequest::NetworkCreate { subnet, .. } if subnet == "10.77.0.0/16"),
        "{create:?}"
    );
    let bad = text.replace("10.77.0.0/16", "10.77.0.0/99");
    let err = convert_with("c.yml", &bad, &[]).unwrap_err().to_string();
    assert!(err.starts_with("c.yml:10: networks.back.ipam.config[0].subnet: invalid subnet \"10.77.0.0/99\""), "{err}");
}

#[test]
fn external_networks_keep_their_names() {
    let text = "services:\n  a:\n    image: x\n    networks: [ext, named]\nnetworks:\n  ext:\n    external: true\n  named:\n    external:\n      name: my-net\n";
    let plan = convert_with("c.yml", text, &[]).unwrap();
    assert_eq!(network_names(&plan), ["ext", "my-net"]);
    assert!(plan.networks.iter().all(|n| n.external && n.labels.is_empty()));
    assert_eq!(plan.services[0].task.networks, ["ext", "my-net"]);
}

/// The message for each malformed input, with the line it points at.
#[test]
fn refusals_name_file_line_and_what_was_expected() {
    let err = |text: &str| convert_with("compose.yml", text, &[]).unwrap_err().to_string();
    assert_eq!(
        err("version: '3.8'\nservices:\n  web:\n    image: nginx\n    deploy:\n      replicas: three\n"),
        "compose.yml:6: services.web.deploy.replicas: expected an integer, got \"three\""
    );
    assert_eq!(
        err("services:\n  a:\n    command: x\n"),
        "compose.yml:3: invalid image reference for service a: no image specified"
    );
    assert_eq!(
        err("services:\n  a:\n    image: x\n    deploy: {mode: global, replicas: 2}\n"),
        "compose.yml:4: services.a.deploy.replicas: replicas can only be used with replicated or replicated-job mode"
    );
    assert_eq!(
        err("services:\n  a:\n    image: x\n    deploy: {mode: sometimes}\n"),
        "compose.yml:4: services.a.deploy.mode: unknown mode: sometimes (expected replicated, global, replicated-job or global-job)"
    );
    assert_eq!(
        err("services:\n  a:\n    image: x\n    networks:\n      - front\n      - nope\nnetworks:\n  front:\n"),
        "compose.yml:6: services.a.networks[1]: service \"a\" refers to undefined network \"nope\": declare it \
         under the top-level networks key"
    );
    assert_eq!(
        err("version: '2.1'\nservices: {}\n"),
        "compose.yml:1: unsupported Compose file version: 2.1 (stack deploy reads version 3 files)"
    );
    assert_eq!(
        err("services:\n  a:\n    image: x\n    mem_limit: 1g\n    extends: b\n"),
        "compose.yml:4: compose file contains unsupported options:\n\n\
         extends: Support for `extends` is not implemented yet.\n\
         mem_limit: Set resource limits using deploy.resources"
    );
    assert_eq!(
        err("services:\n  a:\n    image: x\n    ports:\n      - 80\n      - \"99999:80\"\n"),
        "compose.yml:6: services.a.ports[1]: invalid port \"99999\": ports are numbers from 1 to 65535"
    );
    assert_eq!(
        err("services:\n  a:\n    image: x\n    stop_grace_period: soon\n"),
        "compose.yml:4: services.a.stop_grace_period: expected a duration like 10s, 1m30s or 300ms, got \"soon\""
    );
    assert_eq!(
        err("services:\n  a:\n    image: x\n    deploy:\n      update_config:\n        max_failure_ratio: 2\n"),
        "compose.yml:6: services.a.deploy.update_config.max_failure_ratio: expected a number between 0 and 1, got 2"
    );
    assert_eq!(
        err("services:\n  a:\n    image: ${TAG:?set TAG first}\n"),
        "compose.yml:3: services.a.image: required variable TAG is missing a value: set TAG first"
    );
    assert!(err("services: [\n").starts_with("compose.yml:2: invalid YAML: "), "{}", err("services: [\n"));
    assert_eq!(
        err("- a\n- b\n"),
        "compose.yml:1: a compose file is a mapping with a services key at the top level, got a list"
    );
    let bad_stack = convert(&ComposeInput {
        stack: "my stack",
        path: "c.yml",
        text: "services: {}",
        env: &BTreeMap::new(),
        env_file: &no_env_file,
    });
    assert!(bad_stack.unwrap_err().to_string().starts_with("c.yml: invalid stack name \"my stack\""));
}

#[test]
fn env_files_must_exist() {
    let err = convert_with("c.yml", "services:\n  a:\n    image: x\n    env_file: ./missing.env\n", &[]).unwrap_err();
    assert_eq!(err.to_string(), "c.yml:4: services.a.env_file: couldn't find env file \"./missing.env\"");
}

#[test]
fn unset_variables_warn_and_go_blank() {
    let plan =
        convert_with("c.yml", "services:\n  a:\n    image: \"busybox${TAG}\"\n    environment: [A=$NOPE]\n", &[])
            .unwrap();
    assert_eq!(plan.services[0].task.image, "busybox");
    assert_eq!(plan.services[0].task.env, ["A="]);
    assert_eq!(
        plan.warnings,
        [
            "The TAG variable is not set. Defaulting to a blank string.",
            "The NOPE variable is not set. Defaulting to a blank string."
        ]
    );
}

/// Mutations of a real file: drop, duplicate or re-indent a line, or splice in a scalar.
fn mutate(text: &str, line: usize, how: u8, junk: &str) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    if lines.is_empty() {
        return junk.to_string();
    }
    let at = line % lines.len();
    match how % 5 {
        0 => {
            lines.remove(at);
        }
        1 => {
            let copy = lines[at].clone();
            lines.insert(at, copy);
        }
        2 => lines[at] = format!("  {}", lines[at]),
        3 => lines[at] = lines[at].trim_start().to_string(),
        _ => {
            let cut = lines[at].find(':').map(|i| i + 1).unwrap_or(0);
            lines[at] = format!("{} {junk}", &lines[at][..cut]);
        }
    }
    lines.join("\n")
}

const EXAMPLES: &[&str] = &[
    include_str!("compose/voting-app.yml"),
    include_str!("compose/voting-app-2017.yml"),
    include_str!("compose/swarmprom.yml"),
    include_str!("compose/atsea-shop.yml"),
    include_str!("compose/dogvscat-proxy-global.yml"),
    include_str!("compose/swarmpit.yml"),
    include_str!("compose/docker-cli-full-example.yml"),
];

fn no_panic(text: &str) {
    let env: BTreeMap<String, String> = [("A".to_string(), "1".to_string())].into();
    let env_file = |_: &str| Some("K=v\n".to_string());
    if let Err(err) = convert(&ComposeInput { stack: "s", path: "f.yml", text, env: &env, env_file: &env_file }) {
        // Every refusal says where: the file, and a line when the text has one for it.
        assert!(err.to_string().starts_with("f.yml"), "{err}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
        no_panic(&text);
    }

    #[test]
    fn yaml_shaped_text_never_panics(
        text in "(services|version|networks|deploy|image|ports|replicas|x-a|<<|&a|\\*a|\\$\\{A:-|\\}|[ \n:\\-\\[\\]{},'\"#0-9a-z]){0,80}"
    ) {
        no_panic(&text);
    }

    #[test]
    fn mutated_examples_never_panic(
        file in 0..EXAMPLES.len(),
        edits in proptest::collection::vec((0usize..400, 0u8..5, "[a-z0-9:\\-\\[\\]{}$*&'\" ]{0,12}"), 1..4),
    ) {
        let mut text = EXAMPLES[file].to_string();
        for (line, how, junk) in &edits {
            text = mutate(&text, *line, *how, junk);
        }
        no_panic(&text);
    }
}

mod steps {
    use shoal_core::api::{Meta, Network, Service};
    use shoal_core::control::ControlRequest;
    use shoal_core::stack::{deploy_steps, remove_steps, StackError, StackStep};

    use super::convert_with;

    const V1: &str =
        "services:\n  web:\n    image: nginx:1\n  db:\n    image: pg\n    networks: [back]\nnetworks:\n  back:\n";

    fn network(name: &str, stack: Option<&str>) -> Network {
        Network {
            id: format!("id-{name}"),
            meta: Meta::default(),
            name: name.into(),
            driver: "overlay".into(),
            subnet: String::new(),
            attachable: false,
            ingress: false,
            leases: Default::default(),
            labels: stack
                .map(|s| [("com.docker.stack.namespace".to_string(), s.to_string())].into())
                .unwrap_or_default(),
        }
    }

    fn service(spec: shoal_core::api::ServiceSpec, version: u64) -> Service {
        Service {
            id: format!("id-{}", spec.name),
            meta: Meta { version, ..Meta::default() },
            spec,
            previous_spec: None,
            spec_version: 1,
            update_status: None,
            endpoint_ports: Vec::new(),
            job_status: None,
        }
    }

    #[test]
    fn first_deploy_creates_networks_then_services() {
        let plan = convert_with("c.yml", V1, &[]).unwrap();
        let steps = deploy_steps(&plan, &[], &[], false).unwrap();
        let lines: Vec<String> = steps.iter().map(StackStep::message).collect();
        assert_eq!(
            lines,
            [
                "Creating network s_back",
                "Creating network s_default",
                "Creating service s_web",
                "Creating service s_db"
            ]
        );
        assert!(matches!(steps[0].request(), ControlRequest::NetworkCreate { ref driver, .. } if driver == "overlay"));
    }

    #[test]
    fn redeploy_updates_in_place_and_prune_removes_the_rest() {
        let plan = convert_with("c.yml", V1, &[]).unwrap();
        let mut web = plan.services[0].clone();
        web.task.force_update = 4;
        let mut gone = plan.services[1].clone();
        gone.name = "s_old".into();
        let current = [service(web, 7), service(gone, 2)];
        let networks = [network("s_back", Some("s")), network("s_default", Some("s"))];
        let steps = deploy_steps(&plan, &networks, &current, false).unwrap();
        let lines: Vec<String> = steps.iter().map(StackStep::message).collect();
        assert_eq!(lines, ["Updating service s_web (id: id-s_web)", "Creating service s_db"]);
        // The forced-update counter is kept, so an unchanged service is not redeployed.
        let StackStep::UpdateService { version, spec, .. } = &steps[0] else { panic!("{steps:?}") };
        assert_eq!((*version, spec.task.force_update), (7, 4));
        let pruned = deploy_steps(&plan, &networks, &current, true).unwrap();
        assert_eq!(pruned[0].message(), "Removing service s_old");
    }

    #[test]
    fn external_networks_must_exist() {
        let text = "services:\n  a:\n    image: x\n    networks: [ext]\nnetworks:\n  ext:\n    external: true\n";
        let plan = convert_with("c.yml", text, &[]).unwrap();
        let err = deploy_steps(&plan, &[], &[], false).unwrap_err();
        assert_eq!(err, StackError::ExternalNetworkMissing("ext".into()));
        assert!(err.to_string().starts_with("network \"ext\" is declared as external, but could not be found."));
        let steps = deploy_steps(&plan, &[network("ext", None)], &[], false).unwrap();
        assert_eq!(steps.len(), 1);
    }

    #[test]
    fn rm_removes_only_the_stacks_objects() {
        let plan = convert_with("c.yml", V1, &[]).unwrap();
        let mut other = plan.services[0].clone();
        other.name = "t_web".into();
        other.labels.insert("com.docker.stack.namespace".into(), "t".into());
        let current = [service(plan.services[1].clone(), 1), service(plan.services[0].clone(), 1), service(other, 1)];
        let networks = [network("s_default", Some("s")), network("s_back", Some("s")), network("shared", None)];
        let lines: Vec<String> = remove_steps("s", &networks, &current).iter().map(StackStep::message).collect();
        assert_eq!(
            lines,
            [
                "Removing service s_db",
                "Removing service s_web",
                "Removing network s_back",
                "Removing network s_default"
            ]
        );
        assert!(remove_steps("nope", &networks, &current).is_empty());
    }
}

/// `deploy.mode: replicated-job|global-job`: replicas is both the concurrency and the completions (as
/// docker/cli converts it), the restart condition defaults to on-failure, `replicas` with a global job
/// is refused at its line.
#[test]
fn job_modes_convert_as_docker_does() {
    let text = "services:\n  once:\n    image: x\n    deploy: {mode: replicated-job, replicas: 3}\n  \
                each:\n    image: x\n    deploy: {mode: global-job}\n  plain:\n    image: x\n    \
                deploy:\n      mode: replicated-job\n      restart_policy: {condition: any}\n";
    let plan = convert_with("c.yml", text, &[]).unwrap();
    let by_name = |n: &str| plan.services.iter().find(|s| s.name == format!("s_{n}")).unwrap().clone();
    let once = by_name("once");
    assert_eq!(once.mode, ServiceMode::ReplicatedJob { max_concurrent: 3, total_completions: 3 });
    assert_eq!(once.task.restart_policy.condition, RestartCondition::OnFailure);
    assert_eq!(by_name("each").mode, ServiceMode::GlobalJob);
    let plain = by_name("plain");
    assert_eq!(plain.mode, ServiceMode::ReplicatedJob { max_concurrent: 1, total_completions: 1 });
    assert_eq!(plain.task.restart_policy.condition, RestartCondition::Any, "a condition the file gives stays");
    let err =
        convert_with("c.yml", "services:\n  a:\n    image: x\n    deploy: {mode: global-job, replicas: 2}\n", &[])
            .unwrap_err()
            .to_string();
    assert_eq!(
        err,
        "c.yml:4: services.a.deploy.replicas: replicas can only be used with replicated or replicated-job mode"
    );
    let err = convert_with("c.yml", "services:\n  a:\n    image: x\n    deploy: {mode: batch}\n", &[])
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("c.yml:4: ") && err.contains("unknown mode: batch"), "{err}");
}

/// Service `volumes:` in both syntaxes and top-level volumes (named, `name:`, `external`), as docker/cli
/// converts them; its refusals name the line.
#[test]
fn volumes_short_and_long_syntax_scoped_to_the_stack() {
    let text = "services:\n  a:\n    image: x\n    volumes:\n      - data:/data:ro,nocopy\n      - /srv/www:/www\n      \
                - /anon\n      - ./conf:/conf\n      - type: tmpfs\n        target: /run/cache\n        tmpfs: {size: 64m}\n      \
                - type: volume\n        source: shared\n        target: /shared\n      - {type: volume, source: ext, target: /ext}\n\
                volumes:\n  data:\n    labels: {tier: db}\n  shared:\n    name: everyone\n  ext:\n    external: true\n";
    let env = BTreeMap::new();
    let input = ComposeInput { stack: "s", path: "/home/u/app/stack.yml", text, env: &env, env_file: &no_env_file };
    let plan = convert(&input).unwrap();
    let mounts = &plan.services[0].task.mounts;
    let shape: Vec<(MountType, &str, &str, bool)> =
        mounts.iter().map(|m| (m.kind, m.source.as_str(), m.target.as_str(), m.read_only)).collect();
    assert_eq!(
        shape,
        [
            (MountType::Volume, "s_data", "/data", true),
            (MountType::Bind, "/srv/www", "/www", false),
            (MountType::Volume, "", "/anon", false),
            (MountType::Bind, "/home/u/app/conf", "/conf", false),
            (MountType::Tmpfs, "", "/run/cache", false),
            (MountType::Volume, "everyone", "/shared", false),
            (MountType::Volume, "ext", "/ext", false),
        ]
    );
    let data = mounts[0].volume.as_ref().unwrap();
    assert!(data.no_copy);
    assert_eq!(data.labels.get("tier").map(String::as_str), Some("db"));
    assert_eq!(data.labels.get("com.docker.stack.namespace").map(String::as_str), Some("s"));
    assert_eq!(mounts[4].tmpfs.as_ref().unwrap().size_bytes, 64 << 20);
    assert!(mounts[6].volume.as_ref().unwrap().labels.is_empty(), "an external volume is not labelled");
    assert!(plan.ignored.is_empty(), "{:?}", plan.ignored);

    let err = |text: &str| convert_with("c.yml", text, &[]).unwrap_err().to_string();
    assert_eq!(
        err("services:\n  a:\n    image: x\n    volumes:\n      - nowhere:/data\n"),
        "c.yml:5: services.a.volumes[0]: undefined volume \"nowhere\""
    );
    assert_eq!(
        err("services:\n  a:\n    image: x\n    volumes:\n      - {type: tmpfs, source: x, target: /t}\n"),
        "c.yml:5: services.a.volumes[0]: invalid tmpfs source, source must be empty"
    );
    assert_eq!(
        err("services:\n  a:\n    image: x\n    volumes:\n      - {type: bind, target: /t}\n"),
        "c.yml:5: services.a.volumes[0]: invalid bind source, source cannot be empty"
    );
    assert_eq!(
        err("services:\n  a:\n    image: x\n    volumes:\n      - a:b:c:d\n"),
        "c.yml:5: services.a.volumes[0]: invalid spec: a:b:c:d: too many colons"
    );
}

#[test]
fn healthcheck_disable_and_refusals() {
    let file =
        |check: &str| format!("version: \"3.8\"\nservices:\n  web:\n    image: nginx\n    healthcheck:\n{check}");
    let plan = convert_with("s.yml", &file("      disable: true\n"), &[]).unwrap();
    assert_eq!(plan.services[0].task.healthcheck, Some(HealthConfig::none()));
    let plan = convert_with("s.yml", &file("      test: [\"NONE\"]\n"), &[]).unwrap();
    assert!(plan.services[0].task.healthcheck.as_ref().unwrap().is_disabled());
    let err = convert_with("s.yml", &file("      disable: true\n      test: [\"CMD\", \"true\"]\n"), &[]).unwrap_err();
    assert_eq!(err.to_string(), "s.yml:6: services.web.healthcheck: test and disable can't be set at the same time");
    let err = convert_with("s.yml", &file("      test: [\"curl\", \"-f\"]\n"), &[]).unwrap_err();
    assert!(err.to_string().starts_with("s.yml:6: services.web.healthcheck.test: \"curl\" is not CMD"), "{err}");
    let err = convert_with("s.yml", &file("      intervall: 5s\n"), &[]).unwrap_err();
    assert!(
        err.to_string().starts_with("s.yml:6: services.web.healthcheck.intervall: additional property \"intervall\""),
        "{err}"
    );
}
