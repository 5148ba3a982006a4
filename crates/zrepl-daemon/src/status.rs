//! The `/status` document (`zrepl status --mode raw`): filled here from the job handles and
//! `zrepl-zfs`'s command list. The types, their JSON shape and the compatibility rule (a
//! top-level `version`; fields are only added; readers ignore unknown fields and default missing
//! ones) are in `zrepl-status`, which every reader shares; `docs/schemas/status.schema.json` is
//! the schema.
//!
//! Shape: `{"version": 1, "jobs": {"<name>": JobStatus}, "global": {"zfs_commands": {"active":
//! [{argv, running_for_secs}], "started": {"zfs send": n, ...}}}}` where a `JobStatus` is
//! `{name, type, state, error, replication, pruning, pruning_local, snapshotting,
//! last_successful_replication}` and `replication` is the current or last run: `{state,
//! started_at, finished_at, attempts: [{state, started_at, finished_at, plan_error, filesystems:
//! [{name, state, blocked_on, plan_error, step_error, steps: [{from, to, resumed,
//! bytes_expected, bytes_replicated, to_creation}], current_step}]}], wait_reconnect_until,
//! wait_reconnect_error}` (`to_creation`: the target snapshot's creation time, Unix seconds).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
pub use zrepl_status::{ActiveCommand, DaemonStatus, GlobalStatus, ZfsCommands};

use crate::jobs::JobHandle;

/// Fills the document from the daemon's state.
pub(crate) fn collect(jobs: &[Arc<JobHandle>], zfs: &zrepl_zfs::Zfs) -> DaemonStatus {
    DaemonStatus {
        version: zrepl_status::VERSION,
        jobs: jobs.iter().map(|j| (j.name.clone(), j.status())).collect(),
        global: GlobalStatus {
            zfs_commands: ZfsCommands {
                active: zfs
                    .active_commands()
                    .into_iter()
                    .map(|c| ActiveCommand {
                        argv: c.argv.clone(),
                        running_for_secs: c
                            .started_at
                            .elapsed()
                            .map(|d| d.as_secs_f64())
                            .unwrap_or(0.0),
                    })
                    .collect(),
                started: zfs
                    .command_stats()
                    .into_iter()
                    .map(|((bin, verb), st)| (format!("{} {verb}", bin.as_str()), st.started))
                    .collect(),
            },
        },
    }
}

/// `/version`, with zrepl's field names.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VersionInfo {
    #[serde(rename = "Version")]
    pub version: String,
    #[serde(rename = "RuntimeGOOS")]
    pub os: String,
    #[serde(rename = "RuntimeGOARCH")]
    pub arch: String,
}
