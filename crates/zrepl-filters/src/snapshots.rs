//! Which snapshots a job replicates and prunes (`replication.snapshots`, an extension of zrepl
//! 0.7, which replicates every snapshot of a filesystem).
//!
//! A snapshot is selected when its name (the part after `@`) matches at least one `include`
//! pattern (an empty `include` list selects every name) and no `exclude` pattern. A pattern is a
//! literal prefix or a regular expression (Rust `regex` syntax, unanchored like Go's
//! `regexp.MatchString`, so write `^` to anchor). Pure: names in, a decision out.

use std::fmt;

/// One `include`/`exclude` entry.
#[derive(Debug, Clone)]
pub enum SnapshotPattern {
    /// The name starts with this string.
    Prefix(String),
    /// The regular expression matches somewhere in the name.
    Regex(regex::Regex),
}

impl SnapshotPattern {
    pub fn matches(&self, name: &str) -> bool {
        match self {
            SnapshotPattern::Prefix(p) => name.starts_with(p.as_str()),
            SnapshotPattern::Regex(r) => r.is_match(name),
        }
    }
}

impl PartialEq for SnapshotPattern {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (SnapshotPattern::Prefix(a), SnapshotPattern::Prefix(b)) => a == b,
            (SnapshotPattern::Regex(a), SnapshotPattern::Regex(b)) => a.as_str() == b.as_str(),
            _ => false,
        }
    }
}

impl fmt::Display for SnapshotPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnapshotPattern::Prefix(p) => write!(f, "prefix {p:?}"),
            SnapshotPattern::Regex(r) => write!(f, "regex {:?}", r.as_str()),
        }
    }
}

/// The snapshot selection of a job. The default selects every snapshot (zrepl 0.7).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SnapshotFilter {
    pub include: Vec<SnapshotPattern>,
    pub exclude: Vec<SnapshotPattern>,
}

impl SnapshotFilter {
    /// Selects every snapshot.
    pub fn all() -> Self {
        Self::default()
    }

    /// Selects the snapshots whose name starts with `prefix` (zrepl's fork dsh2dsh's
    /// `replication.prefix`).
    pub fn prefix(prefix: &str) -> Self {
        SnapshotFilter {
            include: vec![SnapshotPattern::Prefix(prefix.to_string())],
            exclude: Vec::new(),
        }
    }

    /// Does this filter select every snapshot?
    pub fn is_all(&self) -> bool {
        self.include.is_empty() && self.exclude.is_empty()
    }

    /// Is the snapshot named `name` (without the filesystem and `@`) selected?
    pub fn selects(&self, name: &str) -> bool {
        (self.include.is_empty() || self.include.iter().any(|p| p.matches(name)))
            && !self.exclude.iter().any(|p| p.matches(name))
    }
}

impl fmt::Display for SnapshotFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_all() {
            return f.write_str("every snapshot");
        }
        let list = |ps: &[SnapshotPattern]| {
            ps.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" or ")
        };
        if self.include.is_empty() {
            f.write_str("every snapshot")?;
        } else {
            write!(f, "snapshots matching {}", list(&self.include))?;
        }
        if !self.exclude.is_empty() {
            write!(f, " except {}", list(&self.exclude))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn re(s: &str) -> SnapshotPattern {
        SnapshotPattern::Regex(regex::Regex::new(s).unwrap())
    }
    fn pre(s: &str) -> SnapshotPattern {
        SnapshotPattern::Prefix(s.into())
    }

    #[test]
    fn selection_table() {
        let proxmox_aware = SnapshotFilter {
            include: vec![pre("zrepl_"), re("^manual-")],
            exclude: vec![re("_tmp$")],
        };
        let only_exclude = SnapshotFilter {
            include: vec![],
            exclude: vec![pre("autosnap_"), re("^__replicate_")],
        };
        let cases: &[(&SnapshotFilter, &str, bool)] = &[
            (&SnapshotFilter::all(), "anything", true),
            (&SnapshotFilter::all(), "", true),
            (&proxmox_aware, "zrepl_20260101_000000_000", true),
            (&proxmox_aware, "manual-before-upgrade", true),
            (&proxmox_aware, "zrepl_x_tmp", false),
            (&proxmox_aware, "vzdump", false),
            (&proxmox_aware, "my-manual-one", false),
            (&proxmox_aware, "Zrepl_x", false),
            (&only_exclude, "zrepl_1", true),
            (&only_exclude, "autosnap_2026-01-01_hourly", false),
            (&only_exclude, "__replicate_x", false),
            (&only_exclude, "x__replicate_", true),
            (&SnapshotFilter::prefix("zrepl_"), "zrepl_1", true),
            (&SnapshotFilter::prefix("zrepl_"), "zrep", false),
            (&SnapshotFilter::prefix(""), "x", true),
        ];
        for (f, name, want) in cases {
            assert_eq!(f.selects(name), *want, "{f} selects {name:?}");
        }
    }

    #[test]
    fn display_says_what_is_selected() {
        assert_eq!(SnapshotFilter::all().to_string(), "every snapshot");
        let f = SnapshotFilter {
            include: vec![pre("zrepl_"), re("^m")],
            exclude: vec![re("_tmp$")],
        };
        assert_eq!(
            f.to_string(),
            r#"snapshots matching prefix "zrepl_" or regex "^m" except regex "_tmp$""#
        );
        assert!(!f.is_all());
        assert_eq!(f, f.clone());
        assert_ne!(f, SnapshotFilter::prefix("zrepl_"));
    }
}
