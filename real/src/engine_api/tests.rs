//! Request decoding replayed from what Docker's clients really sent (the docker CLI 28.2.2's
//! captured requests, /work/shared/research/docker-cli-requests.txt; docker-py's lowercase keys and
//! list filters), and the routing layer against a fake daemon.

use std::sync::Mutex;

use async_trait::async_trait;
use shoal_core::api::{EndpointMode, PublishMode, RestartCondition, ServiceMode, ServiceSpec, UpdateOrder};
use shoal_core::control::ServiceView;

use super::*;
use crate::local_api::LocalResult;

/// `docker service create --name web -p 8080:80 --replicas 2 --network mynet busybox sleep 1d`, as
/// the CLI sent it (its secret taken out: shoal refuses secrets, tested below).
const CLI_CREATE: &str = r#"{"Name": "web", "Labels": {}, "TaskTemplate": {"ContainerSpec": {"Image": "busybox:latest@sha256:abababababababababababababababababababababababababababababababab", "Args": ["sleep", "1d"], "Init": false, "DNSConfig": {}}, "Resources": {"Limits": {}, "Reservations": {}}, "Placement": {"Platforms": [{"Architecture": "amd64", "OS": "linux"}]}, "Networks": [{"Target": "fef09ca26efb49f8a312b311c"}], "ForceUpdate": 0}, "Mode": {"Replicated": {"Replicas": 2}}, "EndpointSpec": {"Mode": "vip", "Ports": [{"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8080, "PublishMode": "ingress"}]}}"#;

/// The same with the secret, exactly as captured.
const CLI_CREATE_WITH_SECRET: &str = r#"{"Name": "web", "Labels": {}, "TaskTemplate": {"ContainerSpec": {"Image": "busybox:latest", "Args": ["sleep", "1d"], "Init": false, "DNSConfig": {}, "Secrets": [{"File": {"Name": "pw", "UID": "0", "GID": "0", "Mode": 292}, "SecretID": "d4358dcf8bd345158612bae0e", "SecretName": "pw"}]}, "ForceUpdate": 0}, "Mode": {"Replicated": {"Replicas": 2}}}"#;

/// `docker stack deploy`'s second service (global, no endpoint spec).
const CLI_STACK_GLOBAL: &str = r#"{"Name": "app_db", "Labels": {"com.docker.stack.image": "redis:7", "com.docker.stack.namespace": "app"}, "TaskTemplate": {"ContainerSpec": {"Image": "redis:7@sha256:abababababababababababababababababababababababababababababababab", "Labels": {"com.docker.stack.namespace": "app"}, "Privileges": {"CredentialSpec": null, "SELinuxContext": null, "NoNewPrivileges": false}}, "Resources": {}, "Placement": {"Platforms": [{"Architecture": "amd64", "OS": "linux"}]}, "Networks": [{"Target": "app_back", "Aliases": ["db"]}], "ForceUpdate": 0}, "Mode": {"Global": {}}, "EndpointSpec": {}}"#;

/// `docker stack deploy`'s update config: start-first, no failure action or monitor given.
const CLI_STACK_UPDATE_CONFIG: &str = r#"{"Name": "app_web", "TaskTemplate": {"ContainerSpec": {"Image": "nginx:1.27", "Env": ["FOO=bar"]}, "Resources": {"Limits": {"NanoCPUs": 500000000, "MemoryBytes": 134217728}}, "Placement": {"Constraints": ["node.role == manager"]}}, "Mode": {"Replicated": {"Replicas": 2}}, "UpdateConfig": {"Parallelism": 1, "Delay": 10000000000, "MaxFailureRatio": 0, "Order": "start-first"}, "EndpointSpec": {"Ports": [{"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8080, "PublishMode": "ingress"}]}}"#;

/// docker-py 7's `client.services.create("busybox", ["sleep", "60"], name="py", mode=ServiceMode("replicated", 3))`:
/// lowercase mode keys, as docker-py writes them.
const DOCKER_PY_CREATE: &str = r#"{"Name": "py", "TaskTemplate": {"ContainerSpec": {"Image": "busybox", "Command": ["sleep", "60"]}}, "Mode": {"replicated": {"Replicas": 3}}, "Labels": {"Owner.Case": "kept"}}"#;

#[test]
fn the_cli_create_request_decodes_to_its_spec() {
    let spec = decode::service_spec(CLI_CREATE.as_bytes()).unwrap();
    assert_eq!(spec.name, "web");
    assert_eq!(
        spec.task.image,
        "busybox:latest@sha256:abababababababababababababababababababababababababababababababab"
    );
    assert_eq!(spec.task.args, ["sleep", "1d"]);
    assert!(spec.task.command.is_empty());
    assert_eq!(spec.mode, ServiceMode::Replicated { replicas: 2 });
    assert_eq!(spec.task.networks, ["fef09ca26efb49f8a312b311c"]);
    assert_eq!(spec.task.placement.platforms, ["linux/amd64"]);
    assert_eq!(spec.ports.len(), 1);
    let port = &spec.ports[0];
    assert_eq!((port.protocol.as_str(), port.target_port, port.published_port), ("tcp", 80, 8080));
    assert_eq!(port.publish_mode, PublishMode::Ingress);
    assert_eq!(spec.endpoint_mode, EndpointMode::Vip);
    // What the CLI left out keeps Swarm's defaults.
    let defaults = ServiceSpec::new("web", "x");
    assert_eq!(spec.update_config, defaults.update_config);
    assert_eq!(spec.task.restart_policy, defaults.task.restart_policy);
    assert_eq!(spec.task.stop_grace_period_ms, defaults.task.stop_grace_period_ms);
}

/// What `docker service create --secret pw` sends: the reference with its runtime file target.
#[test]
fn container_spec_secrets_and_configs_are_decoded() {
    let spec = decode::service_spec(CLI_CREATE_WITH_SECRET.as_bytes()).unwrap();
    assert_eq!(spec.task.secrets.len(), 1);
    let secret = &spec.task.secrets[0];
    assert_eq!(
        (secret.id.as_str(), secret.name.as_str(), secret.target.as_str()),
        ("d4358dcf8bd345158612bae0e", "pw", "pw")
    );
    assert_eq!((secret.uid.as_str(), secret.gid.as_str(), secret.mode), ("0", "0", 0o444));
    let config = br#"{"Name":"c","TaskTemplate":{"ContainerSpec":{"Image":"i","Configs":[{"File":{"Name":"/etc/app.conf","UID":"0","GID":"0","Mode":288},"ConfigID":"x","ConfigName":"app"}]}}}"#;
    let spec = decode::service_spec(config).unwrap();
    let config = &spec.task.configs[0];
    assert_eq!((config.name.as_str(), config.target.as_str(), config.mode), ("app", "/etc/app.conf", 0o440));
    let (spec, data) = decode::file_object_spec(
        br#"{"Name":"pw","Labels":{"a":"b"},"Data":"aHVudGVyMg==","Templating":{"Name":"golang"}}"#,
    )
    .unwrap();
    assert_eq!((spec.name.as_str(), spec.templating.as_str(), data.as_str()), ("pw", "golang", "aHVudGVyMg=="));
    assert_eq!(spec.labels.get("a").map(String::as_str), Some("b"));
}

#[test]
fn a_healthcheck_is_decoded_and_shown_as_docker_shows_it() {
    // What `docker service create --health-cmd "wget -q localhost" --health-interval 2s --health-retries 4` sends.
    let body = br#"{"Name":"h","TaskTemplate":{"ContainerSpec":{"Image":"busybox","Healthcheck":{"Test":["CMD-SHELL","wget -q localhost"],"Interval":2000000000,"Retries":4}}},"Mode":{"Replicated":{"Replicas":1}}}"#;
    let spec = decode::service_spec(body).unwrap();
    let check = spec.task.healthcheck.clone().unwrap();
    assert_eq!(check.test, ["CMD-SHELL", "wget -q localhost"]);
    assert_eq!((check.interval_ms, check.retries, check.timeout_ms, check.start_period_ms), (2_000, 4, 0, 0));
    let shown = crate::cli::inspect::task_template(&spec.task, &Default::default());
    assert_eq!(
        shown["ContainerSpec"]["Healthcheck"],
        serde_json::json!({"Test": ["CMD-SHELL", "wget -q localhost"], "Interval": 2_000_000_000u64, "Retries": 4})
    );
    let none = br#"{"Name":"h","TaskTemplate":{"ContainerSpec":{"Image":"busybox","Healthcheck":{"Test":["NONE"]}}}}"#;
    assert!(decode::service_spec(none).unwrap().task.healthcheck.unwrap().is_disabled());
    let bad = br#"{"Name":"h","TaskTemplate":{"ContainerSpec":{"Image":"busybox","Healthcheck":{"Test":["curl"]}}}}"#;
    assert!(decode::service_spec(bad).unwrap_err().0.contains("is not CMD, CMD-SHELL or NONE"));
}

#[test]
fn unsupported_parts_of_a_spec_are_refused_by_name() {
    // Jobs take the daemon's defaults: concurrency 1, completions = concurrency.
    let job = decode::service_spec(br#"{"Name":"j","Mode":{"ReplicatedJob":{}}}"#).unwrap();
    assert_eq!(job.mode, ServiceMode::ReplicatedJob { max_concurrent: 1, total_completions: 1 });
    let job =
        decode::service_spec(br#"{"Name":"j","Mode":{"ReplicatedJob":{"MaxConcurrent":2,"TotalCompletions":5}}}"#)
            .unwrap();
    assert_eq!(job.mode, ServiceMode::ReplicatedJob { max_concurrent: 2, total_completions: 5 });
    let job = decode::service_spec(br#"{"Name":"j","Mode":{"GlobalJob":{}}}"#).unwrap();
    assert_eq!(job.mode, ServiceMode::GlobalJob);
    let err = decode::service_spec(b"{not json").unwrap_err();
    assert!(err.0.starts_with("invalid JSON: "), "{err}");
    let err = decode::service_spec(br#"{"Name":"x","Mode":{"Replicated":{"Replicas":-1}}}"#).unwrap_err();
    assert_eq!(err.0, "Replicas: expected a non-negative integer, got -1");
    let err = decode::service_spec(br#"{"Name":"x","UpdateConfig":{"Delay":-5}}"#).unwrap_err();
    assert_eq!(err.0, "Delay cannot be negative");
}

#[test]
fn stack_deploy_requests_decode() {
    let global = decode::service_spec(CLI_STACK_GLOBAL.as_bytes()).unwrap();
    assert_eq!(global.mode, ServiceMode::Global);
    assert_eq!(global.labels.get("com.docker.stack.namespace").map(String::as_str), Some("app"));
    assert_eq!(global.task.networks, ["app_back"]);
    assert_eq!(global.network_aliases.get("app_back"), Some(&vec!["db".to_string()]));

    let web = decode::service_spec(CLI_STACK_UPDATE_CONFIG.as_bytes()).unwrap();
    assert_eq!(web.update_config.parallelism, 1);
    assert_eq!(web.update_config.delay_ms, 10_000);
    assert_eq!(web.update_config.order, UpdateOrder::StartFirst);
    assert_eq!(web.update_config.monitor_ms, 5_000, "an absent monitor is swarmkit's default");
    assert_eq!(web.task.resources.limits.nano_cpus, 500_000_000);
    assert_eq!(web.task.resources.limits.memory_bytes, 134_217_728);
    assert_eq!(web.task.placement.constraints, ["node.role == manager"]);
    assert_eq!(web.task.env, ["FOO=bar"]);
}

#[test]
fn docker_py_lowercase_keys_decode_and_user_maps_stay_verbatim() {
    let spec = decode::service_spec(DOCKER_PY_CREATE.as_bytes()).unwrap();
    assert_eq!(spec.mode, ServiceMode::Replicated { replicas: 3 });
    assert_eq!(spec.task.command, ["sleep", "60"]);
    assert_eq!(spec.labels.get("Owner.Case").map(String::as_str), Some("kept"));
    // Replicas left out: Swarm's one.
    let one = decode::service_spec(
        br#"{"Name":"o","TaskTemplate":{"ContainerSpec":{"Image":"i"}},"Mode":{"Replicated":{}}}"#,
    )
    .unwrap();
    assert_eq!(one.mode, ServiceMode::Replicated { replicas: 1 });
}

#[test]
fn what_inspect_shows_decodes_back_to_the_same_spec() {
    // `docker service scale|update` send back the spec they read from inspect: the round trip must
    // not change anything (a scale would otherwise be a rolling update).
    let mut spec = decode::service_spec(CLI_STACK_UPDATE_CONFIG.as_bytes()).unwrap();
    spec.task.restart_policy.condition = RestartCondition::OnFailure;
    spec.task.placement.preferences = vec!["spread=node.labels.zone".into()];
    spec.task.networks = vec!["back".into()];
    spec.network_aliases.insert("back".into(), vec!["web".into()]);
    spec.endpoint_mode = EndpointMode::Dnsrr;
    spec.ports[0].publish_mode = PublishMode::Host;
    spec.task.hostname = "{{.Node.Hostname}}-{{.Task.Slot}}".into();
    spec.task.container_labels.insert("slot".into(), "{{.Task.Slot}}".into());
    let options = &mut spec.task.options;
    options.cap_add = vec!["NET_ADMIN".into()];
    options.cap_drop = vec!["MKNOD".into()];
    options.sysctls.insert("kernel.msgmax".into(), "65536".into());
    options.ulimits = vec![shoal_core::api::Ulimit { name: "nofile".into(), soft: 1024, hard: 2048 }];
    options.init = Some(false);
    options.stop_signal = "SIGINT".into();
    options.read_only = true;
    options.dns = vec!["10.9.9.9".into()];
    options.dns_search = vec!["corp.example".into()];
    options.dns_options = vec!["ndots:2".into()];
    options.hosts = vec!["db:10.0.0.5".into(), "gw:host-gateway".into()];
    let service = shoal_core::api::Service {
        id: "s1".into(),
        meta: Default::default(),
        spec: spec.clone(),
        previous_spec: None,
        spec_version: 1,
        update_status: None,
        endpoint_ports: Vec::new(),
        job_status: None,
    };
    let shown = inspect::service(&ServiceView { service, running: 0, desired: 2, completed: 0 });
    let body = serde_json::to_vec(&shown["Spec"]).unwrap();
    assert_eq!(decode::service_spec(&body).unwrap(), spec);
}

#[test]
fn filters_decode_in_both_forms() {
    let map =
        decode::filters(Some(r#"{"_up-to-date":{"true":true},"service":{"5645702846cd4e5da9f8b7989":true}}"#)).unwrap();
    assert_eq!(
        map,
        [("_up-to-date".to_string(), "true".to_string()), ("service".into(), "5645702846cd4e5da9f8b7989".into())]
    );
    let list = decode::filters(Some(r#"{"service":["web"],"desired-state":["running","shutdown"]}"#)).unwrap();
    assert_eq!(
        list,
        [
            ("desired-state".to_string(), "running".to_string()),
            ("desired-state".into(), "shutdown".into()),
            ("service".into(), "web".into())
        ]
    );
    assert_eq!(decode::filters(Some(r#"{"name":{"x":false}}"#)).unwrap(), []);
    assert!(decode::filters(Some("[1]")).unwrap_err().0.starts_with("invalid filter: "));
    assert_eq!(decode::filters(None).unwrap(), []);
}

#[test]
fn node_updates_decode_the_cli_requests() {
    // `docker node update --availability drain node1`, `docker node demote node1`, as captured.
    let drain = decode::node_spec(br#"{"Labels": {}, "Role": "manager", "Availability": "drain"}"#).unwrap();
    assert_eq!(drain.availability, Some(shoal_core::api::Availability::Drain));
    assert_eq!(drain.role, Some(NodeRole::Manager));
    assert_eq!(drain.labels, Some(Default::default()));
    let demote = decode::node_spec(br#"{"Labels": {}, "Role": "worker", "Availability": "active"}"#).unwrap();
    assert_eq!(demote.role, Some(NodeRole::Worker));
    let err = decode::node_spec(br#"{"Availability": "gone"}"#).unwrap_err();
    assert_eq!(err.0, "invalid availability \"gone\", only active, pause and drain are supported");
    assert_eq!(decode::node_spec(b"{}").unwrap().labels, None, "absent labels are kept, not cleared");
}

#[test]
fn query_booleans_are_dockers() {
    for no in ["", "0", "no", "false", "FALSE", "none"] {
        assert!(!decode::query_bool(Some(no)), "{no}");
    }
    for yes in ["1", "true", "True", "yes"] {
        assert!(decode::query_bool(Some(yes)), "{yes}");
    }
    assert!(!decode::query_bool(None));
}

#[test]
fn network_create_decodes_the_cli_request() {
    let body = br#"{"Driver": "overlay", "Scope": "", "IPAM": {"Driver": "default", "Options": {}, "Config": [{"Subnet": "10.213.0.0/16"}]}, "Internal": false, "Attachable": true, "Ingress": false, "ConfigOnly": false, "ConfigFrom": null, "Options": {}, "Labels": {"a": "b"}, "Name": "mynet", "CheckDuplicate": true}"#;
    let request = decode::network_create(body).unwrap();
    assert_eq!(request.name, "mynet");
    assert_eq!(request.driver, "overlay");
    assert!(request.attachable);
    assert_eq!(request.subnet, "10.213.0.0/16");
    assert_eq!(request.labels.get("a").map(String::as_str), Some("b"));
    let stack = br#"{"Driver": "overlay", "IPAM": null, "Attachable": false, "Options": null, "Labels": {"com.docker.stack.namespace": "app"}, "Name": "app_front"}"#;
    assert_eq!(decode::network_create(stack).unwrap().subnet, "");
}

#[test]
fn versions_outside_the_range_are_refused_in_dockers_words() {
    assert_eq!(split_version("/v1.41/services/x"), (Some("1.41"), "/services/x"));
    assert_eq!(split_version("/_ping"), (None, "/_ping"));
    assert_eq!(split_version("/volumes"), (None, "/volumes"));
    let too_new = check_version("1.99").unwrap();
    assert_eq!(too_new.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        serde_json::from_slice::<Value>(&too_new.body).unwrap(),
        json!({"message": "client version 1.99 is too new. Maximum supported API version is 1.41"})
    );
    assert!(check_version("1.41").is_none() && check_version("1.24").is_none());
    assert_eq!(check_version("1.12").unwrap().status, StatusCode::BAD_REQUEST);
}

/// A daemon that records what it was asked and answers from a script.
struct Fake {
    asked: Mutex<Vec<LocalRequest>>,
}

#[async_trait]
impl LocalHandler for Fake {
    async fn handle(&self, request: LocalRequest) -> LocalResult {
        self.asked.lock().unwrap().push(request.clone());
        match request {
            LocalRequest::SwarmStatus => Ok(LocalAnswer::Status(SwarmStatus {
                state: "inactive".into(),
                node_id: String::new(),
                node_addr: String::new(),
                error: String::new(),
                version: String::new(),
            })),
            LocalRequest::Control { request } => match *request {
                ControlRequest::ServiceInspect { service } => {
                    Err(LocalError::Control(ControlError::NotFound(format!("service {service} not found"))))
                }
                ControlRequest::ServiceCreate { spec } => {
                    Ok(LocalAnswer::Control(ControlResponse::Created { id: format!("id-of-{}", spec.name) }))
                }
                ControlRequest::SecretCreate { spec, .. } => {
                    Ok(LocalAnswer::Control(ControlResponse::Created { id: format!("id-of-{}", spec.name) }))
                }
                ControlRequest::SecretList => Ok(LocalAnswer::Control(ControlResponse::Secrets(vec![
                    shoal_core::api::Secret {
                        id: "s1".into(),
                        meta: Default::default(),
                        spec: shoal_core::api::SecretSpec { name: "pw".into(), ..Default::default() },
                        sealed: Default::default(),
                    },
                    shoal_core::api::Secret {
                        id: "s2".into(),
                        meta: Default::default(),
                        spec: shoal_core::api::SecretSpec { name: "other".into(), ..Default::default() },
                        sealed: Default::default(),
                    },
                ]))),
                ControlRequest::ConfigInspect { config } => {
                    Err(LocalError::Control(ControlError::NotFound(format!("config {config} not found"))))
                }
                _ => Err(LocalError::Refused(
                    "This node is not a swarm manager. Use \"shoal swarm init\" or \"shoal swarm join\" to connect \
                     this node to swarm and try again."
                        .into(),
                )),
            },
            _ => Err(LocalError::BadRequest("not scripted".into())),
        }
    }
}

fn api() -> (EngineApi, Arc<Fake>) {
    let fake = Arc::new(Fake { asked: Mutex::new(Vec::new()) });
    (EngineApi::new(fake.clone(), "host-1".into()), fake)
}

fn message(reply: &Reply) -> String {
    serde_json::from_slice::<Value>(&reply.body).unwrap()["message"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn routes_answer_with_dockers_statuses_and_bodies() {
    let (api, fake) = api();
    let ping = api.answer(&Method::GET, "/_ping", "", b"").await;
    assert_eq!((ping.status, &ping.body[..]), (StatusCode::OK, &b"OK"[..]));
    assert!(ping.extra.contains(&("Swarm", "inactive".to_string())));

    let created = api.answer(&Method::POST, "/v1.41/services/create", "", CLI_CREATE.as_bytes()).await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert_eq!(serde_json::from_slice::<Value>(&created.body).unwrap(), json!({"ID": "id-of-web"}));
    let asked = fake.asked.lock().unwrap().clone();
    let Some(LocalRequest::Control { request }) = asked.last() else { panic!("{asked:?}") };
    let ControlRequest::ServiceCreate { spec } = request.as_ref() else { panic!("{request:?}") };
    assert_eq!(spec.mode, ServiceMode::Replicated { replicas: 2 });

    let missing = api.answer(&Method::GET, "/v1.41/services/nope", "insertDefaults=true", b"").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(message(&missing), "service nope not found");
    assert_eq!(missing.content_type, "application/json");

    let no_swarm = api.answer(&Method::GET, "/v1.41/nodes", "", b"").await;
    assert_eq!(no_swarm.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(message(&no_swarm).starts_with("This node is not a swarm manager."));

    let bad = api.answer(&Method::POST, "/v1.41/services/create", "", br#"{"Name":"x","Mode":"global"}"#).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(message(&bad), "Mode: expected an object, got \"global\"");

    let container = api.answer(&Method::GET, "/v1.41/containers/abc123/json", "", b"").await;
    assert_eq!(container.status, StatusCode::NOT_FOUND);
    assert_eq!(message(&container), "No such container: abc123");
    for path in ["/v1.41/containers/json", "/images/json", "/v1.41/volumes", "/v1.41/events", "/v1.41/build"] {
        let reply = api.answer(&Method::GET, path, "", b"").await;
        assert_eq!(reply.status, StatusCode::NOT_IMPLEMENTED, "{path}");
        assert!(message(&reply).contains("is not served by shoal: "), "{path}: {}", message(&reply));
    }
    // `docker service create --secret pw` looks the secret up by exact name first.
    let secrets =
        api.answer(&Method::GET, "/v1.41/secrets", "filters=%7B%22names%22%3A%7B%22pw%22%3Atrue%7D%7D", b"").await;
    let listed: Value = serde_json::from_slice(&secrets.body).unwrap();
    assert_eq!(secrets.status, StatusCode::OK);
    assert_eq!(
        listed,
        serde_json::json!([{"ID": "s1", "Version": {"Index": 0}, "CreatedAt": "1970-01-01T00:00:00Z",
        "UpdatedAt": "1970-01-01T00:00:00Z", "Spec": {"Name": "pw", "Labels": {}}}])
    );
    let secret = api.answer(&Method::GET, "/v1.41/configs/app_cf", "", b"").await;
    assert_eq!((secret.status, message(&secret)), (StatusCode::NOT_FOUND, "config app_cf not found".into()));
    let create = api.answer(&Method::POST, "/v1.41/secrets/create", "", br#"{"Name":"pw","Data":"czNjcjN0"}"#).await;
    assert_eq!(create.status, StatusCode::CREATED);
    assert_eq!(serde_json::from_slice::<Value>(&create.body).unwrap(), serde_json::json!({"ID": "id-of-pw"}));
    let asked = fake.asked.lock().unwrap().clone();
    let Some(LocalRequest::Control { request }) = asked.last() else { panic!("{asked:?}") };
    let ControlRequest::SecretCreate { spec, data } = request.as_ref() else { panic!("{request:?}") };
    assert_eq!((spec.name.as_str(), data.0.as_str()), ("pw", "czNjcjN0"));
    let too_new = api.answer(&Method::GET, "/v1.99/version", "", b"").await;
    assert_eq!(too_new.status, StatusCode::BAD_REQUEST);

    let bad_filter = api.answer(&Method::GET, "/v1.41/tasks", "filters=%7B%22bogus%22%3A%5B%22x%22%5D%7D", b"").await;
    assert_eq!((bad_filter.status, message(&bad_filter)), (StatusCode::BAD_REQUEST, "invalid filter 'bogus'".into()));

    let version = api.answer(&Method::GET, "/version", "", b"").await;
    let version: Value = serde_json::from_slice(&version.body).unwrap();
    assert_eq!((version["ApiVersion"].as_str(), version["MinAPIVersion"].as_str()), (Some("1.41"), Some("1.24")));
}

#[tokio::test]
async fn an_update_needs_a_version() {
    let (api, _) = api();
    let reply = api.answer(&Method::POST, "/v1.41/services/web/update", "", CLI_CREATE.as_bytes()).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(message(&reply), "version is required to update a service");
    let reply = api.answer(&Method::POST, "/v1.41/services/web/update", "version=x", CLI_CREATE.as_bytes()).await;
    assert_eq!(message(&reply), "invalid service version \"x\": not a number");
}

/// `docker swarm init --advertise-addr 127.0.0.167:40011 --listen-addr 127.0.0.167:40011
/// --dispatcher-heartbeat 1s --data-path-port 24998`, as the CLI 28.2.2 sent it (only the spec fields
/// whose flags were given; `SubnetSize` is its flag's default).
const CLI_SWARM_INIT: &str = r#"{"ListenAddr":"127.0.0.167:40011","AdvertiseAddr":"127.0.0.167:40011","DataPathAddr":"","DataPathPort":24998,"ForceNewCluster":false,"Spec":{"Labels":null,"Orchestration":{},"Raft":{"ElectionTick":0,"HeartbeatTick":0},"Dispatcher":{"HeartbeatPeriod":1000000000},"CAConfig":{},"TaskDefaults":{},"EncryptionConfig":{"AutoLockManagers":false}},"AutoLockManagers":false,"Availability":"","DefaultAddrPool":[],"SubnetSize":24}"#;

/// `docker swarm update --task-history-limit 3 --cert-expiry 48h` on that swarm, as captured: the
/// whole spec the CLI read from `/swarm`, with the flags' settings changed (and `?version=1`).
const CLI_SWARM_UPDATE: &str = r#"{"Name":"default","Labels":{},"Orchestration":{"TaskHistoryRetentionLimit":3},"Raft":{"SnapshotInterval":10000,"KeepOldSnapshots":0,"LogEntriesForSlowFollowers":500,"ElectionTick":10,"HeartbeatTick":1},"Dispatcher":{"HeartbeatPeriod":1000000000},"CAConfig":{"NodeCertExpiry":172800000000000},"TaskDefaults":{},"EncryptionConfig":{"AutoLockManagers":false}}"#;

#[test]
fn swarm_init_join_and_update_bodies_decode() {
    let init = swarm::init_request(CLI_SWARM_INIT.as_bytes()).unwrap();
    assert_eq!((init.listen_addr.as_str(), init.advertise_addr.as_str()), ("127.0.0.167:40011", "127.0.0.167:40011"));
    assert_eq!(init.data_path_port, Some(24998));
    assert_eq!(init.availability, shoal_core::api::Availability::Active);
    assert_eq!(init.overrides.heartbeat_period_ms, Some(1000));
    assert_eq!(init.overrides.task_history_retention_limit, None, "an unset flag keeps Swarm's default");
    assert_eq!(init.overrides.cert_expiry_ms, None);
    assert_eq!(init.overrides.autolock, None, "AutoLockManagers false leaves autolock off");
    let locked = swarm::init_request(br#"{"ListenAddr":"0.0.0.0:2377","AutoLockManagers":true}"#).unwrap();
    assert_eq!(locked.overrides.autolock, Some(true), "`docker swarm init --autolock`");
    let named = swarm::init_request(br#"{"Spec":{"Name":"prod"}}"#).unwrap_err();
    assert_eq!(named.0, "swarm spec must be named \"default\"");

    let join = swarm::join_request(
        br#"{"ListenAddr":"127.0.0.6:4500","AdvertiseAddr":"127.0.0.6:4500","DataPathAddr":"","RemoteAddrs":["127.0.0.5:4500"],"JoinToken":"SWMTKN-1-x-y","Availability":"drain"}"#,
    )
    .unwrap();
    assert_eq!((join.remote_addr.as_str(), join.token.as_str()), ("127.0.0.5:4500", "SWMTKN-1-x-y"));
    assert_eq!(join.availability, shoal_core::api::Availability::Drain);
    let nowhere = swarm::join_request(br#"{"JoinToken":"t","RemoteAddrs":[]}"#).unwrap_err();
    assert_eq!(nowhere.0, "at least 1 RemoteAddr is required to join");

    // `swarm update --task-history-limit 9`: the CLI sends back the whole spec it read, changed.
    let current = shoal_core::api::ClusterSpec::default();
    let ca = rcgen::KeyPair::generate().and_then(|key| {
        let mut params = rcgen::CertificateParams::new(Vec::new())?;
        params.distinguished_name.push(rcgen::DnType::CommonName, "swarm-ca");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&key)
    });
    let pem = ca.expect("a CA certificate").pem();
    let tls = encode::tls_info(&pem);
    assert_eq!(tls["TrustRoot"], pem.as_str());
    use base64::Engine as _;
    let decode = |v: &serde_json::Value| base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap()).unwrap();
    let subject = decode(&tls["CertIssuerSubject"]);
    assert_eq!(subject[0], 0x30, "a DER SEQUENCE");
    assert!(subject.windows(8).any(|w| w == b"swarm-ca"), "the subject names the CA");
    assert_eq!(decode(&tls["CertIssuerPublicKey"])[0], 0x30);
    assert_eq!(encode::tls_info("garbage")["CertIssuerSubject"], "");
    let mut spec = encode::swarm(&cluster_info(current.clone()), "w", "m", "")["Spec"].clone();
    assert_eq!(swarm::update_request(spec.to_string().as_bytes(), &current).unwrap(), None, "nothing changed");
    spec["Orchestration"]["TaskHistoryRetentionLimit"] = json!(9);
    let update = swarm::update_request(spec.to_string().as_bytes(), &current).unwrap();
    assert_eq!(
        update,
        Some(ControlRequest::ClusterUpdate {
            task_history_limit: Some(9),
            heartbeat_period_ms: None,
            node_cert_expiry_ms: None
        })
    );
    spec["Raft"]["ElectionTick"] = json!(20);
    let refused = swarm::update_request(spec.to_string().as_bytes(), &current).unwrap_err();
    assert!(refused.0.contains("Raft.ElectionTick"), "{refused}");

    let current = shoal_core::api::ClusterSpec { heartbeat_period_ms: 1000, ..Default::default() };
    let update = swarm::update_request(CLI_SWARM_UPDATE.as_bytes(), &current).unwrap();
    assert_eq!(
        update,
        Some(ControlRequest::ClusterUpdate {
            task_history_limit: Some(3),
            heartbeat_period_ms: None,
            node_cert_expiry_ms: Some(48 * 3600 * 1000)
        })
    );
}

fn cluster_info(spec: shoal_core::api::ClusterSpec) -> shoal_core::control::ClusterInfo {
    shoal_core::control::ClusterInfo {
        node_id: "n1".into(),
        node_addr: "127.0.0.5:4500".into(),
        is_manager: true,
        cluster_id: "c1".into(),
        managers: 1,
        nodes: 1,
        spec,
        manager_addrs: vec!["127.0.0.5:4500".into()],
        leader_addr: None,
        meta: shoal_core::api::Meta { version: 7, created_at_ms: 0, updated_at_ms: 0 },
        root_rotation_in_progress: false,
    }
}

#[tokio::test]
async fn swarm_requests_go_to_the_daemon() {
    let (api, fake) = api();
    // The fake answers swarm init with "not scripted": what matters is what it was asked.
    let reply = api.answer(&Method::POST, "/v1.41/swarm/init", "", CLI_SWARM_INIT.as_bytes()).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let leave = api.answer(&Method::POST, "/v1.41/swarm/leave", "force=1", b"").await;
    assert_eq!(leave.status, StatusCode::BAD_REQUEST);
    let asked = fake.asked.lock().unwrap().clone();
    assert!(matches!(&asked[0], LocalRequest::SwarmInit(init) if init.data_path_port == Some(24998)), "{asked:?}");
    assert_eq!(asked[1], LocalRequest::SwarmLeave { force: true });
    let update = api.answer(&Method::POST, "/v1.41/swarm/update", "rotateWorkerToken=true", b"{}").await;
    assert_eq!(
        (update.status, message(&update)),
        (StatusCode::BAD_REQUEST, "version is required to update a swarm".into())
    );
}

#[test]
fn logs_are_framed_as_dockers_multiplexed_stream() {
    use shoal_core::env::LogLine;
    use shoal_core::logs::{ServiceLogs, TaskLogs};
    let line = |time_ns, text: &str, stderr| LogLine { time_ns, text: text.into(), stderr };
    let logs = ServiceLogs {
        service_id: "svc1".into(),
        service_name: "web".into(),
        tasks: vec![
            TaskLogs {
                task_id: "t1".into(),
                task_name: "web.1".into(),
                node_id: "n1".into(),
                hostname: "m1".into(),
                lines: vec![line(1_000_000_000, "one", false), line(3_000_000_000, "oops", true)],
                last_ns: Some(3_000_000_000),
            },
            TaskLogs {
                task_id: "t2".into(),
                task_name: "web.2".into(),
                node_id: "n2".into(),
                hostname: "w1".into(),
                lines: vec![line(2_000_000_000, "two", false)],
                last_ns: Some(2_000_000_000),
            },
        ],
        unreachable: Vec::new(),
    };
    let query = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let none = logs::options(&query(&[("tail", "all")]), 0).unwrap_err();
    assert_eq!(none.0, "Bad parameters: you must choose at least one stream");
    let options =
        logs::options(&query(&[("stdout", "1"), ("stderr", "1"), ("details", "1"), ("tail", "5")]), 0).unwrap();
    assert_eq!(options.tail, Some(5));
    let bytes = logs::frames(&logs, &options);
    // Split the stream back into (stream, payload) as Docker's stdcopy does.
    let mut frames = Vec::new();
    let mut rest = &bytes[..];
    while rest.len() >= 8 {
        let size = u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]) as usize;
        frames.push((rest[0], String::from_utf8(rest[8..8 + size].to_vec()).unwrap()));
        rest = &rest[8 + size..];
    }
    assert!(rest.is_empty());
    let attrs = |node: &str, task: &str| {
        format!("com.docker.swarm.node.id={node},com.docker.swarm.service.id=svc1,com.docker.swarm.task.id={task}")
    };
    assert_eq!(
        frames,
        [
            (1, format!("{} one\n", attrs("n1", "t1"))),
            (1, format!("{} two\n", attrs("n2", "t2"))),
            (2, format!("{} oops\n", attrs("n1", "t1"))),
        ],
        "oldest first across tasks; stderr lines on stream 2"
    );
    let stdout_only =
        logs::options(&query(&[("stdout", "true"), ("timestamps", "true"), ("since", "1.5")]), 0).unwrap();
    assert_eq!(stdout_only.since_ns, Some(1_500_000_000));
    // docker-py sends `since=0`: from the start, not "0 seconds ago".
    let from_start = logs::options(&query(&[("stdout", "1"), ("since", "0")]), 5_000_000_000).unwrap();
    assert_eq!(from_start.since_ns, None);
    let unix = logs::options(&query(&[("stdout", "1"), ("since", "4")]), 5_000_000_000).unwrap();
    assert_eq!(unix.since_ns, Some(4_000_000_000), "a bare number is Unix seconds");
    let bytes = logs::frames(&logs, &stdout_only);
    assert_eq!(&bytes[..8], &[1, 0, 0, 0, 0, 0, 0, 35]);
    assert_eq!(&bytes[8..43], b"1970-01-01T00:00:01.000000000Z one\n");
    assert_eq!(bytes.len(), 2 * 43, "two stdout lines, no stderr");
}

/// A logs request is checked, and its first answer read, before the stream starts: a bad query or
/// a daemon that cannot answer is an ordinary error reply, not a broken stream.
#[tokio::test]
async fn logs_errors_come_before_the_stream() {
    let (api, fake) = api();
    let api = Arc::new(api);
    let query = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let Err(no_stream) = api.clone().logs_stream(&Client::default(), "web".into(), query(&[("tail", "all")])).await
    else {
        panic!("a request for no stream is refused")
    };
    assert_eq!(no_stream.status, StatusCode::BAD_REQUEST);
    assert_eq!(message(&no_stream), "Bad parameters: you must choose at least one stream");
    assert!(fake.asked.lock().unwrap().is_empty(), "refused before the daemon is asked");
    let Err(no_swarm) =
        api.clone().logs_stream(&Client::default(), "web".into(), query(&[("stdout", "1"), ("follow", "1")])).await
    else {
        panic!("the fake daemon is in no swarm")
    };
    assert_eq!(no_swarm.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(message(&no_swarm).starts_with("This node is not a swarm manager. Use \"docker swarm init\""));
    let asked = fake.asked.lock().unwrap().clone();
    let Some(LocalRequest::Control { request }) = asked.last() else { panic!("{asked:?}") };
    assert!(matches!(request.as_ref(), ControlRequest::ServiceLogs { service, .. } if service == "web"), "{request:?}");
    assert_eq!(logs_target(&Method::GET, "/v1.41/tasks/abc/logs"), Some("abc"));
    assert_eq!(logs_target(&Method::GET, "/services/web/logs"), Some("web"));
    assert_eq!(logs_target(&Method::POST, "/services/web/logs"), None);
    assert_eq!(logs_target(&Method::GET, "/services/web"), None);
}

#[test]
fn registry_auth_header_decodes_what_the_client_sends() {
    let auth = shoal_core::api::RegistryAuth {
        server_address: "127.0.0.1:5000".into(),
        username: "user".into(),
        password: "p?>~ass".into(),
        identity_token: String::new(),
    };
    assert_eq!(decode::registry_auth(&crate::engine_pull::encode_auth(&auth)), Some(auth));
    assert_eq!(decode::registry_auth(""), None);
    assert_eq!(decode::registry_auth("not base64!"), None);
}

#[test]
fn force_rotate_asks_for_a_new_root_ca() {
    let current = shoal_core::api::ClusterSpec::default();
    let spec = |body: &str| {
        let object: serde_json::Map<String, Value> = serde_json::from_str(body).unwrap();
        swarm::spec_settings(&object, &current).unwrap()
    };
    assert!(spec(r#"{"CAConfig":{"ForceRotate":1}}"#).force_rotate);
    assert!(!spec(r#"{"CAConfig":{"ForceRotate":0}}"#).force_rotate);
    assert!(!spec(r#"{"CAConfig":{}}"#).force_rotate);
}
