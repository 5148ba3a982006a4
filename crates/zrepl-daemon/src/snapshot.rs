//! Snapshotting: `periodic` and `cron` (spec §2.6).
//!
//! Every round snapshots all matching filesystems with **one** timestamp, in one `zfs snapshot`
//! command per pool (one transaction group): zrepl 0.7 instead snapshots filesystems one by one
//! in random order with a timestamp per filesystem, so names could differ within a round.
//!
//! Periodic: at startup, the next round is due `interval` after the newest snapshot with the
//! job's prefix (the earliest such time over all filesystems that have one), or now if none has
//! one; afterwards every `interval` after the previous round started. Cron: at every firing of the
//! schedule, in the daemon's local time zone (or the schedule's `TZ=`). Waiting follows the wall
//! clock, so a suspended machine catches up when it wakes instead of sleeping on.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use tokio_util::sync::CancellationToken;
use zrepl_config::cron::CronSchedule;
use zrepl_config::timestamp::{Location, TimestampFormat};
use zrepl_filters::DatasetFilter;
use zrepl_zfs::{DatasetPath, VersionPath, VersionType, Zfs};

use crate::hooks::{run_plan, Hook};
use crate::skip_empty::Newest;

/// A filesystem to snapshot, from the survey.
#[derive(Debug, Clone)]
struct Surveyed {
    fs: DatasetPath,
    /// Creation time of its newest snapshot with the job's prefix.
    newest_own: Option<i64>,
    newest: Newest,
    /// Creation time of its oldest snapshot not replicated yet (with `backpressure` only).
    oldest_unreplicated: Option<i64>,
}

/// When rounds happen.
#[derive(Debug, Clone)]
pub enum Schedule {
    Periodic { interval_secs: i64 },
    Cron(CronSchedule),
}

#[derive(Debug, Clone)]
pub struct Snapshotter {
    pub zfs: Zfs,
    pub filter: DatasetFilter,
    pub prefix: String,
    pub format: TimestampFormat,
    pub location: Location,
    pub schedule: Schedule,
    /// Snapshot hooks, in config order.
    pub hooks: Vec<Hook>,
    /// `written_threshold`: filesystems whose newest snapshot is the job's and that changed
    /// fewer bytes since are skipped (`skip_empty.rs`); 0 never skips.
    pub written_threshold: u64,
    /// `backpressure`: filesystems whose replication lags too far behind (`backpressure.rs`).
    pub backpressure: Option<crate::backpressure::Backpressure>,
    /// The lagging filesystems of the last round (for the metrics).
    pub lagging: crate::backpressure::Shared,
}

/// The snapshotter's part of `zrepl status` (the `/status` contract's types).
pub use zrepl_status::{RoundReport, SnapState, SnapshotterStatus};

pub type SharedStatus = Arc<Mutex<SnapshotterStatus>>;

pub fn new_status() -> SharedStatus {
    Arc::new(Mutex::new(SnapshotterStatus {
        state: SnapState::SyncUp,
        next_round_at: None,
        last_round: None,
        error: None,
    }))
}

fn set(status: &SharedStatus, f: impl FnOnce(&mut SnapshotterStatus)) {
    f(&mut status.lock().unwrap_or_else(|p| p.into_inner()))
}

/// The first round of a periodic snapshotter: `interval` after the newest prefixed snapshot,
/// the earliest over filesystems that have one; `now` if none has one. A newest snapshot in the
/// future (clock went backwards) does not postpone snapshots beyond `now + interval`.
pub fn periodic_sync_point(newest: &[Option<i64>], interval: i64, now: i64) -> i64 {
    newest
        .iter()
        .flatten()
        .map(|t| (t + interval).min(now + interval))
        .min()
        .map_or(now, |t| t.max(now))
}

/// `3d4h`, `2h5m`, `1m30s`, `45s`: the largest unit of a number of seconds and the next one.
fn human_secs(secs: i64) -> String {
    const UNITS: [(&str, i64); 4] = [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)];
    let secs = secs.max(0);
    let Some(i) = UNITS.iter().position(|(_, size)| secs >= *size) else {
        return "0s".into();
    };
    let (name, size) = UNITS[i];
    let mut out = format!("{}{name}", secs / size);
    if let Some((next, nsize)) = UNITS.get(i + 1) {
        let n = secs % size / nsize;
        if n > 0 {
            out.push_str(&format!("{n}{next}"));
        }
    }
    out
}

/// Sleeps until the wall clock reaches `t`, re-checking at least every 10 seconds so a suspend
/// does not stretch the wait.
async fn sleep_until(t: DateTime<Utc>, cancel: &CancellationToken) -> bool {
    loop {
        let now = Utc::now();
        if now >= t {
            return true;
        }
        let d = (t - now)
            .to_std()
            .unwrap_or_default()
            .min(Duration::from_secs(10));
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = cancel.cancelled() => return false,
        }
    }
}

impl Snapshotter {
    /// The filesystems to snapshot and, per filesystem, the creation time of its newest
    /// snapshot with our prefix and whether that is its newest snapshot (one recursive listing
    /// per pool).
    async fn survey(&self) -> Result<Vec<Surveyed>, String> {
        let all = self
            .zfs
            .list_filesystems(None)
            .await
            .map_err(|e| format!("cannot list filesystems: {e}"))?;
        let matching: Vec<DatasetPath> =
            all.into_iter().filter(|p| self.filter.accepts(p)).collect();
        let pools: BTreeSet<&str> = matching.iter().filter_map(|p| p.pool()).collect();
        let mut out: Vec<Surveyed> = matching
            .iter()
            .map(|p| Surveyed {
                fs: p.clone(),
                newest_own: None,
                newest: Newest::NoOwn,
                oldest_unreplicated: None,
            })
            .collect();
        for pool in pools {
            let root = DatasetPath::parse(pool).map_err(|e| e.to_string())?;
            let listing = self
                .zfs
                .list_subtree_versions(&root)
                .await
                .map_err(|e| format!("cannot list snapshots of {pool}: {e}"))?;
            for s in out.iter_mut() {
                if let Some(vs) = listing.get(&s.fs) {
                    let snaps = vs.iter().filter(|v| v.typ == VersionType::Snapshot);
                    let own = snaps
                        .clone()
                        .filter(|v| v.name.starts_with(&self.prefix))
                        .max_by_key(|v| v.createtxg);
                    let newest = snaps.max_by_key(|v| v.createtxg);
                    s.newest_own = own.map(|v| v.creation);
                    s.newest = match (own, newest) {
                        (None, _) => Newest::NoOwn,
                        (Some(o), Some(n)) if n.createtxg > o.createtxg => Newest::Foreign,
                        (Some(_), _) => Newest::Own,
                    };
                    if let Some(bp) = &self.backpressure {
                        s.oldest_unreplicated = crate::backpressure::oldest_unreplicated(
                            vs,
                            &bp.job,
                            &self.prefix,
                            bp.without_cursor_counts,
                        );
                    }
                }
            }
        }
        Ok(out)
    }

    /// The surveyed filesystems minus those whose replication lags more than
    /// `backpressure.max_lag` (with `action: skip`), and a message naming the lagging ones.
    fn held_back(&self, surveyed: Vec<Surveyed>, now: i64) -> (Vec<Surveyed>, Option<String>) {
        let Some(bp) = &self.backpressure else {
            return (surveyed, None);
        };
        let mut take = Vec::new();
        let mut lagging = Vec::new();
        for s in surveyed {
            match crate::backpressure::exceeded(s.oldest_unreplicated, bp.max_lag_secs, now) {
                None => take.push(s),
                Some(lag_secs) => {
                    let skip = bp.action == zrepl_config::BackpressureAction::Skip;
                    tracing::warn!(
                        filesystem = %s.fs,
                        lag = %human_secs(lag_secs),
                        max_lag = %human_secs(bp.max_lag_secs),
                        action = if skip { "skip" } else { "warn" },
                        "replication lags behind: the oldest snapshot not replicated yet is older than backpressure.max_lag{}",
                        if skip { "; not snapshotting this filesystem" } else { "" },
                    );
                    lagging.push(crate::backpressure::Lagging {
                        filesystem: s.fs.to_string(),
                        lag_secs,
                    });
                    if !skip {
                        take.push(s);
                    }
                }
            }
        }
        let msg = (!lagging.is_empty()).then(|| {
            let list: Vec<String> = lagging
                .iter()
                .map(|l| format!("{} ({})", l.filesystem, human_secs(l.lag_secs)))
                .collect();
            format!(
                "backpressure: replication lags more than {} behind on {} filesystem(s){}: {}",
                human_secs(bp.max_lag_secs),
                lagging.len(),
                match bp.action {
                    zrepl_config::BackpressureAction::Skip => ", not snapshotted",
                    zrepl_config::BackpressureAction::Warn => "",
                },
                list.join(", ")
            )
        });
        *self.lagging.lock().unwrap_or_else(|p| p.into_inner()) = Some(lagging);
        (take, msg)
    }

    /// The surveyed filesystems minus those `written_threshold` skips, which go to
    /// `report.skipped`. `written` of all filesystems that could be skipped is read with one
    /// `zfs get`; if that fails, nothing is skipped.
    async fn without_unchanged(
        &self,
        surveyed: Vec<Surveyed>,
        report: &mut RoundReport,
    ) -> Vec<DatasetPath> {
        let candidates: Vec<DatasetPath> = surveyed
            .iter()
            .filter(|s| self.written_threshold > 0 && s.newest == Newest::Own)
            .map(|s| s.fs.clone())
            .collect();
        if candidates.is_empty() {
            return surveyed.into_iter().map(|s| s.fs).collect();
        }
        let written = match self.zfs.get_properties_of(&candidates, &["written"]).await {
            Ok(p) => crate::skip_empty::written_values(&p),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the written property; snapshotting every filesystem");
                Default::default()
            }
        };
        let fss: Vec<(DatasetPath, Newest)> =
            surveyed.into_iter().map(|s| (s.fs, s.newest)).collect();
        let (take, skipped) = crate::skip_empty::partition(self.written_threshold, &fss, &written);
        for s in &skipped {
            tracing::info!(
                filesystem = %s.filesystem,
                written = s.written,
                threshold = self.written_threshold,
                "skipping snapshot: filesystem changed less than written_threshold since its newest snapshot"
            );
        }
        report.skipped = skipped;
        take
    }

    fn name_at(&self, t: DateTime<Utc>) -> String {
        let ts = match self.location {
            Location::Utc => self.format.format(&t),
            Location::Local => self.format.format(&t.with_timezone(&chrono::Local)),
            Location::Zone(z) => self.format.format(&t.with_timezone(&z)),
        };
        format!("{}{ts}", self.prefix)
    }

    /// One round: every matching filesystem gets `prefix + timestamp(now)`.
    pub(crate) async fn round(&self, status: &SharedStatus) -> RoundReport {
        let started_at = Utc::now();
        let name = self.name_at(started_at);
        set(status, |s| s.state = SnapState::Snapshotting);
        let mut report = RoundReport {
            started_at,
            snapshot_name: name.clone(),
            filesystems: vec![],
            skipped: vec![],
            error: None,
        };
        let surveyed = match self.survey().await {
            Ok(f) => f,
            Err(e) => {
                report.error = Some(e);
                return report;
            }
        };
        let (surveyed, held_back) = self.held_back(surveyed, started_at.timestamp());
        let fss = self.without_unchanged(surveyed, &mut report).await;
        let mut snaps = Vec::new();
        let mut hooked: Vec<(VersionPath, Vec<&Hook>)> = Vec::new();
        let mut errors = Vec::new();
        for fs in &fss {
            match VersionPath::snapshot(fs, &name) {
                Ok(v) => {
                    let hooks: Vec<&Hook> = self
                        .hooks
                        .iter()
                        .filter(|h| h.filter().accepts(fs))
                        .collect();
                    if hooks.is_empty() {
                        snaps.push(v)
                    } else {
                        hooked.push((v, hooks))
                    }
                }
                Err(e) => errors.push(format!("{fs}: invalid snapshot name: {e}")),
            }
        }
        if snaps.is_empty() && hooked.is_empty() && errors.is_empty() {
            report.error = held_back;
            if report.skipped.is_empty() && report.error.is_none() {
                tracing::warn!("no filesystem matches the snapshotting job's filter");
            }
            return report;
        }
        for h in &self.hooks {
            if !fss.iter().any(|fs| h.filter().accepts(fs)) {
                tracing::warn!(hook = %h.name(), "hook did not match any snapshotted filesystems");
            }
        }
        // Without hooks: one command per pool (one transaction group). `zfs snapshot` with
        // several names is all-or-nothing, so if it fails, snapshot one by one: one broken
        // filesystem (snapshot limit, vanished meanwhile) must not cost the others their snapshot.
        if !snaps.is_empty() {
            if self.zfs.snapshot(&snaps).await.is_ok() {
                report.filesystems = snaps.iter().map(|v| v.fs().to_string()).collect();
                if let Err(e) = zrepl_failpoint::hit("snapshot.after_create") {
                    errors.push(e.to_string());
                }
            } else {
                for v in &snaps {
                    match self.zfs.snapshot(std::slice::from_ref(v)).await {
                        Ok(()) => report.filesystems.push(v.fs().to_string()),
                        Err(e) => errors.push(format!("{}: {e}", v.fs())),
                    }
                }
            }
        }
        // With hooks, per filesystem: pre hooks in config order, the snapshot, post hooks in
        // reverse order (only for hooks whose pre hook succeeded). A failing pre hook with
        // err_is_fatal prevents the snapshot; every hook error marks the filesystem as failed.
        for (v, hooks) in &hooked {
            let fs = v.fs();
            let snapshot = async {
                self.zfs
                    .snapshot(std::slice::from_ref(v))
                    .await
                    .map_err(|e| e.to_string())
            };
            let out = run_plan(hooks, fs, &name, snapshot).await;
            if out.snapshotted {
                report.filesystems.push(fs.to_string());
            }
            errors.extend(out.errors);
        }
        if !report.filesystems.is_empty() {
            tracing::info!(snapshot = %name, count = report.filesystems.len(), "created snapshots");
        }
        if !errors.is_empty() {
            report.error = Some(format!("snapshot failed for: {}", errors.join("; ")));
        }
        if let Some(b) = held_back {
            report.error = Some(match report.error.take() {
                Some(e) => format!("{e}; {b}"),
                None => b,
            });
        }
        report
    }

    /// Runs rounds until `cancel`; after every round (also a failed one) `notify` is poked.
    pub async fn run(
        self,
        notify: crate::wakeup::Trigger,
        status: SharedStatus,
        cancel: CancellationToken,
    ) {
        let mut next: DateTime<Utc> = match &self.schedule {
            Schedule::Periodic { interval_secs } => loop {
                set(&status, |s| s.state = SnapState::SyncUp);
                match self.survey().await {
                    Ok(fss) => {
                        let newest: Vec<Option<i64>> = fss.iter().map(|s| s.newest_own).collect();
                        let now = Utc::now().timestamp();
                        let t = periodic_sync_point(&newest, *interval_secs, now);
                        if newest.iter().any(Option::is_none) && t > now + 1 {
                            tracing::warn!(
                                "filesystems without snapshots of this job will not be snapshotted until the sync point"
                            );
                        }
                        break Utc.timestamp_opt(t, 0).single().unwrap_or_else(Utc::now);
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "snapshotter cannot sync up");
                        set(&status, |s| {
                            s.state = SnapState::ErrorWait;
                            s.error = Some(e);
                        });
                        if !sleep_until(
                            Utc::now() + chrono::Duration::seconds(*interval_secs),
                            &cancel,
                        )
                        .await
                        {
                            return;
                        }
                    }
                }
            },
            Schedule::Cron(c) => match c.next_after(&Utc::now().with_timezone(&chrono::Local)) {
                Some(t) => t,
                None => {
                    set(&status, |s| {
                        s.error = Some("cron schedule never fires".into())
                    });
                    return;
                }
            },
        };
        loop {
            set(&status, |s| {
                s.state = SnapState::Waiting;
                s.next_round_at = Some(next);
            });
            if !sleep_until(next, &cancel).await {
                return;
            }
            let started = Utc::now();
            let report = self.round(&status).await;
            let failed = report.error.clone();
            if let Some(e) = &failed {
                tracing::error!(error = %e, "snapshotting failed");
            }
            set(&status, |s| {
                s.state = if failed.is_some() {
                    SnapState::ErrorWait
                } else {
                    SnapState::Waiting
                };
                s.error = failed;
                s.last_round = Some(report);
            });
            if notify.try_send(()).is_err() {
                tracing::warn!("callback channel is full, discarding snapshot update event");
            }
            next = match &self.schedule {
                Schedule::Periodic { interval_secs } => {
                    started + chrono::Duration::seconds(*interval_secs)
                }
                Schedule::Cron(c) => {
                    let now = Utc::now().with_timezone(&chrono::Local);
                    let n = c
                        .next_after(&now)
                        .unwrap_or(started + chrono::Duration::days(365 * 10));
                    // Firings missed while the round ran are skipped, as in zrepl.
                    if let Some(first) = c.next_after(&started.with_timezone(&chrono::Local)) {
                        if first < n {
                            tracing::warn!(
                                "snapshotting triggered according to cron rules but previous snapshotting is not done; not taking a snapshot this time"
                            );
                        }
                    }
                    n
                }
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_point() {
        // Earliest due filesystem decides; filesystems without snapshots do not pull it forward.
        assert_eq!(
            periodic_sync_point(&[Some(100), Some(50), None], 600, 200),
            650
        );
        // Overdue: now.
        assert_eq!(periodic_sync_point(&[Some(0)], 60, 1000), 1000);
        // Nothing yet: now.
        assert_eq!(periodic_sync_point(&[None, None], 60, 1000), 1000);
        assert_eq!(periodic_sync_point(&[], 60, 1000), 1000);
        // A newest snapshot in the future does not postpone beyond now + interval.
        assert_eq!(periodic_sync_point(&[Some(5000)], 60, 1000), 1060);
    }

    #[test]
    fn human_durations() {
        for (secs, want) in [
            (0, "0s"),
            (45, "45s"),
            (90, "1m30s"),
            (3600, "1h"),
            (7500, "2h5m"),
            (86_400 * 3 + 3600 * 4 + 59, "3d4h"),
        ] {
            assert_eq!(human_secs(secs), want);
        }
    }
}
