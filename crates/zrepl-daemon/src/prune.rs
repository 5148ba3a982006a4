//! Pruning of both sides after a replication run (spec §2.8, "Pruning execution").
//!
//! For every filesystem: list the pruned side's snapshots, look up the sender's replication
//! cursor, let `zrepl-pruning` decide, and destroy what no rule keeps, batched per filesystem.
//! Guards, beyond the rules: the cursor's snapshot and every held snapshot (step holds,
//! last-received holds, anyone's holds) are kept; with a `not_replicated` rule nothing is pruned
//! before the first successful replication created a cursor. Receiver filesystems that are
//! placeholders or have no counterpart on the sender are left alone.

use zrepl_config as config;
use zrepl_filters::SnapshotFilter;
use zrepl_protocol::{Receiver, Sender};
use zrepl_pruning::{Bucket, Context, Decision, Rule, Snapshot};
use zrepl_zfs_types::{DatasetPath, FilesystemVersion, VersionType};

/// What pruning judges on one side: the keep rules, the snapshots they may judge at all
/// (`pruning.scope`: outside it a snapshot is never destroyed and does not count for
/// `last_n` or `grid`), and the snapshots the job makes or selects (`own`, to flag destroying
/// someone else's snapshots under `scope: all`).
#[derive(Debug, Clone, Default)]
pub struct Keep {
    pub rules: Vec<Rule>,
    pub scope: SnapshotFilter,
    pub own: SnapshotFilter,
}

impl Keep {
    /// `keep` with `scope`; `selection` is the job's `replication.snapshots` (all for a snap
    /// job), `prefix` its snapshotting prefix (none for a pull job or manual snapshotting).
    pub fn new(
        keep: &[config::KeepRule],
        scope: config::PruningScope,
        selection: &SnapshotFilter,
        prefix: Option<&str>,
    ) -> Keep {
        let by_prefix = prefix.map(SnapshotFilter::prefix);
        let own = match (&by_prefix, selection.is_all()) {
            (_, false) => selection.clone(),
            (Some(p), true) => p.clone(),
            (None, true) => SnapshotFilter::all(),
        };
        let scope = match scope {
            config::PruningScope::All => SnapshotFilter::all(),
            config::PruningScope::Selected => selection.clone(),
            // The config check refuses `own` without a prefix.
            config::PruningScope::Own => by_prefix.unwrap_or_default(),
        };
        Keep {
            rules: rules(keep),
            scope,
            own,
        }
    }

    /// Only rules, every snapshot in scope (tests, zrepl 0.7 semantics).
    pub fn rules_only(rules: Vec<Rule>) -> Keep {
        Keep {
            rules,
            ..Keep::default()
        }
    }
}

const OUT_OF_SCOPE: &str = "outside pruning.scope";

/// Converts config keep rules into pruning rules.
pub fn rules(keep: &[config::KeepRule]) -> Vec<Rule> {
    keep.iter()
        .map(|r| match r {
            config::KeepRule::NotReplicated {
                keep_snapshot_at_cursor,
            } => Rule::NotReplicated {
                keep_snapshot_at_cursor: *keep_snapshot_at_cursor,
            },
            config::KeepRule::LastN { count, regex } => Rule::LastN {
                count: *count,
                regex: regex.as_ref().map(|r| r.0.clone()),
            },
            config::KeepRule::Regex { regex, negate } => Rule::Regex {
                regex: regex.0.clone(),
                negate: *negate,
            },
            config::KeepRule::Grid { grid, regex } => Rule::Grid {
                buckets: grid
                    .buckets()
                    .map(|b| Bucket {
                        length: b.length.as_secs(),
                        keep: match b.keep {
                            config::grid::Keep::All => None,
                            config::grid::Keep::N(n) => Some(n),
                        },
                    })
                    .collect(),
                regex: regex.0.clone(),
                spec: grid.to_string(),
            },
        })
        .collect()
}

/// The pruning report (the `/status` contract's types, also `zrepl prune --dry-run --json`).
pub use zrepl_status::{FsPrune, PruneReport, SideReport};

/// A filesystem left alone, and why.
fn skip_fs(fs: &DatasetPath, why: impl Into<String>) -> FsPrune {
    FsPrune::skipped(fs.to_string(), why)
}

const NO_CURSOR: &str =
    "replication cursor bookmark does not exist (one successful replication is required before pruning works)";

/// How long after they began the filesystem listings of a replication run that created and
/// removed no filesystem stand for the current state, for the pruning that follows it.
pub const UNCHANGED_FRESH: std::time::Duration = std::time::Duration::from_secs(60);

/// Prunes the sender and the receiver (at the same time). With `dry_run`, only decides.
pub async fn prune<S: Sender, R: Receiver>(
    sender: &S,
    receiver: &R,
    keep_sender: &Keep,
    keep_receiver: &Keep,
    dry_run: bool,
) -> PruneReport {
    prune_after(sender, receiver, keep_sender, keep_receiver, dry_run, None).await
}

/// [`prune`] right after a replication run: if that run created and removed no filesystem
/// ([`zrepl_replication::FilesystemsUnchanged`]) and its filesystem listings began less than
/// [`UNCHANGED_FRESH`] ago, they are used instead of listing both sides' filesystems again (the
/// versions are listed as always, or confirmed by the listings cache). A filesystem created or
/// destroyed by someone else in between is pruned at the next run, or fails to list, as with a
/// change right after any listing.
pub async fn prune_after<S: Sender, R: Receiver>(
    sender: &S,
    receiver: &R,
    keep_sender: &Keep,
    keep_receiver: &Keep,
    dry_run: bool,
    unchanged: Option<zrepl_replication::FilesystemsUnchanged>,
) -> PruneReport {
    let mut report = PruneReport::default();
    // Both sides' filesystems at the same time (an unmounted receiver lists slowly).
    let (sfs, rfs) = match unchanged.filter(|u| u.listed_at.elapsed() < UNCHANGED_FRESH) {
        Some(u) => {
            tracing::debug!(
                "pruning uses the filesystem listings of the replication run (it created and removed no filesystem)"
            );
            (Ok(u.sender), Ok(u.receiver))
        }
        None => futures::future::join(sender.list_filesystems(), receiver.list_filesystems()).await,
    };
    let sfs = match sfs {
        Ok(l) => l,
        Err(e) => {
            report.sender.error = Some(e.to_string());
            report.receiver.error = Some(format!("sender listing failed: {e}"));
            return report;
        }
    };
    // The cursors of every sender filesystem and the versions of each side: one request each
    // (one listing on a local endpoint: the cursors are among its versions), not one per
    // filesystem. The two sides are listed at the same time.
    let all: Vec<DatasetPath> = sfs.iter().map(|f| f.path.clone()).collect();
    let s_paths: Vec<DatasetPath> = sfs
        .iter()
        .filter(|f| !f.is_placeholder)
        .map(|f| f.path.clone())
        .collect();
    let sender_listing = async {
        let (cursors, versions) = sender.cursors_and_versions(&all).await;
        (fetch(cursors, &all), fetch(versions, &all))
    };
    let receiver_listing = async {
        let rfs = rfs.map_err(|e| e.to_string())?;
        let mut skipped = Vec::new();
        let mut todo = Vec::new();
        for fs in rfs {
            if fs.is_placeholder {
                skipped.push(skip_fs(&fs.path, "filesystem is placeholder"));
                continue;
            }
            if !sfs.iter().any(|s| s.path == fs.path) {
                skipped.push(skip_fs(
                    &fs.path,
                    "filesystem has no correspondence on sender",
                ));
                continue;
            }
            todo.push(fs.path);
        }
        let r_versions = fetch(receiver.list_versions_many(&todo).await, &todo);
        Ok::<_, String>((skipped, todo, r_versions))
    };
    let ((cursors, mut s_versions), r_listed) =
        futures::future::join(sender_listing, receiver_listing).await;
    // The two sides are independent from here on: prune them at the same time.
    let sender_side = async {
        let mut side = Vec::new();
        for (n, fs) in s_paths.iter().enumerate() {
            if n > 0 && !dry_run {
                if let Err(e) = zrepl_failpoint::hit("prune.sender.after_destroy") {
                    side.extend(s_paths[n..].iter().map(|f| skip_fs(f, e.to_string())));
                    break;
                }
            }
            let r = prune_fs(
                Fetched {
                    cursor: peek(&cursors, fs, "cannot get replication cursor"),
                    versions: take(&mut s_versions, fs, "cannot list snapshots"),
                    sender_side: true,
                },
                &Side::<S, R>::Sender(sender),
                fs,
                keep_sender,
                dry_run,
            )
            .await;
            side.push(r);
        }
        side
    };
    let receiver_side = async {
        let (mut side, todo, mut r_versions) = r_listed?;
        for fs in &todo {
            // The sender's cursor was fetched above; the receiver side needs it too.
            let cursor = peek(&cursors, fs, "cannot get replication cursor");
            let r = prune_fs(
                Fetched {
                    cursor,
                    versions: take(&mut r_versions, fs, "cannot list snapshots"),
                    sender_side: false,
                },
                &Side::<S, R>::Receiver(receiver),
                fs,
                keep_receiver,
                dry_run,
            )
            .await;
            side.push(r);
        }
        Ok::<_, String>(side)
    };
    let (s_side, r_side) = futures::future::join(sender_side, receiver_side).await;
    report.sender.filesystems = s_side;
    match r_side {
        Ok(fss) => report.receiver.filesystems = fss,
        Err(e) => report.receiver.error = Some(e),
    }
    report
}

type Fetch<T> = std::collections::HashMap<DatasetPath, Result<T, String>>;

/// One result per path of a batched request (the whole request's error for each if it failed).
fn fetch<T>(
    r: zrepl_protocol::Result<Vec<zrepl_protocol::Result<T>>>,
    paths: &[DatasetPath],
) -> Fetch<T> {
    match r {
        Ok(v) if v.len() == paths.len() => paths
            .iter()
            .cloned()
            .zip(v.into_iter().map(|r| r.map_err(|e| e.to_string())))
            .collect(),
        Ok(_) => paths
            .iter()
            .map(|p| {
                (
                    p.clone(),
                    Err("peer answered for a different number of filesystems".to_string()),
                )
            })
            .collect(),
        Err(e) => paths
            .iter()
            .map(|p| (p.clone(), Err(e.to_string())))
            .collect(),
    }
}

fn take<T>(m: &mut Fetch<T>, fs: &DatasetPath, what: &str) -> Result<T, String> {
    match m.remove(fs) {
        Some(Ok(v)) => Ok(v),
        Some(Err(e)) => Err(format!("{what}: {e}")),
        None => Err(format!("{what}: not listed")),
    }
}

fn peek<T: Clone>(m: &Fetch<T>, fs: &DatasetPath, what: &str) -> Result<T, String> {
    match m.get(fs) {
        Some(Ok(v)) => Ok(v.clone()),
        Some(Err(e)) => Err(format!("{what}: {e}")),
        None => Err(format!("{what}: not listed")),
    }
}

/// What pruning one filesystem needs, fetched for all filesystems at once.
struct Fetched {
    cursor: Result<Option<FilesystemVersion>, String>,
    versions: Result<Vec<FilesystemVersion>, String>,
    sender_side: bool,
}

/// The side being pruned.
enum Side<'a, S, R> {
    Sender(&'a S),
    Receiver(&'a R),
}

impl<S: Sender, R: Receiver> Side<'_, S, R> {
    async fn destroy(
        &self,
        fs: &DatasetPath,
        snaps: &[FilesystemVersion],
    ) -> zrepl_protocol::Result<Vec<zrepl_protocol::DestroyResult>> {
        match self {
            Side::Sender(s) => s.destroy_snapshots(fs, snaps).await,
            Side::Receiver(r) => r.destroy_snapshots(fs, snaps).await,
        }
    }
}

async fn prune_fs<S: Sender, R: Receiver>(
    fetched: Fetched,
    side: &Side<'_, S, R>,
    fs: &DatasetPath,
    keep: &Keep,
    dry_run: bool,
) -> FsPrune {
    let cursor = match fetched.cursor {
        Ok(c) => c,
        Err(e) => return skip_fs(fs, e),
    };
    let versions = match fetched.versions {
        Ok(v) => v,
        Err(e) => return skip_fs(fs, e),
    };
    let (mut out, doomed) = judge(fs, &versions, cursor.as_ref(), keep, fetched.sender_side);
    if dry_run || doomed.is_empty() {
        return out;
    }
    match side.destroy(fs, &doomed).await {
        Ok(results) => {
            for r in results {
                if let Some(e) = r.error {
                    out.destroy.retain(|n| *n != r.snapshot);
                    out.errors.push((r.snapshot, e));
                }
            }
        }
        Err(e) => {
            out.errors = doomed
                .iter()
                .map(|v| (v.name.clone(), e.to_string()))
                .collect();
            out.destroy.clear();
        }
    }
    out.foreign.retain(|n| out.destroy.contains(n));
    out
}

/// What pruning does to one filesystem, from its listing and the sender's cursor: the report
/// (kept with reasons, destroyed, foreign) and the snapshots to destroy. Pure.
pub fn judge(
    fs: &DatasetPath,
    versions: &[FilesystemVersion],
    cursor: Option<&FilesystemVersion>,
    keep: &Keep,
    sender_side: bool,
) -> (FsPrune, Vec<FilesystemVersion>) {
    let rules = &keep.rules[..];
    if cursor.is_none()
        && rules
            .iter()
            .any(|r| matches!(r, Rule::NotReplicated { .. }))
    {
        return (skip_fs(fs, NO_CURSOR), Vec::new());
    }
    // Snapshots outside the scope are not judged at all: kept, and not counted by the rules.
    let (snaps, out_of_scope): (Vec<&FilesystemVersion>, Vec<&FilesystemVersion>) = versions
        .iter()
        .filter(|v| v.typ == VersionType::Snapshot)
        .partition(|v| keep.scope.selects(&v.name));
    let mut protected: Vec<(u64, String)> = snaps
        .iter()
        .filter(|v| v.userrefs.unwrap_or(0) > 0)
        .map(|v| (v.guid, "held (zfs holds)".to_string()))
        .collect();
    // The cursor's snapshot stays, unless the user explicitly lets it go on the sender
    // (`not_replicated` with `keep_snapshot_at_cursor: false`): the cursor bookmark itself keeps
    // incremental replication possible either way.
    let cursor_may_go = sender_side
        && rules.iter().any(|r| {
            matches!(
                r,
                Rule::NotReplicated {
                    keep_snapshot_at_cursor: false
                }
            )
        });
    if let Some(c) = cursor.filter(|_| !cursor_may_go) {
        protected.push((c.guid, "at the replication cursor".into()));
    }
    let input: Vec<Snapshot> = snaps
        .iter()
        .map(|v| Snapshot {
            name: v.name.clone(),
            guid: v.guid,
            createtxg: v.createtxg,
            creation: v.creation,
        })
        .collect();
    let ctx = Context {
        cursor_guid: cursor.map(|c| c.guid),
        sender_side,
        protected,
    };
    let decisions: Vec<Decision> = zrepl_pruning::decide(&input, rules, &ctx);
    let mut out = FsPrune {
        filesystem: fs.to_string(),
        skipped: None,
        destroy: vec![],
        keep: vec![],
        errors: vec![],
        foreign: vec![],
    };
    let mut doomed = Vec::new();
    for (d, v) in decisions.iter().zip(&snaps) {
        if d.destroy() {
            out.destroy.push(v.name.clone());
            if !keep.own.selects(&v.name) {
                out.foreign.push(v.name.clone());
            }
            doomed.push((*v).clone());
        } else {
            out.keep.push((
                v.name.clone(),
                d.kept_by.iter().map(ToString::to_string).collect(),
            ));
        }
    }
    out.keep.extend(
        out_of_scope
            .iter()
            .map(|v| (v.name.clone(), vec![OUT_OF_SCOPE.to_string()])),
    );
    (out, doomed)
}

/// A readable dry-run report (`zrepl prune --dry-run`).
pub fn render(r: &PruneReport) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    for (side, rep) in [("sender", &r.sender), ("receiver", &r.receiver)] {
        let _ = writeln!(s, "{side}:");
        if let Some(e) = &rep.error {
            let _ = writeln!(s, "  error: {e}");
        }
        for f in &rep.filesystems {
            let _ = writeln!(s, "  {}", f.filesystem);
            if let Some(why) = &f.skipped {
                let _ = writeln!(s, "    skipped: {why}");
                continue;
            }
            for (n, why) in &f.keep {
                let _ = writeln!(s, "    keep    @{n}  ({})", why.join("; "));
            }
            for n in &f.destroy {
                if f.foreign.contains(n) {
                    let _ = writeln!(
                        s,
                        "    destroy @{n}  (WARNING: not made by this job; pruning.scope: own or selected would spare it)"
                    );
                } else {
                    let _ = writeln!(s, "    destroy @{n}");
                }
            }
            for (n, e) in &f.errors {
                let _ = writeln!(s, "    FAILED  @{n}: {e}");
            }
        }
    }
    s
}

/// Pruning of a snap job: every filesystem of the job, with `keep`, locally.
pub async fn prune_local<S: Sender>(sender: &S, keep: &Keep, dry_run: bool) -> SideReport {
    let mut rep = SideReport::default();
    let fss = match sender.list_filesystems().await {
        Ok(l) => l,
        Err(e) => {
            rep.error = Some(e.to_string());
            return rep;
        }
    };
    let paths: Vec<DatasetPath> = fss
        .iter()
        .filter(|f| !f.is_placeholder)
        .map(|f| f.path.clone())
        .collect();
    let (cursors, versions) = sender.cursors_and_versions(&paths).await;
    let (cursors, mut versions) = (fetch(cursors, &paths), fetch(versions, &paths));
    for fs in &paths {
        let r = prune_fs(
            Fetched {
                cursor: peek(&cursors, fs, "cannot get replication cursor"),
                versions: take(&mut versions, fs, "cannot list snapshots"),
                sender_side: true,
            },
            &Side::<S, NoReceiver>::Sender(sender),
            fs,
            keep,
            dry_run,
        )
        .await;
        rep.filesystems.push(r);
    }
    rep
}

/// A receiver type for local pruning, which has none.
enum NoReceiver {}

impl Receiver for NoReceiver {
    async fn list_filesystems(
        &self,
    ) -> zrepl_protocol::Result<Vec<zrepl_protocol::FilesystemInfo>> {
        match *self {}
    }
    async fn list_versions(
        &self,
        _fs: &DatasetPath,
    ) -> zrepl_protocol::Result<Vec<FilesystemVersion>> {
        match *self {}
    }
    async fn receive(
        &self,
        _req: zrepl_protocol::ReceiveRequest,
        _stream: zrepl_protocol::ByteStream,
    ) -> zrepl_protocol::Result<()> {
        match *self {}
    }
    async fn converge(
        &self,
        _reqs: &[zrepl_protocol::ConvergeRequest],
    ) -> zrepl_protocol::Result<Vec<zrepl_protocol::Result<()>>> {
        match *self {}
    }
    async fn destroy_snapshots(
        &self,
        _fs: &DatasetPath,
        _snapshots: &[FilesystemVersion],
    ) -> zrepl_protocol::Result<Vec<zrepl_protocol::DestroyResult>> {
        match *self {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(name: &str, txg: u64) -> FilesystemVersion {
        FilesystemVersion {
            typ: VersionType::Snapshot,
            name: name.into(),
            guid: txg,
            createtxg: txg,
            creation: txg as i64 * 60,
            userrefs: Some(0),
        }
    }

    fn keep(scope: config::PruningScope, selection: &SnapshotFilter, prefix: Option<&str>) -> Keep {
        let mut k = Keep::new(&[], scope, selection, prefix);
        k.rules = vec![Rule::LastN {
            count: 1,
            regex: None,
        }];
        k
    }

    /// `pruning.scope`: foreign snapshots (Proxmox's, hand-made) survive whatever the keep rules
    /// say and do not count for `last_n`; with scope all they are destroyed as in zrepl 0.7 and
    /// reported as foreign.
    #[test]
    fn scope_table() {
        use config::PruningScope::*;
        let fs: DatasetPath = "pool/a".parse().unwrap();
        let vs = vec![
            snap("zrepl_1", 1),
            snap("vzdump", 2),
            snap("zrepl_2", 3),
            snap("manual-x", 4),
        ];
        let sel = SnapshotFilter::prefix("zrepl_");
        let all = SnapshotFilter::all();
        #[allow(clippy::type_complexity)]
        let cases: &[(&str, Keep, &[&str], &[&str])] = &[
            (
                "zrepl 0.7: last_n 1 of everything",
                keep(All, &all, Some("zrepl_")),
                &["zrepl_1", "vzdump"],
                &["vzdump"],
            ),
            (
                "own prefix: foreign ones spared and not counted",
                keep(Own, &all, Some("zrepl_")),
                &["zrepl_1"],
                &[],
            ),
            (
                "selected: the same through the replication filter",
                keep(Selected, &sel, None),
                &["zrepl_1"],
                &[],
            ),
            (
                "all, no prefix known (pull, no filter): nothing flagged",
                keep(All, &all, None),
                &["zrepl_1", "vzdump"],
                &[],
            ),
            (
                "all with a filter: foreign means unselected",
                keep(All, &sel, None),
                &["zrepl_1", "vzdump"],
                &["vzdump"],
            ),
        ];
        for (name, k, destroy, foreign) in cases {
            let cursor = snap("zrepl_2", 3);
            let (out, doomed) = judge(&fs, &vs, Some(&cursor), k, true);
            assert_eq!(out.destroy, *destroy, "{name}");
            assert_eq!(out.foreign, *foreign, "{name}");
            let names: Vec<&str> = doomed.iter().map(|v| v.name.as_str()).collect();
            assert_eq!(names, *destroy, "{name}");
            let kept: Vec<&str> = out.keep.iter().map(|(n, _)| n.as_str()).collect();
            assert_eq!(kept.len() + destroy.len(), vs.len(), "{name}: {kept:?}");
            if !k.scope.is_all() {
                assert!(
                    out.keep
                        .iter()
                        .any(|(n, why)| n == "vzdump" && why == &[OUT_OF_SCOPE]),
                    "{name}: {:?}",
                    out.keep
                );
            }
        }
    }

    /// The guards stay whatever the scope: held snapshots and the cursor's are never destroyed,
    /// and without a cursor a not_replicated rule prunes nothing.
    #[test]
    fn guards_hold_within_scope() {
        let fs: DatasetPath = "pool/a".parse().unwrap();
        let mut held = snap("zrepl_1", 1);
        held.userrefs = Some(1);
        let vs = vec![held, snap("zrepl_2", 2), snap("zrepl_3", 3)];
        let mut k = Keep::new(
            &[],
            config::PruningScope::Own,
            &SnapshotFilter::all(),
            Some("zrepl_"),
        );
        k.rules = vec![Rule::Regex {
            regex: regex::Regex::new("^never$").unwrap(),
            negate: false,
        }];
        let (out, _) = judge(&fs, &vs, Some(&snap("zrepl_2", 2)), &k, true);
        assert_eq!(out.destroy, ["zrepl_3"]);
        k.rules.push(Rule::NotReplicated {
            keep_snapshot_at_cursor: true,
        });
        let (out, doomed) = judge(&fs, &vs, None, &k, true);
        assert_eq!(out.skipped.as_deref(), Some(NO_CURSOR));
        assert!(doomed.is_empty());
    }

    /// One side of a replication for [`prune_after`]: filesystem `pool/a` with three
    /// snapshots, a cursor at the newest; counts filesystem listings and destroys.
    #[derive(Default)]
    struct Side {
        lists: std::sync::atomic::AtomicUsize,
        destroyed: std::sync::Mutex<Vec<String>>,
        /// When set, listing versions waits until the other side lists its versions too.
        meet: Option<std::sync::Arc<tokio::sync::Barrier>>,
    }

    impl Side {
        fn fss() -> Vec<zrepl_protocol::FilesystemInfo> {
            vec![zrepl_protocol::FilesystemInfo {
                path: "pool/a".parse().unwrap(),
                is_placeholder: false,
                resume_token: None,
            }]
        }
        fn list(&self) -> zrepl_protocol::Result<Vec<zrepl_protocol::FilesystemInfo>> {
            self.lists.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(Side::fss())
        }
        fn versions() -> Vec<FilesystemVersion> {
            vec![snap("s1", 1), snap("s2", 2), snap("s3", 3)]
        }
        async fn versions_now(&self) -> zrepl_protocol::Result<Vec<FilesystemVersion>> {
            if let Some(b) = &self.meet {
                b.wait().await;
            }
            Ok(Side::versions())
        }
        fn destroy(&self, s: &[FilesystemVersion]) -> Vec<zrepl_protocol::DestroyResult> {
            let mut d = self.destroyed.lock().unwrap();
            s.iter()
                .map(|v| {
                    d.push(v.name.clone());
                    zrepl_protocol::DestroyResult {
                        snapshot: v.name.clone(),
                        error: None,
                    }
                })
                .collect()
        }
    }

    impl Sender for Side {
        async fn list_filesystems(
            &self,
        ) -> zrepl_protocol::Result<Vec<zrepl_protocol::FilesystemInfo>> {
            self.list()
        }
        async fn list_versions(
            &self,
            _fs: &DatasetPath,
        ) -> zrepl_protocol::Result<Vec<FilesystemVersion>> {
            self.versions_now().await
        }
        async fn converge(
            &self,
            reqs: &[zrepl_protocol::ConvergeRequest],
        ) -> zrepl_protocol::Result<Vec<zrepl_protocol::Result<()>>> {
            Ok(reqs.iter().map(|_| Ok(())).collect())
        }
        async fn send_dry(
            &self,
            _req: &zrepl_protocol::SendRequest,
        ) -> zrepl_protocol::Result<u64> {
            unreachable!()
        }
        async fn send(
            &self,
            _req: zrepl_protocol::SendRequest,
        ) -> zrepl_protocol::Result<(zrepl_protocol::SendResponse, zrepl_protocol::ByteStream)>
        {
            unreachable!()
        }
        async fn send_completed(
            &self,
            _req: &zrepl_protocol::SendRequest,
        ) -> zrepl_protocol::Result<()> {
            unreachable!()
        }
        async fn replication_cursor(
            &self,
            _fs: &DatasetPath,
        ) -> zrepl_protocol::Result<Option<FilesystemVersion>> {
            Ok(Some(snap("s3", 3)))
        }
        async fn destroy_snapshots(
            &self,
            _fs: &DatasetPath,
            s: &[FilesystemVersion],
        ) -> zrepl_protocol::Result<Vec<zrepl_protocol::DestroyResult>> {
            Ok(self.destroy(s))
        }
    }

    impl Receiver for Side {
        async fn list_filesystems(
            &self,
        ) -> zrepl_protocol::Result<Vec<zrepl_protocol::FilesystemInfo>> {
            self.list()
        }
        async fn list_versions(
            &self,
            _fs: &DatasetPath,
        ) -> zrepl_protocol::Result<Vec<FilesystemVersion>> {
            self.versions_now().await
        }
        async fn receive(
            &self,
            _req: zrepl_protocol::ReceiveRequest,
            _stream: zrepl_protocol::ByteStream,
        ) -> zrepl_protocol::Result<()> {
            unreachable!()
        }
        async fn converge(
            &self,
            reqs: &[zrepl_protocol::ConvergeRequest],
        ) -> zrepl_protocol::Result<Vec<zrepl_protocol::Result<()>>> {
            Ok(reqs.iter().map(|_| Ok(())).collect())
        }
        async fn destroy_snapshots(
            &self,
            _fs: &DatasetPath,
            s: &[FilesystemVersion],
        ) -> zrepl_protocol::Result<Vec<zrepl_protocol::DestroyResult>> {
            Ok(self.destroy(s))
        }
    }

    /// After a replication run that created and removed no filesystem, pruning uses its
    /// filesystem listings while they are fresh, and lists both sides again otherwise; it
    /// prunes the same either way.
    #[tokio::test]
    async fn pruning_after_a_run_with_the_same_filesystems_reuses_its_listings() {
        let k = keep(config::PruningScope::All, &SnapshotFilter::all(), Some("s"));
        let unchanged = |age: std::time::Duration| zrepl_replication::FilesystemsUnchanged {
            sender: Side::fss(),
            receiver: Side::fss(),
            listed_at: std::time::Instant::now()
                .checked_sub(age)
                .expect("the clock is past the age"),
        };
        let fresh = Some(unchanged(std::time::Duration::ZERO));
        let stale = Some(unchanged(UNCHANGED_FRESH));
        for (name, given, lists) in [("fresh", fresh, 0), ("stale", stale, 1), ("none", None, 1)] {
            let (s, r) = (Side::default(), Side::default());
            let rep = prune_after(&s, &r, &k, &k, false, given).await;
            let n = |x: &Side| x.lists.load(std::sync::atomic::Ordering::SeqCst);
            assert_eq!((n(&s), n(&r)), (lists, lists), "{name}: listings");
            assert!(
                rep.sender.error.is_none() && rep.receiver.error.is_none(),
                "{name}"
            );
            for side in [&s, &r] {
                assert_eq!(*side.destroyed.lock().unwrap(), ["s1", "s2"], "{name}");
            }
        }
    }

    /// The two sides' versions are listed at the same time (a slow receiver listing does not
    /// wait for the sender's): each side's listing here returns only once the other's began.
    #[tokio::test]
    async fn pruning_lists_both_sides_versions_at_the_same_time() {
        let k = keep(config::PruningScope::All, &SnapshotFilter::all(), Some("s"));
        let meet = std::sync::Arc::new(tokio::sync::Barrier::new(2));
        let side = || Side {
            meet: Some(meet.clone()),
            ..Side::default()
        };
        let (s, r) = (side(), side());
        let rep = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            prune(&s, &r, &k, &k, false),
        )
        .await
        .expect("one side's versions were listed only after the other's");
        assert!(rep.sender.error.is_none() && rep.receiver.error.is_none());
        for side in [&s, &r] {
            assert_eq!(*side.destroyed.lock().unwrap(), ["s1", "s2"]);
        }
    }

    #[test]
    fn dry_run_render_warns_about_foreign_snapshots() {
        let r = PruneReport {
            sender: SideReport {
                error: None,
                filesystems: vec![FsPrune {
                    filesystem: "pool/a".into(),
                    destroy: vec!["zrepl_1".into(), "vzdump".into()],
                    foreign: vec!["vzdump".into()],
                    ..FsPrune::default()
                }],
            },
            receiver: SideReport::default(),
        };
        let text = render(&r);
        assert!(text.contains("    destroy @zrepl_1\n"), "{text}");
        assert!(
            text.contains("destroy @vzdump  (WARNING: not made by this job"),
            "{text}"
        );
    }
}
