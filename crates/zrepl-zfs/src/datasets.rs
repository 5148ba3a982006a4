//! Listing datasets and versions, properties, placeholders, create, rollback.

use std::collections::BTreeMap;
use std::fmt;

use sha2::{Digest, Sha512_256};
use zrepl_zfs_types::{DatasetPath, FilesystemVersion};

use crate::command::{args, Output, Zfs};
use crate::error::ZfsError;
use crate::names::{check_property_name, check_property_value, dataset_arg, VersionPath};
use crate::parse::{
    dataset_does_not_exist_path, is_dataset_does_not_exist, is_recv_abort_nothing_to_abort,
    parse_dataset_names, parse_get, parse_versions_listing, ParseError, Properties, PropertySource,
    PropertyValue, VersionsByFilesystem,
};

/// The user property marking placeholder filesystems.
pub const PLACEHOLDER_PROPERTY: &str = "zrepl:placeholder";

/// What `zfs get`/`zfs set` operate on: a dataset or a snapshot/bookmark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Dataset(DatasetPath),
    Version(VersionPath),
}

impl Target {
    fn arg(&self) -> Result<String, ZfsError> {
        match self {
            Target::Dataset(d) => dataset_arg(d),
            Target::Version(v) => Ok(v.to_string()),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Dataset(d) => d.fmt(f),
            Target::Version(v) => v.fmt(f),
        }
    }
}

impl From<&DatasetPath> for Target {
    fn from(d: &DatasetPath) -> Self {
        Target::Dataset(d.clone())
    }
}

impl From<&VersionPath> for Target {
    fn from(v: &VersionPath) -> Self {
        Target::Version(v.clone())
    }
}

/// Which versions [`Zfs::list_versions`] lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionTypes {
    All,
    Snapshots,
    Bookmarks,
}

impl VersionTypes {
    fn arg(self) -> &'static str {
        // zrepl passes the sorted, comma-joined type names.
        match self {
            VersionTypes::All => "bookmark,snapshot",
            VersionTypes::Snapshots => "snapshot",
            VersionTypes::Bookmarks => "bookmark",
        }
    }
}

/// Placeholder state of a filesystem (§3.6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaceholderState {
    pub exists: bool,
    /// Source `local` and value `on` or the legacy `hex(sha512_256(path))`.
    pub is_placeholder: bool,
    /// The property value if its source is `local`.
    pub raw_local_value: Option<String>,
}

impl PlaceholderState {
    /// A dataset that does not exist.
    pub const MISSING: PlaceholderState = PlaceholderState {
        exists: false,
        is_placeholder: false,
        raw_local_value: None,
    };

    /// The state of an existing `fs` from its properties (the placeholder property among them).
    fn of(fs: &DatasetPath, mut p: Properties) -> PlaceholderState {
        let local = p
            .remove(PLACEHOLDER_PROPERTY)
            .filter(|v| v.source == PropertySource::Local)
            .map(|v| v.value);
        PlaceholderState {
            exists: true,
            is_placeholder: local
                .as_deref()
                .is_some_and(|l| is_placeholder_value(fs, l)),
            raw_local_value: local,
        }
    }
}

/// Encryption of a new placeholder (`recv.placeholder.encryption`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlaceholderEncryption {
    /// No `-o encryption=...`: inherit from the parent.
    Inherit,
    /// `-o encryption=off`.
    Off,
}

/// zrepl 0.0.x marked placeholders with `hex(sha512_256(<dataset path>))`.
pub fn legacy_placeholder_value(fs: &DatasetPath) -> String {
    let digest = Sha512_256::digest(fs.to_string().as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The `zrepl:placeholder` value of a placeholder whose replacement by a received filesystem
/// has started (zrepl-rs only; zrepl 0.7 reads it as "not a placeholder"). Until the receive
/// succeeded (then the value becomes `off`), such a filesystem without snapshots and without a
/// partial receive is still a placeholder: a crash between marking and receiving must never
/// leave an empty filesystem that planning takes for real data.
pub const PLACEHOLDER_REPLACING: &str = "replacing";

/// Whether a `zrepl:placeholder` value whose source is `local` marks a placeholder.
pub fn is_placeholder_value(fs: &DatasetPath, local_value: &str) -> bool {
    local_value == "on" || local_value == legacy_placeholder_value(fs)
}

fn unexpected(out: &Output, e: ParseError) -> ZfsError {
    ZfsError::UnexpectedOutput {
        argv: out.argv.clone(),
        reason: e.to_string(),
        output: e.line,
    }
}

/// The error of a failed command on `path`: `DatasetDoesNotExist` if stderr says so.
pub(crate) fn classify_not_exist(out: Output, path: &str) -> ZfsError {
    if is_dataset_does_not_exist(&out.stderr, path) {
        ZfsError::DatasetDoesNotExist {
            path: path.to_string(),
        }
    } else {
        out.into_error()
    }
}

/// How a `zfs get` asks for `props`. A user property's (`module:name`) value is whatever
/// anyone who can send us a stream set (received, or inherited from a received value), and
/// `zfs get -H` prints tabs and newlines in values as they are, so such a value could forge
/// rows (another dataset, another source). With a user property in the request, `zfs get`
/// prints only local values, unset ones and read-only properties (`-s local,none`): a user
/// property that is received or inherited is absent from the result (an unset one is `-` with
/// source none), and `name` is asked too, so that every dataset still has a row. Settable native properties must then not be asked together with
/// user properties (they would be missing unless set locally, which is refused as unexpected
/// output).
struct GetPlan<'a> {
    /// `-s local,none`, or nothing.
    sources: Vec<String>,
    /// What the command asks for.
    asked: Vec<&'a str>,
    /// The user properties among `props`: optional in the result.
    optional: Vec<&'a str>,
    /// `name` was added and is removed from the result.
    drop_name: bool,
}

impl<'a> GetPlan<'a> {
    fn new(props: &[&'a str]) -> GetPlan<'a> {
        let optional: Vec<&str> = props.iter().copied().filter(|p| p.contains(':')).collect();
        let mut asked = props.to_vec();
        let mut drop_name = false;
        let sources = if optional.is_empty() {
            Vec::new()
        } else {
            if !asked.contains(&"name") {
                asked.insert(0, "name");
                drop_name = true;
            }
            args!["-s", "local,none"]
        };
        GetPlan {
            sources,
            asked,
            optional,
            drop_name,
        }
    }

    /// Removes the added `name` and checks that every property that is not optional is there;
    /// returns what is missing.
    fn finish(&self, p: &mut Properties) -> Vec<&'a str> {
        if self.drop_name {
            p.remove("name");
        }
        self.asked
            .iter()
            .copied()
            .filter(|k| !(self.drop_name && *k == "name"))
            .filter(|k| !self.optional.contains(k) && !p.contains_key(*k))
            .collect()
    }

    /// Properties in `p` that were not asked for.
    fn extra(&self, p: &Properties) -> Vec<String> {
        p.keys()
            .filter(|k| !self.asked.contains(&k.as_str()))
            .cloned()
            .collect()
    }
}

impl Zfs {
    /// All filesystems and volumes of all pools, or of the subtree at `root` (root included):
    /// `zfs list -H -p -o name -r -t filesystem,volume [root]`.
    pub async fn list_filesystems(
        &self,
        root: Option<&DatasetPath>,
    ) -> Result<Vec<DatasetPath>, ZfsError> {
        let mut a = args![
            "list",
            "-H",
            "-p",
            "-o",
            "name",
            "-r",
            "-t",
            "filesystem,volume"
        ];
        let root_arg = root.map(dataset_arg).transpose()?;
        if let Some(r) = &root_arg {
            a.extend(args!["--", r.clone()]);
        }
        let out = self.zfs(&a).await?;
        if !out.success() {
            return Err(match &root_arg {
                Some(r) => classify_not_exist(out, r),
                None => out.into_error(),
            });
        }
        parse_dataset_names(&out.stdout).map_err(|e| unexpected(&out, e))
    }

    /// Every filesystem and volume of the subtree at `root` (root included) with all its
    /// snapshots and bookmarks, in ONE command:
    /// `zfs list -H -p -o name,guid,createtxg,creation,userrefs -r
    ///  -t filesystem,volume,snapshot,bookmark -s createtxg <root>`.
    pub async fn list_subtree_versions(
        &self,
        root: &DatasetPath,
    ) -> Result<VersionsByFilesystem, ZfsError> {
        let r = dataset_arg(root)?;
        let out = self
            .zfs(&args![
                "list",
                "-H",
                "-p",
                "-o",
                "name,guid,createtxg,creation,userrefs",
                "-r",
                "-t",
                "filesystem,volume,snapshot,bookmark",
                "-s",
                "createtxg",
                "--",
                r.clone()
            ])
            .await?;
        if !out.success() {
            return Err(classify_not_exist(out, &r));
        }
        let map = parse_versions_listing(&out.stdout).map_err(|e| unexpected(&out, e))?;
        if let Some(bad) = map.keys().find(|k| !k.has_prefix(root)) {
            return Err(ZfsError::UnexpectedOutput {
                argv: out.argv,
                reason: format!("dataset {bad} is not inside {root}"),
                output: String::new(),
            });
        }
        Ok(map)
    }

    /// The snapshots and bookmarks of each of `fss` (not of their children), listed together:
    /// `zfs list -H -p -o name,guid,createtxg,creation,userrefs -d 1 -t snapshot,bookmark -s
    /// createtxg -- <fs>...` (split only at the argv limit). A filesystem that does not exist
    /// (any more; `zfs list` says so for each) is missing from the result instead of failing
    /// the others; every other one is in it, with no versions if it has none.
    pub async fn list_versions_of(
        &self,
        fss: &[DatasetPath],
    ) -> Result<VersionsByFilesystem, ZfsError> {
        let mut names = fss
            .iter()
            .map(dataset_arg)
            .collect::<Result<Vec<String>, ZfsError>>()?;
        names.sort();
        names.dedup();
        let mut res = VersionsByFilesystem::new();
        if names.is_empty() {
            return Ok(res);
        }
        let prefix = args![
            "list",
            "-H",
            "-p",
            "-o",
            "name,guid,createtxg,creation,userrefs",
            "-d",
            "1",
            "-t",
            "snapshot,bookmark",
            "-s",
            "createtxg",
            "--"
        ];
        self.run_batched(&prefix, &names, |out, batch| {
            // A failure is accepted only as zfs's exit code 1 with nothing on stderr but
            // "does not exist" of requested filesystems (not a kill, not a truncated listing).
            let mut missing = std::collections::HashSet::new();
            if !out.success() {
                for l in out.stderr.lines().filter(|l| !l.trim().is_empty()) {
                    match dataset_does_not_exist_path(l).filter(|p| batch.iter().any(|b| b == p)) {
                        Some(p) => missing.insert(p.to_string()),
                        None => return Err(out.into_error()),
                    };
                }
                if missing.is_empty() || out.status.code() != Some(1) {
                    return Err(out.into_error());
                }
            }
            let mut map = parse_versions_listing(&out.stdout).map_err(|e| unexpected(&out, e))?;
            for name in batch.iter().filter(|b| !missing.contains(*b)) {
                let fs = DatasetPath::parse(name).map_err(|e| ZfsError::invalid_name(name, e))?;
                let vs = map.remove(&fs).unwrap_or_default();
                res.insert(fs, vs);
            }
            if let Some(other) = map.keys().next() {
                return Err(ZfsError::UnexpectedOutput {
                    argv: out.argv.clone(),
                    reason: format!("listed versions of {other}, which was not asked for"),
                    output: String::new(),
                });
            }
            Ok(())
        })
        .await?;
        Ok(res)
    }

    /// Every filesystem and volume of the subtree at `root` with the properties `props`, and
    /// all their snapshots and bookmarks, in ONE command:
    /// `zfs get -Hp -o name,property,value,source -r -t filesystem,volume,snapshot,bookmark
    /// guid,createtxg,creation,userrefs,<props> <root>`. Where datasets are not mounted, each
    /// listing opens every one of them, so one listing instead of two halves the cost.
    pub async fn list_subtree_with_properties(
        &self,
        root: &DatasetPath,
        props: &[&str],
    ) -> Result<(BTreeMap<DatasetPath, Properties>, VersionsByFilesystem), ZfsError> {
        let r = dataset_arg(root)?;
        for p in props {
            check_property_name(p)?;
        }
        let mut wanted = vec!["guid", "createtxg", "creation", "userrefs"];
        wanted.extend(
            props
                .iter()
                .copied()
                .filter(|p| !matches!(*p, "guid" | "createtxg" | "creation" | "userrefs")),
        );
        // `guid` and the others are read-only: every dataset keeps its rows with
        // `-s local,none`.
        let plan = GetPlan::new(&wanted);
        let mut a = args!["get", "-Hp", "-o", "name,property,value,source", "-r"];
        a.extend(plan.sources.iter().cloned());
        a.extend(args![
            "-t",
            "filesystem,volume,snapshot,bookmark",
            "--",
            wanted.join(","),
            r.clone()
        ]);
        let out = self.zfs(&a).await?;
        if !out.success() {
            return Err(classify_not_exist(out, &r));
        }
        let rows = parse_get(&out.stdout).map_err(|e| unexpected(&out, e))?;
        let (p, v) =
            crate::parse::split_get_listing(rows, props).map_err(|e| unexpected(&out, e))?;
        if let Some(bad) = v.keys().find(|k| !k.has_prefix(root)) {
            return Err(ZfsError::UnexpectedOutput {
                argv: out.argv,
                reason: format!("dataset {bad} is not inside {root}"),
                output: String::new(),
            });
        }
        Ok((p, v))
    }

    /// Versions of one filesystem, ordered by createtxg (bookmarks first at equal txg):
    /// `zfs list -H -p -o name,guid,createtxg,creation,userrefs -r -d 1 -t <types> -s createtxg
    /// <fs>`. A filesystem without versions gives an empty list.
    pub async fn list_versions(
        &self,
        fs: &DatasetPath,
        types: VersionTypes,
    ) -> Result<Vec<FilesystemVersion>, ZfsError> {
        let f = dataset_arg(fs)?;
        let out = self
            .zfs(&args![
                "list",
                "-H",
                "-p",
                "-o",
                "name,guid,createtxg,creation,userrefs",
                "-r",
                "-d",
                "1",
                "-t",
                types.arg(),
                "-s",
                "createtxg",
                "--",
                f.clone()
            ])
            .await?;
        if !out.success() {
            return Err(classify_not_exist(out, &f));
        }
        let mut map = parse_versions_listing(&out.stdout).map_err(|e| unexpected(&out, e))?;
        let versions = map.remove(fs).unwrap_or_default();
        if let Some(other) = map.keys().next() {
            return Err(ZfsError::UnexpectedOutput {
                argv: out.argv,
                reason: format!("listed versions of {other}, not of {fs}"),
                output: String::new(),
            });
        }
        Ok(versions)
    }

    /// `zfs get -Hp -o name,property,value,source <props> <target>`; every requested property is
    /// returned (unset user properties have value `-` and source [`PropertySource::None`]).
    pub async fn get_properties(
        &self,
        target: impl Into<Target>,
        props: &[&str],
    ) -> Result<Properties, ZfsError> {
        let target = target.into();
        let t = target.arg()?;
        if props.is_empty() {
            return Err(ZfsError::InvalidArgument("no properties requested".into()));
        }
        for p in props {
            check_property_name(p)?;
        }
        let plan = GetPlan::new(props);
        let mut a = args!["get", "-Hp", "-o", "name,property,value,source"];
        a.extend(plan.sources.iter().cloned());
        a.extend(args!["--", plan.asked.join(","), t.clone()]);
        let out = self.zfs(&a).await?;
        if !out.success() {
            return Err(classify_not_exist(out, &t));
        }
        let mut by_name = parse_get(&out.stdout).map_err(|e| unexpected(&out, e))?;
        let mut got = by_name.remove(&t).unwrap_or_default();
        let extra = plan.extra(&got);
        let missing = plan.finish(&mut got);
        if !by_name.is_empty() || !missing.is_empty() || !extra.is_empty() {
            return Err(ZfsError::UnexpectedOutput {
                reason: format!(
                    "expected properties {props:?} of {t}, missing {missing:?}, extra {extra:?}, extra datasets {:?}",
                    by_name.keys().collect::<Vec<_>>()
                ),
                output: out.stdout.clone(),
                argv: out.argv,
            });
        }
        Ok(got)
    }

    /// One property value with its source.
    pub async fn get_property(
        &self,
        target: impl Into<Target>,
        prop: &str,
    ) -> Result<PropertyValue, ZfsError> {
        let mut m = self.get_properties(target, &[prop]).await?;
        m.remove(prop)
            .ok_or_else(|| ZfsError::InvalidArgument(format!("property {prop} missing")))
    }

    /// `zfs get -Hp -o name,property,value,source -r [-d depth] -t filesystem,volume <props>
    /// <root>`: properties of every filesystem and volume of a subtree in one command.
    pub async fn get_properties_recursive(
        &self,
        root: &DatasetPath,
        depth: Option<u32>,
        props: &[&str],
    ) -> Result<BTreeMap<DatasetPath, Properties>, ZfsError> {
        let r = dataset_arg(root)?;
        if props.is_empty() {
            return Err(ZfsError::InvalidArgument("no properties requested".into()));
        }
        for p in props {
            check_property_name(p)?;
        }
        let plan = GetPlan::new(props);
        let mut a = args!["get", "-Hp", "-o", "name,property,value,source", "-r"];
        a.extend(plan.sources.iter().cloned());
        if let Some(d) = depth {
            a.extend(args!["-d", d.to_string()]);
        }
        a.extend(args![
            "-t",
            "filesystem,volume",
            "--",
            plan.asked.join(","),
            r.clone()
        ]);
        let out = self.zfs(&a).await?;
        if !out.success() {
            return Err(classify_not_exist(out, &r));
        }
        let by_name = parse_get(&out.stdout).map_err(|e| unexpected(&out, e))?;
        let mut res = BTreeMap::new();
        for (name, mut p) in by_name {
            let path = DatasetPath::parse(&name).map_err(|e| ZfsError::UnexpectedOutput {
                argv: out.argv.clone(),
                reason: format!("invalid dataset name {name:?}: {e}"),
                output: String::new(),
            })?;
            if !path.has_prefix(root) {
                return Err(ZfsError::UnexpectedOutput {
                    argv: out.argv.clone(),
                    reason: format!("dataset {path} is not inside {root}"),
                    output: String::new(),
                });
            }
            let extra = plan.extra(&p);
            if !plan.finish(&mut p).is_empty() || !extra.is_empty() {
                return Err(ZfsError::UnexpectedOutput {
                    argv: out.argv.clone(),
                    reason: format!("not all requested properties returned for {name}"),
                    output: String::new(),
                });
            }
            res.insert(path, p);
        }
        Ok(res)
    }

    /// Properties of many filesystems or volumes in one command (split only at the argv limit):
    /// `zfs get -Hp -o name,property,value,source <props> <fs>...`. A dataset that does not exist
    /// (any more) is missing from the result instead of failing the others; every other dataset
    /// has all of `props`.
    pub async fn get_properties_of(
        &self,
        datasets: &[DatasetPath],
        props: &[&str],
    ) -> Result<BTreeMap<DatasetPath, Properties>, ZfsError> {
        if props.is_empty() {
            return Err(ZfsError::InvalidArgument("no properties requested".into()));
        }
        for p in props {
            check_property_name(p)?;
        }
        let names = datasets
            .iter()
            .map(dataset_arg)
            .collect::<Result<Vec<String>, ZfsError>>()?;
        let mut res = BTreeMap::new();
        if names.is_empty() {
            return Ok(res);
        }
        let plan = GetPlan::new(props);
        let mut prefix = args!["get", "-Hp", "-o", "name,property,value,source"];
        prefix.extend(plan.sources.iter().cloned());
        prefix.extend(args!["--", plan.asked.join(",")]);
        self.run_batched(&prefix, &names, |out, batch| {
            let missing_only = out.stderr.lines().all(|l| {
                l.trim().is_empty()
                    || dataset_does_not_exist_path(l).is_some_and(|p| batch.iter().any(|b| b == p))
            });
            if !out.success() && !missing_only {
                return Err(out.into_error());
            }
            let by_name = parse_get(&out.stdout).map_err(|e| unexpected(&out, e))?;
            for (name, mut p) in by_name {
                let extra = plan.extra(&p);
                if !batch.contains(&name) || !plan.finish(&mut p).is_empty() || !extra.is_empty() {
                    return Err(ZfsError::UnexpectedOutput {
                        argv: out.argv.clone(),
                        reason: format!(
                            "listed {name} with {} of {} properties, expected the requested datasets with all of them",
                            p.len(),
                            props.len()
                        ),
                        output: out.stdout.clone(),
                    });
                }
                let path = DatasetPath::parse(&name).map_err(|e| ZfsError::UnexpectedOutput {
                    argv: out.argv.clone(),
                    reason: format!("invalid dataset name {name:?}: {e}"),
                    output: String::new(),
                })?;
                res.insert(path, p);
            }
            Ok(())
        })
        .await?;
        Ok(res)
    }

    /// `zfs set k1=v1 k2=v2 ... <target>` (one command, applied together).
    pub async fn set_properties(
        &self,
        target: impl Into<Target>,
        props: &[(&str, &str)],
    ) -> Result<(), ZfsError> {
        let target = target.into();
        let t = target.arg()?;
        if props.is_empty() {
            return Err(ZfsError::InvalidArgument("no properties to set".into()));
        }
        // No `--`: `zfs set` reads options with getopt only since OpenZFS 2.3 (before, a first
        // argument beginning with `-` is an invalid option). Property names are checked not to
        // begin with `-`, and the target is a checked name.
        let mut a = args!["set"];
        for (k, v) in props {
            check_property_name(k)?;
            check_property_value(v)?;
            a.push(format!("{k}={v}"));
        }
        a.push(t.clone());
        let out = self.zfs(&a).await?;
        if !out.success() {
            return Err(classify_not_exist(out, &t));
        }
        Ok(())
    }

    /// `zfs inherit <prop> <fs>`: removes a local value.
    pub async fn inherit_property(&self, fs: &DatasetPath, prop: &str) -> Result<(), ZfsError> {
        let f = dataset_arg(fs)?;
        check_property_name(prop)?;
        let out = self.zfs(&args!["inherit", "--", prop, f.clone()]).await?;
        if !out.success() {
            return Err(classify_not_exist(out, &f));
        }
        Ok(())
    }

    /// Whether `fs` exists (`zfs get name`).
    pub async fn exists(&self, target: impl Into<Target>) -> Result<bool, ZfsError> {
        match self.get_properties(target, &["name"]).await {
            Ok(_) => Ok(true),
            Err(ZfsError::DatasetDoesNotExist { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `receive_resume_token` of `fs`; `-` (none) gives `None`.
    pub async fn receive_resume_token(&self, fs: &DatasetPath) -> Result<Option<String>, ZfsError> {
        let v = self.get_property(fs, "receive_resume_token").await?;
        Ok((v.value != "-" && !v.value.is_empty()).then_some(v.value))
    }

    /// Placeholder state (§3.6); a nonexistent filesystem is reported, not an error.
    pub async fn placeholder_state(&self, fs: &DatasetPath) -> Result<PlaceholderState, ZfsError> {
        match self.get_properties(fs, &[PLACEHOLDER_PROPERTY]).await {
            Err(ZfsError::DatasetDoesNotExist { .. }) => Ok(PlaceholderState::MISSING),
            Err(e) => Err(e),
            Ok(p) => Ok(PlaceholderState::of(fs, p)),
        }
    }

    /// [`Zfs::placeholder_state`] of many datasets in one command (`zfs get` of them all): a
    /// dataset that does not exist is in the result with `exists: false`.
    pub async fn placeholder_states(
        &self,
        datasets: &[DatasetPath],
    ) -> Result<BTreeMap<DatasetPath, PlaceholderState>, ZfsError> {
        let mut found = self
            .get_properties_of(datasets, &[PLACEHOLDER_PROPERTY])
            .await?;
        Ok(datasets
            .iter()
            .map(|d| {
                let st = found
                    .remove(d)
                    .map_or(PlaceholderState::MISSING, |p| PlaceholderState::of(d, p));
                (d.clone(), st)
            })
            .collect())
    }

    /// `encryption` of `fs`: `off` is unencrypted, anything else encrypted, `-` an error.
    pub async fn is_encrypted(&self, fs: &DatasetPath) -> Result<bool, ZfsError> {
        let v = self.get_property(fs, "encryption").await?;
        match v.value.as_str() {
            "off" => Ok(false),
            "-" | "" => Err(ZfsError::UnexpectedOutput {
                argv: crate::error::Argv(vec![]),
                reason: format!("encryption property of {fs} is {:?}", v.value),
                output: String::new(),
            }),
            _ => Ok(true),
        }
    }

    /// guid, createtxg, creation and userrefs of one snapshot or bookmark.
    pub async fn get_version(&self, v: &VersionPath) -> Result<FilesystemVersion, ZfsError> {
        let p = self
            .get_properties(v, &["createtxg", "guid", "creation", "userrefs"])
            .await?;
        let num = |k: &str| -> Result<u64, ZfsError> {
            let val = &p[k].value;
            val.parse().map_err(|_| ZfsError::UnexpectedOutput {
                argv: crate::error::Argv(vec![]),
                reason: format!("{k} of {v} is {val:?}"),
                output: String::new(),
            })
        };
        let creation = num("creation")?;
        Ok(FilesystemVersion {
            typ: v.typ(),
            name: v.name().to_string(),
            guid: num("guid")?,
            createtxg: num("createtxg")?,
            creation: i64::try_from(creation).unwrap_or(i64::MAX),
            userrefs: if v.is_snapshot() {
                Some(num("userrefs")?)
            } else {
                None
            },
        })
    }

    /// The guid of a dataset, snapshot or bookmark.
    pub async fn guid(&self, target: impl Into<Target>) -> Result<u64, ZfsError> {
        let target = target.into();
        let v = self.get_property(target.clone(), "guid").await?;
        v.value.parse().map_err(|_| ZfsError::UnexpectedOutput {
            argv: crate::error::Argv(vec![]),
            reason: format!("guid of {target} is {:?}", v.value),
            output: String::new(),
        })
    }

    /// `zfs create [-p] [-o k=v]... <fs>`.
    pub async fn create_filesystem(
        &self,
        fs: &DatasetPath,
        props: &[(&str, &str)],
        create_parents: bool,
    ) -> Result<(), ZfsError> {
        let f = dataset_arg(fs)?;
        if fs.len() < 2 {
            return Err(ZfsError::InvalidArgument(format!(
                "cannot create {f}: pools cannot be created with zfs create"
            )));
        }
        let mut a = args!["create"];
        if create_parents {
            a.push("-p".into());
        }
        for (k, v) in props {
            check_property_name(k)?;
            check_property_value(v)?;
            a.extend(args!["-o", format!("{k}={v}")]);
        }
        a.extend(args!["--", f]);
        let out = self.zfs(&a).await?;
        // A non-root user (an agentless remote's, with `zfs allow`) creates the filesystem
        // but may not mount it (Linux): created is what was asked.
        if !out.success() && is_created_but_not_mounted(&out.stderr) {
            return Ok(());
        }
        out.check()?;
        Ok(())
    }

    /// `zfs create -o zrepl:placeholder=on -o mountpoint=none [-o encryption=off] <fs>`.
    pub async fn create_placeholder(
        &self,
        fs: &DatasetPath,
        encryption: PlaceholderEncryption,
    ) -> Result<(), ZfsError> {
        let mut props = vec![(PLACEHOLDER_PROPERTY, "on"), ("mountpoint", "none")];
        if encryption == PlaceholderEncryption::Off {
            props.push(("encryption", "off"));
        }
        self.create_filesystem(fs, &props, false).await
    }

    /// `zfs set zrepl:placeholder=replacing <fs>` ([`PLACEHOLDER_REPLACING`]).
    pub async fn mark_placeholder_replacing(&self, fs: &DatasetPath) -> Result<(), ZfsError> {
        self.set_properties(fs, &[(PLACEHOLDER_PROPERTY, PLACEHOLDER_REPLACING)])
            .await
    }

    /// `zfs set zrepl:placeholder=on|off <fs>`.
    pub async fn set_placeholder(&self, fs: &DatasetPath, on: bool) -> Result<(), ZfsError> {
        self.set_properties(fs, &[(PLACEHOLDER_PROPERTY, if on { "on" } else { "off" })])
            .await
    }

    /// `zfs rollback [-r] <fs@snap>`; `-r` destroys later snapshots and bookmarks.
    pub async fn rollback(
        &self,
        snapshot: &VersionPath,
        destroy_later: bool,
    ) -> Result<(), ZfsError> {
        if !snapshot.is_snapshot() {
            return Err(ZfsError::InvalidArgument(format!(
                "can only roll back to snapshots, got {snapshot}"
            )));
        }
        let mut a = args!["rollback"];
        if destroy_later {
            a.push("-r".into());
        }
        let s = snapshot.to_string();
        a.extend(args!["--", s.clone()]);
        let out = self.zfs(&a).await?;
        if !out.success() {
            return Err(classify_not_exist(out, &s));
        }
        Ok(())
    }

    /// `zfs recv -A <fs>`; idempotent: no partial state is success.
    pub async fn recv_abort(&self, fs: &DatasetPath) -> Result<(), ZfsError> {
        let f = dataset_arg(fs)?;
        let out = self.zfs(&args!["recv", "-A", "--", f.clone()]).await?;
        if out.success() || is_recv_abort_nothing_to_abort(&out.combined()) {
            return Ok(());
        }
        Err(classify_not_exist(out, &f))
    }
}

/// `zfs create` as a non-root user on Linux: `filesystem successfully created, but it may only
/// be mounted by root` (exit 1) and nothing else on stderr.
fn is_created_but_not_mounted(stderr: &str) -> bool {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    lines == ["filesystem successfully created, but it may only be mounted by root"]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_placeholder_hash() {
        let p = DatasetPath::parse("pool/a").unwrap();
        let h = legacy_placeholder_value(&p);
        assert_eq!(h.len(), 64);
        assert!(is_placeholder_value(&p, &h));
        assert!(is_placeholder_value(&p, "on"));
        assert!(!is_placeholder_value(&p, "off"));
        assert!(!is_placeholder_value(
            &DatasetPath::parse("pool/b").unwrap(),
            &h
        ));
        // Known answer: SHA-512/256("abc") from FIPS 180-4 examples, through the same hex code.
        let d = Sha512_256::digest(b"abc");
        let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "53048e2681941ef99b2e29b76b4c7dabe4c2d0c634fc6d46e0e2f13107e7af23"
        );
    }
}

#[cfg(test)]
mod created_tests {
    #[test]
    fn created_but_not_mounted() {
        for (stderr, want) in [
            ("filesystem successfully created, but it may only be mounted by root\n", true),
            ("filesystem successfully created, but it may only be mounted by root", true),
            ("cannot create 'p/x': permission denied\n", false),
            ("filesystem successfully created, but it may only be mounted by root\ncannot share 'p/x'\n", false),
            ("", false),
        ] {
            assert_eq!(super::is_created_but_not_mounted(stderr), want, "{stderr:?}");
        }
    }
}
