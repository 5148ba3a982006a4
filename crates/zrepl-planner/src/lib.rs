//! Replication planning for one filesystem, as a pure function.
//!
//! Input: the sender's versions (snapshots and bookmarks), what the receiver has (versions,
//! placeholder state, a resume token) and the policy. Output: the steps that bring the receiver up
//! to date (`from -> to` pairs, the first one possibly a full send or a resumed transfer), or a
//! [`PlanError`] that says what is wrong and what the user can do about it.
//!
//! Versions are matched by GUID, never by name, and ordered by `createtxg` (bookmarks before
//! snapshots of the same txg), as zrepl 0.7 does (spec §3.3). The planner reads no clock, spawns
//! nothing and cannot fail on a neighbour's filesystem: the caller plans every filesystem on its
//! own and records each error in the report.

use std::collections::HashMap;
use std::fmt;

use zrepl_filters::SnapshotFilter;
use zrepl_zfs_types::resume_token::{self, ResumeToken, ResumeTokenError};
use zrepl_zfs_types::{FilesystemVersion, VersionType};

/// What to do when the receiver has no version of a filesystem yet (`conflict_resolution`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InitialReplication {
    /// Full send of the newest sender snapshot (zrepl's default).
    #[default]
    MostRecent,
    /// Full send of the oldest snapshot, then incrementals through all of them.
    All,
    /// Refuse: the user has to seed the receiver by hand.
    Fail,
}

/// Planning policy.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Policy {
    pub initial_replication: InitialReplication,
    /// Which sender snapshots are replicated (`replication.snapshots`; default: all). A snapshot
    /// it does not select is never a step's target: steps go from the last selected (or common)
    /// version straight to the next selected one (`zfs send -i` skips the others). Any common
    /// version, selected or not, is a valid incremental base.
    pub snapshots: SnapshotFilter,
    /// `replication.packages`: consecutive incremental steps go as one `zfs send -I` stream
    /// where that carries exactly the same snapshots (the base is a snapshot, and no sender
    /// snapshot in between is unselected). Off: one stream per snapshot, as zrepl 0.7.
    pub packages: bool,
}

/// The sender's view of one filesystem.
#[derive(Debug, Clone, Default)]
pub struct SenderFs {
    /// A sender-side placeholder (chained replication A -> B -> C): nothing to send.
    pub is_placeholder: bool,
    /// All snapshots and bookmarks, in any order.
    pub versions: Vec<FilesystemVersion>,
}

/// The receiver's view of one filesystem.
#[derive(Debug, Clone, Default)]
pub struct ReceiverFs {
    pub exists: bool,
    pub is_placeholder: bool,
    /// All snapshots and bookmarks, in any order (ignored for placeholders).
    pub versions: Vec<FilesystemVersion>,
    /// `receive_resume_token`, if a partial receive is waiting.
    pub resume_token: Option<String>,
}

/// One replication step: send `to` (incrementally from `from` if given) and receive it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub from: Option<FilesystemVersion>,
    pub to: FilesystemVersion,
    /// Set for the step that resumes a partial receive.
    pub resume_token: Option<String>,
    /// A package (`zfs send -I from to`): the snapshots the stream creates before `to`, oldest
    /// first. Empty for a single-snapshot step.
    pub intermediates: Vec<FilesystemVersion>,
}

impl Step {
    /// Full send (no common base)?
    pub fn is_initial(&self) -> bool {
        self.from.is_none()
    }

    /// The creation time of `to`, which orders steps across filesystems (oldest first).
    pub fn target_date(&self) -> i64 {
        self.to.creation
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.from {
            Some(from) => write!(f, "{} => {}", from.relative_name(), self.to.relative_name())?,
            None => write!(f, "full send of {}", self.to.relative_name())?,
        }
        if !self.intermediates.is_empty() {
            write!(f, " (-I, {} snapshots)", self.intermediates.len() + 1)?;
        }
        if self.resume_token.is_some() {
            f.write_str(" (resuming)")?;
        }
        Ok(())
    }
}

/// A disagreement between sender and receiver history that zrepl does not resolve on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conflict {
    /// The sender has no snapshot to send.
    NoSenderSnapshots,
    /// The sender has snapshots, but the job's snapshot filter selects none of them.
    NoSelectedSnapshots { filter: String },
    /// Both sides have versions, but none is shared.
    NoCommonAncestor {
        sender: Vec<FilesystemVersion>,
        receiver: Vec<FilesystemVersion>,
    },
    /// They share `last_common`, but the receiver has newer snapshots the sender lacks.
    Diverged {
        last_common: FilesystemVersion,
        sender_only: Vec<FilesystemVersion>,
        receiver_only: Vec<FilesystemVersion>,
    },
}

fn names(vs: &[FilesystemVersion]) -> String {
    if vs.is_empty() {
        return "(none)".into();
    }
    vs.iter()
        .map(FilesystemVersion::relative_name)
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Conflict::NoSenderSnapshots => write!(
                f,
                "no snapshots available on sender side: create a snapshot of this filesystem \
                 (configure snapshotting or run `zfs snapshot`) before it can be replicated"
            ),
            Conflict::NoSelectedSnapshots { filter } => write!(
                f,
                "no snapshot of this filesystem is selected for replication \
                 (replication.snapshots selects {filter}): create a selected snapshot or widen the filter"
            ),
            Conflict::NoCommonAncestor { sender, receiver } => write!(
                f,
                "no common snapshot or suitable bookmark between sender and receiver \
                 (sender: {}; receiver: {}). The receiving filesystem was not created by replication \
                 from this sender, or every common snapshot was destroyed on both sides. To start \
                 over, destroy or rename the receiving filesystem so that zrepl performs a full \
                 initial replication",
                names(sender),
                names(receiver)
            ),
            Conflict::Diverged {
                last_common,
                sender_only,
                receiver_only,
            } => write!(
                f,
                "the receiver's latest snapshot is not present on sender: last common version {}, \
                 sender-only: {}, receiver-only: {}. To continue, roll the receiving filesystem back \
                 to {} (`zfs rollback -r <receiving fs>@{}`), which destroys the receiver-only snapshots",
                last_common.relative_name(),
                names(sender_only),
                names(receiver_only),
                last_common.relative_name(),
                last_common.name
            ),
        }
    }
}

/// Why a filesystem cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("sender filesystem is placeholder, but receiver filesystem is not")]
    SenderPlaceholderReceiverNot,
    #[error("sender does not have any versions")]
    NoSenderVersions,
    #[error("cannot decode the receiver's resume token: {0}")]
    ResumeTokenUndecodable(ResumeTokenError),
    #[error(
        "resume token 'toguid' = {toguid:#x} not found on sender ('toname' = {toname:?}): the snapshot \
         being transferred was destroyed on the sender. Abort the partial receive with \
         `zfs recv -A <receiving fs>` to replicate from scratch"
    )]
    ResumeToNotFound { toguid: u64, toname: String },
    #[error(
        "resume token 'fromguid' = {fromguid:#x} not found on sender: the incremental source was \
         destroyed on the sender. Abort the partial receive with `zfs recv -A <receiving fs>`"
    )]
    ResumeFromNotFound { fromguid: u64 },
    #[error("resume token is invalid: 'fromguid' and 'toguid' are the same version ({guid:#x})")]
    ResumeFromEqualsTo { guid: u64 },
    #[error("automatic conflict resolution for initial replication is disabled in config (conflict_resolution.initial_replication: fail)")]
    InitialReplicationDisabled,
    #[error("{0}")]
    Conflict(Conflict),
}

/// Sorts versions the way zrepl orders history: createtxg, then bookmark before snapshot.
pub fn sort_versions(vs: &mut [FilesystemVersion]) {
    vs.sort_by_key(FilesystemVersion::order_key);
}

/// Plans one filesystem. An empty result means "up to date".
pub fn plan(
    sender: &SenderFs,
    receiver: &ReceiverFs,
    policy: &Policy,
) -> Result<Vec<Step>, PlanError> {
    let steps = plan_steps(sender, receiver, policy)?;
    if !policy.packages || steps.len() < 2 {
        return Ok(steps);
    }
    let mut svs = sender.versions.clone();
    sort_versions(&mut svs);
    Ok(packages(steps, &svs, &policy.snapshots))
}

/// The most snapshots one `-I` package carries: its request names each of them (at most ~400
/// bytes each with a 255-byte name, so a package request stays far below the 4 MiB request
/// limit) and a longer backlog costs one more stream per thousand snapshots.
pub const MAX_PACKAGE_SNAPSHOTS: usize = 1000;

/// Merges consecutive incremental steps into `-I` packages where the package carries exactly
/// the snapshots the single steps would: the base is a snapshot (`-I` cannot start at a
/// bookmark), neither step resumes a transfer, and every sender snapshot between the base and
/// the new end is selected (`-I` sends every snapshot in between). `svs` is sorted.
fn packages(steps: Vec<Step>, svs: &[FilesystemVersion], filter: &SnapshotFilter) -> Vec<Step> {
    // Unselected snapshots by createtxg, to count those inside a range.
    let unselected: Vec<u64> = snapshots(svs)
        .filter(|v| !filter.selects(&v.name))
        .map(|v| v.createtxg)
        .collect();
    let any_unselected_in = |lo: u64, hi: u64| {
        // Some unselected snapshot with lo < txg < hi?
        let i = unselected.partition_point(|t| *t <= lo);
        unselected.get(i).is_some_and(|t| *t < hi)
    };
    let mut out: Vec<Step> = Vec::with_capacity(steps.len());
    for step in steps {
        if let Some(cur) = out.last_mut() {
            let mergeable = cur.intermediates.len() + 2 <= MAX_PACKAGE_SNAPSHOTS
                && cur.resume_token.is_none()
                && step.resume_token.is_none()
                && step.from.as_ref().is_some_and(|f| f.guid == cur.to.guid)
                && cur
                    .from
                    .as_ref()
                    .is_some_and(|f| f.typ == VersionType::Snapshot)
                && !any_unselected_in(
                    cur.from.as_ref().map_or(0, |f| f.createtxg),
                    step.to.createtxg,
                );
            if mergeable {
                let prev_to = std::mem::replace(&mut cur.to, step.to);
                cur.intermediates.push(prev_to);
                continue;
            }
        }
        out.push(step);
    }
    out
}

fn plan_steps(
    sender: &SenderFs,
    receiver: &ReceiverFs,
    policy: &Policy,
) -> Result<Vec<Step>, PlanError> {
    if sender.is_placeholder {
        if receiver.exists && !receiver.is_placeholder {
            return Err(PlanError::SenderPlaceholderReceiverNot);
        }
        return Ok(Vec::new());
    }
    if sender.versions.is_empty() {
        return Err(PlanError::NoSenderVersions);
    }
    let mut svs = sender.versions.clone();
    sort_versions(&mut svs);

    if let Some(token) = receiver.resume_token.as_deref().filter(|t| !t.is_empty()) {
        let decoded = resume_token::decode(token).map_err(PlanError::ResumeTokenUndecodable)?;
        return plan_resume(&svs, token, &decoded, &policy.snapshots);
    }

    let mut rvs: Vec<FilesystemVersion> = if receiver.exists && !receiver.is_placeholder {
        receiver
            .versions
            .iter()
            .filter(|v| v.typ == VersionType::Snapshot)
            .cloned()
            .collect()
    } else {
        Vec::new()
    };
    sort_versions(&mut rvs);

    match incremental_path(&svs, &rvs) {
        Ok(path) => Ok(select(path, &policy.snapshots)
            .windows(2)
            .map(|w| Step {
                from: Some(w[0].clone()),
                to: w[1].clone(),
                resume_token: None,
                intermediates: Vec::new(),
            })
            .collect()),
        Err(Conflict::NoCommonAncestor { .. }) if rvs.is_empty() => initial(&svs, policy),
        Err(c) => Err(PlanError::Conflict(c)),
    }
}

fn snapshots(svs: &[FilesystemVersion]) -> impl Iterator<Item = &FilesystemVersion> {
    svs.iter().filter(|v| v.typ == VersionType::Snapshot)
}

/// An incremental path `[base, s1, s2, ...]` reduced to the base and the selected snapshots.
fn select(path: Vec<FilesystemVersion>, filter: &SnapshotFilter) -> Vec<FilesystemVersion> {
    if filter.is_all() {
        return path;
    }
    let mut it = path.into_iter();
    let base = it.next();
    base.into_iter()
        .chain(it.filter(|v| filter.selects(&v.name)))
        .collect()
}

/// The steps of an initial replication, per policy.
fn initial(svs: &[FilesystemVersion], policy: &Policy) -> Result<Vec<Step>, PlanError> {
    if snapshots(svs).next().is_none() {
        return Err(PlanError::Conflict(Conflict::NoSenderSnapshots));
    }
    let snaps: Vec<&FilesystemVersion> = snapshots(svs)
        .filter(|v| policy.snapshots.selects(&v.name))
        .collect();
    let (Some(first), Some(last)) = (snaps.first(), snaps.last()) else {
        return Err(PlanError::Conflict(Conflict::NoSelectedSnapshots {
            filter: policy.snapshots.to_string(),
        }));
    };
    match policy.initial_replication {
        InitialReplication::Fail => Err(PlanError::InitialReplicationDisabled),
        InitialReplication::MostRecent => Ok(vec![Step {
            from: None,
            to: (*last).clone(),
            resume_token: None,
            intermediates: Vec::new(),
        }]),
        InitialReplication::All => {
            let mut steps = vec![Step {
                from: None,
                to: (*first).clone(),
                resume_token: None,
                intermediates: Vec::new(),
            }];
            steps.extend(chain(&snaps));
            Ok(steps)
        }
    }
}

/// Incremental steps between consecutive snapshots, skipping repeated GUIDs.
fn chain(snaps: &[&FilesystemVersion]) -> Vec<Step> {
    let mut out = Vec::new();
    let mut prev = match snaps.first() {
        Some(p) => *p,
        None => return out,
    };
    for s in &snaps[1..] {
        if s.guid == prev.guid {
            continue;
        }
        out.push(Step {
            from: Some(prev.clone()),
            to: (*s).clone(),
            resume_token: None,
            intermediates: Vec::new(),
        });
        prev = s;
    }
    out
}

fn plan_resume(
    svs: &[FilesystemVersion],
    token: &str,
    t: &ResumeToken,
    filter: &SnapshotFilter,
) -> Result<Vec<Step>, PlanError> {
    let to_idx = svs
        .iter()
        .position(|v| v.typ == VersionType::Snapshot && v.guid == t.toguid)
        .ok_or_else(|| PlanError::ResumeToNotFound {
            toguid: t.toguid,
            toname: t.toname.clone(),
        })?;
    let to = &svs[to_idx];
    let from = match t.fromguid.filter(|g| *g != 0) {
        None => None,
        Some(g) => {
            let candidates: Vec<&FilesystemVersion> = svs.iter().filter(|v| v.guid == g).collect();
            let chosen = candidates
                .iter()
                .find(|v| v.typ == VersionType::Snapshot)
                .or(candidates.first())
                .copied()
                .ok_or(PlanError::ResumeFromNotFound { fromguid: g })?;
            if chosen.guid == to.guid {
                return Err(PlanError::ResumeFromEqualsTo { guid: g });
            }
            Some(chosen.clone())
        }
    };
    let mut steps = vec![Step {
        from,
        to: to.clone(),
        resume_token: Some(token.to_string()),
        intermediates: Vec::new(),
    }];
    // The partial receive is finished whatever the filter says now (it was selected when it
    // started, and abandoning it would need a `zfs recv -A`); then the selected later snapshots.
    let later: Vec<&FilesystemVersion> = std::iter::once(to)
        .chain(snapshots(&svs[to_idx + 1..]).filter(|v| filter.selects(&v.name)))
        .collect();
    steps.extend(chain(&later));
    Ok(steps)
}

/// zrepl's `IncrementalPath`: the most recent common ancestor and every later sender snapshot.
///
/// `sender` and `receiver` must be sorted ([`sort_versions`]); the receiver list holds snapshots
/// only. Returns the path `[mrca, s1, s2, ...]` (`mrca` may be a sender bookmark), which has
/// length 1 when the receiver is up to date.
pub fn incremental_path(
    sender: &[FilesystemVersion],
    receiver: &[FilesystemVersion],
) -> Result<Vec<FilesystemVersion>, Conflict> {
    // Newest sender index per GUID, preferring the snapshot (sorted after a bookmark of the same
    // txg), as zrepl's newest-to-oldest scan does; O(n + m) instead of zrepl's O(n * m).
    let mut by_guid: HashMap<u64, usize> = HashMap::with_capacity(sender.len());
    for (i, v) in sender.iter().enumerate() {
        by_guid.insert(v.guid, i);
    }
    let found = receiver
        .iter()
        .enumerate()
        .rev()
        .find_map(|(ri, r)| by_guid.get(&r.guid).map(|si| (ri, *si)));
    let Some((ri, si)) = found else {
        if snapshots(sender).next().is_none() {
            return Err(Conflict::NoSenderSnapshots);
        }
        return Err(Conflict::NoCommonAncestor {
            sender: sender.to_vec(),
            receiver: receiver.to_vec(),
        });
    };
    if ri + 1 < receiver.len() {
        return Err(Conflict::Diverged {
            last_common: sender[si].clone(),
            sender_only: sender[si + 1..].to_vec(),
            receiver_only: receiver[ri + 1..].to_vec(),
        });
    }
    let mut path = vec![sender[si].clone()];
    for v in snapshots(&sender[si + 1..]) {
        if path.last().is_some_and(|p| p.guid == v.guid) {
            continue;
        }
        path.push(v.clone());
    }
    Ok(path)
}

#[cfg(test)]
mod tests;
