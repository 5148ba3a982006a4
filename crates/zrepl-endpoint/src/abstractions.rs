//! Listing and releasing zrepl's holds and bookmarks (`zrepl zfs-abstraction`), on the local ZFS.

use std::collections::BTreeSet;
use std::fmt;

use serde::Serialize;
use zrepl_filters::DatasetFilter;
use zrepl_zfs::{DatasetPath, FilesystemVersion, VersionPath, VersionType, Zfs, ZfsError};
use zrepl_zfs_types::abstraction::{
    parse_cursor_bookmark, parse_last_received_hold_tag, parse_step_hold_tag, AbstractionKey,
    AbstractionType,
};

/// One hold or bookmark zrepl owns. JSON field names are zrepl's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Abstraction {
    #[serde(rename = "Type")]
    pub typ: AbstractionType,
    #[serde(rename = "FS")]
    pub fs: String,
    /// The hold tag, or the bookmark's short name.
    #[serde(rename = "Name")]
    pub name: String,
    /// `fs@snap` (the held snapshot) or `fs#bookmark`.
    #[serde(rename = "FullPath")]
    pub full_path: String,
    #[serde(rename = "JobID")]
    pub job: Option<String>,
    #[serde(rename = "CreateTXG")]
    pub createtxg: u64,
    #[serde(rename = "FilesystemVersion")]
    pub version: FilesystemVersion,
    #[serde(rename = "String")]
    pub string: String,
}

impl fmt::Display for Abstraction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.string)
    }
}

fn render(typ: AbstractionType, name: &str, full_path: &str) -> String {
    if typ.is_hold() {
        format!("{typ} {name:?} on {full_path}")
    } else {
        format!("{typ} {full_path}")
    }
}

impl Abstraction {
    fn new(
        typ: AbstractionType,
        fs: &DatasetPath,
        name: &str,
        job: Option<&str>,
        v: &FilesystemVersion,
    ) -> Self {
        let full_path = v.full_path(fs);
        Abstraction {
            typ,
            fs: fs.to_string(),
            name: name.to_string(),
            string: render(typ, name, &full_path),
            full_path,
            job: job.map(str::to_string),
            createtxg: v.createtxg,
            version: v.clone(),
        }
    }

    fn key(&self) -> AbstractionKey<'_> {
        AbstractionKey {
            typ: self.typ,
            fs: &self.fs,
            job: self.job.as_deref(),
            createtxg: self.createtxg,
        }
    }
}

/// What to list.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// Which filesystems; `None` = all.
    pub filesystems: Option<DatasetFilter>,
    pub job: Option<String>,
    /// Which types; empty = all.
    pub types: Vec<AbstractionType>,
}

impl Query {
    fn wants(&self, a: &Abstraction) -> bool {
        (self.types.is_empty() || self.types.contains(&a.typ))
            && self
                .job
                .as_ref()
                .is_none_or(|j| a.job.as_deref() == Some(j.as_str()))
    }
}

/// Lists the abstractions matching `query`: one recursive listing per pool, one batched
/// `zfs holds` for all held snapshots. Per-filesystem problems are returned next to the result.
pub async fn list(zfs: &Zfs, query: &Query) -> Result<(Vec<Abstraction>, Vec<String>), ZfsError> {
    let all = zfs.list_filesystems(None).await?;
    let fss: Vec<DatasetPath> = all
        .into_iter()
        .filter(|p| query.filesystems.as_ref().is_none_or(|f| f.accepts(p)))
        .collect();
    let wanted: BTreeSet<&DatasetPath> = fss.iter().collect();
    let pools: BTreeSet<&str> = fss.iter().filter_map(|p| p.pool()).collect();
    let mut out = Vec::new();
    let mut errors = Vec::new();
    let mut held: Vec<(DatasetPath, FilesystemVersion)> = Vec::new();
    for pool in pools {
        let root = match DatasetPath::parse(pool) {
            Ok(r) => r,
            Err(e) => {
                errors.push(format!("{pool}: {e}"));
                continue;
            }
        };
        let listing = match zfs.list_subtree_versions(&root).await {
            Ok(l) => l,
            Err(e) => {
                errors.push(format!("cannot list {pool}: {e}"));
                continue;
            }
        };
        for (fs, versions) in listing.iter().filter(|(fs, _)| wanted.contains(fs)) {
            for v in versions {
                match v.typ {
                    VersionType::Bookmark => {
                        if let Some((typ, guid, job)) = parse_cursor_bookmark(&v.name) {
                            // A bookmark whose name lies about its guid is not ours (zrepl ignores it).
                            if guid.is_some_and(|g| g != v.guid) {
                                continue;
                            }
                            let a = Abstraction::new(typ, fs, &v.name, job, v);
                            if query.wants(&a) {
                                out.push(a);
                            }
                        }
                    }
                    VersionType::Snapshot if v.userrefs.unwrap_or(0) > 0 => {
                        held.push((fs.clone(), v.clone()))
                    }
                    VersionType::Snapshot => {}
                }
            }
        }
    }
    if !held.is_empty() {
        let paths: Vec<VersionPath> = held
            .iter()
            .filter_map(|(fs, v)| VersionPath::of(fs, v).ok())
            .collect();
        match zfs.holds(&paths).await {
            Ok(tags) => {
                for (fs, v) in &held {
                    let Ok(p) = VersionPath::of(fs, v) else {
                        continue;
                    };
                    for tag in tags.get(&p).into_iter().flatten() {
                        let parsed = parse_step_hold_tag(tag)
                            .map(|j| (AbstractionType::StepHold, j))
                            .or_else(|| {
                                parse_last_received_hold_tag(tag)
                                    .map(|j| (AbstractionType::LastReceivedHold, j))
                            });
                        if let Some((typ, job)) = parsed {
                            let a = Abstraction::new(typ, fs, tag, Some(job), v);
                            if query.wants(&a) {
                                out.push(a);
                            }
                        }
                    }
                }
            }
            Err(e) => errors.push(format!("cannot list holds: {e}")),
        }
    }
    out.sort_by(|a, b| {
        (&a.fs, a.createtxg, &a.full_path, &a.name).cmp(&(
            &b.fs,
            b.createtxg,
            &b.full_path,
            &b.name,
        ))
    });
    Ok((out, errors))
}

/// The stale ones among `items` (see `zrepl_zfs_types::abstraction::stale`).
pub fn stale(items: &[Abstraction]) -> Vec<Abstraction> {
    let keys: Vec<AbstractionKey<'_>> = items.iter().map(Abstraction::key).collect();
    zrepl_zfs_types::abstraction::stale(&keys)
        .into_iter()
        .map(|i| items[i].clone())
        .collect()
}

/// Releases a hold or destroys a bookmark. Idempotent.
pub async fn release(zfs: &Zfs, a: &Abstraction) -> Result<(), ZfsError> {
    let fs = DatasetPath::parse(&a.fs).map_err(|e| ZfsError::InvalidArgument(e.to_string()))?;
    let v = VersionPath::of(&fs, &a.version)?;
    if a.typ.is_hold() {
        zfs.release(&a.name, std::slice::from_ref(&v)).await
    } else {
        zfs.destroy_version_idempotent(&v).await
    }
}

/// `zrepl zfs-abstraction create step`: a step hold of `job` on `snapshot`.
pub async fn create_step_hold(
    zfs: &Zfs,
    snapshot: &VersionPath,
    job: &str,
) -> Result<Abstraction, ZfsError> {
    if !snapshot.is_snapshot() {
        return Err(ZfsError::InvalidArgument(format!(
            "{snapshot} is not a snapshot"
        )));
    }
    let tag = zrepl_zfs_types::abstraction::step_hold_tag(job);
    zfs.hold(&tag, std::slice::from_ref(snapshot)).await?;
    let v = zfs.get_version(snapshot).await?;
    Ok(Abstraction::new(
        AbstractionType::StepHold,
        snapshot.fs(),
        &tag,
        Some(job),
        &v,
    ))
}
