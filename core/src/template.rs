//! Swarm's service templates: `{{.Service.Name}}`, `{{.Task.Slot}}`, `{{.Node.Hostname}}`, … in a
//! task's environment, hostname and container labels, expanded on the node that runs the task just
//! before its container is made (swarmkit `template/`, `ExpandContainerSpec`). The language is Go's
//! text/template through the `gotmpl` crate — `index`, `range`, `if`, `printf`, pipelines — over
//! the data Swarm gives a template:
//!
//! | field | value |
//! |---|---|
//! | `.Service.ID`, `.Service.Name`, `.Service.Labels` | the task's service, its labels when the task was made |
//! | `.Node.ID`, `.Node.Hostname`, `.Node.Platform.OS`, `.Node.Platform.Architecture` | the node running the task |
//! | `.Task.ID`, `.Task.Name` (`web.1.<task id>`), `.Task.Slot` | the slot number; a global task's node id |
//!
//! A field that does not exist (`{{.Task.Slott}}`) is an error, as it is for Go's structs (Swarm's
//! context is one); so is a missing label, where Go would print `<no value>`: a typo fails the task
//! with the reason instead of reaching the container. Strings without `{{` are passed through
//! untouched. Pure: no I/O, no clock; map iteration is sorted (gotmpl's maps are `BTreeMap`s), so
//! an expansion is the same on every node and in every run.

use std::collections::BTreeMap;

use gotmpl::{MissingKey, Template, Value};

use crate::api::{NodeDescription, Task};

/// A template that could not be expanded, named as Swarm names it (`expanding env failed: …`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expanding {what} failed: {message}")]
pub struct TemplateError {
    /// `env`, `hostname`, `labels`, `mounts`.
    pub what: &'static str,
    pub message: String,
}

/// The data a task's templates see.
pub struct TaskContext {
    root: Value,
}

impl TaskContext {
    /// The context of `task` on the node described by `node` (whose id is `node_id`).
    pub fn new(task: &Task, node_id: &str, node: &NodeDescription) -> Self {
        let slot = if task.slot > 0 { task.slot.to_string() } else { task.node_id.clone() };
        let labels: BTreeMap<&str, &str> = task.service_labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let root = object([
            (
                "Service",
                object([
                    ("ID", string(&task.service_id)),
                    ("Name", string(&task.service_name)),
                    ("Labels", object(labels.into_iter().map(|(k, v)| (k, string(v))))),
                ]),
            ),
            (
                "Node",
                object([
                    ("ID", string(node_id)),
                    ("Hostname", string(&node.hostname)),
                    ("Platform", object([("OS", string(&node.os)), ("Architecture", string(&node.arch))])),
                ]),
            ),
            (
                "Task",
                object([
                    ("ID", string(&task.id)),
                    ("Name", string(&format!("{}.{}", task.name(), task.id))),
                    ("Slot", string(&slot)),
                ]),
            ),
        ]);
        TaskContext { root }
    }

    /// Expand one string (`what` names the part it came from, for the error).
    pub fn expand(&self, what: &'static str, text: &str) -> Result<String, TemplateError> {
        if !text.contains("{{") {
            return Ok(text.to_string());
        }
        let error = |err: gotmpl::TemplateError| TemplateError { what, message: err.to_string() };
        Template::new("expansion")
            .missing_key(MissingKey::Error)
            .parse(text)
            .map_err(error)?
            .execute_to_string(&self.root)
            .map_err(error)
    }

    /// Expand each string of a list.
    pub fn expand_all(&self, what: &'static str, texts: &[String]) -> Result<Vec<String>, TemplateError> {
        texts.iter().map(|text| self.expand(what, text)).collect()
    }
}

fn string(text: &str) -> Value {
    Value::String(text.into())
}

fn object<'a>(fields: impl IntoIterator<Item = (&'a str, Value)>) -> Value {
    Value::Map(std::sync::Arc::new(fields.into_iter().map(|(k, v)| (k.into(), v)).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Labels;

    fn task(slot: u64) -> Task {
        let mut labels = Labels::new();
        labels.insert("tier".into(), "front".into());
        labels.insert("app".into(), "shop".into());
        Task {
            id: "t0k3n".into(),
            service_id: "s3rv1c3".into(),
            service_name: "web".into(),
            slot,
            node_id: "n0d3".into(),
            service_labels: labels,
            ..Task::default()
        }
    }

    fn node() -> NodeDescription {
        NodeDescription { hostname: "worker-1".into(), os: "linux".into(), arch: "x86_64".into(), ..Default::default() }
    }

    #[test]
    fn swarm_fields_expand_as_swarm_names_them() {
        let context = TaskContext::new(&task(3), "n0d3", &node());
        let text = "REPLICA={{.Task.Slot}} {{.Task.Name}} {{.Task.ID}} {{.Service.Name}}/{{.Service.ID}} \
                    {{.Node.ID}}@{{.Node.Hostname}} {{.Node.Platform.OS}}/{{.Node.Platform.Architecture}}";
        assert_eq!(
            context.expand("env", text).unwrap(),
            "REPLICA=3 web.3.t0k3n t0k3n web/s3rv1c3 n0d3@worker-1 linux/x86_64"
        );
    }

    #[test]
    fn a_global_task_s_slot_is_its_node() {
        let context = TaskContext::new(&task(0), "n0d3", &node());
        assert_eq!(context.expand("hostname", "{{.Service.Name}}-{{.Task.Slot}}").unwrap(), "web-n0d3");
    }

    #[test]
    fn the_whole_language_works_and_maps_range_in_key_order() {
        let context = TaskContext::new(&task(2), "n0d3", &node());
        let text = r#"{{index .Service.Labels "tier"}};{{range $k, $v := .Service.Labels}}{{$k}}={{$v}},{{end}};{{if eq .Task.Slot "2"}}second{{end}};{{printf "%03s" .Task.Slot}}"#;
        assert_eq!(context.expand("env", text).unwrap(), "front;app=shop,tier=front,;second;  2");
    }

    #[test]
    fn plain_text_passes_untouched_and_errors_say_where() {
        let context = TaskContext::new(&task(1), "n0d3", &node());
        assert_eq!(context.expand("env", "A=b } { $x").unwrap(), "A=b } { $x");
        let unknown = context.expand("env", "S={{.Task.Slott}}").unwrap_err();
        assert_eq!(unknown.what, "env");
        assert!(unknown.to_string().starts_with("expanding env failed: "), "{unknown}");
        assert!(unknown.message.contains("Slott"), "{unknown}");
        let unclosed = context.expand("hostname", "{{.Task.Slot").unwrap_err();
        assert!(unclosed.to_string().starts_with("expanding hostname failed: "), "{unclosed}");
    }
}
