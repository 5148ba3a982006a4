//! OpenZFS name rules (`module/zcommon/zfs_namecheck.c`) and the [`DatasetPath`] type.
//!
//! Every name that reaches a `zfs` command line passes one of these checks first. The rules are
//! OpenZFS's, made slightly stricter where zrepl 0.7 is: `%` (temporary clone names) is rejected
//! everywhere because zrepl never creates or replicates such datasets.

use std::fmt;

/// The longest dataset, snapshot or bookmark name OpenZFS accepts (`ZFS_MAX_DATASET_NAME_LEN - 1`).
pub const MAX_NAME_LEN: usize = 255;

/// The longest hold tag OpenZFS accepts (`MAXNAMELEN - 1`), as zrepl's `ZREPL_ZFS_MAX_HOLD_TAG_LEN`.
pub const MAX_HOLD_TAG_LEN: usize = 255;

/// Why a name was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("name is empty")]
    Empty,
    #[error("name is too long ({len} > {max} bytes)")]
    TooLong { len: usize, max: usize },
    #[error("invalid character {ch:?} in name (allowed: a-z A-Z 0-9 - _ . : and space)")]
    InvalidChar { ch: char },
    #[error("empty component (leading, trailing or double '/')")]
    EmptyComponent,
    #[error("component {0:?} is a self or parent reference")]
    SelfOrParentRef(String),
    #[error("multiple '@' or '#' delimiters in name")]
    MultipleDelimiters,
    #[error("'@' or '#' is not allowed here")]
    UnexpectedDelimiter,
    #[error("missing '@' (snapshot) delimiter")]
    MissingSnapshotDelimiter,
    #[error("missing '#' (bookmark) delimiter")]
    MissingBookmarkDelimiter,
    #[error("'/' is not allowed after '@' or '#'")]
    SlashAfterDelimiter,
    #[error("dataset path must not contain any of '@#|<>*' or a tab")]
    ForbiddenPathChar,
}

fn valid_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | ' ')
}

/// Checks one component of a dataset name (between two `/`), or a snapshot or bookmark name
/// (after `@` or `#`). zrepl also uses this for job names and client identities.
pub fn check_component(s: &str) -> Result<(), NameError> {
    if s.is_empty() {
        return Err(NameError::Empty);
    }
    if s.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong {
            len: s.len(),
            max: MAX_NAME_LEN,
        });
    }
    if let Some(ch) = s.chars().find(|c| !valid_char(*c)) {
        return Err(match ch {
            '@' | '#' => NameError::UnexpectedDelimiter,
            '/' => NameError::SlashAfterDelimiter,
            _ => NameError::InvalidChar { ch },
        });
    }
    if s == "." || s == ".." {
        return Err(NameError::SelfOrParentRef(s.to_string()));
    }
    Ok(())
}

/// What kind of entity a full name denotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntityKind {
    Dataset,
    Snapshot,
    Bookmark,
}

/// Checks a full entity name: `pool/a/b`, `pool/a@snap` or `pool/a#book`, as OpenZFS's
/// `entity_namecheck` does, and returns which kind it is.
pub fn check_entity(name: &str) -> Result<EntityKind, NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong {
            len: name.len(),
            max: MAX_NAME_LEN,
        });
    }
    let delims = name.matches(['@', '#']).count();
    if delims > 1 {
        return Err(NameError::MultipleDelimiters);
    }
    let (ds, kind, tail) = match name.find(['@', '#']) {
        None => (name, EntityKind::Dataset, None),
        Some(i) => {
            let kind = if name.as_bytes()[i] == b'@' {
                EntityKind::Snapshot
            } else {
                EntityKind::Bookmark
            };
            (&name[..i], kind, Some(&name[i + 1..]))
        }
    };
    check_dataset_components(ds)?;
    if let Some(tail) = tail {
        if tail.contains('/') {
            return Err(NameError::SlashAfterDelimiter);
        }
        check_component(tail)?;
    }
    Ok(kind)
}

fn check_dataset_components(ds: &str) -> Result<(), NameError> {
    if ds.is_empty() {
        return Err(NameError::EmptyComponent);
    }
    for comp in ds.split('/') {
        if comp.is_empty() {
            return Err(NameError::EmptyComponent);
        }
        check_component(comp)?;
    }
    Ok(())
}

/// Checks a dataset (filesystem or volume) name.
pub fn check_dataset_name(name: &str) -> Result<(), NameError> {
    match check_entity(name)? {
        EntityKind::Dataset => Ok(()),
        _ => Err(NameError::UnexpectedDelimiter),
    }
}

/// Checks a full snapshot name `fs@snap`.
pub fn check_snapshot_name(name: &str) -> Result<(), NameError> {
    match check_entity(name)? {
        EntityKind::Snapshot => Ok(()),
        EntityKind::Dataset => Err(NameError::MissingSnapshotDelimiter),
        EntityKind::Bookmark => Err(NameError::MissingSnapshotDelimiter),
    }
}

/// Checks a full bookmark name `fs#book`.
pub fn check_bookmark_name(name: &str) -> Result<(), NameError> {
    match check_entity(name)? {
        EntityKind::Bookmark => Ok(()),
        EntityKind::Dataset => Err(NameError::MissingBookmarkDelimiter),
        EntityKind::Snapshot => Err(NameError::MissingBookmarkDelimiter),
    }
}

/// Checks a hold tag. OpenZFS accepts any non-empty tag shorter than 256 bytes; we additionally
/// refuse control characters, because tags are printed in tab-separated `zfs holds -H` output.
pub fn check_hold_tag(tag: &str) -> Result<(), NameError> {
    if tag.is_empty() {
        return Err(NameError::Empty);
    }
    if tag.len() > MAX_HOLD_TAG_LEN {
        return Err(NameError::TooLong {
            len: tag.len(),
            max: MAX_HOLD_TAG_LEN,
        });
    }
    if let Some(ch) = tag.chars().find(|c| c.is_control()) {
        return Err(NameError::InvalidChar { ch });
    }
    Ok(())
}

/// A validated dataset path: non-empty components, each a valid ZFS name component.
///
/// The empty path (no components) exists too: it is the root of a filter (`"<"`) and the
/// "relative path" of a receiver's `root_fs` itself; [`DatasetPath::parse`] never returns it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct DatasetPath {
    comps: Vec<String>,
}

impl DatasetPath {
    /// Parses and validates `pool/a/b`.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        if s.contains(['@', '#', '|', '\t', '<', '>', '*']) {
            return Err(NameError::ForbiddenPathChar);
        }
        check_dataset_name(s)?;
        Ok(DatasetPath {
            comps: s.split('/').map(str::to_string).collect(),
        })
    }

    /// The empty path.
    pub fn empty() -> Self {
        DatasetPath::default()
    }

    /// Builds a path from components, validating each.
    pub fn from_components<I, S>(comps: I) -> Result<Self, NameError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let comps: Vec<String> = comps.into_iter().map(Into::into).collect();
        for c in &comps {
            check_component(c)?;
        }
        let p = DatasetPath { comps };
        if p.to_string().len() > MAX_NAME_LEN {
            return Err(NameError::TooLong {
                len: p.to_string().len(),
                max: MAX_NAME_LEN,
            });
        }
        Ok(p)
    }

    pub fn components(&self) -> &[String] {
        &self.comps
    }

    pub fn len(&self) -> usize {
        self.comps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.comps.is_empty()
    }

    /// The pool name (first component), if any.
    pub fn pool(&self) -> Option<&str> {
        self.comps.first().map(String::as_str)
    }

    /// True if `prefix`'s components are a component-wise prefix of ours (equal paths included).
    /// `tank/a` is a prefix of `tank/a/b` but not of `tank/ab`.
    pub fn has_prefix(&self, prefix: &DatasetPath) -> bool {
        self.comps.len() >= prefix.comps.len()
            && self.comps[..prefix.comps.len()] == prefix.comps[..]
    }

    /// Removes `prefix` from the front; `None` if it is not a prefix.
    pub fn strip_prefix(&self, prefix: &DatasetPath) -> Option<DatasetPath> {
        self.has_prefix(prefix).then(|| DatasetPath {
            comps: self.comps[prefix.comps.len()..].to_vec(),
        })
    }

    /// Appends `other`'s components. Fails if the result is longer than ZFS allows.
    pub fn join(&self, other: &DatasetPath) -> Result<DatasetPath, NameError> {
        let mut comps = self.comps.clone();
        comps.extend(other.comps.iter().cloned());
        DatasetPath::from_components(comps)
    }

    /// The parent path, `None` for the empty path and for a pool.
    pub fn parent(&self) -> Option<DatasetPath> {
        (self.comps.len() > 1).then(|| DatasetPath {
            comps: self.comps[..self.comps.len() - 1].to_vec(),
        })
    }

    /// All proper ancestors, top-down: for `a/b/c` that is `a`, `a/b`.
    pub fn ancestors_top_down(&self) -> impl Iterator<Item = DatasetPath> + '_ {
        (1..self.comps.len()).map(|n| DatasetPath {
            comps: self.comps[..n].to_vec(),
        })
    }
}

impl fmt::Display for DatasetPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.comps.join("/"))
    }
}

impl fmt::Debug for DatasetPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatasetPath({:?})", self.to_string())
    }
}

impl std::str::FromStr for DatasetPath {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DatasetPath::parse(s)
    }
}

impl serde::Serialize for DatasetPath {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for DatasetPath {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.is_empty() {
            return Ok(DatasetPath::empty());
        }
        DatasetPath::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entity_table() {
        use EntityKind::*;
        let ok: &[(&str, EntityKind)] = &[
            ("pool", Dataset),
            ("pool/a/b", Dataset),
            ("pool/with space/x", Dataset),
            ("p-1_2.3:4", Dataset),
            ("pool/a@snap", Snapshot),
            ("pool/a@zrepl_20240101_000000_000", Snapshot),
            ("pool/a#zrepl_CURSOR_G_0123456789abcdef_J_job", Bookmark),
            ("pool/a@ leading space", Snapshot),
        ];
        for (n, k) in ok {
            assert_eq!(check_entity(n), Ok(*k), "{n}");
        }
        let bad: &[(&str, NameError)] = &[
            ("", NameError::Empty),
            ("/pool", NameError::EmptyComponent),
            ("pool/", NameError::EmptyComponent),
            ("pool//a", NameError::EmptyComponent),
            ("pool/./a", NameError::SelfOrParentRef(".".into())),
            ("pool/..", NameError::SelfOrParentRef("..".into())),
            ("pool@a@b", NameError::MultipleDelimiters),
            ("pool@a#b", NameError::MultipleDelimiters),
            ("pool@a/b", NameError::SlashAfterDelimiter),
            ("pool@", NameError::Empty),
            ("@snap", NameError::EmptyComponent),
            ("pool/ü", NameError::InvalidChar { ch: 'ü' }),
            ("pool/a%b", NameError::InvalidChar { ch: '%' }),
            ("pool/a\tb", NameError::InvalidChar { ch: '\t' }),
            ("pool/a\nb", NameError::InvalidChar { ch: '\n' }),
        ];
        for (n, e) in bad {
            assert_eq!(check_entity(n).as_ref(), Err(e), "{n:?}");
        }
        let long = format!("p/{}", "a".repeat(254));
        assert!(matches!(
            check_entity(&long),
            Err(NameError::TooLong { len: 256, .. })
        ));
        assert!(check_entity(&format!("p/{}", "a".repeat(253))).is_ok());
    }

    #[test]
    fn kinds() {
        assert!(check_snapshot_name("a/b@c").is_ok());
        assert!(check_snapshot_name("a/b#c").is_err());
        assert!(check_snapshot_name("a/b").is_err());
        assert!(check_bookmark_name("a/b#c").is_ok());
        assert!(check_bookmark_name("a/b@c").is_err());
        assert!(check_dataset_name("a/b@c").is_err());
    }

    #[test]
    fn hold_tags() {
        assert!(check_hold_tag("zrepl_STEP_J_job").is_ok());
        assert!(check_hold_tag("with space").is_ok());
        assert!(check_hold_tag("").is_err());
        assert!(check_hold_tag("a\tb").is_err());
        assert!(check_hold_tag(&"x".repeat(256)).is_err());
        assert!(check_hold_tag(&"x".repeat(255)).is_ok());
    }

    #[test]
    fn dataset_path_ops() {
        let p = DatasetPath::parse("tank/a/b").unwrap();
        let a = DatasetPath::parse("tank/a").unwrap();
        let ab = DatasetPath::parse("tank/ab").unwrap();
        assert!(p.has_prefix(&a));
        assert!(!ab.has_prefix(&a));
        assert!(p.has_prefix(&DatasetPath::empty()));
        assert_eq!(p.strip_prefix(&a).unwrap().to_string(), "b");
        assert_eq!(p.parent().unwrap(), a);
        assert_eq!(
            p.ancestors_top_down()
                .map(|x| x.to_string())
                .collect::<Vec<_>>(),
            ["tank", "tank/a"]
        );
        assert_eq!(
            a.join(&DatasetPath::parse("x/y").unwrap())
                .unwrap()
                .to_string(),
            "tank/a/x/y"
        );
        for bad in ["", "a/", "a<", "a@b", "a|b", "a*", "a/../b"] {
            assert!(DatasetPath::parse(bad).is_err(), "{bad}");
        }
    }
}
