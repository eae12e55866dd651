//! `secret …` and `config …`, as docker/cli's `cli/command/{secret,config}` print them: `create`
//! prints the id, `rm` each name, `ls` Docker's columns (`ID NAME DRIVER CREATED UPDATED`; configs
//! without `DRIVER`), `inspect` Docker's JSON (a config's `Spec.Data` base64, a secret's value
//! never) or `--pretty`.

use std::time::Duration;

use serde_json::{json, Value};
use shoal_core::api::{Config, FileKind, Labels, Secret, SecretSpec};
use shoal_core::control::{ConfigView, ControlRequest, ControlResponse, FileData};

use super::args::{ConfigCommand, InspectArgs, ListArgs, SecretCommand};
use super::listing::{row, Listing};
use super::{for_each, out, print_inspect, print_listing, spec, unexpected, CliError, CliResult, Client};
use crate::format::human_duration;

/// The value of `FILE|-`.
fn read_value(file: &str) -> CliResult<Vec<u8>> {
    let data = if file == "-" {
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut data)
            .map_err(|e| CliError::Usage(format!("error reading content from STDIN: {e}")))?;
        data
    } else {
        std::fs::read(file).map_err(|e| CliError::Usage(format!("open {file}: {e}")))?
    };
    Ok(data)
}

async fn create(client: &Client, kind: FileKind, spec: SecretSpec, file: &str) -> CliResult {
    let data = FileData(shoal_core::secrets::encode(&read_value(file)?));
    let request = match kind {
        FileKind::Secret => ControlRequest::SecretCreate { spec, data },
        FileKind::Config => ControlRequest::ConfigCreate { spec, data },
    };
    match client.control(request).await? {
        ControlResponse::Created { id } => {
            out(&format!("{id}\n"));
            Ok(())
        }
        other => Err(unexpected(&other)),
    }
}

fn labels(flags: &[String]) -> Labels {
    flags.iter().map(|l| spec::label(l)).collect()
}

pub async fn secret(client: &Client, cmd: SecretCommand) -> CliResult {
    match cmd {
        SecretCommand::Create { driver, label, template_driver, name, file } => {
            let spec = SecretSpec {
                name,
                labels: labels(&label),
                driver: driver.unwrap_or_default(),
                templating: template_driver.unwrap_or_default(),
            };
            create(client, FileKind::Secret, spec, &file).await
        }
        SecretCommand::Ls(a) => list(client, FileKind::Secret, &a).await,
        SecretCommand::Inspect(a) => inspect(client, FileKind::Secret, &a).await,
        SecretCommand::Rm { names } => remove(client, FileKind::Secret, &names).await,
    }
}

pub async fn config(client: &Client, cmd: ConfigCommand) -> CliResult {
    match cmd {
        ConfigCommand::Create { label, template_driver, name, file } => {
            let spec = SecretSpec {
                name,
                labels: labels(&label),
                driver: String::new(),
                templating: template_driver.unwrap_or_default(),
            };
            create(client, FileKind::Config, spec, &file).await
        }
        ConfigCommand::Ls(a) => list(client, FileKind::Config, &a).await,
        ConfigCommand::Inspect(a) => inspect(client, FileKind::Config, &a).await,
        ConfigCommand::Rm { names } => remove(client, FileKind::Config, &names).await,
    }
}

async fn remove(client: &Client, kind: FileKind, names: &[String]) -> CliResult {
    for_each(names, |name| async move {
        let request = match kind {
            FileKind::Secret => ControlRequest::SecretRemove { secret: name.clone() },
            FileKind::Config => ControlRequest::ConfigRemove { config: name.clone() },
        };
        client.control(request).await?;
        out(&format!("{name}\n"));
        Ok(())
    })
    .await
}

async fn secrets(client: &Client) -> CliResult<Vec<Secret>> {
    match client.control(ControlRequest::SecretList).await? {
        ControlResponse::Secrets(secrets) => Ok(secrets),
        other => Err(unexpected(&other)),
    }
}

async fn configs(client: &Client) -> CliResult<Vec<Config>> {
    match client.control(ControlRequest::ConfigList).await? {
        ControlResponse::Configs(views) => Ok(views.into_iter().map(|v| v.config).collect()),
        other => Err(unexpected(&other)),
    }
}

/// Both kinds' rows share a shape: (id, spec, created, updated).
fn rows(kind: FileKind, objects: Vec<(String, SecretSpec, u64, u64)>, now_ms: u64) -> Listing {
    let ago = |ms: u64| format!("{} ago", human_duration(Duration::from_millis(now_ms.saturating_sub(ms))));
    let mut objects = objects;
    objects.sort_by(|a, b| a.1.name.cmp(&b.1.name));
    let rows = objects
        .iter()
        .map(|(id, spec, created, updated)| {
            let labels = spec.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
            row([
                ("ID", json!(id)),
                ("Name", json!(spec.name)),
                ("Driver", json!(spec.driver)),
                ("CreatedAt", json!(ago(*created))),
                ("UpdatedAt", json!(ago(*updated))),
                ("Labels", json!(labels)),
            ])
        })
        .collect();
    Listing {
        default_format: match kind {
            FileKind::Secret => "table {{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.CreatedAt}}\t{{.UpdatedAt}}",
            FileKind::Config => "table {{.ID}}\t{{.Name}}\t{{.CreatedAt}}\t{{.UpdatedAt}}",
        },
        headers: &[
            ("ID", "ID"),
            ("Name", "NAME"),
            ("Driver", "DRIVER"),
            ("CreatedAt", "CREATED"),
            ("UpdatedAt", "UPDATED"),
            ("Labels", "LABELS"),
        ],
        rows,
        indented: Vec::new(),
    }
}

/// moby's `newListSecretsFilters`: `names` exact, `name` and `id` prefixes, `label` key or key=value;
/// a key's values are alternatives, keys all apply. Shared with the Engine API.
pub(crate) fn filter_matches(filters: &[(String, String)], id: &str, spec: &SecretSpec) -> Result<bool, String> {
    let mut by_key: std::collections::BTreeMap<&str, Vec<&str>> = std::collections::BTreeMap::new();
    for (key, value) in filters {
        match key.as_str() {
            "names" | "name" | "id" | "label" => by_key.entry(key.as_str()).or_default().push(value),
            other => return Err(format!("invalid filter '{other}'")),
        }
    }
    Ok(by_key.iter().all(|(key, values)| {
        values.iter().any(|v| match *key {
            "names" => spec.name == *v,
            "name" => spec.name.starts_with(v),
            "id" => id.starts_with(v),
            _ => match v.split_once('=') {
                Some((k, want)) => spec.labels.get(k).is_some_and(|have| have == want),
                None => spec.labels.contains_key(*v),
            },
        })
    }))
}

async fn list(client: &Client, kind: FileKind, args: &ListArgs) -> CliResult {
    let mut filters = Vec::new();
    for flag in &args.filter {
        let (k, v) = flag
            .split_once('=')
            .ok_or_else(|| CliError::Usage(format!("bad format of filter (expected name=value): {flag}")))?;
        filters.push((k.to_string(), v.to_string()));
    }
    let objects: Vec<(String, SecretSpec, u64, u64)> = match kind {
        FileKind::Secret => secrets(client)
            .await?
            .into_iter()
            .map(|s| (s.id, s.spec, s.meta.created_at_ms, s.meta.updated_at_ms))
            .collect(),
        FileKind::Config => configs(client)
            .await?
            .into_iter()
            .map(|c| (c.id, c.spec, c.meta.created_at_ms, c.meta.updated_at_ms))
            .collect(),
    };
    let mut kept = Vec::with_capacity(objects.len());
    for object in objects {
        if filter_matches(&filters, &object.0, &object.1).map_err(CliError::Usage)? {
            kept.push(object);
        }
    }
    print_listing(&rows(kind, kept, super::now_ms()), args.format.as_deref(), args.quiet)
}

/// Docker's `Spec` of a secret or config: `Data` only for configs.
fn spec_json(spec: &SecretSpec, data: Option<&str>) -> Value {
    let mut value = json!({"Name": spec.name, "Labels": spec.labels});
    if !spec.driver.is_empty() {
        value["Driver"] = json!({"Name": spec.driver});
    }
    if let Some(data) = data {
        value["Data"] = json!(data);
    }
    if !spec.templating.is_empty() {
        value["Templating"] = json!({"Name": spec.templating});
    }
    value
}

fn object_json(id: &str, meta: &shoal_core::api::Meta, spec: Value) -> Value {
    json!({
        "ID": id,
        "Version": {"Index": meta.version},
        "CreatedAt": super::inspect::time(meta.created_at_ms),
        "UpdatedAt": super::inspect::time(meta.updated_at_ms),
        "Spec": spec,
    })
}

fn pretty_time(ms: u64) -> String {
    let time = chrono::DateTime::from_timestamp_millis(i64::try_from(ms).unwrap_or(i64::MAX)).unwrap_or_default();
    time.format("%Y-%m-%d %H:%M:%S%.f +0000 utc").to_string()
}

/// docker/cli's `secretInspectPrettyTemplate` / `configInspectPrettyTemplate`.
fn pretty(id: &str, spec: &SecretSpec, meta: &shoal_core::api::Meta, data: Option<&[u8]>) -> String {
    let mut text = format!("ID:              {id}\nName:              {}", spec.name);
    if !spec.labels.is_empty() {
        text.push_str("\nLabels:");
        for (k, v) in &spec.labels {
            text.push_str(&format!("\n - {k}{}", if v.is_empty() { String::new() } else { format!("={v}") }));
        }
    }
    if data.is_none() {
        text.push_str(&format!("\nDriver:            {}", spec.driver));
    }
    text.push_str(&format!(
        "\nCreated at:        {}\nUpdated at:        {}",
        pretty_time(meta.created_at_ms),
        pretty_time(meta.updated_at_ms)
    ));
    if let Some(data) = data {
        text.push_str(&format!("\nData:\n{}", String::from_utf8_lossy(data)));
    }
    text
}

async fn inspect(client: &Client, kind: FileKind, args: &InspectArgs) -> CliResult {
    let mut values = Vec::new();
    let mut pages = Vec::new();
    for name in &args.names {
        let request = match kind {
            FileKind::Secret => ControlRequest::SecretInspect { secret: name.clone() },
            FileKind::Config => ControlRequest::ConfigInspect { config: name.clone() },
        };
        let answer = match client.control(request).await {
            Ok(answer) => answer,
            Err(CliError::Daemon(message)) if message.contains("not found") => {
                return Err(CliError::Usage(format!("Error: No such {}: {name}", kind.as_str())))
            }
            Err(err) => return Err(err),
        };
        match answer {
            ControlResponse::Secret(secret) => {
                values.push(object_json(&secret.id, &secret.meta, spec_json(&secret.spec, None)));
                pages.push(pretty(&secret.id, &secret.spec, &secret.meta, None));
            }
            ControlResponse::Config(view) => {
                let ConfigView { config, data } = *view;
                values.push(object_json(&config.id, &config.meta, spec_json(&config.spec, Some(&data.0))));
                let bytes = shoal_core::secrets::decode(&data.0).unwrap_or_default();
                pages.push(pretty(&config.id, &config.spec, &config.meta, Some(&bytes)));
            }
            other => return Err(unexpected(&other)),
        }
    }
    if args.pretty {
        out(&format!("{}\n", pages.join("\n\n")));
        return Ok(());
    }
    print_inspect(values, args.format.as_deref())
}

/// `stack deploy`'s secrets and configs: what the cluster holds, for [`shoal_core::stack::file_object_steps`].
pub async fn existing(client: &Client) -> CliResult<(Vec<Secret>, Vec<Config>)> {
    Ok((secrets(client).await?, configs(client).await?))
}
