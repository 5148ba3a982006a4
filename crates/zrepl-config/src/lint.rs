//! Advice about a valid config that `zrepl configcheck` prints (never an error, and not printed
//! by the other commands, so that zrepl 0.7 configs load as quietly as in zrepl).

use crate::model::{Job, KeepRule, PruningScope};
use zrepl_filters::SnapshotFilter;

/// Names of snapshots other tools and people make, to test whether keep rules spare them.
const FOREIGN_SAMPLES: &[&str] = &[
    "manual",
    "before-upgrade",
    "autosnap_2026-01-01_00:00:01_hourly",
    "vzdump",
    "zfs-auto-snap_daily-2026-01-01-0000",
];

/// Keep-rule lists that destroy snapshots the job did not make (zrepl#651): with `pruning.scope:
/// all` (zrepl 0.7's meaning), what no rule keeps is destroyed, also snapshots made by hand or by
/// other tools. One message per job and side whose rules keep none of several typical foreign
/// names (a `{type: regex, negate: true, regex: "^<prefix>"}` rule, or any rule keeping
/// everything, silences it).
pub fn foreign_pruning(cfg: &crate::Config) -> Vec<String> {
    let mut out = Vec::new();
    for job in &cfg.jobs {
        let (sides, scope, own): (Vec<(&str, &[KeepRule])>, PruningScope, SnapshotFilter) =
            match job {
                Job::Push(p) => (
                    vec![
                        ("keep_sender", &p.pruning.keep_sender),
                        ("keep_receiver", &p.pruning.keep_receiver),
                    ],
                    p.pruning.scope,
                    own(&p.replication.snapshots, p.snapshotting.prefix()),
                ),
                Job::Pull(p) => (
                    vec![
                        ("keep_sender", &p.pruning.keep_sender),
                        ("keep_receiver", &p.pruning.keep_receiver),
                    ],
                    p.pruning.scope,
                    own(&p.replication.snapshots, None),
                ),
                Job::Snap(s) => (
                    vec![("keep", &s.pruning.keep)],
                    s.pruning.scope,
                    own(&SnapshotFilter::all(), s.snapshotting.prefix()),
                ),
                Job::Sink(_) | Job::Source(_) => continue,
            };
        if scope != PruningScope::All || own.is_all() {
            continue;
        }
        let foreign: Vec<&str> = FOREIGN_SAMPLES
            .iter()
            .copied()
            .filter(|n| !own.selects(n))
            .collect();
        if foreign.is_empty() {
            continue;
        }
        for (side, rules) in sides {
            let spared = foreign.iter().all(|n| rules.iter().any(|r| keeps(r, n)));
            if !spared {
                out.push(format!(
                    "job {:?}: pruning.{side} destroys every snapshot no rule keeps, also snapshots this job did not make ({own} are its own; others are made by hand, Proxmox, sanoid...). \
                     Set pruning.scope: {} to spare them, or add a rule such as {{type: regex, negate: true, regex: ...}} that keeps them",
                    job.name(),
                    if matches!(job, Job::Snap(_)) { "own" } else { "own (or selected)" },
                ));
            }
        }
    }
    out
}

fn own(selection: &SnapshotFilter, prefix: Option<&str>) -> SnapshotFilter {
    match prefix {
        _ if !selection.is_all() => selection.clone(),
        Some(p) => SnapshotFilter::prefix(p),
        None => SnapshotFilter::all(),
    }
}

/// Does this rule keep a snapshot named `name` whatever its age and neighbours?
fn keeps(rule: &KeepRule, name: &str) -> bool {
    match rule {
        KeepRule::Regex { regex, negate } => regex.0.is_match(name) != *negate,
        _ => false,
    }
}
