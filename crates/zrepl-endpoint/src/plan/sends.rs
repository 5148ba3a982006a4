//! The sender's part of a round, decided without I/O: which step holds `prepare_sends`
//! creates and which it gives back, and what `sends_completed` does (cursors moved, replaced
//! cursors destroyed, step holds released). [`crate::sender`] lists, applies these plans in the
//! order they state and feeds the outcome of each command into the next decision.

use std::collections::{BTreeMap, BTreeSet};

use zrepl_protocol::{EndpointError, Protection, SendRequest};
use zrepl_zfs::VersionPath;
use zrepl_zfs_types::abstraction::{cursor_bookmark_name, parse_cursor_bookmark, AbstractionType};
use zrepl_zfs_types::{DatasetPath, FilesystemVersion, VersionType};

use crate::error::zfs_err;

/// A listing per filesystem, as `list_versions_many` returns it (a filesystem may fail alone).
pub type Listing = BTreeMap<DatasetPath, Result<Vec<FilesystemVersion>, EndpointError>>;

/// Checks the request's `from` and `to` against the filesystem's `versions` by GUID.
pub fn check_request(
    req: &SendRequest,
    versions: &[FilesystemVersion],
) -> Result<(), EndpointError> {
    let fs = &req.filesystem;
    if req.to.typ != VersionType::Snapshot {
        return Err(EndpointError::invalid("'to' must be a snapshot"));
    }
    let check = |want: &FilesystemVersion| -> Result<(), EndpointError> {
        match versions
            .iter()
            .find(|v| v.typ == want.typ && v.name == want.name)
        {
            None => Err(EndpointError::not_found(format!(
                "{} does not exist",
                want.full_path(fs)
            ))),
            Some(v) if v.guid != want.guid => Err(EndpointError::invalid(format!(
                "{} has guid {:#x}, request expected {:#x}",
                want.full_path(fs),
                v.guid,
                want.guid
            ))),
            Some(_) => Ok(()),
        }
    };
    check(&req.to)?;
    if let Some(from) = &req.from {
        check(from)?;
        if from.createtxg >= req.to.createtxg {
            return Err(EndpointError::invalid("'from' must be older than 'to'"));
        }
    }
    if !req.intermediates.is_empty() {
        check_package(req, versions)?;
    }
    Ok(())
}

/// A package (`zfs send -I`) sends every snapshot between `from` and `to`: allowed only from a
/// snapshot, never with a resume token, and only if the snapshots between them are exactly
/// the request's `intermediates` (by GUID, in order) as this side lists them now, so that no
/// snapshot the planner did not choose leaves this host.
fn check_package(req: &SendRequest, versions: &[FilesystemVersion]) -> Result<(), EndpointError> {
    let fs = &req.filesystem;
    if req.resume_token.is_some() {
        return Err(EndpointError::invalid(
            "a resumed transfer cannot be a package (intermediates)",
        ));
    }
    let Some(from) = req.from.as_ref().filter(|f| f.typ == VersionType::Snapshot) else {
        return Err(EndpointError::invalid(
            "a package (zfs send -I) needs a snapshot as its incremental source",
        ));
    };
    let mut between: Vec<&FilesystemVersion> = versions
        .iter()
        .filter(|v| {
            v.typ == VersionType::Snapshot
                && v.createtxg > from.createtxg
                && v.createtxg < req.to.createtxg
        })
        .collect();
    between.sort_by_key(|v| v.createtxg);
    let same = between.len() == req.intermediates.len()
        && between
            .iter()
            .zip(&req.intermediates)
            .all(|(a, b)| a.guid == b.guid && a.name == b.name);
    if !same {
        let names = |vs: &mut dyn Iterator<Item = &FilesystemVersion>| {
            vs.map(|v| format!("@{}", v.name))
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Err(EndpointError::invalid(format!(
            "the snapshots of {fs} between @{} and @{} are [{}], the package expected [{}] (a snapshot was created, destroyed or renamed since planning; the next attempt plans again)",
            from.name,
            req.to.name,
            names(&mut between.iter().copied()),
            names(&mut req.intermediates.iter()),
        )));
    }
    Ok(())
}

/// The identity of a request among the steps `prepare_sends` prepared.
pub fn prepared_key(req: &SendRequest) -> String {
    format!(
        "{}\0{:?}\0{}\0{}\0{:?}\0{:?}\0{:?}",
        req.filesystem,
        req.from
            .as_ref()
            .map(|f| (f.typ, &f.name, f.guid, f.createtxg)),
        req.to.name,
        req.to.guid,
        req.resume_token,
        req.replication,
        req.intermediates.iter().map(|v| v.guid).collect::<Vec<_>>(),
    )
}

/// Does the request's step keep step holds (`guarantee_resumability`)?
fn holds_steps(r: &SendRequest) -> bool {
    r.replication.for_step(r.from.is_some()) == Protection::GuaranteeResumability
}

/// The snapshots among a request's `from` and `to`.
fn step_snapshots(r: &SendRequest) -> impl Iterator<Item = &FilesystemVersion> {
    std::iter::once(&r.to)
        .chain(r.from.as_ref())
        .filter(|v| v.typ == VersionType::Snapshot)
}

/// This job's replication cursors among `versions` that are newer than `to` (by `createtxg`;
/// both must come from this side's own listing, never from a peer's request). A completion or
/// convergence to `to` never destroys them (issue: untrusted peers; zrepl#102): a client cannot
/// move the cursor backwards. The cursor at `to` is still made, so a receiver that really went
/// back (rolled back, re-seeded) keeps its incremental source protected; the next completion
/// past the newer cursor replaces both.
pub fn newer_cursors<'a>(
    job: &str,
    versions: &'a [FilesystemVersion],
    to: &FilesystemVersion,
) -> Vec<&'a FilesystemVersion> {
    versions
        .iter()
        .filter(|v| v.typ == VersionType::Bookmark && v.createtxg > to.createtxg)
        .filter(|v| {
            matches!(parse_cursor_bookmark(&v.name),
                Some((AbstractionType::ReplicationCursorV2, _, Some(j))) if j == job)
        })
        .collect()
}

/// The version of this side's listing that `want` names (type, name and GUID): its
/// `createtxg` is this side's, not what a peer claimed.
pub fn listed_version<'a>(
    versions: &'a [FilesystemVersion],
    want: &FilesystemVersion,
) -> Option<&'a FilesystemVersion> {
    versions
        .iter()
        .find(|v| v.typ == want.typ && v.name == want.name && v.guid == want.guid)
}

/// The first half of `prepare_sends`: the step holds of the round.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StepHolds {
    /// Indices of the requests that get step holds (allowed, `guarantee_resumability`).
    pub requests: Vec<usize>,
    /// Every snapshot `from` and `to` of those requests, each once: held with the job's step
    /// hold tag in one command.
    pub snapshots: Vec<VersionPath>,
    /// Their filesystems, each once: checked against a listing under the holds.
    pub filesystems: Vec<DatasetPath>,
}

/// Decides the step holds of a round. `allowed` is the sender's filter.
pub fn step_holds(
    reqs: &[SendRequest],
    allowed: impl Fn(&DatasetPath) -> bool,
) -> Result<StepHolds, EndpointError> {
    let requests: Vec<usize> = (0..reqs.len())
        .filter(|&i| allowed(&reqs[i].filesystem) && holds_steps(&reqs[i]))
        .collect();
    let mut snapshots = BTreeSet::new();
    let mut filesystems = BTreeSet::new();
    for &i in &requests {
        let r = &reqs[i];
        filesystems.insert(r.filesystem.clone());
        for v in step_snapshots(r) {
            snapshots.insert(VersionPath::of(&r.filesystem, v).map_err(|e| zfs_err("hold", e))?);
        }
    }
    Ok(StepHolds {
        requests,
        snapshots: snapshots.into_iter().collect(),
        filesystems: filesystems.into_iter().collect(),
    })
}

/// The second half of `prepare_sends`, once the holds exist and the held filesystems are listed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Prepared {
    /// Requests that match the listing: their `send` may skip the per-step listing and holds.
    pub steps: Vec<usize>,
    /// Filesystems whose listing completion may use instead of listing again: every request of
    /// the round on them was prepared (a request without step holds is not: its snapshots may
    /// go before completion).
    pub keep_listing: Vec<DatasetPath>,
    /// Held snapshots that no prepared step uses (their requests do not match what exists;
    /// their `send` fails): their step holds are given back at once.
    pub release: Vec<VersionPath>,
}

/// Decides what the holds of [`step_holds`] prepared, from the listing of their filesystems.
pub fn prepared(reqs: &[SendRequest], holds: &StepHolds, listed: &Listing) -> Prepared {
    let mut steps = Vec::new();
    let mut used = BTreeSet::new();
    let mut unprepared: BTreeSet<&DatasetPath> = BTreeSet::new();
    for &i in &holds.requests {
        let r = &reqs[i];
        let ok = matches!(listed.get(&r.filesystem), Some(Ok(vs)) if check_request(r, vs).is_ok());
        if ok {
            steps.push(i);
            used.extend(step_snapshots(r).filter_map(|v| VersionPath::of(&r.filesystem, v).ok()));
        } else {
            unprepared.insert(&r.filesystem);
        }
    }
    for (i, r) in reqs.iter().enumerate() {
        if !holds.requests.contains(&i) {
            unprepared.insert(&r.filesystem);
        }
    }
    Prepared {
        steps,
        keep_listing: holds
            .filesystems
            .iter()
            .filter(|f| !unprepared.contains(f))
            .filter(|f| matches!(listed.get(*f), Some(Ok(_))))
            .cloned()
            .collect(),
        release: holds
            .snapshots
            .iter()
            .filter(|p| !used.contains(*p))
            .cloned()
            .collect(),
    }
}

/// One filesystem's new replication cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCursor {
    /// The request whose `to` becomes the cursor (the newest completed step of the filesystem).
    pub request: usize,
    /// The snapshot the bookmark is made from, and its GUID (checked as it is made).
    pub source: VersionPath,
    pub guid: u64,
    pub bookmark: VersionPath,
}

/// What `sends_completed` does, first part: until the new cursors exist.
#[derive(Debug, Clone, Default)]
pub struct SendCompletion {
    /// Per request: allowed and matching the listing? Only these complete.
    pub results: Vec<Result<(), EndpointError>>,
    /// Per filesystem, the `createtxg` of its newest completed `to`.
    pub newest_txg: BTreeMap<DatasetPath, u64>,
    /// Cursors to create, in one batch, first.
    pub cursors: Vec<NewCursor>,
    /// This job's cursors and tentative cursors the new cursors replace, each with the cursor
    /// that must exist before it goes (`None`: the protection keeps no cursor).
    pub replaced: Vec<(Option<VersionPath>, VersionPath)>,
    /// This round's step holds, given back once the cursors exist.
    pub release: Vec<VersionPath>,
    /// Filesystems whose newer cursor is kept besides the new one (see [`newer_cursors`]),
    /// with why: logged.
    pub not_moved: Vec<String>,
}

/// Decides the completion of a round's steps from the listing of their filesystems.
pub fn complete_sends(
    job: &str,
    reqs: &[SendRequest],
    allowed: impl Fn(&DatasetPath) -> Result<(), EndpointError>,
    listed: &Listing,
) -> Result<SendCompletion, EndpointError> {
    let results: Vec<Result<(), EndpointError>> = reqs
        .iter()
        .map(|r| {
            allowed(&r.filesystem)?;
            match listed.get(&r.filesystem) {
                Some(Ok(v)) => check_request(r, v),
                Some(Err(e)) => Err(e.clone()),
                None => Err(EndpointError::not_found(format!(
                    "{} not listed",
                    r.filesystem
                ))),
            }
        })
        .collect();
    // Each checked request's `to` as this side lists it: its createtxg is ours, not the peer's.
    let to_of = |i: usize| -> Option<&FilesystemVersion> {
        match listed.get(&reqs[i].filesystem) {
            Some(Ok(vs)) => listed_version(vs, &reqs[i].to),
            _ => None,
        }
    };
    let mut newest: BTreeMap<&DatasetPath, (usize, &FilesystemVersion)> = BTreeMap::new();
    for (i, r) in reqs.iter().enumerate().filter(|(i, _)| results[*i].is_ok()) {
        let Some(to) = to_of(i) else { continue };
        let e = newest.entry(&r.filesystem).or_insert((i, to));
        if to.createtxg > e.1.createtxg {
            *e = (i, to);
        }
    }
    let mut out = SendCompletion {
        results,
        newest_txg: newest
            .iter()
            .map(|(fs, (_, to))| ((*fs).clone(), to.createtxg))
            .collect(),
        ..Default::default()
    };
    for (fs, &(i, to)) in &newest {
        let r = &reqs[i];
        let newer: Vec<&FilesystemVersion> = match listed.get(*fs) {
            Some(Ok(versions)) => newer_cursors(job, versions, to),
            _ => Vec::new(),
        };
        if let Some(n) = newer.first() {
            out.not_moved.push(format!(
                "{} is older than the replication cursor {}: the newer cursor is kept (a receiver that went back, or a peer that tried to move the cursor backwards)",
                to.full_path(fs),
                n.full_path(fs)
            ));
        }
        let guard = if r.replication.for_step(r.from.is_some()) != Protection::GuaranteeNothing {
            let name = cursor_bookmark_name(r.to.guid, job);
            let bookmark = VersionPath::bookmark(fs, &name).map_err(|e| zfs_err("cursor", e))?;
            out.cursors.push(NewCursor {
                request: i,
                source: VersionPath::of(fs, &r.to).map_err(|e| zfs_err("cursor", e))?,
                guid: r.to.guid,
                bookmark: bookmark.clone(),
            });
            Some(bookmark)
        } else {
            None
        };
        let Some(Ok(versions)) = listed.get(*fs) else {
            continue;
        };
        for v in versions.iter().filter(|v| v.typ == VersionType::Bookmark) {
            let Some((typ, _, Some(j))) = parse_cursor_bookmark(&v.name) else {
                continue;
            };
            let ours = j == job
                && matches!(
                    typ,
                    AbstractionType::TentativeReplicationCursorV2
                        | AbstractionType::ReplicationCursorV2
                );
            let is_newer = newer.iter().any(|n| n.name == v.name);
            if ours && !is_newer && guard.as_ref().is_none_or(|g| g.name() != v.name) {
                let bm = VersionPath::of(fs, v).map_err(|e| zfs_err("cleanup", e))?;
                out.replaced.push((guard.clone(), bm));
            }
        }
    }
    // Step holds are released for every request of the round that had them, completed or not:
    // a step that did not complete is planned again, with new holds, by the next attempt.
    let mut release = BTreeSet::new();
    for r in reqs
        .iter()
        .filter(|r| allowed(&r.filesystem).is_ok() && holds_steps(r))
    {
        release.extend(step_snapshots(r).filter_map(|v| VersionPath::of(&r.filesystem, v).ok()));
    }
    out.release = release.into_iter().collect();
    Ok(out)
}

/// How creating a cursor came out, per bookmark name: `Ok` or the errno of the channel program
/// (see `Zfs::create_bookmarks`); a bookmark missing from the map was not created.
pub type CursorOutcome = BTreeMap<String, Result<(), i64>>;

/// What `sends_completed` does once the cursors were made: the requests whose cursor failed
/// fail, and the replaced cursors whose new cursor exists are destroyed (never one whose
/// replacement failed: it may be the only incremental source left).
pub fn after_cursors(
    reqs: &[SendRequest],
    c: &mut SendCompletion,
    outcome: &CursorOutcome,
) -> Vec<VersionPath> {
    for cur in &c.cursors {
        let name = cur.bookmark.to_string();
        let Some(Err(errno)) = outcome.get(&name) else {
            continue;
        };
        let fs = cur.bookmark.fs();
        let err = if *errno == 3 {
            let r = &reqs[cur.request];
            EndpointError::invalid(format!(
                "cannot move replication cursor of {fs}: {} is no longer the snapshot that was sent (guid {:#x}; renamed?)",
                r.to.full_path(fs),
                r.to.guid
            ))
        } else {
            EndpointError::zfs(format!(
                "cannot move replication cursor of {fs}: creating {name} failed with errno {errno}"
            ))
        };
        for (r, res) in reqs.iter().zip(c.results.iter_mut()) {
            if res.is_ok() && &r.filesystem == fs {
                *res = Err(err.clone());
            }
        }
    }
    c.replaced
        .iter()
        .filter(|(guard, _)| {
            guard
                .as_ref()
                .is_none_or(|g| matches!(outcome.get(&g.to_string()), Some(Ok(()))))
        })
        .map(|(_, bm)| bm.clone())
        .collect()
}

/// The held snapshots `sends_completed` asks `zfs holds` about: those that may carry stale
/// step holds of earlier attempts (see [`super::completion_hold_candidates`]), not this
/// round's own (released anyway).
pub fn stale_hold_checks(c: &SendCompletion, listed: &Listing) -> Vec<VersionPath> {
    listed
        .iter()
        .filter_map(|(fs, v)| Some((fs, v.as_ref().ok()?, *c.newest_txg.get(fs)?)))
        .flat_map(|(fs, vs, txg)| {
            super::completion_hold_candidates(vs, txg, |v| {
                VersionPath::of(fs, v).is_ok_and(|p| c.release.binary_search(&p).is_ok())
            })
            .into_iter()
            .filter_map(move |v| VersionPath::of(fs, v).ok())
        })
        .collect()
}

/// The per-step cleanup (`send`'s preparation and the one-by-one completion): what stale
/// abstractions of this job to look for and remove on one filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cleanup {
    /// Held snapshots to ask `zfs holds` about; the job's step holds found on them are stale.
    pub check_holds: Vec<VersionPath>,
    /// The job's tentative cursors (and, with `older_cursors`, its replication cursors) to
    /// destroy.
    pub destroy: Vec<VersionPath>,
}

/// Decides the cleanup of `fs` from its `versions`, sparing everything in `keep` (the step's
/// own held snapshots, new cursor and `from`, which may be a tentative cursor itself).
pub fn cleanup(
    job: &str,
    fs: &DatasetPath,
    versions: &[FilesystemVersion],
    keep: &[FilesystemVersion],
    older_cursors: bool,
) -> Result<Cleanup, EndpointError> {
    let kept = |v: &FilesystemVersion| keep.iter().any(|k| k.typ == v.typ && k.name == v.name);
    let check_holds = versions
        .iter()
        .filter(|v| v.typ == VersionType::Snapshot && v.userrefs.unwrap_or(0) > 0 && !kept(v))
        .filter_map(|v| VersionPath::of(fs, v).ok())
        .collect();
    let mut destroy = Vec::new();
    for v in versions
        .iter()
        .filter(|v| v.typ == VersionType::Bookmark && !kept(v))
    {
        let Some((typ, _, Some(j))) = parse_cursor_bookmark(&v.name) else {
            continue;
        };
        let ours = j == job
            && (typ == AbstractionType::TentativeReplicationCursorV2
                || (older_cursors && typ == AbstractionType::ReplicationCursorV2));
        if ours {
            destroy.push(VersionPath::of(fs, v).map_err(|e| zfs_err("cleanup", e))?);
        }
    }
    Ok(Cleanup {
        check_holds,
        destroy,
    })
}

/// What a source lets its pull clients destroy (`client_pruning` of the source job).
#[derive(Debug, Clone, Default)]
pub enum ClientDestroy {
    /// Any snapshot of an allowed filesystem that is not held (zrepl 0.7; push jobs' own
    /// pruning of their sender).
    #[default]
    Allow,
    /// Nothing: every destroy request is refused.
    Refuse,
    /// Only what none of these rules keeps (evaluated here, with this job's cursor).
    Keep(Vec<zrepl_pruning::Rule>),
}

/// Splits a client's destroy request for `fs` by the source's policy into the snapshots that
/// may go and the refused ones (with why). `versions` is the filesystem's listing (snapshots
/// and bookmarks; only read for [`ClientDestroy::Keep`]).
pub fn client_destroy(
    job: &str,
    policy: &ClientDestroy,
    fs: &DatasetPath,
    requested: &[FilesystemVersion],
    versions: &[FilesystemVersion],
) -> (Vec<FilesystemVersion>, Vec<zrepl_protocol::DestroyResult>) {
    let refuse = |v: &FilesystemVersion, why: String| zrepl_protocol::DestroyResult {
        snapshot: v.name.clone(),
        error: Some(why),
    };
    match policy {
        ClientDestroy::Allow => (requested.to_vec(), Vec::new()),
        ClientDestroy::Refuse => (
            Vec::new(),
            requested
                .iter()
                .map(|v| {
                    refuse(
                        v,
                        format!("source job {job:?} does not let clients destroy snapshots (client_pruning.allow: false)"),
                    )
                })
                .collect(),
        ),
        ClientDestroy::Keep(rules) => {
            let snaps: Vec<zrepl_pruning::Snapshot> = versions
                .iter()
                .filter(|v| v.typ == VersionType::Snapshot)
                .map(|v| zrepl_pruning::Snapshot {
                    name: v.name.clone(),
                    guid: v.guid,
                    createtxg: v.createtxg,
                    creation: v.creation,
                })
                .collect();
            let cursor = versions
                .iter()
                .filter(|v| {
                    matches!(parse_cursor_bookmark(&v.name),
                        Some((AbstractionType::ReplicationCursorV2, _, Some(j))) if j == job)
                })
                .max_by_key(|v| v.createtxg);
            let ctx = zrepl_pruning::Context {
                cursor_guid: cursor.map(|c| c.guid),
                sender_side: true,
                protected: Vec::new(),
            };
            let decisions = zrepl_pruning::decide(&snaps, rules, &ctx);
            let mut ok = Vec::new();
            let mut refused = Vec::new();
            for v in requested {
                match decisions.iter().find(|d| d.snapshot.name == v.name) {
                    Some(d) if !d.destroy() => {
                        let why: Vec<String> = d.kept_by.iter().map(ToString::to_string).collect();
                        refused.push(refuse(
                            v,
                            format!(
                                "{}@{} is kept by source job {job:?}'s client_pruning: {}",
                                fs,
                                v.name,
                                why.join(", ")
                            ),
                        ));
                    }
                    // Not a snapshot here (gone, or a bookmark): the destroy itself says so.
                    _ => ok.push(v.clone()),
                }
            }
            (ok, refused)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zrepl_protocol::{ReplicationConfig, SendRequest};

    const JOB: &str = "j";

    fn fs(s: &str) -> DatasetPath {
        DatasetPath::parse(s).unwrap()
    }

    fn snap(name: &str, guid: u64, txg: u64) -> FilesystemVersion {
        FilesystemVersion {
            typ: VersionType::Snapshot,
            name: name.into(),
            guid,
            createtxg: txg,
            creation: 0,
            userrefs: Some(0),
        }
    }

    fn held(name: &str, guid: u64, txg: u64) -> FilesystemVersion {
        FilesystemVersion {
            userrefs: Some(1),
            ..snap(name, guid, txg)
        }
    }

    fn bm(name: &str, guid: u64, txg: u64) -> FilesystemVersion {
        FilesystemVersion {
            typ: VersionType::Bookmark,
            userrefs: None,
            ..snap(name, guid, txg)
        }
    }

    fn cursor(guid: u64, txg: u64) -> FilesystemVersion {
        bm(&cursor_bookmark_name(guid, JOB), guid, txg)
    }

    fn tentative(guid: u64, txg: u64) -> FilesystemVersion {
        bm(
            &zrepl_zfs_types::abstraction::tentative_cursor_bookmark_name(guid, JOB),
            guid,
            txg,
        )
    }

    fn protection(p: Protection) -> ReplicationConfig {
        ReplicationConfig {
            initial: p,
            incremental: p,
        }
    }

    fn req(f: &str, from: Option<FilesystemVersion>, to: FilesystemVersion) -> SendRequest {
        SendRequest {
            intermediates: Vec::new(),
            filesystem: fs(f),
            from,
            to,
            resume_token: None,
            replication: protection(Protection::GuaranteeResumability),
        }
    }

    fn with(r: SendRequest, p: Protection) -> SendRequest {
        SendRequest {
            replication: protection(p),
            ..r
        }
    }

    fn listing(items: &[(&str, Vec<FilesystemVersion>)]) -> Listing {
        items.iter().map(|(f, v)| (fs(f), Ok(v.clone()))).collect()
    }

    fn paths(v: &[VersionPath]) -> Vec<String> {
        v.iter().map(ToString::to_string).collect()
    }

    fn all(_: &DatasetPath) -> bool {
        true
    }

    fn any(_: &DatasetPath) -> Result<(), EndpointError> {
        Ok(())
    }

    #[test]
    fn step_holds_table() {
        let a1 = snap("a1", 1, 10);
        let a2 = snap("a2", 2, 20);
        type Case = (
            &'static str,
            Vec<SendRequest>,
            Vec<usize>,
            Vec<&'static str>,
        );
        let cases: Vec<Case> = vec![
            (
                "incremental: from and to held",
                vec![req("p/a", Some(a1.clone()), a2.clone())],
                vec![0],
                vec!["p/a@a1", "p/a@a2"],
            ),
            (
                "from a bookmark: only to held",
                vec![req("p/a", Some(bm("b", 1, 10)), a2.clone())],
                vec![0],
                vec!["p/a@a2"],
            ),
            (
                "shared snapshot held once",
                vec![
                    req("p/a", None, a1.clone()),
                    req("p/a", Some(a1.clone()), a2.clone()),
                ],
                vec![0, 1],
                vec!["p/a@a1", "p/a@a2"],
            ),
            (
                "guarantee_incremental and guarantee_nothing: no step holds",
                vec![
                    with(
                        req("p/a", None, a1.clone()),
                        Protection::GuaranteeIncremental,
                    ),
                    with(req("p/b", None, a1.clone()), Protection::GuaranteeNothing),
                ],
                vec![],
                vec![],
            ),
            (
                "outside the filter: nothing",
                vec![req("q/x", None, a1.clone())],
                vec![],
                vec![],
            ),
        ];
        for (name, reqs, want_reqs, want_snaps) in cases {
            let h = step_holds(&reqs, |f| f.to_string().starts_with("p/")).unwrap();
            assert_eq!(h.requests, want_reqs, "{name}");
            assert_eq!(paths(&h.snapshots), want_snaps, "{name}");
        }
    }

    #[test]
    fn prepared_table() {
        let a1 = snap("a1", 1, 10);
        let a2 = snap("a2", 2, 20);
        let a2_recreated = snap("a2", 22, 25);
        type Case = (
            &'static str,
            Vec<SendRequest>,
            Listing,
            Vec<usize>,
            Vec<&'static str>,
            Vec<&'static str>,
        );
        let cases: Vec<Case> = vec![
            (
                "all match: prepared, listing kept, nothing released",
                vec![req("p/a", Some(a1.clone()), a2.clone())],
                listing(&[("p/a", vec![a1.clone(), a2.clone()])]),
                vec![0],
                vec!["p/a"],
                vec![],
            ),
            (
                "to re-created (new guid): not prepared, its holds given back",
                vec![req("p/a", Some(a1.clone()), a2.clone())],
                listing(&[("p/a", vec![a1.clone(), a2_recreated.clone()])]),
                vec![],
                vec![],
                vec!["p/a@a1", "p/a@a2"],
            ),
            (
                "one of two steps fails: the shared snapshot stays held",
                vec![
                    req("p/a", None, a1.clone()),
                    req("p/a", Some(a1.clone()), a2.clone()),
                ],
                listing(&[("p/a", vec![a1.clone()])]),
                vec![0],
                vec![],
                vec!["p/a@a2"],
            ),
            (
                "listing failed: nothing prepared",
                vec![req("p/a", None, a1.clone())],
                [(fs("p/a"), Err(EndpointError::zfs("boom")))]
                    .into_iter()
                    .collect(),
                vec![],
                vec![],
                vec!["p/a@a1"],
            ),
            (
                "a request without step holds on the same filesystem: listing not kept",
                vec![
                    req("p/a", None, a1.clone()),
                    with(
                        req("p/a", Some(a1.clone()), a2.clone()),
                        Protection::GuaranteeNothing,
                    ),
                ],
                listing(&[("p/a", vec![a1.clone(), a2.clone()])]),
                vec![0],
                vec![],
                vec![],
            ),
        ];
        for (name, reqs, listed, want_steps, want_keep, want_release) in cases {
            let h = step_holds(&reqs, all).unwrap();
            let p = prepared(&reqs, &h, &listed);
            assert_eq!(p.steps, want_steps, "{name}");
            let keep: Vec<String> = p.keep_listing.iter().map(ToString::to_string).collect();
            assert_eq!(keep, want_keep, "{name}");
            assert_eq!(paths(&p.release), want_release, "{name}");
        }
    }

    #[test]
    fn complete_sends_table() {
        let a1 = snap("a1", 1, 10);
        let a2 = snap("a2", 2, 20);
        let a3 = snap("a3", 3, 30);
        struct Case {
            name: &'static str,
            reqs: Vec<SendRequest>,
            listed: Listing,
            ok: Vec<bool>,
            cursors: Vec<&'static str>,
            replaced: Vec<(Option<&'static str>, &'static str)>,
            release: Vec<&'static str>,
        }
        let c1 = cursor_bookmark_name(1, JOB);
        let cases = vec![
            Case {
                name: "two steps: the newest becomes the cursor, the old one is replaced",
                reqs: vec![
                    req("p/a", Some(a1.clone()), a2.clone()),
                    req("p/a", Some(a2.clone()), a3.clone()),
                ],
                listed: listing(&[(
                    "p/a",
                    vec![cursor(1, 10), a1.clone(), a2.clone(), a3.clone()],
                )]),
                ok: vec![true, true],
                cursors: vec!["p/a@a3"],
                replaced: vec![(Some("cursor3"), "old1")],
                release: vec!["p/a@a1", "p/a@a2", "p/a@a3"],
            },
            Case {
                name: "crash state: a tentative cursor and two old cursors of the job go, another job's stays",
                reqs: vec![with(
                    req("p/a", Some(a1.clone()), a2.clone()),
                    Protection::GuaranteeIncremental,
                )],
                listed: listing(&[(
                    "p/a",
                    vec![
                        cursor(1, 10),
                        tentative(2, 20),
                        bm(&cursor_bookmark_name(1, "other"), 1, 10),
                        bm("users-own", 1, 10),
                        a1.clone(),
                        a2.clone(),
                    ],
                )]),
                ok: vec![true],
                cursors: vec!["p/a@a2"],
                replaced: vec![(Some("cursor2"), "old1"), (Some("cursor2"), "tentative2")],
                release: vec![],
            },
            Case {
                name: "guarantee_nothing: no cursor, the job's cursors all go",
                reqs: vec![with(
                    req("p/a", Some(a1.clone()), a2.clone()),
                    Protection::GuaranteeNothing,
                )],
                listed: listing(&[("p/a", vec![cursor(1, 10), a1.clone(), a2.clone()])]),
                ok: vec![true],
                cursors: vec![],
                replaced: vec![(None, "old1")],
                release: vec![],
            },
            Case {
                name: "a step whose to vanished fails alone; its holds are released anyway",
                reqs: vec![
                    req("p/a", Some(a1.clone()), a2.clone()),
                    req("p/b", None, a1.clone()),
                ],
                listed: listing(&[("p/a", vec![a1.clone()]), ("p/b", vec![a1.clone()])]),
                ok: vec![false, true],
                cursors: vec!["p/b@a1"],
                replaced: vec![],
                release: vec!["p/a@a1", "p/a@a2", "p/b@a1"],
            },
        ];
        for c in cases {
            let got = complete_sends(JOB, &c.reqs, any, &c.listed).unwrap();
            let ok: Vec<bool> = got.results.iter().map(Result::is_ok).collect();
            assert_eq!(ok, c.ok, "{}", c.name);
            let cursors: Vec<String> = got.cursors.iter().map(|n| n.source.to_string()).collect();
            assert_eq!(cursors, c.cursors, "{}", c.name);
            for n in &got.cursors {
                assert_eq!(
                    n.bookmark.name(),
                    cursor_bookmark_name(n.guid, JOB),
                    "{}",
                    c.name
                );
            }
            let name_of = |s: &str| match s {
                "cursor2" => cursor_bookmark_name(2, JOB),
                "cursor3" => cursor_bookmark_name(3, JOB),
                "old1" => c1.clone(),
                "tentative2" => {
                    zrepl_zfs_types::abstraction::tentative_cursor_bookmark_name(2, JOB)
                }
                s => s.to_string(),
            };
            let replaced: Vec<(Option<String>, String)> = got
                .replaced
                .iter()
                .map(|(g, b)| {
                    (
                        g.as_ref().map(|g| g.name().to_string()),
                        b.name().to_string(),
                    )
                })
                .collect();
            let want: Vec<(Option<String>, String)> = c
                .replaced
                .iter()
                .map(|(g, b)| (g.map(name_of), name_of(b)))
                .collect();
            assert_eq!(replaced, want, "{}", c.name);
            assert_eq!(paths(&got.release), c.release, "{}", c.name);
        }
    }

    #[test]
    fn a_failed_cursor_keeps_what_it_replaces() {
        let a1 = snap("a1", 1, 10);
        let a2 = snap("a2", 2, 20);
        let reqs = vec![
            req("p/a", Some(a1.clone()), a2.clone()),
            req("p/b", Some(a1.clone()), a2.clone()),
        ];
        let listed = listing(&[
            ("p/a", vec![cursor(1, 10), a1.clone(), a2.clone()]),
            ("p/b", vec![cursor(1, 10), a1.clone(), a2.clone()]),
        ]);
        let mut c = complete_sends(JOB, &reqs, any, &listed).unwrap();
        let name = |f: &str| format!("{f}#{}", cursor_bookmark_name(2, JOB));
        // p/a's snapshot was renamed in place (ESRCH), p/b's cursor was made.
        let outcome: CursorOutcome = [(name("p/a"), Err(3)), (name("p/b"), Ok(()))]
            .into_iter()
            .collect();
        let doomed = after_cursors(&reqs, &mut c, &outcome);
        assert_eq!(
            paths(&doomed),
            vec![format!("p/b#{}", cursor_bookmark_name(1, JOB))]
        );
        let msg = c.results[0].as_ref().unwrap_err().to_string();
        assert!(
            msg.contains("no longer the snapshot that was sent"),
            "{msg}"
        );
        assert!(c.results[1].is_ok());
        // Nothing reported at all (the program did not run for that pool): nothing destroyed.
        let mut c = complete_sends(JOB, &reqs, any, &listed).unwrap();
        assert!(after_cursors(&reqs, &mut c, &CursorOutcome::new()).is_empty());
    }

    #[test]
    fn stale_hold_checks_spare_pending_and_own() {
        let reqs = vec![req("p/a", Some(snap("a2", 2, 20)), snap("a3", 3, 30))];
        // a1: an earlier attempt's leftover (checked); a2/a3: this round's (released anyway);
        // a4: held for a step still pending (newer than the completed one: spared).
        let listed = listing(&[(
            "p/a",
            vec![
                held("a1", 1, 10),
                held("a2", 2, 20),
                held("a3", 3, 30),
                held("a4", 4, 40),
                snap("a5", 5, 50),
            ],
        )]);
        let c = complete_sends(JOB, &reqs, any, &listed).unwrap();
        assert_eq!(paths(&stale_hold_checks(&c, &listed)), vec!["p/a@a1"]);
    }

    #[test]
    fn cleanup_table() {
        let f = fs("p/a");
        let versions = vec![
            held("a1", 1, 10),
            held("a2", 2, 20),
            snap("a3", 3, 30),
            cursor(1, 10),
            tentative(1, 10),
            tentative(2, 20),
            bm(&cursor_bookmark_name(1, "other"), 1, 10),
            bm("users-own", 1, 10),
        ];
        let t2 = tentative(2, 20);
        // Before a step from a2 (a tentative cursor of a2 is its `from`): a1's holds checked,
        // only the other tentative cursor goes, the replication cursor stays.
        let c = cleanup(JOB, &f, &versions, &[held("a2", 2, 20), t2.clone()], false).unwrap();
        assert_eq!(paths(&c.check_holds), vec!["p/a@a1"]);
        let t1 = format!("p/a#{}", tentative(1, 10).name);
        assert_eq!(paths(&c.destroy), vec![t1.clone()]);
        // After the step (older cursors too): the old cursor goes as well, the kept new one not.
        let c = cleanup(JOB, &f, &versions, std::slice::from_ref(&t2), true).unwrap();
        assert_eq!(paths(&c.check_holds), vec!["p/a@a1", "p/a@a2"]);
        assert_eq!(
            paths(&c.destroy),
            vec![format!("p/a#{}", cursor(1, 10).name), t1]
        );
    }

    #[test]
    fn a_cursor_never_moves_backwards() {
        let a1 = snap("a1", 1, 10);
        let a2 = snap("a2", 2, 20);
        let a3 = snap("a3", 3, 30);
        // The cursor is at a3; a completion of a1 -> a2 (a receiver rolled back or re-seeded,
        // or a malicious client) makes a2's cursor and keeps a3's: nothing the peer sends can
        // destroy a newer cursor. Another job's newer cursor and a tentative cursor do not count.
        let reqs = vec![
            req("p/a", Some(a1.clone()), a2.clone()),
            req("p/b", Some(a1.clone()), a2.clone()),
        ];
        let listed = listing(&[
            (
                "p/a",
                vec![a1.clone(), a2.clone(), a3.clone(), cursor(3, 30)],
            ),
            (
                "p/b",
                vec![
                    a1.clone(),
                    a2.clone(),
                    a3.clone(),
                    cursor(1, 10),
                    bm(&cursor_bookmark_name(3, "other"), 3, 30),
                    tentative(3, 30),
                ],
            ),
        ]);
        let c = complete_sends(JOB, &reqs, any, &listed).unwrap();
        assert!(c.results.iter().all(Result::is_ok));
        let cursors: Vec<String> = c.cursors.iter().map(|n| n.source.to_string()).collect();
        assert_eq!(cursors, vec!["p/a@a2", "p/b@a2"]);
        let replaced: Vec<String> = c.replaced.iter().map(|(_, b)| b.to_string()).collect();
        assert!(
            !replaced.iter().any(|b| b.starts_with("p/a#")),
            "{replaced:?}"
        );
        assert_eq!(c.not_moved.len(), 1);
        assert!(c.not_moved[0].contains("p/a@a2 is older than the replication cursor"));
        // The peer's claimed createtxg does not count: a `to` that says it is the newest is
        // still a2 here.
        let lying = vec![req("p/a", Some(a1.clone()), snap("a2", 2, u64::MAX))];
        let c = complete_sends(JOB, &lying, any, &listed).unwrap();
        assert!(c.replaced.is_empty(), "{:?}", c.replaced);
        assert_eq!(c.newest_txg[&fs("p/a")], 20);
        // The same `to` as the cursor is no move at all.
        assert!(newer_cursors(JOB, &[cursor(3, 30)], &a3).is_empty());
    }

    #[test]
    fn client_destroy_table() {
        let f = fs("p/a");
        let v: Vec<FilesystemVersion> =
            (1..=5).map(|i| snap(&format!("a{i}"), i, i * 10)).collect();
        let mut listing = v.clone();
        listing.push(cursor(3, 30));
        let names = |x: &[FilesystemVersion]| x.iter().map(|v| v.name.clone()).collect::<Vec<_>>();
        let req = vec![v[0].clone(), v[3].clone(), v[4].clone()];
        // Allow: everything requested goes (zrepl 0.7).
        let (ok, no) = client_destroy(JOB, &ClientDestroy::Allow, &f, &req, &listing);
        assert_eq!(names(&ok), ["a1", "a4", "a5"]);
        assert!(no.is_empty());
        // Refuse: nothing, each with why.
        let (ok, no) = client_destroy(JOB, &ClientDestroy::Refuse, &f, &req, &listing);
        assert!(ok.is_empty());
        assert_eq!(no.len(), 3);
        assert!(no[0].error.as_ref().unwrap().contains("allow: false"));
        // Keep not_replicated + last_n 1: a4 (after the cursor at a3) and a5 stay.
        let rules = vec![
            zrepl_pruning::Rule::NotReplicated {
                keep_snapshot_at_cursor: true,
            },
            zrepl_pruning::Rule::LastN {
                count: 1,
                regex: None,
            },
        ];
        let (ok, no) = client_destroy(JOB, &ClientDestroy::Keep(rules), &f, &req, &listing);
        assert_eq!(names(&ok), ["a1"]);
        let refused: Vec<&str> = no.iter().map(|r| r.snapshot.as_str()).collect();
        assert_eq!(refused, ["a4", "a5"]);
        assert!(
            no[0].error.as_ref().unwrap().contains("kept by source job"),
            "{:?}",
            no[0]
        );
        // No rules at all keep everything (zrepl's pruner destroys nothing without rules).
        let (ok, _) = client_destroy(JOB, &ClientDestroy::Keep(vec![]), &f, &req, &listing);
        assert!(ok.is_empty());
    }
}
