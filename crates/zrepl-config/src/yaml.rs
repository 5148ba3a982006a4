//! A YAML document as a tree of nodes that remember where they were written.
//!
//! We build our own tree from a YAML event stream instead of deserializing with serde, because
//! every error we report must carry the line and column of the offending node, and we want all
//! errors of a file at once rather than the first one serde stumbles over.
//!
//! The events come from `libyaml-safer`, a safe Rust port of libyaml: zrepl 0.7 reads its config
//! with go-yaml v2, itself a port of libyaml, so we accept exactly the documents zrepl accepts.
//! (Stricter YAML 1.2 parsers reject zrepl's own sample configs, e.g. a flow mapping whose closing
//! brace sits at its key's indentation.)

use std::collections::HashMap;

use libyaml_safer::{EventData, ScalarStyle};

/// A position in a source file (1-based line and column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Mark {
    pub line: usize,
    pub col: usize,
}

impl From<libyaml_safer::Mark> for Mark {
    fn from(m: libyaml_safer::Mark) -> Self {
        // libyaml counts from 0; editors and compilers count from 1.
        Mark {
            line: m.line as usize + 1,
            col: m.column as usize + 1,
        }
    }
}

/// A YAML node.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub kind: NodeKind,
    pub mark: Mark,
}

#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind {
    /// An explicit or implicit null (`~`, `null`, or a key without a value).
    Null,
    /// A scalar with its text; `quoted` is true for single- or double-quoted and block scalars.
    Scalar {
        value: String,
        quoted: bool,
    },
    Seq(Vec<Node>),
    /// Entries in document order; duplicate keys are kept and reported by the decoder.
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// A short description of the node's kind for error messages.
    pub fn describe(&self) -> &'static str {
        match &self.kind {
            NodeKind::Null => "null",
            NodeKind::Scalar { .. } => "a scalar",
            NodeKind::Seq(_) => "a list",
            NodeKind::Map(_) => "a map",
        }
    }

    /// The scalar text, if this is a scalar.
    pub fn as_scalar(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Scalar { value, .. } => Some(value),
            _ => None,
        }
    }
}

/// A YAML syntax error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub mark: Mark,
    pub message: String,
}

/// The maximum nesting depth we accept; configs are shallow, fuzzers are not.
const MAX_DEPTH: usize = 64;
/// Guards against "billion laughs": aliases may not expand the document beyond this many nodes.
const MAX_NODES: usize = 1_000_000;

enum Partial {
    Seq {
        mark: Mark,
        anchor: Option<String>,
        items: Vec<Node>,
    },
    Map {
        mark: Mark,
        anchor: Option<String>,
        entries: Vec<(Node, Node)>,
        key: Option<Node>,
    },
}

fn count_nodes(n: &Node) -> usize {
    match &n.kind {
        NodeKind::Seq(items) => 1 + items.iter().map(count_nodes).sum::<usize>(),
        NodeKind::Map(es) => {
            1 + es
                .iter()
                .map(|(k, v)| count_nodes(k) + count_nodes(v))
                .sum::<usize>()
        }
        _ => 1,
    }
}

/// Parses the first document of `src`. An empty stream yields `None`.
///
/// libyaml-safer still has a few `panic!`s on inputs libyaml handles (found by fuzzing, e.g.
/// `{!,`); a config file must never crash us, so a panic inside the parser becomes a syntax error.
/// The panic message itself is kept off stderr while we parse (see [`quiet_panics`]).
pub fn parse(src: &str) -> Result<Option<Node>, SyntaxError> {
    quiet_panics::install();
    let _guard = quiet_panics::Guard::new();
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| parse_inner(src))) {
        Ok(r) => r,
        Err(_) => Err(SyntaxError {
            mark: Mark::default(),
            message: "the YAML parser failed on this document (unsupported construct, e.g. a tag directly followed by ',')".into(),
        }),
    }
}

mod quiet_panics {
    //! A panic hook that stays silent for panics raised while this thread parses YAML, and
    //! defers to the previous hook for every other panic.
    use std::cell::Cell;
    use std::sync::Once;

    thread_local! {
        static PARSING: Cell<bool> = const { Cell::new(false) };
    }

    pub fn install() {
        static ONCE: Once = Once::new();
        ONCE.call_once(|| {
            let prev = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                if !PARSING.with(Cell::get) {
                    prev(info);
                }
            }));
        });
    }

    pub struct Guard(bool);

    impl Guard {
        pub fn new() -> Self {
            Guard(PARSING.with(|p| p.replace(true)))
        }
    }

    impl Drop for Guard {
        fn drop(&mut self) {
            let prev = self.0;
            PARSING.with(|p| p.set(prev));
        }
    }
}

fn parse_inner(src: &str) -> Result<Option<Node>, SyntaxError> {
    let mut bytes = src.as_bytes();
    let mut parser = libyaml_safer::Parser::new();
    parser.set_input_string(&mut bytes);
    let mut stack: Vec<Partial> = Vec::new();
    let mut anchors: HashMap<String, Node> = HashMap::new();
    let mut nodes = 0usize;
    let fail = |mark: Mark, message: &str| SyntaxError {
        mark,
        message: message.to_string(),
    };
    for ev in parser {
        let ev = ev.map_err(|e| SyntaxError {
            mark: e
                .problem_mark()
                .or(e.context_mark())
                .map(Mark::from)
                .unwrap_or_default(),
            message: match e.context() {
                Some(c) => format!("{} {}", e.problem(), c),
                None => e.problem().to_string(),
            },
        })?;
        let mark: Mark = ev.start_mark.into();
        let (node, anchor) = match ev.data {
            EventData::DocumentEnd { .. } => {
                // Only the first document counts, as in zrepl.
                return Ok(None);
            }
            EventData::Scalar {
                anchor,
                tag,
                value,
                style,
                ..
            } => {
                let quoted = !matches!(style, ScalarStyle::Plain);
                let is_null = !quoted
                    && matches!(value.as_str(), "" | "~" | "null" | "Null" | "NULL")
                    && tag.as_deref().is_none_or(|t| t.ends_with("null"));
                let kind = if is_null {
                    NodeKind::Null
                } else {
                    NodeKind::Scalar { value, quoted }
                };
                nodes += 1;
                (Node { kind, mark }, anchor)
            }
            EventData::SequenceStart { anchor, .. } => {
                if stack.len() >= MAX_DEPTH {
                    return Err(fail(mark, "document nests too deeply"));
                }
                stack.push(Partial::Seq {
                    mark,
                    anchor,
                    items: Vec::new(),
                });
                continue;
            }
            EventData::MappingStart { anchor, .. } => {
                if stack.len() >= MAX_DEPTH {
                    return Err(fail(mark, "document nests too deeply"));
                }
                stack.push(Partial::Map {
                    mark,
                    anchor,
                    entries: Vec::new(),
                    key: None,
                });
                continue;
            }
            EventData::SequenceEnd | EventData::MappingEnd => {
                nodes += 1;
                match stack.pop() {
                    Some(Partial::Seq {
                        mark,
                        anchor,
                        items,
                    }) => (
                        Node {
                            kind: NodeKind::Seq(items),
                            mark,
                        },
                        anchor,
                    ),
                    Some(Partial::Map {
                        mark,
                        anchor,
                        entries,
                        ..
                    }) => (
                        Node {
                            kind: NodeKind::Map(entries),
                            mark,
                        },
                        anchor,
                    ),
                    None => return Err(fail(mark, "unbalanced collection end")),
                }
            }
            EventData::Alias { anchor } => match anchors.get(&anchor) {
                Some(n) => {
                    let mut n = n.clone();
                    nodes += count_nodes(&n);
                    n.mark = mark;
                    (n, None)
                }
                None => return Err(fail(mark, "alias refers to an unknown anchor")),
            },
            EventData::StreamStart { .. }
            | EventData::StreamEnd
            | EventData::DocumentStart { .. } => continue,
        };
        if nodes > MAX_NODES {
            return Err(fail(
                mark,
                "document expands to too many nodes (alias bomb?)",
            ));
        }
        if let Some(a) = anchor {
            anchors.insert(a, node.clone());
        }
        match stack.last_mut() {
            None => return Ok(Some(node)),
            Some(Partial::Seq { items, .. }) => items.push(node),
            Some(Partial::Map { entries, key, .. }) => match key.take() {
                None => *key = Some(node),
                Some(k) => entries.push((k, node)),
            },
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_and_kinds() {
        let n = parse("a: 1\nb:\n  - x\n  - 'y'\nc:\n").unwrap().unwrap();
        let NodeKind::Map(es) = &n.kind else { panic!() };
        assert_eq!(es.len(), 3);
        assert_eq!(es[0].1.mark, Mark { line: 1, col: 4 });
        let NodeKind::Seq(items) = &es[1].1.kind else {
            panic!()
        };
        assert_eq!(
            items[1].kind,
            NodeKind::Scalar {
                value: "y".into(),
                quoted: true
            }
        );
        assert_eq!(items[1].mark.line, 4);
        assert_eq!(es[2].1.kind, NodeKind::Null);
    }

    #[test]
    fn empty_and_doc_marker() {
        assert_eq!(parse("").unwrap(), None);
        assert!(matches!(
            parse("---\n").unwrap(),
            None | Some(Node {
                kind: NodeKind::Null,
                ..
            })
        ));
        assert!(parse("a: [1, 2\n").is_err());
    }

    #[test]
    fn parser_panics_become_errors() {
        // Found by `cargo fuzz run config`: libyaml-safer panics with "TODO" here.
        assert!(parse("{!,").is_err());
    }

    #[test]
    fn aliases_expand() {
        let n = parse("x: &k {a: 1}\ny: *k\n").unwrap().unwrap();
        let NodeKind::Map(es) = &n.kind else { panic!() };
        assert_eq!(es[0].1.kind, es[1].1.kind);
        assert!(parse("y: *nope\n").is_err());
    }

    #[test]
    fn alias_bomb_is_refused() {
        let mut s = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let p = i - 1;
            s.push_str(&format!("a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"));
        }
        assert!(parse(&s).is_err());
    }
}
