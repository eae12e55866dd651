//! `POST /swarm/init`, `/swarm/join`, `/swarm/leave` and `/swarm/update`: Docker's swarm
//! lifecycle requests, translated to the requests `shoal swarm …` sends — the daemon's own
//! [`LocalRequest::SwarmInit`]/`SwarmJoin`/`SwarmLeave`, and the control API's `ClusterUpdate` and
//! `JoinToken { rotate }` — so both front ends go through the same checks.
//!
//! Docker's `swarm.Spec` has more settings than shoal keeps. A setting shoal has no counterpart for
//! is refused by name when a request would change it (its zero value, or on update its current value,
//! passes), rather than accepted and silently dropped.

use std::collections::BTreeMap;

use hyper::StatusCode;
use serde_json::{json, Map, Value};
use shoal_core::api::{Availability, ClusterSpec, NodeRole};
use shoal_core::control::{ControlRequest, ControlResponse};

use super::decode::{self, as_object, duration_ms, field, object_field, string, strings, unsigned, DecodeError};
use super::{out_of_sequence, required_version, unexpected, unexpected_control, Answer, EngineApi, Reply};
use crate::local_api::{ClusterOverrides, InitRequest, JoinRequest, LocalAnswer, LocalRequest};

type Result<T> = std::result::Result<T, DecodeError>;

fn parse(body: &[u8], what: &str) -> Result<Map<String, Value>> {
    // docker-py sends no body at all for some requests; an empty one is an empty object.
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| DecodeError(format!("invalid JSON: {e}")))?;
    as_object(&value, what).cloned()
}

fn boolean(object: &Map<String, Value>, key: &str) -> Result<bool> {
    match field(object, key) {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(DecodeError(format!("{key}: expected a boolean, got {other}"))),
    }
}

fn availability(object: &Map<String, Value>) -> Result<Availability> {
    match string(object, "Availability")?.as_str() {
        "" | "active" => Ok(Availability::Active),
        "pause" => Ok(Availability::Pause),
        "drain" => Ok(Availability::Drain),
        other => Err(DecodeError(format!("invalid Availability {other:?}: use active, pause or drain"))),
    }
}

/// `DataPathPort` (0 = Swarm's 4789).
fn data_path_port(object: &Map<String, Value>) -> Result<Option<u32>> {
    match unsigned(object, "DataPathPort")? {
        None | Some(0) => Ok(None),
        Some(port) => u32::try_from(port)
            .map(Some)
            .map_err(|_| DecodeError(format!("DataPathPort {port} is not in valid range (1024-49151)"))),
    }
}

/// The settings of a `swarm.Spec` shoal keeps; `None` where the spec leaves one unset (zero).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpecSettings {
    pub task_history_limit: Option<u64>,
    pub snapshot_interval: Option<u64>,
    pub heartbeat_period_ms: Option<u64>,
    pub node_cert_expiry_ms: Option<u64>,
    /// `EncryptionConfig.AutoLockManagers`, when the spec says.
    pub autolock: Option<bool>,
    /// `CAConfig.ForceRotate` is set (`swarm ca --rotate` sends the shown value plus one, and `/swarm`
    /// shows 0): rotate to a new root CA.
    pub force_rotate: bool,
}

/// Read a `swarm.Spec`. Settings shoal has no counterpart for must be unset or equal to what
/// `current` shows (`/swarm` prints them, and the CLI's `swarm update` sends back what it read).
pub fn spec_settings(spec: &Map<String, Value>, current: &ClusterSpec) -> Result<SpecSettings> {
    let refuse = |what: &str| {
        DecodeError(format!("shoal does not support setting {what} in the swarm spec (it keeps its own value)"))
    };
    match string(spec, "Name")?.as_str() {
        "" | "default" => {}
        _ => return Err(DecodeError("swarm spec must be named \"default\"".into())),
    }
    if !decode::labels(spec, "Labels")?.is_empty() {
        return Err(refuse("Labels"));
    }
    let mut settings = SpecSettings::default();
    if let Some(orchestration) = object_field(spec, "Orchestration")? {
        match field(orchestration, "TaskHistoryRetentionLimit") {
            None => {}
            Some(v) => match v.as_i64() {
                Some(limit) if limit >= 0 => settings.task_history_limit = Some(limit as u64),
                _ => {
                    return Err(DecodeError(format!(
                        "TaskHistoryRetentionLimit: expected a non-negative integer, got {v}"
                    )))
                }
            },
        }
    }
    if let Some(raft) = object_field(spec, "Raft")? {
        settings.snapshot_interval = unsigned(raft, "SnapshotInterval")?.filter(|n| *n > 0);
        let fixed = [
            ("KeepOldSnapshots", 0),
            ("LogEntriesForSlowFollowers", 500),
            ("ElectionTick", current.election_tick),
            ("HeartbeatTick", current.heartbeat_tick),
        ];
        for (key, value) in fixed {
            if unsigned(raft, key)?.is_some_and(|n| n != 0 && n != value) {
                return Err(refuse(&format!("Raft.{key}")));
            }
        }
    }
    if let Some(dispatcher) = object_field(spec, "Dispatcher")? {
        settings.heartbeat_period_ms = duration_ms(dispatcher, "HeartbeatPeriod")?.filter(|ms| *ms > 0);
    }
    if let Some(ca) = object_field(spec, "CAConfig")? {
        settings.node_cert_expiry_ms = duration_ms(ca, "NodeCertExpiry")?.filter(|ms| *ms > 0);
        if field(ca, "ExternalCAs").and_then(Value::as_array).is_some_and(|cas| !cas.is_empty()) {
            return Err(refuse("CAConfig.ExternalCAs (shoal's managers sign with the cluster CA they keep)"));
        }
        for key in ["SigningCACert", "SigningCAKey"] {
            if !string(ca, key)?.is_empty() {
                return Err(refuse(&format!("CAConfig.{key}")));
            }
        }
        settings.force_rotate = unsigned(ca, "ForceRotate")?.is_some_and(|n| n != 0);
    }
    if let Some(defaults) = object_field(spec, "TaskDefaults")? {
        if field(defaults, "LogDriver").is_some() {
            return Err(refuse("TaskDefaults.LogDriver"));
        }
    }
    if let Some(encryption) = object_field(spec, "EncryptionConfig")? {
        settings.autolock = Some(boolean(encryption, "AutoLockManagers")?);
    }
    Ok(settings)
}

/// The body of `POST /swarm/init` (`swarm.InitRequest`).
pub fn init_request(body: &[u8]) -> Result<InitRequest> {
    let object = parse(body, "InitRequest")?;
    // The CLI always sends `SubnetSize` (its flag's default, 24), which only means something with
    // `DefaultAddrPool`; shoal's networks take /16s of 10.0.0.0/8 (DESIGN §3).
    let pools = strings(&object, "DefaultAddrPool")?;
    if !pools.is_empty() && (pools != ["10.0.0.0/8"] || unsigned(&object, "SubnetSize")?.is_some_and(|n| n != 16)) {
        return Err(DecodeError(format!(
            "shoal does not support DefaultAddrPool {pools:?} with SubnetSize {}: its networks take /16s of \
             10.0.0.0/8",
            unsigned(&object, "SubnetSize")?.unwrap_or(0)
        )));
    }
    let settings = match object_field(&object, "Spec")? {
        Some(spec) => spec_settings(spec, &ClusterSpec::default())?,
        None => SpecSettings::default(),
    };
    Ok(InitRequest {
        advertise_addr: string(&object, "AdvertiseAddr")?,
        listen_addr: string(&object, "ListenAddr")?,
        force_new_cluster: boolean(&object, "ForceNewCluster")?,
        availability: availability(&object)?,
        overrides: ClusterOverrides {
            task_history_retention_limit: settings.task_history_limit,
            heartbeat_period_ms: settings.heartbeat_period_ms,
            snapshot_interval: settings.snapshot_interval,
            cert_expiry_ms: settings.node_cert_expiry_ms,
            // `docker swarm init --autolock` sends it beside the spec.
            autolock: boolean(&object, "AutoLockManagers")?.then_some(true),
        },
        data_path_addr: string(&object, "DataPathAddr")?,
        data_path_port: data_path_port(&object)?,
    })
}

/// The body of `POST /swarm/join` (`swarm.JoinRequest`). shoal joins through one manager: the
/// first of `RemoteAddrs`, as Docker's daemon does (moby's `Cluster.Join` takes `RemoteAddrs[0]`;
/// the node learns the other managers from the swarm once it is in). `DataPathPort` is shoal's own addition (Swarm sets it at `init` for
/// the whole swarm; shoal's nodes each have theirs).
pub fn join_request(body: &[u8]) -> Result<JoinRequest> {
    let object = parse(body, "JoinRequest")?;
    let remote_addr = strings(&object, "RemoteAddrs")?
        .into_iter()
        .next()
        .ok_or_else(|| DecodeError("at least 1 RemoteAddr is required to join".into()))?;
    Ok(JoinRequest {
        remote_addr,
        token: string(&object, "JoinToken")?,
        advertise_addr: string(&object, "AdvertiseAddr")?,
        listen_addr: string(&object, "ListenAddr")?,
        availability: availability(&object)?,
        data_path_addr: string(&object, "DataPathAddr")?,
        data_path_port: data_path_port(&object)?,
    })
}

/// `POST /swarm/update`'s body: the new spec, as the settings shoal keeps that differ from `current`.
pub fn update_request(body: &[u8], current: &ClusterSpec) -> Result<Option<ControlRequest>> {
    let spec = parse(body, "Spec")?;
    let settings = spec_settings(&spec, current)?;
    if settings.snapshot_interval.is_some_and(|n| n != current.snapshot_interval) {
        return Err(DecodeError("shoal does not support changing Raft.SnapshotInterval after swarm init".into()));
    }
    let task_history_limit = settings.task_history_limit.filter(|n| *n != current.task_history_retention_limit);
    let heartbeat_period_ms = settings.heartbeat_period_ms.filter(|ms| *ms != current.heartbeat_period_ms);
    let node_cert_expiry_ms = settings.node_cert_expiry_ms.filter(|ms| *ms != current.node_cert_expiry_ms);
    if task_history_limit.is_none() && heartbeat_period_ms.is_none() && node_cert_expiry_ms.is_none() {
        return Ok(None);
    }
    Ok(Some(ControlRequest::ClusterUpdate { task_history_limit, heartbeat_period_ms, node_cert_expiry_ms }))
}

impl EngineApi {
    /// `POST /swarm/init`: the new node's id, as a JSON string.
    pub(super) async fn swarm_init(&self, body: &[u8]) -> Answer {
        let request = init_request(body)?;
        match self.handler.handle(LocalRequest::SwarmInit(request)).await? {
            LocalAnswer::Initialized { node_id, .. } => Ok(Reply::ok(&json!(node_id))),
            other => Err(unexpected(&other)),
        }
    }

    /// `POST /swarm/join`: empty on success (the CLI asks `/info` whether it is now a manager).
    pub(super) async fn swarm_join(&self, body: &[u8]) -> Answer {
        let request = join_request(body)?;
        match self.handler.handle(LocalRequest::SwarmJoin(request)).await? {
            LocalAnswer::Joined { .. } => Ok(Reply::empty(StatusCode::OK)),
            other => Err(unexpected(&other)),
        }
    }

    /// `POST /swarm/leave?force=`.
    pub(super) async fn swarm_leave(&self, query: &BTreeMap<String, String>) -> Answer {
        let force = decode::query_bool(query.get("force").map(String::as_str));
        match self.handler.handle(LocalRequest::SwarmLeave { force }).await? {
            LocalAnswer::Left => Ok(Reply::empty(StatusCode::OK)),
            other => Err(unexpected(&other)),
        }
    }

    /// `POST /swarm/update?version=N&rotateWorkerToken=&rotateManagerToken=`: the spec's settings,
    /// then the token rotations, based on the cluster version the client read.
    pub(super) async fn swarm_update(&self, query: &BTreeMap<String, String>, body: &[u8]) -> Answer {
        let version = required_version(query, "swarm")?;
        let flag = |key: &str| decode::query_bool(query.get(key).map(String::as_str));
        let info = match self.call(ControlRequest::Info).await? {
            ControlResponse::Info(info) => info,
            other => return Err(unexpected_control(&other)),
        };
        if info.meta.version != version {
            return Err(out_of_sequence("swarm", &info.spec.name, version));
        }
        if let Some(request) = update_request(body, &info.spec)? {
            self.call(request).await?;
        }
        let settings = spec_settings(&parse(body, "Spec")?, &info.spec)?;
        if settings.force_rotate {
            // The daemon makes the new root and its cross-signature (`node_launcher`).
            self.call(ControlRequest::CaRotate { new_root: None }).await?;
        }
        // `docker swarm update --autolock=true|false` sends the whole spec: only a change is applied.
        let autolock = settings.autolock;
        if let Some(enabled) = autolock.filter(|on| *on != info.spec.autolock_managers) {
            self.call(ControlRequest::SwarmAutolock { enabled }).await?;
        }
        if flag("rotateManagerUnlockKey") {
            self.call(ControlRequest::UnlockKey { rotate: true }).await?;
        }
        for (key, role) in [("rotateWorkerToken", NodeRole::Worker), ("rotateManagerToken", NodeRole::Manager)] {
            if flag(key) {
                match self.call(ControlRequest::JoinToken { role, rotate: true }).await? {
                    ControlResponse::JoinToken { .. } => {}
                    other => return Err(unexpected_control(&other)),
                }
            }
        }
        Ok(Reply::empty(StatusCode::OK))
    }
}
