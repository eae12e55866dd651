//! Where a key path is in the compose text, for `file:line:` in messages.
//!
//! The converter works on a [`serde_yaml::Value`] (it needs anchors and `<<` merges resolved,
//! which typed deserialization does not do), and a `Value` keeps no positions. So on the error
//! path only, the text is deserialized once more by a seed that walks down the path and fails on
//! purpose at the node it reaches: serde_yaml stamps every error with the position of the node it
//! was raised in, which is the line we want. A path that leaves the text (it went through a `<<`
//! merge) stops at the deepest node that is in the text.

use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// One step of a path into a compose document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// `services.web.ports[2]`.
pub fn display(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// The 1-based line of the node at `path` in `text` (or of its deepest ancestor in the text).
pub fn line_of(text: &str, path: &[Seg]) -> Option<usize> {
    let document = serde_yaml::Deserializer::from_str(text).next()?;
    match Seek(path).deserialize(document) {
        Ok(()) => None,
        Err(err) => err.location().map(|l| l.line()),
    }
}

/// Deserializes `IgnoredAny` everywhere except along the path; errors at its end.
struct Seek<'p>(&'p [Seg]);

impl<'de> DeserializeSeed<'de> for Seek<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

const HERE: &str = "here";

impl<'de> Visitor<'de> for Seek<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any node")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some((Seg::Key(want), rest)) = self.0.split_first() else { return Err(de::Error::custom(HERE)) };
        while let Some(key) = map.next_key::<serde_yaml::Value>()? {
            let matches = match &key {
                serde_yaml::Value::String(s) => s == want,
                serde_yaml::Value::Number(n) => n.to_string() == *want,
                serde_yaml::Value::Bool(b) => b.to_string() == *want,
                _ => false,
            };
            if matches {
                return map.next_value_seed(Seek(rest));
            }
            map.next_value::<IgnoredAny>()?;
        }
        Err(de::Error::custom(HERE))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Some((Seg::Index(want), rest)) = self.0.split_first() else { return Err(de::Error::custom(HERE)) };
        for _ in 0..*want {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Err(de::Error::custom(HERE));
            }
        }
        match seq.next_element_seed(Seek(rest))? {
            Some(()) => Ok(()),
            None => Err(de::Error::custom(HERE)),
        }
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Err(E::custom(HERE))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Err(E::custom(HERE))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Err(E::custom(HERE))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Err(E::custom(HERE))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Err(E::custom(HERE))
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(E::custom(HERE))
    }

    fn visit_some<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Err(E::custom(HERE))
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        // A tagged node (`!foo x`): as deep as the path goes in the text.
        Err(de::Error::custom(HERE))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> Seg {
        Seg::Key(k.into())
    }

    #[test]
    fn finds_lines() {
        let text = "version: '3'\nservices:\n  web:\n    image: x\n    ports:\n      - 80\n      - \"81:81\"\n    deploy:\n      replicas: three\n";
        assert_eq!(line_of(text, &[key("services"), key("web"), key("deploy"), key("replicas")]), Some(9));
        assert_eq!(line_of(text, &[key("services"), key("web"), key("ports"), Seg::Index(1)]), Some(7));
        // Not in the text: the deepest ancestor that is.
        assert_eq!(line_of(text, &[key("services"), key("web"), key("nope")]), Some(4));
        assert_eq!(display(&[key("services"), key("web"), key("ports"), Seg::Index(1)]), "services.web.ports[1]");
    }
}
