//! Docker's `--format` for lists: `table` (the default columns through the tabwriter), `json` (one
//! object per line), `raw`-free Go-template subset (`{{.Field}}`, `{{json .}}`, optional `table `
//! prefix, `\t` and `\n` escapes), and `-q` (IDs only).

use std::collections::BTreeMap;

use serde_json::Value;

use crate::format::Table;

/// One listed object: Docker's field names (`ID`, `Hostname`, …) and their values.
pub type Row = BTreeMap<String, Value>;

/// Fields that only help render the default table and are not part of the object (`SelfMark`).
const HIDDEN: &[&str] = &["SelfMark"];

/// A list command's output shape.
#[derive(Debug, Clone)]
pub struct Listing {
    /// Docker's default format, e.g. `table {{.ID}}\t{{.Name}}`.
    pub default_format: &'static str,
    /// Header text for each field (`ManagerStatus` → `MANAGER STATUS`).
    pub headers: &'static [(&'static str, &'static str)],
    pub rows: Vec<Row>,
    /// Rows shown as older entries of the row above (` \_ web.1`), in table formats only.
    pub indented: Vec<bool>,
}

/// A `--format` the CLI cannot render.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FormatError(pub String);

impl Listing {
    /// Render with `format` (None = default table), or IDs only when `quiet`.
    pub fn render(&self, format: Option<&str>, quiet: bool) -> Result<String, FormatError> {
        if quiet {
            return Ok(self.rows.iter().map(|row| format!("{}\n", text(row.get("ID")))).collect());
        }
        let format = match format {
            None | Some("") | Some("table") => self.default_format,
            Some(other) => other,
        };
        if format == "json" {
            return Ok(self.rows.iter().map(|row| format!("{}\n", visible_json(row))).collect());
        }
        let (is_table, template) = match format.strip_prefix("table") {
            Some(rest) => (true, rest.trim_start()),
            None => (false, format),
        };
        let template = template.replace("\\t", "\t").replace("\\n", "\n");
        if !is_table {
            let mut out = String::new();
            for row in &self.rows {
                out.push_str(&expand(&template, row)?);
                out.push('\n');
            }
            return Ok(out);
        }
        let header_row: Row =
            self.headers.iter().map(|(field, header)| (field.to_string(), Value::String(header.to_string()))).collect();
        let mut table = Table::new(expand(&template, &header_row)?.split('\t').map(str::to_string));
        for (i, row) in self.rows.iter().enumerate() {
            let cells = if self.indented.get(i).copied().unwrap_or(false) {
                let mut row = row.clone();
                let name = text(row.get("Name"));
                row.insert("Name".into(), Value::String(format!(" \\_ {name}")));
                expand(&template, &row)?
            } else {
                expand(&template, row)?
            };
            table.row(cells.split('\t').map(str::to_string));
        }
        Ok(table.render())
    }
}

fn visible_json(row: &Row) -> String {
    let visible: BTreeMap<&String, &Value> = row.iter().filter(|(k, _)| !HIDDEN.contains(&k.as_str())).collect();
    serde_json::to_string(&visible).unwrap_or_default()
}

fn text(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// Expand `{{.Field}}`, `{{.A.B}}` (into nested objects) and `{{json .}}` / `{{json .Field}}`.
pub fn expand(template: &str, row: &Row) -> Result<String, FormatError> {
    let root = Value::Object(row.iter().map(|(k, v)| (k.clone(), v.clone())).collect());
    expand_value(template, &root)
}

/// [`expand`] over any JSON value (used by `inspect --format`).
pub fn expand_value(template: &str, root: &Value) -> Result<String, FormatError> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or_else(|| FormatError(format!("template: unclosed action in {template:?}")))?;
        let action = after[..end].trim().trim_start_matches('-').trim_end_matches('-').trim();
        let (json, path) = match action.strip_prefix("json ") {
            Some(path) => (true, path.trim()),
            None => (false, action),
        };
        let value = lookup(root, path)?;
        if json {
            out.push_str(&serde_json::to_string(&value).unwrap_or_default());
        } else {
            out.push_str(&text(Some(&value)));
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

fn lookup(root: &Value, path: &str) -> Result<Value, FormatError> {
    if path == "." {
        return Ok(match root {
            Value::Object(map) => Value::Object(
                map.iter()
                    .filter(|(k, _)| !HIDDEN.contains(&k.as_str()))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ),
            other => other.clone(),
        });
    }
    let Some(fields) = path.strip_prefix('.') else {
        return Err(FormatError(format!(
            "template: unsupported action {{{{{path}}}}}: use {{{{.Field}}}} or {{{{json .}}}}"
        )));
    };
    let mut value = root;
    for field in fields.split('.') {
        value = value
            .get(field)
            .ok_or_else(|| FormatError(format!("template: can't evaluate field {field} in {{{{{path}}}}}")))?;
    }
    Ok(value.clone())
}

/// Build a row from `(field, value)` pairs.
pub fn row<const N: usize>(fields: [(&str, Value); N]) -> Row {
    fields.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}
