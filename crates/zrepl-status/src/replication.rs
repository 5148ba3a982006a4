//! A replication run: the live report the driver (`zrepl-replication`) updates while the run
//! goes on, and what `zrepl status` shows of it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::wire_enum;

/// A byte counter shared between a running step and the report: clones share the count, so a
/// copy of the report taken during a step keeps counting. On the wire it is a plain number.
#[derive(Debug, Clone, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    /// A counter (of its own) at `n`.
    pub fn new(n: u64) -> Self {
        Counter(Arc::new(AtomicU64::new(n)))
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Equal counts (not the same counter).
impl PartialEq for Counter {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

impl Serialize for Counter {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.get())
    }
}

impl<'de> Deserialize<'de> for Counter {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        u64::deserialize(d).map(Counter::new)
    }
}

wire_enum! {
    /// A run's state.
    pub enum RunState (default Unknown) {
        Running = "running",
        /// Waiting for the peer to come back before the next attempt.
        WaitReconnect = "wait-reconnect",
        Done = "done",
        /// The run ended with errors.
        Failed = "failed",
        Cancelled = "cancelled",
    }
}

wire_enum! {
    /// An attempt's state.
    pub enum AttemptState (default Unknown) {
        Planning = "planning",
        PlanningError = "planning-error",
        FanOutFilesystems = "fan-out-filesystems",
        FilesystemError = "filesystem-error",
        Done = "done",
    }
}

wire_enum! {
    /// A filesystem's state within an attempt.
    pub enum FsState (default Unknown) {
        Planning = "planning",
        PlanningError = "planning-error",
        Stepping = "stepping",
        StepError = "step-error",
        Done = "done",
    }
}

wire_enum! {
    /// What a filesystem waits for (a missing field reads as `nothing`).
    pub enum BlockedOn (default Nothing) {
        Nothing = "nothing",
        PlanQueue = "plan-queue",
        ParentInitialRepl = "parent-initial-repl",
        ReplQueue = "repl-queue",
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StepReport {
    /// `@snap` or `#bookmark`; `None` for a full send.
    pub from: Option<String>,
    pub to: String,
    /// A package (`zfs send -I`, `replication.packages`): the snapshots the stream creates
    /// before `to` (`@snap`), oldest first; empty for a single snapshot.
    pub intermediates: Vec<String>,
    pub resumed: bool,
    pub bytes_expected: u64,
    pub bytes_replicated: Counter,
    /// Creation time of `to` (Unix seconds): once the step is done, the receiver is at most
    /// this old (the replication lag metric).
    pub to_creation: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
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
    /// A filesystem about to be planned.
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

    /// `(replicated, expected)` over all steps.
    pub fn bytes(&self) -> (u64, u64) {
        (self.bytes_replicated(), self.bytes_expected())
    }

    pub fn error(&self) -> Option<&str> {
        self.plan_error.as_deref().or(self.step_error.as_deref())
    }

    /// Planning or stepping and not waiting for anything: zrepl marks these with `*`.
    pub fn is_active(&self) -> bool {
        matches!(self.state, FsState::Planning | FsState::Stepping)
            && self.blocked_on == BlockedOn::Nothing
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AttemptReport {
    pub state: AttemptState,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub plan_error: Option<String>,
    pub filesystems: Vec<FilesystemReport>,
}

impl AttemptReport {
    /// `(replicated, expected)` over all steps of all filesystems.
    pub fn bytes(&self) -> (u64, u64) {
        self.filesystems.iter().fold((0, 0), |(d, t), f| {
            let (fd, ft) = f.bytes();
            (d + fd, t + ft)
        })
    }

    /// Does any step lack a size estimate?
    pub fn lacks_estimates(&self) -> bool {
        self.filesystems
            .iter()
            .any(|f| f.steps.iter().any(|s| s.bytes_expected == 0))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
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
    /// A run starting at `now`.
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

    /// Still going (running or waiting to reconnect)?
    pub fn is_active(&self) -> bool {
        matches!(self.state, RunState::Running | RunState::WaitReconnect)
    }
}
