//! The live report of a replication run, read by `zrepl status` while the run goes on. The
//! report's types are the `/status` contract's (`zrepl-status`); this is the handle the driver
//! updates through.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
pub use zrepl_status::{
    AttemptReport, AttemptState, BlockedOn, Counter, FilesystemReport, FsState, RunReport,
    RunState, StepReport,
};

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
