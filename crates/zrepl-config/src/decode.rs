//! A small decoding toolkit over [`Node`]s that collects every error with its location.
//!
//! Decoders return `Option<T>`: `None` means "an error was recorded", so a caller can keep going
//! and report the next problem too. [`MapReader`] tracks which keys were consumed, so unknown keys
//! are reported when a struct is finished, with the list of keys that would have been accepted.

use std::path::Path;

use crate::error::ConfigError;
use crate::yaml::{Mark, Node, NodeKind};

/// Decoding context: the file being read and the errors found so far.
pub struct Cx<'a> {
    pub file: &'a Path,
    pub errors: Vec<ConfigError>,
    pub warnings: Vec<ConfigError>,
}

impl<'a> Cx<'a> {
    pub fn new(file: &'a Path) -> Self {
        Cx {
            file,
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    pub fn err(&mut self, mark: Mark, path: &str, message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.file.to_path_buf(),
            mark,
            path: path.to_string(),
            message: message.into(),
        });
    }

    pub fn warn(&mut self, mark: Mark, path: &str, message: impl Into<String>) {
        self.warnings.push(ConfigError {
            file: self.file.to_path_buf(),
            mark,
            path: path.to_string(),
            message: message.into(),
        });
    }

    /// Opens a map for field-by-field reading.
    pub fn map<'n>(&mut self, node: &'n Node, path: &str) -> Option<MapReader<'n>> {
        match &node.kind {
            NodeKind::Map(entries) => {
                let mut flat: Vec<(&'n Node, &'n Node)> = Vec::new();
                flatten_merge(entries, &mut flat, 0);
                let mut reader = MapReader {
                    mark: node.mark,
                    path: path.to_string(),
                    entries: Vec::new(),
                    asked: Vec::new(),
                };
                for (k, v) in flat {
                    let Some(key) = k.as_scalar() else {
                        self.err(
                            k.mark,
                            path,
                            format!("map keys must be scalars, found {}", k.describe()),
                        );
                        continue;
                    };
                    if let Some(prev) = reader.entries.iter().find(|e| e.key == key) {
                        let line = prev.key_mark.line;
                        self.err(
                            k.mark,
                            path,
                            format!("duplicate key {key:?} (first given on line {line})"),
                        );
                        continue;
                    }
                    reader.entries.push(Entry {
                        key: key.to_string(),
                        key_mark: k.mark,
                        value: v,
                        used: false,
                    });
                }
                Some(reader)
            }
            _ => {
                self.err(
                    node.mark,
                    path,
                    format!("expected a map, found {}", node.describe()),
                );
                None
            }
        }
    }

    /// A string. Any scalar is accepted as its text, as yaml.v2 does for string fields.
    pub fn string(&mut self, node: &Node, path: &str) -> Option<String> {
        match &node.kind {
            NodeKind::Scalar { value, .. } => Some(value.clone()),
            _ => {
                self.err(
                    node.mark,
                    path,
                    format!("expected a string, found {}", node.describe()),
                );
                None
            }
        }
    }

    /// A non-empty string.
    pub fn nonempty_string(&mut self, node: &Node, path: &str) -> Option<String> {
        let s = self.string(node, path)?;
        if s.is_empty() {
            self.err(node.mark, path, "must not be empty");
            return None;
        }
        Some(s)
    }

    /// A boolean: `true`/`false` and YAML 1.1's yes/no/on/off, as zrepl's YAML library reads them.
    pub fn bool(&mut self, node: &Node, path: &str) -> Option<bool> {
        if let NodeKind::Scalar {
            value,
            quoted: false,
        } = &node.kind
        {
            match value.to_ascii_lowercase().as_str() {
                "true" | "yes" | "on" | "y" => return Some(true),
                "false" | "no" | "off" | "n" => return Some(false),
                _ => {}
            }
        }
        self.err(
            node.mark,
            path,
            format!("expected true or false, found {}", show(node)),
        );
        None
    }

    /// An integer (decimal, or 0x/0o prefixed).
    pub fn int(&mut self, node: &Node, path: &str) -> Option<i64> {
        if let NodeKind::Scalar { value, .. } = &node.kind {
            let v = value.trim();
            let (neg, digits) = match v.strip_prefix('-') {
                Some(d) => (true, d),
                None => (false, v.strip_prefix('+').unwrap_or(v)),
            };
            let parsed = if let Some(h) = digits.strip_prefix("0x") {
                i64::from_str_radix(h, 16).ok()
            } else if let Some(o) = digits.strip_prefix("0o") {
                i64::from_str_radix(o, 8).ok()
            } else if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit() || b == b'_')
            {
                digits.replace('_', "").parse::<i64>().ok()
            } else {
                None
            };
            if let Some(p) = parsed {
                return Some(if neg { -p } else { p });
            }
        }
        self.err(
            node.mark,
            path,
            format!("expected an integer, found {}", show(node)),
        );
        None
    }

    /// A list; each element is decoded with `f` and failures are skipped (their errors recorded).
    pub fn list<T>(
        &mut self,
        node: &Node,
        path: &str,
        mut f: impl FnMut(&mut Self, &Node, &str) -> Option<T>,
    ) -> Option<Vec<T>> {
        match &node.kind {
            NodeKind::Seq(items) => {
                let mut out = Vec::with_capacity(items.len());
                let mut ok = true;
                for (i, item) in items.iter().enumerate() {
                    match f(self, item, &format!("{path}[{i}]")) {
                        Some(v) => out.push(v),
                        None => ok = false,
                    }
                }
                ok.then_some(out)
            }
            _ => {
                self.err(
                    node.mark,
                    path,
                    format!("expected a list, found {}", node.describe()),
                );
                None
            }
        }
    }

    /// A map with arbitrary string keys, as ordered `(key, key mark, value node)` triples.
    pub fn string_map<'n>(
        &mut self,
        node: &'n Node,
        path: &str,
    ) -> Option<Vec<(String, Mark, &'n Node)>> {
        let mut m = self.map(node, path)?;
        let out = m
            .entries
            .iter_mut()
            .map(|e| {
                e.used = true;
                (e.key.clone(), e.key_mark, e.value)
            })
            .collect();
        Some(out)
    }
}

/// Shows a node's text for an error message.
pub fn show(node: &Node) -> String {
    match &node.kind {
        NodeKind::Scalar { value, .. } => format!("{value:?}"),
        _ => node.describe().to_string(),
    }
}

/// Expands YAML merge keys (`<<: *anchor` or `<<: [*a, *b]`): explicit keys win over merged ones.
fn flatten_merge<'n>(
    entries: &'n [(Node, Node)],
    out: &mut Vec<(&'n Node, &'n Node)>,
    depth: usize,
) {
    let mut merged: Vec<(&'n Node, &'n Node)> = Vec::new();
    for (k, v) in entries {
        if k.as_scalar() == Some("<<") && depth < 8 {
            let sources: Vec<&Node> = match &v.kind {
                NodeKind::Seq(items) => items.iter().collect(),
                _ => vec![v],
            };
            for s in sources {
                if let NodeKind::Map(es) = &s.kind {
                    flatten_merge(es, &mut merged, depth + 1);
                } else {
                    out.push((k, v));
                }
            }
        } else {
            out.push((k, v));
        }
    }
    for (k, v) in merged {
        let key = k.as_scalar();
        if key.is_some() && !out.iter().any(|(ok, _)| ok.as_scalar() == key) {
            out.push((k, v));
        }
    }
}

struct Entry<'n> {
    key: String,
    key_mark: Mark,
    value: &'n Node,
    used: bool,
}

/// Reads the fields of one YAML map.
pub struct MapReader<'n> {
    pub mark: Mark,
    pub path: String,
    entries: Vec<Entry<'n>>,
    /// Every key a decoder asked for: the keys this map accepts, for "unknown field" messages.
    asked: Vec<String>,
}

impl<'n> MapReader<'n> {
    fn child(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// The raw node of a key (marks it as used). A null value counts as absent.
    pub fn get(&mut self, key: &str) -> Option<(&'n Node, String)> {
        let child = self.child(key);
        if !self.asked.iter().any(|k| k == key) {
            self.asked.push(key.to_string());
        }
        let e = self.entries.iter_mut().find(|e| e.key == key)?;
        e.used = true;
        if e.value.kind == NodeKind::Null {
            return None;
        }
        Some((e.value, child))
    }

    /// Is the key present at all (even with a null value)?
    pub fn has(&self, key: &str) -> bool {
        self.entries.iter().any(|e| e.key == key)
    }

    /// A required field: records "required but not given" if absent.
    pub fn req<T>(
        &mut self,
        cx: &mut Cx,
        key: &str,
        f: impl FnOnce(&mut Cx, &Node, &str) -> Option<T>,
    ) -> Option<T> {
        match self.get(key) {
            Some((node, path)) => f(cx, node, &path),
            None => {
                let (mark, path) = match self.entries.iter().find(|e| e.key == key) {
                    Some(e) => (e.key_mark, self.child(key)),
                    None => (self.mark, self.path.clone()),
                };
                let msg = if self.has(key) {
                    format!("field {key:?} is required but has no value")
                } else {
                    format!("field {key:?} is required but not given")
                };
                cx.err(mark, &path, msg);
                None
            }
        }
    }

    /// An optional field: `Some(None)` if absent, `None` if present but invalid (error recorded).
    pub fn opt<T>(
        &mut self,
        cx: &mut Cx,
        key: &str,
        f: impl FnOnce(&mut Cx, &Node, &str) -> Option<T>,
    ) -> Option<Option<T>> {
        match self.get(key) {
            Some((node, path)) => f(cx, node, &path).map(Some),
            None => Some(None),
        }
    }

    /// An optional field with a default.
    pub fn or<T>(
        &mut self,
        cx: &mut Cx,
        key: &str,
        default: T,
        f: impl FnOnce(&mut Cx, &Node, &str) -> Option<T>,
    ) -> Option<T> {
        self.opt(cx, key, f).map(|v| v.unwrap_or(default))
    }

    /// Reports every key that no decoder asked for, listing the keys that are accepted here.
    pub fn finish(self, cx: &mut Cx) {
        for e in self.entries.iter().filter(|e| !e.used) {
            let mut msg = format!("unknown field {:?}", e.key);
            if !self.asked.is_empty() {
                msg.push_str(&format!(" (expected one of: {})", self.asked.join(", ")));
            }
            cx.err(e.key_mark, &self.child(&e.key), msg);
        }
    }

    /// The `type` discriminator of an enum-like map.
    pub fn tag(&mut self, cx: &mut Cx, allowed: &[&str]) -> Option<String> {
        let Some((node, path)) = self.get("type") else {
            cx.err(
                self.mark,
                &self.path,
                format!("must specify type (one of: {})", allowed.join(", ")),
            );
            return None;
        };
        let t = cx.string(node, &path)?;
        if !allowed.contains(&t.as_str()) {
            cx.err(
                node.mark,
                &path,
                format!(
                    "invalid type name {t:?} (expected one of: {})",
                    allowed.join(", ")
                ),
            );
            return None;
        }
        Some(t)
    }
}
