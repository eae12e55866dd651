//! The Engine API's `/secrets` and `/configs` routes (Docker's shapes: `GET` list with `name`,
//! `names`, `id`, `label` filters, `GET /{id}`, `POST /create` → `201 {"ID"}`, `POST /{id}/update`
//! (labels only) → 200, `DELETE /{id}` → 204).
//! A secret's value is never in an answer; a config's is (`Spec.Data`, base64), as Docker's.

use super::*;
use shoal_core::api::{Meta, SecretSpec};
use shoal_core::control::FileData;

/// Docker's JSON of a secret or config.
fn object_json(id: &str, meta: &Meta, spec: &SecretSpec, data: Option<&str>) -> Value {
    let mut spec_json = json!({"Name": spec.name, "Labels": spec.labels});
    if !spec.driver.is_empty() {
        spec_json["Driver"] = json!({"Name": spec.driver});
    }
    if let Some(data) = data {
        spec_json["Data"] = json!(data);
    }
    if !spec.templating.is_empty() {
        spec_json["Templating"] = json!({"Name": spec.templating});
    }
    json!({
        "ID": id,
        "Version": {"Index": meta.version},
        "CreatedAt": inspect::time(meta.created_at_ms),
        "UpdatedAt": inspect::time(meta.updated_at_ms),
        "Spec": spec_json,
    })
}

/// The list filters, as the CLI applies them ([`crate::cli::files::filter_matches`]).
fn matches(filters: &[(String, String)], id: &str, spec: &SecretSpec) -> Result<bool, Failure> {
    crate::cli::files::filter_matches(filters, id, spec).map_err(bad_request)
}

impl EngineApi {
    pub(super) async fn file_objects(&self, kind: &str, filters: Option<&str>) -> Answer {
        let filters = decode::filters(filters)?;
        let mut listed = Vec::new();
        match self.call(if kind == "secrets" { ControlRequest::SecretList } else { ControlRequest::ConfigList }).await?
        {
            ControlResponse::Secrets(secrets) => {
                for s in secrets {
                    if matches(&filters, &s.id, &s.spec)? {
                        listed.push(object_json(&s.id, &s.meta, &s.spec, None));
                    }
                }
            }
            ControlResponse::Configs(configs) => {
                for v in configs {
                    if matches(&filters, &v.config.id, &v.config.spec)? {
                        listed.push(object_json(&v.config.id, &v.config.meta, &v.config.spec, None));
                    }
                }
            }
            other => return Err(unexpected_control(&other)),
        }
        Ok(Reply::ok(&Value::Array(listed)))
    }

    pub(super) async fn file_object(&self, kind: &str, id: &str) -> Answer {
        let request = if kind == "secrets" {
            ControlRequest::SecretInspect { secret: id.to_string() }
        } else {
            ControlRequest::ConfigInspect { config: id.to_string() }
        };
        match self.call(request).await? {
            ControlResponse::Secret(s) => Ok(Reply::ok(&object_json(&s.id, &s.meta, &s.spec, None))),
            ControlResponse::Config(v) => {
                Ok(Reply::ok(&object_json(&v.config.id, &v.config.meta, &v.config.spec, Some(&v.data.0))))
            }
            other => Err(unexpected_control(&other)),
        }
    }

    pub(super) async fn create_file_object(&self, kind: &str, body: &[u8]) -> Answer {
        let (spec, data) = decode::file_object_spec(body)?;
        let data = FileData(data);
        let request = if kind == "secrets" {
            ControlRequest::SecretCreate { spec, data }
        } else {
            ControlRequest::ConfigCreate { spec, data }
        };
        match self.call(request).await? {
            ControlResponse::Created { id } => Ok(Reply::json(StatusCode::CREATED, &json!({ "ID": id }))),
            other => Err(unexpected_control(&other)),
        }
    }

    /// `POST /{kind}/{id}/update?version=N`: new labels; the rest of the spec (and `Data`, when
    /// sent again, as `docker stack deploy` does) must be what is held (`only updates to Labels are
    /// allowed`, as Swarm says).
    pub(super) async fn update_file_object(&self, kind: &str, id: &str, version: u64, body: &[u8]) -> Answer {
        let (spec, data) = decode::file_object_spec(body)?;
        let data = (!data.is_empty()).then_some(FileData(data));
        let (secret, config) = (id.to_string(), id.to_string());
        let request = if kind == "secrets" {
            ControlRequest::SecretUpdate { secret, version, spec, data }
        } else {
            ControlRequest::ConfigUpdate { config, version, spec, data }
        };
        self.call(request).await?;
        Ok(Reply::empty(StatusCode::OK))
    }

    pub(super) async fn remove_file_object(&self, kind: &str, id: &str) -> Answer {
        let request = if kind == "secrets" {
            ControlRequest::SecretRemove { secret: id.to_string() }
        } else {
            ControlRequest::ConfigRemove { config: id.to_string() }
        };
        self.call(request).await?;
        Ok(Reply::empty(StatusCode::NO_CONTENT))
    }
}
