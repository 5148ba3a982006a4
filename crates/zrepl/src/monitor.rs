//! The decisions of `zrepl monitor` without I/O: what each filesystem's age is, which state the
//! thresholds give it, and the Nagios plugin output (status line, long text, perfdata) with its
//! exit code. `now` and the listings are parameters; `monitor_cmd.rs` does the listing.
//!
//! Plugin conventions (Nagios plugin API, as sanoid's and bzfs's `--monitor-snapshots` follow
//! them): the first line is `ZREPL <CHECK> <STATE> - <summary>`, then one line per problem and
//! per filesystem, and the performance data after a `|` on the last line, one value per line:
//! `'<filesystem>'=<age>s;<warning>;<critical>;0`. Exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use regex::Regex;
use zrepl_status::{DaemonStatus, JobState};
use zrepl_zfs::{DatasetPath, FilesystemVersion, VersionType, VersionsByFilesystem};
use zrepl_zfs_types::abstraction::{parse_cursor_bookmark, AbstractionType};

/// A check's result; the order is the severity used to combine filesystems.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum State {
    Ok,
    Warning,
    Critical,
    Unknown,
}

impl State {
    pub fn code(self) -> u8 {
        match self {
            State::Ok => 0,
            State::Warning => 1,
            State::Critical => 2,
            State::Unknown => 3,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            State::Ok => "OK",
            State::Warning => "WARNING",
            State::Critical => "CRITICAL",
            State::Unknown => "UNKNOWN",
        }
    }
}

/// Age thresholds in seconds: older than `warning` is WARNING, older than `critical` CRITICAL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    warning: Option<i64>,
    critical: Option<i64>,
}

impl Thresholds {
    /// At least one threshold, both positive, and the warning below the critical one.
    pub fn new(warning: Option<i64>, critical: Option<i64>) -> Result<Self, String> {
        if warning.is_none() && critical.is_none() {
            return Err("give --warning and/or --critical".into());
        }
        if let (Some(w), Some(c)) = (warning, critical) {
            if w >= c {
                return Err(format!(
                    "--warning ({}) must be shorter than --critical ({})",
                    age(w),
                    age(c)
                ));
            }
        }
        Ok(Thresholds { warning, critical })
    }

    fn state(&self, age_secs: i64) -> State {
        if self.critical.is_some_and(|c| age_secs > c) {
            State::Critical
        } else if self.warning.is_some_and(|w| age_secs > w) {
            State::Warning
        } else {
            State::Ok
        }
    }
}

/// A threshold: a zrepl duration (`90m`, `26h`, `2d`, `1w`) or a Go duration (`1h30m`).
pub fn parse_threshold(s: &str) -> Result<i64, String> {
    let secs = match zrepl_config::units::ZreplDuration::parse(s) {
        Ok(d) => d.as_secs(),
        Err(_) => {
            let d = zrepl_config::units::GoDuration::parse(s).map_err(|_| {
                format!("invalid duration {s:?}: expected e.g. 90m, 26h, 2d, 1w or 1h30m")
            })?;
            i64::try_from(d.as_nanos() / 1_000_000_000).map_err(|_| format!("{s:?} is too long"))?
        }
    };
    if secs <= 0 {
        return Err(format!("invalid duration {s:?}: must be positive"));
    }
    Ok(secs)
}

/// What was found for one filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// The newest relevant version (`@snap`, or a description) and its creation (Unix seconds).
    Newest { name: String, creation: i64 },
    /// Nothing to measure an age from; always CRITICAL, with this reason.
    Missing(String),
}

/// One check over filesystems.
#[derive(Debug, Clone)]
pub struct Check<'a> {
    /// `SNAPSHOTS`, `REPLICATION`.
    pub name: &'a str,
    /// How a newest version is described: `newest snapshot`, `last replicated snapshot`.
    pub what: &'a str,
    pub thresholds: Thresholds,
}

/// The plugin's output and exit state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub state: State,
    pub text: String,
}

impl Report {
    /// A check that could not be made (bad arguments, zfs or config failure).
    pub fn unknown(check: &str, why: &str) -> Report {
        Report {
            state: State::Unknown,
            text: format!("ZREPL {check} UNKNOWN - {}\n", one_line(why)),
        }
    }
}

/// Evaluates every filesystem at `now`: the worst state wins; no filesystem at all is CRITICAL
/// (a pool that is not imported, a filter that matches nothing).
pub fn evaluate(check: &Check<'_>, now: i64, items: &[(String, Observation)]) -> Report {
    let name = check.name;
    if items.is_empty() {
        return Report {
            state: State::Critical,
            text: format!("ZREPL {name} CRITICAL - no filesystem to check\n"),
        };
    }
    let mut rows: Vec<(State, &str, String, Option<i64>)> = items
        .iter()
        .map(|(label, obs)| match obs {
            Observation::Newest { name, creation } => {
                let a = (now - creation).max(0);
                let st = check.thresholds.state(a);
                (
                    st,
                    label.as_str(),
                    format!("{} {name} is {} old", check.what, age(a)),
                    Some(a),
                )
            }
            Observation::Missing(why) => (State::Critical, label.as_str(), why.clone(), None),
        })
        .collect();
    // Problems first, the worst first; then by name.
    rows.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
    let state = rows[0].0;
    let mut counts: BTreeMap<State, usize> = BTreeMap::new();
    for r in &rows {
        *counts.entry(r.0).or_default() += 1;
    }
    let n = rows.len();
    let mut summary = if state == State::Ok {
        let oldest = rows.iter().filter_map(|r| r.3).max().unwrap_or(0);
        format!("{n} filesystem{} ok, max age {}", plural(n), age(oldest))
    } else {
        let mut parts = Vec::new();
        for st in [State::Critical, State::Warning] {
            if let Some(k) = counts.get(&st) {
                parts.push(format!("{k} {}", st.as_str().to_lowercase()));
            }
        }
        format!(
            "{} of {n} filesystem{}: {}: {}",
            parts.join(", "),
            plural(n),
            rows[0].1,
            rows[0].2
        )
    };
    summary = one_line(&summary);
    let mut text = format!("ZREPL {name} {} - {summary}\n", state.as_str());
    for (st, label, msg, _) in &rows {
        let _ = writeln!(text, "{}: {label}: {}", st.as_str(), one_line(msg));
    }
    let th = |v: Option<i64>| v.map(|s| s.to_string()).unwrap_or_default();
    let (w, c) = (th(check.thresholds.warning), th(check.thresholds.critical));
    let perf: Vec<String> = rows
        .iter()
        .map(|(_, label, _, a)| {
            let v = a.map_or("U".to_string(), |a| format!("{a}s"));
            format!("{}={v};{w};{c};0", perf_label(label))
        })
        .collect();
    let _ = writeln!(text, "| {}", perf.join("\n"));
    Report { state, text }
}

/// Which snapshots `zrepl monitor snapshots` looks at.
#[derive(Debug, Clone, Default)]
pub struct SnapshotMatcher {
    pub prefix: Option<String>,
    pub regex: Option<Regex>,
}

impl SnapshotMatcher {
    fn matches(&self, name: &str) -> bool {
        self.prefix
            .as_ref()
            .is_none_or(|p| name.starts_with(p.as_str()))
            && self.regex.as_ref().is_none_or(|r| r.is_match(name))
    }

    fn describe(&self) -> String {
        match (&self.prefix, &self.regex) {
            (None, None) => "no snapshot".into(),
            (Some(p), None) => format!("no snapshot with prefix {p:?}"),
            (None, Some(r)) => format!("no snapshot matching {:?}", r.as_str()),
            (Some(p), Some(r)) => {
                format!("no snapshot with prefix {p:?} matching {:?}", r.as_str())
            }
        }
    }
}

/// The newest matching snapshot (by createtxg) of each of `filesystems` in `listing`.
pub fn snapshot_items(
    filesystems: &[DatasetPath],
    listing: &VersionsByFilesystem,
    matcher: &SnapshotMatcher,
) -> Vec<(String, Observation)> {
    filesystems
        .iter()
        .map(|fs| {
            let newest = listing.get(fs).and_then(|vs| {
                vs.iter()
                    .filter(|v| v.typ == VersionType::Snapshot && matcher.matches(&v.name))
                    .max_by_key(|v| v.createtxg)
            });
            let obs = match newest {
                Some(v) => Observation::Newest {
                    name: format!("@{}", v.name),
                    creation: v.creation,
                },
                None => Observation::Missing(matcher.describe()),
            };
            (fs.to_string(), obs)
        })
        .collect()
}

/// Replication lag on the sending side (push, source): per filesystem, the creation of the
/// snapshot the job's replication cursor marks (the newest one the receiver confirmed), named
/// after the snapshot with the cursor's guid where it still exists.
pub fn sender_lag_items(
    job: &str,
    filesystems: &[DatasetPath],
    listing: &VersionsByFilesystem,
) -> Vec<(String, Observation)> {
    filesystems
        .iter()
        .map(|fs| {
            let vs: &[FilesystemVersion] = listing.get(fs).map_or(&[], |v| v.as_slice());
            let cursor = vs
                .iter()
                .filter(|v| {
                    v.typ == VersionType::Bookmark
                        && matches!(
                            parse_cursor_bookmark(&v.name),
                            Some((AbstractionType::ReplicationCursorV2, _, Some(j))) if j == job
                        )
                })
                .max_by_key(|v| v.createtxg);
            let obs = match cursor {
                Some(c) => {
                    let name = vs
                        .iter()
                        .find(|v| v.typ == VersionType::Snapshot && v.guid == c.guid)
                        .map_or_else(|| format!("#{}", c.name), |s| format!("@{}", s.name));
                    Observation::Newest {
                        name,
                        creation: c.creation,
                    }
                }
                None => Observation::Missing(format!(
                    "never replicated (no replication cursor of job {job:?})"
                )),
            };
            (fs.to_string(), obs)
        })
        .collect()
}

/// Replication lag on the receiving side (pull, sink): per filesystem below `root` that
/// replication created, its newest snapshot (received snapshots keep the sender's creation
/// time). `root` itself, placeholders and filesystems without snapshots that only hold others
/// are not replicated filesystems and are left out.
pub fn receiver_lag_items(
    root: &DatasetPath,
    listing: &VersionsByFilesystem,
    placeholders: &[DatasetPath],
) -> Vec<(String, Observation)> {
    received_filesystems(root, listing, placeholders)
        .into_iter()
        .map(|fs| {
            let newest = listing[&fs]
                .iter()
                .filter(|v| v.typ == VersionType::Snapshot)
                .max_by_key(|v| v.createtxg);
            let obs = match newest {
                Some(v) => Observation::Newest {
                    name: format!("@{}", v.name),
                    creation: v.creation,
                },
                None => Observation::Missing("no snapshot received yet".into()),
            };
            (fs.to_string(), obs)
        })
        .collect()
}

/// The filesystems below `root` that replication created: not `root`, not placeholders, and
/// not filesystems without snapshots that only hold others.
pub fn received_filesystems(
    root: &DatasetPath,
    listing: &VersionsByFilesystem,
    placeholders: &[DatasetPath],
) -> Vec<DatasetPath> {
    listing
        .iter()
        .filter(|(fs, vs)| {
            *fs != root
                && fs.has_prefix(root)
                && !placeholders.contains(fs)
                && (vs.iter().any(|v| v.typ == VersionType::Snapshot)
                    || !listing.keys().any(|o| o != *fs && o.has_prefix(fs)))
        })
        .map(|(fs, _)| fs.clone())
        .collect()
}

/// `zrepl monitor alive`: the daemon's `/status` answer (or why there is none) and optionally
/// one job's state.
pub fn alive(status: Result<&DaemonStatus, &str>, job: Option<&str>) -> Report {
    let status = match status {
        Ok(s) => s,
        Err(e) => {
            return Report {
                state: State::Critical,
                text: format!(
                    "ZREPL ALIVE CRITICAL - daemon does not answer: {}\n",
                    one_line(e)
                ),
            }
        }
    };
    let n = status.jobs.len();
    let Some(job) = job else {
        return Report {
            state: State::Ok,
            text: format!("ZREPL ALIVE OK - daemon answers, {n} job{}\n", plural(n)),
        };
    };
    let Some(j) = status.jobs.get(job) else {
        return Report {
            state: State::Critical,
            text: format!(
                "ZREPL ALIVE CRITICAL - the daemon runs no job {job:?} (restart it after a config change)\n"
            ),
        };
    };
    let state = j.state;
    let mut problems = Vec::new();
    if let Some(e) = j.error.as_deref().filter(|e| !e.is_empty()) {
        problems.push(format!("job error: {e}"));
    }
    if let Some(e) = j
        .snapshotting
        .as_ref()
        .and_then(|sn| sn.error.as_deref())
        .filter(|e| !e.is_empty())
    {
        problems.push(format!("snapshotting error: {e}"));
    }
    let (st, detail) = if state == JobState::Error {
        (State::Critical, problems.join("; "))
    } else if !problems.is_empty() {
        (State::Warning, problems.join("; "))
    } else {
        (State::Ok, String::new())
    };
    let mut line = format!("ZREPL ALIVE {} - job {job:?} is {state}", st.as_str());
    if !detail.is_empty() {
        let _ = write!(line, ": {}", one_line(&detail));
    }
    let mut text = format!("{line}\n");
    if detail.contains('\n') {
        let _ = writeln!(text, "{detail}");
    }
    Report { state: st, text }
}

/// A short age: `45s`, `12m`, `3h5m`, `2d4h`.
pub fn age(secs: i64) -> String {
    let s = secs.max(0);
    let (d, h, m) = (s / 86400, s % 86400 / 3600, s % 3600 / 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, m) => format!("{m}m"),
        (0, h, 0) => format!("{h}h"),
        (0, h, m) => format!("{h}h{m}m"),
        (d, 0, _) => format!("{d}d"),
        (d, h, _) => format!("{d}d{h}h"),
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// Status lines are single lines, and `|` would start performance data.
fn one_line(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "/")
}

/// A perfdata label in single quotes (dataset names may contain spaces; a quote is doubled).
fn perf_label(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''").replace('=', "_"))
}

#[cfg(test)]
mod tests;
