//! Secrets and configs in the control API: create (sealed with the managers' key before it is
//! proposed, so raft never sees a value), list, inspect (a secret's value never; a config's, as
//! Docker shows it), remove (refused while a service uses it, in swarmkit's words), and the checks
//! a service spec's references pass (`secret not found: X`, as docker/cli says it).

use super::*;
use crate::api::{Config, FileKind, FileReference, Sealed, Secret, SecretSpec};
use crate::secrets::{self, SecretsError};

/// swarmkit's limits (`MaxSecretSize`, `MaxConfigSize`).
const MAX_SECRET_BYTES: usize = 500 * 1024;
const MAX_CONFIG_BYTES: usize = 1000 * 1024;

impl From<SecretsError> for ControlError {
    fn from(err: SecretsError) -> Self {
        match err {
            SecretsError::NoKey => ControlError::Unavailable(err.to_string()),
            other => ControlError::Internal(other.to_string()),
        }
    }
}

fn find_secret<'a>(state: &'a StoreState, key: &str) -> Result<&'a Secret, ControlError> {
    resolve(state.secrets.values(), key, |s| &s.id, |s| &s.spec.name).map_err(|n| match n {
        0 => ControlError::NotFound(format!("secret {key} not found")),
        n => ControlError::InvalidArgument(format!("secret {key} is ambiguous ({n} matches found)")),
    })
}

fn find_config<'a>(state: &'a StoreState, key: &str) -> Result<&'a Config, ControlError> {
    resolve(state.configs.values(), key, |s| &s.id, |s| &s.spec.name).map_err(|n| match n {
        0 => ControlError::NotFound(format!("config {key} not found")),
        n => ControlError::InvalidArgument(format!("config {key} is ambiguous ({n} matches found)")),
    })
}

/// The store table that holds objects of `kind`.
fn table(kind: FileKind) -> Kind {
    match kind {
        FileKind::Secret => Kind::Secret,
        FileKind::Config => Kind::Config,
    }
}

/// A secret as answers show it: without its sealed value.
fn shown_secret(secret: &Secret) -> Secret {
    Secret { sealed: Sealed::default(), ..secret.clone() }
}

fn check_spec(kind: FileKind, spec: &SecretSpec, data: &[u8]) -> Result<(), ControlError> {
    crate::api::check_file_object_name(&spec.name).map_err(ControlError::InvalidArgument)?;
    let max = match kind {
        FileKind::Secret => MAX_SECRET_BYTES,
        FileKind::Config => MAX_CONFIG_BYTES,
    };
    if data.is_empty() || data.len() >= max {
        return Err(ControlError::InvalidArgument(format!(
            "{} data must be larger than 0 and less than {max} bytes",
            kind.as_str()
        )));
    }
    if !spec.templating.is_empty() && spec.templating != "golang" {
        return Err(ControlError::InvalidArgument(format!(
            "unsupported template driver {:?}: the only template driver is golang",
            spec.templating
        )));
    }
    if kind == FileKind::Secret && !spec.driver.is_empty() {
        return Err(ControlError::InvalidArgument(format!(
            "secret driver {:?} is not available: shoal keeps secrets in its own store (no driver plugins)",
            spec.driver
        )));
    }
    Ok(())
}

impl ControlHandler {
    /// The managers' key (fetched from another manager if this one lacks it).
    pub(super) async fn secrets_key(&self) -> Result<secrets::KeyMaterial, ControlError> {
        let Some(keyring) = self.keyring.clone() else { return Err(SecretsError::NoKey.into()) };
        if let Some(key) = keyring.key() {
            return Ok(key);
        }
        let Some(transport) = self.transport.clone() else { return Err(SecretsError::NoKey.into()) };
        Ok(keyring.ensure(&self.store, transport.as_ref()).await?)
    }

    /// `SecretsKey`: hand this manager's key to another manager (the gate admits managers only).
    pub(super) fn give_key(&self) -> ControlResult {
        match self.keyring.as_ref().and_then(|k| k.key()) {
            Some(key) => Ok(ControlResponse::SecretsKey(key)),
            None => Err(SecretsError::NoKey.into()),
        }
    }

    pub(super) async fn create_file_object(&self, kind: FileKind, spec: SecretSpec, data: FileData) -> ControlResult {
        let plain = secrets::decode(&data.0)
            .ok_or_else(|| ControlError::InvalidArgument(format!("{} data is not valid base64", kind.as_str())))?;
        check_spec(kind, &spec, &plain)?;
        let key = self.secrets_key().await?;
        let id = new_id();
        let sealed = secrets::seal(&key, &id, &plain)?;
        let name = spec.name.clone();
        let object = match kind {
            FileKind::Secret => Object::Secret(Secret { id: id.clone(), meta: Meta::default(), spec, sealed }),
            FileKind::Config => Object::Config(Config { id: id.clone(), meta: Meta::default(), spec, sealed }),
        };
        match self.consensus.proposer().propose(vec![Action::Create(object)]).await {
            Err(ProposeError::Rejected(StoreError::NameConflict { .. })) => {
                Err(ControlError::Conflict(format!("{} {name} already exists", kind.as_str())))
            }
            Err(err) => Err(err.into()),
            Ok(version) => {
                self.store.wait_for_version(version).await;
                Ok(ControlResponse::Created { id })
            }
        }
    }

    pub(super) fn list_secrets(&self) -> ControlResult {
        Ok(ControlResponse::Secrets(self.store.view(|s| s.secrets.values().map(shown_secret).collect())))
    }

    pub(super) fn inspect_secret(&self, key: &str) -> ControlResult {
        self.store.view(|s| find_secret(s, key).map(|secret| ControlResponse::Secret(Box::new(shown_secret(secret)))))
    }

    pub(super) fn list_configs(&self) -> ControlResult {
        Ok(ControlResponse::Configs(self.store.view(|s| {
            s.configs
                .values()
                .map(|c| ConfigView {
                    config: Config { sealed: Sealed::default(), ..c.clone() },
                    data: FileData(String::new()),
                })
                .collect()
        })))
    }

    pub(super) async fn inspect_config(&self, key: &str) -> ControlResult {
        let config = self.store.view(|s| find_config(s, key).cloned())?;
        let key = self.secrets_key().await?;
        let data = secrets::open(&key, &config.id, &config.sealed)?;
        Ok(ControlResponse::Config(Box::new(ConfigView {
            config: Config { sealed: Sealed::default(), ..config },
            data: FileData(secrets::encode(&data)),
        })))
    }

    /// Remove a secret or config no service uses (swarmkit's `RemoveSecret`/`RemoveConfig` words).
    pub(super) async fn remove_file_object(&self, kind: FileKind, key: &str) -> ControlResult {
        let mut refused = None;
        let found = self.store.view(|s| match kind {
            FileKind::Secret => find_secret(s, key).map(|o| (o.id.clone(), o.spec.name.clone())),
            FileKind::Config => find_config(s, key).map(|o| (o.id.clone(), o.spec.name.clone())),
        })?;
        let (id, name) = found;
        self.write(|s| {
            let users: Vec<String> = s
                .services
                .values()
                .filter(|svc| {
                    let refs = match kind {
                        FileKind::Secret => &svc.spec.task.secrets,
                        FileKind::Config => &svc.spec.task.configs,
                    };
                    refs.iter().any(|r| r.id == id)
                })
                .map(|svc| svc.spec.name.clone())
                .collect();
            if !users.is_empty() {
                let noun = if users.len() == 1 { "service" } else { "services" };
                refused =
                    Some(format!("{} '{name}' is in use by the following {noun}: {}", kind.as_str(), users.join(", ")));
                return Ok(vec![]);
            }
            let exists = match kind {
                FileKind::Secret => s.secrets.contains_key(&id),
                FileKind::Config => s.configs.contains_key(&id),
            };
            Ok(if exists { vec![Action::Delete { kind: table(kind), id: id.clone() }] } else { vec![] })
        })
        .await?;
        match refused {
            Some(message) => Err(ControlError::InvalidArgument(message)),
            None => Ok(ControlResponse::Done),
        }
    }

    /// Update a secret's or config's labels (swarmkit's `UpdateSecret`/`UpdateConfig`): at the
    /// version the caller read ("update out of sequence" otherwise); the name, driver, template
    /// driver and value stay as they are, or the update is refused in swarmkit's words. A value sent
    /// along (`docker stack deploy` sends the file again) must be the one held.
    pub(super) async fn update_file_object(
        &self,
        kind: FileKind,
        key: &str,
        version: u64,
        spec: SecretSpec,
        data: Option<FileData>,
    ) -> ControlResult {
        let found = self.store.view(|s| match kind {
            FileKind::Secret => find_secret(s, key).map(|o| (o.id.clone(), o.spec.clone(), o.sealed.clone())),
            FileKind::Config => find_config(s, key).map(|o| (o.id.clone(), o.spec.clone(), o.sealed.clone())),
        })?;
        let (id, current, sealed) = found;
        let only_labels = || ControlError::InvalidArgument("only updates to Labels are allowed".into());
        if spec.name != current.name || spec.driver != current.driver || spec.templating != current.templating {
            return Err(only_labels());
        }
        if let Some(data) = data.filter(|d| !d.0.is_empty()) {
            let given = secrets::decode(&data.0)
                .ok_or_else(|| ControlError::InvalidArgument(format!("{} data is not valid base64", kind.as_str())))?;
            let held = secrets::open(&self.secrets_key().await?, &id, &sealed)?;
            if given != held {
                return Err(only_labels());
            }
        }
        let table = table(kind);
        let labels = spec.labels;
        self.write(|s| {
            let mut object = match kind {
                FileKind::Secret => s.secrets.get(&id).cloned().map(Object::Secret),
                FileKind::Config => s.configs.get(&id).cloned().map(Object::Config),
            }
            .ok_or_else(|| StoreError::NotFound { kind: table, id: key.to_string() })?;
            let found = object.meta().version;
            if found != version {
                // Changed since it was read: "update out of sequence", as Docker says it.
                return Err(StoreError::Conflict { kind: table, id: id.clone(), expected: version, found }.into());
            }
            match &mut object {
                Object::Secret(o) => o.spec.labels = labels.clone(),
                Object::Config(o) => o.spec.labels = labels.clone(),
                _ => {}
            }
            Ok(vec![Action::Update(object)])
        })
        .await?;
        Ok(ControlResponse::Done)
    }

    /// Fill in the ids of a spec's secret and config references from their names; an unknown one
    /// is refused as docker/cli refuses it (`secret not found: X`).
    pub(super) fn resolve_file_references(&self, spec: &mut ServiceSpec) -> Result<(), ControlError> {
        self.store.view(|s| {
            let fill = |kind: FileKind, refs: &mut Vec<FileReference>| -> Result<(), ControlError> {
                let mut targets = std::collections::BTreeSet::new();
                for r in refs.iter_mut() {
                    let found = match kind {
                        FileKind::Secret => find_secret(s, if r.name.is_empty() { &r.id } else { &r.name })
                            .map(|o| (o.id.clone(), o.spec.name.clone())),
                        FileKind::Config => find_config(s, if r.name.is_empty() { &r.id } else { &r.name })
                            .map(|o| (o.id.clone(), o.spec.name.clone())),
                    };
                    let (id, name) = found.map_err(|_| {
                        ControlError::InvalidArgument(format!("{} not found: {}", kind.as_str(), r.name))
                    })?;
                    r.id = id;
                    r.name = name;
                    for (what, v) in [("uid", &r.uid), ("gid", &r.gid)] {
                        if v.parse::<u32>().is_err() {
                            return Err(ControlError::InvalidArgument(format!(
                                "invalid {what} {v:?} for {} {}: a number is expected",
                                kind.as_str(),
                                r.name
                            )));
                        }
                    }
                    if r.target.is_empty() {
                        r.target = FileReference::new(kind, &r.name).target;
                    }
                    if !targets.insert(r.container_path(kind)) {
                        return Err(ControlError::InvalidArgument(format!(
                            "duplicate {} target for {} not allowed",
                            kind.as_str(),
                            r.name
                        )));
                    }
                }
                Ok(())
            };
            fill(FileKind::Secret, &mut spec.task.secrets)?;
            fill(FileKind::Config, &mut spec.task.configs)
        })
    }
}
