//! `zrepl monitor`: Nagios/Icinga checks (sanoid's and bzfs's `--monitor-snapshots`, the dsh2dsh
//! fork's `zrepl monitor`). This module lists what the checks need (zfs listings, the config,
//! the daemon's `/status`); `monitor.rs` decides. Every failure to make a check, argument
//! errors included, is UNKNOWN (exit 3), never CRITICAL: the monitoring system must be able to
//! tell "the backups are late" from "the check is broken".

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use zrepl_config::{Job, Snapshotting};
use zrepl_filters::DatasetFilter;
use zrepl_zfs::{DatasetPath, VersionsByFilesystem, Zfs, ZfsError};

use crate::monitor::{self, Check, Observation, Report, SnapshotMatcher, Thresholds};

#[derive(Debug, Args)]
pub struct MonitorArgs {
    #[command(subcommand)]
    pub command: MonitorCommand,
}

#[derive(Debug, Subcommand)]
pub enum MonitorCommand {
    /// Age of the newest snapshot of each filesystem of a job (or of the given datasets).
    Snapshots(SnapshotsArgs),
    /// Replication lag of a job per filesystem: the age of the newest snapshot the receiver has
    /// (push, source: the job's replication cursor; pull, sink: the received filesystems).
    Replication(ReplicationArgs),
    /// Whether the daemon answers on its control socket, and optionally a job's state.
    Alive(AliveArgs),
}

#[derive(Debug, Args)]
pub struct Limits {
    /// WARNING when older than this (90m, 26h, 2d, 1w, 1h30m).
    #[arg(short = 'w', long, value_name = "DURATION", value_parser = monitor::parse_threshold)]
    pub warning: Option<i64>,
    /// CRITICAL when older than this.
    #[arg(short = 'c', long, value_name = "DURATION", value_parser = monitor::parse_threshold)]
    pub critical: Option<i64>,
}

#[derive(Debug, Args)]
pub struct SnapshotsArgs {
    /// The filesystems of this job: its `filesystems` filter (push, source, snap) or what it
    /// received below `root_fs` (pull, sink). Snapshots default to its snapshotting prefix.
    #[arg(short = 'j', long, conflicts_with = "datasets")]
    pub job: Option<String>,
    /// Check these datasets instead of a job's.
    pub datasets: Vec<String>,
    /// With DATASETS: also every filesystem below them.
    #[arg(short = 'r', long, requires = "datasets")]
    pub recursive: bool,
    /// Only snapshots whose name starts with this (`--prefix ''`: every snapshot).
    #[arg(short = 'p', long)]
    pub prefix: Option<String>,
    /// Only snapshots whose name (after the @) matches this regular expression.
    #[arg(long)]
    pub regex: Option<String>,
    #[command(flatten)]
    pub limits: Limits,
}

#[derive(Debug, Args)]
pub struct ReplicationArgs {
    /// A push, source, pull or sink job.
    pub job: String,
    #[command(flatten)]
    pub limits: Limits,
}

#[derive(Debug, Args)]
pub struct AliveArgs {
    /// Also check this job: CRITICAL if the daemon does not run it or it failed to start,
    /// WARNING if its last run or snapshotting reported an error.
    #[arg(short = 'j', long)]
    pub job: Option<String>,
    /// CRITICAL if the daemon has not answered within this long.
    #[arg(long, default_value = "10s", value_parser = monitor::parse_threshold)]
    pub timeout: i64,
}

/// Whether the command line asks for `zrepl monitor`: then a command-line error must exit 3.
pub fn is_monitor_invocation(args: &[std::ffi::OsString]) -> bool {
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        match a.to_str() {
            Some("--config") => {
                it.next();
            }
            Some(s) if s.starts_with("--config=") => {}
            Some(s) => return s == "monitor",
            None => return false,
        }
    }
    false
}

pub fn run(config: Option<&Path>, args: MonitorArgs) -> anyhow::Result<ExitCode> {
    let report = match args.command {
        MonitorCommand::Snapshots(a) => snapshots(config, a),
        MonitorCommand::Replication(a) => replication(config, a),
        MonitorCommand::Alive(a) => alive(config, a),
    };
    print!("{}", report.text);
    Ok(ExitCode::from(report.state.code()))
}

fn thresholds(check: &str, l: &Limits) -> Result<Thresholds, Report> {
    Thresholds::new(l.warning, l.critical).map_err(|e| Report::unknown(check, &e))
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn snapshots(config: Option<&Path>, a: SnapshotsArgs) -> Report {
    const NAME: &str = "SNAPSHOTS";
    let unknown = |e: &dyn std::fmt::Display| Report::unknown(NAME, &format!("{e:#}"));
    let th = match thresholds(NAME, &a.limits) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let regex = match a.regex.as_deref().map(regex::Regex::new).transpose() {
        Ok(r) => r,
        Err(e) => return unknown(&format!("invalid --regex: {e}")),
    };
    let zfs = Zfs::new(crate::zfs_config());
    let mut matcher = SnapshotMatcher {
        prefix: a.prefix.clone().filter(|p| !p.is_empty()),
        regex,
    };
    let items = if let Some(job) = &a.job {
        let cfg = match crate::cli::load_config(config) {
            Ok(c) => c,
            Err(e) => return unknown(&e),
        };
        let job = match find_job(&cfg, job) {
            Ok(j) => j,
            Err(e) => return unknown(&e),
        };
        if a.prefix.is_none() {
            matcher.prefix = snapshot_prefix(job);
        }
        let r = match job_side(job) {
            Side::Sender(filter) => block(sender_listing(&zfs, filter))
                .map(|(fss, listing)| monitor::snapshot_items(&fss, &listing, &matcher)),
            Side::Receiver(root) => block(receiver_listing(&zfs, root)).map(|(fss, listing)| {
                let received =
                    monitor::received_filesystems(root, &listing, &placeholders(&fss, &listing));
                monitor::snapshot_items(&received, &listing, &matcher)
            }),
        };
        match r {
            Ok(i) => i,
            Err(e) => return unknown(&e),
        }
    } else if !a.datasets.is_empty() {
        let mut paths = Vec::new();
        for d in &a.datasets {
            match DatasetPath::parse(d) {
                Ok(p) if !p.is_empty() => paths.push(p),
                _ => return unknown(&format!("invalid dataset name {d:?}")),
            }
        }
        match block(datasets_listing(&zfs, &paths, a.recursive, &matcher)) {
            Ok(i) => i,
            Err(e) => return unknown(&e),
        }
    } else {
        return unknown(&"give --job JOB or the DATASETS to check");
    };
    let check = Check {
        name: NAME,
        what: "newest snapshot",
        thresholds: th,
    };
    monitor::evaluate(&check, now(), &items)
}

fn replication(config: Option<&Path>, a: ReplicationArgs) -> Report {
    const NAME: &str = "REPLICATION";
    let unknown = |e: &dyn std::fmt::Display| Report::unknown(NAME, &format!("{e:#}"));
    let th = match thresholds(NAME, &a.limits) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let cfg = match crate::cli::load_config(config) {
        Ok(c) => c,
        Err(e) => return unknown(&e),
    };
    let job = match find_job(&cfg, &a.job) {
        Ok(j) => j,
        Err(e) => return unknown(&e),
    };
    let zfs = Zfs::new(crate::zfs_config());
    let items = match job_side(job) {
        Side::Sender(_) if matches!(job, Job::Snap(_)) => {
            return unknown(&format!(
                "job {:?} is a snap job: it does not replicate",
                a.job
            ))
        }
        Side::Sender(filter) => block(sender_listing(&zfs, filter))
            .map(|(fss, listing)| monitor::sender_lag_items(&a.job, &fss, &listing)),
        Side::Receiver(root) => block(receiver_listing(&zfs, root)).map(|(fss, listing)| {
            monitor::receiver_lag_items(root, &listing, &placeholders(&fss, &listing))
        }),
    };
    let items = match items {
        Ok(i) => i,
        Err(e) => return unknown(&e),
    };
    let check = Check {
        name: NAME,
        what: "last replicated snapshot",
        thresholds: th,
    };
    monitor::evaluate(&check, now(), &items)
}

fn alive(config: Option<&Path>, a: AliveArgs) -> Report {
    let sock = match crate::daemon_cmd::sockpath(config, false) {
        Ok(s) => s,
        Err(e) => return Report::unknown("ALIVE", &format!("{e:#}")),
    };
    let timeout = Duration::from_secs(a.timeout as u64);
    let answer = block(async {
        match tokio::time::timeout(timeout, status(&sock)).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "no answer on {} within {}",
                sock.display(),
                monitor::age(a.timeout)
            )),
        }
    });
    monitor::alive(answer.as_ref().map_err(String::as_str), a.job.as_deref())
}

async fn status(sock: &Path) -> Result<zrepl_status::DaemonStatus, String> {
    let body = crate::control_client::post(sock, "/status", &serde_json::json!({}))
        .await
        .map_err(|e| format!("{e:#}"))?;
    zrepl_status::DaemonStatus::from_json(&body).map_err(|e| format!("invalid /status answer: {e}"))
}

fn block<T>(f: impl std::future::Future<Output = Result<T, String>>) -> Result<T, String> {
    crate::control_client::block_on(f).map_err(|e| format!("{e:#}"))?
}

fn find_job<'c>(cfg: &'c zrepl_config::Config, name: &str) -> Result<&'c Job, String> {
    cfg.jobs.iter().find(|j| j.name() == name).ok_or_else(|| {
        let names: Vec<&str> = cfg.jobs.iter().map(|j| j.name()).collect();
        format!("no job {name:?} in the config (jobs: {})", names.join(", "))
    })
}

enum Side<'a> {
    /// Push, source, snap: the local filesystems of the filter.
    Sender(&'a DatasetFilter),
    /// Pull, sink: what was received below `root_fs`.
    Receiver(&'a DatasetPath),
}

fn job_side(job: &Job) -> Side<'_> {
    match job {
        Job::Push(j) => Side::Sender(&j.filesystems),
        Job::Source(j) => Side::Sender(&j.filesystems),
        Job::Snap(j) => Side::Sender(&j.filesystems),
        Job::Pull(j) => Side::Receiver(&j.root_fs),
        Job::Sink(j) => Side::Receiver(&j.root_fs),
    }
}

fn snapshot_prefix(job: &Job) -> Option<String> {
    let s = match job {
        Job::Push(j) => &j.snapshotting,
        Job::Source(j) => &j.snapshotting,
        Job::Snap(j) => &j.snapshotting,
        Job::Pull(_) | Job::Sink(_) => return None,
    };
    match s {
        Snapshotting::Periodic { prefix, .. } | Snapshotting::Cron { prefix, .. } => {
            Some(prefix.clone())
        }
        Snapshotting::Manual => None,
    }
}

/// The listed filesystems `receiver_listing` left out (placeholders, the root).
fn placeholders(kept: &[DatasetPath], listing: &VersionsByFilesystem) -> Vec<DatasetPath> {
    listing
        .keys()
        .filter(|k| !kept.contains(k))
        .cloned()
        .collect()
}

/// The filter's filesystems and the versions of every pool that has one (one listing per pool).
async fn sender_listing(
    zfs: &Zfs,
    filter: &DatasetFilter,
) -> Result<(Vec<DatasetPath>, VersionsByFilesystem), String> {
    let all = zfs
        .list_filesystems(None)
        .await
        .map_err(|e| format!("cannot list filesystems: {e}"))?;
    let fss: Vec<DatasetPath> = all.into_iter().filter(|p| filter.accepts(p)).collect();
    let pools: std::collections::BTreeSet<&str> = fss.iter().filter_map(|p| p.pool()).collect();
    let mut listing = VersionsByFilesystem::new();
    for pool in pools {
        let root = DatasetPath::parse(pool).map_err(|e| e.to_string())?;
        let l = zfs
            .list_subtree_versions(&root)
            .await
            .map_err(|e| format!("cannot list snapshots of {pool}: {e}"))?;
        listing.extend(l);
    }
    Ok((fss, listing))
}

/// The received filesystems below `root` (placeholders and `root` left out) and the versions of
/// the whole subtree, in one command. A missing `root` (nothing received yet) has none.
async fn receiver_listing(
    zfs: &Zfs,
    root: &DatasetPath,
) -> Result<(Vec<DatasetPath>, VersionsByFilesystem), String> {
    match zfs
        .list_subtree_with_properties(root, &[zrepl_zfs::PLACEHOLDER_PROPERTY])
        .await
    {
        Ok((props, listing)) => {
            let fss = listing
                .keys()
                .filter(|fs| *fs != root)
                .filter(|fs| {
                    !props.get(*fs).is_some_and(|p| {
                        p.get(zrepl_zfs::PLACEHOLDER_PROPERTY).is_some_and(|v| {
                            v.source == zrepl_zfs::PropertySource::Local
                                && zrepl_zfs::is_placeholder_value(fs, &v.value)
                        })
                    })
                })
                .cloned()
                .collect();
            Ok((fss, listing))
        }
        Err(ZfsError::DatasetDoesNotExist { .. }) => Ok((vec![], VersionsByFilesystem::new())),
        Err(e) => Err(format!("cannot list {root}: {e}")),
    }
}

/// The snapshots of each given dataset (and, recursively, of the filesystems below it); a
/// dataset that does not exist is CRITICAL, not UNKNOWN: what should be backed up is gone.
async fn datasets_listing(
    zfs: &Zfs,
    datasets: &[DatasetPath],
    recursive: bool,
    matcher: &SnapshotMatcher,
) -> Result<Vec<(String, Observation)>, String> {
    let mut items = Vec::new();
    for d in datasets {
        let listed = if recursive {
            zfs.list_subtree_versions(d).await
        } else {
            zfs.list_versions(d, zrepl_zfs::VersionTypes::Snapshots)
                .await
                .map(|vs| [(d.clone(), vs)].into_iter().collect())
        };
        match listed {
            Ok(listing) => {
                let fss: Vec<DatasetPath> = listing.keys().cloned().collect();
                items.extend(monitor::snapshot_items(&fss, &listing, matcher));
            }
            Err(ZfsError::DatasetDoesNotExist { .. }) => items.push((
                d.to_string(),
                Observation::Missing("dataset does not exist".into()),
            )),
            Err(e) => return Err(format!("cannot list {d}: {e}")),
        }
    }
    Ok(items)
}
