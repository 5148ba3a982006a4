//! Snapshots, bookmarks, holds and destroy.
//!
//! Everything that takes many names batches them into as few commands as the argv limit allows
//! (`ZfsConfig::argv_batch_limit`), and halves a batch if `execve` still says `E2BIG`.

use std::collections::BTreeMap;
use std::sync::Arc;

use zrepl_zfs_types::{DatasetPath, FilesystemVersion, VersionType};

use crate::command::{args, split_batches, Binary, CommandResult, Output, Zfs};
use crate::error::ZfsError;
use crate::lzc::{Lzc, LzcFailure};
use crate::names::{check_tag, dataset_arg, VersionPath};
use crate::parse::{
    dataset_does_not_exist_path, is_bookmark_does_not_exist, is_bookmark_exists,
    is_destroy_no_snapshots, is_hold_tag_exists, is_release_no_such_tag,
    parse_destroy_snapshots_error, parse_holds_timed,
};

/// Outcome of [`Zfs::destroy_snapshots`] per snapshot (short name). Errors are shared because
/// one failed command can be the answer for several snapshots.
pub type DestroyOutcome = Vec<(String, Result<(), Arc<ZfsError>>)>;

fn require_snapshots(vs: &[VersionPath]) -> Result<(), ZfsError> {
    match vs.iter().find(|v| !v.is_snapshot()) {
        Some(v) => Err(ZfsError::InvalidArgument(format!("{v} is not a snapshot"))),
        None => Ok(()),
    }
}

/// At most this many commands of one [`Zfs::run_parallel`] call run at once.
const PARALLEL_COMMANDS: usize = 8;
/// ... and each gets at least this many arguments (a few snapshots are not worth a process).
const MIN_ITEMS_PER_PARALLEL_COMMAND: usize = 5;

impl Zfs {
    /// Runs `prefix + batch` for batches of `items` within the argv limit; on `E2BIG` the batch
    /// is halved and retried. `check` sees every command's output and decides whether it failed.
    pub(crate) async fn run_batched(
        &self,
        prefix: &[String],
        items: &[String],
        mut check: impl FnMut(Output, &[String]) -> Result<(), ZfsError>,
    ) -> Result<(), ZfsError> {
        let prefix_len: usize = prefix.iter().map(|a| a.len() + 1).sum();
        let limit = self
            .inner
            .config
            .argv_batch_limit
            .saturating_sub(prefix_len)
            .max(1);
        // A stack of pending batches, first batch on top.
        let mut stack: Vec<&[String]> = split_batches(items, limit);
        stack.reverse();
        while let Some(batch) = stack.pop() {
            let mut a = prefix.to_vec();
            a.extend(batch.iter().cloned());
            match self.zfs(&a).await {
                Err(ZfsError::ArgListTooLong { .. }) if batch.len() > 1 => {
                    let (x, y) = batch.split_at(batch.len() / 2);
                    stack.push(y);
                    stack.push(x);
                }
                Err(e) => return Err(e),
                Ok(out) => check(out, batch)?,
            }
        }
        Ok(())
    }

    /// Like [`Self::run_batched`], but splits `items` into up to [`PARALLEL_COMMANDS`] commands
    /// that run at the same time. For verbs whose CLI issues one ioctl (and so one sync task
    /// waiting for a transaction group) per argument, as `zfs hold` and `zfs release` do, the
    /// sync tasks of concurrent commands share transaction groups.
    async fn run_parallel(
        &self,
        prefix: &[String],
        items: &[String],
        check: impl Fn(Output, &[String]) -> Result<(), ZfsError> + Clone,
    ) -> Result<(), ZfsError> {
        let per = items
            .len()
            .div_ceil(PARALLEL_COMMANDS)
            .max(MIN_ITEMS_PER_PARALLEL_COMMAND);
        let results = futures::future::join_all(
            items
                .chunks(per.max(1))
                .map(|chunk| self.run_batched(prefix, chunk, check.clone())),
        )
        .await;
        results.into_iter().collect()
    }

    /// Creates the given snapshots. Snapshots of the same pool are created by one
    /// `zfs snapshot a@x b@y ...` command, i.e. atomically in one transaction group (unless the
    /// argv limit forces more than one command). At most one snapshot per filesystem should be
    /// passed (OpenZFS rejects two snapshots of one filesystem in one command).
    pub async fn snapshot(&self, snapshots: &[VersionPath]) -> Result<(), ZfsError> {
        require_snapshots(snapshots)?;
        // Group by pool, keeping the caller's order inside each group.
        let mut by_pool: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for s in snapshots {
            let pool = s.fs().pool().unwrap_or_default();
            by_pool.entry(pool).or_default().push(s.to_string());
        }
        for names in by_pool.values() {
            self.run_batched(&args!["snapshot", "--"], names, |out, batch| {
                if out.success() {
                    return Ok(());
                }
                if let [one] = batch {
                    let fs = one.split_once('@').map_or(one.as_str(), |x| x.0);
                    if crate::parse::is_dataset_does_not_exist(&out.stderr, fs) {
                        return Err(ZfsError::DatasetDoesNotExist {
                            path: fs.to_string(),
                        });
                    }
                }
                Err(out.into_error())
            })
            .await?;
        }
        Ok(())
    }

    /// Idempotently bookmarks `from` (a snapshot, or a bookmark if the ZFS can copy bookmarks) of
    /// `fs` as `fs#bookmark` and returns the bookmark's version.
    ///
    /// If the bookmark exists already it is fine if its guid is `from.guid`, else
    /// [`ZfsError::BookmarkExists`]. A bookmark source without bookmark-copy support is fine only
    /// if the wanted bookmark already exists with the same identity, else
    /// [`ZfsError::BookmarkCloningNotSupported`] (zrepl 0.7 semantics).
    pub async fn bookmark(
        &self,
        fs: &DatasetPath,
        from: &FilesystemVersion,
        bookmark: &str,
    ) -> Result<FilesystemVersion, ZfsError> {
        let bm = VersionPath::bookmark(fs, bookmark)?;
        let src = VersionPath::of(fs, from)?;
        let result = FilesystemVersion {
            typ: VersionType::Bookmark,
            name: bookmark.to_string(),
            guid: from.guid,
            createtxg: from.createtxg,
            creation: from.creation,
            userrefs: None,
        };
        if src.is_bookmark() && !self.features().await?.bookmark_copy {
            return match self.get_version(&bm).await {
                Ok(existing) if existing.same_identity(from) => Ok(existing),
                Ok(_) | Err(ZfsError::DatasetDoesNotExist { .. }) => {
                    Err(ZfsError::BookmarkCloningNotSupported)
                }
                Err(e) => Err(e),
            };
        }
        let out = self
            .zfs(&args!["bookmark", "--", src.to_string(), bm.to_string()])
            .await?;
        if out.success() {
            return Ok(result);
        }
        let src_s = src.to_string();
        if crate::parse::is_dataset_does_not_exist(&out.stderr, &src_s) {
            return Err(ZfsError::DatasetDoesNotExist { path: src_s });
        }
        if is_bookmark_exists(&out.stderr) {
            let existing = self.guid(&bm).await?;
            if existing == from.guid {
                return Ok(result);
            }
            return Err(ZfsError::BookmarkExists {
                bookmark: bm.to_string(),
                existing_guid: existing,
                wanted_guid: from.guid,
            });
        }
        Err(out.into_error())
    }

    /// `zfs hold <tag> <snap>...`, batched. Idempotent: `tag already exists on this dataset`
    /// is success. `zfs hold` handles each snapshot separately, so a failure on one does not
    /// prevent the others from being held. Through libzfs_core where possible (one call per
    /// pool: see [`Zfs::via_lzc`]), with the same outcome.
    pub async fn hold(&self, tag: &str, snapshots: &[VersionPath]) -> Result<(), ZfsError> {
        check_tag(tag)?;
        require_snapshots(snapshots)?;
        let names: Vec<String> = snapshots.iter().map(ToString::to_string).collect();
        let rest = self.via_lzc("hold", Some(tag), &names, |l, n, t| l.hold(&with_tag(n, t)));
        let rest = rest.await;
        self.run_parallel(&args!["hold", "--", tag], &rest, |out, batch| {
            tolerate_lines(out, batch, is_hold_tag_exists)
        })
        .await
    }

    /// `zfs release <tag> <snap>...`, batched. Idempotent: `no such tag on this dataset` is
    /// success. Through libzfs_core where possible, with the same outcome.
    pub async fn release(&self, tag: &str, snapshots: &[VersionPath]) -> Result<(), ZfsError> {
        check_tag(tag)?;
        require_snapshots(snapshots)?;
        let names: Vec<String> = snapshots.iter().map(ToString::to_string).collect();
        let rest = self.via_lzc("release", Some(tag), &names, |l, n, t| {
            l.release(&with_tag(n, t))
        });
        let rest = rest.await;
        self.run_parallel(&args!["release", "--", tag], &rest, |out, batch| {
            tolerate_lines(out, batch, is_release_no_such_tag)
        })
        .await
    }

    /// Versions of explicitly named snapshots and bookmarks, batched:
    /// `zfs list -H -p -o name,guid,createtxg,creation,userrefs -t snapshot,bookmark <v>...`.
    /// A version that does not exist is missing from the result. Much cheaper than a recursive
    /// listing when the filesystems are not mounted (each visit opens the dataset).
    pub async fn get_versions(
        &self,
        versions: &[VersionPath],
    ) -> Result<crate::parse::VersionsByFilesystem, ZfsError> {
        let names: Vec<String> = versions.iter().map(ToString::to_string).collect();
        let mut all = crate::parse::VersionsByFilesystem::new();
        self.run_batched(
            &args![
                "list",
                "-H",
                "-p",
                "-o",
                "name,guid,createtxg,creation,userrefs",
                "-t",
                "snapshot,bookmark",
                "--"
            ],
            &names,
            |out, batch| {
                // Missing versions are reported on stderr; everything else is an error.
                let missing_only = out.stderr.lines().all(|l| {
                    l.trim().is_empty()
                        || crate::parse::dataset_does_not_exist_path(l)
                            .is_some_and(|p| batch.iter().any(|b| b == p))
                });
                if !out.success() && !missing_only {
                    return Err(out.into_error());
                }
                let m = crate::parse::parse_versions_listing(&out.stdout).map_err(|e| {
                    ZfsError::UnexpectedOutput {
                        argv: out.argv.clone(),
                        reason: e.to_string(),
                        output: e.line.clone(),
                    }
                })?;
                for (fs, vs) in m {
                    for v in vs {
                        let full = format!("{fs}{}", v.relative_name());
                        if !batch.contains(&full) {
                            return Err(ZfsError::UnexpectedOutput {
                                argv: out.argv.clone(),
                                reason: format!("listed {full}, which was not asked for"),
                                output: String::new(),
                            });
                        }
                        all.entry(fs.clone()).or_default().push(v);
                    }
                }
                Ok(())
            },
        )
        .await?;
        Ok(all)
    }

    /// Hold tags of many snapshots: `zfs holds -H <snap>...`, batched. Every requested snapshot
    /// is in the result (with no tags if it has no holds).
    pub async fn holds(
        &self,
        snapshots: &[VersionPath],
    ) -> Result<BTreeMap<VersionPath, Vec<String>>, ZfsError> {
        Ok(self
            .holds_timed(snapshots)
            .await?
            .into_iter()
            .map(|(s, hs)| (s, hs.into_iter().map(|(tag, _)| tag).collect()))
            .collect())
    }

    /// Like [`Zfs::holds`], with when each hold was taken (Unix seconds, minute resolution;
    /// `None` if `zfs` printed a timestamp that does not read as OpenZFS's format).
    pub async fn holds_timed(
        &self,
        snapshots: &[VersionPath],
    ) -> Result<BTreeMap<VersionPath, Vec<(String, Option<i64>)>>, ZfsError> {
        require_snapshots(snapshots)?;
        let names: Vec<String> = snapshots.iter().map(ToString::to_string).collect();
        let mut by_name: BTreeMap<String, Vec<(String, Option<i64>)>> =
            names.iter().map(|n| (n.clone(), Vec::new())).collect();
        self.run_batched(&args!["holds", "-H", "--"], &names, |out, batch| {
            if !out.success() {
                if let Some(p) = dataset_does_not_exist_path(&out.stderr) {
                    if batch.iter().any(|b| b == p) {
                        return Err(ZfsError::DatasetDoesNotExist {
                            path: p.to_string(),
                        });
                    }
                }
                return Err(out.into_error());
            }
            let rows = parse_holds_timed(&out.stdout).map_err(|e| ZfsError::UnexpectedOutput {
                argv: out.argv.clone(),
                reason: e.to_string(),
                output: e.line.clone(),
            })?;
            for crate::parse::HoldRow {
                snapshot: name,
                tag,
                since,
            } in rows
            {
                match by_name.get_mut(&name) {
                    Some(tags) if batch.contains(&name) => tags.push((tag, since)),
                    _ => {
                        return Err(ZfsError::UnexpectedOutput {
                            argv: out.argv.clone(),
                            reason: format!("hold on unexpected snapshot {name:?}"),
                            output: out.stdout.clone(),
                        })
                    }
                }
            }
            Ok(())
        })
        .await?;
        let mut res = BTreeMap::new();
        for s in snapshots {
            let tags = by_name.get(&s.to_string()).cloned().unwrap_or_default();
            res.insert(s.clone(), tags);
        }
        Ok(res)
    }

    /// `zfs destroy <arg>` with zrepl's error classification. `arg` is already validated.
    async fn destroy_raw(&self, arg: &str, recursive: bool) -> Result<(), ZfsError> {
        let mut a = args!["destroy"];
        if recursive {
            a.push("-r".into());
        }
        a.extend(args!["--", arg.to_string()]);
        let out = self.zfs(&a).await?;
        if out.success() {
            return Ok(());
        }
        let filesystem = arg.split(['@', '#']).next().unwrap_or(arg);
        if is_destroy_no_snapshots(&out.stderr) || is_bookmark_does_not_exist(&out.stderr, arg) {
            return Err(ZfsError::DatasetDoesNotExist {
                path: arg.to_string(),
            });
        }
        if crate::parse::is_dataset_does_not_exist(&out.stderr, filesystem) {
            return Err(ZfsError::DatasetDoesNotExist {
                path: filesystem.to_string(),
            });
        }
        if arg.contains('@') {
            if let Some(undestroyable) = parse_destroy_snapshots_error(filesystem, &out.stderr) {
                return Err(ZfsError::DestroySnapshots {
                    filesystem: filesystem.to_string(),
                    undestroyable,
                    stderr: out.stderr,
                });
            }
        }
        Err(out.into_error())
    }

    /// Destroys one snapshot or bookmark.
    pub async fn destroy_version(&self, v: &VersionPath) -> Result<(), ZfsError> {
        self.destroy_raw(&v.to_string(), false).await
    }

    /// Destroys one snapshot or bookmark; a missing one is success.
    pub async fn destroy_version_idempotent(&self, v: &VersionPath) -> Result<(), ZfsError> {
        match self.destroy_version(v).await {
            Err(ZfsError::DatasetDoesNotExist { .. }) => Ok(()),
            r => r,
        }
    }

    /// `zfs destroy [-r] <fs>`. `recursive` also destroys children and snapshots; without it,
    /// ZFS refuses to destroy a filesystem that has any.
    pub async fn destroy_dataset(&self, fs: &DatasetPath, recursive: bool) -> Result<(), ZfsError> {
        let f = dataset_arg(fs)?;
        if fs.len() < 2 {
            return Err(ZfsError::InvalidArgument(format!(
                "refusing to destroy pool root {f}"
            )));
        }
        self.destroy_raw(&f, recursive).await
    }

    /// Destroys snapshot or bookmark `v` only if its guid is `guid`.
    ///
    /// This is a check followed by a destroy, two commands: if between them someone destroys
    /// `v` and creates a new version with the same name, the new one is destroyed. ZFS offers
    /// no atomic compare-and-destroy; callers that need more must prevent concurrent renames and
    /// re-creations (zrepl owns its snapshots' names, which keeps this window harmless in
    /// practice).
    pub async fn destroy_if_guid_matches(
        &self,
        v: &VersionPath,
        guid: u64,
    ) -> Result<(), ZfsError> {
        let actual = self.guid(v).await?;
        if actual != guid {
            return Err(ZfsError::GuidMismatch {
                path: v.to_string(),
                expected: guid,
                actual,
            });
        }
        self.destroy_version(v).await
    }

    /// Destroys many snapshots of one filesystem with as few `zfs destroy fs@a,b,c` commands as
    /// possible and reports the outcome per snapshot (sorted by name), with zrepl's strategy:
    /// try the batch; on `E2BIG` halve it; if some snapshots are undestroyable (e.g. held), retry
    /// the batch without them and then try those one by one (so each gets its own reason); on any
    /// other error try all one by one. Without comma-syntax support all are destroyed one by one.
    pub async fn destroy_snapshots(
        &self,
        fs: &DatasetPath,
        names: &[String],
    ) -> Result<DestroyOutcome, ZfsError> {
        let f = dataset_arg(fs)?;
        for n in names {
            VersionPath::snapshot(fs, n)?;
        }
        let mut sorted: Vec<String> = names.to_vec();
        sorted.sort();
        sorted.dedup();
        let mut results: BTreeMap<String, Result<(), Arc<ZfsError>>> = BTreeMap::new();
        let comma = match self.features().await {
            Ok(fe) => fe.comma_destroy,
            Err(e) => {
                let e = Arc::new(e);
                return Ok(sorted.into_iter().map(|n| (n, Err(e.clone()))).collect());
            }
        };
        if !comma {
            self.destroy_seq(&f, &sorted, &mut results).await;
            return Ok(results.into_iter().collect());
        }
        // Pre-split by argv size and the configured maximum batch size.
        let limit = self
            .inner
            .config
            .argv_batch_limit
            .saturating_sub(f.len() + 16)
            .max(1);
        let max = self.inner.config.destroy_max_batch;
        let mut batches: Vec<Vec<String>> = Vec::new();
        for b in split_batches(&sorted, limit) {
            if max > 0 {
                batches.extend(b.chunks(max).map(<[String]>::to_vec));
            } else {
                batches.push(b.to_vec());
            }
        }
        batches.reverse();
        while let Some(batch) = batches.pop() {
            if batch.len() <= 1 {
                self.destroy_seq(&f, &batch, &mut results).await;
                continue;
            }
            match self
                .destroy_raw(&format!("{f}@{}", batch.join(",")), false)
                .await
            {
                Ok(()) => {
                    for n in batch {
                        results.insert(n, Ok(()));
                    }
                }
                Err(ZfsError::ArgListTooLong { .. }) => {
                    let mut a = batch;
                    let b = a.split_off(a.len() / 2);
                    batches.push(b);
                    batches.push(a);
                }
                Err(ZfsError::DestroySnapshots { undestroyable, .. }) => {
                    let (bad, good): (Vec<String>, Vec<String>) = batch
                        .into_iter()
                        .partition(|n| undestroyable.iter().any(|u| &u.snapshot == n));
                    let good_ok = good.is_empty()
                        || self
                            .destroy_raw(&format!("{f}@{}", good.join(",")), false)
                            .await
                            .is_ok();
                    if good_ok {
                        for n in good {
                            results.insert(n, Ok(()));
                        }
                        self.destroy_seq(&f, &bad, &mut results).await;
                    } else {
                        let mut all = good;
                        all.extend(bad);
                        all.sort();
                        self.destroy_seq(&f, &all, &mut results).await;
                    }
                }
                Err(_) => self.destroy_seq(&f, &batch, &mut results).await,
            }
        }
        Ok(results.into_iter().collect())
    }

    async fn destroy_seq(
        &self,
        f: &str,
        names: &[String],
        results: &mut BTreeMap<String, Result<(), Arc<ZfsError>>>,
    ) {
        for n in names {
            let r = self.destroy_raw(&format!("{f}@{n}"), false).await;
            results.insert(n.clone(), r.map_err(Arc::new));
        }
    }
}

/// For hold/release: a failed command is fine if every stderr line is one `tolerated` accepts.
fn tolerate_lines(
    out: Output,
    batch: &[String],
    tolerated: fn(&str) -> bool,
) -> Result<(), ZfsError> {
    if out.success() {
        return Ok(());
    }
    let other: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty() && !tolerated(l))
        .collect();
    if other.is_empty() {
        return Ok(());
    }
    if let ([one], [line]) = (batch, other.as_slice()) {
        if crate::parse::is_dataset_does_not_exist(line, one) {
            return Err(ZfsError::DatasetDoesNotExist { path: one.clone() });
        }
    }
    Err(out.into_error())
}

/// The pool of a validated dataset, snapshot or bookmark name.
fn pool_of(name: &str) -> &str {
    name.split(['/', '@', '#']).next().unwrap_or(name)
}

/// Pairs every name with `tag` (hold and release take (snapshot, tag) pairs).
fn with_tag(names: &[String], tag: Option<&str>) -> Vec<(String, String)> {
    let tag = tag.unwrap_or_default();
    names.iter().map(|n| (n.clone(), tag.to_string())).collect()
}

/// At most this many names per libzfs_core call (one transaction group each).
const LZC_BATCH: usize = 1024;

type LzcOp = fn(&Lzc, &[String], Option<&str>) -> Result<(), LzcFailure>;

impl Zfs {
    /// Runs `op` through libzfs_core, one call per pool and batch of at most [`LZC_BATCH`]
    /// names, each accounted as a `libzfs_core <verb>` command. Returns the names of every
    /// batch that did not succeed cleanly (all of them without libzfs_core): the caller redoes
    /// those with the command line, whose rules (idempotency, error messages) then decide. A
    /// failed libzfs_core batch has changed nothing (hold, release) or only what the command
    /// line would also do (destroying bookmarks), so redoing it is safe.
    async fn via_lzc(
        &self,
        verb: &'static str,
        tag: Option<&str>,
        names: &[String],
        op: LzcOp,
    ) -> Vec<String> {
        let Some(lzc) = self.lzc() else {
            return names.to_vec();
        };
        let mut by_pool: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for n in names {
            by_pool.entry(pool_of(n)).or_default().push(n.clone());
        }
        let mut rest = Vec::new();
        for chunk in by_pool.values().flat_map(|v| v.chunks(LZC_BATCH)) {
            let mut argv = vec!["libzfs_core".to_string(), verb.to_string()];
            argv.extend(tag.map(str::to_string));
            argv.extend(chunk.iter().cloned());
            let tracker = self.begin(Binary::LibzfsCore, verb.to_string(), argv);
            let (items, t) = (chunk.to_vec(), tag.map(str::to_string));
            let r = tokio::task::spawn_blocking(move || op(lzc, &items, t.as_deref())).await;
            if matches!(r, Ok(Ok(()))) {
                tracker.finish(CommandResult::Success);
            } else {
                tracker.finish(CommandResult::Failure);
                rest.extend_from_slice(chunk);
            }
        }
        rest
    }

    /// Destroys bookmarks, idempotently (one that does not exist counts as destroyed): one
    /// libzfs_core call per pool and batch where possible, else (and for a batch it did not
    /// complete) one `zfs destroy` per bookmark, up to 16 at once so that their
    /// transaction-group syncs overlap. Returns the bookmarks that could not be destroyed.
    pub async fn destroy_bookmarks(
        &self,
        bookmarks: &[VersionPath],
    ) -> Vec<(VersionPath, ZfsError)> {
        if let Some(b) = bookmarks.iter().find(|b| !b.is_bookmark()) {
            return vec![(
                b.clone(),
                ZfsError::InvalidArgument(format!("{b} is not a bookmark")),
            )];
        }
        let names: Vec<String> = bookmarks.iter().map(ToString::to_string).collect();
        let rest = self
            .via_lzc("destroy", None, &names, |l, n, _| l.destroy_bookmarks(n))
            .await;
        let rest: std::collections::HashSet<String> = rest.into_iter().collect();
        let rest: Vec<&VersionPath> = bookmarks
            .iter()
            .filter(|b| rest.contains(&b.to_string()))
            .collect();
        let limit = Arc::new(tokio::sync::Semaphore::new(16));
        let results = futures::future::join_all(rest.into_iter().map(|bm| {
            let limit = limit.clone();
            async move {
                let _permit = limit.acquire().await;
                self.destroy_version_idempotent(bm)
                    .await
                    .err()
                    .map(|e| (bm.clone(), e))
            }
        }))
        .await;
        results.into_iter().flatten().collect()
    }
}

impl Zfs {
    /// Creates bookmarks of many filesystems with one `zfs program` (a channel program:
    /// `zfs program -j <pool> /dev/stdin <source> <bookmark>...`, all in one transaction group)
    /// per pool, batched by argv size. Each item is a source snapshot (or bookmark), the new
    /// bookmark of the same filesystem and the source's guid. Idempotent like
    /// [`Zfs::bookmark`]: an existing bookmark with that guid is success (checked with one
    /// `zfs get` per such bookmark). A snapshot source is checked against its guid in the same
    /// transaction group (a snapshot renamed into its name since it was listed is not
    /// bookmarked: `Err(3)`). Returns every bookmark's outcome by full name (`Err` with the
    /// errno of the failed creation). Channel programs cannot destroy bookmarks.
    pub async fn create_bookmarks(
        &self,
        create: &[(VersionPath, VersionPath, u64)],
    ) -> Result<BTreeMap<String, Result<(), i64>>, ZfsError> {
        let mut by_pool: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut want: BTreeMap<String, (VersionPath, u64)> = BTreeMap::new();
        for (src, bm, guid) in create {
            if !bm.is_bookmark() || src.fs() != bm.fs() {
                return Err(ZfsError::InvalidArgument(format!(
                    "cannot bookmark {src} as {bm}"
                )));
            }
            let pool = src.fs().pool().unwrap_or_default().to_string();
            // A snapshot source is checked against its guid in the same transaction group
            // (`nocheck`: a bookmark source, whose guid a channel program cannot read). The
            // guid is the signed integer channel programs see, behind a `g` (an argument
            // starting with `-` would be taken for an option).
            let check = if src.is_snapshot() {
                format!("g{}", *guid as i64)
            } else {
                "nocheck".to_string()
            };
            by_pool
                .entry(pool)
                .or_default()
                .extend([src.to_string(), bm.to_string(), check]);
            want.insert(bm.to_string(), (bm.clone(), *guid));
        }
        let mut out = BTreeMap::new();
        for (pool, ops) in by_pool {
            DatasetPath::parse(&pool).map_err(|e| ZfsError::invalid_name(&pool, e))?;
            let prefix = args!["program", "-j", "--", pool, "/dev/stdin"];
            let prefix_len: usize = prefix.iter().map(|a| a.len() + 1).sum();
            let limit = self
                .inner
                .config
                .argv_batch_limit
                .saturating_sub(prefix_len)
                .max(1);
            for batch in split_batches(
                &ops.chunks(3).map(|c| c.join("\0")).collect::<Vec<_>>(),
                limit,
            ) {
                let mut a = prefix.clone();
                a.extend(batch.iter().flat_map(|p| p.split('\0').map(str::to_string)));
                let o = self
                    .run_with_stdin(crate::Binary::Zfs, &a, BOOKMARK_PROGRAM.as_bytes())
                    .await?
                    .check()?;
                let results = crate::parse::parse_program_return(&o.stdout).map_err(|reason| {
                    ZfsError::UnexpectedOutput {
                        argv: o.argv.clone(),
                        reason,
                        output: o.stdout.clone(),
                    }
                })?;
                for pair in batch {
                    let name = pair.split('\0').nth(1).unwrap_or_default().to_string();
                    let r = match results.get(name.as_str()) {
                        Some(0) => Ok(()),
                        Some(17) => {
                            // EEXIST: fine if it is a bookmark of the same snapshot.
                            let (bm, guid) = &want[&name];
                            match self.guid(bm).await {
                                Ok(g) if g == *guid => Ok(()),
                                _ => Err(17),
                            }
                        }
                        Some(e) => Err(*e),
                        None => {
                            return Err(ZfsError::UnexpectedOutput {
                                argv: o.argv.clone(),
                                reason: format!("no result for {name}"),
                                output: o.stdout.clone(),
                            })
                        }
                    };
                    out.insert(name, r);
                }
            }
        }
        Ok(out)
    }
}

/// The channel program of [`Zfs::create_bookmarks`]: arguments are triples `<source>
/// <bookmark> <check>` (`g` and the guid as a signed 64-bit integer, as channel programs see
/// it, or `nocheck`); returns `{bookmark = errno}`, ENOENT (2) for a missing source snapshot
/// and ESRCH (3) for one that is not the snapshot of that guid any more (renamed in its place).
const BOOKMARK_PROGRAM: &str = r#"
local argv = (...)["argv"]
local out = {}
for i = 1, #argv, 3 do
    local src, bm, guid = argv[i], argv[i + 1], argv[i + 2]
    if guid ~= "nocheck" and not zfs.exists(src) then
        out[bm] = 2
    elseif guid ~= "nocheck" and "g" .. tostring(zfs.get_prop(src, "guid")) ~= guid then
        out[bm] = 3
    else
        out[bm] = zfs.sync.bookmark(src, bm)
    end
end
return out
"#;
