//! Docker's `--format` for lists and `inspect`: `table` (the default columns through the
//! tabwriter), `json` (one object per line), any Go template (an optional `table ` prefix makes
//! its tab-separated cells columns under headers), and `-q` (IDs only).
//!
//! Templates are Go's text/template through the `gotmpl` crate — `range`, `if`, `index`, `len`,
//! `printf`, pipelines, variables — with the functions docker/cli adds (`cli/templates`): `json`,
//! `split`, `join`, `title`, `lower`, `upper`, `pad`, `truncate`. Maps range in key order and
//! print as Go prints them (`map[a:1 b:2]`).

use std::collections::BTreeMap;
use std::sync::Arc;

use gotmpl::{FuncMap, Template};
use serde_json::Value;

use crate::format::Table;

/// One listed object: Docker's field names (`ID`, `Hostname`, …) and their values.
pub type Row = BTreeMap<String, Value>;

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
            return Ok(self
                .rows
                .iter()
                .map(|row| format!("{}\n", serde_json::to_string(row).unwrap_or_default()))
                .collect());
        }
        let (is_table, template) = match format.strip_prefix("table") {
            Some(rest) => (true, rest.trim_start()),
            None => (false, format),
        };
        let template = parse(&template.replace("\\t", "\t").replace("\\n", "\n"))?;
        if !is_table {
            let mut out = String::new();
            for row in &self.rows {
                out.push_str(&execute(&template, &object(row))?);
                out.push('\n');
            }
            return Ok(out);
        }
        let header_row: Row =
            self.headers.iter().map(|(field, header)| (field.to_string(), Value::String(header.to_string()))).collect();
        let mut table = Table::new(execute(&template, &object(&header_row))?.split('\t').map(str::to_string));
        for (i, row) in self.rows.iter().enumerate() {
            let cells = if self.indented.get(i).copied().unwrap_or(false) {
                let mut row = row.clone();
                let name = text(row.get("Name"));
                row.insert("Name".into(), Value::String(format!(" \\_ {name}")));
                execute(&template, &object(&row))?
            } else {
                execute(&template, &object(row))?
            };
            table.row(cells.split('\t').map(str::to_string));
        }
        Ok(table.render())
    }
}

fn object(row: &Row) -> Value {
    Value::Object(row.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

fn text(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// Expand a Go template over any JSON value (`inspect --format`, `info --format`).
pub fn expand_value(template: &str, root: &Value) -> Result<String, FormatError> {
    execute(&parse(template)?, root)
}

/// Parse a template with docker/cli's functions; the error is Go's `template: …` message.
fn parse(template: &str) -> Result<Template, FormatError> {
    // Docker's objects are Go structs, where an unknown field is an error, not `<no value>`.
    Template::new("")
        .missing_key(gotmpl::MissingKey::Error)
        .funcs(docker_functions())
        .parse(template)
        .map_err(|err| FormatError(format!("template parsing error: {err}")))
}

fn execute(template: &Template, root: &Value) -> Result<String, FormatError> {
    let data = gotmpl::to_value(root).map_err(|err| FormatError(err.to_string()))?;
    template.execute_to_string(&data).map_err(|err| FormatError(err.to_string()))
}

/// The functions docker/cli's `templates.Parse` adds to Go's builtins.
fn docker_functions() -> FuncMap {
    use gotmpl::Value as V;
    fn arg_text(args: &[V], i: usize) -> String {
        args.get(i).map(|v| v.to_string()).unwrap_or_default()
    }
    fn arg_int(args: &[V], i: usize, name: &str) -> gotmpl::Result<i64> {
        match args.get(i) {
            Some(V::Int(n)) => Ok(*n),
            Some(V::Uint(n)) => Ok(i64::try_from(*n).unwrap_or(i64::MAX)),
            _ => Err(gotmpl::TemplateError::Exec(format!("{name}: argument {} must be an integer", i + 1))),
        }
    }
    fn strings(value: Option<&V>) -> Vec<String> {
        match value {
            Some(V::List(items)) => items.iter().map(|v| v.to_string()).collect(),
            Some(other) => vec![other.to_string()],
            None => Vec::new(),
        }
    }
    let mut functions = FuncMap::new();
    let mut add = |name: &str, f: fn(&[V]) -> gotmpl::Result<V>| {
        functions.insert(name.to_string(), Arc::new(f));
    };
    // `json` marshals without HTML escaping and without the encoder's trailing newline.
    add("json", |args| {
        Ok(V::String(serde_json::to_string(&json_of(args.first().unwrap_or(&V::Nil))).unwrap_or_default().into()))
    });
    add("split", |args| {
        let (text, sep) = (arg_text(args, 0), arg_text(args, 1));
        let parts: Vec<V> = if sep.is_empty() {
            text.chars().map(|c| V::String(c.to_string().into())).collect()
        } else {
            text.split(sep.as_str()).map(|p| V::String(p.into())).collect()
        };
        Ok(V::List(parts.into()))
    });
    add("join", |args| Ok(V::String(strings(args.first()).join(&arg_text(args, 1)).into())));
    add("lower", |args| Ok(V::String(arg_text(args, 0).to_lowercase().into())));
    add("upper", |args| Ok(V::String(arg_text(args, 0).to_uppercase().into())));
    add("title", |args| Ok(V::String(title(&arg_text(args, 0)).into())));
    // `pad SOURCE PREFIX SUFFIX`: that many spaces before and after (docker/cli's padWithSpace).
    add("pad", |args| {
        let (before, after) = (arg_int(args, 1, "pad")?.max(0) as usize, arg_int(args, 2, "pad")?.max(0) as usize);
        Ok(V::String(format!("{}{}{}", " ".repeat(before), arg_text(args, 0), " ".repeat(after)).into()))
    });
    // `truncate SOURCE LENGTH`: at most LENGTH characters.
    add("truncate", |args| {
        let length = arg_int(args, 1, "truncate")?.max(0) as usize;
        Ok(V::String(arg_text(args, 0).chars().take(length).collect::<String>().into()))
    });
    functions
}

/// Go's `strings.Title` as docker/cli uses it: the first letter of each word upper-cased.
fn title(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut at_start = true;
    for c in text.chars() {
        if at_start {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        at_start = !c.is_alphanumeric() && c != '_' && c != '\'';
    }
    out
}

/// A template value back as JSON (for the `json` function).
fn json_of(value: &gotmpl::Value) -> Value {
    use gotmpl::Value as V;
    match value {
        V::Nil => Value::Null,
        V::Bool(b) => Value::Bool(*b),
        V::Int(n) => Value::from(*n),
        V::Uint(n) => Value::from(*n),
        V::Float(f) => serde_json::Number::from_f64(*f).map(Value::Number).unwrap_or(Value::Null),
        V::String(s) => Value::String(s.to_string()),
        V::List(items) => Value::Array(items.iter().map(json_of).collect()),
        V::Map(map) => Value::Object(map.iter().map(|(k, v)| (k.to_string(), json_of(v))).collect()),
        other => Value::String(other.to_string()),
    }
}

/// Build a row from `(field, value)` pairs.
pub fn row<const N: usize>(fields: [(&str, Value); N]) -> Row {
    fields.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}
