//! The last pruning of a job.

use serde::{Deserialize, Serialize};

/// Both sides of a push or pull job (also `zrepl prune --dry-run --json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PruneReport {
    pub sender: SideReport,
    pub receiver: SideReport,
}

/// One side.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SideReport {
    /// Listing the side failed.
    pub error: Option<String>,
    pub filesystems: Vec<FsPrune>,
}

/// One filesystem of a side.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FsPrune {
    pub filesystem: String,
    /// Why this filesystem was not pruned at all.
    pub skipped: Option<String>,
    pub destroy: Vec<String>,
    /// Kept snapshots with the reasons.
    pub keep: Vec<(String, Vec<String>)>,
    /// Snapshots whose destruction failed, with the reason.
    pub errors: Vec<(String, String)>,
    /// Snapshots of `destroy` this job did not make (outside its snapshot selection, or without
    /// its snapshot prefix): `pruning.scope: all` destroys them as zrepl 0.7 does, and a dry
    /// run warns about them.
    pub foreign: Vec<String>,
}

impl FsPrune {
    /// A filesystem left alone, and why.
    pub fn skipped(filesystem: impl Into<String>, why: impl Into<String>) -> Self {
        FsPrune {
            filesystem: filesystem.into(),
            skipped: Some(why.into()),
            ..Default::default()
        }
    }
}
