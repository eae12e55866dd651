//! Variable interpolation in compose values, as docker/cli's `cli/compose/template`: `$VAR`,
//! `${VAR}`, `${VAR:-default}` / `${VAR-default}` (default when unset-or-empty / unset),
//! `${VAR:?message}` / `${VAR?message}` (refuse when unset-or-empty / unset), `${VAR:+other}` /
//! `${VAR+other}` (other when set), and `$$` for a literal `$`. Applied to values only, never to
//! keys, after YAML is parsed — so a `$` in a comment never matters.

use std::collections::BTreeMap;

/// What interpolating one value produced: the text and the names of unset variables that became
/// blank (Docker warns about each).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interpolated {
    pub text: String,
    pub unset: Vec<String>,
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Interpolate `text` with `env`. The error says what was wrong (the caller adds where).
pub fn interpolate(text: &str, env: &BTreeMap<String, String>) -> Result<Interpolated, String> {
    let invalid = || format!("invalid interpolation format in {text:?}: you may need to escape any $ with another $");
    let mut out = String::with_capacity(text.len());
    let mut unset = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        match chars.peek().copied() {
            Some('$') => {
                chars.next();
                out.push('$');
            }
            Some('{') => {
                chars.next();
                let mut inner = String::new();
                let mut closed = false;
                for c in chars.by_ref() {
                    if c == '}' {
                        closed = true;
                        break;
                    }
                    inner.push(c);
                }
                if !closed {
                    return Err(invalid());
                }
                let name_len = inner.find(|c: char| !is_name_char(c)).unwrap_or(inner.len());
                let (name, rest) = inner.split_at(name_len);
                if !name.starts_with(is_name_start) {
                    return Err(invalid());
                }
                let value = env.get(name);
                let set_nonempty = value.is_some_and(|v| !v.is_empty());
                let replaced = if rest.is_empty() {
                    None
                } else if let Some(default) = rest.strip_prefix(":-") {
                    Some(if set_nonempty { value.cloned().unwrap_or_default() } else { default.to_string() })
                } else if let Some(default) = rest.strip_prefix('-') {
                    Some(value.cloned().unwrap_or_else(|| default.to_string()))
                } else if let Some(message) = rest.strip_prefix(":?") {
                    if !set_nonempty {
                        return Err(format!("required variable {name} is missing a value: {message}"));
                    }
                    value.cloned()
                } else if let Some(message) = rest.strip_prefix('?') {
                    match value {
                        Some(v) => Some(v.clone()),
                        None => return Err(format!("required variable {name} is missing a value: {message}")),
                    }
                } else if let Some(other) = rest.strip_prefix(":+") {
                    Some(if set_nonempty { other.to_string() } else { String::new() })
                } else if let Some(other) = rest.strip_prefix('+') {
                    Some(if value.is_some() { other.to_string() } else { String::new() })
                } else {
                    return Err(invalid());
                };
                match (replaced, value) {
                    (Some(text), _) => out.push_str(&text),
                    (None, Some(v)) => out.push_str(v),
                    (None, None) => unset.push(name.to_string()),
                }
            }
            Some(c) if is_name_start(c) => {
                let mut name = String::new();
                while let Some(&c) = chars.peek().filter(|c| is_name_char(**c)) {
                    name.push(c);
                    chars.next();
                }
                match env.get(&name) {
                    Some(v) => out.push_str(v),
                    None => unset.push(name),
                }
            }
            _ => return Err(invalid()),
        }
    }
    Ok(Interpolated { text: out, unset })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let env: BTreeMap<String, String> =
            [("A", "1"), ("EMPTY", "")].into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let got = interpolate("$A ${A} ${B:-x} ${EMPTY:-y} ${EMPTY-z} $$A ${A:+set} ${B+set}|", &env).unwrap();
        assert_eq!(got.text, "1 1 x y  $A set |");
        assert!(got.unset.is_empty());
        assert_eq!(
            interpolate("${NOPE}x", &env).unwrap(),
            Interpolated { text: "x".into(), unset: vec!["NOPE".into()] }
        );
        assert!(interpolate("${A", &env).unwrap_err().contains("invalid interpolation format"));
        assert!(interpolate("cost: 5$", &env).is_err());
        assert_eq!(interpolate("${B:?needs B}", &env).unwrap_err(), "required variable B is missing a value: needs B");
        assert_eq!(interpolate("^/(sys|proc)($$|/)", &env).unwrap().text, "^/(sys|proc)($|/)");
        assert_eq!(interpolate("{{.Node.ID}}", &env).unwrap().text, "{{.Node.ID}}");
    }
}
