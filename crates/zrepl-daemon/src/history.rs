//! What a job remembers of its finished replication runs, for the metrics: per filesystem the
//! bytes replicated, the last success, the newest snapshot known to be on the receiver and the
//! last attempt's result; per job the runs by result.
//!
//! The status only keeps the current or last run; these survive across runs (not restarts).

use std::collections::BTreeMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use zrepl_replication::{FsState, RunReport, RunState};

#[derive(Debug, Default)]
pub struct JobHistory(Mutex<History>);

#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    /// Finished runs per result (`success`, `failure`, `cancelled`).
    pub runs: BTreeMap<&'static str, u64>,
    pub filesystems: BTreeMap<String, FsHistory>,
    /// `started_at` of the last recorded run: its bytes are in the totals already.
    pub last_recorded_run: Option<DateTime<Utc>>,
    pub last_run_duration_secs: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct FsHistory {
    /// Bytes of send streams read in finished runs.
    pub bytes_replicated: u64,
    pub last_success: Option<DateTime<Utc>>,
    /// Creation time (Unix seconds) of the newest snapshot replicated so far.
    pub newest_replicated_creation: Option<i64>,
    /// Did the filesystem's last attempt end done?
    pub last_attempt_ok: bool,
}

impl JobHistory {
    pub fn snapshot(&self) -> History {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Records a finished run that ended at `now`.
    pub fn record_run(&self, r: &RunReport, now: DateTime<Utc>) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .record_run(r, now);
    }
}

impl History {
    pub fn record_run(&mut self, r: &RunReport, now: DateTime<Utc>) {
        if self.last_recorded_run == Some(r.started_at) {
            return;
        }
        self.last_recorded_run = Some(r.started_at);
        let result = match r.state {
            RunState::Done => "success",
            RunState::Cancelled => "cancelled",
            _ => "failure",
        };
        *self.runs.entry(result).or_default() += 1;
        let end = r.finished_at.unwrap_or(now);
        self.last_run_duration_secs =
            Some(((end - r.started_at).num_milliseconds() as f64 / 1e3).max(0.0));
        for a in &r.attempts {
            for f in &a.filesystems {
                let h = self.filesystems.entry(f.name.clone()).or_default();
                h.bytes_replicated += f.bytes_replicated();
                // Steps before current_step are done (in this or an earlier attempt).
                let newest = f.steps[..f.current_step.min(f.steps.len())]
                    .iter()
                    .map(|s| s.to_creation)
                    .max();
                if newest > h.newest_replicated_creation {
                    h.newest_replicated_creation = newest;
                }
            }
        }
        if let Some(last) = r.attempts.last() {
            for f in &last.filesystems {
                let h = self.filesystems.entry(f.name.clone()).or_default();
                h.last_attempt_ok = f.state == FsState::Done;
                if h.last_attempt_ok {
                    h.last_success = Some(end);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zrepl_replication::{AttemptReport, AttemptState, FilesystemReport, StepReport};

    fn fs(name: &str, state: FsState, steps: &[(u64, i64)], current: usize) -> FilesystemReport {
        let mut f = FilesystemReport::new(name.into());
        f.state = state;
        f.current_step = current;
        f.steps = steps
            .iter()
            .map(|&(b, c)| {
                let s = StepReport {
                    intermediates: Vec::new(),
                    from: None,
                    to: "@x".into(),
                    resumed: false,
                    bytes_expected: b,
                    bytes_replicated: Default::default(),
                    to_creation: c,
                };
                s.bytes_replicated.add(b);
                s
            })
            .collect();
        f
    }

    fn run(state: RunState, start: i64, fss: Vec<FilesystemReport>) -> RunReport {
        let t = DateTime::from_timestamp(start, 0).expect("time");
        let mut r = RunReport::new(t);
        r.state = state;
        r.finished_at = Some(t + chrono::Duration::seconds(10));
        r.attempts.push(AttemptReport {
            state: AttemptState::Done,
            started_at: t,
            finished_at: None,
            plan_error: None,
            filesystems: fss,
        });
        r
    }

    #[test]
    fn runs_accumulate_per_filesystem() {
        let mut h = History::default();
        h.record_run(
            &run(
                RunState::Failed,
                1000,
                vec![
                    fs("p/a", FsState::Done, &[(100, 500), (50, 600)], 2),
                    fs("p/b", FsState::StepError, &[(7, 700), (0, 800)], 1),
                ],
            ),
            DateTime::from_timestamp(2000, 0).expect("time"),
        );
        let a = &h.filesystems["p/a"];
        assert_eq!(a.bytes_replicated, 150);
        assert_eq!(a.newest_replicated_creation, Some(600));
        assert!(a.last_attempt_ok);
        assert_eq!(a.last_success.map(|t| t.timestamp()), Some(1010));
        let b = &h.filesystems["p/b"];
        assert_eq!(
            (
                b.bytes_replicated,
                b.newest_replicated_creation,
                b.last_attempt_ok,
                b.last_success
            ),
            (7, Some(700), false, None)
        );
        assert_eq!(h.runs.get("failure"), Some(&1));
        assert_eq!(h.last_run_duration_secs, Some(10.0));

        // The same run again is not counted twice.
        let before = h.clone();
        h.record_run(
            &run(RunState::Failed, 1000, vec![]),
            DateTime::from_timestamp(3000, 0).expect("time"),
        );
        assert_eq!(h, before);

        // A later successful run with nothing to send keeps the newest snapshot, moves success.
        h.record_run(
            &run(
                RunState::Done,
                5000,
                vec![
                    fs("p/a", FsState::Done, &[], 0),
                    fs("p/b", FsState::Done, &[(3, 800)], 1),
                ],
            ),
            DateTime::from_timestamp(6000, 0).expect("time"),
        );
        let a = &h.filesystems["p/a"];
        assert_eq!(
            (a.bytes_replicated, a.newest_replicated_creation),
            (150, Some(600))
        );
        assert_eq!(a.last_success.map(|t| t.timestamp()), Some(5010));
        let b = &h.filesystems["p/b"];
        assert_eq!(
            (
                b.bytes_replicated,
                b.newest_replicated_creation,
                b.last_attempt_ok
            ),
            (10, Some(800), true)
        );
        assert_eq!(h.runs.get("success"), Some(&1));
    }
}
