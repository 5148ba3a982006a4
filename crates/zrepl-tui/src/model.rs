//! The daemon's `/status` document as the view reads it: the shared contract types of
//! `zrepl-status` under the view's names.
//!
//! Deserialization is lenient (the contract's rule): every field has a default, unknown fields
//! are ignored and an unknown state value reads as `unknown`, so a client talks to a daemon one
//! version apart without failing (the document only grows).

pub use zrepl_status::{
    known_time, ActiveCommand, AttemptState, BlockedOn, FsState, GlobalStatus as Global, JobState,
    RunState, SnapState, ZfsCommands,
};

/// The whole document.
pub type Status = zrepl_status::DaemonStatus;
pub type Job = zrepl_status::JobStatus;
pub type Run = zrepl_status::RunReport;
pub type Attempt = zrepl_status::AttemptReport;
pub type Filesystem = zrepl_status::FilesystemReport;
pub type Step = zrepl_status::StepReport;
pub type Pruning = zrepl_status::PruneReport;
pub type PruneSide = zrepl_status::SideReport;
pub type PruneFs = zrepl_status::FsPrune;
pub type Snapshotting = zrepl_status::SnapshotterStatus;
pub type SnapRound = zrepl_status::RoundReport;
pub type SkippedFs = zrepl_status::Skipped;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenient_parse_of_a_partial_document() {
        let s = Status::from_json(
            br#"{"jobs": {"_control": {"type": "internal"}, "push": {"type": "push", "state": "replicating",
                "future_field": 1, "replication": {"state": "running", "attempts": [{"filesystems": [
                {"name": "p/a", "state": "stepping", "blocked_on": "nothing", "current_step": 0,
                 "steps": [{"from": null, "to": "@1", "bytes_expected": 10, "bytes_replicated": 4}]}]}]}}}}"#,
        )
        .expect("parses");
        let names: Vec<_> = s.visible_jobs().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["push"]);
        let run = s.jobs["push"].replication.as_ref().expect("run");
        assert!(run.is_active());
        assert_eq!(run.attempts[0].bytes(), (4, 10));
        assert!(run.attempts[0].filesystems[0].is_active());
    }

    /// Since the view reads the shared typed contract, a state value it does not know (a newer
    /// daemon's) reads as `unknown` rather than being shown verbatim; the document still parses.
    #[test]
    fn an_unknown_state_reads_as_unknown() {
        let s = Status::from_json(
            br#"{"version": 99, "jobs": {"push": {"type": "push", "state": "paused",
                "replication": {"state": "draining", "attempts": []}}}}"#,
        )
        .expect("parses");
        let job = &s.jobs["push"];
        assert_eq!(job.state, JobState::Unknown);
        assert_eq!(job.state.to_string(), "unknown");
        let run = job.replication.as_ref().expect("run");
        assert_eq!(run.state, RunState::Unknown);
        assert!(!run.is_active());
    }
}
