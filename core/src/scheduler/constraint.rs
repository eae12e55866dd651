//! Placement constraints (`node.labels.zone==east`) and preferences (`spread=node.labels.zone`), parsed
//! and matched as swarmkit's `manager/constraint` does: the first of `==`, `!=` splits the expression,
//! keys and values are checked against swarmkit's character sets, and values compare case-insensitively.
//!
//! Unlike swarmkit, an unknown key (`node.colour==red`) is an error at parse time rather than a
//! constraint that silently never matches: the control API calls [`parse_constraints`] at service
//! create/update, so a typo is reported to the user instead of leaving the service pending forever.

use crate::api::{Node, NodeRole};

/// Why a constraint or preference was refused. Messages follow swarmkit's where it has one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConstraintError {
    #[error("constraint expected one operator from ==, !=")]
    MissingOperator { constraint: String },
    #[error("key '{key}' is invalid")]
    InvalidKey { key: String },
    #[error("value '{value}' is invalid")]
    InvalidValue { value: String },
    #[error(
        "constraint key '{key}' is not supported (use node.id, node.hostname, node.role, node.platform.os, \
         node.platform.arch, node.labels.<label>, engine.labels.<label>)"
    )]
    UnknownKey { key: String },
    #[error("invalid placement preference '{preference}': expected spread=node.labels.<label> or spread=engine.labels.<label>")]
    InvalidPreference { preference: String },
}

/// What a constraint looks at on a node.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum NodeAttribute {
    Id,
    Hostname,
    Role,
    Os,
    Arch,
    /// `node.labels.<key>`: the labels set with `node update --label-add`.
    NodeLabel(String),
    /// `engine.labels.<key>`: the labels the node's engine reports.
    EngineLabel(String),
}

impl NodeAttribute {
    fn parse(key: &str) -> Option<NodeAttribute> {
        let lower = key.to_ascii_lowercase();
        Some(match lower.as_str() {
            "node.id" => NodeAttribute::Id,
            "node.hostname" => NodeAttribute::Hostname,
            "node.role" => NodeAttribute::Role,
            "node.platform.os" => NodeAttribute::Os,
            "node.platform.arch" => NodeAttribute::Arch,
            // Label names keep their case: they are user data, only the prefix is a keyword.
            _ if lower.starts_with("node.labels.") && key.len() > "node.labels.".len() => {
                NodeAttribute::NodeLabel(key["node.labels.".len()..].to_string())
            }
            _ if lower.starts_with("engine.labels.") && key.len() > "engine.labels.".len() => {
                NodeAttribute::EngineLabel(key["engine.labels.".len()..].to_string())
            }
            _ => return None,
        })
    }

    /// The node's value for this attribute; a missing label reads as empty (so `!=` matches it).
    pub fn value<'n>(&self, node: &'n Node) -> &'n str {
        match self {
            NodeAttribute::Id => &node.id,
            NodeAttribute::Hostname => &node.description.hostname,
            NodeAttribute::Role => match node.role {
                NodeRole::Manager => "manager",
                NodeRole::Worker => "worker",
            },
            NodeAttribute::Os => &node.description.os,
            NodeAttribute::Arch => &node.description.arch,
            NodeAttribute::NodeLabel(k) => node.spec.labels.get(k).map(String::as_str).unwrap_or(""),
            NodeAttribute::EngineLabel(k) => node.description.engine_labels.get(k).map(String::as_str).unwrap_or(""),
        }
    }
}

/// One parsed constraint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Constraint {
    pub attribute: NodeAttribute,
    pub equal: bool,
    pub value: String,
}

impl Constraint {
    pub fn matches(&self, node: &Node) -> bool {
        let value = self.attribute.value(node);
        // swarmkit compares with strings.EqualFold; node ids and hostnames are case-insensitive in Docker.
        value.eq_ignore_ascii_case(&self.value) == self.equal
    }
}

/// Parse Swarm constraint expressions. The control API calls this at service create/update time.
pub fn parse_constraints(exprs: &[String]) -> Result<Vec<Constraint>, ConstraintError> {
    exprs.iter().map(|e| parse_constraint(e)).collect()
}

fn parse_constraint(expr: &str) -> Result<Constraint, ConstraintError> {
    for (op, equal) in [("==", true), ("!=", false)] {
        let Some((key, value)) = expr.split_once(op) else {
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        if !valid_key(key) {
            return Err(ConstraintError::InvalidKey { key: key.to_string() });
        }
        if !valid_value(value) {
            return Err(ConstraintError::InvalidValue { value: value.to_string() });
        }
        let attribute =
            NodeAttribute::parse(key).ok_or_else(|| ConstraintError::UnknownKey { key: key.to_string() })?;
        return Ok(Constraint { attribute, equal, value: value.to_string() });
    }
    Err(ConstraintError::MissingOperator { constraint: expr.to_string() })
}

/// swarmkit's `^(?i)[a-z_][a-z0-9\-_.]+$`.
fn valid_key(key: &str) -> bool {
    let mut chars = key.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    (first.is_ascii_alphabetic() || first == '_')
        && key.len() >= 2
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// swarmkit's `^(?i)[a-z0-9:\-_\s\.\*\(\)\?\+\[\]\\\^\$\|\/]+$`.
fn valid_value(value: &str) -> bool {
    !value.is_empty()
        && value.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || c.is_whitespace()
                || matches!(
                    c,
                    ':' | '-' | '_' | '.' | '*' | '(' | ')' | '?' | '+' | '[' | ']' | '\\' | '^' | '$' | '|' | '/'
                )
        })
}

/// True when the node satisfies every constraint.
pub fn node_matches(constraints: &[Constraint], node: &Node) -> bool {
    constraints.iter().all(|c| c.matches(node))
}

/// One `spread=<attribute>` placement preference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpreadPreference {
    pub attribute: NodeAttribute,
}

/// Parse `spread=node.labels.<label>` / `spread=engine.labels.<label>` preferences (swarmkit accepts
/// only label descriptors for spread).
pub fn parse_preferences(prefs: &[String]) -> Result<Vec<SpreadPreference>, ConstraintError> {
    prefs
        .iter()
        .map(|p| {
            let bad = || ConstraintError::InvalidPreference { preference: p.clone() };
            let (strategy, descriptor) = p.split_once('=').ok_or_else(bad)?;
            if !strategy.trim().eq_ignore_ascii_case("spread") {
                return Err(bad());
            }
            match NodeAttribute::parse(descriptor.trim()) {
                Some(attribute @ (NodeAttribute::NodeLabel(_) | NodeAttribute::EngineLabel(_))) => {
                    Ok(SpreadPreference { attribute })
                }
                _ => Err(bad()),
            }
        })
        .collect()
}

/// Normalise an architecture name as Docker does (`x86_64` is `amd64`, `aarch64` is `arm64`).
pub fn normalize_arch(arch: &str) -> String {
    match arch.to_ascii_lowercase().as_str() {
        "x86_64" | "x86-64" => "amd64".into(),
        "aarch64" => "arm64".into(),
        "i386" | "i686" => "386".into(),
        other => other.to_string(),
    }
}

/// True when the node runs one of `platforms` (`os/arch` or `os`; empty = any platform).
pub fn platform_matches(platforms: &[String], node: &Node) -> bool {
    if platforms.is_empty() {
        return true;
    }
    let os = node.description.os.to_ascii_lowercase();
    let arch = normalize_arch(&node.description.arch);
    platforms.iter().any(|p| {
        let (p_os, p_arch) = p.split_once('/').unwrap_or((p.as_str(), ""));
        let os_ok = p_os.is_empty() || os.is_empty() || p_os.eq_ignore_ascii_case(&os);
        let arch_ok = p_arch.is_empty() || arch.is_empty() || normalize_arch(p_arch) == arch;
        os_ok && arch_ok
    })
}
