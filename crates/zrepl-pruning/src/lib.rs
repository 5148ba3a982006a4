//! Pruning decisions, as a pure function: which snapshots of one filesystem go, and why each one
//! that stays stays.
//!
//! Semantics are zrepl 0.7's (spec §2.8):
//! * a snapshot is destroyed only if **no** rule keeps it; no rules means nothing is destroyed;
//! * `not_replicated` keeps what the sender's replication cursor has not reached yet;
//! * `last_n` keeps the `count` newest matching snapshots (creation, then name, descending);
//! * `regex` keeps matching snapshots (or non-matching ones with `negate`);
//! * `grid` lays buckets backwards from the youngest matching snapshot and keeps the `keep`
//!   oldest of each bucket (all with `keep=all`); older than the last bucket goes.
//!
//! On top, snapshots the caller marks as protected (the replication cursor's snapshot, snapshots
//! under a step hold) are always kept: pruning must never break resumability or the incremental
//! chain, whatever the rules say. Bookmarks are never pruned (callers pass snapshots only).

use std::fmt;

/// One snapshot of the pruned side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub name: String,
    pub guid: u64,
    pub createtxg: u64,
    /// Creation time, Unix seconds.
    pub creation: i64,
}

/// One grid bucket: `length` seconds, keeping `keep` snapshots (`None` = all).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    pub length: i64,
    pub keep: Option<u64>,
}

/// A keep rule.
#[derive(Debug, Clone)]
pub enum Rule {
    NotReplicated {
        keep_snapshot_at_cursor: bool,
    },
    LastN {
        count: u64,
        regex: Option<regex::Regex>,
    },
    Grid {
        buckets: Vec<Bucket>,
        regex: regex::Regex,
        spec: String,
    },
    Regex {
        regex: regex::Regex,
        negate: bool,
    },
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::NotReplicated { .. } => write!(f, "not_replicated"),
            Rule::LastN { count, regex: None } => write!(f, "last_n(count={count})"),
            Rule::LastN {
                count,
                regex: Some(r),
            } => write!(f, "last_n(count={count}, regex={:?})", r.as_str()),
            Rule::Grid { spec, regex, .. } => write!(f, "grid({spec}, regex={:?})", regex.as_str()),
            Rule::Regex {
                regex,
                negate: false,
            } => write!(f, "regex({:?})", regex.as_str()),
            Rule::Regex {
                regex,
                negate: true,
            } => write!(f, "regex(not {:?})", regex.as_str()),
        }
    }
}

/// Why a snapshot is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeepReason {
    /// Rule number `index` (0-based, in config order) keeps it.
    Rule { index: usize, rule: String },
    /// Protected by the caller (replication cursor, step hold, ...).
    Protected(String),
}

impl fmt::Display for KeepReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeepReason::Rule { index, rule } => write!(f, "kept by rule #{} {rule}", index + 1),
            KeepReason::Protected(why) => write!(f, "protected: {why}"),
        }
    }
}

/// The decision for one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub snapshot: Snapshot,
    /// Empty means: destroy.
    pub kept_by: Vec<KeepReason>,
}

impl Decision {
    pub fn destroy(&self) -> bool {
        self.kept_by.is_empty()
    }
}

/// What the rules need to know besides the snapshots.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// GUID of the sender's replication cursor (for `not_replicated`); `None` = unknown.
    pub cursor_guid: Option<u64>,
    /// Is this the sender side (`keep_snapshot_at_cursor` applies only there)?
    pub sender_side: bool,
    /// Snapshots that must never be destroyed, by GUID, with the reason.
    pub protected: Vec<(u64, String)>,
}

/// Decides for every snapshot. The result has one decision per input snapshot, in input order.
pub fn decide(snaps: &[Snapshot], rules: &[Rule], ctx: &Context) -> Vec<Decision> {
    let mut kept: Vec<Vec<KeepReason>> = vec![Vec::new(); snaps.len()];
    if rules.is_empty() {
        // No rules: nothing is destroyed (zrepl's pruner destroys nothing with an empty list).
        for k in &mut kept {
            k.push(KeepReason::Protected("no keep rules configured".into()));
        }
    }
    for (index, rule) in rules.iter().enumerate() {
        let keep = keeps(rule, snaps, ctx);
        for (i, k) in keep.into_iter().enumerate() {
            if k {
                kept[i].push(KeepReason::Rule {
                    index,
                    rule: rule.to_string(),
                });
            }
        }
    }
    for (guid, why) in &ctx.protected {
        for (i, s) in snaps.iter().enumerate() {
            if s.guid == *guid {
                kept[i].push(KeepReason::Protected(why.clone()));
            }
        }
    }
    snaps
        .iter()
        .cloned()
        .zip(kept)
        .map(|(snapshot, kept_by)| Decision { snapshot, kept_by })
        .collect()
}

/// Which snapshots one rule keeps (`true` at the snapshot's index).
fn keeps(rule: &Rule, snaps: &[Snapshot], ctx: &Context) -> Vec<bool> {
    match rule {
        Rule::Regex { regex, negate } => snaps
            .iter()
            .map(|s| regex.is_match(&s.name) != *negate)
            .collect(),
        Rule::LastN { count, regex } => {
            let mut idx: Vec<usize> = (0..snaps.len())
                .filter(|&i| regex.as_ref().is_none_or(|r| r.is_match(&snaps[i].name)))
                .collect();
            idx.sort_by(|&a, &b| {
                snaps[b]
                    .creation
                    .cmp(&snaps[a].creation)
                    .then_with(|| snaps[b].name.cmp(&snaps[a].name))
            });
            let mut out = vec![false; snaps.len()];
            for &i in idx.iter().take(*count as usize) {
                out[i] = true;
            }
            out
        }
        Rule::NotReplicated {
            keep_snapshot_at_cursor,
        } => {
            let at_cursor_replicated = ctx.sender_side && !keep_snapshot_at_cursor;
            let cursor_txg = ctx
                .cursor_guid
                .and_then(|g| snaps.iter().find(|s| s.guid == g))
                .map(|s| s.createtxg);
            match cursor_txg {
                // Without the cursor's snapshot on this side, nothing counts as replicated.
                None => vec![true; snaps.len()],
                Some(c) => snaps
                    .iter()
                    .map(|s| {
                        let replicated =
                            s.createtxg < c || (at_cursor_replicated && s.createtxg == c);
                        !replicated
                    })
                    .collect(),
            }
        }
        Rule::Grid { buckets, regex, .. } => grid(buckets, regex, snaps),
    }
}

fn grid(buckets: &[Bucket], regex: &regex::Regex, snaps: &[Snapshot]) -> Vec<bool> {
    let mut out = vec![false; snaps.len()];
    let matching: Vec<usize> = (0..snaps.len())
        .filter(|&i| regex.is_match(&snaps[i].name))
        .collect();
    let Some(now) = matching.iter().map(|&i| snaps[i].creation).max() else {
        return out;
    };
    // Bucket j covers ages [ends[j-1], ends[j]): age 0 (the youngest) is in bucket 0, and an age
    // exactly on a boundary belongs to the older bucket. Binary search keeps this O(n log b).
    let mut ends = Vec::with_capacity(buckets.len());
    let mut acc = 0i64;
    for b in buckets {
        acc = acc.saturating_add(b.length);
        ends.push(acc);
    }
    let mut per_bucket: std::collections::BTreeMap<usize, Vec<usize>> =
        std::collections::BTreeMap::new();
    for &i in &matching {
        let age = now - snaps[i].creation; // >= 0: `now` is the youngest matching creation
        let j = ends.partition_point(|&e| e <= age);
        if j < buckets.len() {
            per_bucket.entry(j).or_default().push(i);
        } // else: older than the last bucket, not kept by this rule
    }
    for (j, members) in per_bucket.iter_mut() {
        let j = *j;
        members.sort_by(|&a, &b| {
            snaps[a]
                .creation
                .cmp(&snaps[b].creation)
                // Equal creation seconds: the later txg counts as older, as zrepl's stable sort has it.
                .then_with(|| snaps[b].createtxg.cmp(&snaps[a].createtxg))
        });
        let keep = match buckets[j].keep {
            None => members.len(),
            Some(k) => (k as usize).min(members.len()),
        };
        for &i in members.iter().take(keep) {
            out[i] = true;
        }
    }
    out
}

#[cfg(test)]
mod tests;
