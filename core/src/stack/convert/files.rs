//! Compose's secrets and configs (docker/cli `cli/compose/convert/compose.go` `Secrets`/`Configs`,
//! `service.go` `convertServiceSecrets`/`convertFileObject`): the top-level definitions (`file`,
//! `external`, `name`, `labels`, `template_driver`) and a service's references in the short
//! (`- name`) and long (`source`, `target`, `uid`, `gid`, `mode`) syntax.

use super::*;
use crate::api::{FileKind, FileReference};
use crate::stack::StackFileObject;

impl Converter<'_> {
    /// The top-level `secrets:` or `configs:` mapping, by compose key.
    pub(super) fn file_objects(
        &mut self,
        kind: FileKind,
        node: &Node,
    ) -> Result<IndexMap<String, StackFileObject>, Fail> {
        let mut declared = IndexMap::new();
        for (key, def) in node.entries()? {
            let mut object = StackFileObject {
                name: format!("{}_{key}", self.stack),
                labels: self.namespace(),
                file: None,
                external: false,
                template_driver: String::new(),
            };
            let mut explicit_name = None;
            for (k, v) in def.entries()? {
                match k.as_str() {
                    "file" => object.file = Some(v.string()?),
                    "name" => explicit_name = Some(v.string()?),
                    "labels" => object.labels.extend(v.labels()?),
                    "template_driver" => object.template_driver = v.string()?,
                    "external" => match v.value {
                        Value::Mapping(_) => {
                            object.external = true;
                            for (ek, ev) in v.entries()? {
                                match ek.as_str() {
                                    "name" => explicit_name = Some(ev.string()?),
                                    x if x.starts_with("x-") => {}
                                    other => return Err(v.unknown(other, "name")),
                                }
                            }
                        }
                        _ => object.external = v.boolean()?,
                    },
                    "driver" | "driver_opts" if kind == FileKind::Secret => {
                        if !v.value.is_null() {
                            self.ignore(format!("secrets.{k}"));
                        }
                    }
                    x if x.starts_with("x-") => {}
                    other => {
                        let expected = match kind {
                            FileKind::Secret => "file, external, name, labels, driver, driver_opts, template_driver",
                            FileKind::Config => "file, external, name, labels, template_driver",
                        };
                        return Err(def.unknown(other, expected));
                    }
                }
            }
            if object.external {
                if object.file.is_some() {
                    return Err(def.fail(format!(
                        "{} {key:?}: external {}s cannot have a file",
                        kind.as_str(),
                        kind.as_str()
                    )));
                }
                // An external one is found by its own name, never prefixed, and is not labelled.
                object.name = explicit_name.unwrap_or_else(|| key.clone());
                object.labels = Labels::new();
            } else if let Some(name) = explicit_name {
                // Without `file:` the deploy refuses it when it would be created (`file_object_steps`).
                object.name = name;
            }
            declared.insert(key, object);
        }
        Ok(declared)
    }

    /// A service's `secrets:` or `configs:` list, against the top-level definitions.
    pub(super) fn file_references(
        &self,
        kind: FileKind,
        node: &Node,
        declared: &IndexMap<String, StackFileObject>,
    ) -> Result<Vec<FileReference>, Fail> {
        let mut refs = Vec::new();
        for item in node.items()? {
            let (source, mut reference) = match item.value {
                Value::Mapping(_) => {
                    let mut reference = FileReference::new(kind, "");
                    let (mut source, mut target) = (String::new(), None);
                    for (k, v) in item.entries()? {
                        match k.as_str() {
                            "source" => source = v.string()?,
                            "target" => target = Some(v.string()?),
                            "uid" => reference.uid = v.string()?,
                            "gid" => reference.gid = v.string()?,
                            "mode" => reference.mode = self.mode(&v)?,
                            x if x.starts_with("x-") => {}
                            other => return Err(item.unknown(other, "source, target, uid, gid, mode")),
                        }
                    }
                    // Compose's default target is the key as written, not the object's full name.
                    reference.target = match target.filter(|t| !t.is_empty()) {
                        Some(t) => t,
                        None => FileReference::new(kind, &source).target,
                    };
                    (source, reference)
                }
                _ => {
                    let source = item.string()?;
                    (source.clone(), FileReference::new(kind, &source))
                }
            };
            let object =
                declared.get(&source).ok_or_else(|| item.fail(format!("undefined {} {source:?}", kind.as_str())))?;
            reference.name = object.name.clone();
            refs.push(reference);
        }
        // docker/cli sorts them so that a reordered file does not redeploy the service.
        refs.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(refs)
    }

    /// `mode: 0440`: YAML 1.1 (Docker's parser) reads a leading 0 as octal, serde_yaml does not, so
    /// the number is read again as written in the file.
    fn mode(&self, node: &Node) -> Result<u32, Fail> {
        let written = match node.value {
            // serde_yaml keeps `0440` a string (a leading zero is not a YAML 1.2 integer).
            Value::String(s) => Some(s.trim().to_string()),
            // A number as the file wrote it (the parser may place it at its line or the next).
            Value::Number(_) => {
                let lines: Vec<&str> = self.input.text.lines().collect();
                line_of(self.input.text, &node.path).and_then(|at| {
                    (at.saturating_sub(2)..at.min(lines.len()))
                        .rev()
                        .find_map(|i| lines[i].split_once("mode:").and_then(|(_, v)| v.split_whitespace().next()))
                        .map(str::to_string)
                })
            }
            _ => None,
        };
        if let Some(written) = written.filter(|w| w.starts_with('0') && w.len() > 1) {
            let digits = written.trim_start_matches("0o").trim_start_matches('0');
            return u32::from_str_radix(if digits.is_empty() { "0" } else { digits }, 8)
                .map_err(|_| node.expected("a file mode such as 0440"));
        }
        let mode = node.uint()?;
        u32::try_from(mode).map_err(|_| node.expected("a file mode such as 0440"))
    }
}
