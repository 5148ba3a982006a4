//! A job's wakeups and the runs they start, so that a caller can wait for "its" run
//! (`zrepl signal wakeup JOB --wait`).
//!
//! Every source of wakeups (the control socket, the snapshotter, a replication schedule) goes
//! through one [`Trigger`]: a wakeup it accepts gets a ticket, and since the queue is FIFO and
//! each run takes exactly one wakeup, the run that the k-th accepted wakeup starts is the k-th
//! run. At most one wakeup waits while a run is in progress (zrepl's semantics: another one is
//! refused as "already woken up"). Finished runs are kept in a [`RunLog`] (the newest
//! [`KEEP_OUTCOMES`]), which waiters watch.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

/// How many finished runs a job remembers for waiters.
pub const KEEP_OUTCOMES: usize = 64;

/// The sending side of a job's wakeups; cheap to clone.
#[derive(Clone)]
pub struct Trigger {
    tx: mpsc::Sender<()>,
    accepted: Arc<Mutex<u64>>,
}

/// The job loop's side: yields the ticket of each run it starts.
pub struct Wakeups {
    rx: mpsc::Receiver<()>,
    started: u64,
}

/// A new wakeup queue of a job (one wakeup may wait).
pub fn channel() -> (Trigger, Wakeups) {
    let (tx, rx) = mpsc::channel(1);
    (
        Trigger {
            tx,
            accepted: Arc::default(),
        },
        Wakeups { rx, started: 0 },
    )
}

impl Trigger {
    /// Queues a wakeup; returns the ticket (the number of the run it will start), or an error
    /// when a wakeup is already waiting or the job is gone.
    pub fn try_send(&self, _: ()) -> Result<u64, String> {
        let mut accepted = self.accepted.lock().unwrap_or_else(|p| p.into_inner());
        match self.tx.try_send(()) {
            Ok(()) => {
                *accepted += 1;
                Ok(*accepted)
            }
            Err(mpsc::error::TrySendError::Full(())) => Err("already woken up".into()),
            Err(mpsc::error::TrySendError::Closed(())) => Err("the job has stopped".into()),
        }
    }
}

impl Wakeups {
    /// The next wakeup: the ticket of the run to start now; `None` when every trigger is gone.
    pub async fn recv(&mut self) -> Option<u64> {
        self.rx.recv().await?;
        self.started += 1;
        Some(self.started)
    }
}

/// How a run ended, for waiters and `zrepl run`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunOutcome {
    /// The run's ticket.
    pub run: u64,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// The replication's end state (`done`, `failed`, `cancelled`); `None` for a snap job.
    pub replication: Option<String>,
    /// What made the replication fail.
    pub replication_error: Option<String>,
    /// What made the snapshot round before the replication fail (`zrepl run` only; in the
    /// daemon, snapshotting runs on its own schedule and shows in `zrepl status`).
    #[serde(default)]
    pub snapshot_error: Option<String>,
    /// What made pruning fail (a side that could not be listed, snapshots not destroyed);
    /// `None` if pruning succeeded.
    pub pruning_error: Option<String>,
    /// Snapshots destroyed by pruning.
    pub destroyed: usize,
    /// Replicated bytes.
    pub bytes: u64,
}

/// What a waiter learns: the outcome, or that the run was forgotten (too many runs since).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum WaitResult {
    /// The run has not finished yet.
    Pending,
    Finished {
        outcome: RunOutcome,
    },
    /// The run finished so long ago that its outcome is no longer kept.
    Forgotten,
}

/// A job's finished runs.
#[derive(Clone)]
pub struct RunLog {
    tx: Arc<watch::Sender<VecDeque<RunOutcome>>>,
}

impl Default for RunLog {
    fn default() -> Self {
        RunLog {
            tx: Arc::new(watch::channel(VecDeque::new()).0),
        }
    }
}

impl RunLog {
    pub fn record(&self, outcome: RunOutcome) {
        self.tx.send_modify(|log| {
            log.push_back(outcome);
            while log.len() > KEEP_OUTCOMES {
                log.pop_front();
            }
        });
    }

    /// The state of run `run` now.
    pub fn get(&self, run: u64) -> WaitResult {
        lookup(&self.tx.borrow(), run)
    }

    /// Waits until run `run` finished (or was forgotten).
    pub async fn wait(&self, run: u64) -> WaitResult {
        let mut rx = self.tx.subscribe();
        loop {
            let r = lookup(&rx.borrow_and_update(), run);
            if r != WaitResult::Pending {
                return r;
            }
            if rx.changed().await.is_err() {
                return WaitResult::Pending;
            }
        }
    }
}

/// Pure: where run `run` stands given the log of finished runs (oldest first).
pub fn lookup(log: &VecDeque<RunOutcome>, run: u64) -> WaitResult {
    if let Some(o) = log.iter().find(|o| o.run == run) {
        return WaitResult::Finished { outcome: o.clone() };
    }
    match log.back() {
        Some(newest) if newest.run > run => WaitResult::Forgotten,
        _ => WaitResult::Pending,
    }
}

/// Exit codes of `zrepl signal wakeup --wait` and `zrepl run` (documented in README).
pub mod exit {
    /// Replication and pruning succeeded.
    pub const OK: u8 = 0;
    /// The run could not be started or waited for (daemon unreachable, unknown job, ...).
    pub const ERROR: u8 = 1;
    /// Replication failed or was cancelled.
    pub const REPLICATION_FAILED: u8 = 3;
    /// Replication succeeded, pruning failed.
    pub const PRUNING_FAILED: u8 = 4;
    /// Replication succeeded but the snapshot round before it failed (`zrepl run`).
    pub const SNAPSHOT_FAILED: u8 = 6;
    /// The run did not finish within `--timeout` (it goes on).
    pub const TIMEOUT: u8 = 5;
}

impl RunOutcome {
    /// The exit code for this outcome (see [`exit`]).
    pub fn exit_code(&self) -> u8 {
        match (&self.replication, &self.snapshot_error, &self.pruning_error) {
            (Some(r), _, _) if r != "done" => exit::REPLICATION_FAILED,
            (_, Some(_), _) => exit::SNAPSHOT_FAILED,
            (_, _, Some(_)) => exit::PRUNING_FAILED,
            _ => exit::OK,
        }
    }

    /// One line for a script's log.
    pub fn summary(&self, job: &str) -> String {
        let took = (self.finished_at - self.started_at).num_milliseconds() as f64 / 1000.0;
        let repl = match (&self.replication, &self.replication_error) {
            (None, _) => "no replication (snap job)".to_string(),
            (Some(r), None) => format!("replication {r}, {} bytes", self.bytes),
            (Some(r), Some(e)) => format!("replication {r}: {e}"),
        };
        let prune = match &self.pruning_error {
            None => format!("pruning done, {} destroyed", self.destroyed),
            Some(e) => format!("pruning failed: {e}"),
        };
        let snap = match &self.snapshot_error {
            Some(e) => format!("snapshotting failed: {e}; "),
            None => String::new(),
        };
        format!(
            "job {job:?} run #{}: {snap}{repl}; {prune} ({took:.1}s)",
            self.run
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(run: u64, replication: Option<&str>, pruning_error: Option<&str>) -> RunOutcome {
        RunOutcome {
            run,
            started_at: DateTime::from_timestamp(0, 0).unwrap(),
            finished_at: DateTime::from_timestamp(2, 0).unwrap(),
            replication: replication.map(String::from),
            replication_error: None,
            snapshot_error: None,
            pruning_error: pruning_error.map(String::from),
            destroyed: 0,
            bytes: 0,
        }
    }

    #[test]
    fn lookup_table() {
        let log: VecDeque<RunOutcome> = [3, 4, 6]
            .into_iter()
            .map(|r| outcome(r, Some("done"), None))
            .collect();
        let cases: &[(u64, &str)] = &[
            (4, "finished"),
            (6, "finished"),
            (5, "forgotten"),
            (2, "forgotten"),
            (7, "pending"),
        ];
        for (run, want) in cases {
            let got = match lookup(&log, *run) {
                WaitResult::Pending => "pending",
                WaitResult::Finished { .. } => "finished",
                WaitResult::Forgotten => "forgotten",
            };
            assert_eq!(got, *want, "run {run}");
        }
        assert_eq!(lookup(&VecDeque::new(), 1), WaitResult::Pending);
    }

    #[test]
    fn exit_codes() {
        let cases: &[(Option<&str>, Option<&str>, u8)] = &[
            (Some("done"), None, exit::OK),
            (None, None, exit::OK),
            (Some("failed"), None, exit::REPLICATION_FAILED),
            (Some("cancelled"), None, exit::REPLICATION_FAILED),
            (Some("failed"), Some("x"), exit::REPLICATION_FAILED),
            (Some("done"), Some("x"), exit::PRUNING_FAILED),
            (None, Some("x"), exit::PRUNING_FAILED),
        ];
        for (r, p, want) in cases {
            assert_eq!(outcome(1, *r, *p).exit_code(), *want, "{r:?} {p:?}");
        }
        let snap_failed = RunOutcome {
            snapshot_error: Some("x".into()),
            ..outcome(1, Some("done"), Some("y"))
        };
        assert_eq!(snap_failed.exit_code(), exit::SNAPSHOT_FAILED);
        let repl_failed = RunOutcome {
            snapshot_error: Some("x".into()),
            ..outcome(1, Some("failed"), None)
        };
        assert_eq!(repl_failed.exit_code(), exit::REPLICATION_FAILED);
    }

    #[tokio::test]
    async fn tickets_match_the_runs_they_start() {
        let (t, mut w) = channel();
        assert_eq!(t.try_send(()), Ok(1));
        assert_eq!(
            t.clone().try_send(()),
            Err("already woken up".into()),
            "one wakeup waits at most"
        );
        assert_eq!(w.recv().await, Some(1));
        // While run 1 runs, one wakeup may wait: it starts run 2.
        assert_eq!(t.try_send(()), Ok(2));
        assert_eq!(w.recv().await, Some(2));
        drop(t);
        assert_eq!(w.recv().await, None);
    }

    #[tokio::test]
    async fn waiting_returns_when_the_run_is_recorded() {
        let log = RunLog::default();
        let l2 = log.clone();
        let waiter = tokio::spawn(async move { l2.wait(2).await });
        log.record(outcome(1, Some("done"), None));
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        log.record(outcome(2, Some("failed"), None));
        match waiter.await.unwrap() {
            WaitResult::Finished { outcome } => {
                assert_eq!(outcome.exit_code(), exit::REPLICATION_FAILED)
            }
            other => panic!("{other:?}"),
        }
        for r in 3..(3 + KEEP_OUTCOMES as u64) {
            log.record(outcome(r, Some("done"), None));
        }
        assert_eq!(log.get(2), WaitResult::Forgotten);
    }
}
