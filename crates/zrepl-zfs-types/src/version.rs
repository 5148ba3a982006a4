//! Filesystem versions: the snapshots and bookmarks of one filesystem.
//!
//! Identity is the GUID (a snapshot and a bookmark made from it share GUID, createtxg and
//! creation); names are mutable and only used for display and command lines. Order is by
//! `createtxg`, with a bookmark sorting before a snapshot of the same txg, as in zrepl.

use std::fmt;

use crate::name::{check_component, NameError};

/// Snapshot or bookmark.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum VersionType {
    Bookmark,
    Snapshot,
}

impl VersionType {
    /// The delimiter between the filesystem and the version name: `@` or `#`.
    pub fn delimiter(self) -> char {
        match self {
            VersionType::Snapshot => '@',
            VersionType::Bookmark => '#',
        }
    }
}

/// One snapshot or bookmark of a filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct FilesystemVersion {
    pub typ: VersionType,
    /// The short name, after `@` or `#`.
    pub name: String,
    pub guid: u64,
    pub createtxg: u64,
    /// Creation time in Unix seconds.
    pub creation: i64,
    /// Number of user holds; `None` for bookmarks (which cannot be held).
    pub userrefs: Option<u64>,
}

impl FilesystemVersion {
    /// `@name` or `#name`.
    pub fn relative_name(&self) -> String {
        format!("{}{}", self.typ.delimiter(), self.name)
    }

    /// `fs@name` or `fs#name`.
    pub fn full_path(&self, fs: &impl fmt::Display) -> String {
        format!("{fs}{}{}", self.typ.delimiter(), self.name)
    }

    /// Same GUID, createtxg and creation: the same point in the filesystem's history.
    pub fn same_identity(&self, other: &FilesystemVersion) -> bool {
        self.guid == other.guid
            && self.createtxg == other.createtxg
            && self.creation == other.creation
    }

    /// Sort key for zrepl's order: createtxg, then bookmarks before snapshots.
    pub fn order_key(&self) -> (u64, VersionType) {
        (self.createtxg, self.typ)
    }
}

/// Parses a relative version name `@snap` or `#book` into its type and short name.
pub fn parse_relative_name(s: &str) -> Result<(VersionType, &str), NameError> {
    let (typ, rest) = if let Some(r) = s.strip_prefix('@') {
        (VersionType::Snapshot, r)
    } else if let Some(r) = s.strip_prefix('#') {
        (VersionType::Bookmark, r)
    } else {
        return Err(NameError::MissingSnapshotDelimiter);
    };
    check_component(rest)?;
    Ok((typ, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(typ: VersionType, txg: u64) -> FilesystemVersion {
        FilesystemVersion {
            typ,
            name: format!("v{txg}"),
            guid: txg * 7,
            createtxg: txg,
            creation: txg as i64,
            userrefs: None,
        }
    }

    #[test]
    fn ordering_puts_bookmark_first_at_equal_txg() {
        let mut vs = [
            v(VersionType::Snapshot, 5),
            v(VersionType::Bookmark, 5),
            v(VersionType::Snapshot, 1),
        ];
        vs.sort_by_key(FilesystemVersion::order_key);
        assert_eq!(vs[0].createtxg, 1);
        assert_eq!(vs[1].typ, VersionType::Bookmark);
        assert_eq!(vs[2].typ, VersionType::Snapshot);
    }

    #[test]
    fn relative_names() {
        assert_eq!(
            parse_relative_name("@a").unwrap(),
            (VersionType::Snapshot, "a")
        );
        assert_eq!(
            parse_relative_name("#b").unwrap(),
            (VersionType::Bookmark, "b")
        );
        assert!(parse_relative_name("a").is_err());
        assert!(parse_relative_name("@a/b").is_err());
        assert!(parse_relative_name("@").is_err());
        let x = v(VersionType::Bookmark, 3);
        assert_eq!(x.full_path(&"pool/fs"), "pool/fs#v3");
    }
}
