//! zrepl's dataset filter (`filesystems: {"tank<": true, "tank/tmp": false}`).
//!
//! Semantics, exactly as zrepl 0.7 (`internal/daemon/filters/fsmapfilter.go`):
//! 1. a pattern without `<` that equals the dataset exactly decides, whatever its length;
//! 2. otherwise, among the `<` patterns whose path is a component-wise prefix of the dataset,
//!    the longest decides;
//! 3. no match rejects.
//!
//! Pure: the filter is data plus a function; listing datasets is the caller's business.

use std::collections::BTreeMap;

mod snapshots;
pub use snapshots::{SnapshotFilter, SnapshotPattern};

use zrepl_zfs_types::name::NameError;
use zrepl_zfs_types::DatasetPath;

/// A filter pattern could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("pattern {pattern:?}: '<' may appear only once, at the end")]
    MisplacedWildcard { pattern: String },
    #[error("pattern {pattern:?} is listed twice")]
    Duplicate { pattern: String },
    #[error("pattern {pattern:?}: invalid dataset path: {source}")]
    InvalidPath { pattern: String, source: NameError },
    #[error("invalid filter entry {entry:?}: expected <pattern>:<ok|!>")]
    InvalidEntry { entry: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    path: DatasetPath,
    subtree: bool,
    accept: bool,
}

/// A compiled `filesystems` filter.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DatasetFilter {
    exact: BTreeMap<DatasetPath, bool>,
    /// Subtree rules, sorted by path length descending so the first prefix match is the longest.
    subtree: Vec<Rule>,
    /// The patterns as written, in the order given, for printing the resolved config.
    source: Vec<(String, bool)>,
}

impl DatasetFilter {
    /// Compiles `(pattern, accept)` pairs. Returns every error, not just the first.
    pub fn new<'a, I>(entries: I) -> Result<Self, Vec<FilterError>>
    where
        I: IntoIterator<Item = (&'a str, bool)>,
    {
        let mut f = DatasetFilter::default();
        let mut errs = Vec::new();
        let mut seen_subtree = BTreeMap::new();
        for (pattern, accept) in entries {
            match parse_pattern(pattern) {
                Ok(rule) => {
                    let dup = if rule.subtree {
                        seen_subtree.insert(rule.path.clone(), ()).is_some()
                    } else {
                        f.exact.insert(rule.path.clone(), accept).is_some()
                    };
                    if dup {
                        errs.push(FilterError::Duplicate {
                            pattern: pattern.to_string(),
                        });
                        continue;
                    }
                    if rule.subtree {
                        f.subtree.push(Rule { accept, ..rule });
                    }
                    f.source.push((pattern.to_string(), accept));
                }
                Err(e) => errs.push(e),
            }
        }
        if !errs.is_empty() {
            return Err(errs);
        }
        f.subtree.sort_by_key(|r| std::cmp::Reverse(r.path.len()));
        Ok(f)
    }

    /// Parses zrepl's CLI syntax `pattern:ok,pattern2:!` (`zrepl zfs-abstraction --fs`).
    pub fn parse_cli(spec: &str) -> Result<Self, Vec<FilterError>> {
        let mut pairs = Vec::new();
        for entry in spec.split(',') {
            let Some((pat, verdict)) = entry.rsplit_once(':') else {
                return Err(vec![FilterError::InvalidEntry {
                    entry: entry.to_string(),
                }]);
            };
            let accept = match verdict {
                "ok" => true,
                "!" => false,
                _ => {
                    return Err(vec![FilterError::InvalidEntry {
                        entry: entry.to_string(),
                    }])
                }
            };
            pairs.push((pat, accept));
        }
        DatasetFilter::new(pairs)
    }

    /// A filter accepting exactly one dataset.
    pub fn single(path: &DatasetPath) -> Self {
        let mut f = DatasetFilter::default();
        f.exact.insert(path.clone(), true);
        f.source.push((path.to_string(), true));
        f
    }

    /// Does the filter accept this dataset?
    pub fn accepts(&self, path: &DatasetPath) -> bool {
        if let Some(v) = self.exact.get(path) {
            return *v;
        }
        self.subtree
            .iter()
            .find(|r| path.has_prefix(&r.path))
            .map(|r| r.accept)
            .unwrap_or(false)
    }

    /// The smallest set of datasets whose subtrees (each root included) hold every dataset the
    /// filter can accept, sorted; `None` if it may accept a dataset of any pool (a `<` rule
    /// with an empty path). Lets a caller list only those subtrees instead of every pool.
    pub fn roots(&self) -> Option<Vec<DatasetPath>> {
        let mut accepting: Vec<&DatasetPath> = self
            .exact
            .iter()
            .filter(|(_, accept)| **accept)
            .map(|(p, _)| p)
            .chain(self.subtree.iter().filter(|r| r.accept).map(|r| &r.path))
            .collect();
        if accepting.iter().any(|p| p.is_empty()) {
            return None;
        }
        // Shorter paths first, so that a root is kept before anything below it is considered.
        accepting.sort_by_key(|p| (p.len(), p.to_string()));
        let mut roots: Vec<DatasetPath> = Vec::new();
        for p in accepting {
            if !roots.iter().any(|r| p.has_prefix(r)) {
                roots.push(p.clone());
            }
        }
        roots.sort();
        Some(roots)
    }

    /// The patterns as written, in order.
    pub fn patterns(&self) -> &[(String, bool)] {
        &self.source
    }

    /// Patterns that match none of `existing`: zrepl counts those in a metric, we also warn.
    pub fn unmatched_patterns<'a>(&'a self, existing: &[DatasetPath]) -> Vec<&'a str> {
        self.source
            .iter()
            .filter(|(pat, _)| {
                let Ok(rule) = parse_pattern(pat) else {
                    return false;
                };
                !existing.iter().any(|p| {
                    if rule.subtree {
                        p.has_prefix(&rule.path)
                    } else {
                        *p == rule.path
                    }
                })
            })
            .map(|(p, _)| p.as_str())
            .collect()
    }
}

fn parse_pattern(pattern: &str) -> Result<Rule, FilterError> {
    let (body, subtree) = match pattern.strip_suffix('<') {
        Some(b) => (b, true),
        None => (pattern, false),
    };
    if body.contains('<') {
        return Err(FilterError::MisplacedWildcard {
            pattern: pattern.to_string(),
        });
    }
    if subtree && body.is_empty() {
        return Ok(Rule {
            path: DatasetPath::empty(),
            subtree,
            accept: true,
        });
    }
    let path = DatasetPath::parse(body).map_err(|source| FilterError::InvalidPath {
        pattern: pattern.to_string(),
        source,
    })?;
    Ok(Rule {
        path,
        subtree,
        accept: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> DatasetPath {
        DatasetPath::parse(s).unwrap()
    }

    fn check(rules: &[(&str, bool)], cases: &[(&str, bool)]) {
        let f = DatasetFilter::new(rules.iter().copied()).unwrap();
        for (ds, want) in cases {
            assert_eq!(f.accepts(&p(ds)), *want, "rules {rules:?} dataset {ds}");
        }
    }

    #[test]
    fn roots_cover_every_accepted_dataset() {
        type Case<'a> = (&'a [(&'a str, bool)], Option<&'a [&'a str]>);
        let cases: &[Case] = &[
            (&[("tank<", true)], Some(&["tank"])),
            (&[("tank<", true), ("tank/tmp", false)], Some(&["tank"])),
            (
                &[("tank/a<", true), ("tank/a/b", true), ("tank/c", true)],
                Some(&["tank/a", "tank/c"]),
            ),
            (&[("tank/a/b<", true), ("tank/a", true)], Some(&["tank/a"])),
            (
                &[("tank/ab<", true), ("tank/a", true)],
                Some(&["tank/a", "tank/ab"]),
            ),
            (
                &[("tank<", false), ("pool/x", true), ("other<", true)],
                Some(&["other", "pool/x"]),
            ),
            (&[("tank<", false)], Some(&[])),
            (&[("<", true), ("tank<", false)], None),
            (&[("<", false), ("tank<", true)], Some(&["tank"])),
        ];
        for (rules, want) in cases {
            let f = DatasetFilter::new(rules.iter().copied()).unwrap();
            let got = f.roots();
            let want: Option<Vec<DatasetPath>> = want.map(|w| w.iter().map(|s| p(s)).collect());
            assert_eq!(got, want, "rules {rules:?}");
            // Property: every dataset the filter accepts lies below a root.
            if let Some(roots) = got {
                for ds in [
                    "tank", "tank/a", "tank/a/b", "tank/ab", "tank/c/d", "pool/x", "pool/x/y",
                    "other/z",
                ] {
                    if f.accepts(&p(ds)) {
                        assert!(
                            roots.iter().any(|r| p(ds).has_prefix(r)),
                            "{ds} not covered by {roots:?} ({rules:?})"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn zrepl_docs_example() {
        check(
            &[
                ("tank<", true),
                ("tank/foo<", false),
                ("tank/foo/bar", true),
            ],
            &[
                ("tank/foo/bar/loo", false),
                ("tank/bar", true),
                ("tank/foo/bar", true),
                ("zroot", false),
                ("tank/var/log", true),
                ("tank", true),
                ("tank/foo", false),
            ],
        );
    }

    #[test]
    fn root_wildcard_and_exact_exclude() {
        check(
            &[("<", true), ("tmp", false)],
            &[("tmp", false), ("tmp/x", true), ("pool", true)],
        );
        check(
            &[("<", false), ("a/b<", true)],
            &[("a", false), ("a/b/c", true)],
        );
    }

    #[test]
    fn exact_wins_over_longer_wildcard() {
        check(
            &[("a/b", false), ("a/b<", true)],
            &[("a/b", false), ("a/b/c", true)],
        );
    }

    #[test]
    fn component_wise_prefix() {
        check(
            &[("tank/a<", true)],
            &[("tank/ab", false), ("tank/a", true)],
        );
    }

    #[test]
    fn errors_are_all_reported() {
        let errs = DatasetFilter::new([("a<b", true), ("x/", true), ("a@b", true), ("ok", true)])
            .unwrap_err();
        assert_eq!(errs.len(), 3);
        assert!(matches!(errs[0], FilterError::MisplacedWildcard { .. }));
        let errs = DatasetFilter::new([("a", true), ("a", false)]).unwrap_err();
        assert!(matches!(errs[0], FilterError::Duplicate { .. }));
    }

    #[test]
    fn cli_syntax() {
        let f = DatasetFilter::parse_cli("tank<:ok,tank/tmp:!").unwrap();
        assert!(f.accepts(&p("tank/x")));
        assert!(!f.accepts(&p("tank/tmp")));
        assert!(DatasetFilter::parse_cli("tank").is_err());
        assert!(DatasetFilter::parse_cli("tank:maybe").is_err());
    }

    #[test]
    fn unmatched() {
        let f =
            DatasetFilter::new([("tank<", true), ("nopool<", true), ("tank/x", false)]).unwrap();
        assert_eq!(
            f.unmatched_patterns(&[p("tank"), p("tank/y")]),
            ["nopool<", "tank/x"]
        );
    }
}
