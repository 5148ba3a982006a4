//! The live report of a replication run, read by `zrepl status` while the run goes on.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::{Serialize, Serializer};

/// A byte counter shared between a running step and the report.
#[derive(Debug, Clone, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl Serialize for Counter {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.get())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunState {
    Running,
    /// Waiting for the peer to come back before the next attempt.
    WaitReconnect,
    Done,
    /// The run ended with errors.
    Failed,
    Cancelled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttemptState {
    Planning,
    PlanningError,
    FanOutFilesystems,
    FilesystemError,
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FsState {
    Planning,
    PlanningError,
    Stepping,
    StepError,
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BlockedOn {
    Nothing,
    PlanQueue,
    ParentInitialRepl,
    ReplQueue,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    /// `@snap` or `#bookmark`; `None` for a full send.
    pub from: Option<String>,
    pub to: String,
    pub resumed: bool,
    pub bytes_expected: u64,
    pub bytes_replicated: Counter,
    /// Creation time of `to` (Unix seconds): once the step is done, the receiver is at most
    /// this old (the replication lag metric).
    pub to_creation: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct FilesystemReport {
    pub name: String,
    pub state: FsState,
    pub blocked_on: BlockedOn,
    pub plan_error: Option<String>,
    pub step_error: Option<String>,
    pub steps: Vec<StepReport>,
    /// Index of the step running now (or the next one); `steps.len()` when done.
    pub current_step: usize,
}

impl FilesystemReport {
    pub fn new(name: String) -> Self {
        FilesystemReport {
            name,
            state: FsState::Planning,
            blocked_on: BlockedOn::PlanQueue,
            plan_error: None,
            step_error: None,
            steps: Vec::new(),
            current_step: 0,
        }
    }

    pub fn bytes_expected(&self) -> u64 {
        self.steps.iter().map(|s| s.bytes_expected).sum()
    }

    pub fn bytes_replicated(&self) -> u64 {
        self.steps.iter().map(|s| s.bytes_replicated.get()).sum()
    }

    pub fn error(&self) -> Option<&str> {
        self.plan_error.as_deref().or(self.step_error.as_deref())
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct AttemptReport {
    pub state: AttemptState,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub plan_error: Option<String>,
    pub filesystems: Vec<FilesystemReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub state: RunState,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub attempts: Vec<AttemptReport>,
    /// Set while waiting for the peer before another attempt.
    pub wait_reconnect_until: Option<DateTime<Utc>>,
    pub wait_reconnect_error: Option<String>,
}

impl RunReport {
    pub fn new(now: DateTime<Utc>) -> Self {
        RunReport {
            state: RunState::Running,
            started_at: now,
            finished_at: None,
            attempts: Vec::new(),
            wait_reconnect_until: None,
            wait_reconnect_error: None,
        }
    }

    /// Filesystems of the latest attempt that failed.
    pub fn failed_filesystems(&self) -> Vec<&FilesystemReport> {
        self.attempts
            .last()
            .map(|a| {
                a.filesystems
                    .iter()
                    .filter(|f| f.error().is_some())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Did the run end with every filesystem replicated?
    pub fn succeeded(&self) -> bool {
        self.state == RunState::Done
    }
}

/// The report shared between the driver and readers.
#[derive(Debug, Clone)]
pub struct ReportHandle(Arc<Mutex<RunReport>>);

impl ReportHandle {
    pub fn new(now: DateTime<Utc>) -> Self {
        ReportHandle(Arc::new(Mutex::new(RunReport::new(now))))
    }

    /// A consistent copy for readers.
    pub fn snapshot(&self) -> RunReport {
        self.lock().clone()
    }

    /// Ends a run that never started replicating (a hook prevented it) as failed.
    pub fn fail_unstarted(&self, at: chrono::DateTime<chrono::Utc>) {
        self.update(|r| {
            r.state = RunState::Failed;
            r.finished_at = Some(at);
        });
    }

    pub(crate) fn update<T>(&self, f: impl FnOnce(&mut RunReport) -> T) -> T {
        f(&mut self.lock())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RunReport> {
        // A panic while holding the lock leaves a report that is still readable.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}
