//! The daemon's `/status` document as the view reads it.
//!
//! Deserialization is lenient: every field has a default, unknown fields are ignored, so a
//! client talks to a daemon one version apart without failing (the document only grows).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Status {
    pub jobs: BTreeMap<String, Job>,
    pub global: Global,
}

impl Status {
    /// Parses the body of `POST /status`.
    pub fn from_json(body: &[u8]) -> Result<Status, serde_json::Error> {
        serde_json::from_slice(body)
    }

    /// The jobs the view lists: internal ones (names starting with `_`) are hidden, as in zrepl.
    pub fn visible_jobs(&self) -> impl Iterator<Item = (&String, &Job)> {
        self.jobs.iter().filter(|(n, _)| !n.starts_with('_'))
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Global {
    pub zfs_commands: ZfsCommands,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ZfsCommands {
    pub active: Vec<ActiveCommand>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ActiveCommand {
    pub argv: Vec<String>,
    pub running_for_secs: f64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Job {
    #[serde(rename = "type")]
    pub kind: String,
    pub state: String,
    pub error: Option<String>,
    pub replication: Option<Run>,
    pub pruning: Option<Pruning>,
    pub pruning_local: Option<PruneSide>,
    pub snapshotting: Option<Snapshotting>,
    pub last_successful_replication: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Run {
    pub state: String,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub attempts: Vec<Attempt>,
    pub wait_reconnect_until: Option<DateTime<Utc>>,
    pub wait_reconnect_error: Option<String>,
}

impl Run {
    /// Still going (not done, failed or cancelled)?
    pub fn is_active(&self) -> bool {
        matches!(self.state.as_str(), "running" | "wait-reconnect")
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Attempt {
    pub state: String,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub plan_error: Option<String>,
    pub filesystems: Vec<Filesystem>,
}

impl Attempt {
    /// Bytes replicated and expected over all steps of all filesystems.
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

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Filesystem {
    pub name: String,
    pub state: String,
    pub blocked_on: String,
    pub plan_error: Option<String>,
    pub step_error: Option<String>,
    pub current_step: usize,
    pub steps: Vec<Step>,
}

impl Filesystem {
    pub fn bytes(&self) -> (u64, u64) {
        self.steps.iter().fold((0, 0), |(d, t), s| {
            (d + s.bytes_replicated, t + s.bytes_expected)
        })
    }

    pub fn error(&self) -> Option<&str> {
        self.plan_error.as_deref().or(self.step_error.as_deref())
    }

    /// Planning or stepping and not waiting for anything: zrepl marks these with `*`.
    pub fn is_active(&self) -> bool {
        matches!(self.state.as_str(), "planning" | "stepping")
            && matches!(self.blocked_on.as_str(), "nothing" | "")
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Step {
    pub from: Option<String>,
    pub to: String,
    pub resumed: bool,
    pub bytes_expected: u64,
    pub bytes_replicated: u64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Pruning {
    pub sender: PruneSide,
    pub receiver: PruneSide,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct PruneSide {
    pub error: Option<String>,
    pub filesystems: Vec<PruneFs>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct PruneFs {
    pub filesystem: String,
    pub skipped: Option<String>,
    pub destroy: Vec<String>,
    pub keep: Vec<serde_json::Value>,
    /// `[snapshot, error]` pairs.
    pub errors: Vec<(String, String)>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Snapshotting {
    pub state: String,
    pub next_round_at: Option<DateTime<Utc>>,
    pub last_round: Option<SnapRound>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct SnapRound {
    pub started_at: Option<DateTime<Utc>>,
    pub snapshot_name: String,
    pub filesystems: Vec<String>,
    /// Filesystems left out as unchanged (`written_threshold`).
    pub skipped: Vec<SkippedFs>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct SkippedFs {
    pub filesystem: String,
    pub written: u64,
}

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
}
