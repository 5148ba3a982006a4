//! The snapshotter of a push or snap job.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::wire_enum;

wire_enum! {
    /// What the snapshotter is doing.
    pub enum SnapState (default Unknown) {
        /// Before the first round (waiting to line up with the schedule).
        SyncUp = "sync_up",
        Waiting = "waiting",
        Snapshotting = "snapshotting",
        /// The last round failed; waiting for the next.
        ErrorWait = "error_wait",
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SnapshotterStatus {
    pub state: SnapState,
    pub next_round_at: Option<DateTime<Utc>>,
    pub last_round: Option<RoundReport>,
    pub error: Option<String>,
}

/// One snapshot round.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RoundReport {
    pub started_at: DateTime<Utc>,
    pub snapshot_name: String,
    /// Filesystems snapshotted.
    pub filesystems: Vec<String>,
    /// Filesystems left out because they changed less than `written_threshold`.
    pub skipped: Vec<Skipped>,
    pub error: Option<String>,
}

/// A filesystem a round left out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Skipped {
    pub filesystem: String,
    /// Bytes written since the job's newest snapshot (below the threshold).
    pub written: u64,
}
