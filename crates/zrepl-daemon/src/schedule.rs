//! Replication schedules of push and pull jobs (zrepl#397): an `interval` and/or a `cron`
//! schedule wake the job, independent of snapshotting. A tick goes through the job's wakeup
//! queue like any other wakeup: while a run is in progress one more run may be queued (it
//! starts when the current one ends); a tick that finds one queued already is skipped and
//! logged, so a slow run never piles up runs behind it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use zrepl_config::cron::CronSchedule;

use crate::wakeup::Trigger;

/// When a job replicates on its own.
#[derive(Debug, Clone, Default)]
pub(crate) struct ReplicationSchedule {
    /// Every this long, the first time when the job starts.
    pub every: Option<Duration>,
    pub cron: Option<CronSchedule>,
}

/// The next cron firing strictly after `now` (local time, as snapshotting's cron); `None` if
/// the schedule never fires.
pub(crate) fn next_cron(c: &CronSchedule, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    c.next_after(&now.with_timezone(&chrono::Local))
        .map(|t| t.with_timezone(&Utc))
}

fn tick(job: &str, trigger: &Trigger, source: &str) {
    match trigger.try_send(()) {
        Ok(run) => tracing::info!(job = %job, run, schedule = source, "replication scheduled"),
        Err(e) => tracing::info!(
            job = %job,
            schedule = source,
            reason = %e,
            "replication schedule tick skipped: a run is already queued"
        ),
    }
}

/// Starts the schedule's tickers; they stop with `shutdown`.
pub(crate) fn spawn(
    job: &str,
    schedule: ReplicationSchedule,
    trigger: Trigger,
    shutdown: &CancellationToken,
) {
    if let Some(every) = schedule.every {
        let (job, trigger, stop) = (job.to_string(), trigger.clone(), shutdown.clone());
        tokio::spawn(async move {
            loop {
                tick(&job, &trigger, "interval");
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = stop.cancelled() => return,
                }
            }
        });
    }
    if let Some(cron) = schedule.cron {
        let (job, stop) = (job.to_string(), shutdown.clone());
        tokio::spawn(async move {
            loop {
                let Some(next) = next_cron(&cron, Utc::now()) else {
                    tracing::warn!(job = %job, "the replication cron schedule never fires");
                    return;
                };
                let wait = (next - Utc::now()).to_std().unwrap_or_default();
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.cancelled() => return,
                }
                tick(&job, &trigger, "cron");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_cron_is_strictly_after_now() {
        let c = CronSchedule::parse("*/15 * * * *").unwrap();
        let now = DateTime::parse_from_rfc3339("2026-12-06T10:07:30Z")
            .unwrap()
            .with_timezone(&Utc);
        let n = next_cron(&c, now).unwrap();
        assert!(n > now);
        assert!(n - now <= chrono::Duration::minutes(15));
        assert_eq!(n.timestamp() % (15 * 60), 0, "{n}");
        let again = next_cron(&c, n).unwrap();
        assert_eq!(again - n, chrono::Duration::minutes(15));
    }

    #[tokio::test]
    async fn ticks_queue_one_run_and_skip_the_rest() {
        let (t, mut w) = crate::wakeup::channel();
        tick("j", &t, "interval");
        tick("j", &t, "interval");
        assert_eq!(w.recv().await, Some(1));
        tick("j", &t, "cron");
        assert_eq!(w.recv().await, Some(2), "the skipped tick started no run");
    }
}
