//! The `/status` document (`zrepl status --mode raw`).
//!
//! Shape (stable; fields are only ever added):
//! `{"jobs": {"<name>": JobStatus}, "global": {"zfs_commands": {"active": [...], "started":
//! {"zfs send": n, ...}}}}` where a
//! `JobStatus` is `{name, type, state, error, replication, last_successful_replication}` and
//! `replication` is the current or last run: `{state, started_at, finished_at, attempts: [{state,
//! plan_error, filesystems: [{name, state, blocked_on, plan_error, step_error, current_step,
//! steps: [{from, to, resumed, bytes_expected, bytes_replicated, to_creation}]}]}]}` (`to_creation`:
//! the target snapshot's creation time, Unix seconds).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::jobs::{JobHandle, JobStatus};

#[derive(Debug, Clone, Serialize)]
pub struct DaemonStatus {
    pub jobs: BTreeMap<String, JobStatus>,
    pub global: GlobalStatus,
}

#[derive(Debug, Clone, Serialize)]
pub struct GlobalStatus {
    pub zfs_commands: ZfsCommands,
}

#[derive(Debug, Clone, Serialize)]
pub struct ZfsCommands {
    pub active: Vec<ActiveCommand>,
    /// Commands started since the daemon started, per `binary verb` (e.g. `zfs send`).
    pub started: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ActiveCommand {
    pub argv: Vec<String>,
    pub running_for_secs: f64,
}

impl DaemonStatus {
    pub(crate) fn collect(jobs: &[Arc<JobHandle>], zfs: &zrepl_zfs::Zfs) -> Self {
        DaemonStatus {
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
