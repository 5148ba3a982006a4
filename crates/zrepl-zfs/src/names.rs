//! Validated names as they appear on `zfs` command lines.
//!
//! [`DatasetPath`] (from zrepl-zfs-types) covers filesystems and volumes. [`VersionPath`] adds the
//! full name of a snapshot or bookmark (`fs@snap`, `fs#book`). Property names and values, hold
//! tags and resume tokens are checked by the `check_*` functions here. Every operation of
//! [`crate::Zfs`] runs these checks before it builds an argv, so an invalid name never reaches a
//! command line (and, for example, a name starting with `-` can never be mistaken for an option).

use std::fmt;

use zrepl_zfs_types::name::{check_component, check_entity, check_hold_tag};
use zrepl_zfs_types::{DatasetPath, FilesystemVersion, NameError, VersionType};

use crate::error::ZfsError;

/// The full name of a snapshot or bookmark, validated with OpenZFS's rules.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VersionPath {
    fs: DatasetPath,
    typ: VersionType,
    name: String,
}

impl VersionPath {
    /// `fs@name` or `fs#name`.
    pub fn new(fs: &DatasetPath, typ: VersionType, name: &str) -> Result<Self, ZfsError> {
        let full = format!("{fs}{}{name}", typ.delimiter());
        if fs.is_empty() {
            return Err(ZfsError::invalid_name(full, NameError::EmptyComponent));
        }
        check_component(name).map_err(|e| ZfsError::invalid_name(full.clone(), e))?;
        // The whole name has a length limit too.
        check_entity(&full).map_err(|e| ZfsError::invalid_name(full.clone(), e))?;
        no_leading_dash(&full)?;
        Ok(VersionPath {
            fs: fs.clone(),
            typ,
            name: name.to_string(),
        })
    }

    /// `fs@name`.
    pub fn snapshot(fs: &DatasetPath, name: &str) -> Result<Self, ZfsError> {
        Self::new(fs, VersionType::Snapshot, name)
    }

    /// `fs#name`.
    pub fn bookmark(fs: &DatasetPath, name: &str) -> Result<Self, ZfsError> {
        Self::new(fs, VersionType::Bookmark, name)
    }

    /// The full name of version `v` of filesystem `fs`.
    pub fn of(fs: &DatasetPath, v: &FilesystemVersion) -> Result<Self, ZfsError> {
        Self::new(fs, v.typ, &v.name)
    }

    /// Parses `fs@name` or `fs#name`.
    pub fn parse(full: &str) -> Result<Self, ZfsError> {
        let i = full
            .find(['@', '#'])
            .ok_or_else(|| ZfsError::invalid_name(full, NameError::MissingSnapshotDelimiter))?;
        let typ = if full.as_bytes()[i] == b'@' {
            VersionType::Snapshot
        } else {
            VersionType::Bookmark
        };
        let fs = DatasetPath::parse(&full[..i]).map_err(|e| ZfsError::invalid_name(full, e))?;
        Self::new(&fs, typ, &full[i + 1..])
    }

    pub fn fs(&self) -> &DatasetPath {
        &self.fs
    }

    pub fn typ(&self) -> VersionType {
        self.typ
    }

    /// The short name, after `@` or `#`.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn is_snapshot(&self) -> bool {
        self.typ == VersionType::Snapshot
    }

    pub fn is_bookmark(&self) -> bool {
        self.typ == VersionType::Bookmark
    }
}

impl fmt::Display for VersionPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{}", self.fs, self.typ.delimiter(), self.name)
    }
}

impl fmt::Debug for VersionPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VersionPath({:?})", self.to_string())
    }
}

/// Renders a dataset path for a command line, refusing the empty path (which would turn
/// `zfs list -r <root>` into "all pools" and `zfs destroy <fs>` into a usage error).
pub(crate) fn dataset_arg(fs: &DatasetPath) -> Result<String, ZfsError> {
    if fs.is_empty() {
        return Err(ZfsError::invalid_name("", NameError::Empty));
    }
    let s = fs.to_string();
    no_leading_dash(&s)?;
    Ok(s)
}

/// A name on a `zfs` command line never starts with `-` (it would be read as an option).
/// OpenZFS's pool names begin with a letter, so no real dataset is refused here; relative paths
/// (below a receiver's root) may begin with any valid character and are not checked.
fn no_leading_dash(full: &str) -> Result<(), ZfsError> {
    if full.starts_with('-') {
        return Err(ZfsError::InvalidArgument(format!(
            "{full:?} must not start with '-' (it would be read as an option)"
        )));
    }
    Ok(())
}

/// Validates a hold tag (OpenZFS: non-empty, < 256 bytes; we also refuse control characters).
pub(crate) fn check_tag(tag: &str) -> Result<(), ZfsError> {
    check_hold_tag(tag).map_err(|e| ZfsError::invalid_name(tag, e))?;
    if tag.starts_with('-') {
        // `zfs hold -r` would parse it as an option.
        return Err(ZfsError::InvalidArgument(format!(
            "hold tag {tag:?} must not start with '-'"
        )));
    }
    Ok(())
}

/// The longest property name OpenZFS accepts (`ZAP_MAXNAMELEN - 1`).
const MAX_PROPERTY_NAME_LEN: usize = 255;
/// The longest user property value OpenZFS accepts (`ZAP_MAXVALUELEN`).
const MAX_PROPERTY_VALUE_LEN: usize = 8192;

/// Validates a property name: native (`mountpoint`, `feature@x`) or user (`module:prop`).
/// The allowed characters are OpenZFS's for user properties plus `@` for `feature@`/`userquota@`.
pub fn check_property_name(name: &str) -> Result<(), ZfsError> {
    let bad = |why: &str| ZfsError::InvalidArgument(format!("property name {name:?}: {why}"));
    if name.is_empty() {
        return Err(bad("empty"));
    }
    if name.len() > MAX_PROPERTY_NAME_LEN {
        return Err(bad("too long"));
    }
    if name.starts_with('-') {
        return Err(bad("must not start with '-'"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, ':' | '.' | '_' | '-' | '@')))
    {
        return Err(bad(&format!("invalid character {c:?}")));
    }
    Ok(())
}

/// Validates a property value to be set. Tabs and newlines are refused because they would make
/// the tab-separated `zfs get -H` output ambiguous; other control characters for good measure.
pub fn check_property_value(value: &str) -> Result<(), ZfsError> {
    if value.len() > MAX_PROPERTY_VALUE_LEN {
        return Err(ZfsError::InvalidArgument(format!(
            "property value is too long ({} > {MAX_PROPERTY_VALUE_LEN} bytes)",
            value.len()
        )));
    }
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        return Err(ZfsError::InvalidArgument(format!(
            "property value {value:?} contains control character {c:?}"
        )));
    }
    Ok(())
}

/// Validates a `receive_resume_token` before it goes onto `zfs send -t`: OpenZFS tokens are
/// `<version>-<hex>-<hex>-<hex>`; anything else (in particular a leading `-`) is refused.
pub(crate) fn check_resume_token(token: &str) -> Result<(), ZfsError> {
    let ok = !token.is_empty()
        && token.len() <= 1 << 20
        && token.as_bytes()[0].is_ascii_digit()
        && token.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ZfsError::InvalidArgument(format!(
            "malformed resume token {:?}",
            token.chars().take(64).collect::<String>()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> DatasetPath {
        DatasetPath::parse(s).unwrap()
    }

    #[test]
    fn version_paths() {
        let v = VersionPath::snapshot(&p("pool/with space"), "snap 1").unwrap();
        assert_eq!(v.to_string(), "pool/with space@snap 1");
        let b = VersionPath::parse("pool/a#bm").unwrap();
        assert!(b.is_bookmark());
        assert_eq!(b.fs(), &p("pool/a"));
        assert_eq!(b.name(), "bm");
        for bad in [
            "pool/a@",
            "pool/a@b@c",
            "pool/a@x%y",
            "pool/a@ü",
            "pool/a@x\ny",
            "pool/a",
        ] {
            assert!(VersionPath::parse(bad).is_err(), "{bad:?}");
        }
        assert!(VersionPath::snapshot(&DatasetPath::empty(), "x").is_err());
        let long = "a".repeat(250);
        assert!(VersionPath::snapshot(&p("pool/abc"), &long).is_err());
        // Nothing that goes on a command line may look like an option; relative paths may.
        for dash in ["-o/x@s", "-r@s", "-F#b"] {
            let e = VersionPath::parse(dash).unwrap_err().to_string();
            assert!(e.contains("must not start with '-'"), "{dash}: {e}");
        }
        assert!(dataset_arg(&p("-R/x")).is_err());
        assert!(dataset_arg(&p("pool/-x")).is_ok());
        assert!(DatasetPath::parse("-relative/x").is_ok());
    }

    #[test]
    fn properties_and_tags() {
        assert!(check_property_name("zrepl:placeholder").is_ok());
        assert!(check_property_name("feature@extensible_dataset").is_ok());
        assert!(check_property_name("-o").is_err());
        assert!(check_property_name("a=b").is_err());
        assert!(check_property_name("").is_err());
        assert!(check_property_value("on").is_ok());
        assert!(check_property_value("a\tb").is_err());
        assert!(check_property_value("a\nb").is_err());
        assert!(check_tag("zrepl_STEP_J_job with space").is_ok());
        assert!(check_tag("-r").is_err());
        assert!(check_tag("a\u{7}").is_err());
    }

    #[test]
    fn resume_tokens() {
        assert!(check_resume_token("1-e604ea4bf-e0-789c63a2").is_ok());
        assert!(check_resume_token("-t").is_err());
        assert!(check_resume_token("").is_err());
        assert!(check_resume_token("1-abc xyz").is_err());
    }
}
