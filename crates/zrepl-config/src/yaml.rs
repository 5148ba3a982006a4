//! A YAML document as a tree of nodes that remember where they were written.
//!
//! We build our own tree from `yaml-rust2`'s event stream instead of deserializing with serde,
//! because every error we report must carry the line and column of the offending node, and we want
//! all errors of a file at once rather than the first one serde stumbles over.

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A position in a source file (1-based line and column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Mark {
    pub line: usize,
    pub col: usize,
}

impl From<Marker> for Mark {
    fn from(m: Marker) -> Self {
        // yaml-rust2 columns are 0-based; editors and compilers count from 1.
        Mark {
            line: m.line(),
            col: m.col() + 1,
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
    Scalar { value: String, quoted: bool },
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

/// Parses the first document of `src`. An empty stream (or one holding only `---`) yields `None`.
pub fn parse(src: &str) -> Result<Option<Node>, SyntaxError> {
    let mut b = Builder::default();
    let mut parser = Parser::new_from_str(src);
    parser.load(&mut b, false).map_err(|e| SyntaxError {
        mark: (*e.marker()).into(),
        message: e.info().to_string(),
    })?;
    if let Some(err) = b.error {
        return Err(err);
    }
    Ok(b.doc)
}

/// The maximum nesting depth we accept; configs are shallow, fuzzers are not.
const MAX_DEPTH: usize = 64;
/// Guards against "billion laughs": aliases may not expand the document beyond this many nodes.
const MAX_NODES: usize = 1_000_000;

#[derive(Default)]
struct Builder {
    stack: Vec<Partial>,
    anchors: std::collections::HashMap<usize, Node>,
    doc: Option<Node>,
    done: bool,
    error: Option<SyntaxError>,
    nodes: usize,
}

enum Partial {
    Seq {
        mark: Mark,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        mark: Mark,
        anchor: usize,
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

impl Builder {
    fn fail(&mut self, mark: Mark, message: impl Into<String>) {
        if self.error.is_none() {
            self.error = Some(SyntaxError {
                mark,
                message: message.into(),
            });
        }
    }

    fn push_node(&mut self, node: Node, anchor: usize) {
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => {
                if self.doc.is_none() {
                    self.doc = Some(node);
                }
            }
            Some(Partial::Seq { items, .. }) => items.push(node),
            Some(Partial::Map { entries, key, .. }) => match key.take() {
                None => *key = Some(node),
                Some(k) => entries.push((k, node)),
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, marker: Marker) {
        if self.done || self.error.is_some() {
            return;
        }
        let mark: Mark = marker.into();
        match ev {
            Event::DocumentEnd => {
                if self.doc.is_some() {
                    self.done = true;
                }
            }
            Event::Scalar(value, style, anchor, tag) => {
                self.nodes += 1;
                let quoted = !matches!(style, TScalarStyle::Plain);
                let is_null = !quoted
                    && matches!(value.as_str(), "" | "~" | "null" | "Null" | "NULL")
                    && tag.as_ref().is_none_or(|t| t.suffix == "null");
                let kind = if is_null {
                    NodeKind::Null
                } else {
                    NodeKind::Scalar { value, quoted }
                };
                self.push_node(Node { kind, mark }, anchor);
            }
            Event::SequenceStart(anchor, _) => {
                if self.stack.len() >= MAX_DEPTH {
                    return self.fail(mark, format!("document nests deeper than {MAX_DEPTH} levels"));
                }
                self.stack.push(Partial::Seq {
                    mark,
                    anchor,
                    items: Vec::new(),
                });
            }
            Event::MappingStart(anchor, _) => {
                if self.stack.len() >= MAX_DEPTH {
                    return self.fail(mark, format!("document nests deeper than {MAX_DEPTH} levels"));
                }
                self.stack.push(Partial::Map {
                    mark,
                    anchor,
                    entries: Vec::new(),
                    key: None,
                });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, anchor) = match self.stack.pop() {
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
                    None => return self.fail(mark, "unbalanced collection end"),
                };
                self.nodes += 1;
                self.push_node(node, anchor);
            }
            Event::Alias(id) => match self.anchors.get(&id) {
                Some(n) => {
                    let mut n = n.clone();
                    self.nodes += count_nodes(&n);
                    if self.nodes > MAX_NODES {
                        return self.fail(mark, "document expands to too many nodes (alias bomb?)");
                    }
                    n.mark = mark;
                    self.push_node(n, 0);
                }
                None => self.fail(mark, "alias refers to an unknown anchor"),
            },
            Event::StreamStart | Event::StreamEnd | Event::DocumentStart | Event::Nothing => {}
        }
        if self.nodes > MAX_NODES {
            self.fail(mark, "document has too many nodes");
        }
    }
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
        let NodeKind::Seq(items) = &es[1].1.kind else { panic!() };
        assert_eq!(items[1].kind, NodeKind::Scalar { value: "y".into(), quoted: true });
        assert_eq!(items[1].mark.line, 4);
        assert_eq!(es[2].1.kind, NodeKind::Null);
    }

    #[test]
    fn empty_and_doc_marker() {
        assert_eq!(parse("").unwrap(), None);
        assert!(matches!(
            parse("---\n").unwrap(),
            None | Some(Node { kind: NodeKind::Null, .. })
        ));
        assert!(parse("a: [1, 2\n").is_err());
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
